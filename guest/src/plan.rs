//! The planner: listings and state in, tasks and decisions out.
//!
//! The watermark is the highest LSN `W` such that every LSN from the chain
//! start up to `W` lies in a segment that was archived and verified. It moves
//! only across a contiguous run: a segment that finished out of order waits in
//! `archived_above`, and a failed one stays pending, so the watermark can never
//! pass a segment that is not in the archive.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use crate::name::{NameError, SegmentName};
use crate::Lsn;

/// A WAL segment whose name parsed strictly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub name: String,
    pub first_lsn: Lsn,
    pub last_lsn: Lsn,
    pub size: u64,
}

/// What a directory entry is, without following symlinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// One entry directly inside the WAL directory, owned: what a [`Listing`]
/// is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The name, lossy when `utf8` is false.
    pub name: String,
    pub utf8: bool,
    pub kind: EntryKind,
    pub size: u64,
}

/// A listing of the WAL directory, packed as the WIT `dir-listing` is: the
/// names in one string and each other field in a list of its own. Entry `i`
/// is named `names[ends[i - 1]..ends[i]]` (from 0 for the first).
///
/// One buffer instead of a string per entry is what makes a listing of
/// 100,000 names cheap to hand to the component: a few copies, where a
/// string each cost an allocation in the guest per name (measured by
/// `cargo bench --bench planner`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub names: String,
    pub ends: Vec<u32>,
    pub sizes: Vec<u64>,
    pub kinds: Vec<EntryKind>,
    pub utf8: Vec<bool>,
}

/// One entry of a [`Listing`], borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub name: &'a str,
    pub utf8: bool,
    pub kind: EntryKind,
    pub size: u64,
}

impl Listing {
    /// Appends an entry.
    pub fn push(&mut self, entry: &DirEntry) {
        self.names.push_str(&entry.name);
        self.ends.push(u32::try_from(self.names.len()).unwrap_or(u32::MAX));
        self.sizes.push(entry.size);
        self.kinds.push(entry.kind);
        self.utf8.push(entry.utf8);
    }

    /// How many entries the listing holds.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The entries in order. A listing whose lists disagree (a bad host) is
    /// read defensively: an entry with a missing field is `Other` and is
    /// skipped, and a name whose bounds are wrong (past the end, or inside a
    /// character) is taken as not UTF-8.
    pub fn entries(&self) -> impl Iterator<Item = Entry<'_>> {
        let mut start = 0usize;
        self.ends.iter().enumerate().map(move |(i, &end)| {
            let end = end as usize;
            let name = self.names.get(start..end);
            start = end.max(start);
            Entry {
                name: name.unwrap_or(""),
                utf8: name.is_some() && self.utf8.get(i).copied().unwrap_or(false),
                kind: self.kinds.get(i).copied().unwrap_or(EntryKind::Other),
                size: self.sizes.get(i).copied().unwrap_or(0),
            }
        })
    }
}

impl<'a> FromIterator<&'a DirEntry> for Listing {
    fn from_iter<I: IntoIterator<Item = &'a DirEntry>>(iter: I) -> Self {
        let mut listing = Listing::default();
        for e in iter {
            listing.push(e);
        }
        listing
    }
}

/// Why a directory entry is not archived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    #[error("not a regular file ({0:?})")]
    NotAFile(EntryKind),
    #[error("the name is not valid UTF-8")]
    NotUtf8,
    #[error("not a segment name: {0}")]
    BadName(NameError),
}

/// A directory entry that is reported and never archived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub name: String,
    pub reason: SkipReason,
}

/// LSNs `from..=to` that no segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub from: Lsn,
    pub to: Lsn,
}

/// Two segments that both claim `from..=to`. `first` is empty when the lower
/// claim is the archived range below the watermark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlap {
    pub first: String,
    pub second: String,
    pub from: Lsn,
    pub to: Lsn,
}

/// One segment to upload to `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveTask {
    pub segment: Segment,
    pub key: String,
    pub verify: bool,
}

/// How the planner plans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Key prefix without a trailing `/`; may be empty.
    pub prefix: String,
    pub batch_size: u32,
    pub verify_checksums: bool,
    pub delete_after_archive: bool,
    /// The first retry delay, in milliseconds; it doubles with each failure.
    pub retry_base_ms: u64,
    /// The longest retry delay, in milliseconds.
    pub retry_max_ms: u64,
}

impl Default for Config {
    /// The seed's defaults (batches of 16, checksums verified, nothing
    /// deleted), and retries from 1 s up to 60 s.
    fn default() -> Self {
        Self {
            prefix: String::new(),
            batch_size: 16,
            verify_checksums: true,
            delete_after_archive: false,
            retry_base_ms: 1_000,
            retry_max_ms: 60_000,
        }
    }
}

/// An object in the archive, as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedObject {
    /// The last part of its key.
    pub name: String,
    pub size: u64,
    /// The CRC32C recorded when it was archived and verified, if any.
    pub crc32c: Option<u32>,
}

/// A segment whose last attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFailure {
    pub name: String,
    pub attempts: u32,
    pub last_reason: String,
}

/// What the archiver knows between calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub last_archived_lsn: Option<Lsn>,
    pub chain_start: Option<Lsn>,
    pub segments_archived: u64,
    pub bytes_archived: u64,
    pub failures: u64,
    /// Archived and verified, but above a hole; sorted by LSN.
    pub archived_above: Vec<Segment>,
    pub failing: Vec<SegmentFailure>,
}

/// What the host saw when it uploaded one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadReceipt {
    pub read_size: u64,
    pub read_crc32c: u32,
    pub stored_size: u64,
    pub stored_crc32c: Option<u32>,
}

