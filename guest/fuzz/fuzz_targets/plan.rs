//! Fuzzes the planner over arbitrary listings and outcomes: it never panics,
//! the watermark never decreases between reconciliations and never covers an
//! LSN that no archived segment holds, a failing segment stays pending, and
//! only segments inside the archived chain are deletable.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use wal_archiver_guest::plan::{self, ArchivedObject, Config, DirEntry, EntryKind, State, UploadReceipt};
use wal_archiver_guest::SegmentName;

#[derive(Debug, Arbitrary)]
enum Name {
    /// Any text at all.
    Raw(String),
    /// A well-formed name, so that the planner has segments to work with.
    Range(u64, u64),
}

#[derive(Debug, Arbitrary)]
struct Entry {
    name: Name,
    kind: u8,
    utf8: bool,
    size: u16,
}

#[derive(Debug, Arbitrary)]
enum Step {
    Archive { pick: u8, size_off: bool, crc_off: bool },
    Fail { pick: u8 },
    Reconcile { keep: Vec<bool> },
}

#[derive(Debug, Arbitrary)]
struct Input {
    entries: Vec<Entry>,
    batch_size: u8,
    steps: Vec<Step>,
}

fn entry(e: &Entry) -> DirEntry {
    let name = match &e.name {
        Name::Raw(s) => s.clone(),
        Name::Range(a, b) => format!("wal-{:016x}-{:016x}.seg", a.min(b), a.max(b)),
    };
    let kind = match e.kind % 8 {
        0 => EntryKind::Dir,
        1 => EntryKind::Symlink,
        2 => EntryKind::Other,
        _ => EntryKind::File,
    };
    DirEntry { name, utf8: e.utf8 || e.kind % 16 != 3, kind, size: u64::from(e.size) }
}

fuzz_target!(|input: Input| {
    let entries: Vec<DirEntry> = input.entries.iter().take(256).map(entry).collect();
    let listing: plan::Listing = entries.iter().collect();
    let config = Config { batch_size: u32::from(input.batch_size), ..Config::default() };
    let mut state = State::default();
    let mut archived: Vec<ArchivedObject> = Vec::new();
    for step in input.steps.iter().take(128) {
        let report = plan::scan(&listing, state.clone());
        for s in &report.pending {
            assert!(SegmentName::parse(&s.name).is_ok());
        }
        state = report.state;
        let tasks = plan::plan_batch(&config, &report.pending);
        assert!(tasks.len() <= (config.batch_size.max(1)) as usize);
        let before = state.last_archived_lsn;
        match step {
            Step::Archive { pick, size_off, crc_off } if !tasks.is_empty() => {
                let task = &tasks[usize::from(*pick) % tasks.len()];
                let receipt = UploadReceipt {
                    read_size: task.segment.size,
                    read_crc32c: 1,
                    stored_size: task.segment.size + u64::from(*size_off),
                    stored_crc32c: Some(1 + u32::from(*crc_off)),
                };
                match plan::record_archived(&state, task, &receipt) {
                    Ok(next) => {
                        assert!(!size_off && !crc_off, "a bad receipt was accepted");
                        archived.push(ArchivedObject { name: task.segment.name.clone(), size: task.segment.size, crc32c: Some(1) });
                        state = next;
                    }
                    Err(_) => state = plan::record_failed(&state, task, "bad receipt"),
                }
                assert!(state.last_archived_lsn >= before, "the watermark went down");
            }
            Step::Fail { pick } if !tasks.is_empty() => {
                let task = &tasks[usize::from(*pick) % tasks.len()];
                state = plan::record_failed(&state, task, "failed");
                assert_eq!(state.last_archived_lsn, before);
            }
            Step::Reconcile { keep } => {
                let seen: Vec<ArchivedObject> = archived
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| keep.get(*i).copied().unwrap_or(true))
                    .map(|(_, o)| o.clone())
                    .collect();
                state = plan::reconcile(&state, &seen);
            }
            _ => {}
        }
        // A failing segment is never skipped: it is pending on the next scan.
        let next = plan::scan(&listing, state.clone());
        for f in &next.state.failing {
            assert!(next.pending.iter().any(|p| p.name == f.name), "failing {} is not pending", f.name);
        }
        if let (Some(start), Some(w)) = (state.chain_start, state.last_archived_lsn) {
            assert!(start <= w);
            // Every LSN from the chain start to the watermark lies in an archived segment.
            let mut lsn = u128::from(start);
            while lsn <= u128::from(w) {
                let covering = archived
                    .iter()
                    .filter_map(|o| SegmentName::parse(&o.name).ok())
                    .filter(|n| u128::from(n.first()) <= lsn && lsn <= u128::from(n.last()))
                    .map(|n| n.last())
                    .max();
                let Some(end) = covering else { panic!("LSN {lsn} is below watermark {w} but in no archived segment") };
                lsn = u128::from(end) + 1;
            }
            let on = Config { delete_after_archive: true, ..config.clone() };
            for d in plan::deletable(&on, &state, &listing) {
                assert!(start <= d.first_lsn && d.last_lsn <= w);
                assert!(!state.failing.iter().any(|f| f.name == d.name), "failing {} is deletable", d.name);
            }
        }
        let _ = plan::rpo_gap(&state, u64::MAX);
    }
});
