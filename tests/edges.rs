//! The archive's worst days: a segment that changes while it is read, an
//! archived copy that differs from the local file, deletion on stale
//! evidence, destructive arguments, two archivers on one directory, prune
//! racing the other commands, stray objects, a replaced WAL directory, and
//! errors a user can act on.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};
use wal_archiver::archive::{Archiver, Summary};
use wal_archiver::state::empty_state;
use wal_archiver::component::wit;
use wal_archiver::store::{Archive, CHECKSUM_DIR, DEFAULT_REQUEST_RETRIES};

use crate::util::faults::{FaultyStore, Rates};
use crate::util::s3::S3;
use crate::util::{assert_exit, config, content, runtime, segment_name, stderr, stdout, tokio_rt, wait_within, Dir};

const NO_FAULTS: Rates = Rates { error_before: 0, lost_ack: 0, truncate: 0, read_error: 0, hide_in_listing: 0, max_delay_ms: 0 };

/// Appends to `path` every millisecond until `stop`: a segment still being
/// written under its final name.
fn keep_growing(path: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        while !stop.load(Ordering::SeqCst) {
            f.write_all(&[7u8; 64 * 1024]).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
    })
}

/// The S3 environment for a command.
fn s3_cmd(dir: &Dir, args: &[&str]) -> std::process::Command {
    let mut cmd = dir.cmd(args);
    let s3 = S3::get();
    for (k, v) in s3.env_via(&s3.endpoint) {
        cmd.env(k, v);
    }
    cmd
}

fn s3_archive(url: &str) -> Archive {
    Archive::open_with(url, &S3::get().options(), DEFAULT_REQUEST_RETRIES).unwrap()
}

/// Part 1, deterministic: the local file grows while its parts are sent.
/// The upload is refused before anything carries the segment's key, and no
/// checksum record is written; once it stops growing, it is archived whole.
#[test]
fn never_publishes_a_segment_that_grows_while_it_is_uploaded() {
    let dir = Dir::new();
    let path = dir.segment(1, 100, 9 * 1024 * 1024);
    let name = segment_name(1, 100);
    let rt = tokio_rt();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let grow = Arc::new(AtomicBool::new(true));
    let (p, g) = (path.clone(), grow.clone());
    let store = FaultyStore::new(inner.clone(), 1, NO_FAULTS).on_part(move |_| {
        if g.load(Ordering::SeqCst) {
            use std::io::Write;
            std::fs::OpenOptions::new().append(true).open(&p).unwrap().write_all(b"more").unwrap();
        }
    });
    let archive = Archive::new(Arc::new(store), "wal", "memory:///wal");
    let archiver = Archiver::new(runtime(), dir.storage(archive.clone(), &rt), config("wal"), None);
    let mut state = empty_state();
    let summary = archiver.run_once(&mut state, &AtomicBool::new(false)).unwrap();
    assert!(summary.archived.is_empty(), "{:?}", summary.archived);
    assert_eq!(summary.failed.len(), 1);
    assert!(summary.failed[0].last_reason.contains("changed while it was read"), "{}", summary.failed[0].last_reason);
    assert_eq!(state.last_archived_lsn, None);
    let listing = rt.block_on(archive.list()).unwrap();
    assert!(listing.objects.is_empty(), "something carries the key: {:?}", listing.objects);

    grow.store(false, Ordering::SeqCst);
    // Past the segment's backoff (milliseconds in the tests' config).
    std::thread::sleep(Duration::from_millis(50));
    let summary = archiver.run_once(&mut state, &AtomicBool::new(false)).unwrap();
    assert_eq!(summary.archived.len(), 1, "{:?}", summary.failed);
    assert_eq!(rt.block_on(archive.get(&archive.key_of(&name))).unwrap().unwrap(), std::fs::read(&path).unwrap());
}

/// Three segments to a store that refuses the chain start's record, with
/// deletion on: each `step` deletes nothing and says why, with the store's
/// cause, until the store takes the record; then the segments go.
fn deletes_nothing_until_the_chain_start_is_recorded_by(step: impl Fn(&Archiver, &mut wit::ArchiverState) -> Summary) {
    let dir = Dir::new();
    let paths = dir.chain(3, 1000);
    let rt = tokio_rt();
    let store = FaultyStore::new(Arc::new(InMemory::new()), 1, NO_FAULTS);
    store.refuse_puts_of(Some("_chain/"));
    let archive = Archive::new(Arc::new(store.clone()), "wal", "memory:///wal");
    let config = wit::ArchiverConfig { delete_after_archive: true, ..config("wal") };
    // A listing of the archive stays good for an hour after a clean pass.
    let archiver = Archiver::new(runtime(), dir.storage(archive.clone(), &rt), config, None).with_reconcile_every(Duration::from_secs(3600));
    let mut state = empty_state();
    for pass in 0..2 {
        let summary = step(&archiver, &mut state);
        assert!(summary.deleted.is_empty(), "pass {pass} deleted {:?} with no chain start recorded", summary.deleted);
        assert!(paths.iter().all(|p| p.exists()), "pass {pass}");
        let why = summary.chain_not_recorded.as_deref().unwrap_or_else(|| panic!("pass {pass}: the summary says nothing"));
        assert!(why.contains("put refused for its key"), "pass {pass}: {why}");
        assert!(!summary.is_clean(), "pass {pass}");
        assert_eq!(summary.problems(), ["the chain start not recorded"], "pass {pass}");
    }
    assert_eq!(state.last_archived_lsn, Some(300));
    store.refuse_puts_of(None);
    let summary = step(&archiver, &mut state);
    assert_eq!(summary.chain_not_recorded, None);
    assert!(summary.is_clean(), "{:?}", summary.problems());
    assert_eq!(summary.deleted.len(), 3, "{:?}", summary.deleted);
    assert_eq!(rt.block_on(archive.list()).unwrap().chain_start, Some(1));
}

/// The host's own passes: nothing is deleted in the pass whose record
/// failed, nor in the next one, however soon (it lists the archive again,
/// which asks for the record again).
#[test]
fn deletes_nothing_until_the_chain_start_is_recorded() {
    let stop = AtomicBool::new(false);
    deletes_nothing_until_the_chain_start_is_recorded_by(|archiver, state| archiver.run_once(state, &stop).unwrap());
}

/// The same through the planner's own `run-cycle` (the embedded component
/// driving the storage imports), whose report carries the failure
/// (`chain-start-not-recorded`).
#[test]
fn run_cycle_deletes_nothing_until_the_chain_start_is_recorded() {
    deletes_nothing_until_the_chain_start_is_recorded_by(|archiver, state| archiver.run_cycle(state).unwrap());
}

