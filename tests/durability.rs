//! Durability under faults and crashes: nothing is reported archived, or
//! deleted, until its archived copy is durable and verified.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use wal_archiver::archive::Archiver;
use wal_archiver::component::wit;
use wal_archiver::state::{empty_state, StateStore};
use wal_archiver::store::{Archive, CHECKSUM_DIR};

use crate::util::faults::{FaultyStore, Rates};
use crate::util::{assert_exit, config, content, kill_after, next_random, runtime, segment_name, stderr, stdout, tokio_rt, wait_within, Dir};

const PREFIX: &str = "wal";

/// The bytes under a key in the store that holds the truth, if any.
fn stored(rt: &tokio::runtime::Runtime, store: &Arc<dyn ObjectStore>, key: &str) -> Option<Vec<u8>> {
    rt.block_on(async {
        match store.get(&ObjectPath::from(key)).await {
            Ok(r) => Some(r.bytes().await.unwrap().to_vec()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("cannot read {key} from the inner store: {e}"),
        }
    })
}

/// The invariants after every cycle, checked against the inner store (not
/// through the faults):
/// - no object under a segment's key differs from the segment (nothing torn, nothing overwritten);
/// - every segment inside the archived chain is in the archive;
/// - no local segment is gone unless the archive holds it byte for byte.
fn check_invariants(
    seed: u64,
    rt: &tokio::runtime::Runtime,
    inner: &Arc<dyn ObjectStore>,
    originals: &BTreeMap<String, Vec<u8>>,
    dir: &Dir,
    state: &wit::ArchiverState,
) {
    let local = dir.local_segments();
    for (name, bytes) in originals {
        let remote = stored(rt, inner, &format!("{PREFIX}/{name}"));
        if let Some(remote) = &remote {
            assert!(remote == bytes, "seed {seed}: the archived {name} differs from the segment ({} bytes vs {})", remote.len(), bytes.len());
        }
        let n = wal_archiver_guest::SegmentName::parse(name).unwrap();
        let in_chain = matches!((state.chain_start, state.last_archived_lsn), (Some(s), Some(w)) if s <= n.first() && n.last() <= w);
        assert!(!in_chain || remote.is_some(), "seed {seed}: {name} is below watermark {:?} but not archived", state.last_archived_lsn);
        if !local.contains_key(name) {
            assert!(remote.is_some(), "seed {seed}: {name} was deleted locally without an archived copy");
        }
    }
}

/// Archives 24 segments through a store that misbehaves as `seed` says,
/// cycle after cycle, losing the state now and then, until every local
/// segment has been verified and deleted.
fn survive_seed(seed: u64, inner: Arc<dyn ObjectStore>) -> crate::util::faults::Fired {
    let dir = Dir::new();
    let mut originals = BTreeMap::new();
    for i in 0..24u64 {
        // Sizes from 0 bytes up, some segments covering several LSNs.
        let len = ((seed.wrapping_mul(31) + i * 977) % 3000) as usize * usize::from(i != 5);
        let path = dir.segment(i * 10 + 1, i * 10 + 10, len);
        originals.insert(path.file_name().unwrap().to_str().unwrap().to_owned(), std::fs::read(&path).unwrap());
    }
    let rt = tokio_rt();
    let faulty = FaultyStore::new(inner.clone(), seed, Rates::HOSTILE);
    let archive = Archive::new(Arc::new(faulty.clone()), PREFIX, "memory:///wal");
    let mut cfg = config(PREFIX);
    cfg.delete_after_archive = true;
    cfg.batch_size = 5;
    let state_store = StateStore::new(dir.path().join("state.json"), "memory:///wal");
    let archiver = Archiver::new(runtime(), dir.storage(archive, &rt), cfg, Some(state_store));
    let stop = AtomicBool::new(false);
    let mut state = empty_state();
    let mut cycles = 0;
    while !dir.local_segments().is_empty() {
        cycles += 1;
        assert!(cycles < 2_000, "seed {seed}: not done after {cycles} cycles; local: {:?}", dir.local_segments().keys());
        if cycles % 7 == 0 {
            state = empty_state(); // the state file is lost
        }
        // A cycle may fail as a whole (a listing or read failed); it is retried.
        let _ = archiver.run_once(&mut state, &stop);
        check_invariants(seed, &rt, &inner, &originals, &dir, &state);
        std::thread::sleep(Duration::from_millis(1));
    }
    // With the faults gone, one listing shows the whole chain.
    faulty.set_enabled(false);
    archiver.run_once(&mut state, &stop).unwrap();
    check_invariants(seed, &rt, &inner, &originals, &dir, &state);
    assert_eq!(state.last_archived_lsn, Some(240), "seed {seed}");
    let fired = faulty.fired();

    // Pushing an archived segment again with other bytes is refused, and the
    // archived copy stays as it was.
    let (name, original) = originals.iter().nth(3).unwrap();
    std::fs::write(dir.wal().join(name), b"other bytes under the same name").unwrap();
    // Without the marker the segment is pending again, as after a crash before it was written.
    rt.block_on(async {
        let mut listing = inner.list(Some(&ObjectPath::from(format!("{PREFIX}/{CHECKSUM_DIR}"))));
        while let Some(meta) = futures::StreamExt::next(&mut listing).await {
            let meta = meta.unwrap();
            if meta.location.as_ref().contains(name.as_str()) {
                inner.delete(&meta.location).await.unwrap();
            }
        }
    });
    let summary = archiver.run_once(&mut state, &stop).unwrap();
    assert!(summary.failed.is_empty(), "seed {seed}: {:?}", summary.failed);
    assert_eq!(summary.conflicts.len(), 1, "seed {seed}");
    assert_eq!(&summary.conflicts[0].name, name, "seed {seed}");
    assert_eq!(summary.conflicts[0].archived_crc32c, crc32c::crc32c(original), "seed {seed}");
    assert_eq!(stored(&rt, &inner, &format!("{PREFIX}/{name}")).as_ref(), Some(original), "seed {seed}: overwritten");
    assert!(dir.wal().join(name).exists(), "seed {seed}: the differing local file was deleted");
    fired
}

#[test]
fn loses_nothing_under_injected_faults_in_memory() {
    let mut total = crate::util::faults::Fired::default();
    for seed in 1..=60 {
        let f = survive_seed(seed, Arc::new(InMemory::new()));
        total.error_before += f.error_before;
        total.lost_ack += f.lost_ack;
        total.truncate += f.truncate;
        total.read_error += f.read_error;
        total.hidden += f.hidden;
    }
    // The faults really happened, of every kind.
    eprintln!("faults fired over 60 seeds: {total:?}");
    assert!(total.error_before > 100 && total.lost_ack > 100 && total.truncate > 50, "{total:?}");
    assert!(total.read_error > 20 && total.hidden > 20, "{total:?}");
}

#[test]
fn loses_nothing_under_injected_faults_on_a_local_directory() {
    for seed in 1_001..=1_010 {
        let root = tempfile::tempdir().unwrap();
        let fs = LocalFileSystem::new_with_prefix(root.path()).unwrap().with_fsync(true);
        survive_seed(seed, Arc::new(fs));
    }
}

#[test]
fn accepts_an_identical_push_and_refuses_a_different_one() {
    let dir = Dir::new();
    let seg = dir.segment(1, 100, 5000);
    let name = segment_name(1, 100);
    let rt = tokio_rt();
    let storage = dir.storage(Archive::open(&dir.archive_url()).unwrap(), &rt);
    let first = rt.block_on(storage.upload_segment(&name, &name, 5000, true)).unwrap();
    assert!(!first.existed);
    // Again, as after a lost acknowledgement: the same object, no error.
    let again = rt.block_on(storage.upload_segment(&name, &name, 5000, true)).unwrap();
    assert!(again.existed);
    assert_eq!((first.stored_size, first.stored_crc32c), (again.stored_size, again.stored_crc32c));
    dir.assert_archived(&seg);

    std::fs::write(&seg, content(99, 5000)).unwrap();
    let err = rt.block_on(storage.upload_segment(&name, &name, 5000, true)).unwrap_err();
    let conflict = err.conflict().expect("a conflict");
    assert_eq!((conflict.local_crc32c, conflict.archived_crc32c), (crc32c::crc32c(&content(99, 5000)), crc32c::crc32c(&content(1, 5000))));
    let err = err.to_string();
    assert!(err.contains(&name) && err.contains("holds a different object"), "{err}");
    assert_eq!(std::fs::read(dir.archive_dir().join(&name)).unwrap(), content(1, 5000), "the archived copy changed");
    assert!(dir.staging_leftovers().is_empty(), "{:?}", dir.staging_leftovers());

    // Through the CLI, once the record is gone (as if the first run crashed
    // before writing it): the segment is compared, found in conflict at
    // once (no retries), and the exit is 1. Nothing is deleted.
    std::fs::remove_dir_all(dir.archive_dir().join(CHECKSUM_DIR)).unwrap();
    let out = dir.archive_once(&["--max-attempts", "5", "--delete-after-archive"]);
    assert_exit(&out, 1);
    let text = stdout(&out);
    assert!(text.contains("in conflict: 1"), "{text}");
    assert!(text.contains(&format!("{:08x}", crc32c::crc32c(&content(99, 5000)))) && text.contains(&format!("{:08x}", crc32c::crc32c(&content(1, 5000)))), "{text}");
    assert_eq!(stderr(&out).matches("cannot archive segment").count(), 0, "a conflict was retried: {}", stderr(&out));
    assert!(seg.exists());
    assert_eq!(std::fs::read(dir.archive_dir().join(&name)).unwrap(), content(1, 5000));
}

#[test]
fn rebuilds_a_lost_or_corrupt_state_from_the_archive_without_reuploading() {
    let dir = Dir::new();
    dir.chain(10, 1000);
    assert_exit(&dir.archive_once(&[]), 0);
    let state_file = dir.wal().join(".wal-archiver-state.json");
    assert!(state_file.exists());

    std::fs::remove_file(&state_file).unwrap();
    let out = dir.archive_once(&[]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("archived 0 segments"), "{}", stdout(&out));
    assert!(stdout(&out).contains("last archived LSN: 0x00000000000003e8 (1000)"), "{}", stdout(&out));

    std::fs::write(&state_file, b"{\"version\": 1, \"destination\": tru").unwrap();
    let out = dir.archive_once(&[]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("rebuilding the state from the archive"), "{}", stderr(&out));
    assert!(stdout(&out).contains("archived 0 segments"), "{}", stdout(&out));
    assert!(stdout(&out).contains("(1000)"), "{}", stdout(&out));

    // A state that claims more than the archive holds is corrected by it.
    let seg = segment_name(901, 1000);
    std::fs::remove_file(dir.archive_dir().join(&seg)).unwrap();
    let out = dir.archive_once(&[]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("archived 1 segments"), "{}", stdout(&out));
    assert!(dir.archive_dir().join(&seg).exists());
}

/// Two archivers, each with a WAL directory of its own holding the same
/// segments (a database and its standby, say), archive to one prefix at
/// once: create-only publishing lets one of them win each segment, the
/// other finds the same bytes there, and nothing is torn or lost.
#[test]
fn two_archivers_on_one_prefix_do_not_corrupt_it() {
    let dir = Dir::new();
    let originals: Vec<_> = dir.chain(120, 8000).iter().map(|p| (p.clone(), std::fs::read(p).unwrap())).collect();
    let twin = dir.path().join("twin");
    std::fs::create_dir(&twin).unwrap();
    for (p, bytes) in &originals {
        std::fs::write(twin.join(p.file_name().unwrap()), bytes).unwrap();
    }
    let spawn = |wal: &std::path::Path| {
        dir.cmd(&[
            "archive", "--once", "--delete-after-archive", "--batch-size", "3", "--retry-base-delay", "0.01",
            "--wal-dir", wal.to_str().unwrap(), "--to", &dir.archive_url(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let a = spawn(&dir.wal());
    let b = spawn(&twin);
    let (a, b) = (wait_within(a, Duration::from_secs(120)), wait_within(b, Duration::from_secs(120)));
    for out in [&a, &b] {
        assert_exit(out, 0);
        assert!(stdout(out).contains("last archived LSN: 0x0000000000002ee0 (12000)"), "{}", stdout(out));
    }
    for (path, bytes) in &originals {
        let name = path.file_name().unwrap();
        assert!(!path.exists() && !twin.join(name).exists(), "{name:?} was not deleted");
        assert_eq!(&std::fs::read(dir.archive_dir().join(name)).unwrap(), bytes);
    }
}

/// SIGKILL the real binary at random points while it archives and deletes;
/// after every kill nothing is torn and nothing is lost.
#[test]
fn survives_sigkill_at_random_points() {
    sigkill_at_random_points(false);
}

/// The same with `--compression zstd`: after every kill, an object there
/// decodes to its segment exactly, and nothing is deleted without one.
#[test]
fn survives_sigkill_at_random_points_compressing() {
    sigkill_at_random_points(true);
}

fn sigkill_at_random_points(zstd: bool) {
    let dir = Dir::new();
    let mut originals: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut next = 0u64;
    let mut add = |dir: &Dir, n: u64, originals: &mut BTreeMap<String, Vec<u8>>| {
        for _ in 0..n {
            let p = dir.segment(next * 100 + 1, next * 100 + 100, 16 * 1024 + (next as usize % 7) * 1000);
            originals.insert(p.file_name().unwrap().to_str().unwrap().to_owned(), std::fs::read(&p).unwrap());
            next += 1;
        }
    };
    // The segment's bytes as the archive holds them, if it holds an object for it.
    let archived = |name: &str| -> Option<Vec<u8>> {
        if zstd {
            let frame = std::fs::read(dir.archive_dir().join(format!("{name}.zst"))).ok()?;
            Some(zstd::decode_all(&frame[..]).unwrap_or_else(|e| panic!("{name}.zst does not decode: {e}")))
        } else {
            std::fs::read(dir.archive_dir().join(name)).ok()
        }
    };
    let compression = if zstd { "zstd" } else { "none" };
    add(&dir, 200, &mut originals);
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut kills = 0;
    let mut runs = 0;
    while kills < 60 {
        runs += 1;
        assert!(runs < 1_000, "only {kills} kills in {runs} runs");
        let child = dir
            .cmd(&[
                "archive", "--once", "--delete-after-archive", "--batch-size", "8", "--compression", compression,
                "--wal-dir", dir.wal().to_str().unwrap(), "--to", &dir.archive_url(),
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if kill_after(child, Duration::from_micros(next_random(&mut rng) % 120_000)) {
            kills += 1;
        }

        let local = dir.local_segments();
        for (name, bytes) in &originals {
            let remote = archived(name);
            if let Some(remote) = &remote {
                assert!(remote == bytes, "after kill {kills}: the object for {name} is torn or differs");
            }
            if !local.contains_key(name) {
                assert!(remote.is_some(), "after kill {kills}: {name} was deleted locally without an archived copy");
            }
        }
        // The database keeps writing while the archiver is killed and restarted.
        add(&dir, 3, &mut originals);
    }
    let out = dir.archive_once(&["--delete-after-archive", "--compression", compression]);
    assert_exit(&out, 0);
    let last = next * 100;
    assert!(stdout(&out).contains(&format!("last archived LSN: 0x{last:016x} ({last})")), "{}", stdout(&out));
    assert!(dir.local_segments().is_empty());
    for (name, bytes) in &originals {
        assert_eq!(archived(name).as_ref(), Some(bytes), "{name}");
    }
    eprintln!("{kills} kills in {runs} runs over {} segments", originals.len());
}

/// A tmpfs of a given size, mounted for one test and unmounted after.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(path: std::path::PathBuf, size: &str) -> Self {
        std::fs::create_dir_all(&path).unwrap();
        let out = std::process::Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(&path).output().unwrap();
        assert!(out.status.success(), "cannot mount a tmpfs (the disk-full test needs root): {}", String::from_utf8_lossy(&out.stderr));
        Self { path }
    }

    fn grow(&self, size: &str) {
        let out = std::process::Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(&self.path).output().unwrap();
        assert!(out.status.success(), "cannot grow the tmpfs: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if !std::process::Command::new("umount").arg("-l").arg(&self.path).status().is_ok_and(|s| s.success()) {
            eprintln!("cannot unmount the tmpfs at {}", self.path.display());
        }
    }
}

/// A full disk under a local archive: the segments that do not fit fail
/// with the cause named, nothing under a segment's name is partial, the
/// watermark covers only what fits, the archive verifies; with room again,
/// the next run archives the rest. The same for a state file on a full disk.
#[test]
fn loses_nothing_when_the_archive_disk_is_full() {
    let dir = Dir::new();
    let paths: Vec<_> = (0..6u64).map(|i| dir.segment(i * 100 + 1, i * 100 + 100, 700 * 1024)).collect();
    let disk = SmallDisk::mount(dir.path().join("small"), "2m");
    let archive = disk.path.join("archive");
    let url = format!("file://{}", archive.display());
    let state = dir.path().join("state.json");
    let run = |extra: &[&str]| {
        let wal = dir.wal();
        // One upload at a time: which segments fit is then certain (the
        // first two; a copy that does not fit frees its space).
        let mut args = vec!["archive", "--once", "--max-attempts", "1", "--concurrency", "1", "--wal-dir", wal.to_str().unwrap(), "--to", &url];
        args.extend_from_slice(extra);
        dir.cmd(&args).output().unwrap()
    };
    let out = run(&["--state", state.to_str().unwrap()]);
    assert_exit(&out, 1);
    assert!(stdout(&out).contains("No space left on device"), "{}\n{}", stdout(&out), stderr(&out));
    let archived: Vec<String> = std::fs::read_dir(&archive)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    let mut sorted = archived.clone();
    sorted.sort();
    assert_eq!(sorted, [segment_name(1, 100), segment_name(101, 200)], "what fit on the disk");
    // No half-written copy left behind, named or staged.
    let staged: Vec<_> = std::fs::read_dir(archive.join(wal_archiver::store::STAGING_DIR)).map(|d| d.map(|e| e.unwrap().file_name()).collect()).unwrap_or_default();
    assert!(staged.is_empty(), "staging leftovers: {staged:?}");
    // Whatever carries a segment's name is the whole segment.
    for name in &archived {
        assert!(std::fs::read(archive.join(name)).unwrap() == std::fs::read(dir.wal().join(name)).unwrap(), "{name} is not whole");
    }
    let doc = |out: &std::process::Output| -> serde_json::Value { serde_json::from_slice(&out.stdout).unwrap() };
    let status = dir.cmd(&["status", "--json", "--wal-dir", dir.wal().to_str().unwrap(), "--to", &url, "--state", state.to_str().unwrap()]).output().unwrap();
    // The watermark: the run of archived segments from the first LSN, and
    // not a segment past one that did not fit.
    let watermark = doc(&status)["last_archived_lsn"].as_u64();
    let run_from_start = (0..6u64).take_while(|i| archived.contains(&segment_name(i * 100 + 1, i * 100 + 100))).count() as u64;
    assert_eq!(watermark, (run_from_start > 0).then_some(run_from_start * 100), "{}", doc(&status));
    assert_eq!(doc(&status)["failing"].as_array().unwrap().len(), paths.len() - archived.len(), "{}", doc(&status));
    assert_exit(&dir.cmd(&["verify", "--deep", "--to", &url]).output().unwrap(), 0);

    // Room again: the rest goes, and the archive holds every segment whole.
    disk.grow("16m");
    let out = run(&["--state", state.to_str().unwrap()]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("last archived LSN: 0x0000000000000258 (600)"), "{}", stdout(&out));
    for p in &paths {
        let name = p.file_name().unwrap();
        assert!(std::fs::read(archive.join(name)).unwrap() == std::fs::read(p).unwrap(), "{name:?}");
    }
    assert_exit(&dir.cmd(&["verify", "--deep", "--to", &url]).output().unwrap(), 0);

    // A state file on a full disk: the run says which file and why, and
    // the next run with room loses nothing.
    let full = SmallDisk::mount(dir.path().join("tiny"), "64k");
    std::fs::write(full.path.join("filler"), vec![0u8; 60 * 1024]).unwrap_or(());
    let _ = std::fs::write(full.path.join("filler2"), vec![0u8; 64 * 1024]);
    let tiny_state = full.path.join("state.json");
    let more = dir.segment(601, 700, 1000);
    let out = run(&["--state", tiny_state.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0), "a state that cannot be saved was taken as saved:\n{}", stdout(&out));
    assert!(stderr(&out).contains(tiny_state.to_str().unwrap()) && stderr(&out).contains("No space left on device"), "{}", stderr(&out));
    full.grow("1m");
    let _ = std::fs::remove_file(full.path.join("filler2"));
    let out = run(&["--state", tiny_state.to_str().unwrap()]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("last archived LSN: 0x00000000000002bc (700)"), "{}", stdout(&out));
    assert!(std::fs::read(archive.join(more.file_name().unwrap())).unwrap() == std::fs::read(&more).unwrap());
}

/// The same full disk with `--compression zstd`: a compressed copy that
/// does not fit fails naming the cause and leaves nothing behind; what
/// carries a `.zst` name decodes to its whole segment; the watermark covers
/// only what fits; with room again, the rest goes.
#[test]
fn loses_nothing_when_the_archive_disk_is_full_compressing() {
    let dir = Dir::new();
    // Random bytes: the compressed copies are as large as the segments.
    let paths: Vec<_> = (0..6u64).map(|i| dir.segment(i * 100 + 1, i * 100 + 100, 700 * 1024)).collect();
    let disk = SmallDisk::mount(dir.path().join("small-zstd"), "2m");
    let archive = disk.path.join("archive");
    let url = format!("file://{}", archive.display());
    let run = || {
        let wal = dir.wal();
        let args = ["archive", "--once", "--max-attempts", "1", "--concurrency", "1", "--compression", "zstd", "--wal-dir", wal.to_str().unwrap(), "--to", &url];
        dir.cmd(&args).output().unwrap()
    };
    let out = run();
    assert_exit(&out, 1);
    assert!(stdout(&out).contains("No space left on device"), "{}\n{}", stdout(&out), stderr(&out));
    let objects = || -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(&archive).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).filter(|n| n.contains(".seg")).collect();
        v.sort();
        v
    };
    let fit = objects();
    assert_eq!(fit, [format!("{}.zst", segment_name(1, 100)), format!("{}.zst", segment_name(101, 200))], "what fit on the disk");
    let staged: Vec<_> = std::fs::read_dir(archive.join(wal_archiver::store::STAGING_DIR)).map(|d| d.map(|e| e.unwrap().file_name()).collect()).unwrap_or_default();
    assert!(staged.is_empty(), "staging leftovers: {staged:?}");
    for name in &fit {
        let frame = std::fs::read(archive.join(name)).unwrap();
        let segment = name.trim_end_matches(".zst");
        assert!(zstd::decode_all(&frame[..]).unwrap() == std::fs::read(dir.wal().join(segment)).unwrap(), "{name} does not decode to its segment");
    }
    assert!(stdout(&out).contains("last archived LSN: 0x00000000000000c8 (200)"), "{}", stdout(&out));
    assert_exit(&dir.cmd(&["verify", "--deep", "--to", &url]).output().unwrap(), 0);

    disk.grow("16m");
    let out = run();
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("last archived LSN: 0x0000000000000258 (600)"), "{}", stdout(&out));
    assert_eq!(objects().len(), paths.len());
    assert_exit(&dir.cmd(&["verify", "--deep", "--to", &url]).output().unwrap(), 0);
}

/// Builds `tests/testdata/{name}.c` into a preloadable library.
fn build_shim(name: &str) -> std::path::PathBuf {
    let src = format!("{}/../tests/testdata/{name}.c", env!("CARGO_MANIFEST_DIR"));
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}.so", std::process::id()));
    let cc = std::process::Command::new("cc").args(["-shared", "-fPIC", "-O2", "-o"]).arg(&out).arg(&src).arg("-ldl").output().expect("cannot run cc");
    assert!(cc.status.success(), "cannot build {src}: {}", String::from_utf8_lossy(&cc.stderr));
    out
}

/// `tests/testdata/fail_sync.c`, built once.
fn fail_sync_shim() -> &'static std::path::Path {
    static SHIM: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    SHIM.get_or_init(|| build_shim("fail_sync"))
}

