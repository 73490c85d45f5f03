//! `archive --metrics-addr`: a running watcher scraped over HTTP, its page
//! read by a real Prometheus parser (prometheus_client's OpenMetrics parser,
//! from PyPI), its values checked against what was archived; `/healthz`.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::util::{assert_exit, segment_name, stderr, Dir};

/// A watcher with metrics on a free port; its stderr is read in the
/// background, and the address it bound is taken from its log.
struct Watcher {
    child: Option<Child>,
    addr: String,
    log: mpsc::Receiver<String>,
    lines: Vec<String>,
}

impl Watcher {
    fn start(dir: &Dir, extra: &[&str]) -> Self {
        let wal = dir.wal();
        let url = dir.archive_url();
        let mut args = vec!["archive", "--interval", "0.2", "--metrics-addr", "127.0.0.1:0", "--wal-dir", wal.to_str().unwrap(), "--to", &url];
        args.extend_from_slice(extra);
        let mut child = dir
            .cmd(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut w = Self { child: Some(child), addr: String::new(), log: rx, lines: Vec::new() };
        let deadline = Instant::now() + Duration::from_secs(30);
        while w.addr.is_empty() {
            assert!(Instant::now() < deadline, "the watcher never said where it serves metrics:\n{}", w.lines.join("\n"));
            if let Ok(line) = w.log.recv_timeout(Duration::from_millis(100)) {
                if let Some(rest) = line.split("serving metrics on http://").nth(1) {
                    w.addr = rest.split('/').next().unwrap().to_owned();
                }
                w.lines.push(line);
            }
        }
        w
    }

    /// Scrapes `/metrics` through the Python parser.
    fn scrape(&self) -> Page {
        let url = format!("http://{}/metrics", self.addr);
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/util/scrape.py");
        let out = Command::new("python3").arg(script).arg(&url).output().expect("cannot run python3");
        assert!(
            out.status.success(),
            "the Prometheus parser refused the page at {url} (is prometheus-client installed? pip install -r tests/requirements.txt):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Page(serde_json::from_slice(&out.stdout).unwrap())
    }

    /// Waits until `ok` holds for a scraped page.
    fn wait_for(&mut self, what: &str, ok: impl Fn(&Page) -> bool) -> Page {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let page = self.scrape();
            if ok(&page) {
                return page;
            }
            while let Ok(line) = self.log.try_recv() {
                self.lines.push(line);
            }
            assert!(Instant::now() < deadline, "{what} never showed in the metrics: {}\nlog:\n{}", page.0, self.lines.join("\n"));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        http(&self.addr, &format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.addr))
    }

    fn stop(mut self) -> std::process::Output {
        let child = self.child.take().unwrap();
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
        child.wait_with_output().unwrap()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends one raw request; the status code and the body.
fn http(addr: &str, request: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (code, body)
}

/// The parser's view of a page.
struct Page(serde_json::Value);

impl Page {
    /// The value of the sample `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).unwrap_or_else(|| panic!("no sample {name} {labels:?} in {}", self.0))
    }

    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0["samples"].as_array().unwrap().iter().find_map(|s| {
            (s["name"] == name && labels.iter().all(|(k, v)| s["labels"][k] == *v)).then(|| s["value"].as_f64().unwrap())
        })
    }

    fn family_type(&self, name: &str) -> &str {
        self.0["families"][name].as_str().unwrap_or_else(|| panic!("no family {name} in {}", self.0))
    }
}

#[test]
fn serves_metrics_that_match_what_was_archived_and_health_that_follows_the_cycles() {
    let dir = Dir::new();
    dir.chain(5, 1000);
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let mut w = Watcher::start(&dir, &[]);

    let page = w.wait_for("five archived segments", |p| p.find("wal_archiver_segments_archived_total", &[]) == Some(5.0));
    assert!(page.0["content_type"].as_str().unwrap().starts_with("application/openmetrics-text"), "{}", page.0);
    for (family, kind) in [
        ("wal_archiver_last_archived_lsn", "gauge"),
        ("wal_archiver_rpo_gap_lsns", "gauge"),
        ("wal_archiver_segments_archived", "counter"),
        ("wal_archiver_bytes_archived", "counter"),
        ("wal_archiver_failures", "counter"),
        ("wal_archiver_pending_segments", "gauge"),
        ("wal_archiver_upload_seconds", "histogram"),
        ("wal_archiver_last_success_timestamp_seconds", "gauge"),
    ] {
        assert_eq!(page.family_type(family), kind, "{family}");
    }
    assert_eq!(page.value("wal_archiver_last_archived_lsn", &[]), 500.0);
    assert_eq!(page.value("wal_archiver_rpo_gap_lsns", &[]), 0.0);
    assert_eq!(page.value("wal_archiver_bytes_archived_total", &[]), 5000.0);
    assert_eq!(page.value("wal_archiver_pending_segments", &[]), 0.0);
    assert_eq!(page.value("wal_archiver_upload_seconds_count", &[]), 5.0);
    assert!(page.value("wal_archiver_upload_seconds_sum", &[]) > 0.0);
    assert_eq!(page.value("wal_archiver_upload_seconds_bucket", &[("le", "+Inf")]), 5.0);
    for kind in ["upload", "conflict", "delete", "cycle"] {
        assert_eq!(page.value("wal_archiver_failures_total", &[("kind", kind)]), 0.0, "{kind}");
    }
    let success = page.value("wal_archiver_last_success_timestamp_seconds", &[]);
    assert!(success >= started - 1.0, "last success {success}, started {started}");
    assert_eq!(w.get("/healthz").0, 200);

    // A segment past a hole: archived, but the watermark cannot pass the
    // hole, so the RPO gap is the hole plus the segment.
    dir.segment(601, 700, 700);
    let page = w.wait_for("the segment past the hole", |p| p.find("wal_archiver_segments_archived_total", &[]) == Some(6.0));
    assert_eq!(page.value("wal_archiver_last_archived_lsn", &[]), 500.0);
    assert_eq!(page.value("wal_archiver_rpo_gap_lsns", &[]), 200.0);
    assert_eq!(page.value("wal_archiver_bytes_archived_total", &[]), 5700.0);

    // An archived object that differs from the local segment under its key:
    // a conflict, counted once however many cycles see it; health fails.
    let conflicted = segment_name(701, 800);
    std::fs::write(dir.archive_dir().join(&conflicted), b"another archiver's bytes").unwrap();
    dir.segment(701, 800, 100);
    let page = w.wait_for("the conflict", |p| p.find("wal_archiver_failures_total", &[("kind", "conflict")]) == Some(1.0));
    assert_eq!(page.value("wal_archiver_segments_archived_total", &[]), 6.0);
    let (code, body) = w.get("/healthz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("1 segment in conflict"), "{body}");
    // Cycles go on seeing it: counted once, and no cycle is a success.
    let success = page.value("wal_archiver_last_success_timestamp_seconds", &[]);
    std::thread::sleep(Duration::from_millis(800));
    let later = w.scrape();
    assert_eq!(later.value("wal_archiver_failures_total", &[("kind", "conflict")]), 1.0);
    assert_eq!(later.value("wal_archiver_last_success_timestamp_seconds", &[]), success);

    // Other paths and methods are refused; HEAD has no body.
    assert_eq!(w.get("/").0, 404);
    assert_eq!(http(&w.addr, "POST /metrics HTTP/1.1\r\n\r\n").0, 405);
    assert_eq!(http(&w.addr, "HEAD /metrics HTTP/1.1\r\n\r\n"), (200, String::new()));
    assert_eq!(http(&w.addr, "garbage\r\n\r\n").0, 400);

    let out = w.stop();
    // The conflict leaves the run unclean.
    assert_exit(&out, 1);
}

#[test]
fn refuses_to_start_on_a_metrics_address_it_cannot_bind() {
    let dir = Dir::new();
    dir.chain(2, 100);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for (bad, cause) in [(addr.as_str(), "in use"), ("127.0.0.1", "invalid socket address"), ("127.0.0.1:99999", "invalid")] {
        let out = dir.cmd(&["archive", "--metrics-addr", bad, "--wal-dir", dir.wal().to_str().unwrap(), "--to", &dir.archive_url()]).output().unwrap();
        assert_exit(&out, 2);
        let err = stderr(&out);
        assert!(err.contains(&format!("cannot serve metrics on {bad}")), "{err}");
        assert!(err.contains(cause), "{err}");
        // Nothing was archived before the refusal.
        assert!(dir.archived_names().is_empty(), "{:?}", dir.archived_names());
    }
}

/// A segment that failed and waits out its backoff is not tried in the
/// cycles between, but it is still failing: `/healthz` says so all along,
/// and only turns 200 once the segment is archived.
#[test]
fn health_stays_failing_while_a_failed_segment_waits_for_its_retry() {
    let dir = Dir::new();
    let paths = dir.chain(3, 1000);
    // A directory where the last segment's copy must go: every attempt
    // fails ("Is a directory") until it is removed. (A file still being
    // written fails only while a write lands during each read: on a busy
    // machine a read can fall between two writes and archive a snapshot,
    // which then shows as a conflict.)
    let blocker = dir.archive_dir().join(paths[2].file_name().unwrap());
    std::fs::create_dir_all(&blocker).unwrap();
    let mut w = Watcher::start(&dir, &["--retry-base-delay", "3", "--retry-max-delay", "3"]);
    w.wait_for("a failed upload", |p| p.find("wal_archiver_failures_total", &[("kind", "upload")]).is_some_and(|n| n >= 1.0));
    // Inside the 3 s backoff the cycles do not try it; none is clean.
    for _ in 0..8 {
        let (code, body) = w.get("/healthz");
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("1 segment failing"), "{body}");
        std::thread::sleep(Duration::from_millis(150));
    }
    std::fs::remove_dir(&blocker).unwrap();
    w.wait_for("the segment archived after its backoff", |p| p.find("wal_archiver_segments_archived_total", &[]) == Some(3.0));
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.get("/healthz").0 != 200 {
        assert!(Instant::now() < deadline, "health stayed failing after the segment was archived: {:?}", w.get("/healthz"));
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(w);
}
