//! The end of the backup pipeline: sealed chunks → packs (one thread) → uploads (async, one or two
//! packs in flight) → index segments. Owns the bound on finished packs held in memory, the
//! recycling of their buffers, and the grouping of the new packs' records into index segments.
//!
//! Invariants: at most `uploads_in_flight` finished packs exist at once (queued or uploading): the
//! packer takes a slot before it seals the next one, and an upload gives it back when it ends, so
//! memory holds those packs plus the one being filled, whatever the storage's speed. After the
//! first failed upload no new upload starts, but the ones in flight are awaited, never dropped: a
//! put cancelled mid-way could leave its temporary behind (on SMB it cleans up only when it runs
//! to its own end).
//!
//! Index segments are written as the uploads go (ADR 0031): as soon as the stored packs fill a
//! segment ([`SegmentBuffer`]), they are confirmed on storage at their full length and listed in a
//! new segment, and their records are dropped. Only the last, partial group is handed back, for
//! the backup to write after its cancel check. So the records held are at most one segment's
//! worth, not 64 bytes per new chunk of the whole backup. A segment written before a backup
//! fails or is cancelled lists stored packs that no manifest references: the same state as a
//! backup killed between its index and its manifest, which `prune` cleans up.

use futures::StreamExt;
use ibs_repo::chunk::SealedChunk;
use ibs_repo::crypto::SymKey;
use ibs_repo::ids::{KeyId, PackId};
use ibs_repo::index::PackRecord;
use ibs_repo::pack::{PackBuilder, PackEntry};
use ibs_repo::{RepoError, Repository};
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;

/// Pack uploads at once (and finished packs held in memory at most) to network storage (SMB),
/// where a second upload hides the first one's round trips.
const UPLOADS_IN_FLIGHT: usize = 2;
/// The same for local storage: a second upload gained nothing measurable there, but kept a
/// further 16-20 MiB pack in memory (peak RSS of the bench's full backup: 104-110 MiB with one,
/// 125-137 MiB with two before pack buffers were recycled).
const UPLOADS_IN_FLIGHT_LOCAL: usize = 1;

/// A finished pack on its way to the uploader, with the slot it holds.
type Finished = (PackId, bytes::Bytes, Vec<PackEntry>, OwnedSemaphorePermit);

/// The running packer thread and uploader task.
pub(crate) struct Packing {
    /// Ends when `sealed_rx` is closed and drained (or the uploader is gone).
    pub packer: std::thread::JoinHandle<()>,
    /// What was stored, or the first upload or segment failure.
    pub uploader: tokio::task::JoinHandle<Result<Uploaded, RepoError>>,
}

/// What the uploader stored: figures of every new pack and of the index segments already written,
/// and the records of the packs no segment lists yet (less than one segment's worth).
#[derive(Default)]
pub(crate) struct Uploaded {
    pub packs: u64,
    /// Chunks in the new packs.
    pub chunks: u64,
    /// Bytes of the new packs and of the segments written so far.
    pub bytes: u64,
    /// Stored packs waiting for their index segment.
    pub rest: Vec<PackRecord>,
}

/// Starts packing the chunks of `sealed_rx` (all sealed under the data key `key_id`) into packs of
/// about `pack_target` bytes, with headers sealed under `meta_key`, and storing them in `repo`.
pub(crate) fn start(
    repo: Arc<Repository>,
    sealed_rx: crossbeam_channel::Receiver<SealedChunk>,
    budget: Arc<crate::inflight::ByteBudget>,
    key_id: KeyId,
    meta_key: SymKey,
    pack_target: usize,
) -> Packing {
    let uploads_in_flight = if repo.storage().capabilities().local {
        UPLOADS_IN_FLIGHT_LOCAL
    } else {
        UPLOADS_IN_FLIGHT
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(uploads_in_flight));
    let (pack_tx, pack_rx) = tokio::sync::mpsc::channel::<Finished>(1);
    // Buffers of stored packs come back here for the next pack (at most one per pack in memory).
    let (recycle_tx, recycle_rx) = crossbeam_channel::bounded::<Vec<u8>>(uploads_in_flight + 1);
    let pack_meta_key = meta_key.clone();
    let packer = std::thread::spawn(move || {
        let _closer = budget.closer();
        let meta_key = pack_meta_key;
        let capacity = pack_target + (4 << 20);
        let next = || {
            recycle_rx
                .try_recv()
                .map(PackBuilder::reuse)
                .unwrap_or_else(|_| PackBuilder::new(capacity))
        };
        let mut builder = next();
        for s in sealed_rx {
            builder.add(s.id, s.encoding, s.raw_length, key_id, &s.sealed);
            budget.give(crate::inflight::held_once_sealed(
                s.raw_length,
                s.sealed.len(),
            ));
            // Counted with its header, so a pack of small chunks stays near the target (and within
            // the buffer's capacity) instead of growing by a header of 61 bytes per chunk.
            if builder.finished_len() >= pack_target {
                // Waiting for the slot first lets the upload that frees it hand its buffer back.
                let Ok(slot) = futures::executor::block_on(slots.clone().acquire_owned()) else {
                    return;
                };
                let full = std::mem::take(&mut builder);
                let (id, bytes, entries) = full.finish(&meta_key);
                if pack_tx.blocking_send((id, bytes, entries, slot)).is_err() {
                    return;
                }
                builder = next();
            }
        }
        if !builder.is_empty() {
            if let Ok(slot) = futures::executor::block_on(slots.clone().acquire_owned()) {
                let (id, bytes, entries) = builder.finish(&meta_key);
                let _ = pack_tx.blocking_send((id, bytes, entries, slot));
            }
        }
    });
    let uploader = tokio::spawn(upload_all(
        repo,
        pack_rx,
        recycle_tx,
        uploads_in_flight,
        meta_key,
    ));
    Packing { packer, uploader }
}