/// A kernel copy that comes out wrong (`tests/testdata/bad_copy.c` flips a
/// byte of what `copy_file_range` wrote, and reports success): the copy
/// does not read back as the segment summed from its own descriptor, so
/// nothing is published, nothing is recorded, and the error names the copy
/// and both checksums. With a sound copy, the same run archives everything.
#[test]
fn publishes_nothing_that_the_kernel_copied_wrongly() {
    let dir = Dir::new();
    let paths = dir.chain(3, 100_000);
    let shim = build_shim("bad_copy");
    let run = |bad: bool| {
        let mut cmd = dir.cmd(&["archive", "--once", "--max-attempts", "1", "--wal-dir", dir.wal().to_str().unwrap(), "--to", &dir.archive_url()]);
        cmd.env("LD_PRELOAD", &shim);
        if bad {
            cmd.env("BAD_COPY", "1");
        }
        cmd.output().unwrap()
    };
    let out = run(true);
    assert_exit(&out, 1);
    assert!(stdout(&out).contains("failed: 3"), "{}", stdout(&out));
    assert!(stdout(&out).contains("were written but 100000 with CRC32C"), "{}", stdout(&out));
    assert!(stdout(&out).contains("last archived LSN: none yet"), "{}", stdout(&out));
    let names = dir.archived_names();
    assert!(!names.iter().any(|n| n.ends_with(".seg")), "a bad copy was published: {names:?}");
    assert!(!names.iter().any(|n| n.contains(".crc32c-")), "a bad copy was recorded: {names:?}");
    for p in &paths {
        assert!(p.exists());
    }
    let out = run(false);
    assert_exit(&out, 0);
    for p in &paths {
        dir.assert_archived(p);
    }
}

