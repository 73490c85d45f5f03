//! The restore side: what an archive listing holds, the chain to bring back
//! for a point-in-time recovery, and what may be pruned. Pure functions over
//! a listing of the archive; the host reads, downloads and deletes.

use alloc::string::String;
use alloc::vec::Vec;

use crate::name::SegmentName;
use crate::plan::{ArchivedObject, Gap, Overlap, Segment};
use crate::Lsn;

/// What a listing of the archive holds over a range of LSNs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyReport {
    /// Segments that hold LSNs in the range, in LSN order.
    pub segments: Vec<Segment>,
    /// LSNs in the range that no segment holds.
    pub gaps: Vec<Gap>,
    /// LSNs that two segments claim.
    pub overlaps: Vec<Overlap>,
    /// Objects whose name is not a segment name.
    pub not_segments: Vec<String>,
    /// Segments without a recorded checksum: never verified when archived.
    pub unverified: Vec<String>,
}

/// Why there is no chain to restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error("the archive holds no segment")]
    Empty,
    #[error("the archive starts at LSN {0}, after the first LSN asked for")]
    StartsAfter(Lsn),
    #[error("LSNs {} to {} are missing from the archive", .0.from, .0.to)]
    Gap(Gap),
    #[error("the archive ends at LSN {0}, before the LSN asked for")]
    EndsBefore(Lsn),
    #[error("the first LSN asked for is above the last")]
    EmptyRange,
}

fn segments_of(archive: &[ArchivedObject]) -> (Vec<Segment>, Vec<String>) {
    let mut segments = Vec::new();
    let mut not_segments = Vec::new();
    for o in archive {
        match SegmentName::parse(&o.name) {
            Ok(n) => segments.push(Segment { name: o.name.clone(), first_lsn: n.first(), last_lsn: n.last(), size: o.size }),
            Err(_) => not_segments.push(o.name.clone()),
        }
    }
    crate::plan::sort_segments(&mut segments);
    segments.dedup_by(|a, b| a.name == b.name);
    (segments, not_segments)
}

/// Reports what the archive holds between `from` and `until` (inclusive;
/// by default from its first LSN to its last): gaps and overlaps with their
/// ranges, objects that are not segments, and segments never verified.
pub fn verify_plan(archive: &[ArchivedObject], from: Option<Lsn>, until: Option<Lsn>) -> VerifyReport {
    let (all, not_segments) = segments_of(archive);
    let Some(first) = all.first() else {
        return VerifyReport { not_segments, ..VerifyReport::default() };
    };
    let lo = from.unwrap_or(first.first_lsn);
    let hi = until.unwrap_or_else(|| all.iter().map(|s| s.last_lsn).max().unwrap_or(lo));
    let segments: Vec<Segment> = all.into_iter().filter(|s| s.last_lsn >= lo && s.first_lsn <= hi).collect();
    let mut gaps = Vec::new();
    let mut overlaps = Vec::new();
    // The next LSN that must be held, as u128 so that u64::MAX has a successor.
    let mut cursor = u128::from(lo);
    let mut owner = String::new();
    for s in &segments {
        let first = u128::from(s.first_lsn);
        if first > cursor {
            gaps.push(Gap { from: cursor as Lsn, to: s.first_lsn - 1 });
        } else if first < cursor && !owner.is_empty() {
            overlaps.push(Overlap {
                first: owner.clone(),
                second: s.name.clone(),
                from: s.first_lsn.max(lo),
                to: (cursor - 1).min(u128::from(s.last_lsn)) as Lsn,
            });
        }
        let end = u128::from(s.last_lsn) + 1;
        if end > cursor {
            cursor = end;
            owner = s.name.clone();
        }
    }
    if cursor <= u128::from(hi) {
        gaps.push(Gap { from: cursor as Lsn, to: hi });
    }
    let unverified = archive
        .iter()
        .filter(|o| o.crc32c.is_none() && crate::plan::probe(&o.name).is_some_and(|p| crate::plan::holds(&segments, &p)))
        .map(|o| o.name.clone())
        .collect();
    VerifyReport { segments, gaps, overlaps, not_segments, unverified }
}

/// The minimal contiguous chain that covers `from` (by default the archive's
/// first LSN) up to `until`, in LSN order: each next segment starts right
/// after the previous one ends, and among those, the one reaching furthest.
pub fn restore_plan(archive: &[ArchivedObject], from: Option<Lsn>, until: Lsn) -> Result<Vec<Segment>, RestoreError> {
    let (all, _) = segments_of(archive);
    let first = all.first().ok_or(RestoreError::Empty)?;
    let lo = from.unwrap_or(first.first_lsn);
    if lo > until {
        return Err(RestoreError::EmptyRange);
    }
    // The segment holding `lo`, reaching furthest.
    let start = all
        .iter()
        .filter(|s| s.first_lsn <= lo && lo <= s.last_lsn)
        .max_by_key(|s| s.last_lsn)
        .ok_or_else(|| {
            if lo < first.first_lsn {
                return RestoreError::StartsAfter(first.first_lsn);
            }
            match all.iter().find(|s| s.first_lsn > lo) {
                Some(next) => RestoreError::Gap(Gap { from: lo, to: next.first_lsn - 1 }),
                None => RestoreError::EndsBefore(all.iter().map(|s| s.last_lsn).max().unwrap_or(0)),
            }
        })?;
    let mut chain = alloc::vec![start.clone()];
    let mut end = start.last_lsn;
    while end < until {
        let next = end + 1;
        // `all` is in LSN order: the segments starting at `next` end just
        // before `after`, and the last of them reaches furthest.
        let after = all.partition_point(|s| s.first_lsn <= next);
        match after.checked_sub(1).map(|i| &all[i]).filter(|s| s.first_lsn == next) {
            Some(s) => {
                end = s.last_lsn;
                chain.push(s.clone());
            }
            None => {
                return Err(match all.get(after) {
                    Some(after) => RestoreError::Gap(Gap { from: next, to: after.first_lsn - 1 }),
                    None => RestoreError::EndsBefore(end),
                });
            }
        }
    }
    Ok(chain)
}

