//! Reference segments on storage (manifest versions 3 and 4, format §10.1): writing a backup's
//! reference set as the segments storage does not hold yet, or as a delta against its parent's
//! segments whose added and removed lists are segments too (version 4, `refs_delta`), and reading
//! any manifest's references (inline in versions 1 and 2, through its segments in version 3, and
//! with the delta's segments applied in version 4).
//!
//! Invariants:
//! - A writer stores every segment its manifest lists before the manifest (the commit point).
//! - A segment already on storage is not written again; a put that fails because the name exists
//!   (an append-only key that may not overwrite, or another writer that stored it first) counts
//!   as written once a stat shows the object. Whichever copy stays is valid: the name is the keyed
//!   hash of the content, which every reader checks.
//! - A reader checks each source's segments against the manifest: ids strictly ascending across
//!   segments, the delta fits them (see `refs_delta`), and as many references as the manifest
//!   says. At most [`READ_AHEAD`] segments are in memory beside the source's delta (at most
//!   1 MiB) and what the caller keeps.

use super::refs_delta::{delta_bound, Applier, Delta};
use super::Repository;
use crate::crypto::SymKey;
use crate::error::{RepoError, Result};
use crate::ids::{ChunkId, SegmentId};
use crate::layout;
use crate::manifest::{Manifest, Refs, RefsPart, SourceRefs, SourceSegments};
use crate::refseg;
use futures::{StreamExt, TryStreamExt};
use std::collections::{HashMap, HashSet};

/// Segment reads and writes in flight.
const READ_AHEAD: usize = 4;

/// What [`Repository::put_refs`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefsWritten {
    /// Segments the manifest lists (over all sources).
    pub segments: usize,
    /// Segments this call stored (the others were on storage already).
    pub new: usize,
    /// Bytes of the segments stored.
    pub bytes: u64,
    /// Sources written as a delta against their parent's segments.
    pub delta_sources: usize,
    /// Added and removed ids those deltas carry.
    pub delta_ids: usize,
    /// Segments those deltas list (added and removed lists; included in `segments`).
    pub delta_segments: usize,
}

/// Appends `part` with its id to `out`, or, when a prune plan marks that id, its halves (and so on
/// down): no piece pushed is in `marked`. A single reference whose segment is marked cannot be cut
/// further; that needs a segment this backup does not write, so it is refused (the backup can run
/// again once the plan is swept).
fn cut_unmarked<'a>(
    part: &'a [ChunkId],
    key: &SymKey,
    marked: &HashSet<SegmentId>,
    out: &mut Vec<(&'a [ChunkId], SegmentId)>,
) -> Result<()> {
    let id = refseg::id_of(part, key);
    if !marked.contains(&id) {
        out.push((part, id));
        return Ok(());
    }
    if part.len() < 2 {
        return Err(RepoError::corrupt(
            layout::refs_segment(&id).to_string(),
            "a prune plan marks this one-reference segment, which this backup needs; run the \
             backup again after the next prune",
        ));
    }
    let (a, b) = part.split_at(part.len() / 2);
    cut_unmarked(a, key, marked, out)?;
    cut_unmarked(b, key, marked, out)
}

/// Cuts a sorted, distinct list by the §10.1 rule (and [`cut_unmarked`]) and returns its segment
/// ids; the runs that storage does not hold and no earlier list of this backup planned go to
/// `todo`.
fn cut<'a>(
    list: &'a [ChunkId],
    key: &SymKey,
    marked: &HashSet<SegmentId>,
    present: &HashSet<SegmentId>,
    planned: &mut HashSet<SegmentId>,
    todo: &mut Vec<&'a [ChunkId]>,
) -> Result<Vec<SegmentId>> {
    let mut parts = Vec::new();
    for part in refseg::split(list) {
        cut_unmarked(part, key, marked, &mut parts)?;
    }
    Ok(parts
        .into_iter()
        .map(|(part, id)| {
            if !present.contains(&id) && planned.insert(id) {
                todo.push(part);
            }
            id
        })
        .collect())
}

impl Repository {
    /// Every reference segment on storage.
    pub async fn list_ref_segments(&self) -> Result<HashSet<SegmentId>> {
        Ok(self
            .storage
            .list(layout::REFS)
            .await?
            .iter()
            .filter_map(|o| layout::parse_refs_segment(&o.key))
            .collect())
    }

