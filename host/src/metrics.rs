//! Prometheus metrics and a health check for a running archiver, served over
//! plain HTTP on an address the operator chose (`archive --metrics-addr`).
//!
//! The archive loop reports each cycle here; the server only reads. It speaks
//! just enough HTTP/1.1 for a scraper and a load balancer's health check: one
//! GET (or HEAD) per connection, answered and closed.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The content type of the page: prometheus-client writes OpenMetrics text.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// A request's head larger than this is refused: a scraper sends a few hundred bytes.
const MAX_HEAD: usize = 16 * 1024;
/// The longest one request may take, from accept to the last byte of the
/// answer: a client that trickles its request is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections answered at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot serve metrics on {addr}: {cause}")]
    Bind { addr: String, cause: std::io::Error },
    #[error("cannot serve metrics on {addr}: it names no address")]
    NoAddress { addr: String },
}

/// What went wrong, as the `kind` label of `wal_archiver_failures_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum FailureKind {
    /// A segment's upload or comparison failed (each attempt counts).
    upload,
    /// A segment differs from the object under its key (each segment once).
    conflict,
    /// A local segment could not be deleted after it was archived.
    delete,
    /// A whole cycle could not run (a listing or the state failed).
    cycle,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: FailureKind,
}

/// Where the archiver stands after a cycle, for the gauges and `/healthz`.
#[derive(Debug, Clone, Default)]
pub struct CycleFigures {
    /// The watermark: every LSN up to it is archived.
    pub last_archived_lsn: Option<u64>,
    /// LSNs between the watermark and the newest local segment's end.
    pub rpo_gap: u64,
    /// Segments in the WAL directory still to archive.
    pub pending: u64,
    /// Segments counted archived in this cycle (uploaded, or found already
    /// in the archive with the same bytes).
    pub archived: u64,
    /// Bytes sent in this cycle.
    pub bytes: u64,
    pub failed_uploads: u64,
    pub failed_deletes: u64,
    /// Names of the segments in conflict now.
    pub conflicts: Vec<String>,
    /// Why the cycle was not clean, when it was not.
    pub problem: Option<String>,
}

/// Health as `/healthz` answers it.
#[derive(Debug, Clone)]
enum Health {
    Starting,
    Good,
    Bad(String),
}

