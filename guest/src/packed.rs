//! Packed lists, as the WIT packs them: every name in one string, where each
//! one ends in a list of its own, and each other field in a list of its own.
//!
//! One buffer instead of a string per entry is what makes a list of 100,000
//! names cheap to hand across the component boundary: a few copies, where a
//! string each cost an allocation in the guest per name (measured by
//! `cargo bench --bench planner`). Lists come from hosts the planner does
//! not trust, so they are read defensively: a name whose bounds fall outside
//! the buffer or inside a character reads as `None`, a missing field as its
//! default.

use alloc::string::String;
use alloc::vec::Vec;

use crate::name::{segment_part, ObjectName};
use crate::Lsn;

/// Names packed into one string, each ending where `ends` says.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Names<'a> {
    names: &'a str,
    ends: &'a [u32],
}

impl<'a> Names<'a> {
    pub(crate) fn new(names: &'a str, ends: &'a [u32]) -> Self {
        Self { names, ends }
    }

    /// Each name in order, or None where its bounds are not valid.
    pub(crate) fn iter(self) -> impl Iterator<Item = Option<&'a str>> + 'a {
        let mut start = 0usize;
        self.ends.iter().map(move |&end| {
            let end = end as usize;
            let name = self.names.get(start..end);
            start = end.max(start);
            name
        })
    }
}

/// Appends `name` to a packed buffer and its end to `ends`.
pub(crate) fn push_name(names: &mut String, ends: &mut Vec<u32>, name: &str) {
    names.push_str(name);
    // A buffer past 4 GiB cannot cross the component boundary anyway.
    ends.push(u32::try_from(names.len()).unwrap_or(u32::MAX));
}

/// What a directory or archive entry is, without following symlinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Other,
}

impl EntryKind {
    /// The byte a packed listing carries: the position of the case in the
    /// WIT's `entry-kind`.
    pub fn code(self) -> u8 {
        match self {
            Self::File => 0,
            Self::Dir => 1,
            Self::Symlink => 2,
            Self::Other => 3,
        }
    }

    /// The kind a packed listing's byte stands for; the inverse of
    /// [`EntryKind::code`]. A byte that stands for no kind is `Other`: such
    /// an entry is skipped, never archived.
    pub fn from_code(code: u8) -> Self {
        match code {
            0 => Self::File,
            1 => Self::Dir,
            2 => Self::Symlink,
            _ => Self::Other,
        }
    }
}

/// A packed flag (`utf8`, `recorded`): 1 is set, and any other byte, or
/// none, is not, so that a host's mistake never makes an entry count.
fn flag(byte: Option<&u8>) -> bool {
    byte == Some(&1)
}

/// One entry of a WAL directory listing, owned: what a [`Listing`] is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The name, lossy when `utf8` is false.
    pub name: String,
    pub utf8: bool,
    pub kind: EntryKind,
    pub size: u64,
}

/// A listing of the WAL directory, packed as the WIT `dir-listing` is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub names: String,
    pub ends: Vec<u32>,
    pub sizes: Vec<u64>,
    /// [`EntryKind::code`] of each entry.
    pub kinds: Vec<u8>,
    /// 1 where the name is UTF-8 (see [`flag`]).
    pub utf8: Vec<u8>,
}

/// One entry of a [`Listing`] or [`ArchiveListing`], borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub name: &'a str,
    pub utf8: bool,
    pub kind: EntryKind,
    pub size: u64,
}

/// Reads entry `i` from packed lists: a name with bad bounds is taken as
/// not UTF-8 (and named ""), an entry without a kind or a size as `Other`
/// (skipped: a size the host never gave is not a size to archive).
fn entry<'a>(name: Option<&'a str>, i: usize, sizes: &[u64], kinds: &[u8], utf8: &[u8]) -> Entry<'a> {
    let size = sizes.get(i).copied();
    Entry {
        name: name.unwrap_or(""),
        utf8: name.is_some() && flag(utf8.get(i)),
        kind: match (kinds.get(i), size) {
            (Some(k), Some(_)) => EntryKind::from_code(*k),
            _ => EntryKind::Other,
        },
        size: size.unwrap_or(0),
    }
}

impl Listing {
    /// Appends an entry.
    pub fn push(&mut self, entry: &DirEntry) {
        push_name(&mut self.names, &mut self.ends, &entry.name);
        self.sizes.push(entry.size);
        self.kinds.push(entry.kind.code());
        self.utf8.push(u8::from(entry.utf8));
    }

