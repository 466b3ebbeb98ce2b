//! Prune's execute pass ([`rewrite`]): reads the index segments again, lists what stays in new
//! segments, copies the live chunks of the packs the plan repacks into new packs (sealed bytes,
//! no decryption) and stores them. The plan it follows is the parent module's.

use super::{live_entries, read_segment, Fate, PackFacts};
use crate::EngineError;
use futures::StreamExt;
use ibs_repo::crypto::SymKey;
use ibs_repo::ids::PackId;
use ibs_repo::index::{Index, PackRecord};
use ibs_repo::pack::{verify_pack, PackBuilder};
use ibs_repo::{layout, Repository};
use std::collections::{HashMap, HashSet};

/// What [`rewrite`] wrote.
#[derive(Debug, Default)]
pub(crate) struct Rewritten {
    /// The new index segments.
    pub segments: HashSet<String>,
    /// The new packs (just written: locked from now on).
    pub fresh: HashSet<PackId>,
    /// Packs to repack whose bytes failed their hash check: kept, with their live entries.
    pub damaged: Vec<PackId>,
}

/// New records waiting for their index segment, written as soon as they fill one.
struct Output<'a> {
    repo: &'a Repository,
    key: &'a SymKey,
    buffer: crate::packing::SegmentBuffer,
    written: HashSet<String>,
}

impl<'a> Output<'a> {
    fn new(repo: &'a Repository, key: &'a SymKey) -> Self {
        Output {
            repo,
            key,
            buffer: Default::default(),
            written: HashSet::new(),
        }
    }

    async fn push(&mut self, rec: PackRecord) -> Result<(), EngineError> {
        if let Some(group) = self.buffer.push(rec) {
            self.written
                .insert(self.repo.write_index(&group, self.key).await?.0);
        }
        Ok(())
    }

    /// Writes the last, partial segment; the names of every segment written.
    async fn finish(mut self) -> Result<HashSet<String>, EngineError> {
        let rest = self.buffer.into_rest();
        if !rest.is_empty() {
            self.written
                .insert(self.repo.write_index(&rest, self.key).await?.0);
        }
        Ok(self.written)
    }
}

/// Packs being read while the one before is copied: two, on any storage. On a network store the
/// second read hides a round trip; on a local folder it overlaps the disk read with the copy (A/B
/// at the 60 k bench point: 1.86-2.24 s against 2.05-2.60 s with one, for 18 MiB more peak RSS).
const READ_AHEAD: usize = 2;

/// New packs filled while the last one is still being stored: one, so that reading the packs to
/// copy overlaps writing (and, on a local folder, `fsync`ing) the new ones, at the cost of one
/// more pack in memory.
const PACKS_QUEUED: usize = 1;

/// The execute pass: reads the segments `names` again in order and, for each pack's first record,
/// lists what stays in new index segments (young packs whole, kept packs' live entries) and copies
/// the live chunks of packs to repack into new packs (sealed bytes, no decryption), listed as they
/// are stored. Deletes nothing: the old segments still cover every chunk when it returns.
///
/// Two loops run side by side: the copier reads and fills new packs, the writer stores each full
/// pack and lists it in its own segments (so a new pack is listed only once stored). The kept
/// records and the new packs' records go to separate segments.
pub(crate) async fn rewrite(
    repo: &Repository,
    metadata_key: &SymKey,
    names: &[String],
    index: &Index,
    facts: &HashMap<PackId, PackFacts>,
) -> Result<Rewritten, EngineError> {
    let (full_tx, mut full_rx) = tokio::sync::mpsc::channel::<PackBuilder>(PACKS_QUEUED);
    let copier = async move {
        let mut kept = Output::new(repo, metadata_key);
        let damaged =
            copy_live(repo, metadata_key, names, index, facts, &mut kept, full_tx).await?;
        Ok::<_, EngineError>((damaged, kept.finish().await?))
    };
    let writer = async {
        let mut listed = Output::new(repo, metadata_key);
        let mut fresh = HashSet::new();
        while let Some(builder) = full_rx.recv().await {
            let rec = store(repo, builder, metadata_key).await?;
            fresh.insert(rec.id);
            listed.push(rec).await?;
        }
        Ok::<_, EngineError>((fresh, listed.finish().await?))
    };
    let ((damaged, mut segments), (fresh, new_segments)) = tokio::try_join!(copier, writer)?;
    segments.extend(new_segments);
    Ok(Rewritten {
        segments,
        fresh,
        damaged,
    })
}