/// Segments lying wholly below `before`, oldest first, so that deleting them
/// in order never leaves a hole under a surviving segment.
pub fn prune_plan(archive: &[ArchivedObject], before: Lsn) -> Vec<Segment> {
    let (all, _) = segments_of(archive);
    all.into_iter().filter(|s| s.last_lsn < before).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::format_segment_name;

    fn obj(first: Lsn, last: Lsn) -> ArchivedObject {
        ArchivedObject { name: format_segment_name(first, last).unwrap(), size: 10, crc32c: Some(1) }
    }

    fn names(v: &[Segment]) -> Vec<(Lsn, Lsn)> {
        v.iter().map(|s| (s.first_lsn, s.last_lsn)).collect()
    }

    #[test]
    fn restores_the_minimal_chain_that_covers_the_target() {
        let archive = [obj(21, 30), obj(1, 10), obj(11, 20), obj(31, 40)];
        assert_eq!(names(&restore_plan(&archive, None, 25).unwrap()), vec![(1, 10), (11, 20), (21, 30)]);
        assert_eq!(names(&restore_plan(&archive, None, 20).unwrap()), vec![(1, 10), (11, 20)]);
        assert_eq!(names(&restore_plan(&archive, Some(15), 31).unwrap()), vec![(11, 20), (21, 30), (31, 40)]);
        assert_eq!(names(&restore_plan(&archive, None, 1).unwrap()), vec![(1, 10)]);
    }

    #[test]
    fn refuses_a_chain_with_a_gap_naming_the_missing_range() {
        let archive = [obj(1, 10), obj(21, 30)];
        assert_eq!(restore_plan(&archive, None, 25), Err(RestoreError::Gap(Gap { from: 11, to: 20 })));
        assert_eq!(names(&restore_plan(&archive, None, 10).unwrap()), vec![(1, 10)]);
        assert_eq!(restore_plan(&archive, None, 31), Err(RestoreError::Gap(Gap { from: 11, to: 20 })));
        assert_eq!(restore_plan(&archive[..1], None, 31), Err(RestoreError::EndsBefore(10)));
        assert_eq!(restore_plan(&[], None, 1), Err(RestoreError::Empty));
        assert_eq!(restore_plan(&archive, Some(0), 5), Err(RestoreError::StartsAfter(1)));
        assert_eq!(restore_plan(&archive, Some(15), 25), Err(RestoreError::Gap(Gap { from: 15, to: 20 })));
    }

    #[test]
    fn reports_gaps_overlaps_strays_and_unverified_objects() {
        let mut archive = vec![obj(1, 10), obj(21, 30), obj(25, 40), obj(41, 50)];
        archive.push(ArchivedObject { name: "notes.txt".into(), size: 1, crc32c: None });
        archive.push(ArchivedObject { name: format_segment_name(51, 60).unwrap(), size: 1, crc32c: None });
        let r = verify_plan(&archive, None, None);
        assert_eq!(r.gaps, vec![Gap { from: 11, to: 20 }]);
        assert_eq!(r.overlaps.len(), 1);
        assert_eq!((r.overlaps[0].from, r.overlaps[0].to), (25, 30));
        assert_eq!(r.not_segments, vec!["notes.txt".to_string()]);
        assert_eq!(r.unverified, vec![format_segment_name(51, 60).unwrap()]);
        // Over a range that avoids the problems, it is clean.
        let r = verify_plan(&archive, Some(41), Some(60));
        assert!(r.gaps.is_empty() && r.overlaps.is_empty());
        // A range past the end is a gap.
        let r = verify_plan(&archive[..1], Some(1), Some(15));
        assert_eq!(r.gaps, vec![Gap { from: 11, to: 15 }]);
    }

    #[test]
    fn prunes_only_segments_wholly_below_the_bound_oldest_first() {
        let archive = [obj(21, 30), obj(1, 10), obj(11, 20)];
        assert_eq!(names(&prune_plan(&archive, 21)), vec![(1, 10), (11, 20)]);
        assert_eq!(names(&prune_plan(&archive, 20)), vec![(1, 10)]);
        assert!(prune_plan(&archive, 1).is_empty());
    }

    #[test]
    fn handles_u64_max() {
        let archive = [obj(u64::MAX - 9, u64::MAX - 1), obj(u64::MAX, u64::MAX)];
        assert_eq!(restore_plan(&archive, None, u64::MAX).unwrap().len(), 2);
        assert!(verify_plan(&archive, None, None).gaps.is_empty());
    }
}
