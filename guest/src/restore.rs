//! The restore side: what an archive holds over a range, the chain to bring
//! back for a point-in-time recovery, and what may be pruned. Pure functions
//! over a listing of the archive, on the chain model of [`crate::chain`];
//! the host reads, downloads and deletes.

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;

use crate::chain::{self, Break, Start};
use crate::packed::{find_seg, sort_by_lsn, ArchiveListing, Seg, SegmentList};
use crate::plan::{archived_objects, Skipped};
use crate::Lsn;

/// What a listing of the archive holds over a range of LSNs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyReport {
    pub from: Lsn,
    pub until: Lsn,
    /// Verified segments holding LSNs in the range, in LSN order.
    pub segments: SegmentList,
    pub breaks: Vec<Break>,
    pub off_chain: Vec<String>,
    pub strays: Vec<Skipped>,
    pub unverified: Vec<String>,
}

/// Why a range cannot be looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("the archive holds no verified segment")]
    Empty,
    #[error("the first LSN asked for is above the last")]
    EmptyRange,
    #[error("the first LSN asked for is above the archive's last LSN {0}")]
    BeyondEnd(Lsn),
}

/// Why there is no chain to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreError {
    Range(RangeError),
    Broken(Break),
}

/// What to prune, and what to record first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunePlan {
    pub segments: SegmentList,
    pub pruned_below: Lsn,
    pub chain_start: Lsn,
}

/// Why a prune is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PruneError {
    #[error("the archive holds no chain from its start, so nothing is safe to prune")]
    NoChain,
    #[error("the bound is above the archive's watermark {0}")]
    AboveWatermark(Lsn),
}

/// The archive's segments: verified ones (sorted, each name once), every
/// segment object (for pruning), strays and unverified names.
struct Archive<'a> {
    verified: Vec<Seg<'a>>,
    all: Vec<Seg<'a>>,
    strays: Vec<Skipped>,
    unverified: Vec<Seg<'a>>,
    /// Objects without a record whose segment another object holds, verified.
    redundant: Vec<Seg<'a>>,
}

fn read(listing: &ArchiveListing) -> Archive<'_> {
    let (mut strays, mut unverified) = (Vec::new(), Vec::new());
    // Every segment object, each copy of a segment too: a prune removes them
    // all. (`crc` holds the position, so that copies keep the listing's order.)
    let mut all: Vec<Seg<'_>> = Vec::with_capacity(listing.len());
    let verified = archived_objects(listing, &mut strays, &mut unverified, None, Some(&mut all));
    sort_by_lsn(&mut all);
    sort_by_lsn(&mut unverified);
    // An object without a record whose segment another object holds,
    // verified, is a leftover (a crash before its record, then runs with the
    // other compression), not a hole: it is reported as off the chain.
    let (mut redundant, mut kept) = (Vec::new(), 0);
    for i in 0..unverified.len() {
        let u = unverified[i];
        if find_seg(&verified, u.first, u.last).is_some() {
            redundant.push(u);
        } else {
            unverified[kept] = u;
            kept += 1;
        }
    }
    unverified.truncate(kept);
    Archive { verified, all, strays, unverified, redundant }
}

