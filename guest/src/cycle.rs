//! One whole archive cycle driven through a [`Storage`]: list, scan, compare,
//! upload every batch, record, delete. The component exports it as
//! `run-cycle` so that a plugin host needs nothing but the storage imports.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::chain::Break;
use crate::name::segment_part;
use crate::packed::{ArchiveListing, Listing};
use crate::plan::{self, Config, Conflict, SegmentFailure, Skipped, State, StorageError, UploadOutcome, UploadReceipt};
use crate::Lsn;

/// What the planner needs from its host.
pub trait Storage {
    fn list_wal_dir(&mut self) -> Result<Listing, StorageError>;
    fn list_archive(&mut self) -> Result<ArchiveListing, StorageError>;
    fn upload(&mut self, name: &str, key: &str, size: u64, verify: bool) -> Result<UploadReceipt, StorageError>;
    fn check_archived(&mut self, name: &str, key: &str, size: u64) -> Result<UploadReceipt, StorageError>;
    fn delete_segment(&mut self, name: &str, key: &str) -> Result<(), StorageError>;
    fn record_chain_start(&mut self, start: Lsn) -> Result<(), StorageError>;
}

/// What one cycle did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CycleReport {
    pub state: State,
    pub archived: Vec<String>,
    pub failed: Vec<SegmentFailure>,
    pub conflicts: Vec<Conflict>,
    pub deleted: Vec<String>,
    pub not_deleted: Vec<SegmentFailure>,
    pub skipped: Vec<Skipped>,
    pub breaks: Vec<Break>,
    /// The chain start the cycle could not record, and why: nothing was
    /// deleted, and the host must say the cycle failed.
    pub chain_start_not_recorded: Option<ChainStartFailure>,
}

/// A chain start that `record_chain_start` refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainStartFailure {
    pub start: Lsn,
    pub cause: StorageError,
}

