//! The same archive conformance tests against `memory://`, `file://` and a
//! real S3-compatible server over HTTP; the CLI against S3 with only the
//! standard environment; large segments; network faults; parallel uploads
//! that finish out of order; and the config file.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use object_store::memory::InMemory;
use object_store::ObjectStore;
use wal_archiver::archive::Archiver;
use wal_archiver::state::empty_state;
use wal_archiver::store::{Archive, PutError, DEFAULT_REQUEST_RETRIES};

use crate::util::faults::{FaultyStore, Rates};
use crate::util::proxy::{Proxy, Recorder};
use crate::util::azure::Azure;
use crate::util::gcs::Gcs;
use crate::util::s3::S3;
use crate::util::{assert_exit, config, content, run_measuring_rss, runtime, segment_name, stderr, stdout, tokio_rt, Dir};
use wal_archiver::component::wit;

enum Backend {
    Memory,
    File,
    S3,
    Azure,
}

fn open(backend: &Backend, dir: &Dir) -> Archive {
    match backend {
        Backend::Memory => Archive::new(Arc::new(InMemory::new()), "wal", "memory:///wal"),
        Backend::File => Archive::open(&dir.archive_url()).unwrap(),
        Backend::S3 => {
            let s3 = S3::get();
            Archive::open_with(&s3.url("conformance"), &s3.options(), DEFAULT_REQUEST_RETRIES).unwrap()
        }
        Backend::Azure => {
            let az = Azure::get();
            Archive::open_with(&az.url("conformance"), &az.options(), DEFAULT_REQUEST_RETRIES).unwrap()
        }
    }
}

/// Asserts that every local segment is in the S3 archive at `url`, byte for byte.
fn assert_in_s3(url: &str, paths: &[std::path::PathBuf]) {
    assert_in(S3::get(), url, paths);
}

/// The same on another S3 server.
fn assert_in(s3: &S3, url: &str, paths: &[std::path::PathBuf]) {
    assert_stored(url, &s3.options(), paths);
}

/// Asserts that every local segment is in the archive at `url` (opened
/// with `options`), byte for byte.
fn assert_stored(url: &str, options: &[(String, String)], paths: &[std::path::PathBuf]) {
    let rt = tokio_rt();
    let archive = Archive::open_with(url, options, DEFAULT_REQUEST_RETRIES).unwrap();
    for p in paths {
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(read(&rt, &archive, &archive.key_of(name)).unwrap(), std::fs::read(p).unwrap(), "{name}");
    }
}

fn read(rt: &tokio::runtime::Runtime, archive: &Archive, key: &str) -> Option<Vec<u8>> {
    rt.block_on(archive.get(key)).unwrap_or_else(|e| panic!("cannot read {key}: {e}"))
}

/// The conformance suite: byte-identical objects, create-only behaviour
/// enforced by the store, verified checksums, and the gap-free watermark.
fn conformance(backend: Backend) {
    let dir = Dir::new();
    let rt = tokio_rt();
    let archive = open(&backend, &dir);
    // Ten segments of 100 LSNs; the fourth is missing for now. One is empty,
    // one is larger than an upload part (8 MiB), so it goes in two parts.
    let sizes = [5_000, 0, 70_000, 1_000, 9 * 1024 * 1024, 3, 4_096, 100_000, 1, 65_536];
    let mut paths = Vec::new();
    for (i, len) in sizes.iter().enumerate() {
        let i = i as u64;
        if i != 3 {
            paths.push(dir.segment(i * 100 + 1, i * 100 + 100, *len));
        }
    }
    let mut cfg = config(archive.prefix());
    cfg.batch_size = 3;
    let archiver = Archiver::new(runtime(), dir.storage(archive.clone(), &rt), cfg.clone(), None).with_concurrency(4);
    let stop = AtomicBool::new(false);
    let mut state = empty_state();
    let summary = archiver.run_once(&mut state, &stop).unwrap();
    assert_eq!(summary.archived.len(), 9, "{:?}", summary.failed);
    assert!(summary.failed.is_empty());

    // Gap-free watermark: it stops at the hole, and the gap is reported.
    assert_eq!(state.last_archived_lsn, Some(300));
    assert_eq!(summary.breaks.len(), 1);
    assert!(matches!(&summary.breaks[0], wit::ChainBreak::Gap(g) if (g.from_lsn, g.to_lsn) == (301, 400)), "{:?}", summary.breaks);

    // Byte-identical objects under the seed's keys.
    for p in &paths {
        let name = p.file_name().unwrap().to_str().unwrap();
        let key = archive.key_of(name);
        assert_eq!(read(&rt, &archive, &key).as_deref(), Some(std::fs::read(p).unwrap().as_slice()), "{key}");
    }

    // Checksums: every object's record holds the CRC32C of its bytes.
    let listed = rt.block_on(archive.list()).unwrap();
    assert_eq!(listed.objects.len(), 9);
    assert_eq!(listed.chain_start, Some(1), "the chain start is recorded in the archive");
    for o in &listed.objects {
        let bytes = std::fs::read(dir.wal().join(&o.name)).unwrap();
        assert_eq!(o.crc32c, Some(crc32c::crc32c(&bytes)), "{}", o.name);
        assert_eq!(o.size, bytes.len() as u64);
    }

    // Create-only, enforced by the store itself.
    let first = segment_name(1, 100);
    let key = archive.key_of(&first);
    let err = rt.block_on(archive.put_create(&key, b"overwrite".to_vec().into())).unwrap_err();
    assert!(matches!(err, PutError::Exists), "{err}");
    // And through the archiver: a different segment under an archived name is a conflict.
    let local = dir.wal().join(&first);
    std::fs::write(&local, content(77, 5_000)).unwrap();
    let err = rt.block_on(archiver.storage().upload_segment(&first, &key, 5_000, true)).unwrap_err();
    assert!(err.to_string().contains("holds a different object"), "{err}");
    assert!(err.conflict().is_some());
    assert_eq!(read(&rt, &archive, &key).unwrap(), content(1, 5_000));
    std::fs::write(&local, content(1, 5_000)).unwrap();

    // The missing segment arrives: the watermark crosses everything.
    paths.push(dir.segment(301, 400, 1_000));
    let summary = archiver.run_once(&mut state, &stop).unwrap();
    assert_eq!(summary.archived.len(), 1);
    assert_eq!(state.last_archived_lsn, Some(1000));

    // A lost state costs a listing and a comparison of the local files, and
    // no upload.
    let mut fresh = empty_state();
    let summary = archiver.run_once(&mut fresh, &stop).unwrap();
    assert_eq!(summary.archived.len(), 10);
    assert!(summary.archived.iter().all(|a| a.existed), "{:?}", summary.archived);
    assert_eq!(summary.bytes_archived(), 0);
    assert_eq!(fresh.last_archived_lsn, Some(1000));
}