/// Stores one pack; hands its buffer back to the packer once the storage has let go of it.
async fn upload(
    repo: Arc<Repository>,
    recycle: crossbeam_channel::Sender<Vec<u8>>,
    (id, bytes, entries, slot): Finished,
) -> Result<PackRecord, RepoError> {
    let length = bytes.len() as u64;
    let mine = bytes.clone();
    let r = repo.put_pack(&id, bytes).await.map(|_| PackRecord {
        id,
        length,
        entries,
    });
    // Before the slot, so the packer waiting for the slot finds the buffer.
    if let Ok(buf) = mine.try_into_mut() {
        let _ = recycle.try_send(Vec::from(buf));
    }
    drop(slot);
    r
}

/// Uploads packs as they come, up to `in_flight` at once, and writes an index segment under
/// `meta_key` whenever the stored packs fill one (see the module's invariants).
async fn upload_all(
    repo: Arc<Repository>,
    mut pack_rx: tokio::sync::mpsc::Receiver<Finished>,
    recycle: crossbeam_channel::Sender<Vec<u8>>,
    in_flight: usize,
    meta_key: SymKey,
) -> Result<Uploaded, RepoError> {
    let mut inflight = futures::stream::FuturesUnordered::new();
    let mut done = Uploaded::default();
    let mut waiting = SegmentBuffer::default();
    let mut failed: Option<RepoError> = None;
    let mut open = true;
    loop {
        let finished = if failed.is_none() && open && inflight.len() < in_flight {
            tokio::select! {
                p = pack_rx.recv() => {
                    match p {
                        Some(p) => inflight.push(upload(repo.clone(), recycle.clone(), p)),
                        None => open = false,
                    }
                    None
                }
                Some(r) = inflight.next(), if !inflight.is_empty() => Some(r),
            }
        } else {
            match inflight.next().await {
                Some(r) => Some(r),
                None => break,
            }
        };
        match finished {
            Some(Ok(rec)) => {
                done.packs += 1;
                done.chunks += rec.entries.len() as u64;
                done.bytes += rec.length;
                if let Some(group) = waiting.push(rec) {
                    if failed.is_none() {
                        match write_segment(&repo, &group, &meta_key).await {
                            Ok(len) => done.bytes += len,
                            Err(e) => failed = Some(e),
                        }
                    }
                }
            }
            Some(Err(e)) => {
                failed.get_or_insert(e);
            }
            None => {}
        }
    }
    drop(pack_rx);
    match failed {
        Some(e) => Err(e),
        None => {
            done.rest = waiting.into_rest();
            Ok(done)
        }
    }
}

/// Confirms `group`'s packs on storage, then lists them in a new index segment; returns the
/// segment's size.
pub(crate) async fn write_segment(
    repo: &Repository,
    group: &[PackRecord],
    meta_key: &SymKey,
) -> Result<u64, RepoError> {
    verify_uploaded(repo, group).await?;
    Ok(repo.write_index(group, meta_key).await?.1)
}

/// Confirms every pack of `packs` is on storage with its full length before anything references
/// it, so a storage that acknowledged a write it did not (fully) keep can never lead to a
/// committed manifest that points at missing data.
async fn verify_uploaded(repo: &Repository, packs: &[PackRecord]) -> Result<(), RepoError> {
    for batch in packs.chunks(8) {
        let stats = futures::future::join_all(batch.iter().map(|p| stored_size(repo, p))).await;
        for (p, size) in batch.iter().zip(stats) {
            check_size(p, size?)?;
        }
    }
    Ok(())
}

async fn stored_size(repo: &Repository, p: &PackRecord) -> Result<u64, RepoError> {
    Ok(repo
        .storage()
        .stat(&ibs_repo::layout::pack(&p.id))
        .await?
        .size)
}

fn check_size(p: &PackRecord, size: u64) -> Result<(), RepoError> {
    if size == p.length {
        return Ok(());
    }
    Err(RepoError::Storage(ibs_storage::StorageError::new(
        ibs_storage::ErrorKind::Other,
        "verify",
        Some(ibs_repo::layout::pack(&p.id).as_str()),
        format!(
            "storage kept {size} of {} bytes; the backup was not committed",
            p.length
        ),
    )))
}