/// Runs one cycle. Each pending segment is tried once; a failure is recorded
/// and the segment stays pending for the next cycle. The outcomes are
/// recorded once, at the end: inside the component nothing crosses per
/// segment, so the cycle stays linear in the number of segments.
pub fn run_cycle(config: &Config, state: &State, storage: &mut impl Storage) -> Result<CycleReport, StorageError> {
    let archive = storage.list_archive()?;
    let listing = storage.list_wal_dir()?;
    let scan = plan::scan(state.clone(), &listing, Some(&archive));
    let mut outcomes = Vec::with_capacity(scan.pending.len() + scan.to_confirm.len());
    // An outcome is named by the object its key ends in.
    for (object, size) in scan.to_confirm.iter() {
        let key = plan::object_key(&config.prefix, object);
        let result = storage.check_archived(segment_part(object), &key, size);
        outcomes.push(UploadOutcome { name: object.into(), size, result });
    }
    for (name, size) in scan.pending.iter() {
        let key = plan::upload_key(config, name);
        let result = storage.upload(name, &key, size, config.verify_checksums);
        let mut object = String::with_capacity(name.len() + 4);
        object.push_str(name);
        object.push_str(config.compression.suffix());
        outcomes.push(UploadOutcome { name: object, size, result });
    }
    let record = plan::record_uploads(config, &scan.state, &outcomes);
    let state = record.state;
    // The chain start goes into the archive before anything is deleted.
    let chain_start_not_recorded = scan
        .record_chain_start
        .or(record.record_chain_start)
        .and_then(|start| storage.record_chain_start(start).err().map(|cause| ChainStartFailure { start, cause }));

    let mut deleted = Vec::new();
    let mut not_deleted = Vec::new();
    let mut found = Vec::new();
    if chain_start_not_recorded.is_none() {
        for (object, size) in plan::deletable(config, &state, &listing).iter() {
            let (name, key) = (segment_part(object), plan::object_key(&config.prefix, object));
            match storage.delete_segment(name, &key) {
                Ok(()) => deleted.push(name.to_string()),
                // The archived copy no longer holds the local bytes: a
                // conflict, recorded as one found by an upload is. The
                // watermark falls below it, and the segments after it (in
                // LSN order) are no longer at or below it: none is deleted.
                Err(e @ StorageError::Conflict(_)) => {
                    found.push(UploadOutcome { name: object.into(), size, result: Err(e) });
                    break;
                }
                // The object is gone: the segment no longer counts either
                // (the next cycle's listing shows it, and uploads it again),
                // so the same holds for the segments after it.
                Err(e @ StorageError::NotFound(_)) => {
                    not_deleted.push(SegmentFailure { name: name.into(), attempts: 1, last_reason: e.to_string() });
                    break;
                }
                Err(e) => not_deleted.push(SegmentFailure { name: name.into(), attempts: 1, last_reason: e.to_string() }),
            }
        }
    }
    let mut conflicts = scan.conflicts;
    conflicts.extend(record.conflicts);
    let mut state = state;
    if !found.is_empty() {
        let after = plan::record_uploads(config, &state, &found);
        state = after.state;
        conflicts.extend(after.conflicts);
    }
    Ok(CycleReport {
        state,
        archived: record.archived,
        failed: record.failed,
        conflicts,
        deleted,
        not_deleted,
        skipped: scan.skipped,
        breaks: scan.breaks,
        chain_start_not_recorded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format_segment_name;
    use crate::packed::{DirEntry, EntryKind};
    use alloc::vec;

    /// A WAL directory of segments that every upload archives, and an
    /// archive whose chain-start record answers `chain_start`.
    struct Memory {
        segments: Vec<(String, u64)>,
        chain_start: Result<(), StorageError>,
        recorded: Vec<Lsn>,
        deleted: Vec<String>,
        /// A segment whose local file no longer holds the archived bytes.
        rewritten: Option<String>,
        /// A segment whose archived object is gone.
        vanished: Option<String>,
    }

    impl Memory {
        fn new(ranges: &[(Lsn, Lsn)], chain_start: Result<(), StorageError>) -> Self {
            let segments = ranges.iter().map(|&(a, b)| (format_segment_name(a, b).unwrap(), 100 + b)).collect();
            Self { segments, chain_start, recorded: Vec::new(), deleted: Vec::new(), rewritten: None, vanished: None }
        }
    }

    impl Storage for Memory {
        fn list_wal_dir(&mut self) -> Result<Listing, StorageError> {
            let entries: Vec<DirEntry> =
                self.segments.iter().map(|(name, size)| DirEntry { name: name.clone(), utf8: true, kind: EntryKind::File, size: *size }).collect();
            Ok(entries.iter().collect())
        }
        fn list_archive(&mut self) -> Result<ArchiveListing, StorageError> {
            Ok(ArchiveListing::default())
        }
        fn upload(&mut self, _name: &str, _key: &str, size: u64, _verify: bool) -> Result<UploadReceipt, StorageError> {
            Ok(UploadReceipt { read_size: size, read_crc32c: 7, stored_size: size, stored_crc32c: Some(7), existed: false })
        }
        fn check_archived(&mut self, name: &str, _key: &str, _size: u64) -> Result<UploadReceipt, StorageError> {
            Err(StorageError::NotFound(name.into()))
        }
        fn delete_segment(&mut self, name: &str, _key: &str) -> Result<(), StorageError> {
            if self.vanished.as_deref() == Some(name) {
                return Err(StorageError::NotFound(format!("{name}: no object under its key")));
            }
            if self.rewritten.as_deref() == Some(name) {
                let size = self.segments.iter().find(|(n, _)| n == name).map_or(0, |(_, s)| *s);
                let c = Conflict { name: name.into(), local_size: size, local_crc32c: 8, archived_size: size, archived_crc32c: 7 };
                return Err(StorageError::Conflict(c));
            }
            self.deleted.push(name.into());
            Ok(())
        }
        fn record_chain_start(&mut self, start: Lsn) -> Result<(), StorageError> {
            self.recorded.push(start);
            self.chain_start.clone()
        }
    }

    fn deleting() -> Config {
        Config { delete_after_archive: true, ..Config::default() }
    }

    #[test]
    fn a_failed_chain_start_record_is_reported_and_nothing_is_deleted() {
        let cause = StorageError::Io("cannot write _chain/0000000000000001: no space left on device".into());
        let mut storage = Memory::new(&[(1, 10), (11, 20)], Err(cause.clone()));
        let report = run_cycle(&deleting(), &State::default(), &mut storage).unwrap();
        assert_eq!(report.chain_start_not_recorded, Some(ChainStartFailure { start: 1, cause }));
        assert_eq!(storage.recorded, [1]);
        assert!(storage.deleted.is_empty(), "{:?}", storage.deleted);
        assert!(report.deleted.is_empty() && report.not_deleted.is_empty());
        // The uploads stand: the state holds them.
        assert_eq!(report.archived.len(), 2);
        assert_eq!(report.state.last_archived_lsn, Some(20));
    }

    #[test]
    fn a_recorded_chain_start_reports_nothing_and_lets_deletes_go() {
        let mut storage = Memory::new(&[(1, 10), (11, 20)], Ok(()));
        let report = run_cycle(&deleting(), &State::default(), &mut storage).unwrap();
        assert_eq!(report.chain_start_not_recorded, None);
        assert_eq!(storage.recorded, [1]);
        assert_eq!(report.deleted, vec![format_segment_name(1, 10).unwrap(), format_segment_name(11, 20).unwrap()]);
        assert_eq!(storage.deleted, report.deleted);
    }

    #[test]
    fn a_conflict_found_by_a_delete_is_recorded_and_holds_the_watermark() {
        let (a, b, c) = (format_segment_name(1, 10).unwrap(), format_segment_name(11, 20).unwrap(), format_segment_name(21, 30).unwrap());
        let mut storage = Memory::new(&[(1, 10), (11, 20), (21, 30)], Ok(()));
        storage.rewritten = Some(b.clone());
        let report = run_cycle(&deleting(), &State::default(), &mut storage).unwrap();
        // Those after it are no longer at or below the watermark: kept.
        assert_eq!(storage.deleted, [a.clone()]);
        assert_eq!(report.deleted, [a.clone()]);
        assert!(report.not_deleted.is_empty(), "{:?}", report.not_deleted);
        assert_eq!(report.conflicts.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), [b.as_str()]);
        assert_eq!(report.state.conflicts.len(), 1);
        // No longer counted: the watermark waits below it.
        assert_eq!(report.state.archived.names(), [a.as_str(), c.as_str()]);
        assert_eq!(report.state.last_archived_lsn, Some(10));
    }

    #[test]
    fn a_delete_that_finds_the_object_gone_stops_the_deletes_after_it() {
        let (a, b) = (format_segment_name(1, 10).unwrap(), format_segment_name(11, 20).unwrap());
        let mut storage = Memory::new(&[(1, 10), (11, 20), (21, 30)], Ok(()));
        storage.vanished = Some(b.clone());
        let report = run_cycle(&deleting(), &State::default(), &mut storage).unwrap();
        assert_eq!(storage.deleted, [a.clone()]);
        assert_eq!(report.deleted, [a]);
        assert_eq!(report.not_deleted.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), [b.as_str()]);
        assert!(report.not_deleted[0].last_reason.contains("no object"), "{:?}", report.not_deleted);
    }
}