/// Why an upload cannot be counted as archived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the file was listed with {0} bytes but {1} were read")]
    SizeChanged(u64, u64),
    #[error("{0} bytes were sent but the stored object has {1}")]
    StoredSizeMismatch(u64, u64),
    #[error("CRC32C {0:08x} was sent but the stored object has {1:08x}")]
    ChecksumMismatch(u32, u32),
    #[error("the stored object was not read back for verification")]
    NotVerified,
}

/// What the planner makes of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanReport {
    pub state: State,
    pub pending: Vec<Segment>,
    pub skipped: Vec<Skipped>,
    pub gaps: Vec<Gap>,
    pub overlaps: Vec<Overlap>,
}

/// Classifies one listing entry: a segment's name, or the reason it is not one.
pub fn classify(entry: &Entry<'_>) -> Result<SegmentName, SkipReason> {
    if entry.kind != EntryKind::File {
        return Err(SkipReason::NotAFile(entry.kind));
    }
    if !entry.utf8 {
        return Err(SkipReason::NotUtf8);
    }
    SegmentName::parse(entry.name).map_err(SkipReason::BadName)
}

/// A segment's sort key with its name borrowed, and one more number: its
/// size when it comes from a listing, its position while [`sort_segments`]
/// sorts. The planner copies only the names it returns; and with one key
/// type there is one instantiation of the standard sort, which costs the
/// component kilobytes each. Fields in this order sort as segments do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Listed<'a> {
    first_lsn: Lsn,
    last_lsn: Lsn,
    name: &'a str,
    extra: u64,
}

impl<'a> Listed<'a> {
    fn of(seg: &'a Segment) -> Self {
        Self { first_lsn: seg.first_lsn, last_lsn: seg.last_lsn, name: &seg.name, extra: seg.size }
    }

    /// What identifies a segment: its LSNs and name, in sort order.
    fn key(&self) -> (Lsn, Lsn, &'a str) {
        (self.first_lsn, self.last_lsn, self.name)
    }

    fn to_segment(self) -> Segment {
        Segment { name: self.name.to_owned(), first_lsn: self.first_lsn, last_lsn: self.last_lsn, size: self.extra }
    }
}

/// The order of segments: LSNs, then name, then the extra number. Not
/// inlined: the sort and the searches call it rather than each carrying a
/// copy, which keeps the component under its size budget.
#[inline(never)]
fn listed_order(a: &Listed<'_>, b: &Listed<'_>) -> core::cmp::Ordering {
    (a.first_lsn, a.last_lsn, a.name, a.extra).cmp(&(b.first_lsn, b.last_lsn, b.name, b.extra))
}