/// `archive --once` of `dir`'s WAL directory to its archive, one attempt per
/// segment, the state in `state`, with fsync and fdatasync failing where
/// `faults` (the shim's environment) say.
fn archive_failing_syncs(dir: &Dir, state: &std::path::Path, faults: &[(&str, &str)]) -> std::process::Output {
    let (wal, url) = (dir.wal(), dir.archive_url());
    let mut cmd = dir.cmd(&["archive", "--once", "--max-attempts", "1", "--wal-dir", wal.to_str().unwrap(), "--to", &url, "--state", state.to_str().unwrap()]);
    cmd.env("LD_PRELOAD", fail_sync_shim()).envs(faults.iter().copied());
    cmd.output().unwrap()
}

/// fsync and fdatasync failing with EIO (syscall fault injection through
/// an LD_PRELOAD shim): on the copy's data, nothing is under a segment's
/// name and nothing counts; on the archive's directory after the links,
/// the copies are there but nothing counts until a later run has made them
/// durable and compared them; on the copies' own bytes when found there,
/// nothing counts; on the state file, the run goes on, says so naming it,
/// exits 1 and leaves no temporary file. The file and the cause are named
/// each time.
#[test]
fn counts_nothing_archived_when_a_sync_fails() {
    let dir = Dir::new();
    let paths = dir.chain(3, 100_000);
    let archive = dir.archive_dir();
    std::fs::create_dir_all(&archive).unwrap();
    let archive_path = archive.to_str().unwrap().to_owned();
    // As /proc/self/fd shows it: without symlinks.
    let archive_canon = archive.canonicalize().unwrap().to_str().unwrap().to_owned();
    let state = dir.path().join("state.json");
    let run = |faults: &[(&str, &str)]| archive_failing_syncs(&dir, &state, faults);
    let segments_in_archive = || dir.archived_names().into_iter().filter(|n| n.ends_with(".seg")).count();

    // The data of each unnamed copy cannot be made durable; the error says
    // it is the copy, not an object under the key.
    let out = run(&[("FAIL_SYNC_UNDER", "(deleted)")]);
    assert_exit(&out, 1);
    assert!(stdout(&out).contains("failed: 3"), "{}", stdout(&out));
    for p in &paths {
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(
            stdout(&out).contains(&format!("cannot sync {archive_path}/{name} (its copy, not linked yet): Input/output error")),
            "{}",
            stdout(&out)
        );
    }
    assert_eq!(segments_in_archive(), 0, "{:?}", dir.archived_names());
    assert!(stdout(&out).contains("last archived LSN: none yet"), "{}", stdout(&out));

    // The copies are linked in, but the directory holding their names
    // cannot be synced (the first sync, at open, goes through).
    let out = run(&[("FAIL_SYNC_EXACT", archive_canon.as_str()), ("FAIL_SYNC_SKIP", "1")]);
    assert_exit(&out, 1);
    assert!(stdout(&out).contains(&format!("cannot sync {archive_path}: Input/output error")), "{}", stdout(&out));
    assert!(stdout(&out).contains("last archived LSN: none yet"), "{}", stdout(&out));
    assert_eq!(segments_in_archive(), 3);

    // The copies are there now, but their own bytes cannot be synced: a
    // copy found in the archive counts only once it is durable, so nothing
    // counts and each is named.
    let under_root = format!("{archive_canon}/wal-");
    let out = run(&[("FAIL_SYNC_UNDER", under_root.as_str())]);
    assert_exit(&out, 1);
    for p in &paths {
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(stdout(&out).contains(&format!("cannot sync {archive_path}/{name}: Input/output error")), "{}", stdout(&out));
    }
    assert!(stdout(&out).contains("last archived LSN: none yet"), "{}", stdout(&out));

    // The state file cannot be synced: the run goes on (the state is a
    // cache, and a full WAL disk must not stop the deletes that free it),
    // names the file and the cause, and exits 1.
    let out = run(&[("FAIL_SYNC_UNDER", state.to_str().unwrap())]);
    assert_exit(&out, 1);
    let why = format!("cannot sync state file {}: Input/output error", state.display());
    assert!(stdout(&out).contains(&format!("state file not saved: {why}")), "{}", stdout(&out));
    assert!(stderr(&out).contains(&why), "{}", stderr(&out));
    assert!(stdout(&out).contains("last archived LSN: 0x000000000000012c (300)"), "{}", stdout(&out));
    assert!(!dir.path().join("state.json.tmp").exists(), "a temporary state file was left behind");

    // A sound disk: the copies are compared, made durable, and counted.
    let out = run(&[]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("already in the archive, compared with the local files: 3"), "{}", stdout(&out));
    assert!(stdout(&out).contains("last archived LSN: 0x000000000000012c (300)"), "{}", stdout(&out));
    for p in &paths {
        dir.assert_archived(p);
    }
    assert_exit(&dir.cmd(&["verify", "--deep", "--to", &dir.archive_url()]).output().unwrap(), 0);
}