/// On `file://` through the CLI: a file where the archive's `_chain/`
/// folder goes makes the record fail; the run deletes nothing, says why
/// and exits 1; once the file is gone, the next run records and deletes.
#[test]
fn the_cli_says_the_chain_start_was_not_recorded_and_exits_1() {
    let dir = Dir::new();
    let paths = dir.chain(3, 1000);
    std::fs::create_dir_all(dir.archive_dir()).unwrap();
    let blocker = dir.archive_dir().join("_chain");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let out = dir.archive_once(&["--delete-after-archive"]);
    assert_exit(&out, 1);
    assert!(stdout(&out).contains("chain start not recorded (nothing deleted): "), "{}", stdout(&out));
    assert!(stdout(&out).contains("deleted locally: 0"), "{}", stdout(&out));
    assert!(paths.iter().all(|p| p.exists()));
    std::fs::remove_file(&blocker).unwrap();
    let out = dir.archive_once(&["--delete-after-archive"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("deleted locally: 3"), "{}", stdout(&out));
    assert!(!stdout(&out).contains("chain start not recorded"), "{}", stdout(&out));
    assert!(dir.archive_dir().join("_chain/start-0000000000000001").exists());
}

/// Part 1 through the CLI: a segment written to while `archive` runs is
/// never archived short, on any backend, and is archived whole later.
fn never_publishes_a_segment_that_keeps_growing(s3: bool) {
    let dir = Dir::new();
    dir.segment(1, 100, 1000);
    let path = dir.segment(101, 200, 8 * 1024 * 1024);
    let name = segment_name(101, 200);
    let url = if s3 { S3::get().url("growing") } else { dir.archive_url() };
    let wal = dir.wal();
    let args = |extra: &[&str]| {
        let mut a = vec!["archive", "--once", "--retry-base-delay", "0.05", "--retry-max-delay", "0.1"];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["--wal-dir", wal.to_str().unwrap(), "--to", &url]);
        a.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        if s3 {
            s3_cmd(&dir, &a).output().unwrap()
        } else {
            dir.cmd(&a).output().unwrap()
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let writer = keep_growing(path.clone(), stop.clone());
    let out = run(args(&["--max-attempts", "3", "--delete-after-archive"]));
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    assert_exit(&out, 1);
    let text = stdout(&out);
    assert!(text.contains("last archived LSN: 0x0000000000000064 (100)"), "{text}");
    assert!(text.contains(&format!("{name} (attempt 3): cannot archive")), "{text}");
    let archive = if s3 { s3_archive(&url) } else { Archive::open(&url).unwrap() };
    let rt = tokio_rt();
    let listing = rt.block_on(archive.list()).unwrap();
    assert!(listing.find(&name).is_none(), "a copy of the growing segment was published: {:?}", listing.find(&name));
    assert!(path.exists(), "the growing segment was deleted");

    let whole = std::fs::read(&path).unwrap();
    assert!(whole.len() > 8 * 1024 * 1024, "the segment did not grow; the test shows nothing");
    let out = run(args(&["--delete-after-archive"]));
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("last archived LSN: 0x00000000000000c8 (200)"), "{}", stdout(&out));
    let got = rt.block_on(archive.get(&archive.key_of(&name))).unwrap().unwrap();
    assert!(got == whole, "the archived copy ({} bytes) is not the whole segment ({} bytes)", got.len(), whole.len());
    assert!(!path.exists(), "the whole segment was archived but not deleted");
}

#[test]
fn never_publishes_a_segment_that_keeps_growing_file() {
    never_publishes_a_segment_that_keeps_growing(false);
}

#[test]
fn never_publishes_a_segment_that_keeps_growing_s3() {
    let _one_at_a_time = S3::exclusive();
    never_publishes_a_segment_that_keeps_growing(true);
}

/// Part 1: an archived copy that differs from the local file (a short copy
/// left by an older version, with a matching checksum record; or other
/// bytes of the same size) is never counted as archived: `archive` exits 1,
/// `status` and `verify` report it with both sizes and checksums, it holds
/// the watermark, deletion is refused, and restore will not hand it back.
#[test]
fn reports_a_conflict_everywhere_and_holds_the_watermark_at_it() {
    let dir = Dir::new();
    let paths = dir.chain(4, 2000);
    let short = segment_name(101, 200);
    let other = segment_name(201, 300);
    // What the archive holds before the first run: a truncated copy of
    // segment 2 and a different copy of segment 3, each with a record.
    std::fs::create_dir_all(dir.archive_dir().join(CHECKSUM_DIR)).unwrap();
    let plant = |name: &str, bytes: &[u8]| {
        std::fs::write(dir.archive_dir().join(name), bytes).unwrap();
        let record = format!("{name}.crc32c-{:08x}-{}", crc32c::crc32c(bytes), bytes.len());
        std::fs::write(dir.archive_dir().join(CHECKSUM_DIR).join(record), b"").unwrap();
    };
    let local_short = std::fs::read(&paths[1]).unwrap();
    plant(&short, &local_short[..1500]);
    plant(&other, &content(999, 2000));
    let out = dir.archive_once(&["--delete-after-archive"]);
    assert_exit(&out, 1);
    let text = stdout(&out);
    assert!(text.contains("in conflict: 2"), "{text}");
    assert!(text.contains(&format!("holds 1500 bytes with CRC32C {:08x} under {short}'s key", crc32c::crc32c(&local_short[..1500]))), "{text}");
    assert!(text.contains(&format!("the local segment has 2000 bytes with CRC32C {:08x}", crc32c::crc32c(&local_short))), "{text}");
    assert!(text.contains("last archived LSN: 0x0000000000000064 (100)"), "{text}");
    assert!(paths[1].exists() && paths[2].exists(), "a segment in conflict was deleted");
    assert!(!paths[0].exists(), "the segment below the conflict was not deleted");

    // Not retried: the next run says the same at once.
    let out = dir.archive_once(&["--delete-after-archive"]);
    assert_exit(&out, 1);
    assert_eq!(stderr(&out).matches("cannot archive segment").count(), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("in conflict: 2"), "{}", stdout(&out));

    let status = dir.cmd(&["status", "--wal-dir", dir.wal().to_str().unwrap(), "--to", &dir.archive_url()]).output().unwrap();
    assert_exit(&status, 1);
    assert!(
        stdout(&status).contains(&format!(
            "conflict: the archive holds 1500 bytes with CRC32C {:08x} under {short}'s key",
            crc32c::crc32c(&local_short[..1500])
        )),
        "{}",
        stdout(&status)
    );
    let json = dir.cmd(&["status", "--json", "--wal-dir", dir.wal().to_str().unwrap(), "--to", &dir.archive_url()]).output().unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(doc["conflicts"].as_array().unwrap().len(), 2, "{doc}");
    assert_eq!(doc["last_archived_lsn"], 100);

    let verify = dir.cmd(&["verify", "--to", &dir.archive_url()]).output().unwrap();
    assert_exit(&verify, 1);
    let text = stdout(&verify);
    assert!(
        text.contains(&format!(
            "conflict: {short} is archived with 1500 bytes, CRC32C {:08x}, but the local segment has 2000 bytes, CRC32C {:08x}",
            crc32c::crc32c(&local_short[..1500]),
            crc32c::crc32c(&local_short)
        )),
        "{text}"
    );
    assert!(text.contains(&format!("conflict: {other}")), "{text}");

    let into = dir.path().join("restored");
    let restore = dir.cmd(&["restore", "--from", &dir.archive_url(), "--into", into.to_str().unwrap(), "--until-lsn", "250"]).output().unwrap();
    assert_exit(&restore, 1);
    assert!(stderr(&restore).contains("in conflict with the local segment"), "{}", stderr(&restore));

    // Resolved by an operator: the bad copies removed, the segments archive.
    for name in [&short, &other] {
        std::fs::remove_file(dir.archive_dir().join(name)).unwrap();
    }
    let out = dir.archive_once(&["--delete-after-archive"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("last archived LSN: 0x0000000000000190 (400)"), "{}", stdout(&out));
    assert_exit(&dir.cmd(&["verify", "--to", &dir.archive_url(), "--deep"]).output().unwrap(), 0);
}

/// An archived object cut short after its record was written: its size has
/// no record, so the listing cannot count it, and the archive run finds the
/// conflict by comparing. Status says so too and exits 1, the conflict
/// stands while the object keeps the size found, and putting the right
/// bytes back ends it.
#[test]
fn reports_a_conflict_on_an_object_cut_short_after_its_record() {
    let dir = Dir::new();
    let paths = dir.chain(3, 2000);
    assert_exit(&dir.archive_once(&[]), 0);
    let name = segment_name(101, 200);
    let object = dir.archive_dir().join(&name);
    let whole = std::fs::read(&object).unwrap();
    std::fs::write(&object, &whole[..700]).unwrap();

    let out = dir.archive_once(&["--delete-after-archive"]);
    assert_exit(&out, 1);
    assert!(stdout(&out).contains("in conflict: 1"), "{}", stdout(&out));
    assert!(paths[1].exists(), "a segment in conflict was deleted");
    let status = |json: bool| {
        let (wal, url) = (dir.wal(), dir.archive_url());
        let mut args = vec!["status", "--wal-dir", wal.to_str().unwrap(), "--to", &url];
        if json {
            args.push("--json");
        }
        dir.cmd(&args).output().unwrap()
    };
    let out = status(false);
    assert_exit(&out, 1);
    assert!(stdout(&out).contains(&format!("conflict: the archive holds 700 bytes with CRC32C {:08x} under {name}'s key", crc32c::crc32c(&whole[..700]))), "{}", stdout(&out));
    assert!(!stdout(&out).contains("pending:            1"), "a segment in conflict is pending: {}", stdout(&out));
    let doc: serde_json::Value = serde_json::from_slice(&status(true).stdout).unwrap();
    assert_eq!(doc["conflicts"].as_array().unwrap().len(), 1, "{doc}");
    assert_eq!(doc["last_archived_lsn"], 100);

    // verify says what the record shows: the object is not the size it had.
    let out = dir.cmd(&["verify", "--to", &dir.archive_url()]).output().unwrap();
    assert_exit(&out, 1);
    assert!(
        stdout(&out).contains(&format!("size mismatch: {name} has 700 bytes, but its checksum record is of 2000 bytes")),
        "{}",
        stdout(&out)
    );
    let doc: serde_json::Value = serde_json::from_slice(&dir.cmd(&["verify", "--json", "--to", &dir.archive_url()]).output().unwrap().stdout).unwrap();
    assert!(
        doc["findings"].as_array().unwrap().iter().any(|f| f["kind"] == "record-size-mismatch" && f["size"] == 700 && f["recorded_sizes"][0] == 2000),
        "{doc}"
    );

    // Not compared again: the next run says the same without trying.
    let out = dir.archive_once(&["--delete-after-archive"]);
    assert_exit(&out, 1);
    assert_eq!(stderr(&out).matches("cannot archive segment").count(), 0, "{}", stderr(&out));

    // The right bytes back under the key: the record fits them again.
    std::fs::write(&object, &whole).unwrap();
    let out = dir.archive_once(&[]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("last archived LSN: 0x000000000000012c (300)"), "{}", stdout(&out));
    assert_exit(&status(false), 0);
}

/// A reader that stops reading (`| head`) ends the report, not the
/// command: no panic, and the exit code is the command's own (0 for a sound
/// archive, 1 for a finding). A report that cannot be written (a full disk
/// under a redirection) is exit 2 naming standard output.
#[test]
fn keeps_its_exit_code_when_the_reader_leaves_and_fails_when_the_report_cannot_be_written() {
    let dir = Dir::new();
    dir.chain(3, 2000);
    assert_exit(&dir.archive_once(&[]), 0);
    let url = dir.archive_url();
    let closed = || {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        Stdio::from(writer)
    };
    let wal = dir.wal();
    for args in [vec!["status", "--wal-dir", wal.to_str().unwrap(), "--to", &url], vec!["verify", "--json", "--to", &url], vec!["verify", "--to", &url]] {
        let out = dir.cmd(&args).stdout(closed()).output().unwrap();
        assert_exit(&out, 0);
        assert!(!stderr(&out).contains("panicked"), "{args:?}: {}", stderr(&out));
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let out = dir.cmd(&args).stdout(Stdio::from(full)).output().unwrap();
        assert_exit(&out, 2);
        assert!(stderr(&out).contains("cannot write the report to standard output: No space left on device"), "{args:?}: {}", stderr(&out));
    }
    // A finding keeps its 1 with the reader gone.
    std::fs::remove_file(dir.archive_dir().join(segment_name(101, 200))).unwrap();
    let out = dir.cmd(&["verify", "--json", "--to", &url]).stdout(closed()).output().unwrap();
    assert_exit(&out, 1);
}

/// Reading commands never create an archive. Verify, restore and prune of
/// a local archive that is not there say so, name it, exit 2 and leave
/// nothing behind; status (before the first run, say) shows it as not
/// there yet, with everything pending, and does not make it either.
#[test]
fn reading_commands_say_a_missing_local_archive_does_not_exist_and_create_nothing() {
    let dir = Dir::new();
    dir.chain(2, 1000);
    let missing = dir.path().join("no-archive");
    let m = missing.to_str().unwrap();
    let (wal, into) = (dir.wal(), dir.path().join("into"));
    let state = dir.path().join("state.json");
    let out = dir.cmd(&["status", "--wal-dir", wal.to_str().unwrap(), "--to", m, "--state", state.to_str().unwrap()]).output().unwrap();
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("(not there yet: the first archive run makes it)"), "{}", stdout(&out));
    assert!(stdout(&out).contains("pending:            2"), "{}", stdout(&out));
    assert!(stdout(&out).contains("chain start:        not set yet"), "{}", stdout(&out));
    assert!(!missing.exists(), "status created the archive");
    assert!(!state.exists(), "status wrote a state file");
    for args in [
        vec!["verify", "--to", m],
        vec!["restore", "--from", m, "--into", into.to_str().unwrap()],
        vec!["prune", "--to", m, "--before-lsn", "100"],
    ] {
        let out = dir.cmd(&args).output().unwrap();
        assert_exit(&out, 2);
        assert!(stderr(&out).contains(&format!("{m} does not exist")), "{args:?}: {}", stderr(&out));
        assert!(!missing.exists(), "{args:?} created the archive");
    }
    assert!(!into.exists(), "restore created its target for a missing archive");

    // An archive that was there (the state file says so) and is gone, or
    // whose disk is not mounted: status says so and exits 1.
    let was = dir.path().join("was-archive");
    let w = was.to_str().unwrap();
    let state = dir.path().join("was-state.json");
    let args = ["--wal-dir", wal.to_str().unwrap(), "--to", w, "--state", state.to_str().unwrap()];
    assert_exit(&dir.cmd(&[&["archive", "--once"][..], &args].concat()).output().unwrap(), 0);
    std::fs::rename(&was, dir.path().join("moved")).unwrap();
    let out = dir.cmd(&[&["status"][..], &args].concat()).output().unwrap();
    assert_exit(&out, 1);
    assert!(stdout(&out).contains("(NOT THERE, though segments were archived to it)"), "{}", stdout(&out));
    assert!(stderr(&out).contains("the state file says 2 segments were archived to it"), "{}", stderr(&out));
    assert!(!was.exists(), "status made the archive again");
    // There but empty, as a mount point whose disk is not mounted.
    std::fs::create_dir(&was).unwrap();
    let out = dir.cmd(&[&["status"][..], &args].concat()).output().unwrap();
    assert_exit(&out, 1);
    assert!(stdout(&out).contains("(EMPTY, though segments were archived to it)"), "{}", stdout(&out));
    assert!(stderr(&out).contains("holds no segment, but the state file says 2 segments"), "{}", stderr(&out));
}

/// A restore past the last archived LSN says where the archive ends, not
/// that a hole is in it.
#[test]
fn a_restore_past_the_end_says_where_the_archive_ends() {
    let dir = Dir::new();
    dir.chain(2, 1000);
    assert_exit(&dir.archive_once(&[]), 0);
    let into = dir.path().join("into");
    let out = dir.cmd(&["restore", "--from", &dir.archive_url(), "--into", into.to_str().unwrap(), "--until-lsn", "500"]).output().unwrap();
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("the archive ends at LSN 0x00000000000000c8 (200): LSNs 0x00000000000000c9 (201) to 0x00000000000001f4 (500) are not in it (yet)"),
        "{}",
        stderr(&out)
    );
}

