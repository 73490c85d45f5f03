//! A TCP proxy in front of the S3 server that misbehaves, connection by
//! connection, as a seed says: it answers 503 or 429, drops the connection
//! in the middle of a request body, or delays the whole exchange.

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
                let Ok((client, _)) = listener.accept().await else { return };
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
                let n = client.read(&mut buf).await?;
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