#[test]
fn conformance_memory() {
    conformance(Backend::Memory);
}

#[test]
fn conformance_file() {
    conformance(Backend::File);
}

#[test]
fn conformance_s3() {
    let _one_at_a_time = S3::exclusive();
    conformance(Backend::S3);
}

#[test]
fn conformance_azure() {
    conformance(Backend::Azure);
}

/// A published upload carries no checksum marker until its batch is
/// finished: nothing counts as verified before the batch is durable.
fn marks_a_batch_only_when_it_is_finished(backend: Backend) {
    let dir = Dir::new();
    let rt = tokio_rt();
    let archive = open(&backend, &dir);
    let storage = dir.storage(archive.clone(), &rt);
    let paths = dir.chain(2, 3_000);
    let names: Vec<String> = paths.iter().map(|p| p.file_name().unwrap().to_str().unwrap().to_owned()).collect();
    let mut published: Vec<_> = names.iter().map(|n| rt.block_on(storage.publish_segment(n, &archive.key_of(n), 3_000, true))).collect();
    // A third upload that is refused travels through the batch as it is.
    published.push(rt.block_on(storage.publish_segment(&names[0], "elsewhere/key", 3_000, true)));
    // Nothing carries a checksum record yet; on a local archive, nothing is
    // even under its key (the copies wait in the staging folder).
    let listed = rt.block_on(archive.list()).unwrap();
    let got: Vec<_> = listed.objects.iter().map(|o| (o.name.as_str(), o.crc32c)).collect();
    if archive.is_local() {
        assert_eq!(got, []);
    } else {
        assert_eq!(got, [(names[0].as_str(), None), (names[1].as_str(), None)]);
    }

    let receipts = rt.block_on(archive.finish_batch(published, 2));
    assert_eq!(receipts.len(), 3);
    for (r, p) in receipts.iter().zip(&paths) {
        let r = r.as_ref().unwrap();
        assert_eq!((r.read_size, r.stored_size), (3_000, 3_000));
        assert_eq!(r.stored_crc32c, Some(crc32c::crc32c(&std::fs::read(p).unwrap())));
    }
    assert!(receipts[2].as_ref().unwrap_err().to_string().contains("refused key \"elsewhere/key\""), "{:?}", receipts[2]);
    let listed = rt.block_on(archive.list()).unwrap();
    for (o, r) in listed.objects.iter().zip(&receipts) {
        assert_eq!(o.crc32c, r.as_ref().unwrap().stored_crc32c, "{}", o.name);
    }
}

#[test]
fn marks_a_batch_only_when_it_is_finished_memory() {
    marks_a_batch_only_when_it_is_finished(Backend::Memory);
}

#[test]
fn marks_a_batch_only_when_it_is_finished_file() {
    marks_a_batch_only_when_it_is_finished(Backend::File);
}

#[test]
fn marks_a_batch_only_when_it_is_finished_s3() {
    marks_a_batch_only_when_it_is_finished(Backend::S3);
}

#[test]
fn marks_a_batch_only_when_it_is_finished_azure() {
    marks_a_batch_only_when_it_is_finished(Backend::Azure);
}

/// The commands a user runs, on Azure (Azurite) with only the standard
/// environment variables: archive, verify --deep, restore byte for byte,
/// prune, and verify --deep catching an object damaged in the store.
#[test]
fn archives_verifies_restores_and_prunes_on_azure() {
    let az = Azure::get();
    let dir = Dir::new();
    let paths = dir.chain(6, 300_000);
    let url = az.url("cli");
    let run = |args: &[&str]| {
        let mut cmd = dir.cmd(args);
        cmd.envs(az.env());
        cmd.output().unwrap()
    };
    // A variable that looks like a setting but is not one is named, with
    // the one that was probably meant.
    let mut cmd = dir.cmd(&["archive", "--once", "--concurrency", "4", "--wal-dir", dir.wal().to_str().unwrap(), "--to", &url]);
    let out = cmd.envs(az.env()).env("AZURE_USE_EMULATOR", "true").output().unwrap();
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains("environment variable AZURE_USE_EMULATOR is not a setting the archive's store reads, and is ignored; did you mean AZURE_STORAGE_USE_EMULATOR?"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).contains("archived 6 segments"), "{}", stdout(&out));
    assert!(stdout(&out).contains("last archived LSN: 0x0000000000000258 (600)"), "{}", stdout(&out));

    let out = run(&["verify", "--deep", "--to", &url]);
    assert_exit(&out, 0);

    let into = dir.path().join("restored");
    let out = run(&["restore", "--from", &url, "--into", into.to_str().unwrap(), "--until-lsn", "600"]);
    assert_exit(&out, 0);
    for p in &paths {
        let name = p.file_name().unwrap();
        assert!(std::fs::read(into.join(name)).unwrap() == std::fs::read(p).unwrap(), "{name:?} restored with other bytes");
    }

    let out = run(&["prune", "--to", &url, "--before-lsn", "201"]);
    assert_exit(&out, 0);
    let rt = tokio_rt();
    let archive = Archive::open_with(&url, &az.options(), DEFAULT_REQUEST_RETRIES).unwrap();
    let left: Vec<String> = rt.block_on(archive.list()).unwrap().objects.iter().map(|o| o.name.clone()).collect();
    assert_eq!(left, (2..6).map(|i| segment_name(i * 100 + 1, i * 100 + 100)).collect::<Vec<_>>());
    let out = run(&["verify", "--deep", "--to", &url]);
    assert_exit(&out, 0);

    // Other bytes of the same size, written behind the archiver's back.
    let damaged = segment_name(401, 500);
    let key = archive.key_of(&damaged);
    rt.block_on(archive.delete(&key)).unwrap();
    rt.block_on(archive.put_create(&key, content(99, 300_000).into())).unwrap();
    let out = run(&["verify", "--deep", "--to", &url]);
    assert_exit(&out, 1);
    assert!(stdout(&out).contains(&damaged), "{}", stdout(&out));
}