/// Part 2: the last check before a delete reads the object back. A byte
/// flipped in an archived object (same size, the record intact) since the
/// run that archived it stops the delete of that segment.
fn refuses_to_delete_on_stale_evidence(s3: bool) {
    let dir = Dir::new();
    let paths = dir.chain(4, 3000);
    let url = if s3 { S3::get().url("stale") } else { dir.archive_url() };
    let wal = dir.wal();
    let run = |extra: &[&str]| {
        let mut a = vec!["archive", "--once"];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["--wal-dir", wal.to_str().unwrap(), "--to", &url]);
        if s3 {
            s3_cmd(&dir, &a).output().unwrap()
        } else {
            dir.cmd(&a).output().unwrap()
        }
    };
    assert_exit(&run(&[]), 0);
    let archive = if s3 { s3_archive(&url) } else { Archive::open(&url).unwrap() };
    let rt = tokio_rt();
    let victim = segment_name(201, 300);
    let key = archive.key_of(&victim);
    let mut bytes = rt.block_on(archive.get(&key)).unwrap().unwrap();
    bytes[1234] ^= 0x01;
    rt.block_on(archive.delete(&key)).unwrap();
    rt.block_on(archive.put_create(&key, bytes.into())).unwrap();

    let out = run(&["--delete-after-archive"]);
    assert_exit(&out, 1);
    let text = stdout(&out);
    assert!(text.contains("deleted locally: 3"), "{text}");
    // Found by the delete's read-back, it is a conflict like one an upload
    // finds: reported with both checksums, recorded in the state (no longer
    // counted, so the watermark waits below it), never deleted.
    assert!(text.contains("in conflict: 1"), "{text}");
    assert!(text.contains(&format!("under {victim}'s key")), "{text}");
    assert!(!text.contains(&format!("not deleted {victim}")), "{text}");
    assert!(text.contains("last archived LSN: 0x00000000000000c8 (200)"), "{text}");
    assert!(paths[2].exists(), "the only good copy was deleted");
    // The next run still finds it: the object's checksum record agrees with
    // the local file (it predates the rot), but the object a conflict is
    // about is read back, never taken on its record.
    let out = run(&[]);
    assert_exit(&out, 1);
    let again = stdout(&out);
    assert!(again.contains("in conflict: 1"), "{again}");
    assert!(again.contains("last archived LSN: 0x00000000000000c8 (200)"), "{again}");
    for (i, p) in paths.iter().enumerate() {
        assert_eq!(p.exists(), i == 2, "{}", p.display());
    }
    let verify = if s3 { s3_cmd(&dir, &["verify", "--to", &url]).output().unwrap() } else { dir.cmd(&["verify", "--to", &url]).output().unwrap() };
    assert_exit(&verify, 1);
    assert!(stdout(&verify).contains(&format!("conflict: {victim}")), "{}", stdout(&verify));
}

