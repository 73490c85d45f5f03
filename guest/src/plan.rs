//! The archiving side of the planner: listings and state in, tasks and
//! decisions out.
//!
//! The state is a cache of the archive: the segments archived and verified
//! under their own keys, the chain start, the prune floor, the failures and
//! the conflicts. The watermark is always the reach of the archived
//! segments from the chain start ([`crate::chain`]): it moves only across a
//! contiguous run, so it can never pass a segment that is not in the archive.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::chain::{self, Break, Start};
use crate::name::{Compression, NameError, ObjectName, SegmentName};
use crate::packed::{
    find, find_seg, lsn_order, merge, one_copy_each, same_segment, sort_by_lsn, sort_segs, ArchiveListing, ArchivedList, Cursor, Entry, EntryKind, FailureList, Listing, Seg, SegmentList,
};
use crate::Lsn;

/// How the planner plans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Key prefix without a leading or trailing `/`; may be empty.
    pub prefix: String,
    pub batch_size: u32,
    /// The most bytes in one batch; 0 for no limit.
    pub batch_bytes: u64,
    pub verify_checksums: bool,
    pub delete_after_archive: bool,
    /// The first retry delay, in milliseconds; it doubles with each failure.
    pub retry_base_ms: u64,
    /// The longest retry delay, in milliseconds.
    pub retry_max_ms: u64,
    /// How uploads store segments: the key of a pending segment is its
    /// object name under this compression.
    pub compression: Compression,
}

impl Default for Config {
    /// The seed's defaults (batches of 16, checksums verified, nothing
    /// deleted), and retries from 1 s up to 60 s.
    fn default() -> Self {
        Self {
            prefix: String::new(),
            batch_size: 16,
            batch_bytes: 0,
            verify_checksums: true,
            delete_after_archive: false,
            retry_base_ms: 1_000,
            retry_max_ms: 60_000,
            compression: Compression::None,
        }
    }
}

/// A segment whose archived copy differs from the local file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub name: String,
    pub local_size: u64,
    pub local_crc32c: u32,
    pub archived_size: u64,
    pub archived_crc32c: u32,
}

/// What the archiver knows between calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub chain_start: Option<Lsn>,
    pub last_archived_lsn: Option<Lsn>,
    pub pruned_below: Option<Lsn>,
    pub segments_archived: u64,
    pub bytes_archived: u64,
    pub failures: u64,
    /// Every segment known archived and verified under its own key, in name order.
    pub archived: ArchivedList,
    pub failing: FailureList,
    pub conflicts: Vec<Conflict>,
}

/// What the host saw when it uploaded or compared one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadReceipt {
    pub read_size: u64,
    pub read_crc32c: u32,
    pub stored_size: u64,
    pub stored_crc32c: Option<u32>,
    pub existed: bool,
}

/// Why the host could not carry out a storage call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    NotAFile(String),
    #[error("{0}")]
    Changed(String),
    #[error("the archive holds {} bytes with CRC32C {:08x} under this segment's key; the local file has {} bytes with CRC32C {:08x}", .0.archived_size, .0.archived_crc32c, .0.local_size, .0.local_crc32c)]
    Conflict(Conflict),
    #[error("{0}")]
    Io(String),
}

/// One segment's outcome, as the host reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadOutcome {
    pub name: String,
    /// The size it was listed with.
    pub size: u64,
    pub result: Result<UploadReceipt, StorageError>,
}

/// Why a receipt does not make a segment archived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the file was listed with {0} bytes but {1} were read")]
    SizeChanged(u64, u64),
    #[error("{0} bytes were read but the stored object has {1}")]
    StoredSizeMismatch(u64, u64),
    #[error("CRC32C {0:08x} was read but the stored object has {1:08x}")]
    ChecksumMismatch(u32, u32),
    #[error("the stored object's checksum was not confirmed")]
    NotVerified,
}

/// Why an entry is not a segment to archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    #[error("not a regular file ({0:?})")]
    NotAFile(EntryKind),
    #[error("the name is not valid UTF-8")]
    NotUtf8,
    #[error("not a segment name: {0}")]
    BadName(NameError),
    #[error("the same name was listed before")]
    ListedTwice,
}

/// An entry that is reported and never archived, or never counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub name: String,
    pub reason: SkipReason,
}

/// What the planner makes of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanReport {
    pub state: State,
    pub pending: SegmentList,
    pub to_confirm: SegmentList,
    pub pruned: Vec<String>,
    pub skipped: Vec<Skipped>,
    pub strays: Vec<Skipped>,
    pub unverified: Vec<String>,
    pub breaks: Vec<Break>,
    pub off_chain: Vec<String>,
    pub conflicts: Vec<Conflict>,
    pub record_chain_start: Option<Lsn>,
}

/// A failed segment, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFailure {
    pub name: String,
    pub attempts: u32,
    pub last_reason: String,
}

/// What `record_uploads` made of a set of outcomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordReport {
    pub state: State,
    pub archived: Vec<String>,
    pub failed: Vec<SegmentFailure>,
    pub conflicts: Vec<Conflict>,
    pub refused: Vec<String>,
    pub record_chain_start: Option<Lsn>,
}

/// The name of an entry that is a regular file with a UTF-8 name, or why
/// it is not one.
#[inline(always)]
fn file_name<'a>(entry: &Entry<'a>) -> Result<&'a str, SkipReason> {
    if entry.kind != EntryKind::File {
        return Err(SkipReason::NotAFile(entry.kind));
    }
    if !entry.utf8 {
        return Err(SkipReason::NotUtf8);
    }
    Ok(entry.name)
}

/// Classifies one entry: a segment's name, or the reason it is not one.
pub fn classify(entry: &Entry<'_>) -> Result<SegmentName, SkipReason> {
    SegmentName::parse(file_name(entry)?).map_err(SkipReason::BadName)
}

/// True when a conflict holds the segment named `name` (by any object of it).
/// Asked for every listed segment: without conflicts, at no cost.
#[inline]
fn held(conflicts: &[Conflict], name: &str) -> bool {
    !conflicts.is_empty() && held_by_any(conflicts, name)
}

#[inline(never)]
fn held_by_any(conflicts: &[Conflict], name: &str) -> bool {
    conflicts.iter().any(|c| same_segment(&c.name, name))
}

/// Classifies one archive entry: the object name of a segment (plain or
/// compressed), or the reason it is not one.
pub fn classify_object(entry: &Entry<'_>) -> Result<ObjectName, SkipReason> {
    ObjectName::parse(file_name(entry)?).map_err(SkipReason::BadName)
}

/// The segment objects of an archive listing with a recorded checksum,
/// sorted by LSN, one object per segment (see [`one_copy_each`]); every
/// other entry goes to `strays`, objects without a recorded checksum to
/// `unverified`, and recorded copies of one segment that disagree to
/// `disagree` (or, without it, to `unverified`).
/// With `all`, every segment object goes there too, with its position in
/// the listing in `crc`.
pub(crate) fn archived_objects<'a>(
    archive: &'a ArchiveListing,
    strays: &mut Vec<Skipped>,
    unverified: &mut Vec<Seg<'a>>,
    disagree: Option<&mut Vec<Seg<'a>>>,
    mut all: Option<&mut Vec<Seg<'a>>>,
) -> Vec<Seg<'a>> {
    let mut objects: Vec<Seg<'a>> = Vec::with_capacity(archive.len());
    let mut first_not_files = Vec::new();
    for (i, o) in archive.entries().enumerate() {
        match classify_object(&o.entry) {
            Err(reason) => {
                not_a_file_named_as_a_segment(&o.entry, &reason, i, &mut first_not_files);
                strays.push(Skipped { name: o.entry.name.to_owned(), reason });
            }
            // The name came first as a directory or a symlink: that entry counts.
            Ok(_) if !first_not_files.is_empty() && first_not_files.iter().any(|&(n, _)| n == o.entry.name) => {
                strays.push(Skipped { name: o.entry.name.to_owned(), reason: SkipReason::ListedTwice });
            }
            Ok(n) => {
                let n = n.segment();
                let seg = Seg { first: n.first(), last: n.last(), name: o.entry.name, size: o.entry.size, crc: o.crc32c.unwrap_or(0) };
                if let Some(all) = all.as_deref_mut() {
                    all.push(Seg { crc: i as u32, ..seg });
                }
                match o.crc32c {
                    None => unverified.push(seg),
                    Some(_) => objects.push(seg),
                }
            }
        }
    }
    sort_by_lsn(&mut objects);
    // Without a place of their own, copies that disagree are unverified.
    one_copy_each(&mut objects, disagree.unwrap_or(unverified));
    objects
}

/// The segments of a listing, sorted by LSN, each name once; every other
/// entry, and every repeat of a name, goes to `skipped`.
pub(crate) fn listed_segments<'a>(entries: impl Iterator<Item = Entry<'a>>, skipped: &mut Vec<Skipped>) -> Vec<Seg<'a>> {
    // Sized once: growing a vector of 100,000 by doubling copies it whole
    // again and again.
    let mut segs: Vec<Seg<'a>> = Vec::with_capacity(entries.size_hint().0);
    let mut first_not_files = Vec::new();
    for (i, entry) in entries.enumerate() {
        match classify(&entry) {
            // The position in `crc`: of two entries with one name, the first listed stays.
            Ok(n) => segs.push(Seg { first: n.first(), last: n.last(), name: entry.name, size: entry.size, crc: i as u32 }),
            Err(reason) => {
                not_a_file_named_as_a_segment(&entry, &reason, i, &mut first_not_files);
                skipped.push(Skipped { name: entry.name.to_owned(), reason });
            }
        }
    }
    sort_by_lsn(&mut segs);
    let mut out: Vec<Seg<'a>> = Vec::with_capacity(segs.len());
    for s in segs {
        if out.last().is_some_and(|p| (p.first, p.last) == (s.first, s.last)) || listed_before_as_other(&first_not_files, &s) {
            skipped.push(Skipped { name: s.name.to_owned(), reason: SkipReason::ListedTwice });
        } else {
            out.push(s);
        }
    }
    out
}

/// Notes an entry that is not a file but bears an object's name (a
/// segment's, plain or `.zst`), with its position: the first entry of a
/// name counts, so a file of that name listed after it is listed twice.
fn not_a_file_named_as_a_segment<'a>(entry: &Entry<'a>, reason: &SkipReason, i: usize, out: &mut Vec<(&'a str, u32)>) {
    if matches!(reason, SkipReason::NotAFile(_)) && ObjectName::parse(entry.name).is_ok() {
        out.push((entry.name, i as u32));
    }
}

