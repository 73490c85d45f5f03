//! The thin layer between the WIT world `nodedb:wal-archiver/archiver` and the
//! planner: conversions in both directions, and nothing else.

use alloc::string::String;
use alloc::vec::Vec;
wit_bindgen::generate!({ path: "../wit", world: "archiver" });

use exports::nodedb::wal_archiver::planner as wit_planner;
use nodedb::wal_archiver::{storage as wit_storage, types as wit};

use crate::cycle::{self, Storage, StorageError};
use crate::name::{self, NameError, SegmentName};
use crate::plan::{self, EntryKind, SkipReason, VerifyError};
use crate::restore::{self, RestoreError};

struct Component;

export!(Component);

impl wit_planner::Guest for Component {
    fn parse_segment_name(name: String) -> Result<wit::SegmentName, wit::NameError> {
        SegmentName::parse(&name)
            .map(|n| wit::SegmentName { first_lsn: n.first(), last_lsn: n.last() })
            .map_err(Into::into)
    }

    fn format_segment_name(first_lsn: u64, last_lsn: u64) -> Result<String, wit::NameError> {
        name::format_segment_name(first_lsn, last_lsn).map_err(Into::into)
    }

    fn reconcile(state: wit::ArchiverState, archive: Vec<wit::ArchivedObject>) -> wit::ArchiverState {
        let archive: Vec<plan::ArchivedObject> = archive.into_iter().map(Into::into).collect();
        plan::reconcile(&state.into(), &archive).into()
    }

    fn retry_delay(config: wit::ArchiverConfig, attempts: u32, random: u64) -> u64 {
        plan::retry_delay(&config.into(), attempts, random)
    }

    fn verify_plan(archive: Vec<wit::ArchivedObject>, from_lsn: Option<u64>, until_lsn: Option<u64>) -> wit::VerifyReport {
        let archive: Vec<plan::ArchivedObject> = archive.into_iter().map(Into::into).collect();
        let r = restore::verify_plan(&archive, from_lsn, until_lsn);
        wit::VerifyReport {
            segments: r.segments.into_iter().map(Into::into).collect(),
            gaps: r.gaps.into_iter().map(Into::into).collect(),
            overlaps: r.overlaps.into_iter().map(Into::into).collect(),
            not_segments: r.not_segments,
            unverified: r.unverified,
        }
    }

    fn restore_plan(
        archive: Vec<wit::ArchivedObject>,
        from_lsn: Option<u64>,
        until_lsn: u64,
    ) -> Result<Vec<wit::Segment>, wit::RestoreError> {
        let archive: Vec<plan::ArchivedObject> = archive.into_iter().map(Into::into).collect();
        restore::restore_plan(&archive, from_lsn, until_lsn)
            .map(|chain| chain.into_iter().map(Into::into).collect())
            .map_err(|e| match e {
                RestoreError::Empty => wit::RestoreError::Empty,
                RestoreError::StartsAfter(l) => wit::RestoreError::StartsAfter(l),
                RestoreError::Gap(g) => wit::RestoreError::Gap(g.into()),
                RestoreError::EndsBefore(l) => wit::RestoreError::EndsBefore(l),
                RestoreError::EmptyRange => wit::RestoreError::EmptyRange,
            })
    }

    fn prune_plan(archive: Vec<wit::ArchivedObject>, before_lsn: u64) -> Vec<wit::Segment> {
        let archive: Vec<plan::ArchivedObject> = archive.into_iter().map(Into::into).collect();
        restore::prune_plan(&archive, before_lsn).into_iter().map(Into::into).collect()
    }

    fn scan(listing: wit::DirListing, state: wit::ArchiverState) -> wit_planner::ScanReport {
        let r = plan::scan(&listing.into(), state.into());
        wit_planner::ScanReport {
            state: r.state.into(),
            pending: r.pending.into_iter().map(Into::into).collect(),
            skipped: r.skipped.into_iter().map(Into::into).collect(),
            gaps: r.gaps.into_iter().map(Into::into).collect(),
            overlaps: r.overlaps.into_iter().map(Into::into).collect(),
        }
    }

    fn plan_batch(config: wit::ArchiverConfig, pending: Vec<wit::Segment>) -> Vec<wit::ArchiveTask> {
        let pending: Vec<plan::Segment> = pending.into_iter().map(Into::into).collect();
        plan::plan_batch(&config.into(), &pending).into_iter().map(Into::into).collect()
    }

    fn record_archived(
        state: wit::ArchiverState,
        task: wit::ArchiveTask,
        receipt: wit::UploadReceipt,
    ) -> Result<wit::ArchiverState, wit::VerifyError> {
        plan::record_archived(&state.into(), &task.into(), &receipt.into())
            .map(Into::into)
            .map_err(Into::into)
    }

