//! Reference deltas (manifest version 4, format §10, ADR 0046): a source lists base segments
//! (the parent backup's) and a list of added and removed ids, each stored as reference segments
//! (§10.1) the manifest lists, instead of segments cut afresh. This module owns the bound past
//! which a writer re-cuts, the writer's stream merge of a new reference list against the base
//! segments, the reader's loading of a delta's segments, and the merge that applies a delta.
//!
//! Invariants:
//! - A delta is against base segments only, never against another manifest's delta (chains of
//!   length one): every manifest names its segments directly, so forgetting a parent changes
//!   nothing for its children.
//! - The writer holds at most [`READ_AHEAD`] base segments beside the new list and the delta; it
//!   reads only the base segments its fresh cut does not reproduce (a no-change backup reads
//!   none) and stops as soon as the delta passes the bound.
//! - The reader checks what a genuine writer guarantees: added ids are not in the base, removed
//!   ids are, both lists are strictly ascending across their segments, together they hold at most
//!   [`DELTA_MAX_IDS`] ids (so a reader holds at most 1 MiB of delta), and the result is strictly
//!   ascending.

use super::Repository;
use crate::crypto::SymKey;
use crate::error::{RepoError, Result};
use crate::ids::{ChunkId, SegmentId};
use crate::refseg;
use futures::StreamExt;
use std::collections::HashMap;

/// Segment reads in flight while a writer merges against a base.
const READ_AHEAD: usize = 4;
/// A source may always carry a delta of this many ids (128 KiB of delta segments).
pub const DELTA_MIN_IDS: usize = 4096;
/// A source never carries a delta of more ids than this (1 MiB of delta segments); readers refuse
/// a larger one.
pub const DELTA_MAX_IDS: usize = 32768;
/// Between the two, a delta may hold one id per this many references.
pub const DELTA_DIVISOR: usize = 16;

/// The most added plus removed ids a writer keeps as a delta for a source of `chunks` references;
/// past it the source is cut into segments afresh (ADR 0046 gives the reasoning).
pub fn delta_bound(chunks: usize) -> usize {
    (chunks / DELTA_DIVISOR).clamp(DELTA_MIN_IDS, DELTA_MAX_IDS)
}

/// The delta of a new reference list against a base: ids to add and ids to remove, both sorted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delta {
    pub added: Vec<ChunkId>,
    pub removed: Vec<ChunkId>,
}