    /// How many entries the listing holds.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The entries in order, read defensively.
    pub fn entries(&self) -> impl Iterator<Item = Entry<'_>> {
        Names::new(&self.names, &self.ends)
            .iter()
            .enumerate()
            .map(move |(i, name)| entry(name, i, &self.sizes, &self.kinds, &self.utf8))
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

/// Segments, packed: names and sizes, as the WIT `segment-list`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentList {
    pub names: String,
    pub ends: Vec<u32>,
    pub sizes: Vec<u64>,
}

impl SegmentList {
    pub fn push(&mut self, name: &str, size: u64) {
        push_name(&mut self.names, &mut self.ends, name);
        self.sizes.push(size);
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Names and sizes; a name with bad bounds reads as "".
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        Names::new(&self.names, &self.ends)
            .iter()
            .enumerate()
            .map(|(i, n)| (n.unwrap_or(""), self.sizes.get(i).copied().unwrap_or(0)))
    }

    /// The names, for tests and reports.
    pub fn names(&self) -> Vec<&str> {
        self.iter().map(|(n, _)| n).collect()
    }
}

/// Archived segments, packed: names, sizes and recorded CRC32Cs, as the WIT
/// `archived-list`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchivedList {
    pub names: String,
    pub ends: Vec<u32>,
    pub sizes: Vec<u64>,
    pub crc32cs: Vec<u32>,
}

impl ArchivedList {
    pub fn push(&mut self, name: &str, size: u64, crc32c: u32) {
        push_name(&mut self.names, &mut self.ends, name);
        self.sizes.push(size);
        self.crc32cs.push(crc32c);
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The names, in order (a name with bad bounds reads as "").
    pub fn names(&self) -> Vec<&str> {
        Names::new(&self.names, &self.ends).iter().map(|n| n.unwrap_or("")).collect()
    }

    /// The segments whose names parse, as sorted, deduplicated [`Seg`]s.
    /// An entry without a checksum cannot have been recorded, and is dropped.
    pub(crate) fn segs(&self) -> Vec<Seg<'_>> {
        self.segs_checked().0
    }

    /// [`ArchivedList::segs`], and whether the list was that already (in
    /// order, each name once, every entry whole), so that it can be handed
    /// back as it is.
    pub(crate) fn segs_checked(&self) -> (Vec<Seg<'_>>, bool) {
        let mut out: Vec<Seg<'_>> = Names::new(&self.names, &self.ends)
            .iter()
            .enumerate()
            .filter_map(|(i, name)| {
                let (size, crc) = (*self.sizes.get(i)?, *self.crc32cs.get(i)?);
                Seg::parse(name?, size, crc)
            })
            .collect();
        let whole = out.len() == self.ends.len() && self.sizes.len() == self.ends.len() && self.crc32cs.len() == self.ends.len();
        let ordered = out.windows(2).all(|w| lsn_order(&w[0], &w[1]).is_lt());
        sort_segs(&mut out);
        (out, whole && ordered)
    }

    /// Packs segments, in the order given.
    pub(crate) fn from_segs(segs: &[Seg<'_>]) -> Self {
        let mut out = Self::default();
        out.names.reserve(segs.iter().map(|s| s.name.len()).sum());
        out.ends.reserve(segs.len());
        out.sizes.reserve(segs.len());
        out.crc32cs.reserve(segs.len());
        for s in segs {
            out.push(s.name, s.size, s.crc);
        }
        out
    }
}

/// Segments whose last attempt failed, packed as the WIT `failure-list`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailureList {
    pub names: String,
    pub ends: Vec<u32>,
    pub attempts: Vec<u32>,
    pub reasons: String,
    pub reason_ends: Vec<u32>,
}

/// One failed segment, borrowed from a [`FailureList`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure<'a> {
    pub name: &'a str,
    pub attempts: u32,
    pub reason: &'a str,
}

impl FailureList {
    pub fn push(&mut self, name: &str, attempts: u32, reason: &str) {
        push_name(&mut self.names, &mut self.ends, name);
        self.attempts.push(attempts);
        push_name(&mut self.reasons, &mut self.reason_ends, reason);
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The failures whose names are readable, in order.
    pub fn iter(&self) -> impl Iterator<Item = Failure<'_>> {
        let reasons = Names::new(&self.reasons, &self.reason_ends).iter();
        Names::new(&self.names, &self.ends)
            .iter()
            .zip(reasons.chain(core::iter::repeat(None)))
            .enumerate()
            .filter_map(|(i, (name, reason))| {
                Some(Failure { name: name?, attempts: self.attempts.get(i).copied().unwrap_or(1), reason: reason.unwrap_or("") })
            })
    }
}