    fn record_failed(state: wit::ArchiverState, task: wit::ArchiveTask, reason: String) -> wit::ArchiverState {
        plan::record_failed(&state.into(), &task.into(), &reason).into()
    }

    fn deletable(
        config: wit::ArchiverConfig,
        state: wit::ArchiverState,
        listing: wit::DirListing,
    ) -> Vec<wit::Segment> {
        plan::deletable(&config.into(), &state.into(), &listing.into())
            .into_iter()
            .map(Into::into)
            .collect()
    }

    fn rpo_gap(state: wit::ArchiverState, current: u64) -> u64 {
        plan::rpo_gap(&state.into(), current)
    }

    fn run_cycle(
        config: wit::ArchiverConfig,
        state: wit::ArchiverState,
    ) -> Result<wit_planner::CycleReport, wit::StorageError> {
        let r = cycle::run_cycle(&config.into(), &state.into(), &mut Imports).map_err(wit::StorageError::from)?;
        Ok(wit_planner::CycleReport {
            state: r.state.into(),
            archived: r.archived.into_iter().map(Into::into).collect(),
            failed: r.failed.into_iter().map(Into::into).collect(),
            deleted: r.deleted,
            not_deleted: r.not_deleted.into_iter().map(Into::into).collect(),
            skipped: r.skipped.into_iter().map(Into::into).collect(),
            gaps: r.gaps.into_iter().map(Into::into).collect(),
            overlaps: r.overlaps.into_iter().map(Into::into).collect(),
        })
    }
}

/// The host's storage imports, seen as a [`Storage`].
struct Imports;

impl Storage for Imports {
    fn list_wal_dir(&mut self) -> Result<plan::Listing, StorageError> {
        wit_storage::list_wal_dir().map(Into::into).map_err(Into::into)
    }

    fn list_archive(&mut self) -> Result<Vec<plan::ArchivedObject>, StorageError> {
        wit_storage::list_archive()
            .map(|l| l.into_iter().map(Into::into).collect())
            .map_err(Into::into)
    }

    fn upload(&mut self, name: &str, key: &str, verify: bool) -> Result<plan::UploadReceipt, StorageError> {
        wit_storage::upload(name, key, verify).map(Into::into).map_err(Into::into)
    }

    fn delete_segment(&mut self, name: &str) -> Result<(), StorageError> {
        wit_storage::delete_segment(name).map_err(Into::into)
    }
}

impl From<NameError> for wit::NameError {
    fn from(e: NameError) -> Self {
        match e {
            NameError::MissingPrefix => Self::MissingPrefix,
            NameError::WrongSuffix => Self::WrongSuffix,
            NameError::WrongShape => Self::WrongShape,
            NameError::WrongLength(n) => Self::WrongLength(n),
            NameError::NotLowercaseHex => Self::NotLowercaseHex,
            NameError::FirstAfterLast => Self::FirstAfterLast,
        }
    }
}

impl From<wit::EntryKind> for EntryKind {
    fn from(k: wit::EntryKind) -> Self {
        match k {
            wit::EntryKind::File => Self::File,
            wit::EntryKind::Dir => Self::Dir,
            wit::EntryKind::Symlink => Self::Symlink,
            wit::EntryKind::Other => Self::Other,
        }
    }
}

impl From<EntryKind> for wit::EntryKind {
    fn from(k: EntryKind) -> Self {
        match k {
            EntryKind::File => Self::File,
            EntryKind::Dir => Self::Dir,
            EntryKind::Symlink => Self::Symlink,
            EntryKind::Other => Self::Other,
        }
    }
}

impl From<wit::DirListing> for plan::Listing {
    fn from(l: wit::DirListing) -> Self {
        Self {
            names: l.names,
            ends: l.ends,
            sizes: l.sizes,
            kinds: l.kinds.into_iter().map(Into::into).collect(),
            utf8: l.utf8,
        }
    }
}

impl From<wit::Segment> for plan::Segment {
    fn from(s: wit::Segment) -> Self {
        Self { name: s.name, first_lsn: s.first_lsn, last_lsn: s.last_lsn, size: s.size }
    }
}

impl From<plan::Segment> for wit::Segment {
    fn from(s: plan::Segment) -> Self {
        Self { name: s.name, first_lsn: s.first_lsn, last_lsn: s.last_lsn, size: s.size }
    }
}