/// The archive's chain start as scan takes it from a listing: the recorded
/// one, else the first verified segment that the prune floor leaves (a
/// start in the pruned part is never taken).
fn chain_start(listing: &ArchiveListing, verified: &[Seg<'_>]) -> Option<Lsn> {
    let floor = listing.pruned_below;
    listing.chain_start.or_else(|| verified.iter().find(|s| floor.is_none_or(|f| s.last >= f)).map(|s| s.first))
}

/// The range `from..=until`: by default from the chain start (or, when the
/// floor leaves no verified segment, the first verified LSN) to the last
/// LSN of any segment object, verified or not, so that an unverified
/// segment at the end shows as a break rather than falling outside the
/// range.
fn range(listing: &ArchiveListing, a: &Archive<'_>, from: Option<Lsn>, until: Option<Lsn>) -> Result<(Lsn, Lsn), RangeError> {
    let first = a.verified.first().ok_or(RangeError::Empty)?.first;
    let last = a.all.iter().map(|s| s.last).max().unwrap_or(first).max(first);
    let lo = from.or(chain_start(listing, &a.verified)).unwrap_or(first);
    if until.is_some_and(|u| lo > u) {
        return Err(RangeError::EmptyRange);
    }
    if lo > last {
        return Err(RangeError::BeyondEnd(last));
    }
    Ok((lo, until.unwrap_or(last)))
}

/// Where a walk over a range begins: at the archive's chain start, a chain
/// begins as the watermark's does, with a segment starting exactly there
/// (so that scan, verify and restore report one break); from any other LSN,
/// with any segment holding it.
fn start_of(listing: &ArchiveListing, verified: &[Seg<'_>], lo: Lsn) -> Start {
    if chain_start(listing, verified) == Some(lo) { Start::At(lo) } else { Start::Holding(lo) }
}

fn pack<'a>(segs: impl Iterator<Item = Seg<'a>>) -> SegmentList {
    let mut out = SegmentList::default();
    for s in segs {
        out.push(s.name, s.size);
    }
    out
}

/// What the archive holds over `from..=until`: breaks, off-chain segments,
/// strays and unverified segments.
pub fn verify_plan(listing: &ArchiveListing, from: Option<Lsn>, until: Option<Lsn>) -> Result<VerifyReport, RangeError> {
    let a = read(listing);
    let (lo, hi) = range(listing, &a, from, until)?;
    let w = chain::walk(&a.verified, start_of(listing, &a.verified, lo), hi);
    let in_range = |s: &Seg<'_>| s.last >= lo && s.first <= hi;
    // Plain loops: iterator adapters cost the component code of their own.
    let names = |segs: &[Seg<'_>], keep: &dyn Fn(usize, &Seg<'_>) -> bool, out: &mut Vec<String>| {
        for (i, s) in segs.iter().enumerate() {
            if keep(i, s) && in_range(s) {
                out.push(s.name.to_owned());
            }
        }
    };
    let (mut off_chain, mut unverified) = (Vec::new(), Vec::new());
    names(&a.verified, &|i, _| !w.used[i], &mut off_chain);
    names(&a.redundant, &|_, _| true, &mut off_chain);
    names(&a.unverified, &|_, _| true, &mut unverified);
    Ok(VerifyReport {
        from: lo,
        until: hi,
        segments: pack(a.verified.iter().copied().filter(in_range)),
        breaks: w.breaks,
        off_chain,
        strays: a.strays,
        unverified,
    })
}

/// A shortest chain of verified segments over `from..=until`, or the first
/// break over that range, as [`verify_plan`] reports it.
pub fn restore_plan(listing: &ArchiveListing, from: Option<Lsn>, until: Lsn) -> Result<SegmentList, RestoreError> {
    let a = read(listing);
    let (lo, hi) = range(listing, &a, from, Some(until)).map_err(RestoreError::Range)?;
    let start = start_of(listing, &a.verified, lo);
    match chain::shortest(&a.verified, start, hi) {
        Some(chain) => Ok(pack(chain.into_iter().map(|i| a.verified[i]))),
        None => {
            let w = chain::walk(&a.verified, start, hi);
            // No chain reaches `hi`, so the walk found a break before it.
            Err(RestoreError::Broken(w.breaks.into_iter().next().unwrap_or(Break::Gap { from: lo, to: hi })))
        }
    }
}

/// Segments lying wholly below `before`, oldest first; refused above the
/// archive's watermark, so that the segment holding it always stays.
pub fn prune_plan(listing: &ArchiveListing, before: Lsn) -> Result<PrunePlan, PruneError> {
    let a = read(listing);
    // A bound below the recorded floor is a prune to the floor: a floor
    // never goes down, and nothing below it starts a chain again.
    let before = before.max(listing.pruned_below.unwrap_or(0));
    let start = chain_start(listing, &a.verified).ok_or(PruneError::NoChain)?;
    let reach = chain::reach(&a.verified, Start::At(start));
    if reach <= u128::from(start) {
        return Err(PruneError::NoChain);
    }
    let watermark = (reach - 1) as Lsn;
    if before > watermark {
        return Err(PruneError::AboveWatermark(watermark));
    }
    // The chain from the start to the watermark goes on from the segment of
    // it that holds the bound: that is the new chain start.
    let path = chain::shortest(&a.verified, Start::At(start), watermark).unwrap_or_default();
    let new_start = path
        .iter()
        .map(|&i| a.verified[i])
        .find(|s| s.first <= before && before <= s.last)
        .map_or(start, |s| s.first.max(start));
    Ok(PrunePlan {
        segments: pack(a.all.iter().copied().filter(|s| s.last < before)),
        pruned_below: before,
        chain_start: new_start,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::format_segment_name;
    use crate::packed::{DirEntry, EntryKind, Listing};
    use crate::plan::{scan, SkipReason, State};
    use alloc::vec;

    fn name(first: Lsn, last: Lsn) -> String {
        format_segment_name(first, last).unwrap()
    }

    fn entry(name: &str) -> DirEntry {
        DirEntry { name: name.into(), utf8: true, kind: EntryKind::File, size: 10 }
    }

    fn archive(spans: &[(Lsn, Lsn)]) -> ArchiveListing {
        let mut a = ArchiveListing::default();
        for &(f, l) in spans {
            a.push(&entry(&name(f, l)), Some(1));
        }
        a
    }

    fn spans(list: &SegmentList) -> Vec<(Lsn, Lsn)> {
        list.iter().map(|(n, _)| Seg::parse(n, 0, 0).map(|s| (s.first, s.last)).unwrap()).collect()
    }

    #[test]
    fn verifies_restores_and_prunes_an_archive_of_plain_and_compressed_objects() {
        let mut a = ArchiveListing::default();
        let n: Vec<String> = [(1, 10), (11, 20), (21, 30)].iter().map(|&(f, l)| name(f, l)).collect();
        // Plain, both, compressed.
        a.push(&entry(&n[0]), Some(1));
        a.push(&entry(&n[1]), Some(1));
        a.push(&entry(&format!("{}.zst", n[1])), Some(1));
        a.push(&entry(&format!("{}.zst", n[2])), Some(1));
        let report = verify_plan(&a, None, None).unwrap();
        assert!(report.breaks.is_empty() && report.off_chain.is_empty() && report.unverified.is_empty(), "{report:?}");
        assert_eq!(report.segments.names(), [n[0].clone(), n[1].clone(), format!("{}.zst", n[2])]);
        let chain = restore_plan(&a, None, 30).unwrap();
        assert_eq!(chain.names(), report.segments.names());
        // Every copy below the bound goes.
        let prune = prune_plan(&a, 21).unwrap();
        assert_eq!(prune.segments.names(), [n[0].clone(), n[1].clone(), format!("{}.zst", n[1])]);
        // A copy without a record beside a verified one is a leftover, off the chain.
        let mut leftover = a.clone();
        leftover.push(&entry(&format!("{}.zst", n[0])), None);
        let report = verify_plan(&leftover, None, None).unwrap();
        assert!(report.unverified.is_empty() && report.breaks.is_empty(), "{report:?}");
        assert_eq!(report.off_chain, [format!("{}.zst", n[0])]);
        assert_eq!(restore_plan(&leftover, None, 30).unwrap().names(), chain.names());
        // Copies that disagree are a hole, not an overlap: nothing holds those LSNs.
        let mut bad = a.clone();
        bad.crc32cs[2] = 2;
        let report = verify_plan(&bad, None, None).unwrap();
        assert_eq!(report.unverified, [n[1].clone(), format!("{}.zst", n[1])]);
        assert_eq!(report.breaks, [Break::Gap { from: 11, to: 20 }]);
        assert_eq!(restore_plan(&bad, None, 30), Err(RestoreError::Broken(Break::Gap { from: 11, to: 20 })));
    }

    #[test]
    fn restores_the_shortest_chain_that_covers_the_target() {
        let a = archive(&[(21, 30), (1, 10), (11, 20), (31, 40)]);
        assert_eq!(spans(&restore_plan(&a, None, 25).unwrap()), [(1, 10), (11, 20), (21, 30)]);
        assert_eq!(spans(&restore_plan(&a, Some(15), 31).unwrap()), [(11, 20), (21, 30), (31, 40)]);
        assert_eq!(spans(&restore_plan(&a, None, 1).unwrap()), [(1, 10)]);
        let a = archive(&[(1, 10), (1, 5), (6, 30)]);
        assert_eq!(spans(&restore_plan(&a, None, 30).unwrap()), [(1, 5), (6, 30)]);
    }

    #[test]
    fn refuses_a_restore_with_the_break_verify_reports() {
        let a = archive(&[(1, 10), (21, 30)]);
        let gap = Break::Gap { from: 11, to: 20 };
        assert_eq!(restore_plan(&a, None, 25), Err(RestoreError::Broken(gap.clone())));
        assert_eq!(verify_plan(&a, None, Some(25)).unwrap().breaks, [gap]);
        assert_eq!(restore_plan(&a, None, 40), Err(RestoreError::Broken(Break::Gap { from: 11, to: 20 })));
        assert_eq!(restore_plan(&a, Some(21), 40), Err(RestoreError::Broken(Break::Gap { from: 31, to: 40 })));
        assert_eq!(restore_plan(&a, Some(0), 5), Err(RestoreError::Broken(Break::Gap { from: 0, to: 0 })));
        assert_eq!(restore_plan(&ArchiveListing::default(), None, 1), Err(RestoreError::Range(RangeError::Empty)));
        assert_eq!(restore_plan(&a, Some(9), 5), Err(RestoreError::Range(RangeError::EmptyRange)));
        assert_eq!(restore_plan(&a, Some(31), 40), Err(RestoreError::Range(RangeError::BeyondEnd(30))));
    }

    /// Issue 12: with `[1-10, 5-15, 16-20, ...]`, restore said "LSNs 11 to
    /// 15 are missing" though `5-15` holds them, and verify found no break.
    #[test]
    fn reports_one_overlap_the_same_way_in_scan_verify_and_restore() {
        let set = [(1, 10), (5, 15), (16, 20), (21, 30), (31, 40), (41, 50)];
        let a = archive(&set);
        let overlap = Break::Overlap { from: 11, to: 15, held_by: name(5, 15), after: name(1, 10) };
        assert_eq!(restore_plan(&a, None, 50), Err(RestoreError::Broken(overlap.clone())));
        let report = verify_plan(&a, None, None).unwrap();
        assert_eq!(report.breaks, [overlap.clone()]);
        assert_eq!(report.off_chain, [name(5, 15)]);
        // The archiver's own scan of the same segments, all of them local.
        let entries: Vec<DirEntry> = set.iter().map(|&(f, l)| entry(&name(f, l))).collect();
        let listing: Listing = entries.iter().collect();
        let s = scan(State::default(), &listing, None);
        assert_eq!(s.breaks, [overlap]);
        // From past the overlap, there is a chain.
        assert_eq!(restore_plan(&a, Some(16), 50).map(|c| c.len()), Ok(4));
    }

    #[test]
    fn reports_a_chain_start_inside_a_segment_the_same_way_in_scan_verify_restore_and_prune() {
        // A recorded chain start that no segment starts at (the archive
        // changed behind the archiver): 11-20 holds it but does not start there.
        let mut a = archive(&[(11, 20), (21, 30)]);
        a.chain_start = Some(15);
        let local: Vec<DirEntry> = [(11, 20), (21, 30)].iter().map(|&(f, l)| entry(&name(f, l))).collect();
        let s = scan(State::default(), &local.iter().collect(), Some(&a));
        assert_eq!(s.state.last_archived_lsn, None);
        let first = s.breaks.first().cloned().expect("scan reports a break");
        assert!(matches!(&first, Break::Overlap { from: 15, held_by, .. } if *held_by == name(11, 20)), "{first:?}");
        let v = verify_plan(&a, None, None).unwrap();
        assert_eq!(v.breaks.first(), Some(&first), "{v:?}");
        assert_eq!(restore_plan(&a, None, 30), Err(RestoreError::Broken(first.clone())));
        assert_eq!(prune_plan(&a, 21), Err(PruneError::NoChain));
        // From an LSN that is not the chain start, any segment holding it begins a chain.
        assert_eq!(restore_plan(&a, Some(11), 30).map(|c| spans(&c)), Ok(vec![(11, 20), (21, 30)]));
        assert!(verify_plan(&a, Some(12), None).unwrap().breaks.is_empty());
    }

    #[test]
    fn a_floor_without_a_recorded_start_starts_every_function_where_scan_does() {
        // A prune recorded its floor, then crashed; no chain start was ever recorded.
        let mut a = archive(&[(1, 5), (7, 10), (11, 20), (21, 30)]);
        a.pruned_below = Some(11);
        let s = scan(State::default(), &Listing::default(), Some(&a));
        assert_eq!((s.state.chain_start, s.state.last_archived_lsn), (Some(11), Some(30)));
        assert!(s.breaks.is_empty(), "{s:?}");
        let v = verify_plan(&a, None, None).unwrap();
        assert_eq!(v.from, 11);
        assert_eq!(v.breaks, s.breaks);
        assert_eq!(restore_plan(&a, None, 30).map(|c| spans(&c)), Ok(vec![(11, 20), (21, 30)]));
        assert_eq!(prune_plan(&a, 21).map(|p| (p.pruned_below, p.chain_start)), Ok((21, 21)));
        // Nothing the floor leaves: no chain to prune from, never one in the pruned part.
        let mut b = archive(&[(3, 3)]);
        b.pruned_below = Some(16);
        assert_eq!(prune_plan(&b, 0), Err(PruneError::NoChain));
        assert_eq!(prune_plan(&b, 3), Err(PruneError::NoChain));
        // With a segment past the floor, a bound below the floor prunes to the floor.
        let mut c = archive(&[(3, 3), (16, 20)]);
        c.pruned_below = Some(16);
        let p = prune_plan(&c, 3).unwrap();
        assert_eq!((p.pruned_below, p.chain_start), (16, 16));
        assert_eq!(spans(&p.segments), [(3, 3)]);
    }

    #[test]
    fn reports_strays_and_unverified_objects_and_never_uses_them() {
        let mut a = archive(&[(1, 10), (21, 30)]);
        a.push(&entry("notes.txt"), None);
        a.push(&DirEntry { name: "wal-\u{fffd}.seg".into(), utf8: false, kind: EntryKind::File, size: 1 }, None);
        a.push(&DirEntry { name: name(41, 50), utf8: true, kind: EntryKind::Symlink, size: 0 }, Some(1));
        a.push(&entry(&name(11, 20)), None);
        let r = verify_plan(&a, None, None).unwrap();
        assert_eq!(r.unverified, [name(11, 20)]);
        assert_eq!(r.breaks, [Break::Gap { from: 11, to: 20 }]);
        let reasons: Vec<(&str, SkipReason)> = r.strays.iter().map(|s| (s.name.as_str(), s.reason)).collect();
        assert_eq!(reasons[0].0, "notes.txt");
        assert_eq!(reasons[1].1, SkipReason::NotUtf8);
        assert_eq!(reasons[2].1, SkipReason::NotAFile(EntryKind::Symlink));
        assert!(restore_plan(&a, None, 30).is_err());
    }

    #[test]
    fn checks_by_default_up_to_an_unverified_segment_at_the_end() {
        // The last upload did not record its checksum (a crash before it).
        let mut a = archive(&[(1, 10), (11, 20)]);
        a.push(&entry(&name(21, 30)), None);
        let r = verify_plan(&a, None, None).unwrap();
        assert_eq!((r.from, r.until), (1, 30));
        assert_eq!(r.unverified, [name(21, 30)]);
        assert_eq!(r.breaks, [Break::Gap { from: 21, to: 30 }]);
        // Two plain and compressed copies of the last segment that disagree: the same.
        let mut a = archive(&[(1, 10), (11, 20)]);
        a.push(&entry(&name(21, 30)), Some(1));
        a.push(&entry(&format!("{}.zst", name(21, 30))), Some(2));
        let r = verify_plan(&a, None, None).unwrap();
        assert_eq!(r.until, 30);
        assert_eq!(r.unverified.len(), 2, "{r:?}");
        assert_eq!(r.breaks, [Break::Gap { from: 21, to: 30 }]);
        // A range from inside the unverified tail is a break, not past the end.
        assert_eq!(verify_plan(&a, Some(25), None).unwrap().breaks, [Break::Gap { from: 25, to: 30 }]);
        assert_eq!(verify_plan(&a, Some(31), None), Err(RangeError::BeyondEnd(30)));
    }

    #[test]
    fn refuses_an_empty_archive_and_an_empty_range() {
        assert_eq!(verify_plan(&ArchiveListing::default(), None, None), Err(RangeError::Empty));
        let a = archive(&[(1, 10)]);
        assert_eq!(verify_plan(&a, Some(11), None), Err(RangeError::BeyondEnd(10)));
        assert_eq!(verify_plan(&a, Some(8), Some(5)), Err(RangeError::EmptyRange));
        let r = verify_plan(&a, Some(5), Some(15)).unwrap();
        assert_eq!((r.from, r.until), (5, 15));
        assert_eq!(r.breaks, [Break::Gap { from: 11, to: 15 }]);
    }

    #[test]
    fn starts_from_the_recorded_chain_start_by_default() {
        let mut a = archive(&[(1, 5), (11, 20), (21, 30)]);
        a.chain_start = Some(11);
        let r = verify_plan(&a, None, None).unwrap();
        assert_eq!((r.from, r.until), (11, 30));
        assert!(r.breaks.is_empty());
        assert_eq!(spans(&restore_plan(&a, None, 30).unwrap()), [(11, 20), (21, 30)]);
    }

    #[test]
    fn prunes_below_the_bound_only_up_to_the_watermark_and_moves_the_chain_start() {
        let a = archive(&[(1, 10), (11, 20), (21, 30), (41, 50)]);
        let p = prune_plan(&a, 15).unwrap();
        assert_eq!(spans(&p.segments), [(1, 10)]);
        assert_eq!((p.pruned_below, p.chain_start), (15, 11));
        let p = prune_plan(&a, 30).unwrap();
        assert_eq!(spans(&p.segments), [(1, 10), (11, 20)], "the segment holding the watermark stays");
        assert_eq!(p.chain_start, 21);
        assert_eq!(prune_plan(&a, 31), Err(PruneError::AboveWatermark(30)));
        assert_eq!(prune_plan(&a, u64::MAX), Err(PruneError::AboveWatermark(30)));
        assert_eq!(prune_plan(&ArchiveListing::default(), 5), Err(PruneError::NoChain));
        let p = prune_plan(&a, 1).unwrap();
        assert!(p.segments.is_empty());
        // A recorded start where nothing starts: no chain, nothing pruned.
        let mut b = a.clone();
        b.chain_start = Some(5);
        assert_eq!(prune_plan(&b, 3), Err(PruneError::NoChain));
        // After a prune to 21, a bound below that floor keeps the floor.
        let mut pruned = archive(&[(21, 30), (41, 50)]);
        (pruned.chain_start, pruned.pruned_below) = (Some(21), Some(21));
        let p = prune_plan(&pruned, 5).unwrap();
        assert!(p.segments.is_empty());
        assert_eq!((p.pruned_below, p.chain_start), (21, 21));
        assert_eq!(prune_plan(&pruned, 25).map(|p| (p.pruned_below, p.chain_start)), Ok((25, 21)));
    }

    #[test]
    fn handles_u64_max() {
        let a = archive(&[(u64::MAX - 9, u64::MAX - 1), (u64::MAX, u64::MAX)]);
        assert_eq!(restore_plan(&a, None, u64::MAX).unwrap().len(), 2);
        assert!(verify_plan(&a, None, None).unwrap().breaks.is_empty());
        assert_eq!(prune_plan(&a, u64::MAX).unwrap().segments.len(), 1);
    }

    #[test]
    fn keeps_one_of_each_name_in_an_archive_listing() {
        let a = archive(&[(1, 10), (1, 10), (11, 20)]);
        let r = verify_plan(&a, None, None).unwrap();
        assert_eq!(r.segments.len(), 2);
        assert!(r.breaks.is_empty() && r.off_chain.is_empty());
        let _ = vec![0];
    }
}