/// A state file that cannot be saved (its disk full or failing) does not
/// stop the run: the segments are archived and, being proven archived,
/// deleted, which is what frees a full WAL disk. The run says the state was
/// not saved, names the file and the cause, and exits 1.
#[test]
fn archives_and_deletes_when_the_state_file_cannot_be_saved() {
    let dir = Dir::new();
    let paths = dir.chain(3, 100_000);
    let state = dir.path().join("state.json");
    let wal = dir.wal();
    let url = dir.archive_url();
    let out = dir
        .cmd(&["archive", "--once", "--delete-after-archive", "--wal-dir", wal.to_str().unwrap(), "--to", &url, "--state", state.to_str().unwrap()])
        .env("LD_PRELOAD", fail_sync_shim())
        .env("FAIL_SYNC_UNDER", state.to_str().unwrap())
        .output()
        .unwrap();
    assert_exit(&out, 1);
    assert!(stdout(&out).contains(&format!("state file not saved: cannot sync state file {}: Input/output error", state.display())), "{}", stdout(&out));
    assert!(stdout(&out).contains("deleted locally: 3"), "{}", stdout(&out));
    for p in &paths {
        assert!(!p.exists(), "{} was not deleted", p.display());
    }
    assert_exit(&dir.cmd(&["verify", "--deep", "--to", &url]).output().unwrap(), 0);
    // The next run, on a sound disk, saves it and finds nothing left to do.
    let out = dir.cmd(&["archive", "--once", "--wal-dir", wal.to_str().unwrap(), "--to", &url, "--state", state.to_str().unwrap()]).output().unwrap();
    assert_exit(&out, 0);
    assert!(state.exists());
}

