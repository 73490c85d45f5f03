//! One whole archive cycle driven through a [`Storage`]: list, plan every
//! batch, upload, record, delete. The component exports it as `run-cycle`
//! so that a plugin host needs nothing but the storage imports.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use crate::plan::{
    self, ArchivedObject, Config, Gap, Listing, Overlap, Segment, SegmentFailure, Skipped, State,
    UploadReceipt,
};

/// Why the host could not carry out a storage call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    #[error("refused: {0}")]
    Refused(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("not a regular file: {0}")]
    NotAFile(String),
    #[error("{0}")]
    Io(String),
}

/// What the planner needs from its host.
pub trait Storage {
    fn list_wal_dir(&mut self) -> Result<Listing, StorageError>;
    fn list_archive(&mut self) -> Result<Vec<ArchivedObject>, StorageError>;
    fn upload(&mut self, name: &str, key: &str, verify: bool) -> Result<UploadReceipt, StorageError>;
    fn delete_segment(&mut self, name: &str) -> Result<(), StorageError>;
}

/// What one cycle did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CycleReport {
    pub state: State,
    pub archived: Vec<Segment>,
    pub failed: Vec<SegmentFailure>,
    pub deleted: Vec<String>,
    pub not_deleted: Vec<SegmentFailure>,
    pub skipped: Vec<Skipped>,
    pub gaps: Vec<Gap>,
    pub overlaps: Vec<Overlap>,
}

