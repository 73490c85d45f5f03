//! The native host harness: the real planner component in the real wasmtime
//! host, against temporary WAL directories and real stores.

mod util;

mod backends;
mod compression;
mod durability;
mod edges;
mod metrics;
mod plugin;
mod restore;

use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use wal_archiver::archive::Archiver;
use wal_archiver::bindings::nodedb::wal_archiver::storage::Host;
use wal_archiver::component::wit;
use wal_archiver::imports::Imports;
use wal_archiver::state::{empty_state, StateStore};
use wal_archiver::store::Archive;

use util::{assert_exit, config, runtime, segment_name, stderr, stdout, tokio_rt, Dir};

#[test]
fn archives_every_segment_byte_identically_to_file() {
    let dir = Dir::new();
    let mut paths = dir.chain(12, 4096);
    // Sizes that straddle the 8 MiB upload chunk, and an empty segment.
    paths.push(dir.segment(1201, 1300, 8 * 1024 * 1024 + 1));
    paths.push(dir.segment(1301, 1400, 0));
    let out = dir.archive_once(&["--batch-size", "5"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("archived 14 segments"), "{}", stdout(&out));
    assert!(stdout(&out).contains("last archived LSN: 0x0000000000000578 (1400)"), "{}", stdout(&out));
    for p in &paths {
        dir.assert_archived(p);
    }
    assert_eq!(dir.archived_names().len(), 14);

    // A second run finds nothing new and uploads nothing.
    let out = dir.archive_once(&[]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("archived 0 segments"), "{}", stdout(&out));
}

#[test]
fn reports_and_leaves_alone_every_refused_name() {
    let dir = Dir::new();
    let good = dir.segment(1, 100, 10);
    let refused = [
        "wal-0a-64.partial",
        "wal-000000000000000a-0000000000000064.partial",
        "wal-1-a.txt",
        "wal-0a-64",
        "wal-+a-+64.seg",
        "wal-A-FF.seg",
        "wal-000000000000000A-00000000000000FF.seg",
        "wal-1-a.seg",
        "wal-64-0a.seg",
        "wal-0000000000000064-000000000000000a.seg",
        "notes.txt",
    ];
    for name in refused {
        std::fs::write(dir.wal().join(name), b"not a segment").unwrap();
    }
    // A symlink named like a segment, pointing at a file outside the WAL directory.
    let secret = dir.path().join("outside-secret");
    std::fs::write(&secret, b"outside bytes that must never be archived").unwrap();
    std::os::unix::fs::symlink(&secret, dir.wal().join(segment_name(101, 200))).unwrap();
    // A directory and a FIFO named like segments, and a name that is not UTF-8.
    std::fs::create_dir(dir.wal().join(segment_name(201, 300))).unwrap();
    let fifo = dir.wal().join(segment_name(301, 400));
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let raw = std::ffi::OsStr::from_bytes(b"wal-\xff\xfe.seg");
    std::fs::write(dir.wal().join(raw), b"x").unwrap();

    let before: Vec<_> = std::fs::read_dir(dir.wal()).unwrap().map(|e| e.unwrap().file_name()).collect();
    let out = dir.archive_once(&[]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(text.contains(&format!("skipped: {}", refused.len() + 4)), "{text}");
    for name in refused {
        assert!(text.contains(&format!("  {name}: not a segment name")), "{name} not reported:\n{text}");
    }
    assert!(text.contains(&format!("{}: a symlink (never followed)", segment_name(101, 200))), "{text}");
    assert!(text.contains(&format!("{}: a directory", segment_name(201, 300))), "{text}");
    assert!(text.contains(&format!("{}: not a regular file", segment_name(301, 400))), "{text}");
    assert!(text.contains("the name is not valid UTF-8"), "{text}");

    // Only the good segment is in the archive; nothing from outside was copied.
    assert_eq!(dir.archived_names(), vec![segment_name(1, 100)]);
    dir.assert_archived(&good);
    // Every refused entry is still there, untouched.
    for name in &before {
        assert!(dir.wal().join(name).symlink_metadata().is_ok(), "{name:?} was removed");
    }
    assert_eq!(std::fs::read(dir.wal().join("notes.txt")).unwrap(), b"not a segment");
}

#[test]
fn retries_a_failed_segment_and_holds_the_watermark_at_it() {
    let dir = Dir::new();
    let paths = dir.chain(5, 1000);
    // A directory where segment 2's object must go makes its upload fail for real.
    let blocker = dir.archive_dir().join(segment_name(101, 200));
    std::fs::create_dir_all(&blocker).unwrap();

    let out = dir.archive_once(&["--delete-after-archive", "--max-attempts", "1"]);
    assert_exit(&out, 1);
    let text = stdout(&out);
    assert!(text.contains("archived 4 segments"), "{text}");
    assert!(text.contains("last archived LSN: 0x0000000000000064 (100)"), "{text}");
    assert!(text.contains(&format!("  {} (attempt 1): cannot ", segment_name(101, 200))), "{text}");
    assert!(text.contains("Is a directory"), "{text}");
    // Only the segment below the watermark was deleted.
    assert!(!paths[0].exists());
    for p in &paths[1..] {
        assert!(p.exists(), "{} was deleted above the watermark", p.display());
    }

    let status = dir
        .cmd(&["status", "--json", "--wal-dir", dir.wal().to_str().unwrap(), "--to", &dir.archive_url()])
        .output()
        .unwrap();
    assert_exit(&status, 0);
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(doc["last_archived_lsn"], 100);
    assert_eq!(doc["failures"], 1);
    assert_eq!(doc["pending"].as_array().unwrap().len(), 1);
    assert_eq!(doc["pending"][0]["name"], segment_name(101, 200));
    assert_eq!(doc["failing"][0]["attempts"], 1);
    assert_eq!(doc["rpo_gap"], 400);
    for key in ["segments_archived", "bytes_archived", "skipped", "breaks", "conflicts", "to_confirm"] {
        assert!(doc.get(key).is_some(), "status --json lacks {key}");
    }

    // Still failing: retried with backoff within the run, the count grows, nothing moves.
    let out = dir.archive_once(&["--delete-after-archive", "--max-attempts", "3", "--retry-base-delay", "0.01"]);
    assert_exit(&out, 1);
    assert!(stdout(&out).contains("(attempt 4)"), "{}", stdout(&out));
    assert_eq!(stderr(&out).matches("cannot archive segment").count(), 3, "{}", stderr(&out));
    assert!(stdout(&out).contains("archived 0 segments"), "{}", stdout(&out));

    // Fixed: the retry archives it and the watermark crosses all five.
    std::fs::remove_dir(&blocker).unwrap();
    let out = dir.archive_once(&["--delete-after-archive"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("archived 1 segments"), "{}", stdout(&out));
    assert!(stdout(&out).contains("last archived LSN: 0x00000000000001f4 (500)"), "{}", stdout(&out));
    for p in &paths {
        assert!(!p.exists());
    }
    assert_eq!(dir.archived_names().len(), 5);
    assert_eq!(dir.staging_leftovers(), Vec::<String>::new());
}

#[test]
fn archives_to_memory_through_the_component() {
    let dir = Dir::new();
    let paths = dir.chain(9, 777);
    let rt = tokio_rt();
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let archive = Archive::new(store.clone(), "prefix/wal", "memory:///prefix/wal");
    let archiver = Archiver::new(runtime(), dir.storage(archive, &rt), config("prefix/wal"), None);
    let mut state = empty_state();
    let summary = archiver.run_once(&mut state, &AtomicBool::new(false)).unwrap();
    assert_eq!(summary.archived.len(), 9);
    assert_eq!(state.last_archived_lsn, Some(900));
    for p in &paths {
        let key = format!("prefix/wal/{}", p.file_name().unwrap().to_str().unwrap());
        let got = rt.block_on(async { store.get(&ObjectPath::from(key.as_str())).await.unwrap().bytes().await.unwrap() });
        assert_eq!(got.as_ref(), std::fs::read(p).unwrap().as_slice(), "{key}");
    }
}

#[test]
fn runs_a_whole_cycle_through_the_storage_imports() {
    let dir = Dir::new();
    let paths = dir.chain(6, 500);
    std::fs::write(dir.wal().join("wal-0a-64.partial"), b"half").unwrap();
    let rt = tokio_rt();
    let archive = Archive::open(&dir.archive_url()).unwrap();
    let mut cfg = config("");
    cfg.delete_after_archive = true;
    let state_store = StateStore::new(dir.path().join("state.json"), &dir.archive_url());
    let archiver = Archiver::new(runtime(), dir.storage(archive, &rt), cfg, Some(state_store.clone()));
    let mut state = empty_state();
    let summary = archiver.run_cycle(&mut state).unwrap();
    assert_eq!(summary.archived.len(), 6);
    assert_eq!(summary.deleted.len(), 6);
    assert_eq!(summary.skipped.len(), 1);
    assert_eq!(state.last_archived_lsn, Some(600));
    assert_eq!(state_store.load().unwrap(), state, "run-cycle's state was saved");
    assert_eq!(dir.archived_names().len(), 6);
    for p in &paths {
        assert!(!p.exists());
    }
    assert!(dir.wal().join("wal-0a-64.partial").exists());
}

/// The same cycle with zstd: the component forms `.zst` keys, the imports
/// compress, and deletion proves each file against its compressed object;
/// a key with any other suffix is refused.
#[test]
fn runs_a_compressed_cycle_through_the_storage_imports() {
    let dir = Dir::new();
    let paths = dir.chain(4, 20_000);
    let originals: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let rt = tokio_rt();
    let archive = Archive::open(&dir.archive_url()).unwrap();
    let mut cfg = config("");
    cfg.delete_after_archive = true;
    cfg.compression = wit::Compression::Zstd;
    let archiver = Archiver::new(runtime(), dir.storage(archive, &rt), cfg, None);
    let mut state = empty_state();
    let summary = archiver.run_cycle(&mut state).unwrap();
    assert_eq!((summary.archived.len(), summary.deleted.len()), (4, 4), "{:?}", summary.failed);
    assert_eq!(state.last_archived_lsn, Some(400));
    let names = dir.archived_names();
    for (p, bytes) in paths.iter().zip(&originals) {
        let object = format!("{}.zst", p.file_name().unwrap().to_str().unwrap());
        assert!(names.contains(&object), "{object} not in {names:?}");
        let stored = std::fs::read(dir.archive_dir().join(&object)).unwrap();
        assert!(zstd::decode_all(&stored[..]).unwrap() == *bytes, "{object} does not decode to its segment");
        assert!(!p.exists(), "{} was not deleted", p.display());
    }
    // Keys the planner cannot have formed are refused.
    dir.segment(401, 500, 10);
    let storage = dir.storage(Archive::open(&dir.archive_url()).unwrap(), &rt);
    let mut imports = Imports::new(Some(Arc::new(storage) as Arc<dyn wal_archiver::imports::StorageImports>));
    let name = segment_name(401, 500);
    for key in [format!("{name}.gz"), format!("{name}.zst.zst"), format!("{name}.ZST"), format!("{}.zst", segment_name(1, 100))] {
        let err = imports.upload(name.clone(), key.clone(), 10, true).unwrap_err();
        assert!(matches!(err, wit::StorageError::Refused(_)), "{key}: {err:?}");
    }
}

#[test]
fn refuses_names_outside_the_wal_directory_and_keys_outside_the_prefix() {
    let dir = Dir::new();
    dir.segment(1, 100, 10);
    std::fs::write(dir.path().join("outside"), b"outside").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.wal().join(segment_name(101, 200))).unwrap();
    let rt = tokio_rt();
    let storage = dir.storage(Archive::open(&dir.archive_url()).unwrap(), &rt);
    // Through the storage imports, as a planner sees them.
    let mut imports = Imports::new(Some(Arc::new(storage) as Arc<dyn wal_archiver::imports::StorageImports>));
    for name in ["../outside", "/etc/passwd", "..", ".", "", "a/b"] {
        let err = imports.upload(name.into(), name.into(), 7, false).unwrap_err();
        assert!(matches!(err, wit::StorageError::Refused(_)), "{name:?}: {err:?}");
        let err = imports.check_archived(name.into(), name.into(), 7).unwrap_err();
        assert!(matches!(err, wit::StorageError::Refused(_)), "{name:?}: {err:?}");
        let err = imports.delete_segment(name.into(), name.into()).unwrap_err();
        assert!(matches!(err, wit::StorageError::Refused(_)), "{name:?}: {err:?}");
    }
    let link = segment_name(101, 200);
    let err = imports.upload(link.clone(), link.clone(), 0, false).unwrap_err();
    assert!(matches!(err, wit::StorageError::NotAFile(_)), "{err:?}");
    let good = segment_name(1, 100);
    let err = imports.upload(good.clone(), format!("../{good}"), 10, false).unwrap_err();
    assert!(matches!(err, wit::StorageError::Refused(_)), "{err:?}");
    // A segment that is not archived yet is never deleted, whatever is asked.
    let err = imports.delete_segment(good.clone(), good.clone()).unwrap_err();
    assert!(matches!(err, wit::StorageError::NotFound(ref m) if m.contains("holds no object")), "{err:?}");
    assert!(dir.wal().join(&good).exists());
    assert!(dir.archived_names().is_empty());
}

#[test]
fn reports_gaps_and_overlaps_with_their_ranges() {
    let dir = Dir::new();
    dir.segment(1, 100, 10);
    dir.segment(201, 300, 10);
    dir.segment(250, 400, 10);
    let out = dir.archive_once(&[]);
    // Overlapping segments that cannot be chained are an error; everything is still uploaded.
    assert_exit(&out, 1);
    let text = stdout(&out);
    assert!(text.contains("gap: LSNs 0x0000000000000065 (101) to 0x00000000000000c8 (200) are missing"), "{text}");
    assert!(text.contains(&format!(
        "overlap: LSNs 0x000000000000012d (301) to 0x0000000000000190 (400) are held only by {}, which cannot be chained after {}",
        segment_name(250, 400),
        segment_name(201, 300)
    )), "{text}");
    assert!(text.contains("last archived LSN: 0x0000000000000064 (100)"), "{text}");
    assert_eq!(dir.archived_names().len(), 3);
}

#[test]
fn gives_a_one_line_error_for_a_bad_url_or_a_missing_directory() {
    let dir = Dir::new();
    let wal = dir.wal();
    let cases: [(&[&str], &str); 5] = [
        (&["archive", "--once", "--wal-dir", wal.to_str().unwrap(), "--to", "nope://x"], "cannot open archive nope://x"),
        (&["archive", "--once", "--wal-dir", wal.to_str().unwrap(), "--to", "file://host/x"], "cannot open archive file://host/x"),
        (&["archive", "--once", "--wal-dir", wal.to_str().unwrap(), "--to", "ftp://host/x"], "cannot open archive ftp://host/x"),
        (&["archive", "--once", "--wal-dir", "/no/such/dir", "--to", "memory:///"], "cannot use WAL directory /no/such/dir"),
        (&["status", "--wal-dir", "/no/such/dir", "--to", "memory:///"], "cannot use WAL directory /no/such/dir"),
    ];
    for (args, want) in cases {
        let out = dir.cmd(args).output().unwrap();
        assert_exit(&out, 2);
        let err = stderr(&out);
        assert!(err.starts_with("wal-archiver: ") && err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn refuses_a_state_file_of_another_archive() {
    let dir = Dir::new();
    dir.chain(2, 10);
    assert_exit(&dir.archive_once(&[]), 0);
    let other = format!("file://{}", dir.path().join("other").display());
    let out = dir
        .cmd(&["archive", "--once", "--wal-dir", dir.wal().to_str().unwrap(), "--to", &other])
        .output()
        .unwrap();
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("belongs to the archive"), "{}", stderr(&out));
}

#[test]
fn generates_segments_the_archiver_accepts() {
    let dir = Dir::new();
    let out = dir
        .cmd(&["generate", "--dir", dir.wal().to_str().unwrap(), "--count", "3", "--size", "4096", "--start-lsn", "0x1000"])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let out = dir.archive_once(&[]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("archived 3 segments"), "{}", stdout(&out));
    assert!(stdout(&out).contains("last archived LSN: 0x0000000000003fff (16383)"), "{}", stdout(&out));
    assert_eq!(dir.archived_names()[0], segment_name(0x1000, 0x1fff));

    // Sizes take units as --batch-bytes does; more than the LSNs left is
    // refused before anything is written, exit 2.
    let more = dir.path().join("more");
    let out = dir.cmd(&["generate", "--dir", more.to_str().unwrap(), "--count", "2", "--size", "4KiB", "--start-lsn", "0x4000"]).output().unwrap();
    assert_exit(&out, 0);
    assert_eq!(std::fs::metadata(more.join(segment_name(0x4000, 0x4fff))).unwrap().len(), 4096);
    let end = dir.path().join("end");
    let out = dir.cmd(&["generate", "--dir", end.to_str().unwrap(), "--count", "2", "--size", "4096", "--start-lsn", "0xfffffffffffff000"]).output().unwrap();
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("at most 1 fit"), "{}", stderr(&out));
    assert!(std::fs::read_dir(&end).map_or(true, |mut d| d.next().is_none()), "a segment was written");
}

#[test]
fn watches_until_sigterm_then_exits_cleanly() {
    let dir = Dir::new();
    dir.chain(3, 100);
    let child = dir
        .cmd(&["archive", "--interval", "60", "--wal-dir", dir.wal().to_str().unwrap(), "--to", &dir.archive_url()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while dir.archived_names().len() < 3 {
        assert!(std::time::Instant::now() < deadline, "the watcher did not archive the first segments");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // A segment written while it watches is picked up at once: the timer
    // would take 60 s, so this is the directory watcher's doing.
    let late = dir.segment(301, 400, 100);
    while dir.archived_names().len() < 4 {
        assert!(std::time::Instant::now() < deadline, "the watcher did not pick up a new segment");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("stopped"), "{}", stderr(&out));
    dir.assert_archived(&late);
}

/// `generate --content wal` writes what a database's log looks like to a
/// compressor: zstd at level 3 stores about a third of it (2.5 to 3.5:1),
/// where random content does not compress at all.
#[test]
fn generates_wal_like_content_that_compresses_about_three_to_one() {
    let dir = Dir::new();
    let out = dir.path().join("gen");
    for (content, lo, hi) in [("wal", 2.5, 3.5), ("random", 0.9, 1.01)] {
        let target = out.join(content);
        let made = dir.cmd(&["generate", "--dir", target.to_str().unwrap(), "--count", "2", "--size", "4194304", "--content", content]).output().unwrap();
        assert_exit(&made, 0);
        for entry in std::fs::read_dir(&target).unwrap() {
            let path = entry.unwrap().path();
            let zstd = std::process::Command::new("zstd").args(["-3", "-q", "-c"]).arg(&path).output().expect("cannot run zstd (apt-get install zstd)");
            assert!(zstd.status.success());
            let ratio = 4194304.0 / zstd.stdout.len() as f64;
            assert!((lo..=hi).contains(&ratio), "{content}: {} compresses {ratio:.2}:1", path.display());
        }
    }
}
