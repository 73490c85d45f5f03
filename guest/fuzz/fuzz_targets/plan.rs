//! Fuzzes the planner over arbitrary listings, archives and outcomes: it
//! never panics, on well-formed input or on packed lists that disagree; a
//! name is pending once; the watermark never decreases unless a conflict
//! took a segment out, and every LSN below it is held by a chain of
//! archived segments from the chain start; only segments archived under
//! their own key, at or below the watermark, not failing and not in
//! conflict are deletable; and a restore chain is an exact chain.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use wal_archiver_guest::packed::{ArchiveListing, DirEntry, EntryKind, Listing};
use wal_archiver_guest::plan::{self, Config, Conflict, State, StorageError, UploadOutcome, UploadReceipt};
use wal_archiver_guest::{restore, SegmentName};

#[derive(Debug, Arbitrary)]
enum Name {
    /// Any text at all.
    Raw(String),
    /// A well-formed name, so that the planner has segments to work with.
    Range(u8, u8),
}

#[derive(Debug, Arbitrary)]
struct Entry {
    name: Name,
    kind: u8,
    utf8: bool,
    size: u8,
}

#[derive(Debug, Arbitrary)]
enum Outcome {
    Ok { size_off: bool, crc_off: bool, unverified: bool },
    Failed,
    Conflict,
}

#[derive(Debug, Arbitrary)]
enum Step {
    /// Upload some pending segments, each with the outcome given.
    Upload(Vec<(u8, Outcome)>),
    /// Scan with a listing of the archive holding what was archived (some
    /// of it hidden, as a listing can miss objects).
    Reconcile { hide: Vec<bool>, chain_start: bool },
    /// Packed lists whose fields disagree.
    Garbage { ends: Vec<u32>, sizes: Vec<u64>, flags: Vec<u8>, text: String },
}