/// `archive --once` with quick retries and no retries inside the client, so
/// that every fault the proxy makes reaches the archiver's own backoff.
fn archive_through_faults(dir: &Dir, url: &str, env: Vec<(&'static str, String)>) -> std::process::Output {
    let wal = dir.wal();
    let args = ["archive", "--once", "--concurrency", "4", "--max-attempts", "40", "--retry-base-delay", "0.02", "--retry-max-delay", "0.3"];
    let mut cmd = dir.cmd(&args);
    cmd.args(["--request-retries", "0", "--wal-dir", wal.to_str().unwrap(), "--to", url]).envs(env);
    crate::util::wait_within(
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap(),
        Duration::from_secs(240),
    )
}

/// The fault proxy in front of Azurite, as in front of the S3 server.
#[test]
fn survives_network_faults_between_it_and_azure() {
    let az = Azure::get();
    let proxy = Proxy::start(&az.endpoint, 11, 100);
    let dir = Dir::new();
    let paths = dir.chain(10, 200_000);
    let url = az.url("proxy");
    let mut env = az.env();
    // A connection per request, as the proxy picks its fault per connection.
    env.push(("AZURE_STORAGE_ENDPOINT", format!("{}/{}", proxy.endpoint, crate::util::azure::ACCOUNT)));
    env.push(("AZURE_POOL_MAX_IDLE_PER_HOST", "0".to_owned()));
    let out = archive_through_faults(&dir, &url, env);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("last archived LSN: 0x00000000000003e8 (1000)"), "{}", stdout(&out));
    let c = &proxy.counts;
    let faults = [&c.unavailable_503, &c.throttled_429, &c.dropped_mid_body, &c.delayed].map(|a| a.load(std::sync::atomic::Ordering::Relaxed));
    eprintln!("proxy faults in front of Azurite (503, 429, dropped, delayed): {faults:?}");
    assert!(faults.iter().all(|n| *n > 0), "not every kind of fault happened: {faults:?}");
    assert!(stderr(&out).contains("cannot archive segment"), "no retry in the logs:\n{}", stderr(&out));
    assert_stored(&url, &az.options(), &paths);
}

/// `archive --once` to Azure (Azurite) through `endpoint` (the emulator, or
/// a proxy in front of it).
fn archive_to_azure_through(dir: &Dir, az: &Azure, endpoint: &str, url: &str, extra: &[&str]) -> std::process::Output {
    let wal = dir.wal();
    let mut args = vec!["archive", "--once", "--concurrency", "4", "--wal-dir", wal.to_str().unwrap(), "--to", url];
    args.extend_from_slice(extra);
    let mut cmd = dir.cmd(&args);
    cmd.envs(az.env()).env("AZURE_STORAGE_ENDPOINT", format!("{endpoint}/{}", crate::util::azure::ACCOUNT));
    cmd.output().unwrap()
}

/// A segment goes to Azure in one Put Blob carrying its Content-MD5, which
/// the store checks, and nothing of it comes back: no block, no staging,
/// no copy, no GET of a segment, and the bytes on the wire those of the
/// segments.
#[test]
fn sends_each_segment_to_azure_in_one_put_and_reads_none_back() {
    let az = Azure::get();
    let dir = Dir::new();
    let paths = dir.chain(16, 1 << 20);
    let url = az.url("one-put");
    let recorder = Recorder::start(&az.endpoint, false);
    let out = archive_to_azure_through(&dir, az, &recorder.endpoint, &url, &[]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("checks the checksum of each PUT"), "{}", stderr(&out));
    let seen = recorder.seen();
    let listing: Vec<String> = seen.iter().map(|r| format!("{} {} ({} bytes)", r.method, r.target, r.body)).collect();
    let segment_puts = seen.iter().filter(|r| r.method == "PUT" && r.target.contains(".seg") && !r.target.contains("/_") && r.body == 1 << 20).count();
    assert_eq!(segment_puts, 16, "one Put Blob per segment:\n{}", listing.join("\n"));
    let reads: Vec<&String> = listing.iter().filter(|l| l.starts_with("GET") && l.contains(".seg")).collect();
    assert!(reads.is_empty(), "segments read back: {reads:?}");
    let staged = seen.iter().any(|r| r.method != "GET" && ((r.target.contains("_staging") && !r.target.contains("checksum-probe")) || r.target.contains("comp=block")));
    assert!(!staged, "staged or in blocks:\n{}", listing.join("\n"));
    let body: u64 = seen.iter().map(|r| r.body).sum();
    let segments = 16u64 << 20;
    assert!(body as f64 <= segments as f64 * 1.01, "{body} bytes sent for {segments} bytes of segments");
    // Two per segment (the blob and its checksum record) and a few per run.
    assert!(seen.len() <= 2 * 16 + 6, "{} requests for 16 segments:\n{}", seen.len(), listing.join("\n"));
    eprintln!("{} requests, {body} body bytes for 16 segments of 1 MiB:\n{}", seen.len(), listing.join("\n"));
    assert_stored(&url, &az.options(), &paths);
    let out = dir.cmd(&["verify", "--deep", "--to", &url]).envs(az.env()).output().unwrap();
    assert_exit(&out, 0);
}

/// With a shared access signature instead of the account key (no header is
/// signed, so the Content-MD5 is added and nothing signed again): one Put
/// Blob per segment that the store checks, and the segments' own bytes.
#[test]
fn sends_each_segment_to_azure_in_one_checked_put_with_a_shared_access_signature() {
    let az = Azure::get();
    let dir = Dir::new();
    let paths = dir.chain(4, 200_000);
    let url = az.url("sas");
    let wal = dir.wal();
    let recorder = Recorder::start(&az.endpoint, false);
    let mut cmd = dir.cmd(&["archive", "--once", "--wal-dir", wal.to_str().unwrap(), "--to", &url]);
    cmd.envs(az.sas_env()).env("AZURE_STORAGE_ENDPOINT", format!("{}/{}", recorder.endpoint, crate::util::azure::ACCOUNT));
    let out = cmd.output().unwrap();
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("checks the checksum of each PUT"), "{}", stderr(&out));
    assert!(stdout(&out).contains("archived 4 segments"), "{}", stdout(&out));
    let seen = recorder.seen();
    let blobs = seen.iter().filter(|r| r.method == "PUT" && r.target.contains(".seg?") && !r.target.contains("/_") && r.body == 200_000).count();
    assert_eq!(blobs, 4, "one Put Blob per segment: {:?}", seen.iter().map(|r| &r.target).collect::<Vec<_>>());
    assert!(!seen.iter().any(|r| r.target.contains("comp=block")), "blocks were sent");
    assert_stored(&url, &az.options(), &paths);
}