/// The folder made for the first checksum records is a new name in the
/// archive's directory: until that directory is synced again, a power cut
/// can take the folder and every record in it, so no segment counts. The
/// archive's directory is synced once at the start and once after the
/// links; the third sync, after the folder was made, fails here.
#[test]
fn counts_no_record_until_its_new_folder_is_synced() {
    let dir = Dir::new();
    let paths = dir.chain(3, 100_000);
    let archive = dir.archive_dir();
    std::fs::create_dir_all(&archive).unwrap();
    let archive_path = archive.to_str().unwrap().to_owned();
    let archive_canon = archive.canonicalize().unwrap().to_str().unwrap().to_owned();
    let state = dir.path().join("state.json");
    let run = |faults: &[(&str, &str)]| archive_failing_syncs(&dir, &state, faults);
    let out = run(&[("FAIL_SYNC_EXACT", archive_canon.as_str()), ("FAIL_SYNC_SKIP", "2")]);
    assert_exit(&out, 1);
    assert!(archive.join("_checksums").is_dir(), "the records' folder was not made");
    assert!(stdout(&out).contains(&format!("cannot sync {archive_path}: Input/output error")), "{}", stdout(&out));
    assert!(stdout(&out).contains("failed: 3"), "{}", stdout(&out));
    assert!(stdout(&out).contains("last archived LSN: none yet"), "{}", stdout(&out));

    // A sound disk: the next run syncs the archive's directory as it opens
    // it, compares the copies with their records, and counts them.
    let out = run(&[]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("last archived LSN: 0x000000000000012c (300)"), "{}", stdout(&out));
    for p in &paths {
        dir.assert_archived(p);
    }
}