#[test]
fn refuses_to_delete_on_stale_evidence_file() {
    refuses_to_delete_on_stale_evidence(false);
}

#[test]
fn refuses_to_delete_on_stale_evidence_s3() {
    let _one_at_a_time = S3::exclusive();
    refuses_to_delete_on_stale_evidence(true);
}

/// Part 2: a segment verified by this process (the read-back of its
/// upload) is deleted on that proof; an archiver that did not verify it
/// must read the object back, and here cannot.
#[test]
fn deletes_on_its_own_fresh_proof_and_reads_back_anything_older() {
    let dir = Dir::new();
    dir.chain(3, 2000);
    let rt = tokio_rt();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let segment_reads = Arc::new(AtomicUsize::new(0));
    let n = segment_reads.clone();
    let store = FaultyStore::new(inner, 1, NO_FAULTS).on_read(move |key| {
        if !key.as_ref().contains("_staging") {
            n.fetch_add(1, Ordering::SeqCst);
        }
    });
    let mut cfg = config("wal");
    cfg.delete_after_archive = true;
    let archive = || Archive::new(Arc::new(store.clone()), "wal", "memory:///wal");
    let archiver = Archiver::new(runtime(), dir.storage(archive(), &rt), cfg.clone(), None);
    let summary = archiver.run_once(&mut empty_state(), &AtomicBool::new(false)).unwrap();
    assert_eq!((summary.archived.len(), summary.deleted.len()), (3, 3));
    assert_eq!(segment_reads.load(Ordering::SeqCst), 0, "a fresh proof was not reused");

    // New segments archived by one archiver, deleted by another (with a
    // state of its own: it compares them on their checksum records, which
    // is evidence of the past): every one is read back before it goes.
    for i in 3..6 {
        dir.segment(i * 100 + 1, i * 100 + 100, 2000);
    }
    let first = Archiver::new(runtime(), dir.storage(archive(), &rt), config("wal"), None);
    assert_eq!(first.run_once(&mut empty_state(), &AtomicBool::new(false)).unwrap().archived.len(), 3);
    let second = Archiver::new(runtime(), dir.storage(archive(), &rt), cfg, None);
    let before = segment_reads.load(Ordering::SeqCst);
    let summary = second.run_once(&mut empty_state(), &AtomicBool::new(false)).unwrap();
    assert_eq!(summary.deleted.len(), 3, "{:?}", summary.not_deleted);
    assert_eq!(segment_reads.load(Ordering::SeqCst) - before, 3, "the older evidence was not checked again");
}