/// A byte flipped in a segment's body on its way to Azure: the store checks
/// the Content-MD5 sent with the Put Blob and refuses it (`Md5Mismatch`), so
/// nothing is counted archived and the run fails naming each segment; a
/// later run through a clean network archives them with their own bytes.
#[test]
fn a_segment_corrupted_on_the_way_to_azure_is_refused_by_the_store() {
    let az = Azure::get();
    let dir = Dir::new();
    let paths = dir.chain(3, 100_000);
    let url = az.url("flip");
    let flipper = Recorder::start(&az.endpoint, true);
    let out = archive_to_azure_through(&dir, az, &flipper.endpoint, &url, &["--max-attempts", "2", "--retry-base-delay", "0.01"]);
    assert_exit(&out, 1);
    let flipped = flipper.seen().iter().filter(|r| r.flipped).count();
    assert!(flipped >= 3, "the proxy flipped {flipped} bodies");
    let err = stderr(&out);
    for p in &paths {
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(err.contains(name) && err.contains("Md5Mismatch"), "no error naming {name} and the store's refusal:\n{err}");
    }
    assert!(stdout(&out).contains("archived 0 segments"), "{}", stdout(&out));
    assert!(stdout(&out).contains("last archived LSN: none yet"), "{}", stdout(&out));

    let out = archive_to_azure_through(&dir, az, &az.endpoint, &url, &[]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("last archived LSN: 0x000000000000012c (300)"), "{}", stdout(&out));
    assert_stored(&url, &az.options(), &paths);
}

#[test]
fn archives_to_s3_with_only_the_standard_environment() {
    let _one_at_a_time = S3::exclusive();
    let dir = Dir::new();
    let paths = dir.chain(12, 300_000);
    let s3 = S3::get();
    let url = s3.url("cli");
    let mut cmd = dir.cmd(&["archive", "--once", "--concurrency", "4", "--wal-dir", dir.wal().to_str().unwrap(), "--to", &url]);
    for (k, v) in s3.env_via(&s3.endpoint) {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("archived 12 segments"), "{}", stdout(&out));
    assert!(stdout(&out).contains("last archived LSN: 0x00000000000004b0 (1200)"), "{}", stdout(&out));
    assert_in_s3(&url, &paths);
}

/// Peak memory does not grow with the segment: a 192 MiB segment is
/// streamed in parts, like an 80 MiB one.
#[test]
fn streams_a_large_segment_to_s3_in_bounded_memory() {
    let _one_at_a_time = S3::exclusive();
    let s3 = S3::get();
    let run = |size: usize| {
        let dir = Dir::new();
        let path = dir.segment(1, 100, size);
        let url = s3.url("large");
        let wal = dir.wal();
        let args = ["archive", "--once", "--concurrency", "1", "--wal-dir", wal.to_str().unwrap(), "--to", &url];
        let (out, rss) = run_measuring_rss(&dir, &args, &s3.env_via(&s3.endpoint));
        assert_exit(&out, 0);
        let rt = tokio_rt();
        let archive = Archive::open_with(&url, &s3.options(), DEFAULT_REQUEST_RETRIES).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(read(&rt, &archive, &archive.key_of(name)).unwrap() == std::fs::read(&path).unwrap());
        rss
    };
    // Both above the one-PUT threshold, so both are streamed: past the
    // allocator's warm-up (a few 8 MiB buffers), more than twice the segment
    // costs no more memory.
    let small = run(80 * 1024 * 1024);
    let large = run(192 * 1024 * 1024);
    eprintln!("peak RSS: {} MiB for an 80 MiB segment, {} MiB for a 192 MiB one", small >> 20, large >> 20);
    assert!(large < small + 8 * 1024 * 1024, "peak RSS grew from {small} to {large} bytes with the segment");
}

/// Through a proxy that answers 503 and 429, drops connections mid-body and
/// delays, everything still ends archived, verified and gap-free, and the
/// retries show in the logs and in the failure count.
#[test]
fn survives_network_faults_between_it_and_s3() {
    let _one_at_a_time = S3::exclusive();
    let s3 = S3::get();
    let proxy = Proxy::start(&s3.endpoint, 7, 100);
    let dir = Dir::new();
    let paths = dir.chain(10, 200_000);
    let url = s3.url("proxy");
    let out = archive_through_faults(&dir, &url, s3.env_via(&proxy.endpoint));
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("last archived LSN: 0x00000000000003e8 (1000)"), "{}", stdout(&out));
    let c = &proxy.counts;
    let faults = [&c.unavailable_503, &c.throttled_429, &c.dropped_mid_body, &c.delayed].map(|a| a.load(std::sync::atomic::Ordering::Relaxed));
    eprintln!("proxy faults (503, 429, dropped, delayed): {faults:?}");
    assert!(faults.iter().all(|n| *n > 0), "not every kind of fault happened: {faults:?}");
    let retries = stderr(&out).matches("cannot archive segment").count();
    assert!(retries > 0, "no retry in the logs:\n{}", stderr(&out));

    let mut status = dir.cmd(&["status", "--json", "--wal-dir", dir.wal().to_str().unwrap(), "--to", &url]);
    for (k, v) in s3.env_via(&s3.endpoint) {
        status.env(k, v);
    }
    let status = status.output().unwrap();
    assert_exit(&status, 0);
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(doc["failures"].as_u64(), Some(retries as u64), "{doc}");
    assert_eq!(doc["last_archived_lsn"], 1000);
    assert_in_s3(&url, &paths);
}

/// Uploads that finish out of order (delays per upload) still give a
/// gap-free watermark that only ever covers archived segments, and the same
/// counts whatever the order (the planner's property tests check every
/// order; this runs it through the real host).
#[test]
fn keeps_the_watermark_gap_free_when_parallel_uploads_finish_out_of_order() {
    let dir = Dir::new();
    let rt = tokio_rt();
    dir.chain(24, 2_000);
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let slow = FaultyStore::new(inner.clone(), 3, Rates::SLOW);
    let archive = Archive::new(Arc::new(slow), "wal", "memory:///wal");
    let mut cfg = config("wal");
    cfg.batch_size = 8;
    let archiver = Archiver::new(runtime(), dir.storage(archive, &rt), cfg, None).with_concurrency(4);
    let mut state = empty_state();
    let summary = archiver.run_once(&mut state, &AtomicBool::new(false)).unwrap();
    assert_eq!(summary.archived.len(), 24);
    assert_eq!(state.last_archived_lsn, Some(2400));
    assert_eq!(state.segments_archived, 24);
    // The same run again, recorded in another order, counts the same.
    let mut again = empty_state();
    let summary = archiver.run_once(&mut again, &AtomicBool::new(false)).unwrap();
    assert!(summary.archived.iter().all(|a| a.existed));
    assert_eq!((again.segments_archived, again.last_archived_lsn), (24, Some(2400)));
}