impl Delta {
    pub fn len(&self) -> usize {
        self.added.len() + self.removed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Applies a delta to base segments read in order (the reader's side): feed each segment to
/// [`Applier::segment`], then call [`Applier::finish`]. Errors are the reason only; the caller
/// names the backup.
pub(crate) struct Applier<'a> {
    added: &'a [ChunkId],
    removed: &'a [ChunkId],
    last: Option<ChunkId>,
    count: u64,
}

impl<'a> Applier<'a> {
    pub(crate) fn new(added: &'a [ChunkId], removed: &'a [ChunkId]) -> Self {
        Applier {
            added,
            removed,
            last: None,
            count: 0,
        }
    }

    /// The references from the base ids `seg` (and the added ids below its end), into `out`.
    pub(crate) fn segment(
        &mut self,
        seg: &[ChunkId],
        out: &mut Vec<ChunkId>,
    ) -> std::result::Result<(), String> {
        out.clear();
        if let (Some(l), Some(first)) = (self.last, seg.first()) {
            if *first <= l {
                return Err("the segments are out of order".into());
            }
        }
        self.last = seg.last().copied().or(self.last);
        for x in seg {
            while let Some((a, rest)) = self.added.split_first() {
                if a > x {
                    break;
                }
                if a == x {
                    return Err(format!("added id {a} is in the base segments"));
                }
                out.push(*a);
                self.added = rest;
            }
            if let Some((r, rest)) = self.removed.split_first() {
                if r == x {
                    self.removed = rest;
                    continue;
                }
                if r < x {
                    return Err(format!("removed id {r} is not in the base segments"));
                }
            }
            out.push(*x);
        }
        self.count += out.len() as u64;
        Ok(())
    }

    /// The added ids past the last base id, into `out`; checks that every removed id was found
    /// and that the references number `chunks`.
    pub(crate) fn finish(
        mut self,
        chunks: u64,
        out: &mut Vec<ChunkId>,
    ) -> std::result::Result<(), String> {
        out.clear();
        if let Some(r) = self.removed.first() {
            return Err(format!("removed id {r} is not in the base segments"));
        }
        out.extend_from_slice(self.added);
        self.count += out.len() as u64;
        self.added = &[];
        if self.count != chunks {
            return Err(format!(
                "the segments and the delta hold {} references, the manifest says {chunks}",
                self.count
            ));
        }
        Ok(())
    }
}

impl Repository {
    /// Reads the delta of source `src` of backup `backup`: the added and the removed segments,
    /// each list's ids concatenated in order. Each list must be strictly ascending across its
    /// segments and the two together hold at most [`DELTA_MAX_IDS`] ids (reading stops once they
    /// pass it). Errors are corruption naming the backup, and the segment where one is at fault.
    pub async fn read_delta(
        &self,
        backup: &str,
        src: &crate::manifest::SourceSegments,
        metadata_key: &SymKey,
    ) -> Result<Delta> {
        let bad = |why: String| {
            RepoError::corrupt(
                format!("backups/{backup}"),
                format!("refs: source {:?}: {why}", src.name),
            )
        };
        let added = self
            .read_delta_list(backup, &src.added_segments, 0, metadata_key)
            .await?
            .map_err(|w| bad(format!("the added {w}")))?;
        let removed = self
            .read_delta_list(backup, &src.removed_segments, added.len(), metadata_key)
            .await?
            .map_err(|w| bad(format!("the removed {w}")))?;
        Ok(Delta { added, removed })
    }

    /// One delta list: `segs` read in order and concatenated, checked strictly ascending across
    /// segments and, with `before` ids already read, within [`DELTA_MAX_IDS`]. The inner error is
    /// the reason (after "the added"/"the removed"); a segment that does not read is the outer.
    async fn read_delta_list(
        &self,
        backup: &str,
        segs: &[SegmentId],
        before: usize,
        metadata_key: &SymKey,
    ) -> Result<std::result::Result<Vec<ChunkId>, String>> {
        let mut reads = futures::stream::iter(segs.iter())
            .map(|id| self.read_ref_segment(id, metadata_key))
            .buffered(READ_AHEAD);
        let mut list: Vec<ChunkId> = Vec::new();
        for g in segs {
            let ids = match reads.next().await.expect("one read per segment") {
                Ok(ids) => ids,
                Err(RepoError::Corrupt { object, detail }) => {
                    return Err(RepoError::corrupt(
                        object,
                        format!("{detail} (listed by backup {backup})"),
                    ))
                }
                Err(e) => return Err(e),
            };
            if list.last().is_some_and(|l| ids[0] <= *l) {
                return Ok(Err(format!(
                    "ids are not strictly ascending at segment {g}"
                )));
            }
            if before + list.len() + ids.len() > DELTA_MAX_IDS {
                return Ok(Err(format!(
                    "ids pass the delta's limit: more than {DELTA_MAX_IDS} ids (at segment {g})"
                )));
            }
            list.extend_from_slice(&ids);
        }
        Ok(Ok(list))
    }

    /// The delta of `new` (sorted, distinct) against the ids of `base`; `None` as soon as it has
    /// more than `bound` ids. A base segment equal to a run of `new` cut by the §10.1 rule (same
    /// name) is not read: its ids are that run. The others are read [`READ_AHEAD`] at a time and
    /// merged. A base segment that does not read, or base ids not strictly ascending across
    /// segments, is an error (the writer then cuts the source afresh).
    pub async fn delta_against(
        &self,
        base: &[SegmentId],
        new: &[ChunkId],
        bound: usize,
        metadata_key: &SymKey,
    ) -> Result<Option<Delta>> {
        // Where each run of the fresh cut lies in `new`, by segment id.
        let mut runs: HashMap<SegmentId, (usize, usize)> = HashMap::new();
        let mut at = 0;
        for part in refseg::split(new) {
            runs.insert(refseg::id_of(part, metadata_key), (at, at + part.len()));
            at += part.len();
        }
        let mut reads = futures::stream::iter(base.iter().filter(|g| !runs.contains_key(g)))
            .map(|id| self.read_ref_segment(id, metadata_key))
            .buffered(READ_AHEAD);
        let mut d = Delta::default();
        let mut i = 0;
        let mut last: Option<ChunkId> = None;
        let out_of_order = |g: &SegmentId| {
            RepoError::corrupt(
                crate::layout::refs_segment(g).to_string(),
                "base segments out of order",
            )
        };
        for g in base {
            if let Some(&(start, end)) = runs.get(g) {
                // Every base id before this segment is below new[start], so no new id at or past
                // `start` has been consumed.
                if start < i || last.is_some_and(|l| new[start] <= l) {
                    return Err(out_of_order(g));
                }
                d.added.extend_from_slice(&new[i..start]);
                i = end;
                last = Some(new[end - 1]);
            } else {
                let ids = reads
                    .next()
                    .await
                    .expect("one read per unmatched segment")?;
                if last.is_some_and(|l| ids[0] <= l) {
                    return Err(out_of_order(g));
                }
                last = ids.last().copied();
                for x in &ids {
                    while i < new.len() && new[i] < *x {
                        d.added.push(new[i]);
                        i += 1;
                    }
                    if i < new.len() && new[i] == *x {
                        i += 1;
                    } else {
                        d.removed.push(*x);
                    }
                }
            }
            if d.len() > bound {
                return Ok(None);
            }
        }
        d.added.extend_from_slice(&new[i..]);
        Ok((d.len() <= bound).then_some(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ChunkId {
        ChunkId([n; 32])
    }

    fn apply(segs: &[&[ChunkId]], a: &[ChunkId], r: &[ChunkId], chunks: u64) -> Result2 {
        let mut ap = Applier::new(a, r);
        let (mut all, mut buf) = (Vec::new(), Vec::new());
        for s in segs {
            ap.segment(s, &mut buf)?;
            all.extend_from_slice(&buf);
        }
        ap.finish(chunks, &mut buf)?;
        all.extend_from_slice(&buf);
        Ok(all)
    }
    type Result2 = std::result::Result<Vec<ChunkId>, String>;

    #[test]
    fn applying_a_delta_gives_base_minus_removed_plus_added() {
        let base: [&[ChunkId]; 2] = [&[id(2), id(4)], &[id(6), id(8)]];
        let got = apply(&base, &[id(1), id(5), id(9)], &[id(4), id(8)], 5).unwrap();
        assert_eq!(got, vec![id(1), id(2), id(5), id(6), id(9)]);
    }

    #[test]
    fn a_delta_that_does_not_fit_its_base_is_refused() {
        let base: [&[ChunkId]; 2] = [&[id(2), id(4)], &[id(6), id(8)]];
        let e = apply(&base, &[id(4)], &[], 5).unwrap_err();
        assert!(e.contains("is in the base"), "{e}");
        let e = apply(&base, &[], &[id(3)], 3).unwrap_err();
        assert!(e.contains("not in the base"), "{e}");
        let e = apply(&base, &[], &[id(9)], 3).unwrap_err();
        assert!(e.contains("not in the base"), "{e}");
        let e = apply(&base, &[id(1)], &[], 4).unwrap_err();
        assert!(e.contains("hold 5 references"), "{e}");
        let swapped: [&[ChunkId]; 2] = [&[id(6), id(8)], &[id(2), id(4)]];
        let e = apply(&swapped, &[], &[], 4).unwrap_err();
        assert!(e.contains("out of order"), "{e}");
    }

    #[test]
    fn the_bound_grows_with_the_source_between_its_limits() {
        assert_eq!(delta_bound(0), DELTA_MIN_IDS);
        assert_eq!(
            delta_bound(100_000),
            DELTA_MIN_IDS.max(100_000 / DELTA_DIVISOR)
        );
        assert_eq!(delta_bound(160_000), 10_000);
        assert_eq!(delta_bound(10_000_000), DELTA_MAX_IDS);
    }
}