/// Most packs an index segment lists.
const SEGMENT_MAX_PACKS: usize = 2000;
/// A segment is closed once it lists this many entries (about 4 MB of body), so encoding one
/// never holds more than a few MB beside the packs' records. A pack's entries are never split.
pub(crate) const SEGMENT_MAX_ENTRIES: usize = 1 << 16;

/// Stored packs' records waiting for their index segment. Holds at most one segment's worth: a
/// push that fills it (`SEGMENT_MAX_PACKS` packs, or `SEGMENT_MAX_ENTRIES` entries counting the
/// last pack's whole) hands the group out.
#[derive(Default)]
pub(crate) struct SegmentBuffer {
    packs: Vec<PackRecord>,
    entries: usize,
}

impl SegmentBuffer {
    /// Adds a stored pack; returns the group to write as one segment once it is full.
    pub(crate) fn push(&mut self, pack: PackRecord) -> Option<Vec<PackRecord>> {
        self.entries += pack.entries.len();
        self.packs.push(pack);
        if self.packs.len() >= SEGMENT_MAX_PACKS || self.entries >= SEGMENT_MAX_ENTRIES {
            self.entries = 0;
            return Some(std::mem::take(&mut self.packs));
        }
        None
    }

    /// Entries held (never more than `SEGMENT_MAX_ENTRIES` plus one pack's).
    #[cfg(test)]
    pub(crate) fn entries(&self) -> usize {
        self.entries
    }

    /// The packs no full group took.
    pub(crate) fn into_rest(self) -> Vec<PackRecord> {
        self.packs
    }
}

/// Splits packs into the groups written as one index segment each (the groups [`SegmentBuffer`]
/// hands out, in order).
pub(crate) fn segment_groups(packs: &[PackRecord]) -> Vec<&[PackRecord]> {
    let mut groups = Vec::new();
    let (mut start, mut entries) = (0, 0);
    for (i, p) in packs.iter().enumerate() {
        entries += p.entries.len();
        if i + 1 - start >= SEGMENT_MAX_PACKS || entries >= SEGMENT_MAX_ENTRIES {
            groups.push(&packs[start..=i]);
            (start, entries) = (i + 1, 0);
        }
    }
    if start < packs.len() {
        groups.push(&packs[start..]);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use ibs_repo::ids::ChunkId;

    fn pack(n: u8, entries: usize) -> PackRecord {
        let e = PackEntry {
            id: ChunkId([n; 32]),
            offset: 8,
            length: 1,
            raw_length: 1,
            encoding: 0,
            key_id: KeyId([0; 16]),
        };
        PackRecord {
            id: PackId([n; 32]),
            length: 100,
            entries: vec![e; entries],
        }
    }

    #[test]
    fn segments_close_at_the_entry_or_pack_limit_and_never_split_a_pack() {
        let big = [
            pack(1, 40_000),
            pack(2, 40_000),
            pack(3, 70_000),
            pack(4, 1),
        ];
        let sizes: Vec<usize> = segment_groups(&big).iter().map(|g| g.len()).collect();
        assert_eq!(sizes, vec![2, 1, 1]);
        let many: Vec<PackRecord> = (0..4500).map(|i| pack((i % 250) as u8, 1)).collect();
        let sizes: Vec<usize> = segment_groups(&many).iter().map(|g| g.len()).collect();
        assert_eq!(sizes, vec![2000, 2000, 500]);
        assert!(segment_groups(&[]).is_empty());
    }

    /// The bound of ADR 0031: however many packs a backup stores, the records waiting for their
    /// segment stay below one segment's worth plus one pack, and the groups handed out are
    /// exactly the ones `segment_groups` makes of the same packs.
    #[test]
    fn the_segment_buffer_holds_at_most_one_segment_and_groups_like_segment_groups() {
        let sizes = [30_000, 1, 50_000, 9, 70_000, 3, 65_535, 1, 2, 40_000, 7];
        let packs: Vec<PackRecord> = (0..600)
            .map(|i| pack(i as u8, sizes[i % sizes.len()]))
            .collect();
        let largest = sizes.iter().max().unwrap();
        let mut buf = SegmentBuffer::default();
        let mut handed = Vec::new();
        for p in packs.iter().cloned() {
            if let Some(g) = buf.push(p) {
                handed.push(g.len());
            }
            assert!(
                buf.entries() < SEGMENT_MAX_ENTRIES,
                "held {}",
                buf.entries()
            );
            assert!(buf.packs.len() < SEGMENT_MAX_PACKS);
            let held: usize = buf.packs.iter().map(|p| p.entries.len()).sum();
            assert!(held < SEGMENT_MAX_ENTRIES + largest);
        }
        let rest = buf.into_rest().len();
        if rest > 0 {
            handed.push(rest);
        }
        let expected: Vec<usize> = segment_groups(&packs).iter().map(|g| g.len()).collect();
        assert_eq!(handed, expected);
        assert!(handed.len() > 10, "the test exercises many segments");
    }
}