    /// Cuts each source's sorted, distinct references into segments and stores those that storage
    /// does not hold yet. Returns each source's segment list (for
    /// [`Manifest::seal_with_segments`]) and what was written.
    ///
    /// `marked` are the segments the prune plans this backup honours mark (§19): a sweep may
    /// retire them before this backup commits, so none is listed. A run that would be one is cut
    /// again, in halves until no piece is marked (readers take any cut; only the name must match
    /// the content), and the pieces are stored under their own names, as a backup stores a marked
    /// pack's chunks again.
    pub async fn put_refs(
        &self,
        sources: &[(String, Vec<ChunkId>)],
        metadata_key: &SymKey,
        marked: &HashSet<SegmentId>,
    ) -> Result<(Vec<SourceSegments>, RefsWritten)> {
        self.put_refs_with_bases(sources, metadata_key, marked, &HashMap::new())
            .await
    }

    /// As [`Repository::put_refs`], but a source that has a base (by name: its parent backup's
    /// segment list) is written as that base plus a delta (manifest version 4) when every base
    /// segment is on storage, none is marked, the base reads, and the delta holds at most
    /// [`delta_bound`] ids; otherwise it is cut afresh. The delta's added and removed lists are
    /// cut by the §10.1 rule like any list and stored as segments: a backup whose delta equals
    /// its parent's lists the parent's delta segments and stores none.
    pub async fn put_refs_with_bases(
        &self,
        sources: &[(String, Vec<ChunkId>)],
        metadata_key: &SymKey,
        marked: &HashSet<SegmentId>,
        bases: &HashMap<String, Vec<SegmentId>>,
    ) -> Result<(Vec<SourceSegments>, RefsWritten)> {
        let present = self.list_ref_segments().await?;
        let mut out = Vec::with_capacity(sources.len());
        // Sources written as deltas (by position in `out`), cut once every merge is done.
        let mut deltas: Vec<(usize, Delta)> = Vec::new();
        let mut todo: Vec<&[ChunkId]> = Vec::new();
        let mut planned: HashSet<SegmentId> = HashSet::new();
        let mut written = RefsWritten::default();
        for (name, chunks) in sources {
            let usable = |base: &&Vec<SegmentId>| {
                !base.is_empty()
                    && base
                        .iter()
                        .all(|g| present.contains(g) && !marked.contains(g))
            };
            if let Some(base) = bases.get(name).filter(usable) {
                let bound = delta_bound(chunks.len());
                match self.delta_against(base, chunks, bound, metadata_key).await {
                    Ok(Some(d)) => {
                        written.segments += base.len();
                        written.delta_sources += 1;
                        written.delta_ids += d.len();
                        deltas.push((out.len(), d));
                        out.push(SourceSegments {
                            name: name.clone(),
                            chunks: chunks.len() as u64,
                            segments: base.clone(),
                            ..SourceSegments::default()
                        });
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(
                        "source {name}: the parent backup's reference segments do not read ({e}); \
                         cutting the source's references afresh"
                    ),
                }
            }
            let segments = cut(
                chunks,
                metadata_key,
                marked,
                &present,
                &mut planned,
                &mut todo,
            )?;
            written.segments += segments.len();
            out.push(SourceSegments {
                name: name.clone(),
                chunks: chunks.len() as u64,
                segments,
                ..SourceSegments::default()
            });
        }
        for (i, d) in &deltas {
            let added = cut(
                &d.added,
                metadata_key,
                marked,
                &present,
                &mut planned,
                &mut todo,
            )?;
            let removed = cut(
                &d.removed,
                metadata_key,
                marked,
                &present,
                &mut planned,
                &mut todo,
            )?;
            written.delta_segments += added.len() + removed.len();
            written.segments += added.len() + removed.len();
            out[*i].added_segments = added;
            out[*i].removed_segments = removed;
        }
        written.new = todo.len();
        // Sealed as they are stored: at most READ_AHEAD sealed segments in memory.
        let sizes: Vec<u64> = futures::stream::iter(todo)
            .map(|part| async move {
                let (id, obj) = refseg::encode(part, metadata_key);
                let len = obj.len() as u64;
                self.put_segment(&id, obj).await.map(|()| len)
            })
            .buffer_unordered(READ_AHEAD)
            .try_collect()
            .await?;
        written.bytes = sizes.iter().sum();
        Ok((out, written))
    }

    async fn put_segment(&self, id: &SegmentId, obj: Vec<u8>) -> Result<()> {
        let key = layout::refs_segment(id);
        match self.storage.put(&key, obj.into()).await {
            Ok(()) => Ok(()),
            // The name exists (another writer stored it, or this key may not overwrite): any
            // copy under this name is valid.
            Err(e) => match self.storage.stat(&key).await {
                Ok(_) => Ok(()),
                Err(_) => Err(e.into()),
            },
        }
    }

    /// Reads and opens one reference segment. A missing one is corruption naming it.
    pub async fn read_ref_segment(
        &self,
        id: &SegmentId,
        metadata_key: &SymKey,
    ) -> Result<Vec<ChunkId>> {
        let key = layout::refs_segment(id);
        let bytes = match self.storage.get(&key).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                return Err(RepoError::corrupt(
                    key.to_string(),
                    "reference segment is missing",
                ))
            }
            Err(e) => return Err(e.into()),
        };
        refseg::decode(id, &bytes, metadata_key)
    }

    /// Hands every reference of backup `m` to `f`, one source's run at a time: `f(source, ids)`
    /// with `source` `None` for a v1 refs part (no attribution), each source's runs in ascending
    /// order. Segments (versions 3 and 4) are read [`READ_AHEAD`] at a time, a version-4 delta
    /// (its segments read first, at most [`super::DELTA_MAX_IDS`] ids) is applied as they stream by, and both are checked against the manifest (order, the delta's
    /// fit, counts); an error names the segment or the backup, and always the backup.
    pub async fn for_each_ref(
        &self,
        m: &Manifest,
        metadata_key: &SymKey,
        mut f: impl FnMut(Option<&str>, &[ChunkId]),
    ) -> Result<()> {
        let sources = match m.open_refs_part(metadata_key)? {
            RefsPart::Inline(r) => {
                match r.sources {
                    Some(s) => s.iter().for_each(|s| f(Some(&s.name), &s.chunks)),
                    None => f(None, &r.all),
                }
                return Ok(());
            }
            RefsPart::Segmented(s) => s,
        };
        let backup = &m.catalog.backup_id;
        let in_backup = |e: RepoError| match e {
            RepoError::Corrupt { object, detail } => {
                RepoError::corrupt(object, format!("{detail} (listed by backup {backup})"))
            }
            other => other,
        };
        let bad = |src: &SourceSegments, why: String| {
            RepoError::corrupt(
                format!("backups/{backup}"),
                format!("refs: source {:?}: {why}", src.name),
            )
        };
        let mut run = Vec::new();
        for src in &sources {
            let delta = self.read_delta(backup, src, metadata_key).await?;
            let mut reads = futures::stream::iter(src.segments.iter())
                .map(|id| self.read_ref_segment(id, metadata_key))
                .buffered(READ_AHEAD);
            let mut apply = Applier::new(&delta.added, &delta.removed);
            while let Some(ids) = reads.next().await {
                let ids = ids.map_err(in_backup)?;
                apply.segment(&ids, &mut run).map_err(|w| bad(src, w))?;
                if !run.is_empty() {
                    f(Some(&src.name), &run);
                }
            }
            apply
                .finish(src.chunks, &mut run)
                .map_err(|w| bad(src, w))?;
            if !run.is_empty() {
                f(Some(&src.name), &run);
            }
        }
        Ok(())
    }

    /// The references of backup `m` with per-source attribution where the manifest records it
    /// (refs v2 and v3).
    pub async fn open_refs_detailed(&self, m: &Manifest, metadata_key: &SymKey) -> Result<Refs> {
        let mut sources: Vec<SourceRefs> = Vec::new();
        let mut flat: Option<Vec<ChunkId>> = None;
        self.for_each_ref(m, metadata_key, |name, ids| match name {
            None => flat = Some(ids.to_vec()),
            Some(n) => match sources.last_mut() {
                Some(s) if s.name == n => s.chunks.extend_from_slice(ids),
                _ => sources.push(SourceRefs {
                    name: n.to_owned(),
                    chunks: ids.to_vec(),
                }),
            },
        })
        .await?;
        if let Some(all) = flat {
            return Ok(Refs { all, sources: None });
        }
        let mut all: Vec<ChunkId> = sources
            .iter()
            .flat_map(|s| s.chunks.iter().copied())
            .collect();
        all.sort_unstable();
        all.dedup();
        Ok(Refs {
            all,
            sources: Some(sources),
        })
    }

    /// Every chunk backup `m` needs, sorted and distinct.
    pub async fn open_refs(&self, m: &Manifest, metadata_key: &SymKey) -> Result<Vec<ChunkId>> {
        Ok(self.open_refs_detailed(m, metadata_key).await?.all)
    }
}
