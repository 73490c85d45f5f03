//! The thin layer between the WIT world `nodedb:wal-archiver/archiver` and the
//! planner: conversions in both directions, and nothing else. The packed
//! lists have the same fields on both sides, so most conversions move them.

use alloc::string::String;
use alloc::vec::Vec;
wit_bindgen::generate!({ path: "../../wit", world: "archiver" });

use exports::nodedb::wal_archiver::planner as wit_planner;
use nodedb::wal_archiver::{storage as wit_storage, types as wit};

use wal_archiver_guest::chain::Break;
use wal_archiver_guest::cycle::{self, Storage};
use wal_archiver_guest::name::{self, NameError, SegmentName};
use wal_archiver_guest::packed::{ArchiveListing, ArchivedList, EntryKind, FailureList, Listing, SegmentList};
use wal_archiver_guest::plan::{self, Conflict, SkipReason, StorageError};
use wal_archiver_guest::restore::{self, PruneError, RangeError, RestoreError};

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

    fn retry_delay(config: wit::ArchiverConfig, attempts: u32, random: u64) -> u64 {
        plan::retry_delay(&config.into(), attempts, random)
    }

    fn scan(state: wit::ArchiverState, listing: wit::DirListing, archive: Option<wit::ArchiveListing>) -> wit_planner::ScanReport {
        let archive: Option<ArchiveListing> = archive.map(Into::into);
        let r = plan::scan(state.into(), &listing.into(), archive.as_ref());
        wit_planner::ScanReport {
            state: r.state.into(),
            pending: r.pending.into(),
            to_confirm: r.to_confirm.into(),
            pruned: r.pruned,
            skipped: r.skipped.into_iter().map(Into::into).collect(),
            strays: r.strays.into_iter().map(Into::into).collect(),
            unverified: r.unverified,
            breaks: r.breaks.into_iter().map(Into::into).collect(),
            off_chain: r.off_chain,
            conflicts: r.conflicts.into_iter().map(Into::into).collect(),
            record_chain_start: r.record_chain_start,
        }
    }

    fn plan_batches(config: wit::ArchiverConfig, pending: wit::SegmentList) -> Vec<u32> {
        plan::plan_batches(&config.into(), &pending.into())
    }

    fn record_uploads(config: wit::ArchiverConfig, state: wit::ArchiverState, outcomes: Vec<wit::UploadOutcome>) -> wit_planner::RecordReport {
        let outcomes: Vec<plan::UploadOutcome> = outcomes.into_iter().map(Into::into).collect();
        let r = plan::record_uploads(&config.into(), &state.into(), &outcomes);
        wit_planner::RecordReport {
            state: r.state.into(),
            archived: r.archived,
            failed: r.failed.into_iter().map(Into::into).collect(),
            conflicts: r.conflicts.into_iter().map(Into::into).collect(),
            refused: r.refused,
            record_chain_start: r.record_chain_start,
        }
    }

    fn deletable(config: wit::ArchiverConfig, state: wit::ArchiverState, listing: wit::DirListing) -> wit::SegmentList {
        plan::deletable(&config.into(), &state.into(), &listing.into()).into()
    }

    fn verify_plan(
        archive: wit::ArchiveListing,
        from_lsn: Option<u64>,
        until_lsn: Option<u64>,
    ) -> Result<wit_planner::VerifyReport, wit_planner::RangeError> {
        let r = restore::verify_plan(&archive.into(), from_lsn, until_lsn)?;
        Ok(wit_planner::VerifyReport {
            from_lsn: r.from,
            until_lsn: r.until,
            segments: r.segments.into(),
            breaks: r.breaks.into_iter().map(Into::into).collect(),
            off_chain: r.off_chain,
            strays: r.strays.into_iter().map(Into::into).collect(),
            unverified: r.unverified,
        })
    }

    fn restore_plan(archive: wit::ArchiveListing, from_lsn: Option<u64>, until_lsn: u64) -> Result<wit::SegmentList, wit_planner::RestoreError> {
        restore::restore_plan(&archive.into(), from_lsn, until_lsn).map(Into::into).map_err(|e| match e {
            RestoreError::Range(r) => wit_planner::RestoreError::Range(r.into()),
            RestoreError::Broken(b) => wit_planner::RestoreError::Broken(b.into()),
        })
    }

    fn prune_plan(archive: wit::ArchiveListing, before_lsn: u64) -> Result<wit_planner::PruneOrder, wit_planner::PruneError> {
        match restore::prune_plan(&archive.into(), before_lsn) {
            Ok(p) => Ok(wit_planner::PruneOrder { segments: p.segments.into(), pruned_below: p.pruned_below, chain_start: p.chain_start }),
            Err(PruneError::NoChain) => Err(wit_planner::PruneError::NoChain),
            Err(PruneError::AboveWatermark(w)) => Err(wit_planner::PruneError::AboveWatermark(w)),
        }
    }

    fn rpo_gap(state: wit::ArchiverState, current: u64) -> u64 {
        plan::rpo_gap(&state.into(), current)
    }

    fn run_cycle(config: wit::ArchiverConfig, state: wit::ArchiverState) -> Result<wit_planner::CycleReport, wit::StorageError> {
        let r = cycle::run_cycle(&config.into(), &state.into(), &mut Imports).map_err(wit::StorageError::from)?;
        Ok(wit_planner::CycleReport {
            state: r.state.into(),
            archived: r.archived,
            failed: r.failed.into_iter().map(Into::into).collect(),
            conflicts: r.conflicts.into_iter().map(Into::into).collect(),
            deleted: r.deleted,
            not_deleted: r.not_deleted.into_iter().map(Into::into).collect(),
            skipped: r.skipped.into_iter().map(Into::into).collect(),
            breaks: r.breaks.into_iter().map(Into::into).collect(),
            chain_start_not_recorded: r
                .chain_start_not_recorded
                .map(|f| wit_planner::ChainStartFailure { start: f.start, cause: f.cause.into() }),
        })
    }
}