/// True when `sorted` holds a segment with these LSNs and name.
fn holds_listed(sorted: &[Listed<'_>], first: Lsn, last: Lsn, name: &str) -> bool {
    let probe = Listed { first_lsn: first, last_lsn: last, name, extra: 0 };
    // Sizes are at least 0: every entry with these LSNs and name sorts at or after the probe.
    let at = sorted.partition_point(|a| listed_order(a, &probe).is_lt());
    sorted.get(at).is_some_and(|a| (a.first_lsn, a.last_lsn, a.name) == (first, last, name))
}

#[inline(never)]
fn by_lsn(a: &Segment, b: &Segment) -> core::cmp::Ordering {
    (a.first_lsn, a.last_lsn, &a.name).cmp(&(b.first_lsn, b.last_lsn, &b.name))
}

/// True when `sorted`, in [`sort_segments`] order, holds `seg` (same LSNs
/// and name). A binary search: the planner is called with listings of
/// 100,000 names, where a linear search per segment would not end in time.
pub(crate) fn holds(sorted: &[Segment], seg: &Segment) -> bool {
    let at = sorted.partition_point(|a| by_lsn(a, seg).is_lt());
    sorted.get(at).is_some_and(|a| a.name == seg.name)
}

/// Sorts segments by LSNs, then name. Every sort in the planner sorts
/// [`Listed`] keys: segments are sorted through them, by position.
pub(crate) fn sort_segments(v: &mut Vec<Segment>) {
    if v.is_sorted_by(|a, b| by_lsn(a, b).is_le()) {
        return;
    }
    let mut keys: Vec<Listed<'_>> =
        v.iter().enumerate().map(|(i, s)| Listed { extra: i as u64, ..Listed::of(s) }).collect();
    keys.sort_unstable_by(listed_order);
    let order: Vec<usize> = keys.iter().map(|k| k.extra as usize).collect();
    let mut slots: Vec<Option<Segment>> = core::mem::take(v).into_iter().map(Some).collect();
    v.extend(order.into_iter().filter_map(|i| slots[i].take()));
}

/// The segment a name stands for, to look up with [`holds`]; None when the
/// name does not parse, and so cannot be any listed segment's.
pub(crate) fn probe(name: &str) -> Option<Segment> {
    let n = SegmentName::parse(name).ok()?;
    Some(Segment { name: name.to_owned(), first_lsn: n.first(), last_lsn: n.last(), size: 0 })
}

/// The failing segments, sorted, for [`holds`].
fn failing_segments(state: &State) -> Vec<Segment> {
    let mut out: Vec<Segment> = state.failing.iter().filter_map(|f| probe(&f.name)).collect();
    sort_segments(&mut out);
    out
}

/// True when the segment lies wholly inside the archived chain
/// `chain_start..=watermark`.
fn below_watermark(state: &State, seg: &Segment) -> bool {
    lsns_below_watermark(state, seg.first_lsn, seg.last_lsn)
}

fn lsns_below_watermark(state: &State, first: Lsn, last: Lsn) -> bool {
    match (state.chain_start, state.last_archived_lsn) {
        (Some(start), Some(w)) => start <= first && last <= w,
        _ => false,
    }
}

/// True when the segment ends before the chain starts: it is not archived,
/// and it can only join the chain at its front.
fn below_chain(state: &State, last: Lsn) -> bool {
    state.last_archived_lsn.is_some() && state.chain_start.is_some_and(|start| last < start)
}

/// The first LSN the next segment of the chain must start at, as u128 so that
/// a watermark of `u64::MAX` has a successor.
fn chain_cursor(state: &State) -> Option<u128> {
    next_in_chain(state.chain_start, state.last_archived_lsn)
}

/// [`chain_cursor`] for a chain start and watermark given apart.
fn next_in_chain(chain_start: Option<Lsn>, watermark: Option<Lsn>) -> Option<u128> {
    match watermark {
        Some(w) => Some(u128::from(w) + 1),
        None => chain_start.map(u128::from),
    }
}

/// Classifies a listing into pending segments, skipped entries, gaps and overlaps.
///
/// Until the watermark exists, the chain starts at the lowest segment seen so far.
pub fn scan(listing: &Listing, mut state: State) -> ScanReport {
    let mut skipped = Vec::new();
    let mut valid: Vec<Listed<'_>> = Vec::with_capacity(listing.len());
    for entry in listing.entries() {
        match classify(&entry) {
            Ok(n) => valid.push(Listed { first_lsn: n.first(), last_lsn: n.last(), name: entry.name, extra: entry.size }),
            Err(reason) => skipped.push(Skipped { name: entry.name.to_owned(), reason }),
        }
    }
    valid.sort_unstable_by(listed_order);
    // The state may come from anywhere (a file, another host): sorting a
    // sorted list costs one pass, and the searches below rely on it.
    sort_segments(&mut state.archived_above);

    if state.last_archived_lsn.is_none() {
        let lowest = valid
            .first()
            .map(|s| s.first_lsn)
            .into_iter()
            .chain(state.archived_above.first().map(|s| s.first_lsn))
            .min();
        state.chain_start = match (state.chain_start, lowest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    // A failing segment that is no longer listed has nothing left to retry.
    let failing = failing_segments(&state);
    let failing: Vec<Listed<'_>> = failing.iter().map(Listed::of).collect();
    state.failing.retain(|f| probe(&f.name).is_some_and(|p| holds_listed(&valid, p.first_lsn, p.last_lsn, &p.name)));

    // A failed segment stays pending until it is archived, even one whose
    // LSNs other segments cover (an overlap): it is never skipped.
    let is_failing = |s: &Listed<'_>| holds_listed(&failing, s.first_lsn, s.last_lsn, s.name);
    // `valid` and `archived_above` are both in order: one walk over each
    // (a merge) finds what is in both, where a search per segment cost a
    // scan over 100,000 segments tens of milliseconds.
    let archived_above: Vec<Listed<'_>> = state.archived_above.iter().map(Listed::of).collect();
    let mut above = archived_above.iter().peekable();
    let pending: Vec<Segment> = valid
        .iter()
        .filter(|s| !lsns_below_watermark(&state, s.first_lsn, s.last_lsn) || is_failing(s))
        .filter(|s| {
            while above.next_if(|a| a.key() < s.key()).is_some() {}
            !above.peek().is_some_and(|a| a.key() == s.key())
        })
        .map(|s| s.to_segment())
        .collect();

    // Gaps and overlaps are judged over everything known above the watermark:
    // what is listed and what was archived out of order, merged in order.
    let mut listed = valid
        .iter()
        .filter(|s| !lsns_below_watermark(&state, s.first_lsn, s.last_lsn) && !below_chain(&state, s.last_lsn))
        .peekable();
    let mut above = archived_above.iter().peekable();
    let mut known: Vec<Listed<'_>> = Vec::new();
    loop {
        let next = match (listed.peek(), above.peek()) {
            (Some(l), Some(a)) if a.key() < l.key() => above.next(),
            (Some(l), Some(a)) => {
                if a.key() == l.key() {
                    above.next();
                }
                listed.next()
            }
            (Some(_), None) => listed.next(),
            (None, _) => above.next(),
        };
        let Some(seg) = next else { break };
        known.push(*seg);
    }

    let mut gaps = Vec::new();
    let mut overlaps = Vec::new();
    let mut cursor = chain_cursor(&state);
    let mut cursor_owner = "";
    for seg in &known {
        let first = u128::from(seg.first_lsn);
        let end = u128::from(seg.last_lsn) + 1;
        if let Some(c) = cursor {
            if first > c {
                // Both ends fit in u64: c < first <= u64::MAX.
                gaps.push(Gap { from: c as Lsn, to: seg.first_lsn - 1 });
            } else if first < c {
                overlaps.push(Overlap {
                    first: cursor_owner.to_owned(),
                    second: seg.name.to_owned(),
                    from: seg.first_lsn,
                    to: (c - 1).min(u128::from(seg.last_lsn)) as Lsn,
                });
            }
        }
        if cursor.is_none_or(|c| end > c) {
            cursor = Some(end);
            cursor_owner = seg.name;
        }
    }
    ScanReport { state, pending, skipped, gaps, overlaps }
}

/// The key of a segment under the prefix, as the seed's `plan_archive` formed it.
pub fn object_key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}/{name}")
    }
}

/// The tasks of the next batch: the first `batch_size` pending segments in LSN order.
pub fn plan_batch(config: &Config, pending: &[Segment]) -> Vec<ArchiveTask> {
    let mut sorted = pending.to_vec();
    sort_segments(&mut sorted);
    let limit = usize::try_from(config.batch_size.max(1)).unwrap_or(usize::MAX);
    sorted.truncate(limit);
    sorted
        .into_iter()
        .map(|seg| ArchiveTask {
            key: object_key(&config.prefix, &seg.name),
            segment: seg,
            verify: config.verify_checksums,
        })
        .collect()
}

