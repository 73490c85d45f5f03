//! The planner's cost (issue goals P3 and P4): the same Rust code called
//! natively and as the component in wasmtime, side by side in one run, and
//! the host's start and per-cycle instantiation.
//!
//! Run: `cargo bench -p wal-archiver --bench planner`. Criterion measures
//! each case; the table at the end gives the medians of the samples it
//! took and the ratio of the component to native code. The component's
//! time is the whole call: lowering the listing into the guest, the guest's
//! work, and lifting the report back.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use wal_archiver::cache::CompileCache;
use wal_archiver::component::{wit, Limits, PlannerRuntime, EMBEDDED_COMPONENT};
use wal_archiver_guest::plan;

/// Segment `i` holds LSNs `i * SPAN + 1 ..= (i + 1) * SPAN`.
const SPAN: u64 = 1_000;
const SEGMENT_BYTES: u64 = 16 << 20;
/// How many of the listed segments are new in the steady case.
const NEW: usize = 16;

/// Seconds per call of every sample criterion took, by case.
#[derive(Default)]
struct Samples(Mutex<BTreeMap<String, Vec<f64>>>);

impl Samples {
    /// Times `f` as criterion asks and keeps each sample's time per call.
    fn run(&self, c: &mut Criterion, group: &str, case: &str, n: usize, mut f: impl FnMut()) {
        let key = format!("{group}/{case}/{n}");
        c.benchmark_group(group).bench_with_input(BenchmarkId::new(case, n), &n, |b, _| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    f();
                }
                let d = t.elapsed();
                self.0.lock().unwrap().entry(key.clone()).or_default().push(d.as_secs_f64() / iters as f64);
                d
            })
        });
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

fn name(i: usize) -> String {
    let i = i as u64;
    wal_archiver_guest::format_segment_name(i * SPAN + 1, (i + 1) * SPAN).unwrap()
}

fn native_segment(i: usize) -> plan::Segment {
    let i64 = i as u64;
    plan::Segment { name: name(i), first_lsn: i64 * SPAN + 1, last_lsn: (i64 + 1) * SPAN, size: SEGMENT_BYTES }
}

fn wit_segment(s: &plan::Segment) -> wit::Segment {
    wit::Segment { name: s.name.clone(), first_lsn: s.first_lsn, last_lsn: s.last_lsn, size: s.size }
}

/// The planner's inputs for one case, in both type systems.
struct Case {
    listing: plan::Listing,
    state: plan::State,
    wit_listing: wit::DirListing,
    wit_state: wit::ArchiverState,
}

impl Case {
    fn new(n: usize, state: plan::State) -> Self {
        let entries: Vec<plan::DirEntry> = (0..n)
            .map(|i| plan::DirEntry { name: name(i), utf8: true, kind: plan::EntryKind::File, size: SEGMENT_BYTES })
            .collect();
        let listing: plan::Listing = entries.iter().collect();
        let mut wit_listing = wit::DirListing::default();
        for e in &entries {
            wit_listing.push(&e.name, true, wit::EntryKind::File, e.size);
        }
        let wit_state = wit::ArchiverState {
            last_archived_lsn: state.last_archived_lsn,
            chain_start: state.chain_start,
            segments_archived: state.segments_archived,
            bytes_archived: state.bytes_archived,
            failures: state.failures,
            archived_above: state.archived_above.iter().map(wit_segment).collect(),
            failing: state
                .failing
                .iter()
                .map(|f| wit::SegmentFailure { name: f.name.clone(), attempts: f.attempts, last_reason: f.last_reason.clone() })
                .collect(),
        };
        Self { listing, state, wit_listing, wit_state }
    }

    /// N listed, all but the newest few archived below the watermark: a
    /// directory that keeps its segments.
    fn steady(n: usize) -> Self {
        let archived = n - NEW;
        Self::new(
            n,
            plan::State {
                last_archived_lsn: Some(archived as u64 * SPAN),
                chain_start: Some(1),
                segments_archived: archived as u64,
                bytes_archived: archived as u64 * SEGMENT_BYTES,
                ..plan::State::default()
            },
        )
    }

    /// N listed, nothing archived yet: the first run over a backlog.
    fn backlog(n: usize) -> Self {
        Self::new(n, plan::State::default())
    }

    /// N listed, the first one failing and every other archived above it:
    /// the most the state can carry.
    fn hole(n: usize) -> Self {
        Self::new(
            n,
            plan::State {
                last_archived_lsn: None,
                chain_start: Some(1),
                segments_archived: n as u64 - 1,
                bytes_archived: (n as u64 - 1) * SEGMENT_BYTES,
                failures: 3,
                archived_above: (1..n).map(native_segment).collect(),
                failing: vec![plan::SegmentFailure { name: name(0), attempts: 3, last_reason: "cannot upload: 503".into() }],
            },
        )
    }
}

/// N archived objects, each with its checksum marker.
fn archive(n: usize) -> (Vec<plan::ArchivedObject>, Vec<wit::ArchivedObject>) {
    let native: Vec<plan::ArchivedObject> =
        (0..n).map(|i| plan::ArchivedObject { name: name(i), size: SEGMENT_BYTES, crc32c: Some(i as u32) }).collect();
    let wit = native
        .iter()
        .map(|o| wit::ArchivedObject { name: o.name.clone(), size: o.size, crc32c: o.crc32c })
        .collect();
    (native, wit)
}

