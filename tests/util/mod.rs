//! Helpers for the harness: temporary WAL directories and archives, sample
//! segments, and the real `wal-archiver` binary.

#![allow(dead_code)]

pub mod faults;
pub mod gcs;
pub mod azure;
pub mod proxy;
pub mod s3;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use wal_archiver::component::{wit, PlannerRuntime};
use wal_archiver::storage::Storage;
use wal_archiver::store::{Archive, CHAIN_DIR, CHECKSUM_DIR, CONFLICT_DIR, STAGING_DIR};
use wal_archiver::wal::WalDir;

/// A temporary place with a WAL directory and a local archive beside it.
pub struct Dir {
    pub tmp: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(tmp.path().join("wal")).unwrap();
        Self { tmp }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn wal(&self) -> PathBuf {
        self.path().join("wal")
    }

    pub fn archive_dir(&self) -> PathBuf {
        self.path().join("archive")
    }

    pub fn archive_url(&self) -> String {
        format!("file://{}", self.archive_dir().display())
    }

    /// Writes a segment covering `first..=last` with `len` bytes derived from `first`.
    pub fn segment(&self, first: u64, last: u64, len: usize) -> PathBuf {
        let path = self.wal().join(segment_name(first, last));
        std::fs::write(&path, content(first, len)).unwrap();
        path
    }

    /// Writes `count` contiguous segments of `len` bytes, each covering 100 LSNs from 1.
    pub fn chain(&self, count: u64, len: usize) -> Vec<PathBuf> {
        (0..count).map(|i| self.segment(i * 100 + 1, i * 100 + 100, len)).collect()
    }

    /// Names of the entries in the local archive, sorted, without its own folders.
    pub fn archived_names(&self) -> Vec<String> {
        let mut names: Vec<String> = list_names(&self.archive_dir())
            .into_iter()
            .filter(|n| ![STAGING_DIR, CHECKSUM_DIR, CHAIN_DIR, CONFLICT_DIR].contains(&n.as_str()))
            .collect();
        names.sort();
        names
    }

    /// What is left in the archive's staging area.
    pub fn staging_leftovers(&self) -> Vec<String> {
        list_names(&self.archive_dir().join(STAGING_DIR))
    }

    /// Asserts that the archive holds a byte-identical copy of `local`.
    pub fn assert_archived(&self, local: &Path) {
        let name = local.file_name().unwrap();
        let remote = self.archive_dir().join(name);
        let want = std::fs::read(local).unwrap();
        let got = std::fs::read(&remote).unwrap_or_else(|e| panic!("{} is not archived: {e}", remote.display()));
        assert!(want == got, "{} differs from its archived copy", local.display());
    }

    /// The segments in the WAL directory now, with their bytes.
    pub fn local_segments(&self) -> std::collections::BTreeMap<String, Vec<u8>> {
        list_names(&self.wal())
            .into_iter()
            .filter(|n| n.ends_with(".seg"))
            .map(|n| {
                let bytes = std::fs::read(self.wal().join(&n)).unwrap();
                (n, bytes)
            })
            .collect()
    }

    /// A command running the real binary.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wal-archiver"));
        cmd.args(args).current_dir(self.path()).env("RUST_LOG", "info");
        cmd
    }

    /// `archive --once` of this WAL directory into this archive, with extra flags.
    pub fn archive_once(&self, extra: &[&str]) -> Output {
        let wal = self.wal();
        let url = self.archive_url();
        let mut args = vec!["archive", "--once", "--wal-dir", wal.to_str().unwrap(), "--to", &url];
        args.extend_from_slice(extra);
        self.cmd(&args).output().unwrap()
    }

    /// Storage over this WAL directory and the given archive.
    pub fn storage(&self, archive: Archive, rt: &tokio::runtime::Runtime) -> Storage {
        Storage::new(WalDir::open(&self.wal()).unwrap(), archive, rt.handle().clone())
    }
}

/// An archive the CLI and the tests reach alike: a `file://` archive, or
/// one on a server the tests share (S3, Azurite), with the settings the
/// binary takes from its environment and the tests pass as options.
pub struct Remote {
    pub url: String,
    pub env: Vec<(&'static str, String)>,
    pub options: Vec<(String, String)>,
}

impl Remote {
    /// The local archive beside `dir`'s WAL directory.
    pub fn file(dir: &Dir) -> Self {
        Self { url: dir.archive_url(), env: Vec::new(), options: Vec::new() }
    }

