//! The host as a plugin runtime: hostile planners are contained, foreign
//! components are refused before anything runs, and `--plugin` and
//! `component --out` work.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use object_store::memory::InMemory;
use wal_archiver::archive::{ArchiveError, Archiver};
use wal_archiver::component::{Limits, PlannerError, PlannerRuntime, EMBEDDED_COMPONENT};
use wal_archiver::state::empty_state;
use wal_archiver::store::Archive;

use crate::util::{assert_exit, config, runtime, stderr, stdout, tokio_rt, Dir};

/// The hostile planner component, built once from `tests/hostile/`.
fn hostile() -> &'static [u8] {
    static WASM: OnceLock<Vec<u8>> = OnceLock::new();
    WASM.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join("hostile");
        let status = std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
            .arg(root.join("tests/hostile/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .status()
            .expect("cannot run cargo to build the hostile planner");
        assert!(status.success(), "cannot build the hostile planner");
        std::fs::read(target.join("wasm32-wasip2/release/wal_archiver_hostile.wasm")).unwrap()
    })
}

fn hostile_runtime(deadline: Duration) -> Arc<PlannerRuntime> {
    let limits = Limits { deadline, ..Limits::default() };
    Arc::new(PlannerRuntime::with_limits(hostile(), "hostile.wasm", limits).unwrap())
}

/// Runs one cycle with `runtime` on a thread, failing the test if it does
/// not come back within `limit` (what an uncontained planner would do).
fn cycle_within(runtime: Arc<PlannerRuntime>, dir: &Dir, prefix: &str, limit: Duration) -> Result<usize, ArchiveError> {
    let rt = tokio_rt();
    let archive = Archive::new(Arc::new(InMemory::new()), prefix, "memory:///hostile");
    let archiver = Archiver::new(runtime, dir.storage(archive, &rt), config(prefix), None);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut state = empty_state();
        let r = archiver.run_once(&mut state, &AtomicBool::new(false)).map(|s| s.archived.len());
        let _ = tx.send(r);
        drop(rt);
    });
    rx.recv_timeout(limit).expect("the planner was not contained: the cycle never came back")
}

/// After a hostile cycle, the same host and directory archive normally.
fn good_cycle_archives(dir: &Dir) {
    let archived = cycle_within(runtime(), dir, "wal", Duration::from_secs(30)).unwrap();
    assert_eq!(archived, 3, "the good planner did not archive the directory");
}

fn dir_with(trigger: &str) -> Dir {
    let dir = Dir::new();
    dir.chain(3, 1000);
    std::fs::write(dir.wal().join(trigger), b"").unwrap();
    dir
}

fn call_error(r: Result<usize, ArchiveError>) -> String {
    match r {
        Err(ArchiveError::Planner(e @ PlannerError::Call { .. })) => e.to_string(),
        other => panic!("expected a failed call, got {other:?}"),
    }
}