/// True when an entry of the same name that is not a file came before `s`
/// (whose position is in `crc`). Such entries are rare: a plain scan.
fn listed_before_as_other(not_files: &[(&str, u32)], s: &Seg<'_>) -> bool {
    !not_files.is_empty() && not_files.iter().any(|&(n, i)| n == s.name && i < s.crc)
}

/// The watermark: one less than the reach of `archived` from `start`, or
/// None when nothing starts there.
fn watermark(archived: &[Seg<'_>], start: Option<Lsn>) -> Option<Lsn> {
    let start = start?;
    let reach = chain::reach(archived, Start::At(start));
    (reach > u128::from(start)).then(|| (reach - 1) as Lsn)
}

/// The bytes of `segs`, saturating: a counter that wraps would read as few.
fn total_size(segs: &[Seg<'_>]) -> u64 {
    segs.iter().fold(0u64, |sum, s| sum.saturating_add(s.size))
}

fn below_floor(floor: Option<Lsn>, seg: &Seg<'_>) -> bool {
    floor.is_some_and(|f| seg.last < f)
}

/// Classifies a WAL listing against the state, rebuilding the state from
/// a listing of the archive when one is given.
pub fn scan(state: State, listing: &Listing, archive: Option<&ArchiveListing>) -> ScanReport {
    let mut skipped = Vec::new();
    let listed = listed_segments(listing.entries(), &mut skipped);
    let (prior, prior_clean) = state.archived.segs_checked();

    let mut strays = Vec::new();
    let mut unverified = Vec::new();
    let mut leftovers = Vec::new();
    let mut to_confirm_segs: Vec<Seg<'_>> = Vec::new();
    // The last LSN of archived objects that do not count (given a listing).
    let mut unverified_hi: Option<Lsn> = None;
    let mut conflicts: Vec<Conflict>;
    let archived: Vec<Seg<'_>>;
    let (recorded_start, pruned_below) = match archive {
        Some(a) => (a.chain_start, a.pruned_below),
        None => (None, state.pruned_below),
    };
    match archive {
        Some(a) => {
            let (mut not_counted, mut disagree) = (Vec::new(), Vec::new());
            let objects = archived_objects(a, &mut strays, &mut not_counted, Some(&mut disagree), None);
            unverified_hi = not_counted.iter().chain(&disagree).filter(|s| !below_floor(a.pruned_below, s)).map(|s| s.last).max();
            for s in &not_counted {
                // One whose segment another object holds, verified, is a
                // leftover (a crash before its record), off the chain, as
                // verify-plan has it; any other never counts.
                if find_seg(&objects, s.first, s.last).is_some() {
                    leftovers.push(s.name.to_owned());
                } else {
                    unverified.push(s.name.to_owned());
                }
            }
            for s in &disagree {
                unverified.push(s.name.to_owned());
            }
            // A conflict stands while the archive still holds the object it
            // was about (one of a pair that disagree, too). A plain object
            // without a record shows only its size: when that is the size
            // the conflict found, and not the local file's (which the right
            // object would have), it is still the object found.
            let holds = |c: &Conflict| {
                let about = |o: &Seg<'_>| (o.size, o.crc) == (c.archived_size, c.archived_crc32c);
                let unrecorded_same = |o: &Seg<'_>| {
                    o.name == c.name && o.size == c.archived_size && c.archived_size != c.local_size && !o.name.ends_with(Compression::Zstd.suffix())
                };
                find(&objects, &c.name).is_some_and(|i| about(&objects[i]))
                    || disagree.iter().any(|d| d.name == c.name && about(d))
                    || not_counted.iter().any(unrecorded_same)
            };
            conflicts = Vec::new();
            for c in &state.conflicts {
                if holds(c) {
                    conflicts.push(c.clone());
                }
            }
            let mut kept = Vec::with_capacity(objects.len());
            let (mut in_prior, mut in_listed) = (Cursor::new(&prior), Cursor::new(&listed));
            for o in objects {
                if held(&conflicts, o.name) {
                    continue;
                }
                // An object counts when the local file is gone, or was
                // compared with it and still has the size archived (a file of
                // another size is compared again, which finds the conflict).
                let confirmed = in_prior.seek(&o).is_some_and(|p| (p.size, p.crc) == (o.size, o.crc));
                if in_listed.seek(&o).is_some_and(|l| !confirmed || l.size != o.size) {
                    to_confirm_segs.push(o);
                } else {
                    kept.push(o);
                }
            }
            // Copies of one segment that disagree: each is compared with the
            // local file, which finds the one that differs (a conflict, and it
            // holds the segment), unless a conflict holds it already.
            for d in &disagree {
                if find(&listed, d.name).is_some() && !held(&conflicts, d.name) {
                    to_confirm_segs.push(*d);
                }
            }
            sort_by_lsn(&mut to_confirm_segs);
            // Each name once, though a listing names an object twice.
            let mut unique = 0;
            for i in 0..to_confirm_segs.len() {
                let s = to_confirm_segs[i];
                let run = &to_confirm_segs[..unique];
                if !run.iter().rev().take_while(|p| (p.first, p.last) == (s.first, s.last)).any(|p| p.name == s.name) {
                    to_confirm_segs[unique] = s;
                    unique += 1;
                }
            }
            to_confirm_segs.truncate(unique);
            archived = kept;
        }
        None => {
            conflicts = state.conflicts.clone();
            let mut kept = Vec::with_capacity(prior.len());
            let mut in_listed = Cursor::new(&listed);
            for p in prior.iter().copied() {
                // A local file of another size than was archived: compare again.
                if in_listed.seek(&p).is_some_and(|l| l.size != p.size) {
                    to_confirm_segs.push(p);
                } else {
                    kept.push(p);
                }
            }
            archived = kept;
        }
    }
    // A conflict is about a local file; without one there is nothing to compare.
    conflicts.retain(|c| find(&listed, &c.name).is_some());

    // The chain start: what the archive records, else what this archiver
    // established, else (until the watermark exists) the lowest segment known.
    let lowest = archived
        .iter()
        .find(|s| !below_floor(pruned_below, s))
        .map(|s| s.first)
        .into_iter()
        .chain(listed.iter().find(|s| !below_floor(pruned_below, s)).map(|s| s.first))
        .min();
    // A start this archiver established but never recorded that a prune
    // floor has since passed (the floor recorded, the new start not yet) is
    // in the pruned part: the start is found as without a state, at the
    // first segment the floor leaves.
    let pruned_away = |start: &Lsn| pruned_below.is_some_and(|f| *start < f) && lowest.is_some_and(|l| *start < l);
    let established = state.last_archived_lsn.and(state.chain_start).filter(|s| !pruned_away(s));
    let chain_start = recorded_start.or(established).or(lowest);
    let last_archived_lsn = watermark(&archived, chain_start);
    let record_chain_start = match archive {
        Some(_) => last_archived_lsn.and(chain_start).filter(|_| recorded_start.is_none()),
        None => last_archived_lsn.and(chain_start).filter(|_| state.last_archived_lsn.is_none()),
    };

    let mut pending = SegmentList::default();
    let mut pruned = Vec::new();
    let mut confirm_at = 0;
    let mut archived_at = 0;
    for s in &listed {
        // Both lists are in LSN order: one merge with each.
        while archived.get(archived_at).is_some_and(|a| lsn_order(a, s).is_lt()) {
            archived_at += 1;
        }
        while to_confirm_segs.get(confirm_at).is_some_and(|a| lsn_order(a, s).is_lt()) {
            confirm_at += 1;
        }
        let same = |a: Option<&Seg<'_>>| a.is_some_and(|a| (a.first, a.last) == (s.first, s.last));
        if same(archived.get(archived_at)) || same(to_confirm_segs.get(confirm_at)) || held(&conflicts, s.name) {
            continue;
        }
        if below_floor(pruned_below, s) {
            pruned.push(s.name.to_owned());
        } else {
            pending.push(s.name, s.size);
        }
    }
    let mut to_confirm = SegmentList::default();
    let mut in_listed = Cursor::new(&listed);
    for s in &to_confirm_segs {
        // Compared with the local file's listed size: a change shows there.
        let size = in_listed.seek(s).map_or(s.size, |l| l.size);
        to_confirm.push(s.name, size);
    }

    // Breaks and off-chain segments over everything known: archived and
    // listed, the same set the watermark is reached over (below the floor
    // too: a prune half done still holds those objects), up to the last LSN
    // of any of them or of an archived object that does not count (so that
    // an unrecorded object at the end is a gap, as verify-plan says).
    let known = merge(&archived, &listed);
    let hi = known.iter().map(|s| s.last).chain(unverified_hi).max();
    let (breaks, off_chain) = match (chain_start, hi) {
        (Some(start), Some(hi)) => {
            let w = chain::walk(&known, Start::At(start), hi);
            let mut off = Vec::new();
            for (i, s) in known.iter().enumerate() {
                // Below the floor, pruned: `pruned` names the listed ones.
                if !w.used[i] && !below_floor(pruned_below, s) {
                    off.push(s.name.to_owned());
                }
            }
            (w.breaks, off)
        }
        _ => (Vec::new(), Vec::new()),
    };
    let mut off_chain = off_chain;
    off_chain.extend(leftovers);

    // A failure is kept while its segment is listed and not archived.
    let mut failing = FailureList::default();
    for f in state.failing.iter() {
        if find(&listed, f.name).is_some() && find(&archived, f.name).is_none() {
            failing.push(f.name, f.attempts, f.reason);
        }
    }
    let (segments_archived, bytes_archived) = (archived.len() as u64, total_size(&archived));
    // The state's own list, when it is still the one (sorted, nothing
    // dropped): a large archive is not packed again at every scan.
    let same = prior_clean && archive.is_none() && archived.len() == prior.len() && to_confirm_segs.is_empty();
    let repacked = (!same).then(|| ArchivedList::from_segs(&archived));
    let failures = state.failures;
    let new_state = State {
        chain_start,
        last_archived_lsn,
        pruned_below,
        segments_archived,
        bytes_archived,
        failures,
        archived: repacked.unwrap_or(state.archived),
        failing,
        conflicts: conflicts.clone(),
    };
    ScanReport { state: new_state, pending, to_confirm, pruned, skipped, strays, unverified, breaks, off_chain, conflicts, record_chain_start }
}

/// The key an upload of the segment `name` goes to: its object name under
/// the configured compression, under the prefix.
pub fn upload_key(config: &Config, name: &str) -> String {
    let mut key = object_key(&config.prefix, name);
    key.push_str(config.compression.suffix());
    key
}

/// The key of an object under the prefix, as the seed's `plan_archive` formed it.
pub fn object_key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}/{name}")
    }
}