#[test]
fn reads_every_option_from_a_config_file_and_lets_flags_override_it() {
    let dir = Dir::new();
    dir.chain(6, 100);
    let conf = dir.path().join("archiver.toml");
    std::fs::write(
        &conf,
        format!(
            "wal-dir = \"{}\"\nto = \"{}\"\nbatch-size = 2\nbatch-bytes = \"64KiB\"\nstaging-max-age = 3600\nconcurrency = 2\ndelete-after-archive = true\n\
             verify-checksums = true\nmax-attempts = 2\nretry-base-delay = 0.01\nretry-max-delay = 0.02\n",
            dir.wal().display(),
            dir.archive_url()
        ),
    )
    .unwrap();
    // From the file alone: everything archived and deleted.
    let out = dir.cmd(&["archive", "--once", "--config", conf.to_str().unwrap()]).output().unwrap();
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("archived 6 segments"), "{}", stdout(&out));
    assert!(stdout(&out).contains("deleted locally: 6"), "{}", stdout(&out));

    // A flag overrides the file: another archive.
    dir.segment(601, 700, 100);
    let other = dir.path().join("other");
    let out = dir
        .cmd(&["archive", "--once", "--config", conf.to_str().unwrap(), "--to", other.to_str().unwrap(), "--state", "other.json"])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert!(other.join(segment_name(601, 700)).exists());
    assert!(!dir.archive_dir().join(segment_name(601, 700)).exists());
}