#[test]
fn stops_a_planner_that_loops_forever_at_its_deadline() {
    let dir = dir_with("hostile-loop");
    let started = Instant::now();
    let err = call_error(cycle_within(hostile_runtime(Duration::from_millis(200)), &dir, "wal", Duration::from_secs(20)));
    assert!(err.contains("cannot call `scan` in planner component hostile.wasm") && err.contains("deadline of 200ms"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    good_cycle_archives(&dir);
}

#[test]
fn caps_a_planner_that_grows_memory_without_bound() {
    let dir = dir_with("hostile-grow");
    let err = call_error(cycle_within(hostile_runtime(Duration::from_secs(5)), &dir, "wal", Duration::from_secs(30)));
    assert!(err.contains("it trapped") && err.contains("memory allocation"), "{err}");
    // It got no further than the 64 MiB cap.
    let hoarded: u64 = err
        .split("hoarded ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no progress line in {err:?}"));
    assert!(hoarded < 64, "the planner hoarded {hoarded} MiB");
    good_cycle_archives(&dir);
}

#[test]
fn contains_a_planner_that_traps_in_the_middle_of_planning() {
    let dir = dir_with("hostile-trap");
    let err = call_error(cycle_within(hostile_runtime(Duration::from_secs(1)), &dir, "wal", Duration::from_secs(20)));
    assert!(err.contains("it trapped") && err.contains("gives up in the middle of planning"), "{err}");
    good_cycle_archives(&dir);
}

#[test]
fn contains_a_planner_that_overflows_its_stack() {
    let dir = dir_with("hostile-stack");
    let err = call_error(cycle_within(hostile_runtime(Duration::from_secs(1)), &dir, "wal", Duration::from_secs(20)));
    assert!(err.contains("overflowed its 512 KiB stack"), "{err}");
    good_cycle_archives(&dir);
}

#[test]
fn refuses_an_enormous_plan_and_segments_that_were_never_listed() {
    let dir = Dir::new();
    dir.chain(3, 1000);
    let r = cycle_within(hostile_runtime(Duration::from_secs(1)), &dir, "hostile-huge", Duration::from_secs(20));
    let err = r.unwrap_err().to_string();
    assert!(err.contains("made a bad plan: batch ends [200000] for 3 pending segments"), "{err}");
    std::fs::write(dir.wal().join("hostile-invent"), b"").unwrap();
    let err = cycle_within(hostile_runtime(Duration::from_secs(1)), &dir, "wal", Duration::from_secs(20)).unwrap_err().to_string();
    assert!(err.contains("made a bad plan: segment \"wal-0000000000000000-0000000000000000.seg\" (1 bytes) is not a file in the listing"), "{err}");
    // Nothing was marked archived or uploaded by either.
    std::fs::remove_file(dir.wal().join("hostile-invent")).unwrap();
    good_cycle_archives(&dir);
}

#[test]
fn confines_a_planner_that_reaches_outside_the_wal_directory() {
    let dir = Dir::new();
    dir.chain(3, 1000);
    let outside = dir.path().join("outside");
    std::fs::write(&outside, b"outside").unwrap();
    std::os::unix::fs::symlink(&outside, dir.wal().join("link-out")).unwrap();
    let rt = tokio_rt();
    let archive = Archive::open(&dir.archive_url()).unwrap();
    let archiver = Archiver::new(hostile_runtime(Duration::from_secs(5)), dir.storage(archive, &rt), config(""), None);
    let summary = archiver.run_cycle(&mut empty_state()).unwrap();
    assert_eq!(summary.failed.len(), 7, "{:?}", summary.failed);
    for f in &summary.failed {
        let refused = f.last_reason.starts_with("refused:") || f.last_reason.starts_with("not a file:");
        assert!(refused, "{} was not refused: {}", f.name, f.last_reason);
    }
    assert_eq!(std::fs::read(&outside).unwrap(), b"outside");
    assert!(dir.path().join("link-out").symlink_metadata().is_err());
    assert!(dir.wal().join("link-out").symlink_metadata().is_ok());
    assert!(dir.archived_names().is_empty(), "{:?}", dir.archived_names());
    assert!(!dir.path().join("escaped").exists());
    drop(rt);
    good_cycle_archives(&dir);
}

#[test]
fn refuses_a_foreign_component_before_anything_runs() {
    let dir = Dir::new();
    dir.chain(2, 100);
    // Planners of older versions of the WIT: 0.3.0; 0.5.0, whose listings
    // carried kinds and flags as `list<entry-kind>` and `list<bool>`; and
    // 0.6.0, whose `run-cycle` could not report a failed chain start.
    let other_version = |version: &str| {
        wat::parse_str(format!(
            r#"(component
            (core module $m (func (export "f") (result i64) i64.const 0))
            (core instance $i (instantiate $m))
            (func $f (result u64) (canon lift (core func $i "f")))
            (instance $p (export "rpo-gap" (func $f)))
            (export "nodedb:wal-archiver/planner@{version}" (instance $p)))"#
        ))
        .unwrap()
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("notes.wasm", b"not wasm at all".to_vec(), "a file that is not WebAssembly"),
        ("core.wasm", wat::parse_str("(module)").unwrap(), "a core WebAssembly module, not a component"),
        ("empty.wasm", wat::parse_str("(component)").unwrap(), "a component exporting [] and importing []"),
        ("v3.wasm", other_version("0.3.0"), "exporting [nodedb:wal-archiver/planner@0.3.0]"),
        ("v5.wasm", other_version("0.5.0"), "exporting [nodedb:wal-archiver/planner@0.5.0]"),
        ("v6.wasm", other_version("0.6.0"), "exporting [nodedb:wal-archiver/planner@0.6.0]"),
    ];
    for (file, bytes, found) in cases {
        let path = dir.path().join(file);
        std::fs::write(&path, bytes).unwrap();
        let out = dir.archive_once(&["--plugin", path.to_str().unwrap()]);
        assert_exit(&out, 2);
        let err = stderr(&out);
        assert!(err.contains(&format!("cannot use planner component {}", path.display())), "{err}");
        assert!(err.contains("expected a WebAssembly component of world nodedb:wal-archiver/archiver@0.7.0"), "{err}");
        assert!(err.contains(found), "{file}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(dir.archived_names().is_empty(), "{file}: something ran");
    }
}

#[test]
fn writes_the_embedded_component_and_runs_it_as_a_plugin() {
    let dir = Dir::new();
    dir.chain(4, 100);
    let wasm = dir.path().join("planner.wasm");
    let out = dir.cmd(&["component", "--out", wasm.to_str().unwrap()]).output().unwrap();
    assert_exit(&out, 0);
    assert_eq!(std::fs::read(&wasm).unwrap(), EMBEDDED_COMPONENT);
    let out = dir.archive_once(&["--plugin", wasm.to_str().unwrap()]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("archived 4 segments"), "{}", stdout(&out));
}

#[test]
fn takes_the_plugin_deadline_and_memory_from_the_command_line() {
    let dir = dir_with("hostile-loop");
    let wasm = dir.path().join("hostile.wasm");
    std::fs::write(&wasm, hostile()).unwrap();
    let out = dir.archive_once(&["--plugin", wasm.to_str().unwrap(), "--plugin-deadline", "0.3"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("it ran past its deadline of 300ms"), "{}", stderr(&out));
    std::fs::rename(dir.wal().join("hostile-loop"), dir.wal().join("hostile-grow")).unwrap();
    let out = dir.archive_once(&["--plugin", wasm.to_str().unwrap(), "--plugin-memory", "16", "--plugin-deadline", "10"]);
    assert_exit(&out, 2);
    let hoarded = stderr(&out).rsplit("hoarded ").next().and_then(|t| t.split(' ').next()).and_then(|n| n.parse::<u64>().ok());
    assert!(hoarded.is_some_and(|h| h < 16), "{}", stderr(&out));
}

#[test]
fn runs_the_hostile_plugin_from_the_cli_and_fails_that_run_only() {
    let dir = dir_with("hostile-trap");
    let wasm = dir.path().join("hostile.wasm");
    std::fs::write(&wasm, hostile()).unwrap();
    let out = dir.archive_once(&["--plugin", wasm.to_str().unwrap()]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("it trapped"), "{}", stderr(&out));
    // The guest's panic message reached the log.
    assert!(stderr(&out).contains("wal_archiver::plugin") && stderr(&out).contains("gives up"), "{}", stderr(&out));
    assert_exit(&dir.archive_once(&[]), 0);
}

#[test]
fn starts_from_the_compile_cache_the_second_time() {
    let dir = Dir::new();
    dir.chain(2, 100);
    let cache = dir.path().join("cache");
    let run = || {
        let mut cmd = dir.cmd(&["status", "--wal-dir", dir.wal().to_str().unwrap(), "--to", &dir.archive_url()]);
        cmd.env("WAL_ARCHIVER_CACHE_DIR", &cache).env("RUST_LOG", "wal_archiver=debug");
        let out = cmd.output().unwrap();
        assert_exit(&out, 0);
        stderr(&out)
    };
    assert!(run().contains("cache=Some(Compiled)"));
    assert!(run().contains("cache=Some(Hit)"));
    let artifacts: Vec<_> = std::fs::read_dir(&cache).unwrap().filter_map(|e| e.ok()).filter(|e| e.path().extension().is_some_and(|x| x == "cwasm")).collect();
    assert_eq!(artifacts.len(), 1);
    // An artifact someone else put there is not loaded.
    let path = artifacts[0].path();
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let log = run();
    assert!(log.contains("did not verify") && log.contains("cache=Some(Rejected)"), "{log}");
}

fn vectors() -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/testdata/plans.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// A skip reason as the vectors write it: kind[:detail[:detail]].
fn reason_text(r: &wal_archiver::component::wit::SkipReason) -> String {
    use wal_archiver::component::wit::{EntryKind, NameError, SkipReason};
    let kind = |k: &EntryKind| match k {
        EntryKind::File => "file",
        EntryKind::Dir => "dir",
        EntryKind::Symlink => "symlink",
        EntryKind::Other => "other",
    };
    match r {
        SkipReason::NotAFile(k) => format!("not-a-file:{}", kind(k)),
        SkipReason::NotUtf8 => "not-utf8".into(),
        SkipReason::ListedTwice => "listed-twice".into(),
        SkipReason::BadName(NameError::WrongLength(n)) => format!("bad-name:wrong-length:{n}"),
        SkipReason::BadName(e) => format!(
            "bad-name:{}",
            match e {
                NameError::MissingPrefix => "missing-prefix",
                NameError::WrongSuffix => "wrong-suffix",
                NameError::WrongShape => "wrong-shape",
                NameError::NotLowercaseHex => "not-lowercase-hex",
                NameError::FirstAfterLast => "first-after-last",
                NameError::WrongLength(_) => unreachable!(),
            }
        ),
    }
}

/// A break as the vectors write it.
fn break_text(b: &wal_archiver::component::wit::ChainBreak) -> String {
    use wal_archiver::component::wit::ChainBreak;
    match b {
        ChainBreak::Gap(g) => format!("gap:{}:{}", g.from_lsn, g.to_lsn),
        ChainBreak::Overlap(o) => format!("overlap:{}:{}:{}:{}", o.from_lsn, o.to_lsn, o.held_by, o.after),
    }
}

/// Runs one vector through `planner` as the vectors' `about` says, and
/// returns what it got, keyed as `expected` is.
fn run_vector(planner: &mut wal_archiver::component::Planner, c: &serde_json::Value) -> serde_json::Value {
    use serde_json::json;
    use wal_archiver::bindings::{PruneError, RangeError, RestoreError};
    use wal_archiver::component::wit;
    let lsn = |v: &serde_json::Value| v.as_str().map(|s| s.parse::<u64>().unwrap());
    let mut listing = wit::DirListing::default();
    for e in c["listing"].as_array().unwrap() {
        let kind = match e["kind"].as_str().unwrap() {
            "file" => wit::EntryKind::File,
            "dir" => wit::EntryKind::Dir,
            "symlink" => wit::EntryKind::Symlink,
            _ => wit::EntryKind::Other,
        };
        listing.push(e["name"].as_str().unwrap(), e["utf8"].as_bool().unwrap(), kind, e["size"].as_u64().unwrap());
    }
    let archive = c.get("archive").map(|a| {
        let mut out = wit::ArchiveListing::default();
        for o in a.as_array().unwrap() {
            let crc = o["crc32c"].as_str().map(|h| u32::from_str_radix(h, 16).unwrap());
            out.push(o["name"].as_str().unwrap(), true, wit::EntryKind::File, o["size"].as_u64().unwrap(), crc);
        }
        out.chain_start = lsn(&c["archive_chain_start"]);
        out.pruned_below = lsn(&c["archive_pruned_below"]);
        out
    });
    let mut cfg = config(c["config"]["prefix"].as_str().unwrap());
    cfg.batch_size = c["config"]["batch_size"].as_u64().unwrap() as u32;
    cfg.delete_after_archive = c["config"]["delete_after_archive"].as_bool().unwrap_or(false);
    // An upload's outcome is named by its object: with zstd, `{name}.zst`.
    let suffix = match c["config"]["compression"].as_str() {
        Some("zstd") => {
            cfg.compression = wit::Compression::Zstd;
            ".zst"
        }
        _ => "",
    };
    let names = |l: &wit::SegmentList| l.iter().map(|(n, _)| n.to_owned()).collect::<Vec<_>>();
    let report = planner.scan(&empty_state(), &listing, archive.as_ref()).unwrap();
    let batches = planner.plan_batches(&cfg, &report.pending).unwrap();
    let mut got = json!({
        "pending": names(&report.pending),
        "to_confirm": names(&report.to_confirm),
        "pruned": report.pruned,
        "skipped": report.skipped.iter().map(|s| json!([s.name, reason_text(&s.reason)])).collect::<Vec<_>>(),
        "breaks": report.breaks.iter().map(break_text).collect::<Vec<_>>(),
        "chain_start": report.state.chain_start.map(|l| l.to_string()),
        "batches": batches,
    });
    // Outcomes, in the order the vectors give.
    let fail: Vec<&str> = c.get("fail").map_or(Vec::new(), |f| f.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect());
    let receipt = |size: u64, crc: u32, existed: bool| wit::UploadReceipt { read_size: size, read_crc32c: crc, stored_size: size, stored_crc32c: Some(crc), existed };
    let mut outcomes = Vec::new();
    for (name, size) in report.to_confirm.iter() {
        let crc = archive.as_ref().and_then(|a| a.entries().find(|(e, _)| e.name == name).and_then(|(_, c)| c)).unwrap();
        outcomes.push(wit::UploadOutcome { name: name.into(), size, receipt: Ok(receipt(size, crc, true)) });
    }
    for (name, size) in report.pending.iter() {
        let r = if fail.contains(&name) { Err(wit::StorageError::Io("injected".into())) } else { Ok(receipt(size, 7, false)) };
        outcomes.push(wit::UploadOutcome { name: format!("{name}{suffix}"), size, receipt: r });
    }
    for x in c.get("record_extra").and_then(|v| v.as_array()).into_iter().flatten() {
        let size = x["size"].as_u64().unwrap();
        outcomes.push(wit::UploadOutcome { name: x["name"].as_str().unwrap().into(), size, receipt: Ok(receipt(size, 7, false)) });
    }
    let recorded = planner.record_uploads(&cfg, &report.state, &outcomes).unwrap();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    got["recorded"] = json!({
        "watermark": recorded.state.last_archived_lsn.map(|l| l.to_string()),
        "archived": sorted(recorded.archived.clone()),
        "failed": sorted(recorded.failed.iter().map(|f| f.name.clone()).collect()),
        "refused": recorded.refused,
        "record_chain_start": recorded.record_chain_start.map(|l| l.to_string()),
    });
    let mut on = cfg.clone();
    on.delete_after_archive = true;
    got["deletable"] = json!(names(&planner.deletable(&on, &recorded.state, &listing).unwrap()));
    let archive = archive.unwrap_or_default();
    if let Some(v) = c.get("verify") {
        got["verify"] = match planner.verify_plan(&archive, lsn(&v["from"]), lsn(&v["until"])).unwrap() {
            Ok(r) => json!({"breaks": r.breaks.iter().map(break_text).collect::<Vec<_>>(), "off_chain": r.off_chain}),
            Err(RangeError::Empty) => json!({"error": "empty"}),
            Err(RangeError::EmptyRange) => json!({"error": "empty-range"}),
            Err(RangeError::BeyondEnd(l)) => json!({"error": format!("beyond-end:{l}")}),
        };
    }
    if let Some(r) = c.get("restore") {
        got["restore"] = match planner.restore_plan(&archive, lsn(&r["from"]), lsn(&r["until"]).unwrap()).unwrap() {
            Ok(chain) => json!({"chain": names(&chain)}),
            Err(RestoreError::Broken(b)) => json!({"break": break_text(&b)}),
            Err(RestoreError::Range(e)) => json!({"range": match e {
                RangeError::Empty => "empty".to_owned(),
                RangeError::EmptyRange => "empty-range".to_owned(),
                RangeError::BeyondEnd(l) => format!("beyond-end:{l}"),
            }}),
        };
    }
    if let Some(p) = c.get("prune") {
        let results: Vec<serde_json::Value> = p
            .as_array()
            .unwrap()
            .iter()
            .map(|x| match planner.prune_plan(&archive, lsn(&x["before"]).unwrap()).unwrap() {
                Ok(o) => json!({"segments": names(&o.segments), "chain_start": o.chain_start.to_string(), "pruned_below": o.pruned_below.to_string()}),
                Err(PruneError::NoChain) => json!({"error": "no-chain"}),
                Err(PruneError::AboveWatermark(w)) => json!({"error": format!("above-watermark:{w}")}),
            })
            .collect();
        got["prune"] = json!(results);
    }
    got
}

#[test]
fn plans_the_shared_vectors_as_expected_in_the_native_host() {
    let doc = vectors();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 14);
    for c in cases {
        let mut planner = runtime().session(None).unwrap();
        let got = run_vector(&mut planner, c);
        for (key, want) in c["expected"].as_object().unwrap() {
            assert_eq!(&got[key], want, "{}: {key}", c["name"]);
        }
    }
}

/// Runs one of the other hosts (`program` with `args`, then the component
/// and, unless `vectors` is false, the shared vectors) and checks that it
/// passed every case: the vectors and `extra` cases of its own.
fn run_host(program: &str, args: &[&str], vectors: bool, extra: usize) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("planner.wasm");
    std::fs::write(&wasm, EMBEDDED_COMPONENT).unwrap();
    let mut cmd = std::process::Command::new(program);
    cmd.args(args.iter().map(|a| if a.starts_with("examples/") { root.join(a).into_os_string() } else { (*a).into() }));
    cmd.arg(&wasm);
    if vectors {
        cmd.arg(root.join("tests/testdata/plans.json"));
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert_exit(&out, 0);
    let text = stdout(&out);
    if vectors {
        let cases = vectors_count() + extra;
        assert!(text.contains(&format!("{cases} passed, 0 failed")), "{text}");
    }
    text
}

fn vectors_count() -> usize {
    vectors()["cases"].as_array().unwrap().len()
}

fn js_installed() {
    let js = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/js/node_modules");
    assert!(js.exists(), "the JavaScript hosts are not installed: run `npm ci` in examples/js");
}

/// The same component in a second host: Node.js, through jco, with the
/// storage imports written in JavaScript, gets the same plans.
#[test]
fn runs_in_node_through_jco_with_the_same_plans() {
    js_installed();
    run_host("node", &["examples/js/node/vectors.mjs"], true, 0);
}

/// Whole cycles (`run-cycle`) through JavaScript storage imports: deletion,
/// a lost state, a conflict, an unrecorded object, a growing file, a prune,
/// a chain start the store refuses.
#[test]
fn runs_whole_cycles_in_node_through_javascript_storage() {
    js_installed();
    let text = run_host("node", &["examples/js/node/cycle.mjs"], false, 0);
    assert!(text.contains("7 passed, 0 failed"), "{text}");
}

/// The component under Deno, with the narrowest permissions it runs with.
#[test]
fn runs_in_deno_with_the_same_plans() {
    js_installed();
    run_host("bash", &["examples/js/deno/run.sh"], true, 0);
}

/// The component in Python through wasmtime-py, with storage imports of
/// its own over a real directory: the vectors, then whole cycles.
#[test]
fn runs_in_python_through_wasmtime_py_with_the_same_plans() {
    // The vectors and six whole cycles (examples/python/cycle.py).
    run_host("python3", &["examples/python/run.py"], true, 6);
}

/// The component in a Worker served by Cloudflare's workerd on 127.0.0.1.
#[test]
fn runs_in_a_workerd_worker_with_the_same_plans() {
    js_installed();
    run_host("node", &["examples/js/workerd/check.mjs"], true, 0);
}

/// The release component stays within its budget, and imports nothing but
/// the storage interface: no WASI, so a host has nothing else to grant it.
#[test]
fn the_embedded_component_is_small_and_imports_only_storage() {
    assert!(EMBEDDED_COMPONENT.len() <= 128_000, "the component is {} bytes", EMBEDDED_COMPONENT.len());
    let engine = wasmtime::Engine::default();
    let component = wasmtime::component::Component::new(&engine, EMBEDDED_COMPONENT).unwrap();
    let ty = component.component_type();
    let mut imports: Vec<&str> = ty.imports(&engine).map(|(name, _)| name).collect();
    imports.sort();
    assert_eq!(imports, ["nodedb:wal-archiver/storage@0.7.0", "nodedb:wal-archiver/types@0.7.0"]);
    let exports: Vec<&str> = ty.exports(&engine).map(|(name, _)| name).collect();
    assert_eq!(exports, ["nodedb:wal-archiver/planner@0.7.0"]);
}