/// Splits `pending` into batches of at most `batch_size` segments and
/// `batch_bytes` bytes (and at least one segment): the end of each.
pub fn plan_batches(config: &Config, pending: &SegmentList) -> Vec<u32> {
    let most = config.batch_size.max(1);
    let mut ends = Vec::new();
    // Summed wide: sizes near u64::MAX must not saturate under the limit.
    let (mut count, mut bytes) = (0u32, 0u128);
    for (i, (_, size)) in pending.iter().enumerate() {
        let over = config.batch_bytes > 0 && bytes + u128::from(size) > u128::from(config.batch_bytes);
        if count > 0 && (count == most || over) {
            ends.push(i as u32);
            (count, bytes) = (0, 0);
        }
        count += 1;
        bytes += u128::from(size);
    }
    if count > 0 {
        ends.push(pending.len() as u32);
    }
    ends
}

/// Checks a receipt against the listed size: the whole file was read, the
/// store holds exactly that many bytes, a stored checksum is never a
/// different one, and with `verify` there is one.
pub fn check_receipt(listed_size: u64, verify: bool, receipt: &UploadReceipt) -> Result<(), VerifyError> {
    if receipt.read_size != listed_size {
        return Err(VerifyError::SizeChanged(listed_size, receipt.read_size));
    }
    if receipt.stored_size != receipt.read_size {
        return Err(VerifyError::StoredSizeMismatch(receipt.read_size, receipt.stored_size));
    }
    match receipt.stored_crc32c {
        Some(stored) if stored != receipt.read_crc32c => Err(VerifyError::ChecksumMismatch(receipt.read_crc32c, stored)),
        None if verify => Err(VerifyError::NotVerified),
        _ => Ok(()),
    }
}

/// What one outcome says about its segment, in the order outcomes came.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Event {
    Archived,
    Failed,
    Conflict,
}

