//! The planner's cost: the same Rust code called natively and as the
//! component in wasmtime, side by side in one run (goal P3); how each call
//! grows with its input, at 10k, 100k and 1M names (linear or n log n); a
//! whole `run-cycle` over a backlog through in-memory storage imports; and
//! the host's start and per-cycle instantiation (P4).
//!
//! Run: `cargo bench -p wal-archiver --bench planner`. Each P3 case is
//! warmed up for half a second, then timed in 20 samples of as many calls as
//! fill about two seconds; the table at the end gives the medians of those
//! samples and the ratio of the component to native code. The component's
//! time is the whole call: lowering the inputs into the guest, the guest's
//! work, and lifting the report back. `WAL_ARCHIVER_BENCH_QUICK=1` takes
//! medians of a few calls instead of those samples and skips the 1M
//! row and P4, for a quick look.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wal_archiver::bindings::empty_state;
use wal_archiver::cache::CompileCache;
use wal_archiver::component::{wit, Limits, Planner, PlannerRuntime, EMBEDDED_COMPONENT};
use wal_archiver::imports::StorageImports;
use wal_archiver_guest::packed::{ArchiveListing, ArchivedList, DirEntry, EntryKind, FailureList, Listing, SegmentList};
use wal_archiver_guest::{cycle, plan, restore};

/// Segment `i` holds LSNs `i * SPAN + 1 ..= (i + 1) * SPAN`.
const SPAN: u64 = 1_000;
const SEGMENT_BYTES: u64 = 16 << 20;
/// How many of the listed segments are new in the steady case.
const NEW: usize = 16;

/// Seconds per call of every sample taken, by case.
#[derive(Default)]
struct Samples(Mutex<BTreeMap<String, Vec<f64>>>);

/// Calls made before any sample counts: caches and the allocator settle.
const WARM_UP: Duration = Duration::from_millis(500);
/// Roughly how long the samples of one case take together.
const MEASURE: Duration = Duration::from_secs(2);

impl Samples {
    /// Warms `f` up, then times `sample_size` samples of the same number of
    /// calls each, and keeps each sample's time per call.
    fn run(&self, sample_size: usize, group: &str, case: &str, n: usize, mut f: impl FnMut()) {
        let key = format!("{group}/{case}/{n}");
        let warm = Instant::now();
        let mut calls = 0u32;
        while warm.elapsed() < WARM_UP {
            f();
            calls += 1;
        }
        let per_call = warm.elapsed().as_secs_f64() / f64::from(calls);
        let iters = ((MEASURE.as_secs_f64() / sample_size as f64) / per_call).ceil().max(1.0) as u32;
        let mut times = Vec::with_capacity(sample_size);
        for _ in 0..sample_size {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            times.push(t.elapsed().as_secs_f64() / f64::from(iters));
        }
        let mut sorted = times.clone();
        sorted.sort_by(f64::total_cmp);
        println!("{key:<32} {:>12.3} µs per call ({sample_size} samples of {iters} calls)", sorted[sorted.len() / 2] * 1e6);
        self.0.lock().unwrap().entry(key).or_default().extend(times);
    }

    /// The median of the last `sample_size` samples: the warm-up calls come first.
    fn median(&self, key: &str, sample_size: usize) -> Option<f64> {
        let all = self.0.lock().unwrap();
        let v = all.get(key)?;
        let mut last = v[v.len().saturating_sub(sample_size)..].to_vec();
        last.sort_by(f64::total_cmp);
        Some(last[last.len() / 2])
    }
}

