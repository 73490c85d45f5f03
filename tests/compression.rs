//! Compressed archives through the CLI, on `file://`, on S3 staged (moto)
//! and on S3 in one verified PUT (s3s-fs): archived as `.zst`, verified
//! deep, restored to the exact bytes; archives that mix plain and
//! compressed objects, and that hold one segment both ways.

use std::collections::BTreeMap;
use std::process::{Command, Output};

use wal_archiver::store::Listing;

use crate::util::s3::S3;
use crate::util::{assert_exit, content, segment_name, stderr, stdout, tokio_rt, Dir, Remote};

#[derive(Clone, Copy, Debug)]
enum Backend {
    File,
    /// moto: segments are staged, checked and copied.
    S3Staged,
    /// s3s-fs: each segment goes in one PUT that the store checks.
    S3OnePut,
    /// Azurite: staged, read back, copied.
    Azure,
}

/// A WAL directory of WAL-like segments and an archive on one backend.
struct Fixture {
    dir: Dir,
    url: String,
    remote: Remote,
    originals: BTreeMap<String, Vec<u8>>,
}

impl Fixture {
    fn new(backend: Backend, test: &str) -> Fixture {
        let dir = Dir::new();
        let remote = match backend {
            Backend::File => Remote::file(&dir),
            Backend::S3Staged => Remote::s3(S3::get(), test),
            Backend::S3OnePut => Remote::s3(crate::util::s3::checking(), test),
            Backend::Azure => Remote::azure(crate::util::azure::Azure::get(), test),
        };
        Fixture { dir, url: remote.url.clone(), remote, originals: BTreeMap::new() }
    }

    /// Writes `count` WAL-like segments of `size` bytes from LSN `first`
    /// (`generate --content wal`: each segment holds `size` LSNs), and
    /// remembers their bytes.
    fn generate(&mut self, first: u64, count: u32, size: u32) {
        let wal = self.dir.wal();
        let (count, size, first) = (count.to_string(), size.to_string(), first.to_string());
        let out = self.run(&["generate", "--dir", wal.to_str().unwrap(), "--count", &count, "--size", &size, "--start-lsn", &first, "--content", "wal"]);
        assert_exit(&out, 0);
        self.originals.extend(self.dir.local_segments());
    }

