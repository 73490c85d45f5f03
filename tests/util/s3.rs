//! A real S3-compatible server for the tests, on 127.0.0.1.
//!
//! `.ci/run` starts one and names it in `WAL_ARCHIVER_TEST_S3_ENDPOINT` and
//! `WAL_ARCHIVER_TEST_S3_BUCKET`. Without those, the harness starts its own
//! `moto_server` (from `pip install 'moto[server]'`) on a free port; it dies
//! with the test process.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "wal-archiver-test";
pub const SECRET_KEY: &str = "wal-archiver-test-secret";
pub const REGION: &str = "us-east-1";

#[derive(Debug)]
pub struct S3 {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub bucket: String,
}

impl S3 {
    /// The server every test shares; each test works under a prefix of its own.
    pub fn get() -> &'static S3 {
        static SERVER: OnceLock<S3> = OnceLock::new();
        SERVER.get_or_init(|| {
            if let (Ok(endpoint), Ok(bucket)) = (std::env::var("WAL_ARCHIVER_TEST_S3_ENDPOINT"), std::env::var("WAL_ARCHIVER_TEST_S3_BUCKET")) {
                return S3 { endpoint, bucket };
            }
            let endpoint = start_moto();
            let bucket = "wal-archiver-test".to_owned();
            create_bucket(&endpoint, &bucket);
            S3 { endpoint, bucket }
        })
    }

    /// Held by each test that uses the server: one at a time keeps a
    /// development server such as moto from tripping over its own load.
    pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
        static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A URL under a prefix unique to `test`.
    pub fn url(&self, test: &str) -> String {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("s3://{}/{test}-{}-{n}", self.bucket, std::process::id())
    }

    /// The options that point object_store at this server, as a config file would.
    pub fn options(&self) -> Vec<(String, String)> {
        self.options_via(&self.endpoint)
    }

    /// The same options, but reaching the server through `endpoint` (a proxy).
    pub fn options_via(&self, endpoint: &str) -> Vec<(String, String)> {
        [
            ("aws_endpoint", endpoint),
            ("aws_allow_http", "true"),
            ("aws_access_key_id", ACCESS_KEY),
            ("aws_secret_access_key", SECRET_KEY),
            ("aws_region", REGION),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }

    /// The standard environment variables a user would set for this server.
    pub fn env_via(&self, endpoint: &str) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_ENDPOINT_URL", endpoint.to_owned()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
        ]
    }
}

fn start_moto() -> String {
    let port = free_port();
    let mut cmd = Command::new("moto_server");
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
    spawn_server(cmd, port, "moto_server", "pip install 'moto[server]'")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts a server that dies with this process and waits until it listens.
pub fn spawn_server(mut cmd: Command, port: u16, name: &str, install: &str) -> String {
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: prctl in the child before exec; it only asks the kernel to
    // kill the server when this test process dies.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    // PR_SET_PDEATHSIG fires when the *thread* that forked exits, so the
    // server is started from a thread that lives as long as the process.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(cmd.spawn().map(|_child| ()));
        loop {
            std::thread::park();
        }
    });
    rx.recv().unwrap().unwrap_or_else(|e| panic!("cannot start {name} for the S3 tests ({e}); install it with `{install}`"));
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{name} did not listen on {endpoint} within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    endpoint
}

/// A second S3 server for what moto does not do: s3s-fs checks the
/// checksum sent with a PUT against the body it received (moto 5.2 stores
/// the body whatever the checksum says). Its buckets are directories under
/// its root; it dies with the test process.
pub fn checking() -> &'static S3 {
    static SERVER: OnceLock<S3> = OnceLock::new();
    SERVER.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("s3s-fs-{}", std::process::id()));
        let bucket = "wal-archiver-test".to_owned();
        std::fs::create_dir_all(root.join(&bucket)).unwrap();
        let port = free_port();
        let mut cmd = Command::new("s3s-fs");
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string(), "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY]).arg(&root);
        let endpoint = spawn_server(cmd, port, "s3s-fs", "cargo install s3s-fs --version 0.14.1 --features binary --locked");
        S3 { endpoint, bucket }
    })
}

/// `PUT /bucket`, unsigned: moto does not check signatures.
fn create_bucket(endpoint: &str, bucket: &str) {
    let addr = endpoint.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "PUT /{bucket} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "cannot create bucket {bucket}: {reply}");
}