/// Part 4: prune never destroys an archive with one argument.
#[test]
fn refuses_to_prune_above_the_watermark_and_keeps_the_segment_that_holds_it() {
    let dir = Dir::new();
    dir.chain(5, 500);
    assert_exit(&dir.archive_once(&[]), 0);
    let before = dir.archived_names();
    let url = dir.archive_url();
    for bound in ["0xffffffffffffffff", "501"] {
        for dry in [true, false] {
            let mut args = vec!["prune", "--to", &url, "--before-lsn", bound];
            if dry {
                args.push("--dry-run");
            }
            let out = dir.cmd(&args).output().unwrap();
            assert_exit(&out, 2);
            assert!(stderr(&out).contains("the archive's watermark is 0x00000000000001f4 (500)"), "{}", stderr(&out));
            assert_eq!(dir.archived_names(), before, "prune {bound} removed something");
        }
    }
    // At the watermark: everything below the segment holding it goes, that one stays.
    let out = dir.cmd(&["prune", "--to", &dir.archive_url(), "--before-lsn", "500"]).output().unwrap();
    assert_exit(&out, 0);
    assert_eq!(dir.archived_names(), [segment_name(401, 500)]);
    let out = dir.cmd(&["verify", "--to", &dir.archive_url()]).output().unwrap();
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("1 segments"), "{}", stdout(&out));
}

/// Part 4: nothing to verify is not sound.
#[test]
fn refuses_to_call_an_empty_archive_or_an_empty_range_sound() {
    let dir = Dir::new();
    std::fs::create_dir_all(dir.archive_dir()).unwrap();
    let archive_dir = dir.archive_dir();
    let verify = |extra: &[&str]| {
        let mut a = vec!["verify", "--to", archive_dir.to_str().unwrap()];
        a.extend_from_slice(extra);
        dir.cmd(&a).output().unwrap()
    };
    let out = verify(&[]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("holds no verified segment"), "{}", stderr(&out));
    assert!(!stdout(&out).contains("\nsound"), "{}", stdout(&out));
    // In JSON, the keys of every report, and the reason as a finding.
    let out = verify(&["--json"]);
    assert_exit(&out, 1);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((doc["sound"].as_bool(), doc["segments"].as_u64(), doc["stored_bytes"].as_u64()), (Some(false), Some(0), Some(0)), "{doc}");
    assert_eq!(doc["findings"][0]["kind"], "nothing-to-verify", "{doc}");
    assert!(doc["findings"][0]["why"].as_str().unwrap().contains("holds no verified segment"), "{doc}");
    dir.chain(2, 100);
    assert_exit(&dir.archive_once(&[]), 0);
    let out = verify(&["--from-lsn", "201"]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("above the archive's last LSN 0x00000000000000c8 (200)"), "{}", stderr(&out));
    let out = verify(&["--from-lsn", "50", "--until-lsn", "10"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("--from-lsn > --until-lsn"), "{}", stderr(&out));
    assert_exit(&verify(&["--from-lsn", "50", "--until-lsn", "150"]), 0);
}

/// Part 4: `s3:/bucket` is a mistyped URL, not a local directory, for every
/// command that takes an archive; nothing is created.
#[test]
fn refuses_an_archive_argument_that_looks_like_a_url_with_a_slash_missing() {
    let dir = Dir::new();
    dir.chain(1, 10);
    let wal = dir.wal();
    let into = dir.path().join("r");
    let cases: [Vec<&str>; 5] = [
        vec!["archive", "--once", "--wal-dir", wal.to_str().unwrap(), "--to", "s3:/bucket"],
        vec!["status", "--wal-dir", wal.to_str().unwrap(), "--to", "gs:bucket/wal"],
        vec!["verify", "--to", "s3:/bucket"],
        vec!["restore", "--from", "az:/container", "--into", into.to_str().unwrap()],
        vec!["prune", "--to", "s3:bucket", "--before-lsn", "5"],
    ];
    for args in cases {
        let out = dir.cmd(&args).output().unwrap();
        assert_exit(&out, 2);
        assert!(stderr(&out).contains("did you mean"), "{args:?}: {}", stderr(&out));
        let made: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).filter(|n| n != "wal").collect();
        assert!(made.is_empty(), "{args:?} created {made:?}");
    }
    // A file:// URL with a relative path names a host: refused, with both
    // ways to say what was meant.
    // `file://localhost/…` is an absolute path on this machine (RFC 8089).
    let local = dir.path().join("by-localhost");
    let out = dir.cmd(&["verify", "--to", &format!("file://localhost{}", local.display())]).output().unwrap();
    assert!(!stderr(&out).contains("takes an absolute path"), "{}", stderr(&out));
    let out = dir.cmd(&["verify", "--to", "file://archive"]).output().unwrap();
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("a file:// URL takes an absolute path (file:///archive for /archive)"), "{}", stderr(&out));
    assert!(stderr(&out).contains("give the path itself: ./archive"), "{}", stderr(&out));
}