/// Records outcomes of uploads and comparisons, any number at once.
pub fn record_uploads(config: &Config, state: &State, outcomes: &[UploadOutcome]) -> RecordReport {
    let prior = state.archived.segs();
    let mut conflicts = state.conflicts.clone();
    let mut failures = state.failures;
    let (mut new_conflicts, mut refused) = (Vec::new(), Vec::new());
    // Each outcome as an event: its segment, with its position in `crc`
    // (so that sorting keeps the order of one name's outcomes), its checksum
    // or failure in `verdicts`.
    let mut events: Vec<Seg<'_>> = Vec::with_capacity(outcomes.len());
    let mut verdicts: Vec<(Event, u32, String)> = Vec::with_capacity(outcomes.len());
    for o in outcomes {
        // Every name is parsed again: its LSNs come from nowhere else.
        let Some(seg) = Seg::parse(&o.name, o.size, verdicts.len() as u32) else {
            refused.push(o.name.clone());
            continue;
        };
        let verdict = match &o.result {
            Ok(receipt) => match check_receipt(o.size, config.verify_checksums, receipt) {
                Ok(()) => (Event::Archived, receipt.read_crc32c, String::new()),
                Err(e) => (Event::Failed, 0, e.to_string()),
            },
            Err(StorageError::Conflict(c)) => {
                let conflict = Conflict { name: o.name.clone(), ..c.clone() };
                conflicts.retain(|c| !same_segment(&c.name, &o.name));
                conflicts.push(conflict.clone());
                new_conflicts.push(conflict);
                (Event::Conflict, 0, String::new())
            }
            Err(e) => (Event::Failed, 0, e.to_string()),
        };
        failures = failures.saturating_add(u64::from(verdict.0 != Event::Archived));
        events.push(seg);
        verdicts.push(verdict);
    }
    sort_by_lsn(&mut events);

    // The failures known, by name, with their positions in the state's list.
    let mut known_failing: Vec<Seg<'_>> =
        state.failing.iter().enumerate().filter_map(|(i, f)| Seg::parse(f.name, u64::from(f.attempts), i as u32)).collect();
    sort_segs(&mut known_failing);
    let reasons: Vec<&str> = state.failing.iter().map(|f| f.reason).collect();

    // One walk over the names with a known failure or an event, in order.
    let mut failing = FailureList::default();
    let (mut added, mut gone): (Vec<Seg<'_>>, Vec<Seg<'_>>) = (Vec::new(), Vec::new());
    let (mut archived_names, mut failed) = (Vec::new(), Vec::new());
    let (mut k, mut e) = (0, 0);
    while k < known_failing.len() || e < events.len() {
        let next = match (known_failing.get(k), events.get(e)) {
            (Some(f), Some(ev)) if lsn_order(f, ev).is_le() => *f,
            (Some(f), None) => *f,
            (_, Some(ev)) => *ev,
            (None, None) => break,
        };
        let same = |s: &Seg<'_>| (s.first, s.last) == (next.first, next.last);
        let (mut attempts, mut reason) = (0u32, String::new());
        if known_failing.get(k).is_some_and(same) {
            let f = known_failing[k];
            (attempts, reason) = (u32::try_from(f.size).unwrap_or(u32::MAX), reasons[f.crc as usize].to_owned());
            k += 1;
        }
        let mut last: Option<(Event, Seg<'_>)> = None;
        // The last object of this segment whose outcome was not a success.
        let mut bad: Option<&str> = None;
        while let Some(ev) = events.get(e).filter(|s| same(s)) {
            let (event, crc, why) = &verdicts[ev.crc as usize];
            // Another object of the segment that failed in this call, or that
            // a conflict stands on: the segment is held whatever this object
            // gave, in any order (two copies that disagree).
            let held_by_other = bad.is_some_and(|b| b != ev.name) || conflicts.iter().any(|c| c.name != ev.name && same_segment(&c.name, ev.name));
            // Two objects of the segment whose receipts read different bytes
            // (the file changed between them): neither counts.
            let other_bytes = match last {
                Some((Event::Archived, a)) if a.name != ev.name && (a.size, a.crc) != (ev.size, *crc) => Some(a),
                _ => None,
            };
            match (event, other_bytes) {
                (Event::Archived, _) if held_by_other => {}
                (Event::Archived, Some(a)) => {
                    attempts = attempts.saturating_add(1);
                    failures = failures.saturating_add(1);
                    reason = format!(
                        "{} and {} were read with different bytes ({} bytes with CRC32C {:08x}, and {} with {crc:08x})",
                        a.name, ev.name, a.size, a.crc, ev.size
                    );
                    last = Some((Event::Failed, *ev));
                    bad = Some(ev.name);
                }
                (Event::Archived, None) => {
                    attempts = 0;
                    last = Some((Event::Archived, Seg { crc: *crc, ..*ev }));
                }
                (Event::Conflict, _) => {
                    attempts = 0;
                    last = Some((Event::Conflict, *ev));
                    bad = Some(ev.name);
                }
                (Event::Failed, _) => {
                    // Two objects of one segment failing in one call are one
                    // attempt of it; the same object twice is two.
                    if bad.is_none_or(|b| b == ev.name) {
                        attempts = attempts.saturating_add(1);
                    }
                    reason.clone_from(why);
                    last = Some((Event::Failed, *ev));
                    bad = Some(ev.name);
                }
            }
            e += 1;
        }
        // A name's last outcome decides; a failure does not take away a
        // copy that an earlier run archived and verified. A segment is
        // reported failed once, by its last outcome, and only when that
        // failed: one archived in the end did not fail.
        if let Some((Event::Failed, seg)) = last {
            failed.push(SegmentFailure { name: seg.name.to_owned(), attempts, last_reason: reason.clone() });
        }
        match last {
            Some((Event::Archived, seg)) => {
                added.push(seg);
                archived_names.push(seg.name.to_owned());
            }
            Some((Event::Conflict, seg)) => gone.push(seg),
            _ => {}
        }
        let still_archived = prior.binary_search_by(|p| lsn_order(p, &next)).is_ok();
        if attempts > 0 && !(still_archived && last.is_some_and(|(e, _)| e == Event::Failed)) {
            // Named by its latest outcome (the object it was last tried as).
            failing.push(last.map_or(next.name, |(_, s)| s.name), attempts, &reason);
        }
    }

    // A receipt proves that the object under the key holds the local bytes
    // now (the operator replaced the object a conflict was about, say): a
    // conflict about that object is over. One on the segment's other object
    // held it above, and stands.
    if !conflicts.is_empty() {
        let ended = |c: &Conflict| added.iter().any(|a| a.name == c.name);
        conflicts.retain(|c| !ended(c));
        new_conflicts.retain(|c| !ended(c));
    }

    // The archived set: what was known, and what was just archived, in order;
    // a segment found in conflict is not in it.
    let mut archived: Vec<Seg<'_>> = Vec::with_capacity(prior.len() + added.len());
    let (mut i, mut j, mut g) = (0, 0, 0);
    while i < prior.len() || j < added.len() {
        let s = match (prior.get(i), added.get(j)) {
            (Some(p), Some(a)) if lsn_order(p, a).is_lt() => {
                i += 1;
                *p
            }
            (Some(p), Some(a)) if lsn_order(p, a).is_eq() => {
                i += 1;
                j += 1;
                *a
            }
            (Some(p), None) => {
                i += 1;
                *p
            }
            (_, Some(a)) => {
                j += 1;
                *a
            }
            (None, None) => break,
        };
        while gone.get(g).is_some_and(|x| lsn_order(x, &s).is_lt()) {
            g += 1;
        }
        if gone.get(g).is_some_and(|x| lsn_order(x, &s).is_eq()) {
            continue;
        }
        archived.push(s);
    }
    let chain_start = state.chain_start.or(archived.first().map(|s| s.first));
    let last_archived_lsn = watermark(&archived, chain_start);
    let record_chain_start = last_archived_lsn.and(chain_start).filter(|_| state.last_archived_lsn.is_none());
    RecordReport {
        state: State {
            chain_start,
            last_archived_lsn,
            pruned_below: state.pruned_below,
            segments_archived: archived.len() as u64,
            bytes_archived: total_size(&archived),
            failures,
            archived: ArchivedList::from_segs(&archived),
            failing,
            conflicts,
        },
        archived: archived_names,
        failed,
        conflicts: new_conflicts,
        refused,
        record_chain_start,
    }
}

/// How long to wait before retrying a segment that has failed `attempts`
/// times, in milliseconds: exponential from the base, capped, with equal
/// jitter drawn from `random` (the host's randomness).
pub fn retry_delay(config: &Config, attempts: u32, random: u64) -> u64 {
    if attempts == 0 {
        return 0;
    }
    let exp = config.retry_base_ms.saturating_mul(1u64.checked_shl(attempts - 1).unwrap_or(u64::MAX)).min(config.retry_max_ms);
    let half = exp / 2;
    half + random % (exp - half + 1)
}

/// Local segments that may be deleted: listed, archived under their own
/// key with the listed size, at or below the watermark, not failing, not in
/// conflict; and only when deletion is configured.
pub fn deletable(config: &Config, state: &State, listing: &Listing) -> SegmentList {
    let mut out = SegmentList::default();
    let Some(w) = state.last_archived_lsn.filter(|_| config.delete_after_archive) else {
        return out;
    };
    let archived = state.archived.segs();
    let mut failing: Vec<Seg<'_>> = state.failing.iter().filter_map(|f| Seg::parse(f.name, 0, 0)).collect();
    sort_segs(&mut failing);
    let mut ignored = Vec::new();
    let (mut in_archived, mut in_failing) = (Cursor::new(&archived), Cursor::new(&failing));
    for s in listed_segments(listing.entries(), &mut ignored) {
        let own_key = in_archived.seek(&s).filter(|a| a.size == s.size);
        let failing = in_failing.seek(&s).is_some();
        let conflict = held(&state.conflicts, s.name);
        if let Some(a) = own_key
            && s.last <= w
            && !failing
            && !conflict
        {
            // The object's name: the host deletes the local file of that
            // segment once the object under that key proves to hold it.
            out.push(a.name, s.size);
        }
    }
    out
}

/// How many LSNs up to `current` are not yet covered by the watermark.
pub fn rpo_gap(state: &State, current: Lsn) -> u64 {
    let covered_below = match (state.last_archived_lsn, state.chain_start) {
        (Some(w), _) => u128::from(w) + 1,
        (None, Some(start)) => u128::from(start),
        (None, None) => 1,
    };
    let gap = (u128::from(current) + 1).saturating_sub(covered_below);
    u64::try_from(gap).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::format_segment_name;
    use crate::packed::DirEntry;
    use alloc::vec;
    use proptest::prelude::*;

    fn file(name: &str, size: u64) -> DirEntry {
        DirEntry { name: name.into(), utf8: true, kind: EntryKind::File, size }
    }

    fn seg(first: Lsn, last: Lsn) -> DirEntry {
        file(&format_segment_name(first, last).unwrap(), 100)
    }

    fn name(first: Lsn, last: Lsn) -> String {
        format_segment_name(first, last).unwrap()
    }

    fn listing(entries: &[DirEntry]) -> Listing {
        entries.iter().collect()
    }

    /// A receipt for a clean upload of `size` bytes with checksum `crc`.
    fn receipt(size: u64, crc: u32) -> UploadReceipt {
        UploadReceipt { read_size: size, read_crc32c: crc, stored_size: size, stored_crc32c: Some(crc), existed: false }
    }

    fn outcome(name: &str, size: u64, result: Result<UploadReceipt, StorageError>) -> UploadOutcome {
        UploadOutcome { name: name.into(), size, result }
    }

    /// The checksum the tests give a segment's bytes.
    fn crc_of(name: &str) -> u32 {
        name.bytes().fold(7u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)))
    }

    /// Uploads everything pending, each with a clean receipt, except `failing`.
    fn archive_pending(state: State, entries: &[DirEntry], failing: &[&str]) -> (State, ScanReport) {
        let report = scan(state, &listing(entries), None);
        let outcomes: Vec<UploadOutcome> = report
            .pending
            .iter()
            .map(|(n, size)| {
                let result = if failing.contains(&n) { Err(StorageError::Io("down".into())) } else { Ok(receipt(size, crc_of(n))) };
                outcome(n, size, result)
            })
            .collect();
        let state = record_uploads(&Config::default(), &report.state, &outcomes).state;
        (state, report)
    }

    fn archive_listing(objects: &[(Lsn, Lsn, Option<u32>)]) -> ArchiveListing {
        let mut a = ArchiveListing::default();
        for &(f, l, crc) in objects {
            a.push(&seg(f, l), crc);
        }
        a
    }

    /// The archive's own folders are not entries: a host that lists one
    /// anyway gets it back as a stray, and nothing else changes.
    #[test]
    fn reports_a_listed_record_folder_as_a_stray() {
        let mut archive = archive_listing(&[(1, 10, Some(7))]);
        for folder in ["_checksums", "_chain", "_conflicts", "_staging"] {
            archive.push(&DirEntry { name: folder.into(), utf8: true, kind: EntryKind::Dir, size: 0 }, None);
        }
        let report = scan(State::default(), &listing(&[seg(1, 10)]), Some(&archive));
        let strays: Vec<&str> = report.strays.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(strays, ["_checksums", "_chain", "_conflicts", "_staging"]);
        assert_eq!(report.to_confirm.names(), [name(1, 10)]);
        assert!(report.pending.is_empty(), "{report:?}");
    }

    #[test]
    fn reports_every_refused_entry_with_its_reason() {
        let entries = vec![
            file("wal-0a-64.partial", 1),
            file("wal-1-a.txt", 1),
            file("wal-+a-+64.seg", 1),
            file("wal-A-FF.seg", 1),
            file("wal-0000000000000064-000000000000000a.seg", 1),
            DirEntry { name: name(1, 2), utf8: true, kind: EntryKind::Symlink, size: 0 },
            DirEntry { name: name(3, 4), utf8: true, kind: EntryKind::Dir, size: 0 },
            DirEntry { name: "wal-\u{fffd}.seg".into(), utf8: false, kind: EntryKind::File, size: 1 },
            DirEntry { name: "fifo".into(), utf8: true, kind: EntryKind::Other, size: 0 },
        ];
        let report = scan(State::default(), &listing(&entries), None);
        assert!(report.pending.is_empty());
        assert_eq!(report.skipped.len(), entries.len());
        let reason = |n: &str| report.skipped.iter().find(|s| s.name == n).unwrap().reason;
        assert_eq!(reason("wal-0a-64.partial"), SkipReason::BadName(NameError::WrongSuffix));
        assert_eq!(reason(&name(1, 2)), SkipReason::NotAFile(EntryKind::Symlink));
        assert_eq!(reason(&name(3, 4)), SkipReason::NotAFile(EntryKind::Dir));
        assert_eq!(reason("wal-\u{fffd}.seg"), SkipReason::NotUtf8);
        assert_eq!(reason("wal-0000000000000064-000000000000000a.seg"), SkipReason::BadName(NameError::FirstAfterLast));
    }

    #[test]
    fn holds_the_watermark_at_a_failed_segment_until_it_is_retried() {
        let entries = vec![seg(1, 10), seg(11, 20), seg(21, 30)];
        let (state, _) = archive_pending(State::default(), &entries, &[&name(1, 10)]);
        assert_eq!(state.last_archived_lsn, None);
        assert_eq!(state.chain_start, Some(1));
        assert_eq!(state.failures, 1);
        assert_eq!(state.failing.iter().map(|f| (f.name, f.attempts)).collect::<Vec<_>>(), [(name(1, 10).as_str(), 1)]);
        let (state, report) = archive_pending(state, &entries, &[]);
        assert_eq!(report.pending.names(), [name(1, 10)]);
        assert_eq!(state.last_archived_lsn, Some(30));
        assert!(state.failing.is_empty());
        assert_eq!((state.segments_archived, state.bytes_archived), (3, 300));
    }

    #[test]
    fn refuses_a_receipt_that_does_not_match() {
        let good = receipt(100, 7);
        let cases = [
            (UploadReceipt { read_size: 99, ..good }, VerifyError::SizeChanged(100, 99)),
            (UploadReceipt { stored_size: 0, ..good }, VerifyError::StoredSizeMismatch(100, 0)),
            (UploadReceipt { stored_crc32c: Some(8), ..good }, VerifyError::ChecksumMismatch(7, 8)),
            (UploadReceipt { stored_crc32c: None, ..good }, VerifyError::NotVerified),
        ];
        for (r, want) in cases {
            assert_eq!(check_receipt(100, true, &r), Err(want));
        }
    }

    /// Issue 11, part 3: skipping the read-back may skip a check, but a
    /// checksum that was read back and differs is never accepted.
    #[test]
    fn never_accepts_a_known_checksum_mismatch_without_verification() {
        let good = receipt(100, 7);
        assert_eq!(check_receipt(100, false, &UploadReceipt { stored_crc32c: None, ..good }), Ok(()));
        assert_eq!(check_receipt(100, false, &UploadReceipt { stored_crc32c: Some(8), ..good }), Err(VerifyError::ChecksumMismatch(7, 8)));
        assert_eq!(check_receipt(100, false, &UploadReceipt { stored_size: 1, ..good }), Err(VerifyError::StoredSizeMismatch(100, 1)));
        let config = Config { verify_checksums: false, ..Config::default() };
        let n = name(1, 10);
        let r = record_uploads(&config, &State::default(), &[outcome(&n, 100, Ok(UploadReceipt { stored_crc32c: Some(8), ..good }))]);
        assert!(r.archived.is_empty());
        assert_eq!(r.state.last_archived_lsn, None);
        assert_eq!(r.failed[0].last_reason, "CRC32C 00000007 was read but the stored object has 00000008");
    }

    /// Issue 12: `run-cycle` deleted `5-8`, never uploaded, because an
    /// archived `1-10` covers its LSNs.
    #[test]
    fn never_deletes_a_segment_that_was_not_archived_under_its_own_key() {
        let entries = vec![seg(1, 10), seg(5, 8)];
        let (state, _) = archive_pending(State::default(), &entries, &[&name(5, 8)]);
        assert_eq!(state.last_archived_lsn, Some(10));
        let on = Config { delete_after_archive: true, ..Config::default() };
        assert_eq!(deletable(&on, &state, &listing(&entries)).names(), [name(1, 10)]);
        // Not failing any more, but still not archived: still not deletable.
        let cleared = State { failing: FailureList::default(), ..state };
        assert_eq!(deletable(&on, &cleared, &listing(&entries)).names(), [name(1, 10)]);
        // And it is pending, so it gets uploaded.
        assert_eq!(scan(cleared, &listing(&entries), None).pending.names(), [name(5, 8)]);
    }

    /// Issue 12: with `{100-200}` archived and `[1-10, 100-200]` listed, the
    /// watermark went from 200 down to 10.
    #[test]
    fn keeps_the_watermark_when_an_older_disconnected_segment_arrives() {
        let big = name(100, 200);
        let mut archive = archive_listing(&[(100, 200, Some(crc_of(&big)))]);
        let first = scan(State::default(), &listing(&[seg(100, 200)]), Some(&archive));
        assert_eq!(first.to_confirm.names(), [big.clone()]);
        let confirmed = UploadReceipt { existed: true, ..receipt(100, crc_of(&big)) };
        let r = record_uploads(&Config::default(), &first.state, &[outcome(&big, 100, Ok(confirmed))]);
        assert_eq!(r.state.last_archived_lsn, Some(200));
        assert_eq!(r.record_chain_start, Some(100));
        archive.chain_start = Some(100);
        let entries = [seg(1, 10), seg(100, 200)];
        let second = scan(r.state.clone(), &listing(&entries), Some(&archive));
        assert_eq!((second.state.chain_start, second.state.last_archived_lsn), (Some(100), Some(200)));
        assert_eq!(second.pending.names(), [name(1, 10)], "the older segment is still uploaded");
        // A lost state gives the same chain start: the archive holds it.
        let lost = scan(State::default(), &listing(&entries), Some(&archive));
        assert_eq!(lost.state.chain_start, Some(100));
        // And the upload of the older one does not move it either.
        let n = name(1, 10);
        let r = record_uploads(&Config::default(), &second.state, &[outcome(&n, 100, Ok(receipt(100, 1)))]);
        assert_eq!((r.state.chain_start, r.state.last_archived_lsn), (Some(100), Some(200)));
        assert_eq!(scan(r.state, &listing(&entries), None).off_chain, [name(1, 10)]);
    }

    /// Issue 12: `record-archived` took a task named `notes.txt` with LSNs
    /// 0..MAX and moved the watermark to u64::MAX.
    #[test]
    fn refuses_an_outcome_whose_name_is_not_a_segment_name() {
        let r = record_uploads(&Config::default(), &State::default(), &[outcome("notes.txt", 5, Ok(receipt(5, 1)))]);
        assert_eq!(r.refused, ["notes.txt"]);
        assert_eq!(r.state, State::default());
    }

    /// Found by the `plan` fuzz target: a name given twice in one call,
    /// archived and then failed, counted as archived on its first outcome.
    #[test]
    fn counts_a_name_given_twice_by_its_last_outcome() {
        let n = name(1, 10);
        let ok = outcome(&n, 100, Ok(receipt(100, 7)));
        let bad = outcome(&n, 100, Ok(UploadReceipt { stored_size: 99, ..receipt(100, 7) }));
        let r = record_uploads(&Config::default(), &State::default(), &[ok.clone(), bad.clone()]);
        assert!(r.archived.is_empty() && r.state.archived.is_empty());
        assert_eq!(r.state.failing.iter().map(|f| f.attempts).collect::<Vec<_>>(), [1]);
        assert_eq!(r.failed.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), [n.as_str()]);
        let r = record_uploads(&Config::default(), &State::default(), &[bad.clone(), bad.clone(), ok]);
        assert_eq!(r.archived, [n.clone()]);
        assert!(r.state.failing.is_empty());
        // The report says the same as the state: archived in the end, not failed.
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        let twice = record_uploads(&Config::default(), &State::default(), &[bad.clone(), bad]);
        assert_eq!(twice.failed.len(), 1, "one failure per segment, by its last outcome");
        assert_eq!(twice.failed[0].attempts, 2);
        // A failure later does not take away what the state holds archived.
        let failed = outcome(&n, 100, Err(StorageError::Io("down".into())));
        let again = record_uploads(&Config::default(), &r.state, &[failed]);
        assert_eq!(again.state.archived, r.state.archived);
        assert!(again.state.failing.is_empty());
        // It is still reported, as a failure that took nothing away.
        assert_eq!(again.failed.len(), 1);
    }

    #[test]
    fn a_file_listed_after_a_directory_of_its_name_is_listed_twice() {
        let a = name(1, 10);
        for kind in [EntryKind::Dir, EntryKind::Symlink, EntryKind::Other] {
            let entries = [DirEntry { name: a.clone(), utf8: true, kind, size: 100 }, file(&a, 200)];
            let report = scan(State::default(), &listing(&entries), None);
            assert!(report.pending.is_empty(), "{kind:?}: {report:?}");
            assert_eq!(report.skipped.iter().map(|s| s.reason).collect::<Vec<_>>(), [SkipReason::NotAFile(kind), SkipReason::ListedTwice]);
            // The same in an archive listing: the file is not counted.
            let mut archive = ArchiveListing::default();
            archive.push(&entries[0], None);
            archive.push(&file(&a, 100), Some(crc_of(&a)));
            let report = scan(State::default(), &listing(&[]), Some(&archive));
            assert_eq!(report.state.last_archived_lsn, None, "{kind:?}: {report:?}");
            assert_eq!(report.strays.iter().map(|s| s.reason).collect::<Vec<_>>(), [SkipReason::NotAFile(kind), SkipReason::ListedTwice]);
        }
        // A file first, then a directory of its name: the file counts.
        let entries = [file(&a, 100), DirEntry { name: a.clone(), utf8: true, kind: EntryKind::Dir, size: 0 }];
        assert_eq!(scan(State::default(), &listing(&entries), None).pending.names(), [a.as_str()]);
    }

    #[test]
    fn two_objects_of_a_segment_read_as_different_bytes_count_neither() {
        let a = name(1, 10);
        let zst = format!("{a}.zst");
        let plain = outcome(&a, 100, Ok(receipt(100, 2)));
        let packed = outcome(&zst, 100, Ok(receipt(100, 9)));
        for outcomes in [[plain.clone(), packed.clone()], [packed, plain]] {
            let r = record_uploads(&Config::default(), &State::default(), &outcomes);
            assert!(r.archived.is_empty() && r.state.archived.is_empty(), "{r:?}");
            assert_eq!(r.state.last_archived_lsn, None);
            assert_eq!(r.failed.len(), 1, "{r:?}");
            assert!(r.failed[0].last_reason.contains("different bytes"), "{r:?}");
            assert_eq!(r.state.failing.len(), 1);
            // Counted for alerting, as any failure is.
            assert_eq!(r.state.failures, 1, "{r:?}");
        }
        // The same bytes read for both: one segment, counted.
        let r = record_uploads(&Config::default(), &State::default(), &[outcome(&a, 100, Ok(receipt(100, 2))), outcome(&zst, 100, Ok(receipt(100, 2)))]);
        assert_eq!(r.state.archived.len(), 1);
        assert!(r.failed.is_empty());
    }

    #[test]
    fn counters_saturate_instead_of_wrapping() {
        let state = State { failures: u64::MAX, ..State::default() };
        let r = record_uploads(&Config::default(), &state, &[outcome(&name(1, 10), 100, Err(StorageError::Io("down".into())))]);
        assert_eq!(r.state.failures, u64::MAX);
        let big = [(name(1, 10), u64::MAX), (name(11, 20), 5)];
        let outcomes: Vec<UploadOutcome> = big.iter().map(|(n, size)| outcome(n, *size, Ok(receipt(*size, crc_of(n))))).collect();
        let r = record_uploads(&Config::default(), &State::default(), &outcomes);
        assert_eq!(r.state.bytes_archived, u64::MAX);
        let entries: Vec<DirEntry> = big.iter().map(|(n, size)| file(n, *size)).collect();
        assert_eq!(scan(r.state, &listing(&entries), None).state.bytes_archived, u64::MAX);
    }

    #[test]
    fn lists_a_name_listed_twice_once() {
        let entries = [seg(1, 10), seg(1, 10), seg(11, 20)];
        let report = scan(State::default(), &listing(&entries), None);
        assert_eq!(report.pending.names(), [name(1, 10), name(11, 20)]);
        assert_eq!(report.skipped, [Skipped { name: name(1, 10), reason: SkipReason::ListedTwice }]);
        assert!(report.breaks.is_empty() && report.off_chain.is_empty());
        let batches = plan_batches(&Config::default(), &report.pending);
        assert_eq!(batches, [2]);
    }

    #[test]
    fn batches_by_count_and_by_bytes_with_at_least_one_segment_each() {
        let mut pending = SegmentList::default();
        for (i, size) in [10u64, 10, 50, 10, 10, 10].into_iter().enumerate() {
            pending.push(&name(i as u64 * 10, i as u64 * 10 + 9), size);
        }
        let config = Config { batch_size: 3, batch_bytes: 25, ..Config::default() };
        assert_eq!(plan_batches(&config, &pending), [2, 3, 5, 6]);
        let config = Config { batch_size: 4, batch_bytes: 0, ..Config::default() };
        assert_eq!(plan_batches(&config, &pending), [4, 6]);
        assert!(plan_batches(&config, &SegmentList::default()).is_empty());
        let config = Config { batch_size: 0, ..config };
        assert_eq!(plan_batches(&config, &pending).len(), 6);
    }

    #[test]
    fn a_byte_limit_near_u64_max_is_kept_without_saturating() {
        let mut pending = SegmentList::default();
        for (i, size) in [u64::MAX, u64::MAX, 1].into_iter().enumerate() {
            pending.push(&name(i as u64 * 10, i as u64 * 10 + 9), size);
        }
        let config = Config { batch_size: 16, batch_bytes: u64::MAX, ..Config::default() };
        // Each over half the limit: one a batch, where a saturating sum made one batch of all three.
        assert_eq!(plan_batches(&config, &pending), [1, 2, 3]);
        let mut pending = SegmentList::default();
        for (i, size) in [u64::MAX - 1, 1, 1].into_iter().enumerate() {
            pending.push(&name(i as u64 * 10, i as u64 * 10 + 9), size);
        }
        assert_eq!(plan_batches(&config, &pending), [2, 3]);
    }

    #[test]
    fn archives_to_the_compressed_key_and_deletes_by_the_object_that_holds_the_segment() {
        let config = Config { compression: Compression::Zstd, delete_after_archive: true, ..Config::default() };
        assert_eq!(upload_key(&config, &name(1, 10)), format!("{}.zst", name(1, 10)));
        assert_eq!(upload_key(&Config { prefix: "p".into(), ..config.clone() }, &name(1, 10)), format!("p/{}.zst", name(1, 10)));
        let entries = [seg(1, 10), seg(11, 20)];
        let report = scan(State::default(), &listing(&entries), None);
        // Outcomes are named by the object: the segment's name and the suffix.
        let outcomes: Vec<UploadOutcome> =
            report.pending.iter().map(|(n, size)| outcome(&format!("{n}.zst"), size, Ok(receipt(size, crc_of(n))))).collect();
        let r = record_uploads(&config, &report.state, &outcomes);
        assert_eq!(r.state.last_archived_lsn, Some(20));
        assert_eq!(r.archived, [format!("{}.zst", name(1, 10)), format!("{}.zst", name(11, 20))]);
        assert_eq!(r.state.archived.names(), r.archived);
        // Archived either way: nothing is pending again, with either setting.
        let again = scan(r.state.clone(), &listing(&entries), None);
        assert!(again.pending.is_empty() && again.to_confirm.is_empty(), "{again:?}");
        let gone = deletable(&config, &r.state, &listing(&entries));
        assert_eq!(gone.names(), r.archived, "deletion names the object whose key proves it");
    }

    #[test]
    fn a_prune_half_done_is_one_chain_in_scan_verify_and_restore() {
        // The floor is recorded, the chain start not yet moved, 1-10 not yet deleted.
        let spans = [(1, 10), (11, 20), (21, 30)];
        let objects: Vec<(Lsn, Lsn, Option<u32>)> = spans.iter().map(|&(f, l)| (f, l, Some(crc_of(&name(f, l))))).collect();
        for start in [Some(1), None] {
            let mut archive = archive_listing(&objects);
            (archive.chain_start, archive.pruned_below) = (start, Some(11));
            let report = scan(State::default(), &listing(&[]), Some(&archive));
            let verify = crate::restore::verify_plan(&archive, None, None).unwrap();
            assert_eq!(report.breaks, verify.breaks, "{start:?}: {report:?}");
            assert!(report.breaks.is_empty(), "{start:?}: {report:?}");
            assert_eq!(report.state.last_archived_lsn, Some(30), "{start:?}");
            // Never a chain start below the floor.
            assert_eq!(report.record_chain_start, start.is_none().then_some(11), "{start:?}");
            assert!(report.off_chain.is_empty(), "{start:?}: {report:?}");
        }
        // Done: the chain start moved to the floor; a local copy below it is
        // pruned (kept locally, never uploaded), not off the chain.
        let mut archive = archive_listing(&objects[1..]);
        (archive.chain_start, archive.pruned_below) = (Some(11), Some(11));
        let report = scan(State::default(), &listing(&[seg(1, 10)]), Some(&archive));
        assert_eq!(report.pruned, [name(1, 10)]);
        assert!(report.breaks.is_empty() && report.off_chain.is_empty(), "{report:?}");
        assert_eq!(report.state.last_archived_lsn, Some(30));
    }

    #[test]
    fn a_start_never_recorded_gives_way_to_a_prune_floor_past_it() {
        // The chain start 1 was established but its record failed; a prune
        // to 25 then recorded its floor and crashed before recording start 21.
        let spans = [(1, 10), (11, 20), (21, 30), (31, 40)];
        let objects: Vec<(Lsn, Lsn, Option<u32>)> = spans.iter().map(|&(f, l)| (f, l, Some(crc_of(&name(f, l))))).collect();
        let mut archive = archive_listing(&objects);
        archive.pruned_below = Some(25);
        let fresh = scan(State::default(), &listing(&[]), Some(&archive));
        let carried = State { chain_start: Some(1), ..fresh.state.clone() };
        let carried = State { last_archived_lsn: Some(40), ..carried };
        let again = scan(carried, &listing(&[]), Some(&archive));
        for r in [&fresh, &again] {
            assert_eq!(r.state.chain_start, Some(21), "{r:?}");
            assert_eq!(r.record_chain_start, Some(21), "{r:?}");
            assert_eq!(r.state.last_archived_lsn, Some(40));
        }
    }

    #[test]
    fn a_leftover_copy_without_a_record_is_off_the_chain_in_scan_as_in_verify() {
        let a = name(1, 10);
        let mut archive = ArchiveListing::default();
        archive.push(&file(&a, 100), None);
        archive.push(&file(&format!("{a}.zst"), 100), Some(crc_of(&a)));
        let report = scan(State::default(), &listing(&[]), Some(&archive));
        let verify = crate::restore::verify_plan(&archive, None, None).unwrap();
        assert!(report.unverified.is_empty() && verify.unverified.is_empty(), "{report:?} {verify:?}");
        assert_eq!(report.off_chain, [a.clone()]);
        assert_eq!(verify.off_chain, report.off_chain);
        assert_eq!(report.state.last_archived_lsn, Some(10));
    }

    #[test]
    fn an_unrecorded_object_at_the_end_is_a_gap_in_scan_as_in_verify() {
        let mut archive = archive_listing(&[(1, 10, Some(crc_of(&name(1, 10)))), (11, 20, None)]);
        archive.chain_start = Some(1);
        let report = scan(State::default(), &listing(&[]), Some(&archive));
        assert_eq!(report.unverified, [name(11, 20)]);
        assert_eq!(report.breaks, [Break::Gap { from: 11, to: 20 }]);
        assert_eq!(crate::restore::verify_plan(&archive, None, None).unwrap().breaks, report.breaks);
        // With the local file listed, it is pending, part of the chain: no gap.
        let report = scan(State::default(), &listing(&[seg(1, 10), seg(11, 20)]), Some(&archive));
        assert_eq!(report.pending.names(), [name(11, 20)]);
        assert!(report.breaks.is_empty(), "{report:?}");
    }

    #[test]
    fn counts_a_segment_held_plain_and_compressed_once_and_never_when_the_copies_disagree() {
        let entries = [seg(1, 10), seg(11, 20)];
        let mut archive = ArchiveListing::default();
        let (a, b) = (name(1, 10), name(11, 20));
        archive.push(&file(&a, 100), Some(crc_of(&a)));
        archive.push(&file(&format!("{a}.zst"), 100), Some(crc_of(&a)));
        archive.push(&file(&b, 100), Some(crc_of(&b)));
        archive.push(&file(&format!("{b}.zst"), 100), Some(crc_of(&b) ^ 1));
        let report = scan(State::default(), &listing(&[]), Some(&archive));
        assert_eq!(report.state.archived.names(), [a.as_str()], "one object of the agreeing pair, the plain one");
        assert_eq!(report.state.last_archived_lsn, Some(10));
        assert_eq!(report.unverified, [b.clone(), format!("{b}.zst")], "copies that disagree are neither counted");
        // Without the local file, their LSNs are a gap at the end, as verify-plan reports it.
        assert_eq!(report.breaks, [Break::Gap { from: 11, to: 20 }], "{report:?}");
        assert_eq!(crate::restore::verify_plan(&archive, None, None).unwrap().breaks, report.breaks);
        assert!(report.off_chain.is_empty(), "{report:?}");
        // With the local files there: the agreeing pair is compared once, by
        // its plain object; both copies of the disagreeing one are compared
        // (to find the one that is a conflict), and nothing is uploaded.
        let report = scan(State::default(), &listing(&entries), Some(&archive));
        let mut confirm = report.to_confirm.names();
        confirm[1..].sort_unstable();
        assert_eq!(confirm, [a.clone(), b.clone(), format!("{b}.zst")]);
        assert!(report.pending.is_empty(), "{report:?}");
        // A compressed object alone is the segment.
        let mut only = ArchiveListing::default();
        only.push(&file(&format!("{a}.zst"), 100), Some(crc_of(&a)));
        let report = scan(State::default(), &listing(&entries[..1]), Some(&only));
        assert_eq!(report.to_confirm.names(), [format!("{a}.zst")]);
        assert!(report.pending.is_empty() && report.strays.is_empty());
        // Other suffixes are strays.
        let mut odd = ArchiveListing::default();
        odd.push(&file(&format!("{a}.gz"), 100), Some(1));
        odd.push(&file(&format!("{a}.zst.zst"), 100), Some(1));
        let report = scan(State::default(), &listing(&[]), Some(&odd));
        assert_eq!(report.strays.len(), 2);
        assert!(report.state.archived.is_empty());
    }

    #[test]
    fn asks_once_to_compare_an_object_the_archive_lists_twice() {
        let a = name(1, 10);
        let entries = [seg(1, 10)];
        for crcs in [[Some(1), Some(2)], [Some(1), Some(1)], [None, Some(1)]] {
            let mut archive = ArchiveListing::default();
            for crc in crcs {
                archive.push(&file(&a, 100), crc);
            }
            let report = scan(State::default(), &listing(&entries), Some(&archive));
            assert_eq!(report.to_confirm.names(), [a.as_str()], "{crcs:?}: {report:?}");
            assert!(report.pending.is_empty(), "{crcs:?}: {report:?}");
        }
    }

    #[test]
    fn compares_again_a_local_file_whose_size_is_no_longer_the_archived_one() {
        let config = Config { delete_after_archive: true, ..Config::default() };
        let (a, b) = (name(1, 10), name(11, 20));
        let entries = [seg(1, 10), seg(11, 20)];
        let first = scan(State::default(), &listing(&entries), None);
        let outcomes: Vec<UploadOutcome> = first.pending.iter().map(|(n, size)| outcome(n, size, Ok(receipt(size, crc_of(n))))).collect();
        let state = record_uploads(&config, &first.state, &outcomes).state;
        let mut archive = ArchiveListing::default();
        for (n, size) in first.pending.iter() {
            archive.push(&file(n, size), Some(crc_of(n)));
        }
        archive.chain_start = Some(1);
        // The local copy of the first segment was rewritten with another size.
        let rewritten = [file(&a, 77), seg(11, 20)];
        for archive in [Some(&archive), None] {
            let report = scan(state.clone(), &listing(&rewritten), archive);
            assert_eq!(report.to_confirm.names(), [a.as_str()], "{report:?}");
            assert!(report.pending.is_empty(), "{report:?}");
            // It is not counted until compared: the watermark waits below it.
            assert_eq!(report.state.last_archived_lsn, None, "{report:?}");
            assert!(deletable(&config, &report.state, &listing(&rewritten)).is_empty());
            // The comparison finds the conflict, which holds the segment.
            let c = Conflict { name: a.clone(), local_size: 77, local_crc32c: 5, archived_size: 100, archived_crc32c: crc_of(&a) };
            let r = record_uploads(&config, &report.state, &[outcome(&a, 77, Err(StorageError::Conflict(c)))]);
            assert_eq!(r.state.conflicts.len(), 1);
            assert_eq!(r.state.archived.names(), [b.as_str()]);
            assert_eq!(r.state.last_archived_lsn, None);
        }
    }

    #[test]
    fn compares_both_copies_that_disagree_and_holds_the_segment_at_the_one_that_differs() {
        let a = name(1, 10);
        let zst = format!("{a}.zst");
        let mut archive = ArchiveListing::default();
        archive.push(&file(&a, 100), Some(1));
        archive.push(&file(&zst, 100), Some(2));
        let entries = [seg(1, 10)];
        let config = Config { delete_after_archive: true, ..Config::default() };
        let report = scan(State::default(), &listing(&entries), Some(&archive));
        assert!(report.pending.is_empty(), "never uploaded while two copies disagree: {report:?}");
        assert_eq!(report.to_confirm.names(), [a.as_str(), zst.as_str()]);
        // The local file holds the plain copy's bytes: the compressed one is a conflict.
        let c = Conflict { name: zst.clone(), local_size: 100, local_crc32c: 1, archived_size: 100, archived_crc32c: 2 };
        for order in [[0, 1], [1, 0]] {
            let outcomes = [
                outcome(&a, 100, Ok(UploadReceipt { existed: true, ..receipt(100, 1) })),
                outcome(&zst, 100, Err(StorageError::Conflict(c.clone()))),
            ];
            let outcomes = [outcomes[order[0]].clone(), outcomes[order[1]].clone()];
            let r = record_uploads(&config, &report.state, &outcomes);
            assert_eq!(r.state.last_archived_lsn, None, "order {order:?}: {r:?}");
            assert!(r.archived.is_empty() && r.state.conflicts.len() == 1, "order {order:?}: {r:?}");
            assert!(deletable(&config, &r.state, &listing(&entries)).is_empty());
            // The conflict stands while both copies do: nothing to compare or upload.
            let again = scan(r.state.clone(), &listing(&entries), Some(&archive));
            assert!(again.to_confirm.is_empty() && again.pending.is_empty(), "{again:?}");
            assert_eq!(again.conflicts.len(), 1);
        }
        // A comparison of one copy that fails (a read error, a frame that
        // does not decode) holds the segment too, in either order; so does a
        // conflict recorded in an earlier call.
        let down = || Err(StorageError::Io("cannot decode".into()));
        for outcomes in [
            [outcome(&zst, 100, down()), outcome(&a, 100, Ok(UploadReceipt { existed: true, ..receipt(100, 1) }))],
            [outcome(&a, 100, Ok(UploadReceipt { existed: true, ..receipt(100, 1) })), outcome(&zst, 100, down())],
        ] {
            let r = record_uploads(&config, &report.state, &outcomes);
            assert!(r.archived.is_empty() && r.state.last_archived_lsn.is_none(), "{r:?}");
            assert_eq!(r.state.failing.len(), 1);
            assert!(deletable(&config, &r.state, &listing(&entries)).is_empty());
        }
        // Both copies failing in one call are one attempt of the segment.
        let r = record_uploads(&config, &report.state, &[outcome(&zst, 100, down()), outcome(&a, 100, down())]);
        assert_eq!(r.state.failing.iter().map(|f| f.attempts).collect::<Vec<_>>(), [1]);
        let first = record_uploads(&config, &report.state, &[outcome(&zst, 100, Err(StorageError::Conflict(c.clone())))]);
        let r = record_uploads(&config, &first.state, &[outcome(&a, 100, Ok(UploadReceipt { existed: true, ..receipt(100, 1) }))]);
        assert!(r.archived.is_empty() && r.state.last_archived_lsn.is_none(), "{r:?}");
        // Once the differing copy is removed, the other one is compared and counts.
        let mut fixed = ArchiveListing::default();
        fixed.push(&file(&a, 100), Some(1));
        let held = record_uploads(&config, &report.state, &[outcome(&zst, 100, Err(StorageError::Conflict(c)))]).state;
        let again = scan(held, &listing(&entries), Some(&fixed));
        assert_eq!(again.to_confirm.names(), [a.as_str()]);
        assert!(again.conflicts.is_empty());
    }

    #[test]
    fn names_a_failing_segment_by_the_object_it_was_last_tried_as() {
        let entries = [seg(1, 10)];
        let a = name(1, 10);
        let report = scan(State::default(), &listing(&entries), None);
        let down = || Err(StorageError::Io("down".into()));
        let r = record_uploads(&Config::default(), &report.state, &[outcome(&a, 100, down())]);
        let zstd = Config { compression: Compression::Zstd, ..Config::default() };
        let r = record_uploads(&zstd, &r.state, &[outcome(&format!("{a}.zst"), 100, down())]);
        let failing: Vec<_> = r.state.failing.iter().map(|f| (f.name.to_owned(), f.attempts)).collect();
        assert_eq!(failing, [(format!("{a}.zst"), 2)]);
    }

    #[test]
    fn holds_a_conflict_on_a_compressed_object_against_its_local_segment() {
        let config = Config { compression: Compression::Zstd, delete_after_archive: true, ..Config::default() };
        let entries = [seg(1, 10)];
        let a = name(1, 10);
        let object = format!("{a}.zst");
        let report = scan(State::default(), &listing(&entries), None);
        let c = Conflict { name: object.clone(), local_size: 100, local_crc32c: 1, archived_size: 90, archived_crc32c: 2 };
        let r = record_uploads(&config, &report.state, &[outcome(&object, 100, Err(StorageError::Conflict(c)))]);
        assert_eq!(r.state.conflicts.len(), 1);
        let again = scan(r.state.clone(), &listing(&entries), None);
        assert!(again.pending.is_empty(), "a conflict is not retried: {again:?}");
        assert!(deletable(&config, &r.state, &listing(&entries)).is_empty());
    }

    #[test]
    fn rebuilds_a_lost_state_from_the_archive_and_compares_before_counting() {
        let entries = [seg(1, 10), seg(11, 20), seg(21, 30)];
        let objects: Vec<_> = [(1, 10), (11, 20)].iter().map(|&(f, l)| (f, l, Some(crc_of(&name(f, l))))).collect();
        let archive = archive_listing(&objects);
        let report = scan(State::default(), &listing(&entries), Some(&archive));
        assert_eq!(report.to_confirm.names(), [name(1, 10), name(11, 20)]);
        assert_eq!(report.pending.names(), [name(21, 30)]);
        assert_eq!(report.state.last_archived_lsn, None, "nothing counts before it is compared");
        let outcomes: Vec<UploadOutcome> =
            report.to_confirm.iter().map(|(n, size)| outcome(n, size, Ok(UploadReceipt { existed: true, ..receipt(size, crc_of(n)) }))).collect();
        let r = record_uploads(&Config::default(), &report.state, &outcomes);
        assert_eq!(r.state.last_archived_lsn, Some(20));
        // The next listing of the archive finds them confirmed.
        let again = scan(r.state, &listing(&entries), Some(&archive));
        assert!(again.to_confirm.is_empty());
        assert_eq!(again.state.last_archived_lsn, Some(20));
        // Objects without a recorded checksum never count.
        let unverified = archive_listing(&[(1, 10, None)]);
        let report = scan(State::default(), &listing(&entries[..1]), Some(&unverified));
        assert_eq!(report.unverified, [name(1, 10)]);
        assert_eq!(report.pending.names(), [name(1, 10)]);
    }

    #[test]
    fn holds_a_conflict_out_of_the_archive_until_the_archived_object_changes() {
        let entries = [seg(1, 10), seg(11, 20), seg(21, 30)];
        let (state, _) = archive_pending(State::default(), &entries, &[&name(11, 20)]);
        assert_eq!(state.last_archived_lsn, Some(10));
        let n = name(11, 20);
        let conflict = Conflict { name: n.clone(), local_size: 100, local_crc32c: 1, archived_size: 90, archived_crc32c: 2 };
        let r = record_uploads(&Config::default(), &state, &[outcome(&n, 100, Err(StorageError::Conflict(conflict.clone())))]);
        assert_eq!(r.conflicts, [conflict.clone()]);
        assert_eq!(r.state.last_archived_lsn, Some(10), "a conflict holds the watermark");
        assert_eq!(r.state.failures, 2);
        assert!(r.state.failing.is_empty(), "a conflict is not a failure to retry");
        let report = scan(r.state.clone(), &listing(&entries), None);
        assert!(report.pending.is_empty(), "a conflict is not retried");
        assert_eq!(report.conflicts, [conflict.clone()]);
        let on = Config { delete_after_archive: true, ..Config::default() };
        assert_eq!(deletable(&on, &report.state, &listing(&entries)).names(), [name(1, 10)]);
        // The archive still holds the same object: still a conflict.
        let objects = [(1, 10, Some(crc_of(&name(1, 10)))), (11, 20, Some(2)), (21, 30, Some(crc_of(&name(21, 30))))];
        let mut same = archive_listing(&objects);
        same.sizes[1] = 90;
        let report = scan(r.state.clone(), &listing(&entries), Some(&same));
        assert_eq!(report.conflicts, [conflict]);
        assert_eq!(report.state.last_archived_lsn, Some(10));
        // An operator removed it: the segment is pending again.
        let removed = archive_listing(&[objects[0], objects[2]]);
        let report = scan(r.state, &listing(&entries), Some(&removed));
        assert!(report.conflicts.is_empty());
        assert_eq!(report.pending.names(), [n]);
    }

    #[test]
    fn a_conflict_stands_until_a_receipt_proves_the_object_holds_the_local_bytes() {
        let entries = [seg(1, 10), seg(11, 20), seg(21, 30)];
        let (state, _) = archive_pending(State::default(), &entries, &[&name(11, 20)]);
        let n = name(11, 20);
        let conflict = Conflict { name: n.clone(), local_size: 100, local_crc32c: crc_of(&n), archived_size: 90, archived_crc32c: 2 };
        let found = outcome(&n, 100, Err(StorageError::Conflict(conflict.clone())));
        let proved = outcome(&n, 100, Ok(UploadReceipt { existed: true, ..receipt(100, crc_of(&n)) }));
        let held = record_uploads(&Config::default(), &state, core::slice::from_ref(&found));
        assert_eq!(held.state.last_archived_lsn, Some(10));
        // A later receipt for the same object ends it: counted, and the watermark moves.
        let r = record_uploads(&Config::default(), &held.state, core::slice::from_ref(&proved));
        assert!(r.state.conflicts.is_empty(), "{r:?}");
        assert_eq!(r.archived, [n.clone()]);
        assert_eq!(r.state.last_archived_lsn, Some(30));
        // In one call, the last outcome decides, as for any name given twice.
        let r = record_uploads(&Config::default(), &state, &[found.clone(), proved.clone()]);
        assert!(r.state.conflicts.is_empty() && r.conflicts.is_empty(), "{r:?}");
        assert_eq!(r.state.last_archived_lsn, Some(30));
        let r = record_uploads(&Config::default(), &state, &[proved, found]);
        assert_eq!(r.state.conflicts, [conflict.clone()]);
        assert_eq!(r.conflicts, [conflict]);
        assert!(r.archived.is_empty(), "{r:?}");
        assert_eq!(r.state.last_archived_lsn, Some(10));
    }

    #[test]
    fn holds_a_conflict_on_an_unrecorded_object_while_it_keeps_the_size_found() {
        let entries = [seg(1, 10), seg(11, 20)];
        let n = name(11, 20);
        let objects = [(1, 10, Some(crc_of(&name(1, 10)))), (11, 20, None)];
        let mut truncated = archive_listing(&objects);
        truncated.sizes[1] = 90;
        let (state, _) = archive_pending(State::default(), &entries[..1], &[]);
        let conflict = Conflict { name: n.clone(), local_size: 100, local_crc32c: 1, archived_size: 90, archived_crc32c: 2 };
        let state = State { conflicts: vec![conflict.clone()], ..state };
        // The object found is still there, without a record, at the size found.
        let report = scan(state.clone(), &listing(&entries), Some(&truncated));
        assert_eq!(report.conflicts, [conflict.clone()]);
        assert!(report.pending.is_empty(), "a conflict is not retried");
        assert_eq!(report.state.last_archived_lsn, Some(10));
        // Replaced by an object of the local file's size: compared again.
        let replaced = archive_listing(&objects);
        let report = scan(state.clone(), &listing(&entries), Some(&replaced));
        assert!(report.conflicts.is_empty());
        assert_eq!(report.pending.names(), [n.clone()]);
        // A conflict of equal sizes cannot be told from the right object by
        // its size: compared again.
        let same_size = Conflict { archived_size: 100, ..conflict };
        let report = scan(State { conflicts: vec![same_size], ..state }, &listing(&entries), Some(&replaced));
        assert!(report.conflicts.is_empty());
        assert_eq!(report.pending.names(), [n]);
    }

    #[test]
    fn compares_again_a_local_file_whose_size_no_longer_matches_its_archived_copy() {
        let entries = [seg(1, 10)];
        let (state, _) = archive_pending(State::default(), &entries, &[]);
        assert_eq!(state.last_archived_lsn, Some(10));
        let grown = [file(&name(1, 10), 150)];
        let report = scan(state, &listing(&grown), None);
        assert_eq!(report.to_confirm.iter().collect::<Vec<_>>(), [(name(1, 10).as_str(), 150)]);
        assert_eq!(report.state.last_archived_lsn, None);
        let on = Config { delete_after_archive: true, ..Config::default() };
        assert!(deletable(&on, &report.state, &listing(&grown)).is_empty());
    }

    #[test]
    fn never_uploads_a_segment_below_the_prune_floor() {
        let mut archive = archive_listing(&[(11, 20, Some(crc_of(&name(11, 20))))]);
        archive.chain_start = Some(11);
        archive.pruned_below = Some(11);
        let entries = [seg(1, 10), seg(11, 20), seg(21, 30)];
        let report = scan(State::default(), &listing(&entries), Some(&archive));
        assert_eq!(report.pruned, [name(1, 10)]);
        assert_eq!(report.pending.names(), [name(21, 30)]);
        assert_eq!(report.to_confirm.names(), [name(11, 20)]);
        assert!(report.breaks.is_empty());
        // Without a listing of the archive, the state remembers the floor.
        assert_eq!(scan(report.state, &listing(&entries), None).pruned, [name(1, 10)]);
    }

    #[test]
    fn asks_to_record_the_chain_start_once_the_watermark_exists() {
        let report = scan(State::default(), &listing(&[seg(5, 10)]), None);
        assert_eq!(report.record_chain_start, None);
        let n = name(5, 10);
        let r = record_uploads(&Config::default(), &report.state, &[outcome(&n, 100, Ok(receipt(100, 3)))]);
        assert_eq!(r.record_chain_start, Some(5));
        let r2 = record_uploads(&Config::default(), &r.state, &[outcome(&n, 100, Ok(receipt(100, 3)))]);
        assert_eq!(r2.record_chain_start, None);
        assert_eq!(r2.state, r.state, "recording a segment twice counts it once");
    }

    #[test]
    fn backs_off_exponentially_with_jitter_and_a_cap() {
        let config = Config { retry_base_ms: 100, retry_max_ms: 1_000, ..Config::default() };
        assert_eq!(retry_delay(&config, 0, 7), 0);
        for (attempts, exp) in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1_000), (64, 1_000), (u32::MAX, 1_000)] {
            let lo = retry_delay(&config, attempts, 0);
            let hi = retry_delay(&config, attempts, exp / 2);
            assert_eq!((lo, hi), (exp / 2, exp), "attempt {attempts}");
            for r in [1, 99, u64::MAX] {
                let d = retry_delay(&config, attempts, r);
                assert!(exp / 2 <= d && d <= exp, "attempt {attempts}: {d}");
            }
        }
    }

    #[test]
    fn measures_the_rpo_gap_from_the_watermark() {
        let state = State { last_archived_lsn: Some(90), chain_start: Some(1), ..State::default() };
        assert_eq!(rpo_gap(&state, 100), 10);
        assert_eq!(rpo_gap(&state, 90), 0);
        assert_eq!(rpo_gap(&state, 50), 0);
        assert_eq!(rpo_gap(&State::default(), 100), 100);
        assert_eq!(rpo_gap(&State { chain_start: Some(50), ..State::default() }, 100), 51);
    }

    #[test]
    fn reaches_u64_max_without_overflow() {
        let entries = [seg(u64::MAX - 9, u64::MAX - 1), seg(u64::MAX, u64::MAX)];
        let (state, _) = archive_pending(State::default(), &entries, &[]);
        assert_eq!(state.last_archived_lsn, Some(u64::MAX));
        assert_eq!(rpo_gap(&state, u64::MAX), 0);
        let report = scan(state, &listing(&entries), None);
        assert!(report.pending.is_empty() && report.breaks.is_empty());
    }

    #[test]
    fn reads_a_state_whose_archived_segments_are_out_of_order() {
        let entries: Vec<DirEntry> = (0..4).map(|i| seg(i * 10 + 1, i * 10 + 10)).collect();
        let (state, _) = archive_pending(State::default(), &entries, &[]);
        let mut shuffled = State { archived: ArchivedList::default(), ..state.clone() };
        for s in state.archived.segs().iter().rev() {
            shuffled.archived.push(s.name, s.size, s.crc);
        }
        assert_eq!(scan(shuffled, &listing(&entries), None), scan(state, &listing(&entries), None));
    }

    // A brute-force model of the rules, over random sets of segments with
    // overlaps, duplicates and gaps, each uploaded or failed at random, in
    // a random order.

    fn model_reach(archived: &[(Lsn, Lsn)], start: Lsn) -> Option<Lsn> {
        // Every LSN reachable by exact chaining from `start`, by fixpoint.
        let mut reachable = vec![u128::from(start)];
        loop {
            let more: Vec<u128> = archived
                .iter()
                .filter(|(f, _)| reachable.contains(&u128::from(*f)))
                .map(|(_, l)| u128::from(*l) + 1)
                .filter(|e| !reachable.contains(e))
                .collect();
            if more.is_empty() {
                break;
            }
            reachable.extend(more);
        }
        let r = reachable.into_iter().max().unwrap();
        (r > u128::from(start)).then(|| (r - 1) as Lsn)
    }

    proptest! {
        #[test]
        fn follows_the_chain_rules_whatever_the_order(
            spans in prop::collection::vec((1u64..30, 0u64..6), 1..10),
            fails in prop::collection::vec(any::<bool>(), 10),
            order in prop::collection::vec(any::<u8>(), 10),
        ) {
            let entries: Vec<DirEntry> = spans.iter().map(|&(f, len)| seg(f, f + len)).collect();
            let report = scan(State::default(), &listing(&entries), None);
            let pending: Vec<(String, u64)> = report.pending.iter().map(|(n, s)| (n.to_owned(), s)).collect();
            let mut names: Vec<&String> = pending.iter().map(|(n, _)| n).collect();
            names.sort();
            names.dedup();
            prop_assert_eq!(names.len(), pending.len(), "a name is pending once");

            let mut outcomes: Vec<UploadOutcome> = pending
                .iter()
                .enumerate()
                .map(|(i, (n, size))| {
                    let r = if fails[i % fails.len()] { Err(StorageError::Io("x".into())) } else { Ok(receipt(*size, crc_of(n))) };
                    outcome(n, *size, r)
                })
                .collect();
            let in_order = record_uploads(&Config::default(), &report.state, &outcomes);
            // The same outcomes in another order, one at a time.
            outcomes.sort_by_key(|o| order[o.name.len() % order.len()] ^ (crc_of(&o.name) as u8));
            let mut state = report.state.clone();
            for o in &outcomes {
                state = record_uploads(&Config::default(), &state, core::slice::from_ref(o)).state;
            }
            prop_assert_eq!(&state.archived, &in_order.state.archived);
            prop_assert_eq!(state.last_archived_lsn, in_order.state.last_archived_lsn);
            prop_assert_eq!(state.segments_archived, in_order.state.segments_archived);

            // The watermark is the reach of the archived segments from the chain start.
            let archived: Vec<(Lsn, Lsn)> = state.archived.segs().iter().map(|s| (s.first, s.last)).collect();
            let start = report.state.chain_start.unwrap();
            prop_assert_eq!(start, spans.iter().map(|s| s.0).min().unwrap());
            prop_assert_eq!(state.last_archived_lsn, model_reach(&archived, start));
            prop_assert_eq!(state.segments_archived as usize, archived.len());

            // Deletable: archived under its own key, at or below the watermark.
            let on = Config { delete_after_archive: true, ..Config::default() };
            for (n, _) in deletable(&on, &state, &listing(&entries)).iter() {
                let s = Seg::parse(n, 0, 0).unwrap();
                prop_assert!(archived.contains(&(s.first, s.last)), "{} deleted but not archived", n);
                prop_assert!(Some(s.last) <= state.last_archived_lsn);
            }
            // What is not archived stays pending, and only that.
            let next = scan(state.clone(), &listing(&entries), None);
            for (n, _) in next.pending.iter() {
                let s = Seg::parse(n, 0, 0).unwrap();
                prop_assert!(!archived.contains(&(s.first, s.last)));
            }
            prop_assert_eq!(next.pending.len() + archived.len(), pending.len());
            prop_assert_eq!(next.state.last_archived_lsn, state.last_archived_lsn, "a scan never moves the watermark by itself");
        }
    }
}
