//! The restore side through the CLI, against `file://` and the S3 server:
//! a round trip, a missing object, a corrupt object, pruning, a restore
//! killed midway, and a differing file in the way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::util::s3::S3;
use crate::util::{assert_exit, content, kill_after, next_random, segment_name, stderr, stdout, tokio_rt, Dir, Remote};

#[derive(Clone, Copy)]
enum Backend {
    File,
    S3,
}

/// A WAL directory archived (and deleted locally) into a fresh archive.
struct Fixture {
    dir: Dir,
    url: String,
    remote: Remote,
    originals: BTreeMap<String, Vec<u8>>,
}

impl Fixture {
    /// `count` segments of 100 LSNs each (1..=100, 101..=200, ...), archived.
    fn new(backend: Backend, count: u64, len: usize) -> Fixture {
        let dir = Dir::new();
        let remote = match backend {
            Backend::File => Remote::file(&dir),
            Backend::S3 => Remote::s3(S3::get(), "restore"),
        };
        let mut f = Fixture { dir, url: remote.url.clone(), remote, originals: BTreeMap::new() };
        for p in f.dir.chain(count, len) {
            f.originals.insert(p.file_name().unwrap().to_str().unwrap().to_owned(), std::fs::read(&p).unwrap());
        }
        let out = f.run(&["archive", "--once", "--delete-after-archive", "--wal-dir", f.dir.wal().to_str().unwrap(), "--to", &f.url.clone()]);
        assert_exit(&out, 0);
        assert!(f.dir.local_segments().is_empty(), "the local directory was not emptied");
        f
    }

    fn cmd(&self, args: &[&str]) -> Command {
        self.remote.cmd(&self.dir, args)
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn restore_dir(&self) -> PathBuf {
        self.dir.path().join("restored")
    }

    fn restore(&self, until: u64) -> Output {
        let into = self.restore_dir();
        self.run(&["restore", "--from", &self.url, "--into", into.to_str().unwrap(), "--until-lsn", &until.to_string()])
    }

    fn verify(&self, extra: &[&str]) -> Output {
        let mut args = vec!["verify", "--to", &self.url];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// Replaces an archived object's bytes (same size), as bit rot would.
    fn corrupt(&self, name: &str) {
        self.remote.replace(name, content(999, self.originals[name].len()));
    }

    fn delete(&self, name: &str) {
        let archive = self.remote.open();
        tokio_rt().block_on(archive.delete(&archive.key_of(name))).unwrap();
    }

    /// The segment files in the restore directory (hidden temporaries left out).
    fn restored(&self) -> BTreeMap<String, Vec<u8>> {
        let Ok(rd) = std::fs::read_dir(self.restore_dir()) else { return BTreeMap::new() };
        rd.map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.starts_with('.'))
            .map(|n| {
                let bytes = std::fs::read(self.restore_dir().join(&n)).unwrap();
                (n, bytes)
            })
            .collect()
    }
}

fn round_trip(backend: Backend) {
    let f = Fixture::new(backend, 8, 30_000);
    assert_exit(&f.verify(&["--deep"]), 0);
    // LSN 450 lies in the fifth segment: exactly the first five come back.
    let out = f.restore(450);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("restored 5 segments"), "{}", stdout(&out));
    let restored = f.restored();
    let want: Vec<String> = (0..5).map(|i| segment_name(i * 100 + 1, i * 100 + 100)).collect();
    assert_eq!(restored.keys().cloned().collect::<Vec<_>>(), want);
    for (name, bytes) in &restored {
        assert!(bytes == &f.originals[name], "{name} differs from the segment archived");
    }
    // Again: everything is there already, nothing is downloaded.
    let out = f.restore(450);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("restored 0 segments") && stdout(&out).contains("5 already there"), "{}", stdout(&out));
}

fn missing_object(backend: Backend) {
    let f = Fixture::new(backend, 6, 1_000);
    f.delete(&segment_name(301, 400));
    let out = f.verify(&[]);
    assert_exit(&out, 1);
    assert!(stdout(&out).contains("gap: LSNs 0x000000000000012d (301) to 0x0000000000000190 (400) are missing"), "{}", stdout(&out));
    let out = f.restore(450);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("LSNs 0x000000000000012d (301) to 0x0000000000000190 (400) are missing"), "{}", stderr(&out));
    assert!(f.restored().is_empty(), "something was downloaded before the refusal");
    // Below the hole, the chain is whole.
    assert_exit(&f.restore(300), 0);
    assert_exit(&f.verify(&["--until-lsn", "300"]), 0);
}

fn corrupt_object(backend: Backend) {
    let f = Fixture::new(backend, 4, 5_000);
    let name = segment_name(201, 300);
    f.corrupt(&name);
    // Sizes and markers still match: only reading the bytes tells.
    let out = f.verify(&["--deep"]);
    assert_exit(&out, 1);
    assert!(stdout(&out).contains(&format!("checksum mismatch: {name}")), "{}", stdout(&out));
    let out = f.restore(400);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains(&name) && stderr(&out).contains("were archived"), "{}", stderr(&out));
    assert!(!f.restored().contains_key(&name), "a corrupt segment got its final name");
}

