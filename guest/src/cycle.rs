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
    let mut chain_recorded = true;
    if let Some(start) = scan.record_chain_start.or(record.record_chain_start) {
        chain_recorded = storage.record_chain_start(start).is_ok();
    }

    let mut deleted = Vec::new();
    let mut not_deleted = Vec::new();
    if chain_recorded {
        for (object, _) in plan::deletable(config, &state, &listing).iter() {
            let (name, key) = (segment_part(object), plan::object_key(&config.prefix, object));
            match storage.delete_segment(name, &key) {
                Ok(()) => deleted.push(name.to_string()),
                Err(e) => not_deleted.push(SegmentFailure { name: name.into(), attempts: 1, last_reason: e.to_string() }),
            }
        }
    }
    let mut conflicts = scan.conflicts;
    conflicts.extend(record.conflicts);
    Ok(CycleReport {
        state,
        archived: record.archived,
        failed: record.failed,
        conflicts,
        deleted,
        not_deleted,
        skipped: scan.skipped,
        breaks: scan.breaks,
    })
}