/// Checks a receipt against the task: the whole file was read, the store
/// holds exactly that many bytes, and, when asked, the same CRC32C.
pub fn check_receipt(task: &ArchiveTask, receipt: &UploadReceipt) -> Result<(), VerifyError> {
    if receipt.read_size != task.segment.size {
        return Err(VerifyError::SizeChanged(task.segment.size, receipt.read_size));
    }
    if receipt.stored_size != receipt.read_size {
        return Err(VerifyError::StoredSizeMismatch(receipt.read_size, receipt.stored_size));
    }
    if task.verify {
        match receipt.stored_crc32c {
            None => return Err(VerifyError::NotVerified),
            Some(stored) if stored != receipt.read_crc32c => {
                return Err(VerifyError::ChecksumMismatch(receipt.read_crc32c, stored));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Records an upload: the new state if it counts as archived, else the reason.
pub fn record_archived(
    state: &State,
    task: &ArchiveTask,
    receipt: &UploadReceipt,
) -> Result<State, VerifyError> {
    check_receipt(task, receipt)?;
    let mut state = state.clone();
    let seg = &task.segment;
    state.failing.retain(|f| f.name != seg.name);
    sort_segments(&mut state.archived_above);
    let already = below_watermark(&state, seg) || holds(&state.archived_above, seg);
    if !already {
        state.segments_archived += 1;
        state.bytes_archived += seg.size;
        let extends_front = state.last_archived_lsn.is_some()
            && state.chain_start.is_some_and(|start| u128::from(seg.last_lsn) + 1 == u128::from(start));
        if extends_front {
            state.chain_start = Some(seg.first_lsn);
        } else {
            let at = state
                .archived_above
                .partition_point(|a| by_lsn(a, seg).is_lt());
            state.archived_above.insert(at, seg.clone());
            advance_watermark(&mut state);
        }
    }
    Ok(state)
}

/// Rebuilds the state from a listing of the archive, which is the source of
/// truth: a lost, stale or corrupt state costs this listing and nothing more.
///
/// Only objects with a recorded checksum count: they were verified when they
/// were archived. The chain is the contiguous run from the lowest of them,
/// unless the state knows of a lower start that is still waiting for its
/// first segment.
pub fn reconcile(state: &State, archive: &[ArchivedObject]) -> State {
    // Names stay borrowed from the listing: only segments left above the
    // watermark are copied out, not every object of a large archive.
    let mut verified: Vec<Listed<'_>> = archive
        .iter()
        .filter(|o| o.crc32c.is_some())
        .filter_map(|o| {
            let n = SegmentName::parse(&o.name).ok()?;
            Some(Listed { first_lsn: n.first(), last_lsn: n.last(), name: &o.name, extra: o.size })
        })
        .collect();
    verified.sort_unstable_by(listed_order);
    verified.dedup_by(|a, b| a.name == b.name);

    let lowest = verified.first().map(|s| s.first_lsn);
    let waiting_below =
        state.last_archived_lsn.is_none() && state.chain_start.is_some_and(|c| lowest.is_none_or(|v| c < v));
    let chain_start = if waiting_below { state.chain_start } else { lowest };
    let watermark = watermark_over(&verified, chain_start, None);
    State {
        last_archived_lsn: watermark,
        chain_start,
        segments_archived: verified.len() as u64,
        bytes_archived: verified.iter().map(|s| s.extra).sum(),
        failures: state.failures,
        archived_above: verified
            .iter()
            .filter(|a| watermark.is_none_or(|w| a.last_lsn > w))
            .map(|a| a.to_segment())
            .collect(),
        failing: state
            .failing
            .iter()
            .filter(|f| !probe(&f.name).is_some_and(|p| holds_listed(&verified, p.first_lsn, p.last_lsn, &p.name)))
            .cloned()
            .collect(),
    }
}

/// How long to wait before retrying a segment that has failed `attempts`
/// times, in milliseconds: exponential from the base, capped, with equal
/// jitter drawn from `random` (the host's randomness).
pub fn retry_delay(config: &Config, attempts: u32, random: u64) -> u64 {
    if attempts == 0 {
        return 0;
    }
    let exp = config
        .retry_base_ms
        .saturating_mul(1u64.checked_shl(attempts - 1).unwrap_or(u64::MAX))
        .min(config.retry_max_ms);
    let half = exp / 2;
    half + random % (exp - half + 1)
}

/// Moves the watermark across every archived segment that continues the
/// chain ([`watermark_over`]), then drops the segments it covers; removing
/// each one as the chain crossed it would cost a pass per segment.
fn advance_watermark(state: &mut State) {
    sort_segments(&mut state.archived_above);
    let above: Vec<Listed<'_>> = state.archived_above.iter().map(Listed::of).collect();
    let w = watermark_over(&above, state.chain_start, state.last_archived_lsn);
    state.last_archived_lsn = w;
    // Segments now wholly covered (overlapping strays) have nothing left to wait for.
    state
        .archived_above
        .retain(|a| w.is_none_or(|w| a.last_lsn > w));
}

/// The watermark reached from `last` (or, without one, from the chain's
/// start) across `sorted` segments that continue the chain one after another.
/// Each next segment starts later than the last, so one forward walk over
/// `sorted` finds them all.
fn watermark_over(sorted: &[Listed<'_>], chain_start: Option<Lsn>, last: Option<Lsn>) -> Option<Lsn> {
    let mut w = last;
    let mut at = 0;
    loop {
        let Some(next) = next_in_chain(chain_start, w) else { return w };
        while sorted.get(at).is_some_and(|a| u128::from(a.first_lsn) < next) {
            at += 1;
        }
        match sorted.get(at) {
            Some(seg) if u128::from(seg.first_lsn) == next => w = Some(seg.last_lsn),
            _ => return w,
        }
    }
}

/// Records a failed attempt. The segment stays pending and holds the watermark.
pub fn record_failed(state: &State, task: &ArchiveTask, reason: &str) -> State {
    let mut state = state.clone();
    state.failures += 1;
    match state.failing.iter_mut().find(|f| f.name == task.segment.name) {
        Some(f) => {
            f.attempts = f.attempts.saturating_add(1);
            f.last_reason = reason.to_owned();
        }
        None => state.failing.push(SegmentFailure {
            name: task.segment.name.clone(),
            attempts: 1,
            last_reason: reason.to_owned(),
        }),
    }
    state
}

/// Local segments that may be deleted: valid, regular files wholly at or below
/// the watermark, and only when deletion is configured.
pub fn deletable(config: &Config, state: &State, listing: &Listing) -> Vec<Segment> {
    if !config.delete_after_archive {
        return Vec::new();
    }
    let failing = failing_segments(state);
    let mut out: Vec<Segment> = listing
        .entries()
        .filter_map(|e| {
            let n = classify(&e).ok()?;
            lsns_below_watermark(state, n.first(), n.last())
                .then(|| Segment { name: e.name.to_owned(), first_lsn: n.first(), last_lsn: n.last(), size: e.size })
        })
        .filter(|s| !holds(&failing, s))
        .collect();
    sort_segments(&mut out);
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
    use proptest::prelude::*;

    // The tests write listings as lists of entries; the planner takes them packed.
    fn scan(listing: &[DirEntry], state: &State) -> ScanReport {
        super::scan(&listing.iter().collect(), state.clone())
    }

    fn deletable(config: &Config, state: &State, listing: &[DirEntry]) -> Vec<Segment> {
        super::deletable(config, state, &listing.iter().collect())
    }

    fn file(name: &str, size: u64) -> DirEntry {
        DirEntry { name: name.into(), utf8: true, kind: EntryKind::File, size }
    }

    fn seg_entry(first: Lsn, last: Lsn) -> DirEntry {
        file(&format_segment_name(first, last).unwrap(), 100)
    }

    fn ok_receipt(task: &ArchiveTask) -> UploadReceipt {
        UploadReceipt {
            read_size: task.segment.size,
            read_crc32c: 7,
            stored_size: task.segment.size,
            stored_crc32c: Some(7),
        }
    }

    fn tasks_for(listing: &[DirEntry], state: &State) -> (State, Vec<ArchiveTask>) {
        let report = scan(listing, state);
        let config = Config { batch_size: 1000, ..Config::default() };
        let tasks = plan_batch(&config, &report.pending);
        (report.state, tasks)
    }

    #[test]
    fn reports_every_refused_entry_with_its_reason() {
        let listing = vec![
            file("wal-0a-64.partial", 1),
            file("wal-1-a.txt", 1),
            file("wal-0a-64", 1),
            file("wal-+a-+64.seg", 1),
            file("wal-A-FF.seg", 1),
            file("wal-1-a.seg", 1),
            file("wal-0000000000000064-000000000000000a.seg", 1),
            DirEntry { name: "wal-0000000000000001-0000000000000002.seg".into(), utf8: true, kind: EntryKind::Symlink, size: 0 },
            DirEntry { name: "wal-0000000000000003-0000000000000004.seg".into(), utf8: true, kind: EntryKind::Dir, size: 0 },
            DirEntry { name: "wal-\u{fffd}.seg".into(), utf8: false, kind: EntryKind::File, size: 1 },
            DirEntry { name: "fifo".into(), utf8: true, kind: EntryKind::Other, size: 0 },
        ];
        let report = scan(&listing, &State::default());
        assert!(report.pending.is_empty());
        assert_eq!(report.skipped.len(), listing.len());
        let reason = |n: &str| report.skipped.iter().find(|s| s.name == n).unwrap().reason;
        assert_eq!(reason("wal-0a-64.partial"), SkipReason::BadName(NameError::WrongSuffix));
        assert_eq!(reason("wal-0000000000000001-0000000000000002.seg"), SkipReason::NotAFile(EntryKind::Symlink));
        assert_eq!(reason("wal-0000000000000003-0000000000000004.seg"), SkipReason::NotAFile(EntryKind::Dir));
        assert_eq!(reason("wal-\u{fffd}.seg"), SkipReason::NotUtf8);
        assert_eq!(reason("wal-0000000000000064-000000000000000a.seg"), SkipReason::BadName(NameError::FirstAfterLast));
    }

    #[test]
    fn sorts_pending_by_lsn_and_limits_the_batch() {
        let listing: Vec<DirEntry> = (0u64..20).rev().map(|i| seg_entry(i * 10 + 1, (i + 1) * 10)).collect();
        let report = scan(&listing, &State::default());
        assert_eq!(report.pending.len(), 20);
        assert!(report.pending.windows(2).all(|w| w[0].first_lsn < w[1].first_lsn));
        let config = Config { batch_size: 5, prefix: "wal".into(), ..Config::default() };
        let tasks = plan_batch(&config, &report.pending);
        assert_eq!(tasks.len(), 5);
        assert_eq!(tasks[0].key, "wal/wal-0000000000000001-000000000000000a.seg");
        assert!(tasks.iter().all(|t| t.verify));
    }

    #[test]
    fn holds_the_watermark_at_a_failed_segment_until_it_is_retried() {
        let listing = vec![seg_entry(1, 10), seg_entry(11, 20), seg_entry(21, 30)];
        let (state, tasks) = tasks_for(&listing, &State::default());
        // Finish out of order: 3, fail 1, then 2.
        let state = record_archived(&state, &tasks[2], &ok_receipt(&tasks[2])).unwrap();
        let state = record_failed(&state, &tasks[0], "network down");
        let state = record_archived(&state, &tasks[1], &ok_receipt(&tasks[1])).unwrap();
        assert_eq!(state.last_archived_lsn, None);
        assert_eq!(state.failing[0].name, tasks[0].segment.name);
        assert_eq!(state.failures, 1);

        // The failed segment is still pending on the next scan; the others are not.
        let (state, retry) = tasks_for(&listing, &state);
        assert_eq!(retry.len(), 1);
        assert_eq!(retry[0].segment.name, tasks[0].segment.name);
        let state = record_archived(&state, &retry[0], &ok_receipt(&retry[0])).unwrap();
        assert_eq!(state.last_archived_lsn, Some(30));
        assert!(state.archived_above.is_empty());
        assert!(state.failing.is_empty());
        assert_eq!(state.segments_archived, 3);
        assert_eq!(state.bytes_archived, 300);
    }

    #[test]
    fn refuses_a_receipt_that_does_not_match() {
        let listing = vec![seg_entry(1, 10)];
        let (state, tasks) = tasks_for(&listing, &State::default());
        let t = &tasks[0];
        let good = ok_receipt(t);
        let cases = [
            (UploadReceipt { read_size: 99, ..good }, VerifyError::SizeChanged(100, 99)),
            (UploadReceipt { stored_size: 0, ..good }, VerifyError::StoredSizeMismatch(100, 0)),
            (UploadReceipt { stored_crc32c: Some(8), ..good }, VerifyError::ChecksumMismatch(7, 8)),
            (UploadReceipt { stored_crc32c: None, ..good }, VerifyError::NotVerified),
        ];
        for (receipt, want) in cases {
            assert_eq!(record_archived(&state, t, &receipt), Err(want));
        }
        // Without verification a missing read-back is fine, but sizes still count.
        let unverified = ArchiveTask { verify: false, ..t.clone() };
        assert!(record_archived(&state, &unverified, &UploadReceipt { stored_crc32c: None, ..good }).is_ok());
        assert!(record_archived(&state, &unverified, &UploadReceipt { stored_size: 0, ..good }).is_err());
    }

    #[test]
    fn reports_gaps_and_overlaps_with_their_ranges() {
        let listing = vec![
            seg_entry(1, 10),
            seg_entry(11, 20),
            seg_entry(31, 40),
            seg_entry(35, 50),
        ];
        let report = scan(&listing, &State::default());
        assert_eq!(report.gaps, vec![Gap { from: 21, to: 30 }]);
        assert_eq!(report.overlaps.len(), 1);
        let o = &report.overlaps[0];
        assert_eq!((o.first.as_str(), o.from, o.to), ("wal-000000000000001f-0000000000000028.seg", 35, 40));
        assert_eq!(o.second, "wal-0000000000000023-0000000000000032.seg");
    }

    #[test]
    fn stops_the_watermark_at_a_gap_but_uploads_beyond_it() {
        let listing = vec![seg_entry(1, 10), seg_entry(21, 30)];
        let (mut state, tasks) = tasks_for(&listing, &State::default());
        for t in &tasks {
            state = record_archived(&state, t, &ok_receipt(t)).unwrap();
        }
        assert_eq!(state.last_archived_lsn, Some(10));
        assert_eq!(state.archived_above.len(), 1);
        let report = scan(&listing, &state);
        assert!(report.pending.is_empty());
        assert_eq!(report.gaps, vec![Gap { from: 11, to: 20 }]);
        // The missing segment appears: the watermark crosses both.
        let listing = vec![seg_entry(1, 10), seg_entry(11, 20), seg_entry(21, 30)];
        let (state, tasks) = tasks_for(&listing, &state);
        assert_eq!(tasks.len(), 1);
        let state = record_archived(&state, &tasks[0], &ok_receipt(&tasks[0])).unwrap();
        assert_eq!(state.last_archived_lsn, Some(30));
    }

    #[test]
    fn reports_a_segment_straddling_the_watermark_as_an_overlap() {
        let state = State { last_archived_lsn: Some(10), chain_start: Some(1), ..State::default() };
        let report = scan(&[seg_entry(5, 15)], &state);
        assert_eq!(report.overlaps, vec![Overlap { first: String::new(), second: "wal-0000000000000005-000000000000000f.seg".into(), from: 5, to: 10 }]);
        // Still uploaded: LSNs 11..=15 exist nowhere else.
        assert_eq!(report.pending.len(), 1);
    }

    /// Found by the `plan` fuzz target: a failed segment that another
    /// archived segment covers was left behind the watermark and never retried.
    #[test]
    fn retries_and_keeps_a_failed_segment_that_another_segment_covers() {
        let listing = vec![seg_entry(1, 10), seg_entry(5, 8)];
        let (state, tasks) = tasks_for(&listing, &State::default());
        let inner = tasks.iter().find(|t| t.segment.first_lsn == 5).unwrap();
        let outer = tasks.iter().find(|t| t.segment.first_lsn == 1).unwrap();
        let state = record_failed(&state, inner, "down");
        let state = record_archived(&state, outer, &ok_receipt(outer)).unwrap();
        assert_eq!(state.last_archived_lsn, Some(10));
        let report = scan(&listing, &state);
        assert_eq!(report.pending, vec![inner.segment.clone()]);
        let on = Config { delete_after_archive: true, ..Config::default() };
        let deletable: Vec<String> = deletable(&on, &report.state, &listing).into_iter().map(|s| s.name).collect();
        assert_eq!(deletable, vec![outer.segment.name.clone()]);
        let state = record_archived(&report.state, inner, &ok_receipt(inner)).unwrap();
        assert!(state.failing.is_empty());
    }

    #[test]
    fn reaches_u64_max_without_overflow() {
        let listing = vec![seg_entry(u64::MAX - 9, u64::MAX - 1), seg_entry(u64::MAX, u64::MAX)];
        let (mut state, tasks) = tasks_for(&listing, &State::default());
        for t in &tasks {
            state = record_archived(&state, t, &ok_receipt(t)).unwrap();
        }
        assert_eq!(state.last_archived_lsn, Some(u64::MAX));
        assert_eq!(rpo_gap(&state, u64::MAX), 0);
        let report = scan(&listing, &state);
        assert!(report.pending.is_empty() && report.gaps.is_empty() && report.overlaps.is_empty());
    }

    #[test]
    fn starts_the_chain_at_the_lowest_segment_seen() {
        let state = scan(&[seg_entry(1000, 1999)], &State::default()).state;
        assert_eq!(state.chain_start, Some(1000));
        assert_eq!(rpo_gap(&state, 1999), 1000);
        let state = scan(&[seg_entry(1, 999), seg_entry(1000, 1999)], &state).state;
        assert_eq!(state.chain_start, Some(1));
    }

    #[test]
    fn reads_a_state_whose_out_of_order_segments_are_unsorted() {
        // A hole at 1..=10, and three segments archived above it.
        let listing: Vec<DirEntry> = (0..4).map(|i| seg_entry(i * 10 + 1, i * 10 + 10)).collect();
        let (mut state, tasks) = tasks_for(&listing[1..], &State { chain_start: Some(1), ..State::default() });
        for t in &tasks {
            state = record_archived(&state, t, &ok_receipt(t)).unwrap();
        }
        assert_eq!(state.archived_above.len(), 3);
        let mut shuffled = state.clone();
        shuffled.archived_above.reverse();
        let sorted_scan = scan(&listing, &state);
        let shuffled_scan = scan(&listing, &shuffled);
        assert_eq!(shuffled_scan, sorted_scan);
        assert_eq!(shuffled_scan.pending.len(), 1, "only the segment in the hole is pending");
        let hole = plan_batch(&Config::default(), &shuffled_scan.pending);
        let done = record_archived(&shuffled, &hole[0], &ok_receipt(&hole[0])).unwrap();
        assert_eq!(done.last_archived_lsn, Some(40));
        assert!(done.archived_above.is_empty());
    }

    #[test]
    fn a_packed_listing_gives_back_the_entries_it_was_built_from() {
        let entries = vec![
            seg_entry(1, 10),
            DirEntry { name: "ünïcode \u{fffd}".into(), utf8: false, kind: EntryKind::File, size: 7 },
            DirEntry { name: String::new(), utf8: true, kind: EntryKind::Other, size: 0 },
            DirEntry { name: "sub".into(), utf8: true, kind: EntryKind::Dir, size: 4096 },
        ];
        let listing: Listing = entries.iter().collect();
        assert_eq!(listing.len(), 4);
        let back: Vec<DirEntry> = listing
            .entries()
            .map(|e| DirEntry { name: e.name.into(), utf8: e.utf8, kind: e.kind, size: e.size })
            .collect();
        assert_eq!(back, entries);
    }

    #[test]
    fn skips_what_it_cannot_read_in_a_listing_whose_lists_disagree() {
        let name = format_segment_name(1, 10).unwrap();
        let names = format!("{name}é");
        let listing = Listing {
            names,
            // The second name ends inside `é`; the third past the buffer; the
            // fourth has no size, kind or flag.
            ends: [name.len(), name.len() + 1, name.len() + 50, name.len() + 2].map(|e| e as u32).to_vec(),
            sizes: vec![5, 1, 1],
            kinds: vec![EntryKind::File, EntryKind::File, EntryKind::File],
            utf8: vec![true, true, true],
        };
        let report = super::scan(&listing, State::default());
        assert_eq!(report.pending.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), [name.as_str()]);
        let reasons: Vec<SkipReason> = report.skipped.iter().map(|s| s.reason).collect();
        assert_eq!(reasons, [SkipReason::NotUtf8, SkipReason::NotUtf8, SkipReason::NotAFile(EntryKind::Other)]);
    }

    #[test]
    fn counts_a_segment_recorded_twice_once() {
        let listing = vec![seg_entry(1, 10)];
        let (state, tasks) = tasks_for(&listing, &State::default());
        let once = record_archived(&state, &tasks[0], &ok_receipt(&tasks[0])).unwrap();
        let twice = record_archived(&once, &tasks[0], &ok_receipt(&tasks[0])).unwrap();
        assert_eq!(once, twice);
    }

    #[test]
    fn deletes_only_segments_at_or_below_the_watermark_and_only_when_asked() {
        let listing = vec![seg_entry(1, 10), seg_entry(11, 20), file("notes.txt", 3)];
        let state = State { last_archived_lsn: Some(10), chain_start: Some(1), ..State::default() };
        let on = Config { delete_after_archive: true, ..Config::default() };
        let names: Vec<String> = deletable(&on, &state, &listing).into_iter().map(|s| s.name).collect();
        assert_eq!(names, vec!["wal-0000000000000001-000000000000000a.seg".to_string()]);
        assert!(deletable(&Config::default(), &state, &listing).is_empty());
    }

    #[test]
    fn measures_the_rpo_gap_from_the_watermark() {
        let state = State { last_archived_lsn: Some(90), chain_start: Some(1), ..State::default() };
        assert_eq!(rpo_gap(&state, 100), 10);
        assert_eq!(rpo_gap(&state, 90), 0);
        assert_eq!(rpo_gap(&state, 50), 0);
        assert_eq!(rpo_gap(&State::default(), 100), 100);
    }

    fn object(first: Lsn, last: Lsn, crc: Option<u32>) -> ArchivedObject {
        ArchivedObject { name: format_segment_name(first, last).unwrap(), size: 100, crc32c: crc }
    }

    #[test]
    fn rebuilds_a_lost_state_from_the_archive_without_reuploading() {
        let listing = vec![seg_entry(1, 10), seg_entry(11, 20), seg_entry(21, 30), seg_entry(31, 40)];
        let archive = vec![object(1, 10, Some(1)), object(11, 20, Some(2)), object(31, 40, Some(4))];
        let state = reconcile(&State::default(), &archive);
        assert_eq!((state.chain_start, state.last_archived_lsn), (Some(1), Some(20)));
        assert_eq!(state.segments_archived, 3);
        let report = scan(&listing, &state);
        let names: Vec<&str> = report.pending.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["wal-0000000000000015-000000000000001e.seg"]);
    }

    #[test]
    fn counts_only_objects_with_a_recorded_checksum() {
        let archive = vec![object(1, 10, None), object(11, 20, Some(2))];
        let state = reconcile(&State::default(), &archive);
        assert_eq!(state.last_archived_lsn, Some(20));
        assert_eq!(state.chain_start, Some(11));
        // The unverified one is still pending, and joins the chain at its front.
        let (state, tasks) = tasks_for(&[seg_entry(1, 10), seg_entry(11, 20)], &state);
        assert_eq!(tasks.len(), 1);
        let state = record_archived(&state, &tasks[0], &ok_receipt(&tasks[0])).unwrap();
        assert_eq!((state.chain_start, state.last_archived_lsn), (Some(1), Some(20)));
    }

    #[test]
    fn trusts_the_archive_over_a_state_that_claims_more() {
        let lying = State { last_archived_lsn: Some(40), chain_start: Some(1), ..State::default() };
        let state = reconcile(&lying, &[object(1, 10, Some(1))]);
        assert_eq!(state.last_archived_lsn, Some(10));
        let report = scan(&[seg_entry(1, 10), seg_entry(11, 20)], &state);
        assert_eq!(report.pending.len(), 1);
    }

    #[test]
    fn keeps_waiting_for_a_failed_first_segment_after_reconciling() {
        let listing = vec![seg_entry(1, 10), seg_entry(11, 20)];
        let (state, tasks) = tasks_for(&listing, &State::default());
        let state = record_failed(&state, &tasks[0], "down");
        let state = record_archived(&state, &tasks[1], &ok_receipt(&tasks[1])).unwrap();
        let state = reconcile(&state, &[object(11, 20, Some(2))]);
        assert_eq!((state.chain_start, state.last_archived_lsn), (Some(1), None));
        assert_eq!(state.failing.len(), 1);
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

    /// One step of a random schedule: which pending segment, and whether it fails.
    fn schedule() -> impl Strategy<Value = (Vec<u64>, Vec<(usize, bool)>)> {
        (
            prop::collection::vec(1u64..5, 1..12),
            prop::collection::vec((0usize..64, any::<bool>()), 0..64),
        )
    }

    fn chain(lengths: &[u64], hole: Option<usize>) -> Vec<DirEntry> {
        let mut first = 1;
        let mut out = Vec::new();
        for (i, len) in lengths.iter().enumerate() {
            if Some(i) != hole {
                out.push(seg_entry(first, first + len - 1));
            }
            first += len;
        }
        out
    }

    proptest! {
        /// The watermark never decreases, never passes a failed or missing
        /// segment, and every LSN at or below it was archived.
        #[test]
        fn watermark_never_decreases_or_passes_an_unarchived_segment(
            (lengths, steps) in schedule(),
            hole in prop::option::of(0usize..12),
        ) {
            let listing = chain(&lengths, hole);
            let mut state = scan(&listing, &State::default()).state;
            let mut archived: Vec<(Lsn, Lsn)> = Vec::new();
            let mut last_w = None;
            for (pick, fails) in steps {
                let report = scan(&listing, &state);
                state = report.state;
                if report.pending.is_empty() { break; }
                let config = Config { batch_size: 64, ..Config::default() };
                let tasks = plan_batch(&config, &report.pending);
                let task = &tasks[pick % tasks.len()];
                state = if fails {
                    record_failed(&state, task, "injected")
                } else {
                    archived.push((task.segment.first_lsn, task.segment.last_lsn));
                    record_archived(&state, task, &ok_receipt(task)).unwrap()
                };
                prop_assert!(state.last_archived_lsn >= last_w);
                last_w = state.last_archived_lsn;
                if let Some(w) = state.last_archived_lsn {
                    // Every LSN from the chain start to w lies in an archived segment.
                    let mut lsn = state.chain_start.unwrap();
                    while lsn <= w {
                        let seg = archived.iter().find(|(f, l)| *f <= lsn && lsn <= *l);
                        prop_assert!(seg.is_some(), "LSN {} is below watermark {} but not archived", lsn, w);
                        lsn = seg.unwrap().1 + 1;
                    }
                    for f in &state.failing {
                        let n = SegmentName::parse(&f.name).unwrap();
                        prop_assert!(n.first() > w, "watermark {} passed failed segment {}", w, f.name);
                    }
                }
            }
        }
    }
}