fn prune_then_verify(backend: Backend) {
    let f = Fixture::new(backend, 6, 1_000);
    let out = f.run(&["prune", "--to", &f.url, "--before-lsn", "301", "--dry-run"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("would prune 3 segments"), "{}", stdout(&out));
    assert_exit(&f.verify(&["--from-lsn", "1"]), 0);
    // 350 is inside a segment: it stays, with everything above.
    let out = f.run(&["prune", "--to", &f.url, "--before-lsn", "350"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("pruned 3 segments"), "{}", stdout(&out));
    let out = f.verify(&["--from-lsn", "301", "--deep"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("3 segments"), "{}", stdout(&out));
    // Below the bound it is gone, and verify says so.
    assert_exit(&f.verify(&["--from-lsn", "1"]), 1);
    let out = f.restore(600);
    assert_exit(&out, 0);
    assert_eq!(f.restored().len(), 3);
}

#[test]
fn round_trip_file() {
    round_trip(Backend::File);
}

#[test]
fn round_trip_s3() {
    let _one = S3::exclusive();
    round_trip(Backend::S3);
}

#[test]
fn missing_object_file() {
    missing_object(Backend::File);
}

#[test]
fn missing_object_s3() {
    let _one = S3::exclusive();
    missing_object(Backend::S3);
}

#[test]
fn corrupt_object_file() {
    corrupt_object(Backend::File);
}

#[test]
fn corrupt_object_s3() {
    let _one = S3::exclusive();
    corrupt_object(Backend::S3);
}

#[test]
fn prune_then_verify_file() {
    prune_then_verify(Backend::File);
}

#[test]
fn prune_then_verify_s3() {
    let _one = S3::exclusive();
    prune_then_verify(Backend::S3);
}

#[test]
fn refuses_to_overwrite_a_differing_file_file() {
    refuses_to_overwrite_a_differing_file(Backend::File);
}

#[test]
fn refuses_to_overwrite_a_differing_file_s3() {
    let _one = S3::exclusive();
    refuses_to_overwrite_a_differing_file(Backend::S3);
}

#[test]
fn resumes_a_restore_killed_midway_file() {
    resumes_a_restore_killed_midway(Backend::File);
}

#[test]
fn resumes_a_restore_killed_midway_s3() {
    let _one = S3::exclusive();
    resumes_a_restore_killed_midway(Backend::S3);
}

fn refuses_to_overwrite_a_differing_file(backend: Backend) {
    let f = Fixture::new(backend, 3, 1_000);
    std::fs::create_dir_all(f.restore_dir()).unwrap();
    let name = segment_name(101, 200);
    std::fs::write(f.restore_dir().join(&name), b"something else").unwrap();
    let out = f.restore(300);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains(&name) && stderr(&out).contains("a different file is already there"), "{}", stderr(&out));
    assert_eq!(std::fs::read(f.restore_dir().join(&name)).unwrap(), b"something else");
    assert_eq!(f.restored().len(), 1, "other segments were downloaded before the refusal");
}

/// Kill the real binary in the middle of restores, again and again; no file
/// ever carries a final name without its whole, verified content, and a
/// last run completes.
fn resumes_a_restore_killed_midway(backend: Backend) {
    let f = Fixture::new(backend, 40, 2 * 1024 * 1024);
    let into = f.restore_dir();
    let mut rng = 0x5eed_u64;
    let mut kills = 0;
    // A restore that finishes before its kill shows nothing: start again
    // from an empty directory until two were killed midway.
    for _ in 0..30 {
        let child = f
            .cmd(&["restore", "--from", &f.url, "--into", into.to_str().unwrap(), "--until-lsn", "4000", "--concurrency", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let finished = !kill_after(child, Duration::from_micros(5_000 + next_random(&mut rng) % 100_000));
        if !finished {
            kills += 1;
        }
        for (name, bytes) in f.restored() {
            assert!(bytes == f.originals[&name], "after kill {kills}: {name} carries its final name but is partial or wrong");
        }
        if finished && kills >= 2 {
            break;
        }
        if finished {
            std::fs::remove_dir_all(&into).unwrap();
        }
    }
    assert!(kills >= 2, "only {kills} restores were killed midway; the test shows too little");
    eprintln!("{kills} restores killed midway");
    let out = f.restore(4000);
    assert_exit(&out, 0);
    let restored = f.restored();
    assert_eq!(restored.len(), 40);
    for (name, bytes) in &restored {
        assert!(bytes == &f.originals[name], "{name}");
    }
    assert!(leftovers(&into).is_empty(), "temporary files left: {:?}", leftovers(&into));
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.starts_with('.')).collect())
        .unwrap_or_default()
}