/// A listing of the archive, packed as the WIT `archive-listing`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveListing {
    pub names: String,
    pub ends: Vec<u32>,
    pub sizes: Vec<u64>,
    /// [`EntryKind::code`] of each entry.
    pub kinds: Vec<u8>,
    /// 1 where the name is UTF-8.
    pub utf8: Vec<u8>,
    pub crc32cs: Vec<u32>,
    /// 1 where `crc32cs` holds a recorded checksum.
    pub recorded: Vec<u8>,
    pub chain_start: Option<Lsn>,
    pub pruned_below: Option<Lsn>,
}

/// One archive entry, borrowed, with its recorded checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveEntry<'a> {
    pub entry: Entry<'a>,
    pub crc32c: Option<u32>,
}

impl ArchiveListing {
    /// Appends an object; `crc32c` is its recorded checksum, if any.
    pub fn push(&mut self, entry: &DirEntry, crc32c: Option<u32>) {
        push_name(&mut self.names, &mut self.ends, &entry.name);
        self.sizes.push(entry.size);
        self.kinds.push(entry.kind.code());
        self.utf8.push(u8::from(entry.utf8));
        self.crc32cs.push(crc32c.unwrap_or(0));
        self.recorded.push(u8::from(crc32c.is_some()));
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The entries in order, read defensively.
    pub fn entries(&self) -> impl Iterator<Item = ArchiveEntry<'_>> {
        Names::new(&self.names, &self.ends).iter().enumerate().map(move |(i, name)| ArchiveEntry {
            entry: entry(name, i, &self.sizes, &self.kinds, &self.utf8),
            crc32c: match self.crc32cs.get(i) {
                Some(c) if flag(self.recorded.get(i)) => Some(*c),
                _ => None,
            },
        })
    }
}

/// A segment as the planner works on it: its LSNs from its name, its name
/// borrowed, its size, and a checksum where one is known (else 0). The
/// planner copies only the names it hands back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seg<'a> {
    pub first: Lsn,
    pub last: Lsn,
    pub name: &'a str,
    pub size: u64,
    pub crc: u32,
}

impl<'a> Seg<'a> {
    /// The segment `name` stands for, or None when it is neither a segment
    /// name nor an object name (one with `.zst`): the state and outcomes
    /// name segments by the object that holds them.
    pub(crate) fn parse(name: &'a str, size: u64, crc: u32) -> Option<Self> {
        let n = ObjectName::parse(name).ok()?.segment();
        Some(Self { first: n.first(), last: n.last(), name, size, crc })
    }

    /// True when its name says it is stored compressed.
    pub(crate) fn compressed(&self) -> bool {
        self.name.len() > segment_part(self.name).len()
    }

    /// One past the last LSN, as u128 so that `u64::MAX` has a successor.
    pub(crate) fn end(&self) -> u128 {
        u128::from(self.last) + 1
    }
}

/// The order of segments: by LSNs, which for valid names is name order.
pub(crate) fn lsn_order(a: &Seg<'_>, b: &Seg<'_>) -> core::cmp::Ordering {
    (a.first, a.last).cmp(&(b.first, b.last))
}

/// The order segments are sorted in: by LSNs, then by `crc`. Where `crc`
/// holds a position (segments from a listing, events in order), equal
/// names keep their order. Not inlined, and the only order any sort in the
/// planner uses: one copy of the standard sort costs the component kilobytes.
#[inline(never)]
fn sort_order(a: &Seg<'_>, b: &Seg<'_>) -> core::cmp::Ordering {
    (a.first, a.last, a.crc).cmp(&(b.first, b.last, b.crc))
}