/// The median of `runs` timed calls of `f`, in seconds (for the rows that
/// are not sampled: the scaling table and whole cycles).
fn median_of(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn name(i: usize) -> String {
    let i = i as u64;
    wal_archiver_guest::format_segment_name(i * SPAN + 1, (i + 1) * SPAN).unwrap()
}

fn listing(n: usize) -> Listing {
    (0..n).map(|i| DirEntry { name: name(i), utf8: true, kind: EntryKind::File, size: SEGMENT_BYTES }).collect::<Vec<_>>().iter().collect()
}

fn archived(range: std::ops::Range<usize>) -> ArchivedList {
    let mut a = ArchivedList::default();
    for i in range {
        a.push(&name(i), SEGMENT_BYTES, i as u32);
    }
    a
}

fn archive_listing(n: usize) -> ArchiveListing {
    let mut a = ArchiveListing::default();
    for i in 0..n {
        a.push(&DirEntry { name: name(i), utf8: true, kind: EntryKind::File, size: SEGMENT_BYTES }, Some(i as u32));
    }
    a.chain_start = Some(1);
    a
}

// The same values as the host's WIT types: the packed lists have the same
// fields on both sides.

fn wit_listing(l: &Listing) -> wit::DirListing {
    wit::DirListing { names: l.names.clone(), ends: l.ends.clone(), sizes: l.sizes.clone(), kinds: l.kinds.clone(), utf8: l.utf8.clone() }
}

fn wit_archive(a: &ArchiveListing) -> wit::ArchiveListing {
    wit::ArchiveListing {
        names: a.names.clone(),
        ends: a.ends.clone(),
        sizes: a.sizes.clone(),
        kinds: a.kinds.clone(),
        utf8: a.utf8.clone(),
        crc32cs: a.crc32cs.clone(),
        recorded: a.recorded.clone(),
        chain_start: a.chain_start,
        pruned_below: a.pruned_below,
    }
}

fn wit_state(s: &plan::State) -> wit::ArchiverState {
    wit::ArchiverState {
        chain_start: s.chain_start,
        last_archived_lsn: s.last_archived_lsn,
        pruned_below: s.pruned_below,
        segments_archived: s.segments_archived,
        bytes_archived: s.bytes_archived,
        failures: s.failures,
        archived: wit::ArchivedList { names: s.archived.names.clone(), ends: s.archived.ends.clone(), sizes: s.archived.sizes.clone(), crc32cs: s.archived.crc32cs.clone() },
        failing: wit::FailureList {
            names: s.failing.names.clone(),
            ends: s.failing.ends.clone(),
            attempts: s.failing.attempts.clone(),
            reasons: s.failing.reasons.clone(),
            reason_ends: s.failing.reason_ends.clone(),
        },
        conflicts: Vec::new(),
    }
}

fn wit_segments(l: &SegmentList) -> wit::SegmentList {
    wit::SegmentList { names: l.names.clone(), ends: l.ends.clone(), sizes: l.sizes.clone() }
}

fn native_config() -> plan::Config {
    plan::Config { prefix: String::new(), batch_size: 16, delete_after_archive: true, ..plan::Config::default() }
}

fn config() -> wit::ArchiverConfig {
    wit::ArchiverConfig {
        prefix: String::new(),
        batch_size: 16,
        batch_bytes: 0,
        verify_checksums: true,
        delete_after_archive: true,
        retry_base_ms: 1000,
        retry_max_ms: 60_000,
        compression: wit::Compression::None,
    }
}

/// The planner's inputs for one scan case, in both type systems.
struct Case {
    listing: Listing,
    state: plan::State,
    archive: Option<ArchiveListing>,
    wit_listing: wit::DirListing,
    wit_state: wit::ArchiverState,
    wit_archive: Option<wit::ArchiveListing>,
}

impl Case {
    fn new(n: usize, state: plan::State, archive: Option<ArchiveListing>) -> Self {
        let listing = listing(n);
        let (wit_listing, wit_state) = (wit_listing(&listing), wit_state(&state));
        let wit_archive = archive.as_ref().map(wit_archive);
        Self { listing, state, archive, wit_listing, wit_state, wit_archive }
    }

    /// N listed, all but the newest few archived below the watermark: a
    /// directory that keeps its segments, between two listings of the archive.
    fn steady(n: usize) -> Self {
        let done = n - NEW;
        let state = plan::State {
            chain_start: Some(1),
            last_archived_lsn: Some(done as u64 * SPAN),
            segments_archived: done as u64,
            bytes_archived: done as u64 * SEGMENT_BYTES,
            archived: archived(0..done),
            ..plan::State::default()
        };
        Self::new(n, state, None)
    }

    /// N listed, nothing archived yet: the first run over a backlog.
    fn backlog(n: usize) -> Self {
        Self::new(n, plan::State::default(), None)
    }

    /// N listed, the first one failing and every other archived above it:
    /// the most the state can carry.
    fn hole(n: usize) -> Self {
        let mut failing = FailureList::default();
        failing.push(&name(0), 3, "cannot upload: 503");
        let state = plan::State {
            chain_start: Some(1),
            segments_archived: n as u64 - 1,
            bytes_archived: (n as u64 - 1) * SEGMENT_BYTES,
            failures: 3,
            archived: archived(1..n),
            failing,
            ..plan::State::default()
        };
        Self::new(n, state, None)
    }

    /// N listed and N in the archive's listing, as at every start: the
    /// state is rebuilt from the archive (its segments confirmed before).
    fn reconcile(n: usize) -> Self {
        let state = plan::State { archived: archived(0..n), chain_start: Some(1), ..plan::State::default() };
        Self::new(n, state, Some(archive_listing(n)))
    }
}

/// Storage imports over memory, for a whole `run-cycle`: the listing is
/// prebuilt, an upload answers at once.
struct MemStorage {
    listing: wit::DirListing,
    uploads: Mutex<usize>,
}

impl StorageImports for MemStorage {
    fn list_wal_dir(&self) -> Result<wit::DirListing, wit::StorageError> {
        Ok(self.listing.clone())
    }
    fn list_archive(&self) -> Result<wit::ArchiveListing, wit::StorageError> {
        Ok(wit::ArchiveListing::default())
    }
    fn upload(&self, _name: &str, _key: &str, size: u64, _verify: bool) -> Result<wit::UploadReceipt, wit::StorageError> {
        *self.uploads.lock().unwrap() += 1;
        Ok(wit::UploadReceipt { read_size: size, read_crc32c: 7, stored_size: size, stored_crc32c: Some(7), existed: false })
    }
    fn check_archived(&self, _name: &str, _key: &str, _size: u64) -> Result<wit::UploadReceipt, wit::StorageError> {
        Err(wit::StorageError::NotFound("nothing is archived here".into()))
    }
    fn delete_segment(&self, _name: &str, _key: &str) -> Result<(), wit::StorageError> {
        Ok(())
    }
    fn record_chain_start(&self, _start: u64) -> Result<(), wit::StorageError> {
        Ok(())
    }
}

/// The same, for the planner's own `run_cycle` called natively.
struct NativeMem {
    listing: Listing,
}

impl cycle::Storage for NativeMem {
    fn list_wal_dir(&mut self) -> Result<Listing, plan::StorageError> {
        Ok(self.listing.clone())
    }
    fn list_archive(&mut self) -> Result<ArchiveListing, plan::StorageError> {
        Ok(ArchiveListing::default())
    }
    fn upload(&mut self, _name: &str, _key: &str, size: u64, _verify: bool) -> Result<plan::UploadReceipt, plan::StorageError> {
        Ok(plan::UploadReceipt { read_size: size, read_crc32c: 7, stored_size: size, stored_crc32c: Some(7), existed: false })
    }
    fn check_archived(&mut self, _name: &str, _key: &str, _size: u64) -> Result<plan::UploadReceipt, plan::StorageError> {
        Err(plan::StorageError::NotFound("nothing is archived here".into()))
    }
    fn delete_segment(&mut self, _name: &str, _key: &str) -> Result<(), plan::StorageError> {
        Ok(())
    }
    fn record_chain_start(&mut self, _start: u64) -> Result<(), plan::StorageError> {
        Ok(())
    }
}

const SIZES: [usize; 2] = [10_000, 100_000];
const P3_GOAL_RATIO: f64 = 1.2;
const P3_GOAL_100K: Duration = Duration::from_millis(20);
const P4_GOAL_START: Duration = Duration::from_millis(5);
const P4_GOAL_INSTANTIATE: Duration = Duration::from_micros(20);
const CYCLE_GOAL: Duration = Duration::from_secs(1);

/// Outcomes of uploading every segment of a backlog, both ways.
fn outcomes(n: usize) -> (Vec<plan::UploadOutcome>, Vec<wit::UploadOutcome>) {
    let native: Vec<plan::UploadOutcome> = (0..n)
        .map(|i| plan::UploadOutcome {
            name: name(i),
            size: SEGMENT_BYTES,
            result: Ok(plan::UploadReceipt { read_size: SEGMENT_BYTES, read_crc32c: 7, stored_size: SEGMENT_BYTES, stored_crc32c: Some(7), existed: false }),
        })
        .collect();
    let wit = native
        .iter()
        .map(|o| wit::UploadOutcome {
            name: o.name.clone(),
            size: o.size,
            receipt: Ok(wit::UploadReceipt { read_size: o.size, read_crc32c: 7, stored_size: o.size, stored_crc32c: Some(7), existed: false }),
        })
        .collect();
    (native, wit)
}

fn main() {
    let quick = std::env::var_os("WAL_ARCHIVER_BENCH_QUICK").is_some();
    let sample_size = 20;
    let samples = Samples::default();
    // The compile cache in a directory of its own, warmed once.
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = CompileCache::open(cache_dir.path()).unwrap();
    // Another build of the planner can be measured in its place.
    let plugin = std::env::var_os("WAL_ARCHIVER_BENCH_PLUGIN");
    let bytes = match &plugin {
        Some(path) => std::fs::read(path).unwrap(),
        None => EMBEDDED_COMPONENT.to_vec(),
    };
    println!("component: {} ({} bytes)", plugin.as_ref().map_or("(embedded)".into(), |p| p.to_string_lossy()), bytes.len());
    let runtime = PlannerRuntime::load(&bytes, "(bench)", Limits::default(), Some(&cache)).unwrap();
    let mut planner = runtime.session(None).unwrap();

    // `WAL_ARCHIVER_BENCH_PROFILE=CASE[/native]` (steady, backlog, hole,
    // reconcile, record-batch) calls one case at 100k for ten seconds and
    // nothing else, for `perf record` (with WAL_ARCHIVER_PROFILER=perfmap).
    if let Some(case) = std::env::var_os("WAL_ARCHIVER_BENCH_PROFILE") {
        profile(&mut planner, &case.to_string_lossy());
        return;
    }

    // P3: the cases of a running archiver, native beside the component.
    let mut rows: Vec<(String, usize)> = Vec::new();
    let mut crossings = Vec::new();
    for &n in &SIZES {
        for (case, input) in [
            ("steady", Case::steady(n)),
            ("backlog", Case::backlog(n)),
            ("hole", Case::hole(n)),
            ("reconcile", Case::reconcile(n)),
        ] {
            // Both sides must agree before either is timed.
            let native = plan::scan(input.state.clone(), &input.listing, input.archive.as_ref());
            let wasm = planner.scan(&input.wit_state, &input.wit_listing, input.wit_archive.as_ref()).unwrap();
            assert_eq!(native.pending.len(), wasm.pending.len(), "{case}/{n}: pending");
            assert_eq!(native.state.last_archived_lsn, wasm.state.last_archived_lsn, "{case}/{n}: watermark");
            let group = format!("scan-{case}");
            if quick {
                let native = median_of(7, || drop(black_box(plan::scan(input.state.clone(), &input.listing, input.archive.as_ref()))));
                let wasm = median_of(7, || drop(black_box(planner.scan(&input.wit_state, &input.wit_listing, input.wit_archive.as_ref()).unwrap())));
                samples.0.lock().unwrap().insert(format!("{group}/native/{n}"), vec![native]);
                samples.0.lock().unwrap().insert(format!("{group}/component/{n}"), vec![wasm]);
            } else {
                samples.run(sample_size, &group, "native", n, || {
                    black_box(plan::scan(black_box(input.state.clone()), black_box(&input.listing), input.archive.as_ref()));
                });
                samples.run(sample_size, &group, "component", n, || {
                    black_box(planner.scan(black_box(&input.wit_state), black_box(&input.wit_listing), input.wit_archive.as_ref()).unwrap());
                });
            }
            rows.push((group, n));
        }
        // A checkpoint: a batch of 16 outcomes recorded against a state of N.
        let input = Case::steady(n);
        let (native_out, wit_out) = outcomes(n);
        let (batch_native, batch_wit) = (&native_out[n - NEW..], &wit_out[n - NEW..]);
        let cfg = native_config();
        let wcfg = config();
        if quick {
            let native = median_of(7, || drop(black_box(plan::record_uploads(&cfg, &input.state, batch_native))));
            let wasm = median_of(7, || drop(black_box(planner.record_uploads(&wcfg, &input.wit_state, batch_wit).unwrap())));
            samples.0.lock().unwrap().insert(format!("record-batch/native/{n}"), vec![native]);
            samples.0.lock().unwrap().insert(format!("record-batch/component/{n}"), vec![wasm]);
            let off = wit::ArchiverConfig { delete_after_archive: false, ..config() };
            let crossing = median_of(7, || drop(black_box(planner.deletable(&off, &input.wit_state, &input.wit_listing).unwrap())));
            samples.0.lock().unwrap().insert(format!("crossing/component/{n}"), vec![crossing]);
        } else {
            samples.run(sample_size, "record-batch", "native", n, || {
                black_box(plan::record_uploads(&cfg, black_box(&input.state), black_box(batch_native)));
            });
            samples.run(sample_size, "record-batch", "component", n, || {
                black_box(planner.record_uploads(&wcfg, black_box(&input.wit_state), black_box(batch_wit)).unwrap());
            });
            // The crossing alone: `deletable` with deletion off returns at
            // once, so this is lowering the listing and the state, and nothing else.
            let off = wit::ArchiverConfig { delete_after_archive: false, ..config() };
            samples.run(sample_size, "crossing", "component", n, || {
                black_box(planner.deletable(&off, &input.wit_state, black_box(&input.wit_listing)).unwrap());
            });
        }
        rows.push(("record-batch".into(), n));
        crossings.push(n);
    }

    // How each call grows: 10k, 100k, 1M names, one call each (median of a few).
    let big = Limits { memory: 1 << 30, deadline: Duration::from_secs(120), ..Limits::default() };
    let big_runtime = PlannerRuntime::load(&bytes, "(bench)", big, Some(&cache)).unwrap();
    let scaling_sizes: &[usize] = if quick { &[10_000, 100_000] } else { &[10_000, 100_000, 1_000_000] };
    let mut scaling: Vec<(&str, usize, f64, f64)> = Vec::new();
    for &n in scaling_sizes {
        let runs = if n >= 1_000_000 { 3 } else { 5 };
        let mut p: Planner = big_runtime.session(None).unwrap();
        let backlog = Case::backlog(n);
        let steady = Case::steady(n);
        let (native_out, wit_out) = outcomes(n);
        let archive = archive_listing(n);
        let warchive = wit_archive(&archive);
        let pending = plan::scan(plan::State::default(), &backlog.listing, None).pending;
        let wpending = wit_segments(&pending);
        let (cfg, wcfg) = (native_config(), config());
        let until = n as u64 * SPAN;
        let mut row = |what: &'static str, native: &mut dyn FnMut(), wasm: &mut dyn FnMut()| {
            scaling.push((what, n, median_of(runs, native), median_of(runs, wasm)));
        };
        row("scan (backlog)", &mut || drop(black_box(plan::scan(plan::State::default(), &backlog.listing, None))), &mut || {
            drop(black_box(p.scan(&backlog.wit_state, &backlog.wit_listing, None).unwrap()))
        });
        let mut p2 = big_runtime.session(None).unwrap();
        row("plan-batches", &mut || drop(black_box(plan::plan_batches(&cfg, &pending))), &mut || {
            drop(black_box(p2.plan_batches(&wcfg, &wpending).unwrap()))
        });
        let mut p3 = big_runtime.session(None).unwrap();
        row("record-uploads (all)", &mut || drop(black_box(plan::record_uploads(&cfg, &backlog.state, &native_out))), &mut || {
            drop(black_box(p3.record_uploads(&wcfg, &backlog.wit_state, &wit_out).unwrap()))
        });
        let mut p4 = big_runtime.session(None).unwrap();
        row("deletable (steady)", &mut || drop(black_box(plan::deletable(&cfg, &steady.state, &steady.listing))), &mut || {
            drop(black_box(p4.deletable(&wcfg, &steady.wit_state, &steady.wit_listing).unwrap()))
        });
        let mut p5 = big_runtime.session(None).unwrap();
        row("verify-plan", &mut || drop(black_box(restore::verify_plan(&archive, None, None))), &mut || {
            drop(black_box(p5.verify_plan(&warchive, None, None).unwrap()))
        });
        let mut p6 = big_runtime.session(None).unwrap();
        row("restore-plan", &mut || drop(black_box(restore::restore_plan(&archive, None, until))), &mut || {
            drop(black_box(p6.restore_plan(&warchive, None, until).unwrap()))
        });
        let mut p7 = big_runtime.session(None).unwrap();
        row("prune-plan", &mut || drop(black_box(restore::prune_plan(&archive, until / 2))), &mut || {
            drop(black_box(p7.prune_plan(&warchive, until / 2).unwrap()))
        });
    }

    // A whole cycle over a backlog of 100,000 segments through storage
    // imports that answer at once: the planner's loop, and nothing else.
    let n = 100_000;
    let listing = listing(n);
    let storage = Arc::new(MemStorage { listing: wit_listing(&listing), uploads: Mutex::new(0) });
    let cycle_runtime = PlannerRuntime::load(&bytes, "(bench)", big, Some(&cache)).unwrap();
    let mut cycle_state = None;
    let wasm_cycle = median_of(3, || {
        let mut p = cycle_runtime.session(Some(storage.clone() as Arc<dyn StorageImports>)).unwrap();
        let report = p.run_cycle(&config(), &empty_state()).unwrap().unwrap();
        cycle_state = Some(report.state);
    });
    let state = cycle_state.unwrap();
    assert_eq!((state.last_archived_lsn, state.segments_archived), (Some(n as u64 * SPAN), n as u64));
    assert_eq!(*storage.uploads.lock().unwrap(), 3 * n);
    let native_cycle = median_of(3, || {
        let mut mem = NativeMem { listing: listing.clone() };
        black_box(cycle::run_cycle(&native_config(), &plan::State::default(), &mut mem).unwrap());
    });

    // P4: a host start with the compiled component in the cache, beside a
    // start that compiles it; and a fresh instance, as each cycle makes.
    if !quick {
        samples.run(sample_size, "start", "cached", 1, || {
            black_box(PlannerRuntime::load(&bytes, "(bench)", Limits::default(), Some(&cache)).unwrap());
        });
        samples.run(sample_size, "start", "compiling", 1, || {
            black_box(PlannerRuntime::load(&bytes, "(bench)", Limits::default(), None).unwrap());
        });
        samples.run(sample_size, "instantiate", "session", 1, || {
            black_box(runtime.session(None).unwrap());
        });
        let config = config();
        samples.run(sample_size, "instantiate", "call", 1, || {
            black_box(planner.retry_delay(&config, 3, 7).unwrap());
        });
    }

    let ms = |s: f64| format!("{:.3} ms", s * 1e3);
    let us = |s: f64| format!("{:.2} µs", s * 1e6);
    let get = |key: String| samples.median(&key, sample_size).unwrap_or(f64::NAN);
    {
        println!();
        println!("P3: the planner over N listed names, medians of {} samples", if quick { 7 } else { sample_size });
        println!("{:<16} {:>7} {:>12} {:>12} {:>7}", "case", "N", "native", "component", "ratio");
        let mut p3_met = true;
        for (group, n) in &rows {
            let native = get(format!("{group}/native/{n}"));
            let wasm = get(format!("{group}/component/{n}"));
            let ratio = wasm / native;
            p3_met &= ratio <= P3_GOAL_RATIO && (*n < 100_000 || wasm <= P3_GOAL_100K.as_secs_f64());
            println!("{group:<16} {n:>7} {:>12} {:>12} {ratio:>7.2}", ms(native), ms(wasm));
        }
        println!("goal: component <= {P3_GOAL_RATIO} x native and <= {P3_GOAL_100K:?} at 100k: {}", if p3_met { "met" } else { "NOT met" });
        for n in &crossings {
            let crossing = get(format!("crossing/component/{n}"));
            let scan = get(format!("scan-steady/component/{n}"));
            println!(
                "the crossing alone (listing and state lowered, nothing planned), N = {n}: {} ({:.0} % of scan-steady)",
                ms(crossing),
                100.0 * crossing / scan
            );
        }
    }

    println!();
    println!("How each call grows with N (median of a few calls; ns per name, native / component)");
    println!("{:<22} {:>9} {:>12} {:>12} {:>10} {:>10}", "call", "N", "native", "component", "ns/name", "ns/name");
    for (what, n, native, wasm) in &scaling {
        println!(
            "{what:<22} {n:>9} {:>12} {:>12} {:>10.1} {:>10.1}",
            ms(*native),
            ms(*wasm),
            native * 1e9 / *n as f64,
            wasm * 1e9 / *n as f64
        );
    }

    println!();
    println!("run-cycle over a backlog of {n} segments, storage imports in memory (median of 3)");
    println!("native {:>12}   component {:>12}   ratio {:.2}   goal component <= {CYCLE_GOAL:?}: {}", ms(native_cycle), ms(wasm_cycle), wasm_cycle / native_cycle, if wasm_cycle <= CYCLE_GOAL.as_secs_f64() { "met" } else { "NOT met" });

    if !quick {
        let cached = get("start/cached/1".into());
        let compiling = get("start/compiling/1".into());
        let session = get("instantiate/session/1".into());
        let call = get("instantiate/call/1".into());
        println!();
        println!("P4: host start and per-cycle instantiation, medians");
        println!("start, compiled component cached  {:>12}  (goal {P4_GOAL_START:?})", ms(cached));
        println!("start, compiling (baseline)       {:>12}  ratio {:.3}", ms(compiling), cached / compiling);
        println!("instantiate a session             {:>12}  (goal {P4_GOAL_INSTANTIATE:?})", us(session));
        println!("one small call (baseline)         {:>12}  ratio {:.2}", us(call), session / call);
        println!(
            "goal: start <= {P4_GOAL_START:?}: {}; instantiate <= {P4_GOAL_INSTANTIATE:?}: {}",
            if cached <= P4_GOAL_START.as_secs_f64() { "met" } else { "NOT met" },
            if session <= P4_GOAL_INSTANTIATE.as_secs_f64() { "met" } else { "NOT met" },
        );
    }
}

