//! A hostile planner: it implements the `nodedb:wal-archiver` world, and
//! misbehaves in the way the listing (for `scan`) or the prefix (for
//! `plan-batch` and `run-cycle`) names: it loops forever, grows memory
//! without bound, traps, returns an enormous plan, or asks the storage
//! imports for names outside the WAL directory.

wit_bindgen::generate!({ path: "../../wit", world: "archiver" });

use exports::nodedb::wal_archiver::planner::{
    CycleReport, Guest, PruneError, PruneOrder, RangeError, RecordReport, RestoreError, ScanReport, VerifyReport,
};
use nodedb::wal_archiver::storage;
use nodedb::wal_archiver::types::*;

struct Hostile;

export!(Hostile);

/// The names of a packed listing (this planner trusts its host's lists).
fn names(listing: &DirListing) -> impl Iterator<Item = &str> {
    let mut start = 0;
    listing.ends.iter().map(move |&end| {
        let name = listing.names.get(start..end as usize).unwrap_or("");
        start = end as usize;
        name
    })
}

fn empty_list() -> SegmentList {
    SegmentList { names: String::new(), ends: Vec::new(), sizes: Vec::new() }
}

fn push(list: &mut SegmentList, name: &str) {
    list.names.push_str(name);
    list.ends.push(list.names.len() as u32);
    list.sizes.push(1);
}

impl Guest for Hostile {
    fn parse_segment_name(_name: String) -> Result<SegmentName, NameError> {
        Err(NameError::WrongShape)
    }

    fn format_segment_name(_first: u64, _last: u64) -> Result<String, NameError> {
        Err(NameError::WrongShape)
    }

    fn retry_delay(_config: ArchiverConfig, _attempts: u32, _random: u64) -> u64 {
        1
    }

    fn scan(state: ArchiverState, listing: DirListing, _archive: Option<ArchiveListing>) -> ScanReport {
        let mut pending = empty_list();
        for name in names(&listing) {
            match name {
                "hostile-loop" => {
                    let mut x = 0u64;
                    loop {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                }
                "hostile-grow" => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(vec![1u8; 1 << 20]);
                        std::hint::black_box(&hoard);
                        if hoard.len() % 8 == 0 {
                            eprintln!("hoarded {} MiB", hoard.len());
                        }
                    }
                }
                "hostile-trap" => panic!("the hostile planner gives up in the middle of planning"),
                "hostile-stack" => {
                    #[allow(unconditional_recursion)]
                    fn deeper(n: u64) -> u64 {
                        std::hint::black_box(deeper(n + 1)) + 1
                    }
                    std::hint::black_box(deeper(0));
                }
                "hostile-invent" => {
                    // Segments that were never listed.
                    for i in 0..100_000u64 {
                        push(&mut pending, &format!("wal-{i:016x}-{i:016x}.seg"));
                    }
                }
                name if name.starts_with("wal-") => push(&mut pending, name),
                _ => {}
            }
        }
        ScanReport {
            state,
            pending,
            to_confirm: empty_list(),
            pruned: Vec::new(),
            skipped: Vec::new(),
            strays: Vec::new(),
            unverified: Vec::new(),
            breaks: Vec::new(),
            off_chain: Vec::new(),
            conflicts: Vec::new(),
            record_chain_start: None,
        }
    }

    fn plan_batches(config: ArchiverConfig, pending: SegmentList) -> Vec<u32> {
        if config.prefix == "hostile-huge" {
            // An enormous plan: one batch holding everything two hundred thousand times over.
            return vec![200_000];
        }
        (1..=pending.ends.len() as u32).collect()
    }

    fn record_uploads(_config: ArchiverConfig, state: ArchiverState, _outcomes: Vec<UploadOutcome>) -> RecordReport {
        RecordReport { state, archived: Vec::new(), failed: Vec::new(), conflicts: Vec::new(), refused: Vec::new(), record_chain_start: None }
    }

    fn deletable(_config: ArchiverConfig, _state: ArchiverState, _listing: DirListing) -> SegmentList {
        empty_list()
    }

    fn verify_plan(_archive: ArchiveListing, _from: Option<u64>, _until: Option<u64>) -> Result<VerifyReport, RangeError> {
        Err(RangeError::Empty)
    }

    fn restore_plan(_archive: ArchiveListing, _from: Option<u64>, _until: u64) -> Result<SegmentList, RestoreError> {
        Err(RestoreError::Range(RangeError::Empty))
    }

    fn prune_plan(_archive: ArchiveListing, _before: u64) -> Result<PruneOrder, PruneError> {
        Err(PruneError::NoChain)
    }

    fn rpo_gap(_state: ArchiverState, current: u64) -> u64 {
        current
    }

    /// Asks the storage imports for what a planner must never reach, and
    /// reports each answer as a failure, so the test can read them.
    fn run_cycle(config: ArchiverConfig, state: ArchiverState) -> Result<CycleReport, StorageError> {
        let mut failed = Vec::new();
        let mut note = |what: String, r: Result<(), StorageError>| {
            let reason = match r {
                Ok(()) => "ALLOWED".to_owned(),
                Err(StorageError::Refused(m)) => format!("refused: {m}"),
                Err(StorageError::NotFound(m)) => format!("not found: {m}"),
                Err(StorageError::NotAFile(m)) => format!("not a file: {m}"),
                Err(StorageError::Changed(m)) => format!("changed: {m}"),
                Err(StorageError::Conflict(c)) => format!("conflict: {}", c.name),
                Err(StorageError::Io(m)) => format!("io: {m}"),
            };
            failed.push(SegmentFailure { name: what, attempts: 1, last_reason: reason });
        };
        let listing = storage::list_wal_dir()?;
        let link = names(&listing).find(|n| n.starts_with("link-")).unwrap_or("link-missing").to_owned();
        for name in ["../outside", "/etc/passwd", link.as_str()] {
            let key = if config.prefix.is_empty() { name.to_owned() } else { format!("{}/{name}", config.prefix) };
            note(format!("upload {name}"), storage::upload(name, &key, 7, true).map(|_| ()));
            note(format!("delete {name}"), storage::delete_segment(name, &key));
        }
        // A real segment to a key outside the prefix.
        if let Some(seg) = names(&listing).find(|n| n.starts_with("wal-")) {
            note(format!("upload {seg} to ../escaped"), storage::upload(seg, "../escaped", 1000, true).map(|_| ()));
        }
        Ok(CycleReport {
            state,
            archived: Vec::new(),
            failed,
            conflicts: Vec::new(),
            deleted: Vec::new(),
            not_deleted: Vec::new(),
            skipped: Vec::new(),
            breaks: Vec::new(),
            chain_start_not_recorded: None,
        })
    }
}