/// Sorts segments in [`sort_order`]; sorting what is sorted costs one pass.
pub(crate) fn sort_by_lsn(v: &mut [Seg<'_>]) {
    if !v.is_sorted_by(|a, b| sort_order(a, b).is_le()) {
        v.sort_unstable_by(sort_order);
    }
}

/// Sorts segments by LSNs and keeps the first of each name (a name is one
/// LSN range, so equal ranges are the same name).
pub(crate) fn sort_segs(v: &mut Vec<Seg<'_>>) {
    sort_by_lsn(v);
    v.dedup_by(|b, a| (a.first, a.last) == (b.first, b.last));
}

/// The position of the segment named `name` (a segment or object name) in
/// `sorted`, if it is there.
pub(crate) fn find(sorted: &[Seg<'_>], name: &str) -> Option<usize> {
    let n = ObjectName::parse(name).ok()?.segment();
    find_seg(sorted, n.first(), n.last())
}

/// True when two names (segment or object names) hold the same segment.
#[inline(never)]
pub(crate) fn same_segment(a: &str, b: &str) -> bool {
    match (ObjectName::parse(a), ObjectName::parse(b)) {
        (Ok(x), Ok(y)) => x.segment() == y.segment(),
        _ => a == b,
    }
}

/// Keeps one object of each segment in `sorted` (sorted by LSN): where the
/// archive holds a segment both plain and compressed with the same recorded
/// size and CRC32C, the plain one (either serves; plain needs no decoding).
/// Copies that disagree are no copy at all: each goes to `disagree`, and
/// none is kept.
pub(crate) fn one_copy_each<'a>(sorted: &mut Vec<Seg<'a>>, disagree: &mut Vec<Seg<'a>>) {
    // Plain loops, no iterator adapters: each adapter costs the component
    // code of its own, and it has a size budget.
    let mut kept = 0;
    let mut i = 0;
    while i < sorted.len() {
        let s = sorted[i];
        let (mut j, mut agree, mut plain) = (i + 1, true, if s.compressed() { None } else { Some(i) });
        while j < sorted.len() && (sorted[j].first, sorted[j].last) == (s.first, s.last) {
            agree &= (sorted[j].size, sorted[j].crc) == (s.size, s.crc);
            if plain.is_none() && !sorted[j].compressed() {
                plain = Some(j);
            }
            j += 1;
        }
        if agree {
            sorted[kept] = sorted[plain.unwrap_or(i)];
            kept += 1;
        } else {
            // Plain copies first, then compressed ones.
            for pass in [false, true] {
                for c in &sorted[i..j] {
                    if c.compressed() == pass {
                        disagree.push(*c);
                    }
                }
            }
        }
        i = j;
    }
    sorted.truncate(kept);
}

/// The position of the segment with these LSNs (so, this name) in `sorted`.
pub(crate) fn find_seg(sorted: &[Seg<'_>], first: Lsn, last: Lsn) -> Option<usize> {
    sorted.binary_search_by(|s| (s.first, s.last).cmp(&(first, last))).ok()
}

/// A walk through a list sorted by LSN, for lookups that come in LSN
/// order: each one moves on from where the last stopped, so a pass of
/// lookups costs one pass over the list, where a search each cost a
/// binary search of 100,000 segments per lookup.
pub(crate) struct Cursor<'s, 'a> {
    sorted: &'s [Seg<'a>],
    at: usize,
}

impl<'s, 'a> Cursor<'s, 'a> {
    pub(crate) fn new(sorted: &'s [Seg<'a>]) -> Self {
        Self { sorted, at: 0 }
    }

    /// The segment with the LSNs of `s`, if the list holds it; `s` must not
    /// come before the one looked up last.
    pub(crate) fn seek(&mut self, s: &Seg<'_>) -> Option<&'s Seg<'a>> {
        while self.sorted.get(self.at).is_some_and(|x| (x.first, x.last) < (s.first, s.last)) {
            self.at += 1;
        }
        self.sorted.get(self.at).filter(|x| (x.first, x.last) == (s.first, s.last))
    }
}

