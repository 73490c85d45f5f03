//! The one chain model that every planner function uses.
//!
//! - A chain is a sequence of segments in which each next one starts right
//!   after the previous one ends: `next.first == prev.last + 1`.
//! - It begins [`At`](Start::At) an LSN (a segment must start exactly there:
//!   the archive's chain start) or [`Holding`](Start::Holding) one (any
//!   segment holding it: a restore or a check from some LSN).
//! - Its *reach* is one past the furthest LSN that any chain from the start
//!   gets to. Over the archived, verified segments, reach minus one is the
//!   watermark.
//! - Where no chain goes on, there is a *break*: a gap when no segment holds
//!   the next LSN, an overlap when segments hold it but none of them can be
//!   chained. A walk over a range reports every break, starting again after
//!   each one from the segments that hold the first LSN past it.
//! - A *shortest* chain covers a range with the fewest segments.
//!
//! Every function here takes segments sorted by LSN ([`crate::packed::sort_segs`])
//! and runs in one pass with a heap: O(n log n), whatever the overlaps.

use alloc::collections::{BinaryHeap, VecDeque};
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cmp::Reverse;

use crate::packed::Seg;
use crate::Lsn;

/// An open position of a chain: (position, chain length, last segment).
type Entry = (u128, u32, usize);

/// Open positions of chains, lowest first. One type for every walk here:
/// each type of heap costs the component its own copy of the heap's code.
///
/// Segments come sorted by LSN, so the positions pushed mostly come in
/// ascending order (a chain going up): those wait in `run`, a queue in
/// order, at O(1) each; only a position below the last one queued (an
/// overlap) goes to the heap. Without overlaps the heap is never touched.
#[derive(Default)]
struct Open {
    run: VecDeque<Entry>,
    heap: BinaryHeap<Reverse<Entry>>,
}

impl Open {
    fn push(&mut self, e: Entry) {
        if self.run.back().is_none_or(|last| *last <= e) {
            self.run.push_back(e);
        } else {
            self.heap.push(Reverse(e));
        }
    }

    /// The lowest entry, and whether it is the run's.
    fn peek(&self) -> Option<(&Entry, bool)> {
        match (self.run.front(), self.heap.peek()) {
            (Some(r), Some(Reverse(h))) if h < r => Some((h, false)),
            (Some(r), _) => Some((r, true)),
            (None, Some(Reverse(h))) => Some((h, false)),
            (None, None) => None,
        }
    }

    /// Drops the positions below `first`: no segment still to come starts there.
    fn drop_below(&mut self, first: u128) {
        while let Some((e, in_run)) = self.peek() {
            if e.0 >= first {
                break;
            }
            if in_run {
                self.run.pop_front();
            } else {
                self.heap.pop();
            }
        }
    }

    /// A chain going straight up, the common case: the only open position is
    /// `first`, and no other segment starts there (`next_first`), so a
    /// segment starting there takes it over. Then `end` replaces it at once,
    /// the same as pushing `end` and dropping `first` at the next segment.
    fn step_up(&mut self, first: u128, next_first: Option<u64>, end: u128) -> bool {
        let only = self.heap.is_empty() && self.run.len() == 1 && self.run[0].0 == first;
        if only && next_first.is_none_or(|n| u128::from(n) != first) {
            self.run[0] = (end, 0, 0);
            return true;
        }
        false
    }

    /// The lowest entry when it is at `first`: a chain can go on with a
    /// segment starting there.
    fn at(&self, first: u128) -> Option<&Entry> {
        self.peek().map(|(e, _)| e).filter(|e| e.0 == first)
    }

    fn clear(&mut self) {
        self.run.clear();
        self.heap.clear();
    }
}

/// Where a chain begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// With a segment that starts exactly at this LSN.
    At(Lsn),
    /// With any segment that holds this LSN.
    Holding(Lsn),
}

impl Start {
    fn lsn(self) -> u128 {
        match self {
            Start::At(l) | Start::Holding(l) => u128::from(l),
        }
    }

    /// True when `seg` can be a chain's first segment.
    fn enters(self, seg: &Seg<'_>) -> bool {
        match self {
            Start::At(l) => seg.first == l,
            Start::Holding(l) => seg.first <= l && l <= seg.last,
        }
    }
}

/// Where no chain goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Break {
    /// No segment holds `from..=to`.
    Gap { from: Lsn, to: Lsn },
    /// Segments hold `from..=to` but none can be chained: `held_by` holds
    /// `from` and reaches furthest; `after` is the chain's last segment
    /// before `from` ("" when no chain started).
    Overlap { from: Lsn, to: Lsn, held_by: String, after: String },
}