/// Part 4: a bad plugin, a state file of another archive, contradictory
/// flags: each is refused before the archive directory exists.
#[test]
fn creates_no_archive_before_the_arguments_the_state_and_the_plugin_are_checked() {
    let dir = Dir::new();
    dir.chain(1, 10);
    let bad_plugin = dir.path().join("bad.wasm");
    std::fs::write(&bad_plugin, b"not wasm").unwrap();
    let elsewhere = format!("file://{}", dir.path().join("first").display());
    assert_exit(&dir.cmd(&["archive", "--once", "--wal-dir", dir.wal().to_str().unwrap(), "--to", &elsewhere]).output().unwrap(), 0);
    let cases: [&[&str]; 4] = [
        &["--plugin", bad_plugin.to_str().unwrap()],
        &["--retry-base-delay", "10", "--retry-max-delay", "1"],
        &["--state", "/no/such/dir/state.json"],
        // The default state file belongs to the archive `first`.
        &[],
    ];
    for extra in cases {
        let out = dir.archive_once(extra);
        assert_exit(&out, 2);
        assert!(!dir.archive_dir().exists(), "{extra:?} created the archive: {}", stderr(&out));
    }
    let out = dir.archive_once(&["--state", "/no/such/dir/state.json"]);
    assert!(stderr(&out).contains("cannot use state file /no/such/dir/state.json: its directory /no/such/dir"), "{}", stderr(&out));
    let out = dir.archive_once(&[]);
    assert!(stderr(&out).contains("give that run a state file of its own with --state"), "{}", stderr(&out));

    // A state file on a read-only file system (a tmpfs mounted read-only,
    // so this needs root): refused before the archive is made.
    let ro = dir.path().join("ro");
    std::fs::create_dir_all(&ro).unwrap();
    let mounted = std::process::Command::new("mount").args(["-t", "tmpfs", "-o", "ro,size=64k", "tmpfs"]).arg(&ro).status().unwrap();
    assert!(mounted.success(), "cannot mount a read-only tmpfs (this test needs root)");
    let state = ro.join("state.json");
    let out = dir.archive_once(&["--state", state.to_str().unwrap()]);
    let _ = std::process::Command::new("umount").arg(&ro).status();
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains(&format!("cannot use state file {}: its directory {} is not writable (Read-only file system", state.display(), ro.display())),
        "{}",
        stderr(&out)
    );
    assert!(!dir.archive_dir().exists(), "the archive was made before the state file was checked");
}