#[test]
fn refuses_an_invalid_config_file_naming_the_key_and_the_line() {
    let dir = Dir::new();
    let conf = dir.path().join("bad.toml");
    let cases = [
        ("to = \"/tmp/a\"\nwal-dir = \"/tmp\"\nbatch-sise = 4\n", "batch-sise", "line 3"),
        ("wal-dir = \"/tmp\"\nconcurrency = -1\n", "concurrency", "line 2"),
        ("wal-dir = \"/tmp\"\nto = \"s3://b/p\"\n[storage]\naws_region = \"x\"\naws_secret = \"y\"\n", "aws_secret", "line 5"),
    ];
    for (text, key, line) in cases {
        std::fs::write(&conf, text).unwrap();
        let out = dir.cmd(&["archive", "--once", "--config", conf.to_str().unwrap()]).output().unwrap();
        assert_exit(&out, 2);
        let err = stderr(&out);
        assert!(err.contains("bad.toml") && err.contains(key) && err.contains(line), "{text:?}:\n{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // An unknown option key in the environment's place, given on the URL's backend, is refused too.
    let out = dir.cmd(&["archive", "--once", "--wal-dir", dir.wal().to_str().unwrap(), "--to", "nope://bucket/x"]).output().unwrap();
    assert_exit(&out, 2);
}

/// Runs `archive --once` against `s3` through `endpoint`.
fn archive_through(dir: &Dir, s3: &S3, endpoint: &str, url: &str, extra: &[&str]) -> std::process::Output {
    let wal = dir.wal();
    let mut args = vec!["archive", "--once", "--concurrency", "4", "--wal-dir", wal.to_str().unwrap(), "--to", url];
    args.extend_from_slice(extra);
    let mut cmd = dir.cmd(&args);
    for (k, v) in s3.env_via(endpoint) {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// A segment goes to S3 in one PUT and nothing of it comes back: per
/// segment one PUT of its bytes and one empty PUT of its checksum record,
/// no GET, no copy, and the bytes on the wire those of the segments. (On
/// s3s-fs, which checks the checksum a PUT carries, as S3 does.)
#[test]
fn sends_each_segment_to_s3_in_one_put_and_reads_none_back() {
    let s3 = crate::util::s3::checking();
    let dir = Dir::new();
    let paths = dir.chain(16, 1 << 20);
    let url = s3.url("one-put");
    let recorder = Recorder::start(&s3.endpoint, false);
    let out = archive_through(&dir, s3, &recorder.endpoint, &url, &[]);
    assert_exit(&out, 0);
    assert_in(s3, &url, &paths);
    let seen = recorder.seen();
    let listing: Vec<String> = seen.iter().map(|r| format!("{} {} ({} bytes)", r.method, r.target, r.body)).collect();
    let segment_puts = seen.iter().filter(|r| r.method == "PUT" && r.target.contains(".seg") && !r.target.contains("/_")).count();
    assert_eq!(segment_puts, 16, "one PUT per segment:\n{}", listing.join("\n"));
    let reads: Vec<&String> = listing.iter().filter(|l| l.starts_with("GET") && l.contains(".seg")).collect();
    assert!(reads.is_empty(), "segments read back: {reads:?}");
    // The staging area is listed once at start, for leftovers; nothing of a
    // segment goes there.
    let staged = seen.iter().any(|r| r.method != "GET" && ((r.target.contains("_staging") && !r.target.contains("checksum-probe")) || r.target.contains("uploads")));
    assert!(!staged, "staged or multipart:\n{}", listing.join("\n"));
    let body: u64 = seen.iter().map(|r| r.body).sum();
    let segments = 16u64 << 20;
    assert!(body as f64 <= segments as f64 * 1.01, "{body} bytes sent for {segments} bytes of segments");
    // Two per segment, and a few per run (the listings of the staging area
    // and of the archive, the probe and its removal, the chain start).
    let probes = seen.iter().filter(|r| r.method == "PUT" && r.target.contains("checksum-probe")).count();
    assert_eq!(probes, 1, "one probe:\n{}", listing.join("\n"));
    assert!(seen.len() <= 2 * 16 + 6, "{} requests for 16 segments:\n{}", seen.len(), listing.join("\n"));
    eprintln!("{} requests, {body} body bytes for 16 segments of 1 MiB:\n{}", seen.len(), listing.join("\n"));
}

/// `--single-put-max` bounds what goes in one PUT: 0 stages every segment
/// (a multipart upload to the staging area, a read-back, a copy), a
/// threshold below a segment's size stages that one; above 5 GiB (S3's own
/// limit for one PUT) it is refused, from the command line and the config.
#[test]
fn stages_segments_above_the_single_put_threshold() {
    let s3 = crate::util::s3::checking();
    let dir = Dir::new();
    let paths = dir.chain(3, 300_000);
    for (max, url, one_puts) in [("0", s3.url("spm-zero"), 0), ("200KiB", s3.url("spm-200k"), 0), ("1MiB", s3.url("spm-1m"), 3)] {
        let recorder = Recorder::start(&s3.endpoint, false);
        let out = archive_through(&dir, s3, &recorder.endpoint, &url, &["--single-put-max", max]);
        assert_exit(&out, 0);
        assert_in(s3, &url, &paths);
        let seen = recorder.seen();
        // A PUT that carries a whole segment to its key (a staged one is
        // published with copies, which carry no body).
        let puts = seen.iter().filter(|r| r.method == "PUT" && r.target.contains(".seg") && !r.target.contains("/_") && r.body >= 300_000).count();
        let staged = seen.iter().any(|r| r.target.contains("_staging") && r.target.contains(".seg"));
        assert_eq!((puts, staged), (one_puts, one_puts == 0), "--single-put-max {max}");
        std::fs::remove_file(dir.wal().join(".wal-archiver-state.json")).unwrap();
    }
    let out = archive_through(&dir, s3, &s3.endpoint, &s3.url("spm-big"), &["--single-put-max", "6GiB"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("S3 takes at most 5GiB in one PUT"), "{}", stderr(&out));
    let config = dir.path().join("big.toml");
    std::fs::write(&config, "single-put-max = \"8GiB\"\n").unwrap();
    let out = archive_through(&dir, s3, &s3.endpoint, &s3.url("spm-big"), &["--config", config.to_str().unwrap()]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains(&format!("single-put-max = 8589934592 from config file {}, line 1", config.display())), "{}", stderr(&out));
}

/// A byte flipped in a segment's body on its way to S3: the store checks
/// the CRC64NVME sent with the PUT and refuses the body, so the segment is
/// not counted archived and the run fails naming it. Whatever the store
/// kept of a refused body is never taken for the segment: a later run
/// through a clean network archives it or reports a conflict, and a restore
/// gives the segment's own bytes or nothing.
#[test]
fn a_segment_corrupted_on_the_way_to_s3_is_refused_by_the_store() {
    let s3 = crate::util::s3::checking();
    let dir = Dir::new();
    let paths = dir.chain(3, 100_000);
    let url = s3.url("flip");
    let flipper = Recorder::start(&s3.endpoint, true);
    let out = archive_through(&dir, s3, &flipper.endpoint, &url, &["--max-attempts", "2", "--retry-base-delay", "0.01"]);
    assert_exit(&out, 1);
    let flipped = flipper.seen().iter().filter(|r| r.flipped).count();
    assert!(flipped >= 3, "the proxy flipped {flipped} bodies");
    let err = stderr(&out);
    eprintln!("through the flipping proxy:\n{err}");
    for p in &paths {
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(err.contains(name) && err.contains("BadDigest"), "no error naming {name} and the store's refusal:\n{err}");
    }
    assert!(stdout(&out).contains("archived 0 segments"), "{}", stdout(&out));
    assert!(stdout(&out).contains("last archived LSN: none yet"), "{}", stdout(&out));

    // Through a clean network: each segment ends archived with its own
    // bytes, or in conflict with what the store kept; never counted otherwise.
    let out = archive_through(&dir, s3, &s3.endpoint, &url, &[]);
    let archive = Archive::open_with(&url, &s3.options(), DEFAULT_REQUEST_RETRIES).unwrap();
    let rt = tokio_rt();
    let text = stdout(&out);
    eprintln!("through a clean network:\n{text}");
    for p in &paths {
        let name = p.file_name().unwrap().to_str().unwrap();
        let stored = read(&rt, &archive, &archive.key_of(name));
        let own = stored.as_deref() == Some(std::fs::read(p).unwrap().as_slice());
        let conflict = text.contains("conflict: the archive holds") && text.contains(&format!("under {name}'s key"));
        assert!(own || conflict, "{name} neither archived whole nor in conflict:\n{text}\n{}", stderr(&out));
    }
    let restored = dir.path().join("restored");
    let mut cmd = dir.cmd(&["restore", "--from", &url, "--into", restored.to_str().unwrap()]);
    for (k, v) in s3.env_via(&s3.endpoint) {
        cmd.env(k, v);
    }
    let _ = cmd.output().unwrap();
    for p in &paths {
        if let Ok(bytes) = std::fs::read(restored.join(p.file_name().unwrap())) {
            assert!(bytes == std::fs::read(p).unwrap(), "restore gave other bytes for {}", p.display());
        }
    }
}

/// A store that does not check the checksum a PUT carries (moto 5.2 stores
/// whatever body it got) is found out by the probe: the archiver says so,
/// and stages and reads back every segment there, as before one PUT.
#[test]
fn stages_and_reads_back_where_the_store_does_not_check_the_checksum() {
    let _one_at_a_time = S3::exclusive();
    let s3 = S3::get();
    let dir = Dir::new();
    let paths = dir.chain(4, 100_000);
    let url = s3.url("unchecked");
    let recorder = Recorder::start(&s3.endpoint, false);
    let out = archive_through(&dir, s3, &recorder.endpoint, &url, &[]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("does not check the checksum sent with a PUT"), "{}", stderr(&out));
    assert_in_s3(&url, &paths);
    let seen = recorder.seen();
    let listing: Vec<String> = seen.iter().map(|r| format!("{} {} ({} bytes)", r.method, r.target, r.body)).collect();
    for p in &paths {
        let name = p.file_name().unwrap().to_str().unwrap();
        let staged = seen.iter().any(|r| r.method == "PUT" && r.target.contains("_staging") && r.target.contains(name));
        let read_back = seen.iter().any(|r| r.method == "GET" && r.target.contains(&format!("/_staging/{name}.")));
        assert!(staged && read_back, "{name} not staged and read back:\n{}", listing.join("\n"));
    }
    // The probe asked once, and removed.
    let probes = listing.iter().filter(|l| l.contains("checksum-probe")).count();
    assert_eq!(probes, 1, "{}", listing.join("\n"));
    let mut verify = dir.cmd(&["verify", "--to", &url]);
    for (k, v) in s3.env_via(&s3.endpoint) {
        verify.env(k, v);
    }
    let verify = verify.output().unwrap();
    assert_exit(&verify, 0);
    assert!(!stdout(&verify).contains("staging area"), "{}", stdout(&verify));
}

/// At start, `archive` removes the staging leftovers of killed uploads
/// that are older than `--staging-max-age` and of its own naming; a younger
/// one (an upload in flight), a file of another naming and a symlink stay,
/// and `verify` still lists what stays. On file://.
#[test]
fn removes_old_staging_leftovers_of_its_own_naming_only_file() {
    let dir = Dir::new();
    dir.chain(2, 1000);
    let staging = dir.archive_dir().join("_staging");
    std::fs::create_dir_all(&staging).unwrap();
    let old = "wal-0000000000000001-0000000000000064.seg.4242-18eba33421bf8cc6-0";
    let young = "wal-0000000000000065-00000000000000c8.seg.4242-18eba33421bf8cc7-1";
    let foreign = "notes.txt";
    let two_days_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 86_400);
    for name in [old, young, foreign] {
        let f = std::fs::File::create(staging.join(name)).unwrap();
        if name != young {
            f.set_modified(two_days_ago).unwrap();
        }
    }
    let link = "wal-00000000000000c9-000000000000012c.seg.4242-18eba33421bf8cc8-2";
    std::os::unix::fs::symlink(staging.join(foreign), staging.join(link)).unwrap();

    let out = dir.archive_once(&[]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("removed staging leftovers") && stderr(&out).contains(old), "{}", stderr(&out));
    assert!(!staging.join(old).exists(), "the old leftover is still there");
    for kept in [young, foreign, link] {
        assert!(std::fs::symlink_metadata(staging.join(kept)).is_ok(), "{kept} was removed");
    }
    let verify = dir.cmd(&["verify", "--to", &dir.archive_url()]).output().unwrap();
    assert!(stdout(&verify).contains(young), "{}", stdout(&verify));

    // A shorter age takes the young one too, on the next run.
    let out = dir.archive_once(&["--staging-max-age", "0.001"]);
    assert_exit(&out, 0);
    assert!(!staging.join(young).exists(), "{}", stderr(&out));
    assert!(staging.join(foreign).exists());
}

/// The same on S3, where the age is the store's last-modified time (whole
/// seconds): leftovers put before a pause are removed, one put just before
/// the run and one of another naming stay.
#[test]
fn removes_old_staging_leftovers_of_its_own_naming_only_s3() {
    let _one_at_a_time = S3::exclusive();
    let s3 = S3::get();
    let dir = Dir::new();
    let paths = dir.chain(2, 1000);
    let url = s3.url("leftovers");
    let archive = Archive::open_with(&url, &s3.options(), DEFAULT_REQUEST_RETRIES).unwrap();
    let rt = tokio_rt();
    let put = |name: &str| rt.block_on(archive.put_create(&archive.key_of(&format!("_staging/{name}")), bytes::Bytes::from_static(b"part"))).unwrap();
    let old = "wal-0000000000000001-0000000000000064.seg.4242-18eba33421bf8cc6-0";
    let young = "wal-0000000000000065-00000000000000c8.seg.4242-18eba33421bf8cc7-1";
    let foreign = "notes.txt";
    put(old);
    put(foreign);
    std::thread::sleep(Duration::from_millis(4500));
    put(young);
    let out = archive_through(&dir, s3, &s3.endpoint, &url, &["--staging-max-age", "2"]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("removed staging leftovers") && stderr(&out).contains(old), "{}", stderr(&out));
    let left: Vec<String> = rt.block_on(archive.list()).unwrap().staging;
    assert!(!left.iter().any(|n| n == old), "{left:?}");
    assert!(left.iter().any(|n| n == young) && left.iter().any(|n| n == foreign), "{left:?}");
    assert_in_s3(&url, &paths);
}

/// A state file the archiver left in the WAL directory before `--state`
/// moved it elsewhere is the archiver's own, not a name to report.
#[test]
fn does_not_report_its_own_old_state_file_as_skipped() {
    let dir = Dir::new();
    dir.chain(2, 1000);
    std::fs::write(dir.wal().join(".wal-archiver-state.json"), b"{}").unwrap();
    std::fs::write(dir.wal().join(".wal-archiver-state.json.tmp"), b"{").unwrap();
    let elsewhere = dir.path().join("state.json");
    let out = dir.archive_once(&["--state", elsewhere.to_str().unwrap()]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("skipped: 0"), "{}", stdout(&out));
    let status = dir.cmd(&["status", "--json", "--wal-dir", dir.wal().to_str().unwrap(), "--to", &dir.archive_url(), "--state", elsewhere.to_str().unwrap()]).output().unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(doc["skipped"].as_array().map(Vec::len), Some(0), "{doc}");
}

/// `--log-format json`: every log line is one JSON object, and an archived
/// segment's line carries its name, LSNs and bytes as fields.
#[test]
fn logs_one_json_object_per_line_with_the_segments_fields() {
    let dir = Dir::new();
    dir.chain(3, 1000);
    let out = dir.archive_once(&["--log-format", "json"]);
    assert_exit(&out, 0);
    let lines: Vec<serde_json::Value> = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON object ({e}): {l}")))
        .collect();
    let archived: Vec<&serde_json::Value> = lines.iter().filter(|l| l["message"] == "archived").collect();
    assert_eq!(archived.len(), 3, "{lines:?}");
    let first = archived.iter().find(|l| l["segment"] == segment_name(1, 100)).unwrap_or_else(|| panic!("{archived:?}"));
    assert_eq!((first["first_lsn"].as_u64(), first["last_lsn"].as_u64(), first["bytes"].as_u64()), (Some(1), Some(100), Some(1000)), "{first}");
    assert_eq!(first["level"], "INFO");
    assert!(first["timestamp"].is_string(), "{first}");
    // The summary stays on stdout, as text.
    assert!(stdout(&out).contains("archived 3 segments"), "{}", stdout(&out));

    // An error that stops the run is a JSON line too, naming the directory.
    let missing = dir.path().join("no-such-wal");
    let out = dir.cmd(&["archive", "--once", "--log-format", "json", "--wal-dir", missing.to_str().unwrap(), "--to", &dir.archive_url()]).output().unwrap();
    assert_exit(&out, 2);
    let lines: Vec<serde_json::Value> = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON object ({e}): {l}")))
        .collect();
    let error = lines.iter().find(|l| l["level"] == "ERROR").unwrap_or_else(|| panic!("{lines:?}"));
    assert!(error["message"].as_str().is_some_and(|m| m.contains("no-such-wal")), "{error}");

    // So is a flag refused before anything runs.
    let out = dir.cmd(&["--log-format", "json", "archive", "--once", "--compression", "brotli", "--wal-dir", "w", "--to", "a"]).output().unwrap();
    assert_exit(&out, 2);
    let lines: Vec<serde_json::Value> = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON object ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["level"], "ERROR");
    assert!(lines[0]["message"].as_str().is_some_and(|m| m.contains("cannot use compression \"brotli\"")), "{}", lines[0]);
}

/// A failed upload in the JSON log: the error and the attempt as fields.
#[test]
fn logs_a_failed_upload_as_json_with_its_error_and_attempt() {
    let s3 = crate::util::s3::checking();
    let dir = Dir::new();
    dir.chain(1, 1000);
    let url = s3.url("json-failure");
    let flipper = Recorder::start(&s3.endpoint, true);
    let out = archive_through(&dir, s3, &flipper.endpoint, &url, &["--max-attempts", "1", "--log-format", "json"]);
    assert_exit(&out, 1);
    let failure = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("not a JSON object ({e}): {l}")))
        .find(|l| l["message"] == "cannot archive segment")
        .unwrap_or_else(|| panic!("no failure logged:\n{}", stderr(&out)));
    assert_eq!(failure["segment"], segment_name(1, 100), "{failure}");
    assert_eq!((failure["first_lsn"].as_u64(), failure["last_lsn"].as_u64(), failure["attempts"].as_u64()), (Some(1), Some(100), Some(1)), "{failure}");
    assert!(failure["error"].as_str().is_some_and(|e| e.contains("BadDigest")), "{failure}");
    assert_eq!(failure["level"], "WARN");
    // Its only attempt in this run: no retry is announced.
    assert_eq!(failure["last_attempt"], true, "{failure}");
    assert!(failure.get("retry_in").is_none(), "{failure}");
}

/// An S3 endpoint over TLS answering every request with an empty listing;
/// records each request line. The certificate is made by `openssl` for
/// 127.0.0.1 and is not trusted, so the archiver is told to accept it.
fn tls_endpoint(dir: &Dir) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::io::{Read, Write};

    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("cannot run openssl");
    assert!(made.status.success(), "openssl: {}", String::from_utf8_lossy(&made.stderr));
    let certs = vec![CertificateDer::from_pem_file(&cert).unwrap()];
    let key = PrivateKeyDer::from_pem_file(&key).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { return };
            let (config, log) = (config.clone(), log.clone());
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match tls.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                log.lock().unwrap().push(text.lines().next().unwrap_or("").to_owned());
                let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
                    <ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>tls</Name><Prefix>wal/</Prefix>\
                    <KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>";
                let _ = write!(
                    tls,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    (format!("https://{addr}"), seen)
}

/// The cloud backends reach their stores over TLS with the crypto the
/// binary is built with (ring): a request goes through the handshake and its
/// answer is read, rather than the process stopping on a missing provider.
#[test]
fn reaches_an_s3_endpoint_over_tls() {
    let dir = Dir::new();
    let (endpoint, seen) = tls_endpoint(&dir);
    let out = dir
        .cmd(&["verify", "--to", "s3://tls/wal"])
        .env_remove("AWS_CA_BUNDLE")
        .envs([
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_ALLOW_INVALID_CERTIFICATES", "true"),
        ])
        .output()
        .unwrap();
    // The empty listing came back through TLS: an archive with no segment.
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("the archive holds no verified segment"), "{}\n{}", stdout(&out), stderr(&out));
    let seen = seen.lock().unwrap().clone();
    assert!(seen.iter().any(|l| l.starts_with("GET /tls?list-type=2")), "requests seen over TLS: {seen:?}");
}