/// Runs one cycle. Each pending segment is tried once; a failure is recorded
/// and the segment stays pending for the next cycle.
pub fn run_cycle(
    config: &Config,
    state: &State,
    storage: &mut impl Storage,
) -> Result<CycleReport, StorageError> {
    let state = plan::reconcile(state, &storage.list_archive()?);
    let listing = storage.list_wal_dir()?;
    let scan = plan::scan(&listing, state);
    let mut state = scan.state;
    let mut archived = Vec::new();
    let mut failed = Vec::new();
    let mut remaining = scan.pending;
    while !remaining.is_empty() {
        let tasks = plan::plan_batch(config, &remaining);
        remaining.retain(|s| !tasks.iter().any(|t| t.segment.name == s.name));
        for task in &tasks {
            let outcome = storage
                .upload(&task.segment.name, &task.key, task.verify)
                .map_err(|e| e.to_string())
                .and_then(|receipt| {
                    plan::record_archived(&state, task, &receipt).map_err(|e| e.to_string())
                });
            match outcome {
                Ok(next) => {
                    state = next;
                    archived.push(task.segment.clone());
                }
                Err(reason) => {
                    state = plan::record_failed(&state, task, &reason);
                    let attempts = state
                        .failing
                        .iter()
                        .find(|f| f.name == task.segment.name)
                        .map_or(1, |f| f.attempts);
                    failed.push(SegmentFailure {
                        name: task.segment.name.clone(),
                        attempts,
                        last_reason: reason,
                    });
                }
            }
        }
    }

    let mut deleted = Vec::new();
    let mut not_deleted = Vec::new();
    for seg in plan::deletable(config, &state, &listing) {
        match storage.delete_segment(&seg.name) {
            Ok(()) => deleted.push(seg.name),
            Err(e) => not_deleted.push(SegmentFailure {
                name: seg.name,
                attempts: 1,
                last_reason: e.to_string(),
            }),
        }
    }

    Ok(CycleReport {
        state,
        archived,
        failed,
        deleted,
        not_deleted,
        skipped: scan.skipped,
        gaps: scan.gaps,
        overlaps: scan.overlaps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::format_segment_name;
    use crate::plan::{DirEntry, EntryKind};
    use std::collections::BTreeMap;

    /// An in-process directory and store, to test the cycle's logic alone.
    /// The real host is tested by the harness in `tests/`.
    #[derive(Default)]
    struct Dir {
        files: BTreeMap<String, Vec<u8>>,
        store: BTreeMap<String, Vec<u8>>,
        fail_names: Vec<String>,
    }

    impl Storage for Dir {
        fn list_wal_dir(&mut self) -> Result<Listing, StorageError> {
            let entries: Vec<DirEntry> = self
                .files
                .iter()
                .map(|(n, b)| DirEntry { name: n.clone(), utf8: true, kind: EntryKind::File, size: b.len() as u64 })
                .collect();
            Ok(entries.iter().collect())
        }
        fn list_archive(&mut self) -> Result<Vec<ArchivedObject>, StorageError> {
            Ok(self
                .store
                .iter()
                .map(|(k, b)| ArchivedObject {
                    name: k.rsplit('/').next().unwrap().to_owned(),
                    size: b.len() as u64,
                    crc32c: Some(checksum(b)),
                })
                .collect())
        }
        fn upload(&mut self, name: &str, key: &str, _verify: bool) -> Result<UploadReceipt, StorageError> {
            if self.fail_names.iter().any(|n| n == name) {
                return Err(StorageError::Io(format!("cannot upload {name}: injected")));
            }
            let bytes = self.files.get(name).ok_or_else(|| StorageError::NotFound(name.into()))?.clone();
            let crc = checksum(&bytes);
            let size = bytes.len() as u64;
            self.store.insert(key.into(), bytes);
            Ok(UploadReceipt { read_size: size, read_crc32c: crc, stored_size: size, stored_crc32c: Some(crc) })
        }
        fn delete_segment(&mut self, name: &str) -> Result<(), StorageError> {
            self.files.remove(name).map(|_| ()).ok_or_else(|| StorageError::NotFound(name.into()))
        }
    }

    fn checksum(bytes: &[u8]) -> u32 {
        bytes.iter().fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(*b)))
    }

    fn dir_with(n: u64) -> Dir {
        let mut dir = Dir::default();
        for i in 0..n {
            dir.files.insert(format_segment_name(i * 10 + 1, i * 10 + 10).unwrap(), vec![i as u8; 10]);
        }
        dir.files.insert("wal-0a-64.partial".into(), vec![1]);
        dir
    }

    #[test]
    fn archives_every_batch_and_deletes_only_below_the_watermark() {
        let mut dir = dir_with(5);
        dir.fail_names.push(format_segment_name(21, 30).unwrap());
        let config = Config { batch_size: 2, delete_after_archive: true, prefix: "p".into(), ..Config::default() };
        let report = run_cycle(&config, &State::default(), &mut dir).unwrap();
        assert_eq!(report.archived.len(), 4);
        assert_eq!(report.failed.len(), 1);
        assert_eq!(report.state.last_archived_lsn, Some(20));
        assert_eq!(report.deleted.len(), 2);
        assert_eq!(report.skipped.len(), 1);
        assert!(dir.files.contains_key("wal-0a-64.partial"));
        assert!(dir.files.contains_key(&format_segment_name(21, 30).unwrap()));
        assert!(dir.files.contains_key(&format_segment_name(31, 40).unwrap()));
        assert!(dir.store.contains_key(&format!("p/{}", format_segment_name(41, 50).unwrap())));

        dir.fail_names.clear();
        let report = run_cycle(&config, &report.state, &mut dir).unwrap();
        assert_eq!(report.archived.len(), 1);
        assert_eq!(report.state.last_archived_lsn, Some(50));
        assert_eq!(dir.files.len(), 1, "only the refused name is left: {:?}", dir.files.keys());
    }

    #[test]
    fn uploads_nothing_again_when_the_state_is_lost() {
        let mut dir = dir_with(3);
        let config = Config::default();
        run_cycle(&config, &State::default(), &mut dir).unwrap();
        let report = run_cycle(&config, &State::default(), &mut dir).unwrap();
        assert!(report.archived.is_empty());
        assert_eq!(report.state.last_archived_lsn, Some(30));
    }
}
