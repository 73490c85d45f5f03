//! Proxies in front of the S3 server: one that misbehaves, connection by
//! connection, as a seed says (503 or 429, a connection dropped in the middle
//! of a request body, a delay), and one that records every request and can
//! corrupt the bodies of segment uploads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How many connections met each fault.
#[derive(Debug, Default)]
pub struct Counts {
    pub passed: AtomicU64,
    pub unavailable_503: AtomicU64,
    pub throttled_429: AtomicU64,
    pub dropped_mid_body: AtomicU64,
    pub delayed: AtomicU64,
}

pub struct Proxy {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub counts: Arc<Counts>,
    _runtime: tokio::runtime::Runtime,
}

impl Proxy {
    /// Listens on a free port and forwards to `upstream` (`http://host:port`).
    /// Faults stop after `faulty` connections, so that a run can finish.
    pub fn start(upstream: &str, seed: u64, faulty: u64) -> Proxy {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        runtime.spawn(async move {
            let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut seen = 0u64;
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                seen += 1;
                let roll = if seen <= faulty { rng % 100 } else { 99 };
                let upstream = upstream.clone();
                let c = c.clone();
                tokio::spawn(async move {
                    let _ = serve(client, &upstream, roll, rng, &c).await;
                });
            }
        });
        Proxy { endpoint, counts, _runtime: runtime }
    }
}

async fn serve(mut client: TcpStream, upstream: &str, roll: u64, rng: u64, c: &Counts) -> std::io::Result<()> {
    let reply = |code: &str| format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    match roll {
        0..=11 => {
            c.unavailable_503.fetch_add(1, Ordering::Relaxed);
            let mut buf = [0u8; 4096];
            let _ = client.read(&mut buf).await?;
            client.write_all(reply("503 Service Unavailable").as_bytes()).await?;
            return Ok(());
        }
        12..=19 => {
            c.throttled_429.fetch_add(1, Ordering::Relaxed);
            let mut buf = [0u8; 4096];
            let _ = client.read(&mut buf).await?;
            client.write_all(reply("429 Too Many Requests").as_bytes()).await?;
            return Ok(());
        }
        20..=29 => {
            // Forward part of the request, then cut both sides.
            c.dropped_mid_body.fetch_add(1, Ordering::Relaxed);
            let mut server = TcpStream::connect(upstream).await?;
            let limit = 200 + (rng >> 8) % 20_000;
            let mut sent = 0u64;
            let mut buf = vec![0u8; 8192];
            while sent < limit {
                // A request shorter than the limit (a GET) is whole once the
                // client goes quiet: cut it then, rather than leave the
                // client waiting for its timeout.
                let n = match tokio::time::timeout(Duration::from_millis(200), client.read(&mut buf)).await {
                    Ok(read) => read?,
                    Err(_) => break,
                };
                if n == 0 {
                    break;
                }
                let n = n.min((limit - sent) as usize);
                server.write_all(&buf[..n]).await?;
                sent += n as u64;
            }
            return Ok(());
        }
        30..=39 => {
            c.delayed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50 + (rng >> 8) % 200)).await;
        }
        _ => {
            c.passed.fetch_add(1, Ordering::Relaxed);
        }
    }
    let mut server = TcpStream::connect(upstream).await?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}

/// One request as it went through a [`Recorder`].
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// The path and query, as sent.
    pub target: String,
    /// Bytes of body sent on to the server.
    pub body: u64,
    /// True when the recorder flipped a byte of this body.
    pub flipped: bool,
}

/// An HTTP/1.1 proxy that reads each request whole, records it, and, when
/// told to, flips one byte in the body of every PUT of a segment on its way
/// to the server: what a faulty network card or a middlebox would do, which
/// the store must catch by the checksum sent with the request.
pub struct Recorder {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    seen: Arc<std::sync::Mutex<Vec<Seen>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Recorder {
    pub fn start(upstream: &str, flip_segment_puts: bool) -> Recorder {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, s) = (upstream.clone(), s.clone());
                tokio::spawn(async move {
                    let _ = relay(client, &upstream, flip_segment_puts, &s).await;
                });
            }
        });
        Recorder { endpoint, seen, _runtime: runtime }
    }

    /// Every request so far, in the order they were read.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Relays one connection request by request; responses go back as they come.
async fn relay(client: TcpStream, upstream: &str, flip: bool, seen: &std::sync::Mutex<Vec<Seen>>) -> std::io::Result<()> {
    let server = TcpStream::connect(upstream).await?;
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_rx, &mut client_tx).await;
    });
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // The head: up to the blank line.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            let n = client_rx.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut words = head.split_whitespace();
        let method = words.next().unwrap_or_default().to_owned();
        let target = words.next().unwrap_or_default().to_owned();
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        };
        assert!(header("transfer-encoding").is_none(), "the recorder reads bodies by Content-Length only: {head}");
        let len: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
        while buf.len() < head_end + len {
            let mut chunk = vec![0u8; 64 * 1024];
            let n = client_rx.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let mut request: Vec<u8> = buf.drain(..head_end + len).collect();
        let segment_put = method == "PUT" && len > 0 && target.contains(".seg");
        let flipped = flip && segment_put;
        if flipped {
            request[head_end + len / 2] ^= 0x01;
        }
        seen.lock().unwrap().push(Seen { method, target, body: len as u64, flipped });
        server_tx.write_all(&request).await?;
    }
}