/// GCS, on the read side: fake-gcs-server refuses every XML write
/// object_store makes (see tests/util/gcs.rs), so an archive made on
/// `file://` is loaded into it as it is (segments, checksum records, chain
/// start: the layout is the same on every backend), and the commands that
/// only read run against it: verify --deep, restore byte for byte, an
/// archive run with a lost state that reconciles from the listing and sends
/// nothing, and verify --deep catching a replaced object.
#[test]
fn reads_verifies_restores_and_reconciles_a_gcs_archive() {
    let gcs = Gcs::get();
    let dir = Dir::new();
    let paths = dir.chain(6, 300_000);
    assert_exit(&dir.archive_once(&[]), 0);
    let (url, prefix) = gcs.url("read");
    // Six segments, six checksum records, the chain start.
    assert_eq!(gcs.load(&dir.archive_dir(), &prefix), 13);
    let run = |args: &[&str]| {
        let mut cmd = dir.cmd(args);
        cmd.envs(gcs.env());
        // A command that waits on a write the emulator refuses fails here, not by hanging.
        let child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        crate::util::wait_within(child, Duration::from_secs(60))
    };

    let out = run(&["verify", "--deep", "--json", "--to", &url]);
    assert_exit(&out, 0);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((doc["segments"].as_u64(), doc["sound"].as_bool()), (Some(6), Some(true)), "{doc}");

    let into = dir.path().join("restored");
    let out = run(&["restore", "--from", &url, "--into", into.to_str().unwrap()]);
    assert_exit(&out, 0);
    for p in &paths {
        let name = p.file_name().unwrap();
        assert!(std::fs::read(into.join(name)).unwrap() == std::fs::read(p).unwrap(), "{name:?} restored with other bytes");
    }

    let state = dir.path().join("gcs-state.json");
    let out = run(&["archive", "--once", "--wal-dir", dir.wal().to_str().unwrap(), "--to", &url, "--state", state.to_str().unwrap()]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("archived 0 segments (0 B)"), "{}", stdout(&out));
    assert!(stdout(&out).contains("already in the archive, compared with the local files: 6"), "{}", stdout(&out));
    assert!(stdout(&out).contains("last archived LSN: 0x0000000000000258 (600)"), "{}", stdout(&out));

    let damaged = segment_name(201, 300);
    gcs.put(&format!("{prefix}/{damaged}"), &content(99, 300_000));
    let out = run(&["verify", "--deep", "--to", &url]);
    assert_exit(&out, 1);
    assert!(stdout(&out).contains(&damaged), "{}", stdout(&out));
}