/// One past the furthest LSN some chain from `start` reaches over `sorted`;
/// `start`'s own LSN when no chain starts there.
pub(crate) fn reach(sorted: &[Seg<'_>], start: Start) -> u128 {
    // Positions a chain can continue from, lowest first. A segment is on a
    // chain when it starts at one of them (or enters at the start).
    let mut open = Open::default();
    let mut reach = start.lsn();
    for (i, seg) in sorted.iter().enumerate() {
        let first = u128::from(seg.first);
        if first > reach {
            break;
        }
        if open.step_up(first, sorted.get(i + 1).map(|n| n.first), seg.end()) {
            reach = reach.max(seg.end());
            continue;
        }
        open.drop_below(first);
        if start.enters(seg) || open.at(first).is_some() {
            open.push((seg.end(), 0, 0));
            reach = reach.max(seg.end());
        }
    }
    reach
}

/// What a walk over a range found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Walk {
    /// Every break in the range, in LSN order.
    pub breaks: Vec<Break>,
    /// For each segment of the input, whether a chain of the walk uses it.
    pub used: Vec<bool>,
}

/// Walks chains from `start` up to `hi`, reporting every break; after a
/// break it starts again with the segments holding the first LSN past it.
pub(crate) fn walk(sorted: &[Seg<'_>], start: Start, hi: Lsn) -> Walk {
    let hi_end = u128::from(hi) + 1;
    let mut used = vec![false; sorted.len()];
    let mut breaks = Vec::new();
    let mut base = start;
    let mut open = Open::default();
    let mut reach = start.lsn();
    // The chain's segment that reaches `reach`, and of every segment seen,
    // the one reaching furthest (it holds a break's first LSN if any does).
    let mut after: &str = "";
    let mut holder: Option<(u128, &str)> = None;
    for (i, seg) in sorted.iter().enumerate() {
        let first = u128::from(seg.first);
        if first > u128::from(hi) {
            break;
        }
        if first > reach {
            reach = broken(&mut breaks, reach, after, Some(first), holder, hi);
            if reach >= hi_end {
                // An overlap to the end of the range: nothing more to walk.
                break;
            }
            // Again from the segments holding the LSN past the break.
            base = Start::Holding(reach as Lsn);
            open.clear();
            after = "";
            // An overlap's end can still be short of this segment: a gap follows.
            if first > reach {
                reach = broken(&mut breaks, reach, after, Some(first), holder, hi);
                base = Start::Holding(reach as Lsn);
            }
        }
        let up = open.step_up(first, sorted.get(i + 1).map(|n| n.first), seg.end());
        if !up {
            open.drop_below(first);
        }
        if up || base.enters(seg) || open.at(first).is_some() {
            used[i] = true;
            if !up {
                open.push((seg.end(), 0, 0));
            }
            if seg.end() > reach {
                reach = seg.end();
                after = seg.name;
            }
        }
        if holder.is_none_or(|(end, _)| seg.end() > end) {
            holder = Some((seg.end(), seg.name));
        }
    }
    while reach < hi_end {
        reach = broken(&mut breaks, reach, after, None, holder, hi);
        after = "";
    }
    Walk { breaks, used }
}

/// Records the break at `reach` (which is at most `hi`), before a segment
/// starting at `next` (None: no segment is left), and returns the position
/// past it: an overlap ends where the segment holding `reach` that reaches
/// furthest ends, a gap where the next segment starts.
fn broken(breaks: &mut Vec<Break>, reach: u128, after: &str, next: Option<u128>, holder: Option<(u128, &str)>, hi: Lsn) -> u128 {
    // `reach <= hi`, so it fits in u64, and so do both ends below.
    let from = reach as Lsn;
    let hi_end = u128::from(hi) + 1;
    match holder.filter(|(end, _)| *end > reach) {
        Some((end, held_by)) => {
            let to = (end - 1).min(u128::from(hi)) as Lsn;
            breaks.push(Break::Overlap { from, to, held_by: held_by.into(), after: after.into() });
            end
        }
        None => {
            let end = next.unwrap_or(hi_end).min(hi_end);
            breaks.push(Break::Gap { from, to: (end - 1) as Lsn });
            end
        }
    }
}

/// A shortest chain from `start` to a segment holding `until`, as positions
/// in `sorted`; of equally short chains, the one whose segments come first.
/// None when no chain reaches `until`.
pub(crate) fn shortest(sorted: &[Seg<'_>], start: Start, until: Lsn) -> Option<Vec<usize>> {
    const NONE: usize = usize::MAX;
    // (position, chain length so far, last segment): the lowest position
    // first, and at one position the shortest chain first.
    let mut open = Open::default();
    if let Start::At(l) = start {
        open.push((u128::from(l), 0, NONE));
    }
    let mut pred = vec![NONE; sorted.len()];
    let mut best: Option<(u32, usize)> = None;
    let mut reach = start.lsn();
    for (i, seg) in sorted.iter().enumerate() {
        let first = u128::from(seg.first);
        if first > reach {
            break;
        }
        open.drop_below(first);
        let via = open.at(first).map(|(_, len, prev)| (*len + 1, *prev));
        let entered = matches!(start, Start::Holding(_)) && start.enters(seg);
        let Some((len, prev)) = (if entered { Some((1, NONE)) } else { via }) else { continue };
        pred[i] = prev;
        open.push((seg.end(), len, i));
        reach = reach.max(seg.end());
        if seg.last >= until && best.is_none_or(|(b, _)| len < b) {
            best = Some((len, i));
        }
    }
    let (_, mut at) = best?;
    let mut chain = vec![at];
    while pred[at] != NONE {
        at = pred[at];
        chain.push(at);
    }
    chain.reverse();
    Some(chain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::format_segment_name;
    use crate::packed::sort_segs;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn names_of(ranges: &[(Lsn, Lsn)]) -> Vec<String> {
        ranges.iter().map(|&(f, l)| format_segment_name(f, l).unwrap()).collect()
    }

    fn segs<'a>(names: &'a [String]) -> Vec<Seg<'a>> {
        let mut v: Vec<Seg<'a>> = names.iter().map(|n| Seg::parse(n, 1, 0).unwrap()).collect();
        sort_segs(&mut v);
        v
    }

    fn ranges(sorted: &[Seg<'_>], idx: &[usize]) -> Vec<(Lsn, Lsn)> {
        idx.iter().map(|&i| (sorted[i].first, sorted[i].last)).collect()
    }

    #[test]
    fn restores_over_the_shortest_exact_chain_not_the_greedy_one() {
        let cases: &[(&[(Lsn, Lsn)], Lsn, &[(Lsn, Lsn)])] = &[
            (&[(1, 10), (1, 5), (6, 30)], 30, &[(1, 5), (6, 30)]),
            (&[(1, 10), (11, 20), (11, 15), (16, 30)], 30, &[(1, 10), (11, 15), (16, 30)]),
            (&[(1, 2), (3, 100), (1, 50), (51, 60), (61, 100)], 100, &[(1, 2), (3, 100)]),
        ];
        for (set, until, want) in cases {
            let names = names_of(set);
            let sorted = segs(&names);
            let got = shortest(&sorted, Start::Holding(1), *until).map(|c| ranges(&sorted, &c));
            assert_eq!(got.as_deref(), Some(*want), "{set:?}");
        }
    }

    #[test]
    fn reports_an_overlap_where_segments_hold_lsns_that_no_chain_reaches() {
        let names = names_of(&[(1, 10), (5, 15), (16, 20), (21, 30), (31, 40), (41, 50)]);
        let sorted = segs(&names);
        assert_eq!(reach(&sorted, Start::At(1)), 11);
        let w = walk(&sorted, Start::At(1), 50);
        assert_eq!(
            w.breaks,
            [Break::Overlap { from: 11, to: 15, held_by: names[1].clone(), after: names[0].clone() }]
        );
        assert_eq!(w.used, [true, false, true, true, true, true]);
        assert_eq!(shortest(&sorted, Start::At(1), 50), None);
        assert_eq!(shortest(&sorted, Start::Holding(16), 50).map(|c| c.len()), Some(4));
    }

    #[test]
    fn reports_gaps_and_overlaps_in_order_and_gaps_past_the_last_segment() {
        let names = names_of(&[(1, 10), (21, 30), (25, 40), (45, 50)]);
        let sorted = segs(&names);
        let w = walk(&sorted, Start::Holding(1), 60);
        assert_eq!(
            w.breaks,
            [
                Break::Gap { from: 11, to: 20 },
                Break::Overlap { from: 31, to: 40, held_by: names[2].clone(), after: names[1].clone() },
                Break::Gap { from: 41, to: 44 },
                Break::Gap { from: 51, to: 60 },
            ]
        );
        // A range ending inside a break ends the break there.
        assert_eq!(walk(&sorted, Start::Holding(1), 15).breaks, [Break::Gap { from: 11, to: 15 }]);
        // Nothing at the start: the first break starts there.
        let w = walk(&sorted, Start::At(0), 10);
        assert_eq!(w.breaks, [Break::Gap { from: 0, to: 0 }]);
    }

    #[test]
    fn reaches_u64_max_without_overflow() {
        let names = names_of(&[(u64::MAX - 9, u64::MAX - 1), (u64::MAX, u64::MAX)]);
        let sorted = segs(&names);
        assert_eq!(reach(&sorted, Start::At(u64::MAX - 9)), u128::from(u64::MAX) + 1);
        assert!(walk(&sorted, Start::At(u64::MAX - 9), u64::MAX).breaks.is_empty());
        assert_eq!(shortest(&sorted, Start::Holding(u64::MAX - 5), u64::MAX).map(|c| c.len()), Some(2));
    }

    // A brute-force model over small sets: every exact chain, enumerated.

    /// Every segment sequence that is a chain from `start`.
    fn all_chains(set: &[(Lsn, Lsn)], start: Start) -> Vec<Vec<usize>> {
        let mut out = Vec::new();
        let mut stack: Vec<Vec<usize>> = (0..set.len())
            .filter(|&i| match start {
                Start::At(l) => set[i].0 == l,
                Start::Holding(l) => set[i].0 <= l && l <= set[i].1,
            })
            .map(|i| vec![i])
            .collect();
        while let Some(chain) = stack.pop() {
            let last = set[*chain.last().unwrap()].1;
            for (j, s) in set.iter().enumerate() {
                if u128::from(s.0) == u128::from(last) + 1 {
                    let mut longer = chain.clone();
                    longer.push(j);
                    stack.push(longer);
                }
            }
            out.push(chain);
        }
        out
    }

    fn model_reach(set: &[(Lsn, Lsn)], start: Start) -> u128 {
        all_chains(set, start).iter().map(|c| u128::from(set[*c.last().unwrap()].1) + 1).max().unwrap_or(start.lsn())
    }

    /// The first break from `start` up to `hi`, by its definition.
    fn model_first_break(set: &[(Lsn, Lsn)], start: Start, hi: Lsn) -> Option<(bool, Lsn, Lsn)> {
        let r = model_reach(set, start);
        if r > u128::from(hi) {
            return None;
        }
        let r = r as Lsn;
        let held = set.iter().filter(|(f, l)| *f < r && r <= *l).map(|(_, l)| *l).max();
        Some(match held {
            Some(l) => (true, r, l.min(hi)),
            None => {
                let next = set.iter().map(|(f, _)| *f).filter(|f| *f > r).min();
                (false, r, next.map_or(hi, |n| (n - 1).min(hi)))
            }
        })
    }

    fn set_strategy() -> impl Strategy<Value = Vec<(Lsn, Lsn)>> {
        prop::collection::vec((0u64..24, 0u64..8), 0..9)
            .prop_map(|v| v.into_iter().map(|(f, len)| (f, f + len)).collect::<BTreeSet<_>>().into_iter().collect())
    }

    proptest! {
        #[test]
        fn agrees_with_every_chain_enumerated(
            set in set_strategy(),
            at in 0u64..24,
            holding: bool,
            hi in 0u64..40,
        ) {
            let names = names_of(&set);
            let sorted = segs(&names);
            let spans: Vec<(Lsn, Lsn)> = sorted.iter().map(|s| (s.first, s.last)).collect();
            let start = if holding { Start::Holding(at) } else { Start::At(at) };

            prop_assert_eq!(reach(&sorted, start), model_reach(&spans, start));

            let w = walk(&sorted, start, hi);
            let first = w.breaks.first().map(|b| match b {
                Break::Gap { from, to } => (false, *from, *to),
                Break::Overlap { from, to, .. } => (true, *from, *to),
            });
            if u128::from(hi) >= start.lsn() {
                prop_assert_eq!(first, model_first_break(&spans, start, hi));
            }
            // Breaks are in order, inside the range, and do not touch.
            for pair in w.breaks.windows(2) {
                let end = |b: &Break| match b { Break::Gap { to, .. } | Break::Overlap { to, .. } => *to };
                let begin = |b: &Break| match b { Break::Gap { from, .. } | Break::Overlap { from, .. } => *from };
                prop_assert!(end(&pair[0]) < begin(&pair[1]));
            }
            // Before the first break, a segment is used exactly when some chain uses it.
            let chains = all_chains(&spans, start);
            let limit = w.breaks.first().map_or(u128::MAX, |b| match b {
                Break::Gap { from, .. } | Break::Overlap { from, .. } => u128::from(*from),
            });
            for (i, s) in spans.iter().enumerate() {
                if u128::from(s.0) < limit && u128::from(s.0) <= u128::from(hi) {
                    let on_some = chains.iter().any(|c| c.contains(&i));
                    prop_assert_eq!(w.used[i], on_some, "segment {:?}", s);
                }
            }

            // The shortest chain is a chain, reaches the target, and no chain is shorter.
            let best = chains.iter().filter(|c| set_last(&spans, c) >= hi).map(|c| c.len()).min();
            let got = shortest(&sorted, start, hi);
            prop_assert_eq!(got.as_ref().map(|c| c.len()), best);
            if let Some(c) = got {
                prop_assert!(chains.contains(&c), "{:?} is not a chain", c);
            }
        }
    }

    fn set_last(spans: &[(Lsn, Lsn)], chain: &[usize]) -> Lsn {
        spans[*chain.last().unwrap()].1
    }
}
