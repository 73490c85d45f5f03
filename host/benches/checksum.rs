//! CRC32C throughput on one core, the checksum every upload computes while
//! streaming, beside a memcpy of the same buffer as the baseline.
//!
//! Run: `cargo bench -p wal-archiver --bench checksum`. The goal is at least
//! 1.5 GB/s, so that checksumming never limits an upload.

use std::hint::black_box;
use std::time::{Duration, Instant};

const SIZE: usize = 64 * 1024 * 1024;
const ROUNDS: usize = 21;
const GOAL_GB_S: f64 = 1.5;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn gb_s(d: Duration) -> f64 {
    SIZE as f64 / d.as_secs_f64() / 1e9
}

fn main() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let src: Vec<u8> = (0..SIZE)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut dst = vec![0u8; SIZE];
    let (mut crc_t, mut copy_t) = (Vec::new(), Vec::new());
    let mut crc = 0;
    // Alternate the two, so that both see the same machine.
    for _ in 0..ROUNDS {
        let t = Instant::now();
        crc = black_box(crc32c::crc32c(black_box(&src)));
        crc_t.push(t.elapsed());
        let t = Instant::now();
        dst.copy_from_slice(black_box(&src));
        black_box(&dst);
        copy_t.push(t.elapsed());
    }
    let (crc_m, copy_m) = (median(crc_t), median(copy_t));
    println!("buffer: {} MiB, {} rounds, medians (crc32c {crc:08x})", SIZE >> 20, ROUNDS);
    println!("crc32c  {:>6.2} GB/s", gb_s(crc_m));
    println!("memcpy  {:>6.2} GB/s (baseline)", gb_s(copy_m));
    println!("ratio crc32c/memcpy: {:.2}", copy_m.as_secs_f64() / crc_m.as_secs_f64());
    println!(
        "goal {GOAL_GB_S} GB/s on one core: {}",
        if gb_s(crc_m) >= GOAL_GB_S { "met" } else { "NOT met" }
    );
}