/// Part 5: one archiver per WAL directory; `status` and `verify` need no lock.
#[test]
fn refuses_a_second_archiver_on_one_wal_directory() {
    let dir = Dir::new();
    dir.chain(2, 10);
    let watcher = dir
        .cmd(&["archive", "--interval", "60", "--wal-dir", dir.wal().to_str().unwrap(), "--to", &dir.archive_url()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while dir.archived_names().len() < 2 {
        assert!(Instant::now() < deadline, "the watcher did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    let out = dir.archive_once(&[]);
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains(&format!("another wal-archiver (pid {}) is archiving {}", watcher.id(), std::fs::canonicalize(dir.wal()).unwrap().display())),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // Another state file does not make it a second directory.
    assert_exit(&dir.archive_once(&["--state", dir.path().join("s.json").to_str().unwrap()]), 2);
    assert_exit(&dir.cmd(&["status", "--wal-dir", dir.wal().to_str().unwrap(), "--to", &dir.archive_url()]).output().unwrap(), 0);
    assert_exit(&dir.cmd(&["verify", "--to", &dir.archive_url()]).output().unwrap(), 0);
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(watcher.id() as i32, libc::SIGTERM) };
    assert_exit(&wait_within(watcher, Duration::from_secs(20)), 0);
    assert_exit(&dir.archive_once(&[]), 0);
}

/// Part 6: an object that vanishes while it is restored (a prune, say)
/// leaves no temporary file, and the archive "cannot supply" it: exit 1.
#[test]
fn restore_leaves_nothing_behind_when_an_object_vanishes_midway() {
    let dir = Dir::new();
    dir.chain(6, 5000);
    let rt = tokio_rt();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let archive = Archive::new(inner.clone(), "wal", "memory:///wal");
    let archiver = Archiver::new(runtime(), dir.storage(archive, &rt), config("wal"), None);
    archiver.run_once(&mut empty_state(), &AtomicBool::new(false)).unwrap();
    let doomed = segment_name(301, 400);
    let i2 = inner.clone();
    let d = doomed.clone();
    let store = FaultyStore::new(inner, 1, NO_FAULTS).on_read(move |key| {
        if key.as_ref().ends_with(&d) {
            let key = key.clone();
            let store = i2.clone();
            std::thread::spawn(move || futures::executor::block_on(store.delete(&key))).join().unwrap().unwrap();
        }
    });
    let archive = Archive::new(Arc::new(store), "wal", "memory:///wal");
    let into = dir.path().join("restored");
    let mut planner = runtime().session(None).unwrap();
    let err = rt.block_on(wal_archiver::restore::restore(&archive, &mut planner, &into, None, 600, 4, |_| {})).unwrap_err();
    assert!(err.is_finding(), "{err}");
    assert!(err.to_string().contains("no longer in the archive"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&into).unwrap().map(|e| e.unwrap().file_name()).filter(|n| n.as_bytes().starts_with(b".")).collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
    assert!(!into.join(&doomed).exists());
}

/// Part 6: what prune removed is recorded in the archive, and an archiver
/// (even one that lost its state) never uploads it again.
#[test]
fn never_uploads_again_what_prune_removed() {
    let dir = Dir::new();
    let paths = dir.chain(6, 300);
    assert_exit(&dir.archive_once(&[]), 0);
    let out = dir.cmd(&["prune", "--to", &dir.archive_url(), "--before-lsn", "301"]).output().unwrap();
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("pruned 3 segments"), "{}", stdout(&out));
    std::fs::remove_file(dir.wal().join(".wal-archiver-state.json")).unwrap();
    let out = dir.archive_once(&["--delete-after-archive"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(text.contains("archived 0 segments"), "{text}");
    for p in &paths[..3] {
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(text.contains(&format!("pruned from the archive, kept locally, never uploaded again: {name}")), "{text}");
        assert!(!dir.archive_dir().join(name).exists(), "{name} was uploaded again");
        assert!(p.exists(), "{name} was deleted without an archived copy");
    }
    assert!(text.contains("last archived LSN: 0x0000000000000258 (600)"), "{text}");
    // While a watcher runs, a prune is not undone either.
    let out = dir.cmd(&["prune", "--to", &dir.archive_url(), "--before-lsn", "401"]).output().unwrap();
    assert_exit(&out, 0);
    dir.segment(601, 700, 300);
    let out = dir.archive_once(&[]);
    assert_exit(&out, 0);
    assert!(!dir.archive_dir().join(segment_name(301, 400)).exists());
    assert!(dir.archive_dir().join(segment_name(601, 700)).exists());
}

/// Part 7: stray objects in a local archive, whatever their names, are
/// reported and never stop archiving; a symlink is never followed.
#[test]
fn lists_stray_objects_and_carries_on_file() {
    let dir = Dir::new();
    dir.chain(3, 100);
    assert_exit(&dir.archive_once(&[]), 0);
    let a = dir.archive_dir();
    std::fs::write(a.join("bad\nname"), b"x").unwrap();
    std::fs::write(a.join(std::ffi::OsStr::from_bytes(b"not-utf8-\xff\xfe")), b"x").unwrap();
    std::fs::write(a.join("x#1"), b"hash").unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, b"outside bytes").unwrap();
    std::os::unix::fs::symlink(&secret, a.join(segment_name(901, 1000))).unwrap();
    std::fs::create_dir(a.join("subdir")).unwrap();
    dir.chain(4, 100);
    let out = dir.archive_once(&[]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("last archived LSN: 0x0000000000000190 (400)"), "{}", stdout(&out));
    let out = dir.cmd(&["verify", "--to", &dir.archive_url(), "--deep"]).output().unwrap();
    assert_exit(&out, 0);
    let text = stdout(&out);
    for (name, why) in [
        ("\"bad\\nname\"", "not a segment name"),
        ("x#1", "not a segment name"),
        ("not-utf8-", "not valid UTF-8"),
        (&segment_name(901, 1000), "a symlink (never followed)"),
        ("subdir", "a directory"),
    ] {
        assert!(text.lines().any(|l| l.contains(name) && l.contains(why)), "{name}: {text}");
    }
    let status = dir.cmd(&["status", "--wal-dir", dir.wal().to_str().unwrap(), "--to", &dir.archive_url()]).output().unwrap();
    assert_exit(&status, 0);
    assert!(stdout(&status).contains("not a segment, in the archive"), "{}", stdout(&status));
    assert_eq!(std::fs::read(&secret).unwrap(), b"outside bytes");
}

#[test]
fn lists_stray_objects_and_carries_on_s3() {
    let _one_at_a_time = S3::exclusive();
    let dir = Dir::new();
    dir.chain(2, 100);
    let url = S3::get().url("strays");
    let archive = s3_archive(&url);
    let rt = tokio_rt();
    for key in ["x#1", "notes.txt", "wal-1-2.seg"] {
        rt.block_on(archive.put_create(&archive.key_of(key), b"stray".to_vec().into())).unwrap();
    }
    let out = s3_cmd(&dir, &["archive", "--once", "--wal-dir", dir.wal().to_str().unwrap(), "--to", &url]).output().unwrap();
    assert_exit(&out, 0);
    let out = s3_cmd(&dir, &["verify", "--to", &url]).output().unwrap();
    assert_exit(&out, 0);
    for name in ["x#1", "notes.txt", "wal-1-2.seg"] {
        assert!(stdout(&out).contains(&format!("{name:?}")), "{name}: {}", stdout(&out));
    }
}

/// Part 8: `rm -rf wal && mkdir wal` does not leave the watcher blind.
#[test]
fn watches_a_wal_directory_that_was_replaced() {
    let dir = Dir::new();
    dir.chain(2, 100);
    let mut child = dir
        .cmd(&[
            "archive",
            "--interval",
            "60",
            "--wal-dir",
            dir.wal().to_str().unwrap(),
            "--to",
            &dir.archive_url(),
            "--state",
            dir.path().join("state.json").to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while dir.archived_names().len() < 2 {
        assert!(Instant::now() < deadline, "the watcher did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_dir_all(dir.wal()).unwrap();
    std::fs::create_dir(dir.wal()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let late = dir.segment(201, 300, 100);
    // The 10 s safety timer would be too late: the new directory is watched.
    let started = Instant::now();
    while !dir.archive_dir().join(segment_name(201, 300)).exists() {
        assert!(started.elapsed() < Duration::from_secs(5), "the new segment was not picked up");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{err}");
    assert!(err.contains("watching") && err.contains("archiving to") && err.contains("stop with Ctrl-C or SIGTERM"), "{err}");
    assert!(err.contains("was replaced; watching the new one"), "{err}");
    dir.assert_archived(&late);
}

/// Part 9: each cause once; a missing S3 credential said plainly and fast.
#[test]
fn says_each_cause_once_and_fails_fast_without_aws_credentials() {
    let dir = Dir::new();
    let out = dir.cmd(&["archive", "--once", "--wal-dir", "/no/such/dir", "--to", "memory:///"]).output().unwrap();
    assert_exit(&out, 2);
    assert_eq!(stderr(&out).matches("os error 2").count(), 1, "{}", stderr(&out));

    std::fs::create_dir_all(dir.wal()).unwrap();
    for metadata in [Some("http://127.0.0.1:1"), None] {
        let mut cmd = dir.cmd(&["archive", "--once", "--wal-dir", dir.wal().to_str().unwrap(), "--to", "s3://some-bucket/wal"]);
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        if let Some(m) = metadata {
            cmd.env("AWS_METADATA_ENDPOINT", m);
        }
        let started = Instant::now();
        let out = cmd.output().unwrap();
        assert_exit(&out, 2);
        let err = stderr(&out);
        assert!(err.contains("no AWS credentials found") && err.contains("AWS_ACCESS_KEY_ID"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?} to say so", started.elapsed());
    }

    // An S3 endpoint that refuses connections: the cause once, not once per layer.
    let out = dir
        .cmd(&["archive", "--once", "--max-attempts", "1", "--request-retries", "0", "--wal-dir", dir.wal().to_str().unwrap(), "--to", "s3://b/wal"])
        .env("AWS_ACCESS_KEY_ID", "k")
        .env("AWS_SECRET_ACCESS_KEY", "s")
        .env("AWS_ENDPOINT", "http://127.0.0.1:1")
        .env("AWS_ALLOW_HTTP", "true")
        .output()
        .unwrap();
    assert_exit(&out, 2);
    let err = stderr(&out);
    let last = err.lines().last().unwrap_or("");
    assert!(last.starts_with("wal-archiver: cannot list s3://b/wal"), "{err}");
    assert!(last.len() < 600, "{} bytes: {last}", last.len());
}

/// Part 9: contradictory or out-of-range settings are refused like flags.
#[test]
fn refuses_contradictory_retry_delays_and_config_values_out_of_range() {
    let dir = Dir::new();
    let out = dir.archive_once(&["--retry-base-delay", "5", "--retry-max-delay", "1"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("above the retry max delay"), "{}", stderr(&out));
    let out = dir.archive_once(&["--batch-bytes", "0"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("at least one byte"), "{}", stderr(&out));
    let conf = dir.path().join("c.toml");
    let place = format!("from config file {}, line 2", conf.display());
    for (text, want) in [
        ("wal-dir = \"w\"\nconcurrency = 1000\n", format!("concurrency = 1000 {place}: it must be between 1 and 256").as_str()),
        ("batch-size = 0\n", "batch-size = 0"),
        ("batch-bytes = 0\n", "batch-bytes = 0"),
        ("batch-bytes = \"12XB\"\n", "unknown unit \"XB\""),
        ("batch-bytes = -5\n", "negative"),
        ("retry-base-delay = 9\nretry-max-delay = 3\n", "above the retry max delay"),
    ] {
        std::fs::write(&conf, text).unwrap();
        let out = dir.archive_once(&["--config", conf.to_str().unwrap()]);
        assert_exit(&out, 2);
        assert!(stderr(&out).contains(want), "{text:?}: {}", stderr(&out));
    }
}

/// Part 9: a panic on any thread ends the process with 101.
#[test]
fn ends_the_process_with_101_on_a_panic() {
    let dir = Dir::new();
    let child = dir
        .cmd(&["archive", "--interval", "60", "--wal-dir", dir.wal().to_str().unwrap(), "--to", &dir.archive_url()])
        .env("WAL_ARCHIVER_TEST_PANIC", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_within(child, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(101), "{}", stderr(&out));
    assert!(stderr(&out).contains("WAL_ARCHIVER_TEST_PANIC is set"), "{}", stderr(&out));
}

#[allow(dead_code)]
fn exists(p: &Path) -> bool {
    p.symlink_metadata().is_ok()
}

/// An upload cut short before its checksum was recorded leaves an object
/// that never counts. When it is the archive's last segment (its local
/// file deleted, say), `verify` checks up to it by default: a gap, and the
/// object named as unverified, never a sound archive that stops short.
#[test]
fn verify_reports_an_unrecorded_object_at_the_end_of_the_archive() {
    let dir = Dir::new();
    dir.chain(3, 1000);
    assert_exit(&dir.archive_once(&[]), 0);
    let archive = Archive::open(&dir.archive_url()).unwrap();
    let rt = tokio_rt();
    let cut_short = segment_name(301, 400);
    rt.block_on(archive.put_create(&archive.key_of(&cut_short), vec![7u8; 1000].into())).unwrap();

    let out = dir.cmd(&["verify", "--to", &dir.archive_url()]).output().unwrap();
    assert_exit(&out, 1);
    let text = stdout(&out);
    assert!(text.contains("to 0x0000000000000190 (400)"), "{text}");
    assert!(text.contains("gap: LSNs 0x000000000000012d (301) to 0x0000000000000190 (400) are missing"), "{text}");
    assert!(text.contains(&cut_short), "{text}");
    assert!(text.contains("NOT sound"), "{text}");
    // Up to the last verified LSN it is sound, as asked.
    let out = dir.cmd(&["verify", "--to", &dir.archive_url(), "--until-lsn", "300"]).output().unwrap();
    assert_exit(&out, 0);
}

/// A delete that finds its segment's object gone (removed between the
/// listing and the delete's read-back) stops the deletes after it in that
/// pass: the watermark no longer covers them. One delete at a time, so the
/// segments after it are not started; the next pass lists the archive,
/// uploads the missing one again and deletes them all.
#[test]
fn a_delete_that_finds_the_object_gone_starts_no_later_delete() {
    let dir = Dir::new();
    let paths = dir.chain(4, 1000);
    let rt = tokio_rt();
    let inner = Arc::new(InMemory::new());
    let victim = object_store::path::Path::from(format!("wal/{}", segment_name(101, 200)));
    let armed = Arc::new(AtomicBool::new(false));
    let (hook_inner, hook_victim, hook_armed) = (inner.clone(), victim.clone(), armed.clone());
    let store = FaultyStore::new(inner.clone(), 1, NO_FAULTS).on_read(move |key| {
        if *key == hook_victim && hook_armed.swap(false, Ordering::SeqCst) {
            futures::executor::block_on(hook_inner.delete(key)).unwrap();
        }
    });
    let archive = Archive::new(Arc::new(store), "wal", "memory:///wal");
    let mut state = empty_state();
    let stop = AtomicBool::new(false);
    // Archived by one process, without deleting.
    let first = Archiver::new(runtime(), dir.storage(archive.clone(), &rt), config("wal"), None);
    assert_eq!(first.run_once(&mut state, &stop).unwrap().archived.len(), 4);
    // Another process, deleting, reads each object back before its delete.
    let deleting = wit::ArchiverConfig { delete_after_archive: true, ..config("wal") };
    let second = Archiver::new(runtime(), dir.storage(archive.clone(), &rt), deleting, None);
    armed.store(true, Ordering::SeqCst);
    let summary = second.run_once(&mut state, &stop).unwrap();
    assert_eq!(summary.deleted, [segment_name(1, 100)], "{summary:?}");
    assert_eq!(summary.not_deleted.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), [segment_name(101, 200)]);
    let kept: Vec<bool> = paths.iter().map(|p| p.exists()).collect();
    assert_eq!(kept, [false, true, true, true], "the segments after the one gone were deleted");
    assert!(!summary.is_clean());
    // The next pass sees it missing, uploads it again, and deletes the rest.
    let summary = second.run_once(&mut state, &stop).unwrap();
    assert_eq!(summary.archived.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), [segment_name(101, 200)], "{summary:?}");
    assert!(paths.iter().all(|p| !p.exists()), "{summary:?}");
}