/// The archiver's metrics, and the health of its last cycle.
pub struct Metrics {
    registry: Registry,
    last_archived_lsn: Gauge<f64, AtomicU64>,
    rpo_gap: Gauge<f64, AtomicU64>,
    segments: Counter,
    bytes: Counter,
    failures: Family<Kind, Counter>,
    pending: Gauge,
    upload_seconds: Histogram,
    last_success: Gauge<f64, AtomicU64>,
    health: Mutex<Health>,
    /// Conflicts already counted: one that stays is not counted each cycle.
    conflicts_seen: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("wal_archiver");
        let m = Self {
            last_archived_lsn: Gauge::default(),
            rpo_gap: Gauge::default(),
            segments: Counter::default(),
            bytes: Counter::default(),
            failures: Family::default(),
            pending: Gauge::default(),
            // 1 ms to about 9 minutes.
            upload_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 20)),
            last_success: Gauge::default(),
            health: Mutex::new(Health::Starting),
            conflicts_seen: Mutex::new(HashSet::new()),
            registry: Registry::default(),
        };
        registry.register("last_archived_lsn", "The watermark: every LSN up to it is archived, with no gap (0 before the first)", m.last_archived_lsn.clone());
        registry.register(
            "rpo_gap_lsns",
            "LSNs written to the WAL directory but not yet below the watermark: what a disaster now would lose",
            m.rpo_gap.clone(),
        );
        registry.register(
            "segments_archived",
            "Segments counted archived by this process: uploaded and verified, or found in the archive with the same bytes",
            m.segments.clone(),
        );
        registry.register("bytes_archived", "Bytes of segments uploaded by this process", m.bytes.clone());
        registry.register(
            "failures",
            "Failures by kind: upload (each failed attempt), conflict (each segment once), delete, cycle",
            m.failures.clone(),
        );
        registry.register("pending_segments", "Segments in the WAL directory not yet archived, after the last cycle", m.pending.clone());
        registry.register("upload_seconds", "Time to upload and verify one segment", m.upload_seconds.clone());
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the end of the last cycle that left nothing failed or in conflict (0 before the first)",
            m.last_success.clone(),
        );
        // Every kind shows from the start, at 0, so that rate() sees the first one.
        for kind in [FailureKind::upload, FailureKind::conflict, FailureKind::delete, FailureKind::cycle] {
            drop(m.failures.get_or_create(&Kind { kind }));
        }
        Self { registry, ..m }
    }

    /// One segment's upload took `took`.
    pub fn observe_upload(&self, took: Duration) {
        self.upload_seconds.observe(took.as_secs_f64());
    }

    /// A cycle ran to its end.
    pub fn cycle_done(&self, c: &CycleFigures) {
        self.last_archived_lsn.set(c.last_archived_lsn.unwrap_or(0) as f64);
        self.rpo_gap.set(c.rpo_gap as f64);
        self.pending.set(i64::try_from(c.pending).unwrap_or(i64::MAX));
        self.segments.inc_by(c.archived);
        self.bytes.inc_by(c.bytes);
        self.failures.get_or_create(&Kind { kind: FailureKind::upload }).inc_by(c.failed_uploads);
        self.failures.get_or_create(&Kind { kind: FailureKind::delete }).inc_by(c.failed_deletes);
        let new_conflicts = {
            let mut seen = self.conflicts_seen.lock().expect("metrics lock");
            let now: HashSet<String> = c.conflicts.iter().cloned().collect();
            let new = now.difference(&seen).count() as u64;
            // A conflict that was resolved and comes back counts again.
            *seen = now;
            new
        };
        self.failures.get_or_create(&Kind { kind: FailureKind::conflict }).inc_by(new_conflicts);
        let health = match &c.problem {
            None => {
                self.last_success.set(unix_now());
                Health::Good
            }
            Some(why) => Health::Bad(why.clone()),
        };
        *self.health.lock().expect("metrics lock") = health;
    }

    /// A cycle could not run.
    pub fn cycle_failed(&self, why: &str) {
        self.failures.get_or_create(&Kind { kind: FailureKind::cycle }).inc();
        *self.health.lock().expect("metrics lock") = Health::Bad(format!("the last cycle could not run: {why}"));
    }

    /// The page `/metrics` serves.
    pub fn encode(&self) -> String {
        let mut page = String::new();
        prometheus_client::encoding::text::encode(&mut page, &self.registry).expect("writing to a String does not fail");
        page
    }

    /// `/healthz`: the status code and a line saying why.
    pub fn health(&self) -> (u16, String) {
        match &*self.health.lock().expect("metrics lock") {
            Health::Good => (200, "ok: the last cycle succeeded\n".to_owned()),
            Health::Starting => (503, "starting: no cycle has finished yet\n".to_owned()),
            Health::Bad(why) => (503, format!("failing: {why}\n")),
        }
    }

    /// Binds `addr` (`HOST:PORT`; port 0 picks a free one) and serves
    /// `/metrics` and `/healthz` on `rt` until the process ends. Returns the
    /// address bound.
    pub fn serve(self: &Arc<Self>, addr: &str, rt: &tokio::runtime::Runtime) -> Result<SocketAddr, MetricsError> {
        use std::net::ToSocketAddrs;
        let bind_err = |cause| MetricsError::Bind { addr: addr.to_owned(), cause };
        let candidates: Vec<SocketAddr> = addr.to_socket_addrs().map_err(bind_err)?.collect();
        let mut last = None;
        let mut bound = None;
        for candidate in candidates {
            match std::net::TcpListener::bind(candidate) {
                Ok(l) => {
                    bound = Some(l);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let listener = match (bound, last) {
            (Some(l), _) => l,
            (None, Some(e)) => return Err(bind_err(e)),
            (None, None) => return Err(MetricsError::NoAddress { addr: addr.to_owned() }),
        };
        let local = listener.local_addr().map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        let listener = {
            let _guard = rt.enter();
            tokio::net::TcpListener::from_std(listener).map_err(bind_err)?
        };
        let metrics = Arc::clone(self);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        rt.spawn(async move {
            loop {
                let Ok(permit) = Arc::clone(&slots).acquire_owned().await else { return };
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let metrics = Arc::clone(&metrics);
                        tokio::spawn(async move {
                            let _permit = permit;
                            match tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &metrics)).await {
                                Ok(Ok(())) => {}
                                Ok(Err(e)) => tracing::debug!("metrics request: {e}"),
                                Err(_) => tracing::debug!("metrics request: dropped after {REQUEST_TIMEOUT:?}"),
                            }
                        });
                    }
                    Err(e) => {
                        // Out of descriptors, say: wait rather than spin.
                        tracing::warn!("cannot accept a metrics connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(local)
    }
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// What one request gets: status, content type, body.
fn route(metrics: &Metrics, method: &str, target: &str) -> (u16, &'static str, String) {
    let path = target.split('?').next().unwrap_or("");
    let text = "text/plain; charset=utf-8";
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => (200, CONTENT_TYPE, metrics.encode()),
        ("GET" | "HEAD", "/healthz") => {
            let (code, body) = metrics.health();
            (code, text, body)
        }
        (_, "/metrics" | "/healthz") => (405, text, "only GET and HEAD\n".to_owned()),
        _ => (404, text, "not found: try /metrics or /healthz\n".to_owned()),
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Reads one request's head, answers it, and closes the connection.
async fn answer(mut stream: tokio::net::TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let (code, content_type, body, method) = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            head.truncate(end);
            let text = String::from_utf8_lossy(&head);
            let mut words = text.lines().next().unwrap_or("").split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some(method), Some(target), Some(version)) if version.starts_with("HTTP/1.") => {
                    let (code, ct, body) = route(metrics, method, target);
                    break (code, ct, body, method.to_owned());
                }
                _ => break (400, "text/plain; charset=utf-8", "bad request\n".to_owned(), String::new()),
            }
        }
        if head.len() > MAX_HEAD {
            break (431, "text/plain; charset=utf-8", "request head too large\n".to_owned(), String::new());
        }
    };
    let mut response = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        reason(code),
        body.len()
    );
    if code == 405 {
        response.push_str("Allow: GET, HEAD\r\n");
    }
    response.push_str("\r\n");
    if method != "HEAD" {
        response.push_str(&body);
    }
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(page: &str, name: &str) -> Option<f64> {
        page.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn counts_a_conflict_once_while_it_stays_and_again_when_it_returns() {
        let m = Metrics::new();
        let with = CycleFigures { conflicts: vec!["wal-a.seg".into()], problem: Some("1 in conflict".into()), ..Default::default() };
        m.cycle_done(&with);
        m.cycle_done(&with);
        assert_eq!(value(&m.encode(), "wal_archiver_failures_total{kind=\"conflict\"}"), Some(1.0));
        m.cycle_done(&CycleFigures::default());
        m.cycle_done(&with);
        assert_eq!(value(&m.encode(), "wal_archiver_failures_total{kind=\"conflict\"}"), Some(2.0));
    }

    #[test]
    fn health_is_503_until_a_clean_cycle_and_after_a_failed_one() {
        let m = Metrics::new();
        assert_eq!(m.health().0, 503);
        m.cycle_done(&CycleFigures::default());
        assert_eq!(m.health().0, 200);
        assert!(value(&m.encode(), "wal_archiver_last_success_timestamp_seconds").unwrap() > 1.7e9);
        m.cycle_failed("cannot list the archive");
        let (code, body) = m.health();
        assert_eq!(code, 503);
        assert!(body.contains("cannot list the archive"), "{body}");
        assert_eq!(value(&m.encode(), "wal_archiver_failures_total{kind=\"cycle\"}"), Some(1.0));
    }

    #[test]
    fn routes_only_get_and_head_of_its_two_paths() {
        let m = Metrics::new();
        assert_eq!(route(&m, "GET", "/metrics?x=1").0, 200);
        assert_eq!(route(&m, "HEAD", "/healthz").0, 503);
        assert_eq!(route(&m, "POST", "/metrics").0, 405);
        assert_eq!(route(&m, "GET", "/").0, 404);
    }
}