/// A restore into a folder it makes syncs the folder above each one it
/// made: else a power cut after "restored" could take the whole folder.
/// The sync of the one above failing is an error that names it.
#[test]
fn a_restore_makes_the_folders_it_creates_durable() {
    let dir = Dir::new();
    dir.chain(2, 10_000);
    assert_exit(&dir.cmd(&["archive", "--once", "--wal-dir", dir.wal().to_str().unwrap(), "--to", &dir.archive_url()]).output().unwrap(), 0);
    let made = dir.path().join("made");
    let into = made.join("deeper");
    let made_canon = dir.path().canonicalize().unwrap().join("made");
    let restore = |faults: &[(&str, &str)]| {
        let mut cmd = dir.cmd(&["restore", "--from", &dir.archive_url(), "--into", into.to_str().unwrap()]);
        cmd.env("LD_PRELOAD", fail_sync_shim()).envs(faults.iter().copied());
        cmd.output().unwrap()
    };
    let out = restore(&[("FAIL_SYNC_EXACT", made_canon.to_str().unwrap())]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains(&format!("cannot sync {}: Input/output error", made.display())), "{}", stderr(&out));
    assert!(std::fs::read_dir(&into).unwrap().next().is_none(), "a segment was restored into a folder that is not durable");

    std::fs::remove_dir_all(&made).unwrap();
    let out = restore(&[]);
    assert_exit(&out, 0);
    assert_eq!(std::fs::read_dir(&into).unwrap().count(), 2);
}