/// Merges two lists sorted by LSN into one, keeping the first of each name.
pub(crate) fn merge<'a>(a: &[Seg<'a>], b: &[Seg<'a>]) -> Vec<Seg<'a>> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let s = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if lsn_order(x, y).is_le() => {
                i += 1;
                if lsn_order(x, y).is_eq() {
                    j += 1;
                }
                *x
            }
            (Some(x), None) => {
                i += 1;
                *x
            }
            (_, Some(y)) => {
                j += 1;
                *y
            }
            (None, None) => break,
        };
        out.push(s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::format_segment_name;
    use alloc::format;
    use alloc::vec;

    #[test]
    fn a_packed_listing_gives_back_the_entries_it_was_built_from() {
        let entries = vec![
            DirEntry { name: format_segment_name(1, 10).unwrap(), utf8: true, kind: EntryKind::File, size: 100 },
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
    fn reads_names_with_bad_bounds_as_not_utf8_and_missing_fields_as_other() {
        let name = format_segment_name(1, 10).unwrap();
        let listing = Listing {
            names: format!("{name}é"),
            // The second name ends inside `é`; the third past the buffer; the
            // fourth has no size, kind or flag.
            ends: [name.len(), name.len() + 1, name.len() + 50, name.len() + 2].map(|e| e as u32).to_vec(),
            sizes: vec![5, 1, 1],
            kinds: vec![0, 0, 0],
            utf8: vec![1, 1, 1],
        };
        let got: Vec<(bool, EntryKind)> = listing.entries().map(|e| (e.utf8, e.kind)).collect();
        assert_eq!(
            got,
            [(true, EntryKind::File), (false, EntryKind::File), (false, EntryKind::File), (false, EntryKind::Other)]
        );
    }

    #[test]
    fn an_entry_without_a_size_is_skipped_as_other_never_archived() {
        let (a, b) = (format_segment_name(1, 10).unwrap(), format_segment_name(11, 20).unwrap());
        let listing = Listing {
            names: format!("{a}{b}"),
            ends: vec![a.len() as u32, (a.len() + b.len()) as u32],
            // Kinds and flags for both, a size for the first only.
            sizes: vec![10],
            kinds: vec![0, 0],
            utf8: vec![1, 1],
        };
        let got: Vec<(&str, EntryKind)> = listing.entries().map(|e| (e.name, e.kind)).collect();
        assert_eq!(got, [(a.as_str(), EntryKind::File), (b.as_str(), EntryKind::Other)]);
        let report = crate::plan::scan(crate::plan::State::default(), &listing, None);
        assert_eq!(report.pending.names(), [a.as_str()]);
        assert_eq!(report.skipped.len(), 1);
        assert_eq!(report.skipped[0].name, b);
    }

    #[test]
    fn every_kind_round_trips_through_its_byte() {
        for kind in [EntryKind::File, EntryKind::Dir, EntryKind::Symlink, EntryKind::Other] {
            assert_eq!(EntryKind::from_code(kind.code()), kind);
        }
        // The WIT's order of `entry-kind`'s cases.
        assert_eq!([EntryKind::File, EntryKind::Dir, EntryKind::Symlink, EntryKind::Other].map(EntryKind::code), [0, 1, 2, 3]);
    }

    #[test]
    fn bytes_that_stand_for_nothing_never_make_an_entry_count() {
        let name = format_segment_name(1, 10).unwrap();
        let mut listing = Listing::default();
        let mut archive = ArchiveListing::default();
        for _ in 0..4 {
            listing.push(&DirEntry { name: name.clone(), utf8: true, kind: EntryKind::File, size: 5 });
            archive.push(&DirEntry { name: name.clone(), utf8: true, kind: EntryKind::File, size: 5 }, Some(9));
        }
        // A kind past the last case, a flag that is neither 0 nor 1.
        for (at, byte) in [(1, 4u8), (2, 255), (3, 2)] {
            listing.kinds[at] = byte;
            listing.utf8[at] = byte;
            archive.kinds[at] = byte;
            archive.utf8[at] = byte;
            archive.recorded[at] = byte;
        }
        let got: Vec<(bool, EntryKind)> = listing.entries().map(|e| (e.utf8, e.kind)).collect();
        assert_eq!(got, [(true, EntryKind::File), (false, EntryKind::Other), (false, EntryKind::Other), (false, EntryKind::Symlink)]);
        let got: Vec<(bool, EntryKind, Option<u32>)> = archive.entries().map(|e| (e.entry.utf8, e.entry.kind, e.crc32c)).collect();
        assert_eq!(
            got,
            [
                (true, EntryKind::File, Some(9)),
                (false, EntryKind::Other, None),
                (false, EntryKind::Other, None),
                (false, EntryKind::Symlink, None)
            ]
        );
    }

    #[test]
    fn a_failure_list_gives_back_its_failures_and_tolerates_short_lists() {
        let mut f = FailureList::default();
        f.push("a", 2, "down");
        f.push("b", 5, "");
        assert_eq!(
            f.iter().collect::<Vec<_>>(),
            [Failure { name: "a", attempts: 2, reason: "down" }, Failure { name: "b", attempts: 5, reason: "" }]
        );
        f.attempts.pop();
        f.reason_ends.clear();
        assert_eq!(f.iter().map(|x| (x.name, x.attempts, x.reason)).collect::<Vec<_>>(), [("a", 2, ""), ("b", 1, "")]);
    }

    #[test]
    fn sorts_archived_segments_by_lsn_and_keeps_one_of_each_name() {
        let mut a = ArchivedList::default();
        for (first, last, crc) in [(11, 20, 2), (1, 10, 1), (11, 20, 3)] {
            a.push(&format_segment_name(first, last).unwrap(), 10, crc);
        }
        a.push("notes.txt", 1, 9);
        let segs = a.segs();
        assert_eq!(segs.iter().map(|s| (s.first, s.crc)).collect::<Vec<_>>(), [(1, 1), (11, 2)]);
    }
}