/// The host's storage imports, seen as a [`Storage`].
struct Imports;

impl Storage for Imports {
    fn list_wal_dir(&mut self) -> Result<Listing, StorageError> {
        wit_storage::list_wal_dir().map(Into::into).map_err(Into::into)
    }

    fn list_archive(&mut self) -> Result<ArchiveListing, StorageError> {
        wit_storage::list_archive().map(Into::into).map_err(Into::into)
    }

    fn upload(&mut self, name: &str, key: &str, size: u64, verify: bool) -> Result<plan::UploadReceipt, StorageError> {
        wit_storage::upload(name, key, size, verify).map(Into::into).map_err(Into::into)
    }

    fn check_archived(&mut self, name: &str, key: &str, size: u64) -> Result<plan::UploadReceipt, StorageError> {
        wit_storage::check_archived(name, key, size).map(Into::into).map_err(Into::into)
    }

    fn delete_segment(&mut self, name: &str, key: &str) -> Result<(), StorageError> {
        wit_storage::delete_segment(name, key).map_err(Into::into)
    }

    fn record_chain_start(&mut self, start: u64) -> Result<(), StorageError> {
        wit_storage::record_chain_start(start).map_err(Into::into)
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

impl From<wit::DirListing> for Listing {
    fn from(l: wit::DirListing) -> Self {
        Self { names: l.names, ends: l.ends, sizes: l.sizes, kinds: l.kinds, utf8: l.utf8 }
    }
}

impl From<wit::ArchiveListing> for ArchiveListing {
    fn from(l: wit::ArchiveListing) -> Self {
        Self {
            names: l.names,
            ends: l.ends,
            sizes: l.sizes,
            kinds: l.kinds,
            utf8: l.utf8,
            crc32cs: l.crc32cs,
            recorded: l.recorded,
            chain_start: l.chain_start,
            pruned_below: l.pruned_below,
        }
    }
}

impl From<wit::SegmentList> for SegmentList {
    fn from(l: wit::SegmentList) -> Self {
        Self { names: l.names, ends: l.ends, sizes: l.sizes }
    }
}

impl From<SegmentList> for wit::SegmentList {
    fn from(l: SegmentList) -> Self {
        Self { names: l.names, ends: l.ends, sizes: l.sizes }
    }
}

impl From<wit::ArchivedList> for ArchivedList {
    fn from(l: wit::ArchivedList) -> Self {
        Self { names: l.names, ends: l.ends, sizes: l.sizes, crc32cs: l.crc32cs }
    }
}

impl From<ArchivedList> for wit::ArchivedList {
    fn from(l: ArchivedList) -> Self {
        Self { names: l.names, ends: l.ends, sizes: l.sizes, crc32cs: l.crc32cs }
    }
}

impl From<wit::FailureList> for FailureList {
    fn from(l: wit::FailureList) -> Self {
        Self { names: l.names, ends: l.ends, attempts: l.attempts, reasons: l.reasons, reason_ends: l.reason_ends }
    }
}

impl From<FailureList> for wit::FailureList {
    fn from(l: FailureList) -> Self {
        Self { names: l.names, ends: l.ends, attempts: l.attempts, reasons: l.reasons, reason_ends: l.reason_ends }
    }
}

impl From<plan::Skipped> for wit::SkippedEntry {
    fn from(s: plan::Skipped) -> Self {
        let reason = match s.reason {
            SkipReason::NotAFile(k) => wit::SkipReason::NotAFile(k.into()),
            SkipReason::NotUtf8 => wit::SkipReason::NotUtf8,
            SkipReason::BadName(e) => wit::SkipReason::BadName(e.into()),
            SkipReason::ListedTwice => wit::SkipReason::ListedTwice,
        };
        Self { name: s.name, reason }
    }
}

impl From<Break> for wit::ChainBreak {
    fn from(b: Break) -> Self {
        match b {
            Break::Gap { from, to } => Self::Gap(wit::LsnRange { from_lsn: from, to_lsn: to }),
            Break::Overlap { from, to, held_by, after } => {
                Self::Overlap(wit::Overlap { from_lsn: from, to_lsn: to, held_by, after })
            }
        }
    }
}

impl From<wit::ArchiverConfig> for plan::Config {
    fn from(c: wit::ArchiverConfig) -> Self {
        Self {
            prefix: c.prefix,
            batch_size: c.batch_size,
            batch_bytes: c.batch_bytes,
            verify_checksums: c.verify_checksums,
            delete_after_archive: c.delete_after_archive,
            retry_base_ms: c.retry_base_ms,
            retry_max_ms: c.retry_max_ms,
            compression: match c.compression {
                wit::Compression::None => name::Compression::None,
                wit::Compression::Zstd => name::Compression::Zstd,
            },
        }
    }
}

impl From<plan::SegmentFailure> for wit::SegmentFailure {
    fn from(f: plan::SegmentFailure) -> Self {
        Self { name: f.name, attempts: f.attempts, last_reason: f.last_reason }
    }
}

impl From<wit::SegmentConflict> for Conflict {
    fn from(c: wit::SegmentConflict) -> Self {
        Self {
            name: c.name,
            local_size: c.local_size,
            local_crc32c: c.local_crc32c,
            archived_size: c.archived_size,
            archived_crc32c: c.archived_crc32c,
        }
    }
}

impl From<Conflict> for wit::SegmentConflict {
    fn from(c: Conflict) -> Self {
        Self {
            name: c.name,
            local_size: c.local_size,
            local_crc32c: c.local_crc32c,
            archived_size: c.archived_size,
            archived_crc32c: c.archived_crc32c,
        }
    }
}

impl From<wit::ArchiverState> for plan::State {
    fn from(s: wit::ArchiverState) -> Self {
        Self {
            chain_start: s.chain_start,
            last_archived_lsn: s.last_archived_lsn,
            pruned_below: s.pruned_below,
            segments_archived: s.segments_archived,
            bytes_archived: s.bytes_archived,
            failures: s.failures,
            archived: s.archived.into(),
            failing: s.failing.into(),
            conflicts: s.conflicts.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<plan::State> for wit::ArchiverState {
    fn from(s: plan::State) -> Self {
        Self {
            chain_start: s.chain_start,
            last_archived_lsn: s.last_archived_lsn,
            pruned_below: s.pruned_below,
            segments_archived: s.segments_archived,
            bytes_archived: s.bytes_archived,
            failures: s.failures,
            archived: s.archived.into(),
            failing: s.failing.into(),
            conflicts: s.conflicts.into_iter().map(Into::into).collect(),
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
            existed: r.existed,
        }
    }
}

impl From<wit::UploadOutcome> for plan::UploadOutcome {
    fn from(o: wit::UploadOutcome) -> Self {
        Self { name: o.name, size: o.size, result: o.receipt.map(Into::into).map_err(Into::into) }
    }
}

impl From<RangeError> for wit_planner::RangeError {
    fn from(e: RangeError) -> Self {
        match e {
            RangeError::Empty => Self::Empty,
            RangeError::EmptyRange => Self::EmptyRange,
            RangeError::BeyondEnd(l) => Self::BeyondEnd(l),
        }
    }
}

impl From<wit::StorageError> for StorageError {
    fn from(e: wit::StorageError) -> Self {
        match e {
            wit::StorageError::Refused(m) => Self::Refused(m),
            wit::StorageError::NotFound(m) => Self::NotFound(m),
            wit::StorageError::NotAFile(m) => Self::NotAFile(m),
            wit::StorageError::Changed(m) => Self::Changed(m),
            wit::StorageError::Conflict(c) => Self::Conflict(c.into()),
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
            StorageError::Changed(m) => Self::Changed(m),
            StorageError::Conflict(c) => Self::Conflict(c.into()),
            StorageError::Io(m) => Self::Io(m),
        }
    }
}