fn config() -> wit::ArchiverConfig {
    wit::ArchiverConfig {
        prefix: String::new(),
        batch_size: 16,
        verify_checksums: true,
        delete_after_archive: true,
        retry_base_ms: 1000,
        retry_max_ms: 60_000,
    }
}

const SIZES: [usize; 2] = [10_000, 100_000];
const P3_GOAL_RATIO: f64 = 1.2;
const P3_GOAL_100K: Duration = Duration::from_millis(20);
const P4_GOAL_START: Duration = Duration::from_millis(5);
const P4_GOAL_INSTANTIATE: Duration = Duration::from_micros(20);

fn main() {
    let sample_size = 20;
    let mut c = Criterion::default()
        .sample_size(sample_size)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
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

    let mut rows: Vec<(String, usize)> = Vec::new();
    let mut crossings = Vec::new();
    for &n in &SIZES {
        for (case, input) in [("steady", Case::steady(n)), ("backlog", Case::backlog(n)), ("hole", Case::hole(n))] {
            // Both sides must agree before either is timed.
            let native = plan::scan(&input.listing, input.state.clone());
            let wasm = planner.scan(&input.wit_listing, &input.wit_state).unwrap();
            assert_eq!(native.pending.len(), wasm.pending.len(), "{case}/{n}: pending");
            assert_eq!(native.state.last_archived_lsn, wasm.state.last_archived_lsn, "{case}/{n}: watermark");

            let group = format!("scan-{case}");
            samples.run(&mut c, &group, "native", n, || {
                black_box(plan::scan(black_box(&input.listing), black_box(input.state.clone())));
            });
            samples.run(&mut c, &group, "component", n, || {
                black_box(planner.scan(black_box(&input.wit_listing), black_box(&input.wit_state)).unwrap());
            });
            rows.push((group, n));
        }
        // The crossing alone: `deletable` with deletion off returns at once,
        // so this is lowering the listing and the state, and nothing else.
        let input = Case::steady(n);
        let off = wit::ArchiverConfig { delete_after_archive: false, ..config() };
        samples.run(&mut c, "crossing", "component", n, || {
            black_box(planner.deletable(&off, &input.wit_state, black_box(&input.wit_listing)).unwrap());
        });
        crossings.push(n);
        let (native, wit) = archive(n);
        let empty = Case::backlog(0);
        samples.run(&mut c, "reconcile", "native", n, || {
            black_box(plan::reconcile(black_box(&empty.state), black_box(&native)));
        });
        samples.run(&mut c, "reconcile", "component", n, || {
            black_box(planner.reconcile(black_box(&empty.wit_state), black_box(&wit)).unwrap());
        });
        rows.push(("reconcile".into(), n));
    }

    // P4: a host start with the compiled component in the cache, beside a
    // start that compiles it; and a fresh instance, as each cycle makes.
    samples.run(&mut c, "start", "cached", 1, || {
        black_box(PlannerRuntime::load(&bytes, "(bench)", Limits::default(), Some(&cache)).unwrap());
    });
    samples.run(&mut c, "start", "compiling", 1, || {
        black_box(PlannerRuntime::load(&bytes, "(bench)", Limits::default(), None).unwrap());
    });
    samples.run(&mut c, "instantiate", "session", 1, || {
        black_box(runtime.session(None).unwrap());
    });
    let config = config();
    samples.run(&mut c, "instantiate", "call", 1, || {
        black_box(planner.retry_delay(&config, 3, 7).unwrap());
    });
    c.final_summary();

    let ms = |s: f64| format!("{:.3} ms", s * 1e3);
    let us = |s: f64| format!("{:.2} µs", s * 1e6);
    let get = |key: String| samples.median(&key, sample_size).unwrap_or(f64::NAN);
    println!();
    println!("P3: the planner over N listed names, medians of {sample_size} samples");
    println!("{:<16} {:>7} {:>12} {:>12} {:>7}", "case", "N", "native", "component", "ratio");
    let mut p3_met = true;
    for (group, n) in &rows {
        let native = get(format!("{group}/native/{n}"));
        let wasm = get(format!("{group}/component/{n}"));
        let ratio = wasm / native;
        p3_met &= ratio <= P3_GOAL_RATIO && (*n < 100_000 || wasm <= P3_GOAL_100K.as_secs_f64());
        println!("{group:<16} {n:>7} {:>12} {:>12} {ratio:>7.2}", ms(native), ms(wasm));
    }
    println!(
        "goal: component <= {P3_GOAL_RATIO} x native and <= {P3_GOAL_100K:?} at 100k: {}",
        if p3_met { "met" } else { "NOT met" }
    );
    for n in &crossings {
        let crossing = get(format!("crossing/component/{n}"));
        let scan = get(format!("scan-steady/component/{n}"));
        println!(
            "the crossing alone (listing and state lowered, nothing planned), N = {n}: {} ({:.0} % of scan-steady)",
            ms(crossing),
            100.0 * crossing / scan
        );
    }

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