    fn cmd(&self, args: &[&str]) -> Command {
        self.remote.cmd(&self.dir, args)
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn archive(&self, extra: &[&str]) -> Output {
        let wal = self.dir.wal();
        let mut args = vec!["archive", "--once", "--wal-dir", wal.to_str().unwrap(), "--to", &self.url];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    fn verify(&self, extra: &[&str]) -> Output {
        let mut args = vec!["verify", "--to", &self.url];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// Restores up to `until` into a fresh directory, and returns what is there.
    fn restore(&self, until: u64) -> (Output, BTreeMap<String, Vec<u8>>) {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let into = self.dir.path().join(format!("restored-{n}"));
        let out = self.run(&["restore", "--from", &self.url, "--into", into.to_str().unwrap(), "--until-lsn", &until.to_string()]);
        let files = std::fs::read_dir(&into)
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                    .map(|n| {
                        let bytes = std::fs::read(into.join(&n)).unwrap();
                        (n, bytes)
                    })
                    .collect()
            })
            .unwrap_or_default();
        (out, files)
    }

    fn listing(&self) -> Listing {
        tokio_rt().block_on(self.remote.open().list()).unwrap()
    }

    fn get(&self, object: &str) -> Vec<u8> {
        let archive = self.remote.open();
        tokio_rt().block_on(archive.get(&archive.key_of(object))).unwrap().unwrap_or_else(|| panic!("{object} is not in the archive"))
    }
}

/// The name of the `k`th segment (from 0) of `size` LSNs each, from LSN 1.
fn seg(k: u64, size: u64) -> String {
    segment_name(k * size + 1, (k + 1) * size)
}

/// Archives WAL-like segments with zstd, deleting them locally (each
/// deletion proved against its `.zst` object), verifies deep, restores the
/// exact bytes; then a damaged object is found by verify --deep and refused
/// by restore.
fn round_trip(backend: Backend) {
    let mut f = Fixture::new(backend, "zstd-round-trip");
    f.generate(1, 6, 200_000);
    let out = f.archive(&["--compression", "zstd:3", "--delete-after-archive"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("archived 6 segments"), "{}", stdout(&out));
    assert!(f.dir.local_segments().is_empty(), "{backend:?}: the local segments were not deleted");

    // Each segment as `.zst`, recorded with both sums, much smaller.
    let listing = f.listing();
    let names: Vec<&str> = listing.objects.iter().map(|o| o.name.as_str()).collect();
    let want: Vec<String> = f.originals.keys().map(|n| format!("{n}.zst")).collect();
    assert_eq!(names, want, "{backend:?}");
    for o in &listing.objects {
        let original = &f.originals[o.name.trim_end_matches(".zst")];
        let seg = o.segment.unwrap_or_else(|| panic!("{backend:?}: {} has no record of its segment", o.name));
        assert_eq!((seg.size, seg.crc), (original.len() as u64, crc32c::crc32c(original)), "{}", o.name);
        let stored = f.get(&o.name);
        assert_eq!((o.size, o.crc32c), (stored.len() as u64, Some(crc32c::crc32c(&stored))), "{}", o.name);
        assert!(stored.len() * 100 < original.len() * 45, "{}: {} bytes stored of {}", o.name, stored.len(), original.len());
        assert!(zstd::decode_all(&stored[..]).unwrap() == *original, "{} does not decode to the segment", o.name);
    }

    // status sees the same archive: every segment archived, nothing unverified.
    let wal = f.dir.wal();
    let out = f.run(&["status", "--json", "--wal-dir", wal.to_str().unwrap(), "--to", &f.url]);
    assert_exit(&out, 0);
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!((status["last_archived_lsn"].as_u64(), status["segments_archived"].as_u64()), (Some(1_200_000), Some(6)), "{status}");
    assert_eq!(status["bytes_archived"].as_u64(), Some(1_200_000), "decoded bytes: {status}");
    assert!(status["unverified"].as_array().unwrap().is_empty() && status["breaks"].as_array().unwrap().is_empty(), "{status}");

    let out = f.verify(&["--deep"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("6 segments") && stdout(&out).contains("stored"), "{}", stdout(&out));
    let (out, restored) = f.restore(1_200_000);
    assert_exit(&out, 0);
    assert_eq!(restored.keys().collect::<Vec<_>>(), f.originals.keys().collect::<Vec<_>>(), "{backend:?}");
    for (name, bytes) in &restored {
        assert!(bytes == &f.originals[name], "{backend:?}: {name} restored with other bytes");
    }

    // A compressed object that no longer holds its frame: the stored bytes
    // differ from their record (deep verify), and restore refuses it.
    let victim = format!("{}.zst", seg(2, 200_000));
    let mut bytes = f.get(&victim);
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    f.remote.replace(&victim, bytes);
    let out = f.verify(&["--deep"]);
    assert_exit(&out, 1);
    assert!(stdout(&out).contains(&format!("checksum mismatch: {victim}")), "{}", stdout(&out));
    let (out, restored) = f.restore(1_200_000);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains(&victim), "{}", stderr(&out));
    assert!(!restored.contains_key(&seg(2, 200_000)), "a damaged segment got its final name");
    // Below it the chain is still whole.
    let (out, restored) = f.restore(400_000);
    assert_exit(&out, 0);
    assert_eq!(restored.len(), 2);
}

#[test]
fn round_trip_file() {
    round_trip(Backend::File);
}

#[test]
fn round_trip_s3_staged() {
    let _one = S3::exclusive();
    round_trip(Backend::S3Staged);
}

#[test]
fn round_trip_s3_in_one_put() {
    round_trip(Backend::S3OnePut);
}

#[test]
fn round_trip_azure() {
    round_trip(Backend::Azure);
}

/// Three segments archived plain, three more with zstd, into one archive:
/// it verifies, restores and prunes across both kinds; switching
/// compression never uploads again what is archived either way; a lost
/// state compares the `.zst` objects instead of uploading.
fn mixed(backend: Backend) {
    let mut f = Fixture::new(backend, "zstd-mixed");
    f.generate(1, 3, 50_000);
    assert_exit(&f.archive(&[]), 0);
    f.generate(150_001, 3, 50_000);
    let out = f.archive(&["--compression", "zstd"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("archived 3 segments"), "only the new ones go: {}", stdout(&out));
    let names: Vec<String> = f.listing().objects.iter().map(|o| o.name.clone()).collect();
    let mut want: Vec<String> = (0..3).map(|k| seg(k, 50_000)).collect();
    want.extend((3..6).map(|k| format!("{}.zst", seg(k, 50_000))));
    assert_eq!(names, want, "{backend:?}");

    // Back to plain: nothing is uploaded again.
    let out = f.archive(&["--compression", "none"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("archived 0 segments"), "{}", stdout(&out));
    // A lost state: each object is compared with its local file, none sent.
    std::fs::remove_file(f.dir.wal().join(".wal-archiver-state.json")).unwrap();
    let wal = f.dir.wal();
    let out = f.run(&["status", "--json", "--wal-dir", wal.to_str().unwrap(), "--to", &f.url]);
    assert_exit(&out, 0);
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let confirm: Vec<&str> = status["to_confirm"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(confirm, want, "status names the objects to compare: {status}");
    let out = f.archive(&["--compression", "zstd"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("already in the archive, compared with the local files: 6"), "{}", stdout(&out));
    assert_eq!(f.listing().objects.len(), 6, "{backend:?}: something was uploaded again");

    let out = f.verify(&["--deep"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("6 segments"), "{}", stdout(&out));
    // A new process deletes the local files: each is proved against its
    // object (plain, or decoded), with nothing remembered from an upload.
    let out = f.archive(&["--delete-after-archive"]);
    assert_exit(&out, 0);
    assert!(f.dir.local_segments().is_empty(), "{backend:?}: {}", stdout(&out));
    let (out, restored) = f.restore(300_000);
    assert_exit(&out, 0);
    assert!(restored == f.originals, "{backend:?}: the restored segments differ");

    // A prune below the fifth segment removes three plain and one
    // compressed object, and their records.
    let out = f.run(&["prune", "--to", &f.url, "--before-lsn", "200001"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("pruned 4 segments"), "{}", stdout(&out));
    let listing = f.listing();
    let names: Vec<String> = listing.objects.iter().map(|o| o.name.clone()).collect();
    assert_eq!(names, want[4..], "{backend:?}");
    let records: Vec<&String> = listing.markers.keys().collect();
    assert_eq!(records.len(), 2, "{backend:?}: records left of pruned objects: {records:?}");
    assert_exit(&f.verify(&["--deep"]), 0);
}

#[test]
fn mixed_file() {
    mixed(Backend::File);
}

#[test]
fn mixed_s3() {
    let _one = S3::exclusive();
    mixed(Backend::S3Staged);
}

/// One archive that holds every segment both plain and compressed (two
/// archivers with different settings, say): one segment each, no overlap;
/// restore and prune work; copies whose records disagree are neither used.
#[test]
fn holds_a_segment_plain_and_compressed_as_one_segment() {
    let mut f = Fixture::new(Backend::File, "both");
    f.generate(1, 4, 30_000);
    assert_exit(&f.archive(&[]), 0);
    // The same segments compressed into a second archive, then laid beside
    // the plain ones with their records.
    let other = f.dir.path().join("other");
    let out = f.run(&["archive", "--once", "--compression", "zstd", "--wal-dir", f.dir.wal().to_str().unwrap(), "--to", other.to_str().unwrap(), "--state", f.dir.path().join("other-state.json").to_str().unwrap()]);
    assert_exit(&out, 0);
    let archive = f.dir.archive_dir();
    for entry in std::fs::read_dir(&other).unwrap().chain(std::fs::read_dir(other.join("_checksums")).unwrap()) {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if name.contains(".zst") {
            let sub = if entry.path().parent() == Some(other.as_path()) { "" } else { "_checksums" };
            std::fs::copy(entry.path(), archive.join(sub).join(&name)).unwrap();
        }
    }
    assert_eq!(f.listing().objects.len(), 8);

    let out = f.verify(&["--deep"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(text.contains("4 segments") && !text.contains("overlap") && !text.contains("not on the chain"), "{text}");
    let (out, restored) = f.restore(120_000);
    assert_exit(&out, 0);
    assert!(restored == f.originals, "the restored segments differ");
    // A new run counts each segment once, and uploads nothing.
    let out = f.archive(&["--compression", "zstd"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("archived 0 segments"), "{}", stdout(&out));

    // A prune takes both copies of what lies below the bound, with their records.
    let records = archive.join("_checksums");
    let out = f.run(&["prune", "--to", &f.url, "--before-lsn", "30001"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("pruned 2 segments"), "{}", stdout(&out));
    let first = seg(0, 30_000);
    assert!(f.listing().objects.iter().all(|o| !o.name.starts_with(&first)), "a copy of {first} was left");
    let left = std::fs::read_dir(&records).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(&first)).count();
    assert_eq!(left, 0, "records of {first} were left");

    // The second segment's compressed record now claims other bytes: its two
    // copies disagree, neither is used, and verify reports both.
    let (second, zst) = (seg(1, 30_000), format!("{}.zst", seg(1, 30_000)));
    let record = std::fs::read_dir(&records).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).find(|n| n.starts_with(&zst)).unwrap();
    let (head, _) = record.rsplit_once(".segment-").unwrap();
    std::fs::rename(records.join(&record), records.join(format!("{head}.segment-00000000-30000"))).unwrap();
    let out = f.verify(&[]);
    assert_exit(&out, 1);
    let text = stdout(&out);
    assert!(text.contains(&format!("no recorded checksum: {second}")) && text.contains(&format!("no recorded checksum: {zst}")), "{text}");
    assert!(text.contains("gap: LSNs 0x0000000000007531 (30001) to 0x000000000000ea60 (60000) are missing"), "{text}");
    let (out, _) = f.restore(120_000);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("LSNs 0x0000000000007531 (30001) to 0x000000000000ea60 (60000) are missing"), "{}", stderr(&out));
}

/// The setting is checked before anything runs, from the command line and
/// from the config file; a good config value is used.
#[test]
fn refuses_an_unknown_compression_and_takes_one_from_the_config_file() {
    let mut f = Fixture::new(Backend::File, "settings");
    f.generate(1, 2, 10_000);
    for bad in ["gzip", "zstd:0", "zstd:20", "zstd:fast"] {
        let out = f.archive(&["--compression", bad]);
        assert_exit(&out, 2);
        assert!(stderr(&out).contains(&format!("cannot use compression \"{bad}\"")), "{}", stderr(&out));
    }
    let config = f.dir.path().join("archiver.toml");
    std::fs::write(&config, "compression = \"brotli\"\n").unwrap();
    let out = f.archive(&["--config", config.to_str().unwrap()]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains(&format!("compression = \"brotli\" from config file {}, line 1", config.display())), "{}", stderr(&out));
    assert!(!f.dir.archive_dir().exists(), "an archive was made before the settings were checked");
    std::fs::write(&config, "compression = \"zstd:1\"\n").unwrap();
    assert_exit(&f.archive(&["--config", config.to_str().unwrap()]), 0);
    let names = f.dir.archived_names();
    assert_eq!(names, [format!("{}.zst", seg(0, 10_000)), format!("{}.zst", seg(1, 10_000))]);
    // Random bytes do not shrink, and still round-trip.
    std::fs::write(f.dir.wal().join(seg(2, 10_000)), content(7, 100_000)).unwrap();
    assert_exit(&f.archive(&["--compression", "zstd:19"]), 0);
    let (out, restored) = f.restore(30_000);
    assert_exit(&out, 0);
    assert!(restored[&seg(2, 10_000)] == content(7, 100_000));
}

/// A plain object whose record was never written (a crash between the two),
/// then runs with zstd: the segment is archived again as `.zst`, and the
/// plain object is a leftover beside it, a note in verify, not a hole.
#[test]
fn a_plain_object_without_its_record_beside_a_compressed_copy_is_a_leftover() {
    let mut f = Fixture::new(Backend::File, "leftover");
    f.generate(1, 3, 20_000);
    assert_exit(&f.archive(&[]), 0);
    let second = seg(1, 20_000);
    let records = f.dir.archive_dir().join("_checksums");
    let record = std::fs::read_dir(&records).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).find(|n| n.starts_with(&second)).unwrap();
    std::fs::remove_file(records.join(record)).unwrap();
    std::fs::remove_file(f.dir.wal().join(".wal-archiver-state.json")).unwrap();
    let out = f.verify(&[]);
    assert_exit(&out, 1);
    assert!(stdout(&out).contains(&format!("no recorded checksum: {second}")), "{}", stdout(&out));

    let out = f.archive(&["--compression", "zstd"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("archived 1 segments"), "{}", stdout(&out));
    assert!(f.dir.archived_names().contains(&format!("{second}.zst")), "{:?}", f.dir.archived_names());
    let out = f.verify(&["--deep"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(text.contains("3 segments") && text.contains(&format!("not on the chain (its LSNs are held by others): {second}")), "{text}");
    assert!(!text.contains("no recorded checksum"), "{text}");
    let (out, restored) = f.restore(60_000);
    assert_exit(&out, 0);
    assert!(restored == f.originals, "the restored segments differ");
}

/// Two recorded copies of one segment that hold different bytes: the next
/// run compares both with the local file, finds the one that differs (a
/// conflict), and holds the segment: not counted, the local file kept,
/// exit 1. Once an operator removes the bad copy, the other counts.
#[test]
fn holds_a_segment_whose_two_copies_hold_different_bytes_as_a_conflict() {
    let mut f = Fixture::new(Backend::File, "two-copies");
    f.generate(1, 3, 20_000);
    assert_exit(&f.archive(&[]), 0);
    // A compressed copy of the second segment with other bytes, recorded as
    // an archiver would have recorded it.
    let second = seg(1, 20_000);
    let other: Vec<u8> = f.originals[&second].iter().map(|b| b ^ 1).collect();
    let frame = zstd::encode_all(&other[..], 3).unwrap();
    let zst = format!("{second}.zst");
    let archive = f.dir.archive_dir();
    std::fs::write(archive.join(&zst), &frame).unwrap();
    let record = format!(
        "{zst}.crc32c-{:08x}-{}.segment-{:08x}-{}",
        crc32c::crc32c(&frame),
        frame.len(),
        crc32c::crc32c(&other),
        other.len()
    );
    std::fs::write(archive.join("_checksums").join(record), b"").unwrap();
    std::fs::remove_file(f.dir.wal().join(".wal-archiver-state.json")).unwrap();

    let out = f.archive(&["--delete-after-archive"]);
    assert_exit(&out, 1);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains(&format!("under {zst}'s key, but the local segment has")), "{text}");
    assert!(f.dir.wal().join(&second).exists(), "the local segment was deleted while its copies disagree");
    assert!(stdout(&out).contains("last archived LSN: 0x0000000000004e20 (20000)"), "{}", stdout(&out));
    let out = f.verify(&[]);
    assert_exit(&out, 1);
    assert!(stdout(&out).contains(&format!("conflict: {zst}")), "{}", stdout(&out));

    // The operator removes the bad copy: the plain one counts, the conflict goes.
    std::fs::remove_file(archive.join(&zst)).unwrap();
    let out = f.archive(&["--delete-after-archive"]);
    assert_exit(&out, 0);
    assert!(f.dir.local_segments().is_empty(), "{}", stdout(&out));
    assert_exit(&f.verify(&["--deep"]), 0);
}

/// Two recorded copies of one segment where the compressed one does not
/// decode: its comparison fails, which holds the segment as a conflict
/// would (the plain copy matching the local file is not enough), the local
/// file stays, and `--once` gives up after its attempts with exit 1.
#[test]
fn holds_a_segment_whose_other_copy_cannot_be_compared() {
    let mut f = Fixture::new(Backend::File, "undecodable");
    f.generate(1, 2, 20_000);
    assert_exit(&f.archive(&[]), 0);
    let second = seg(1, 20_000);
    let zst = format!("{second}.zst");
    let archive = f.dir.archive_dir();
    let junk = content(3, 5_000);
    std::fs::write(archive.join(&zst), &junk).unwrap();
    // Its record claims other segment bytes than the plain copy's: the two disagree.
    let record = format!("{zst}.crc32c-{:08x}-{}.segment-{:08x}-20000", crc32c::crc32c(&junk), junk.len(), 7);
    std::fs::write(archive.join("_checksums").join(record), b"").unwrap();
    std::fs::remove_file(f.dir.wal().join(".wal-archiver-state.json")).unwrap();

    let wal = f.dir.wal();
    let child = f
        .cmd(&["archive", "--once", "--delete-after-archive", "--max-attempts", "2", "--retry-base-delay", "0.05", "--wal-dir", wal.to_str().unwrap(), "--to", &f.url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = crate::util::wait_within(child, std::time::Duration::from_secs(60));
    assert_exit(&out, 1);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains(&format!("cannot decode {}/{zst}", f.url)), "{text}");
    assert!(wal.join(&second).exists(), "the local segment was deleted while a copy of it could not be compared");
    assert!(stdout(&out).contains("last archived LSN: 0x0000000000004e20 (20000)"), "{}", stdout(&out));
    assert!(stdout(&out).contains("failed: 1"), "{}", stdout(&out));

    // The same while watching, where the archive is listed now and then and
    // passes come every interval while a retry waits: the segment is never
    // uploaded past the pair, and its local file stays.
    let child = f
        .cmd(&[
            "archive", "--delete-after-archive", "--interval", "0.1", "--retry-base-delay", "1", "--retry-max-delay", "1", "--wal-dir",
            wal.to_str().unwrap(), "--to", &f.url,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(3500));
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = crate::util::wait_within(child, std::time::Duration::from_secs(30));
    let text = stderr(&out);
    assert!(text.matches("cannot decode").count() >= 2, "compared again after its backoff:\n{text}");
    assert!(!text.contains("existed=true") || !text.contains(&format!("segment={second}")), "{text}");
    assert!(wal.join(&second).exists(), "the watcher deleted the local segment while a copy of it could not be compared:\n{text}");
}