/// The copier of [`rewrite`]: lists what stays of the old packs in `kept` and sends each new pack
/// it fills to the writer (the last one, partly filled, too); the packs found damaged.
async fn copy_live(
    repo: &Repository,
    metadata_key: &SymKey,
    names: &[String],
    index: &Index,
    facts: &HashMap<PackId, PackFacts>,
    kept: &mut Output<'_>,
    full_tx: tokio::sync::mpsc::Sender<PackBuilder>,
) -> Result<Vec<PackId>, EngineError> {
    let target = crate::backup::pack_target(repo);
    // As the backup's packer: room for the last chunk past the target, and the target bounds the
    // pack with its header (a pack of small chunks has a large one).
    let new_builder = || PackBuilder::new(target + (4 << 20));
    // The writer is gone only when it failed: its error is the one `rewrite` reports.
    let gone = || EngineError::Internal("prune: the pack writer stopped".into());
    let mut damaged = Vec::new();
    let mut builder = new_builder();
    let mut seen: HashSet<PackId> = HashSet::new();
    for name in names {
        let mut copy = Vec::new();
        for rec in read_segment(repo, name, metadata_key).await? {
            if !seen.insert(rec.id) {
                continue;
            }
            let Some(f) = facts.get(&rec.id) else {
                continue;
            };
            match f.fate {
                Fate::Delete => {}
                Fate::Young => kept.push(rec).await?,
                Fate::Keep | Fate::Repack => {
                    let live = PackRecord {
                        id: rec.id,
                        length: rec.length,
                        entries: live_entries(&rec, index),
                    };
                    if f.fate == Fate::Keep {
                        kept.push(live).await?;
                    } else {
                        copy.push(live);
                    }
                }
            }
        }
        let mut fetched = futures::stream::iter(copy)
            .map(|rec| async move { (fetch_verified(repo, rec.id).await, rec) })
            .buffered(READ_AHEAD);
        while let Some((fetched, rec)) = fetched.next().await {
            let Some(bytes) = fetched? else {
                damaged.push(rec.id);
                kept.push(rec).await?;
                continue;
            };
            for e in &rec.entries {
                builder.add(
                    e.id,
                    e.encoding,
                    e.raw_length,
                    e.key_id,
                    &bytes[e.offset as usize..(e.offset + e.length) as usize],
                );
                if builder.finished_len() >= target {
                    let full = std::mem::replace(&mut builder, new_builder());
                    full_tx.send(full).await.map_err(|_| gone())?;
                }
            }
        }
    }
    if !builder.is_empty() {
        full_tx.send(builder).await.map_err(|_| gone())?;
    }
    Ok(damaged)
}

/// Reads a pack to repack and re-hashes it against its name on the blocking pool, so the packs
/// read ahead are hashed on other cores while the copier fills new packs (the hash of the packs
/// read whole is most of a repacking prune's CPU); `None` when the bytes do not match the name.
async fn fetch_verified(
    repo: &Repository,
    id: PackId,
) -> Result<Option<bytes::Bytes>, EngineError> {
    let bytes = repo.storage().get_reusable(&layout::pack(&id)).await?;
    tokio::task::spawn_blocking(move || verify_pack(&id, &bytes, None).is_ok().then_some(bytes))
        .await
        .map_err(|e| EngineError::Internal(format!("prune: the pack check of {id} stopped: {e}")))
}

/// Seals and stores a new pack; its record.
async fn store(
    repo: &Repository,
    builder: PackBuilder,
    metadata_key: &SymKey,
) -> Result<PackRecord, EngineError> {
    // Sealing hashes the whole new pack: on the blocking pool, off the task the copier shares.
    let key = metadata_key.clone();
    let (id, data, entries) = tokio::task::spawn_blocking(move || builder.finish(&key))
        .await
        .map_err(|e| EngineError::Internal(format!("prune: sealing a new pack stopped: {e}")))?;
    let length = data.len() as u64;
    repo.put_pack(&id, data).await?;
    Ok(PackRecord {
        id,
        length,
        entries,
    })
}