#[derive(Debug, Arbitrary)]
struct Input {
    entries: Vec<Entry>,
    batch_size: u8,
    batch_bytes: u16,
    verify: bool,
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

fn lsns(name: &str) -> (u64, u64) {
    let n = SegmentName::parse(name).unwrap();
    (n.first(), n.last())
}

/// True when a chain of `archived` segments from `start` reaches `w`.
fn chain_reaches(archived: &[(u64, u64)], start: u64, w: u64) -> bool {
    let mut reachable = vec![u128::from(start)];
    let mut i = 0;
    while i < reachable.len() {
        let p = reachable[i];
        for &(f, l) in archived {
            let end = u128::from(l) + 1;
            if u128::from(f) == p && !reachable.contains(&end) {
                reachable.push(end);
            }
        }
        i += 1;
    }
    reachable.contains(&(u128::from(w) + 1))
}

fuzz_target!(|input: Input| {
    let entries: Vec<DirEntry> = input.entries.iter().take(64).map(entry).collect();
    let listing: Listing = entries.iter().collect();
    let config = Config {
        batch_size: u32::from(input.batch_size),
        batch_bytes: u64::from(input.batch_bytes),
        verify_checksums: input.verify,
        delete_after_archive: true,
        ..Config::default()
    };
    let mut state = State::default();
    // What the archive holds: names and their (size, crc).
    let mut objects: Vec<(String, u64, u32)> = Vec::new();
    let mut recorded_start = None;
    for step in input.steps.iter().take(32) {
        let mut archive = None;
        if let Step::Reconcile { hide, chain_start } = step {
            let mut a = ArchiveListing::default();
            for (i, (name, size, crc)) in objects.iter().enumerate() {
                if !hide.get(i).copied().unwrap_or(false) {
                    a.push(&DirEntry { name: name.clone(), utf8: true, kind: EntryKind::File, size: *size }, Some(*crc));
                }
            }
            a.chain_start = if *chain_start { recorded_start } else { None };
            archive = Some(a);
        }
        if let Step::Garbage { ends, sizes, flags, text } = step {
            let g = Listing {
                names: text.clone(),
                ends: ends.clone(),
                sizes: sizes.clone(),
                // Any byte: kinds and flags past their codes included.
                kinds: flags.iter().map(|f| f.rotate_left(1)).collect(),
                utf8: flags.clone(),
            };
            let _ = plan::scan(state.clone(), &g, None);
            let _ = plan::deletable(&config, &state, &g);
            let a = ArchiveListing {
                names: text.clone(),
                ends: ends.clone(),
                sizes: sizes.clone(),
                kinds: g.kinds.clone(),
                utf8: flags.clone(),
                crc32cs: ends.clone(),
                recorded: flags.clone(),
                chain_start: sizes.first().copied(),
                pruned_below: sizes.last().copied(),
            };
            let _ = restore::verify_plan(&a, sizes.first().copied(), sizes.last().copied());
            let _ = restore::restore_plan(&a, None, sizes.last().copied().unwrap_or(0));
            let _ = restore::prune_plan(&a, sizes.first().copied().unwrap_or(0));
            continue;
        }
        let report = plan::scan(state.clone(), &listing, archive.as_ref());
        let mut names: Vec<&str> = report.pending.iter().map(|(n, _)| n).chain(report.to_confirm.iter().map(|(n, _)| n)).collect();
        for n in &names {
            assert!(SegmentName::parse(n).is_ok(), "{n:?} is not a segment name");
        }
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "a name is pending twice");
        let ends = plan::plan_batches(&config, &report.pending);
        let mut last = 0;
        for &e in &ends {
            assert!(e > last && e - last <= config.batch_size.max(1));
            last = e;
        }
        assert_eq!(last as usize, report.pending.len());
        let before = report.state.last_archived_lsn;
        state = report.state;

        if let Step::Upload(picks) = step {
            let queue: Vec<(String, u64)> = report.to_confirm.iter().chain(report.pending.iter()).map(|(n, s)| (n.to_owned(), s)).collect();
            if queue.is_empty() {
                continue;
            }
            let mut outcomes = Vec::new();
            let mut conflicted = false;
            for (pick, outcome) in picks.iter().take(16) {
                let (name, size) = &queue[usize::from(*pick) % queue.len()];
                let result = match outcome {
                    Outcome::Ok { size_off, crc_off, unverified } => Ok(UploadReceipt {
                        read_size: *size,
                        read_crc32c: 1,
                        stored_size: size + u64::from(*size_off),
                        stored_crc32c: if *unverified { None } else { Some(1 + u32::from(*crc_off)) },
                        existed: false,
                    }),
                    Outcome::Failed => Err(StorageError::Io("failed".into())),
                    Outcome::Conflict => {
                        conflicted = true;
                        Err(StorageError::Conflict(Conflict { name: name.clone(), local_size: *size, local_crc32c: 1, archived_size: 0, archived_crc32c: 2 }))
                    }
                };
                outcomes.push(UploadOutcome { name: name.clone(), size: *size, result });
            }
            let r = plan::record_uploads(&config, &state, &outcomes);
            for name in &r.archived {
                let o = outcomes.iter().rev().find(|o| o.name == *name).unwrap();
                let Ok(receipt) = &o.result else { panic!("{name} archived on a failure") };
                assert_eq!(receipt.stored_size, receipt.read_size, "{name} archived with a size that differs");
                assert!(receipt.stored_crc32c.is_none_or(|c| c == receipt.read_crc32c), "{name} archived on a checksum mismatch");
                assert!(config.verify_checksums.then_some(()).is_none() || receipt.stored_crc32c.is_some());
                if !objects.iter().any(|(n, _, _)| n == name) {
                    objects.push((name.clone(), o.size, 1));
                }
            }
            if !conflicted {
                assert!(r.state.last_archived_lsn >= before, "the watermark went down");
            }
            if r.record_chain_start.is_some() {
                recorded_start = r.state.chain_start;
            }
            state = r.state;
        }

        // Every LSN from the chain start to the watermark lies on a chain of
        // segments archived under their own keys.
        let archived: Vec<(u64, u64)> = state.archived.names().into_iter().map(lsns).collect();
        if let (Some(start), Some(w)) = (state.chain_start, state.last_archived_lsn) {
            assert!(start <= w);
            assert!(chain_reaches(&archived, start, w), "no archived chain from {start} reaches the watermark {w}");
        }
        for (name, size) in plan::deletable(&config, &state, &listing).iter() {
            let (first, last) = lsns(name);
            assert!(archived.contains(&(first, last)), "{name} is deletable but not archived under its key");
            assert!(Some(last) <= state.last_archived_lsn);
            assert!(!state.failing.iter().any(|f| f.name == name), "failing {name} is deletable");
            assert!(!state.conflicts.iter().any(|c| c.name == name), "{name} in conflict is deletable");
            let _ = size;
        }
        // A restore chain over the archive is exact.
        let mut a = ArchiveListing::default();
        for (name, size, crc) in &objects {
            a.push(&DirEntry { name: name.clone(), utf8: true, kind: EntryKind::File, size: *size }, Some(*crc));
        }
        if let Some(w) = state.last_archived_lsn
            && let Ok(chain) = restore::restore_plan(&a, None, w)
        {
            let spans: Vec<(u64, u64)> = chain.iter().map(|(n, _)| lsns(n)).collect();
            for pair in spans.windows(2) {
                assert_eq!(u128::from(pair[1].0), u128::from(pair[0].1) + 1, "the restore chain is not exact: {spans:?}");
            }
        }
        let _ = plan::rpo_gap(&state, u64::MAX);
    }
});