impl From<plan::Skipped> for wit::SkippedEntry {
    fn from(s: plan::Skipped) -> Self {
        let reason = match s.reason {
            SkipReason::NotAFile(k) => wit::SkipReason::NotAFile(k.into()),
            SkipReason::NotUtf8 => wit::SkipReason::NotUtf8,
            SkipReason::BadName(e) => wit::SkipReason::BadName(e.into()),
        };
        Self { name: s.name, reason }
    }
}

impl From<plan::Gap> for wit::Gap {
    fn from(g: plan::Gap) -> Self {
        Self { from_lsn: g.from, to_lsn: g.to }
    }
}

impl From<plan::Overlap> for wit::Overlap {
    fn from(o: plan::Overlap) -> Self {
        Self { first: o.first, second: o.second, from_lsn: o.from, to_lsn: o.to }
    }
}

impl From<wit::ArchiveTask> for plan::ArchiveTask {
    fn from(t: wit::ArchiveTask) -> Self {
        Self { segment: t.segment.into(), key: t.key, verify: t.verify }
    }
}

impl From<plan::ArchiveTask> for wit::ArchiveTask {
    fn from(t: plan::ArchiveTask) -> Self {
        Self { segment: t.segment.into(), key: t.key, verify: t.verify }
    }
}

impl From<wit::ArchiverConfig> for plan::Config {
    fn from(c: wit::ArchiverConfig) -> Self {
        Self {
            prefix: c.prefix,
            batch_size: c.batch_size,
            verify_checksums: c.verify_checksums,
            delete_after_archive: c.delete_after_archive,
            retry_base_ms: c.retry_base_ms,
            retry_max_ms: c.retry_max_ms,
        }
    }
}

impl From<wit::ArchivedObject> for plan::ArchivedObject {
    fn from(o: wit::ArchivedObject) -> Self {
        Self { name: o.name, size: o.size, crc32c: o.crc32c }
    }
}

impl From<wit::SegmentFailure> for plan::SegmentFailure {
    fn from(f: wit::SegmentFailure) -> Self {
        Self { name: f.name, attempts: f.attempts, last_reason: f.last_reason }
    }
}

impl From<plan::SegmentFailure> for wit::SegmentFailure {
    fn from(f: plan::SegmentFailure) -> Self {
        Self { name: f.name, attempts: f.attempts, last_reason: f.last_reason }
    }
}

impl From<wit::ArchiverState> for plan::State {
    fn from(s: wit::ArchiverState) -> Self {
        Self {
            last_archived_lsn: s.last_archived_lsn,
            chain_start: s.chain_start,
            segments_archived: s.segments_archived,
            bytes_archived: s.bytes_archived,
            failures: s.failures,
            archived_above: s.archived_above.into_iter().map(Into::into).collect(),
            failing: s.failing.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<plan::State> for wit::ArchiverState {
    fn from(s: plan::State) -> Self {
        Self {
            last_archived_lsn: s.last_archived_lsn,
            chain_start: s.chain_start,
            segments_archived: s.segments_archived,
            bytes_archived: s.bytes_archived,
            failures: s.failures,
            archived_above: s.archived_above.into_iter().map(Into::into).collect(),
            failing: s.failing.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<wit::UploadReceipt> for plan::UploadReceipt {
    fn from(r: wit::UploadReceipt) -> Self {
        Self {
            read_size: r.read_size,
            read_crc32c: r.read_crc32c,
            stored_size: r.stored_size,
            stored_crc32c: r.stored_crc32c,
        }
    }
}

impl From<VerifyError> for wit::VerifyError {
    fn from(e: VerifyError) -> Self {
        match e {
            VerifyError::SizeChanged(a, b) => Self::SizeChanged((a, b)),
            VerifyError::StoredSizeMismatch(a, b) => Self::StoredSizeMismatch((a, b)),
            VerifyError::ChecksumMismatch(a, b) => Self::ChecksumMismatch((a, b)),
            VerifyError::NotVerified => Self::NotVerified,
        }
    }
}

impl From<wit::StorageError> for StorageError {
    fn from(e: wit::StorageError) -> Self {
        match e {
            wit::StorageError::Refused(m) => Self::Refused(m),
            wit::StorageError::NotFound(m) => Self::NotFound(m),
            wit::StorageError::NotAFile(m) => Self::NotAFile(m),
            wit::StorageError::Io(m) => Self::Io(m),
        }
    }
}

impl From<StorageError> for wit::StorageError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Refused(m) => Self::Refused(m),
            StorageError::NotFound(m) => Self::NotFound(m),
            StorageError::NotAFile(m) => Self::NotAFile(m),
            StorageError::Io(m) => Self::Io(m),
        }
    }
}