/// Runs a command, panicking with its output when it fails.
fn sh(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program).args(args).output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A loop-mounted ext4 image, unmounted and detached when dropped.
struct LoopFs {
    device: String,
    mount: std::path::PathBuf,
}

impl LoopFs {
    fn mount(image: &std::path::Path, mount: &std::path::Path) -> Self {
        std::fs::create_dir_all(mount).unwrap();
        let device = sh("losetup", &["-f", "--show", image.to_str().unwrap()]);
        // Journal commits every ten minutes: within a test, only what the
        // archiver syncs itself reaches the image.
        sh("mount", &["-o", "commit=600", &device, mount.to_str().unwrap()]);
        Self { device, mount: mount.to_owned() }
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.mount).status();
        let _ = std::process::Command::new("losetup").args(["-d", &self.device]).status();
    }
}

/// Power cuts, emulated: the archive and the state live on an ext4 image
/// on a loop device; at a random moment the archiver is stopped, the image
/// is copied as the disk holds it (what was synced, and perhaps some of
/// what was not, in any order, as a disk's cache may write it), and the
/// archiver is killed. The copy is mounted again where the archive was
/// (replaying its journal) and must hold no damaged segment, no record of
/// a segment that is not whole, and every segment up to the recovered
/// state's watermark; a new run then finishes the archive.
#[test]
fn survives_power_cuts_on_a_loop_mounted_ext4() {
    let dir = Dir::new();
    let paths = dir.chain(300, 256 * 1024);
    let work = tempfile::Builder::new().prefix("wal-archiver-powercut").tempdir_in("/dev/shm").unwrap();
    let image = work.path().join("disk.img");
    let cut = work.path().join("cut.img");
    let mnt = work.path().join("mnt");
    let archive = mnt.join("archive");
    let url = format!("file://{}", archive.display());
    let state = mnt.join("state.json");
    let mut seed = 0x9d2c_5680_u64;
    let wal = dir.wal();
    let args = ["archive", "--once", "--concurrency", "4", "--batch-size", "16", "--wal-dir", wal.to_str().unwrap(), "--to", &url, "--state", state.to_str().unwrap()];
    // How long a whole run takes here, so that the cuts fall inside one.
    let whole = {
        std::fs::File::create(&image).unwrap().set_len(192 << 20).unwrap();
        sh("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()]);
        let _fs = LoopFs::mount(&image, &mnt);
        let started = std::time::Instant::now();
        assert_exit(&dir.cmd(&args).output().unwrap(), 0);
        started.elapsed()
    };
    let mut midway = 0;
    for round in 0..8u32 {
        let _ = std::fs::remove_file(&image);
        std::fs::File::create(&image).unwrap().set_len(192 << 20).unwrap();
        sh("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()]);
        let fs = LoopFs::mount(&image, &mnt);
        let child = dir
            .cmd(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Spread over the run: round k cuts near (k + 1) / 9 of it.
        let jitter = next_random(&mut seed) % 20;
        let delay = (whole.as_millis() as u64 * u64::from(round + 1) / 9).saturating_sub(10) + jitter;
        std::thread::sleep(Duration::from_millis(delay));
        // SAFETY: signals to our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGSTOP) };
        sh("cp", &["--sparse=always", image.to_str().unwrap(), cut.to_str().unwrap()]);
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let _ = child.wait_with_output();
        drop(fs);

        let fs = LoopFs::mount(&cut, &mnt);
        let held: Vec<String> = match std::fs::read_dir(&archive) {
            Ok(rd) => rd.map(|e| e.unwrap().file_name().into_string().unwrap()).filter(|n| n.ends_with(".seg")).collect(),
            Err(_) => Vec::new(),
        };
        // Nothing damaged: verify --deep finds no segment whose bytes differ
        // from its record, and no record of a segment that is not whole.
        if archive.exists() {
            let out = dir.cmd(&["verify", "--deep", "--json", "--to", &url]).output().unwrap();
            let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
            if let Some(findings) = doc["findings"].as_array() {
                for f in findings {
                    let kind = f["kind"].as_str().unwrap_or("");
                    assert!(!["checksum-mismatch", "size-mismatch", "record-size-mismatch", "decoded-mismatch", "unreadable", "conflict"].contains(&kind), "round {round}, cut at {delay} ms: {f}");
                }
            }
        }
        // Everything the recovered state counts is there and whole.
        let watermark = std::fs::read(&state)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["state"]["last_archived_lsn"].as_u64());
        for p in &paths {
            let name = p.file_name().unwrap().to_str().unwrap();
            let last = wal_archiver::lsn::segment_last_lsn(name).unwrap();
            if watermark.is_some_and(|w| last <= w) {
                let copy = std::fs::read(archive.join(name)).unwrap_or_else(|e| panic!("round {round}: {name} is below the watermark but {e}"));
                assert!(copy == std::fs::read(p).unwrap(), "round {round}: {name} is below the watermark but not whole");
            }
        }
        // A new run after the cut finishes the archive.
        let out = dir
            .cmd(&["archive", "--once", "--wal-dir", wal.to_str().unwrap(), "--to", &url, "--state", state.to_str().unwrap()])
            .output()
            .unwrap();
        assert_exit(&out, 0);
        assert!(stdout(&out).contains("last archived LSN: 0x0000000000007530 (30000)"), "round {round}: {}", stdout(&out));
        assert_exit(&dir.cmd(&["verify", "--deep", "--to", &url]).output().unwrap(), 0);
        eprintln!("round {round}: cut at {delay} ms of {whole:?}, {} segments on the disk, watermark {watermark:?}", held.len());
        if !held.is_empty() && held.len() < paths.len() {
            midway += 1;
        }
        drop(fs);
    }
    assert!(midway > 0, "no cut fell inside a run: the cuts tested nothing");
}