    /// A prefix of its own for `test` on an S3 server.
    pub fn s3(s3: &s3::S3, test: &str) -> Self {
        Self { url: s3.url(test), env: s3.env_via(&s3.endpoint), options: s3.options() }
    }

    /// A prefix of its own for `test` in Azurite.
    pub fn azure(az: &azure::Azure, test: &str) -> Self {
        Self { url: az.url(test), env: az.env(), options: az.options() }
    }

    /// A command running the real binary in `dir`, with the server's
    /// settings in its environment.
    pub fn cmd(&self, dir: &Dir, args: &[&str]) -> Command {
        let mut cmd = dir.cmd(args);
        cmd.envs(self.env.iter().map(|(k, v)| (*k, v.as_str())));
        cmd
    }

    /// The archive, opened as the binary opens it.
    pub fn open(&self) -> Archive {
        Archive::open_with(&self.url, &self.options, wal_archiver::store::DEFAULT_REQUEST_RETRIES).unwrap()
    }

    /// Replaces the object `name` with `bytes`, as bit rot or an operator would.
    pub fn replace(&self, name: &str, bytes: Vec<u8>) {
        let archive = self.open();
        let key = archive.key_of(name);
        let rt = tokio_rt();
        rt.block_on(archive.delete(&key)).unwrap();
        rt.block_on(archive.put_create(&key, bytes.into())).unwrap();
    }
}

fn list_names(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    }
}

/// The names of a segment list, as owned strings.
pub fn names(list: &wit::SegmentList) -> Vec<String> {
    list.iter().map(|(n, _)| n.to_owned()).collect()
}

pub fn segment_name(first: u64, last: u64) -> String {
    format!("wal-{first:016x}-{last:016x}.seg")
}

/// Bytes that differ from segment to segment.
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Waits for a child, killing it and failing the test if it runs past `limit`.
pub fn wait_within(child: std::process::Child, limit: std::time::Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output().unwrap()));
    match rx.recv_timeout(limit) {
        Ok(out) => out,
        Err(_) => {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("the archiver did not finish within {limit:?}");
        }
    }
}

/// Runs the binary with `args` under GNU time and reports its peak resident
/// memory in bytes. (wait4's rusage would count the test process itself,
/// which the child is forked from before exec.)
pub fn run_measuring_rss(dir: &Dir, args: &[&str], env: &[(&str, String)]) -> (Output, u64) {
    let report = dir.path().join("time-report");
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-f").arg("%M").arg("-o").arg(&report).arg(env!("CARGO_BIN_EXE_wal-archiver")).args(args);
    cmd.current_dir(dir.path()).env("RUST_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run /usr/bin/time ({e}); install it: apt-get install time"));
    let text = std::fs::read_to_string(&report).unwrap();
    let kib: u64 = text.trim().lines().last().unwrap().trim().parse().unwrap_or_else(|_| panic!("odd report: {text}"));
    (out, kib * 1024)
}

/// The next number of a xorshift64 sequence: test schedules that repeat.
pub fn next_random(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Waits `delay`, then SIGKILLs the child if it is still running, and reaps
/// it. True when it was killed, false when it had finished by itself.
pub fn kill_after(mut child: std::process::Child, delay: std::time::Duration) -> bool {
    std::thread::sleep(delay);
    let running = child.try_wait().unwrap().is_none();
    if running {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    }
    child.wait().unwrap();
    running
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Fails with both streams shown unless the command exited with `code`.
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

/// One planner runtime for the whole test binary: compiling it once is what
/// the host does too.
pub fn runtime() -> Arc<PlannerRuntime> {
    static RT: std::sync::OnceLock<Arc<PlannerRuntime>> = std::sync::OnceLock::new();
    RT.get_or_init(|| Arc::new(PlannerRuntime::embedded().expect("the embedded component loads")))
        .clone()
}

pub fn config(prefix: &str) -> wit::ArchiverConfig {
    wit::ArchiverConfig {
        prefix: prefix.into(),
        batch_size: 4,
        batch_bytes: 0,
        verify_checksums: true,
        delete_after_archive: false,
        retry_base_ms: 1,
        retry_max_ms: 4,
        compression: wit::Compression::None,
    }
}

pub fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}