/// Calls one P3 case at 100k, natively or as the component, for ten seconds.
fn profile(planner: &mut Planner, what: &str) {
    let n = 100_000;
    let (case, native) = what.split_once('/').map_or((what, false), |(c, side)| (c, side == "native"));
    let input = match case {
        "steady" | "record-batch" => Case::steady(n),
        "backlog" => Case::backlog(n),
        "hole" => Case::hole(n),
        "reconcile" => Case::reconcile(n),
        other => panic!("no case {other}: steady, backlog, hole, reconcile or record-batch"),
    };
    let (native_out, wit_out) = outcomes(n);
    let (cfg, wcfg) = (native_config(), config());
    let start = Instant::now();
    let mut calls = 0u32;
    while start.elapsed() < Duration::from_secs(10) {
        match (case, native) {
            ("record-batch", true) => drop(black_box(plan::record_uploads(&cfg, &input.state, &native_out[n - NEW..]))),
            ("record-batch", false) => drop(black_box(planner.record_uploads(&wcfg, &input.wit_state, &wit_out[n - NEW..]).unwrap())),
            (_, true) => drop(black_box(plan::scan(input.state.clone(), &input.listing, input.archive.as_ref()))),
            (_, false) => drop(black_box(planner.scan(&input.wit_state, &input.wit_listing, input.wit_archive.as_ref()).unwrap())),
        }
        calls += 1;
    }
    println!("{what}: {calls} calls, {:.3} ms per call", start.elapsed().as_secs_f64() * 1e3 / f64::from(calls));
}
