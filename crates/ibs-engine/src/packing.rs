//! The end of the backup pipeline: sealed chunks → packs (one thread) → uploads (async, one or two
//! packs in flight). Owns the bound on finished packs held in memory and the recycling of their
//! buffers.
//!
//! Invariants: at most `uploads_in_flight` finished packs exist at once (queued or uploading): the
//! packer takes a slot before it seals the next one, and an upload gives it back when it ends, so
//! memory holds those packs plus the one being filled, whatever the storage's speed. After the
//! first failed upload no new upload starts, but the ones in flight are awaited, never dropped: a
//! put cancelled mid-way could leave its temporary behind (on SMB it cleans up only when it runs
//! to its own end).

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
    /// The stored packs, or the first upload failure.
    pub uploader: tokio::task::JoinHandle<Result<Vec<PackRecord>, RepoError>>,
}

/// Starts packing the chunks of `sealed_rx` (all sealed under the data key `key_id`) into packs of
/// about `pack_target` bytes, with headers sealed under `meta_key`, and storing them in `repo`.
pub(crate) fn start(
    repo: Arc<Repository>,
    sealed_rx: crossbeam_channel::Receiver<SealedChunk>,
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
    let packer = std::thread::spawn(move || {
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
            if builder.len() >= pack_target {
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
    let uploader = tokio::spawn(upload_all(repo, pack_rx, recycle_tx, uploads_in_flight));
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

/// Uploads packs as they come, up to `in_flight` at once (see the module's invariants).
async fn upload_all(
    repo: Arc<Repository>,
    mut pack_rx: tokio::sync::mpsc::Receiver<Finished>,
    recycle: crossbeam_channel::Sender<Vec<u8>>,
    in_flight: usize,
) -> Result<Vec<PackRecord>, RepoError> {
    let mut inflight = futures::stream::FuturesUnordered::new();
    let mut done = Vec::new();
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
            Some(Ok(rec)) => done.push(rec),
            Some(Err(e)) => {
                failed.get_or_insert(e);
            }
            None => {}
        }
    }
    drop(pack_rx);
    match failed {
        Some(e) => Err(e),
        None => Ok(done),
    }
}
