//! Pack blocks that the workers of a restore from an object store share (ADR 0056; storage whose
//! `Capabilities::prefers_large_reads` is set).
//!
//! A backup packs the chunks of the several files it reads at once side by side, so one file's
//! chunks lie scattered through many packs, between other files' chunks. Read file by file, every
//! worker asked for its own small stretches of the same packs: the 1 GiB bench tree took ~560
//! range reads of ~0.7 MiB each from Ceph RGW, and the gateway spent three times restic's CPU
//! serving them. Here a pack is read in aligned blocks of [`BLOCK`] bytes instead, each block once
//! while it is wanted, and every worker cuts its chunks out of the blocks it needs.
//!
//! Invariants:
//! - One read per block: a worker that wants a block another worker is reading waits for that
//!   read ([`tokio::sync::OnceCell`]). A failed read is kept as failed for the rest of the restore:
//!   every later want of that block fails at once and its caller reads its own chunks, so a dead
//!   or damaged pack costs one failed block read (with the storage's retries), not one per waiter.
//! - The blocks kept after their read are at most the capacity given (least recently used leave
//!   first); blocks being read are not counted against it, and at most [`READS_AT_ONCE`] are read
//!   at once.
//! - A chunk handed out never keeps a much larger block alive: a chunk under a quarter of a block
//!   is copied out of it, and a chunk across blocks is assembled into its own buffer.
//! - Blocks are an optimisation only: [`PackBlocks::span`] fails as a whole when any block it
//!   needs is not what the index says ([`Miss::ReadAlone`]), and its caller then reads the chunks
//!   themselves, so a damaged or short pack is reported chunk by chunk exactly as without blocks.
//!   A storage failure ([`Miss::Failed`]) fails the span with the storage's error.

use bytes::Bytes;
use ibs_repo::ids::PackId;
use ibs_repo::index::ChunkLocation;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Bytes of a block: blocks start at multiples of this in their pack; the last one of a pack ends
/// with the pack. A quarter of the default pack size: a range request costs a gateway far more
/// than this many bytes of transfer, and a block rarely holds bytes no worker wants soon.
pub(crate) const BLOCK: u64 = 4 << 20;

/// Bytes of read blocks kept for further chunks, at least ([`PackBlocks::for_workers`]): eight
/// blocks, two default packs.
pub(crate) const CAPACITY: u64 = 32 << 20;

/// Block reads under way at once: enough to keep a gateway's or a share's round trips hidden.
pub(crate) const READS_AT_ONCE: usize = 6;

/// The most bytes of read blocks kept, however many workers a restore runs: one block for each
/// of the 24 workers a restore runs at most by default.
pub(crate) const CAPACITY_MAX: u64 = 96 << 20;

/// A block's read: its bytes, or why they could not be had.
type Cell = Arc<tokio::sync::OnceCell<Result<Bytes, Miss>>>;

/// Why chunks could not be cut from blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Miss {
    /// A block is not what the index says (a short, truncated or missing pack), or a chunk lies
    /// past the pack's indexed end: the caller reads the chunks themselves, and those reads say
    /// which chunks are lost.
    ReadAlone,
    /// The storage failed the read after its own retries (it is unreachable, refuses access):
    /// reading the chunks themselves would fail the same way, only later.
    Failed(String),
}

struct Entry {
    cell: Cell,
    /// When it was last wanted ([`Inner::tick`]).
    used: u64,
    /// Its length once read and counted; 0 while being read, and for a failed read (kept to mark
    /// the failure, never evicted).
    counted: u64,
}

#[derive(Default)]
struct Inner {
    blocks: HashMap<(PackId, u64), Entry>,
    tick: u64,
    /// Sum of the entries' `counted`.
    bytes: u64,
}

/// The blocks of one restore ([`crate::restore`]).
pub(crate) struct PackBlocks {
    inner: Mutex<Inner>,
    block: u64,
    capacity: u64,
    /// Bounds the block reads under way at once (and so the bytes they land in).
    reading: tokio::sync::Semaphore,
    /// Block reads started (for tests and figures).
    reads: AtomicU64,
}

impl PackBlocks {
    /// The blocks of a restore with `workers` file workers: at least [`CAPACITY`] kept, and one
    /// block per worker beyond that, since each worker's files reach into blocks of their own; never
    /// more than [`CAPACITY_MAX`], whatever `--threads` asks for.
    pub(crate) fn for_workers(workers: usize) -> Self {
        let wanted = (workers as u64).saturating_mul(BLOCK);
        Self::with_sizes(BLOCK, wanted.clamp(CAPACITY, CAPACITY_MAX))
    }

    pub(crate) fn with_sizes(block: u64, capacity: u64) -> Self {
        PackBlocks {
            inner: Mutex::new(Inner::default()),
            block,
            capacity,
            reading: tokio::sync::Semaphore::new(READS_AT_ONCE),
            reads: AtomicU64::new(0),
        }
    }

    /// Block reads started so far.
    #[cfg(test)]
    pub(crate) fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sealed bytes of `locs` (one pack's chunks in ascending order, as
    /// [`crate::chunkread::spans`] groups them), cut from that pack's blocks. `pack_len` is the
    /// pack's length as indexed; `read(offset, len)` reads a stretch of the pack exactly and says
    /// why it could not ([`Miss`]).
    pub(crate) async fn span<F, Fut>(
        &self,
        locs: &[ChunkLocation],
        pack_len: u64,
        read: F,
    ) -> Result<Vec<Bytes>, Miss>
    where
        F: Fn(u64, u64) -> Fut,
        Fut: Future<Output = Result<Bytes, Miss>>,
    {
        let (Some(first), Some(last)) = (locs.first(), locs.last()) else {
            return Ok(Vec::new());
        };
        let end = last.offset as u64 + last.length as u64;
        if end > pack_len || !ibs_repo::span_ok(locs) {
            return Err(Miss::ReadAlone);
        }
        let (k0, k1) = (first.offset as u64 / self.block, (end - 1) / self.block);
        let mut got = Vec::with_capacity((k1 - k0 + 1) as usize);
        for k in k0..=k1 {
            got.push(self.get(first.pack, k, pack_len, &read));
        }
        let got = futures::future::join_all(got).await;
        let got: Vec<Bytes> = got.into_iter().collect::<Result<_, _>>()?;
        Ok(locs
            .iter()
            .map(|l| self.cut(&got, k0, l.offset as u64, l.length as u64))
            .collect())
    }

    /// Bytes `[offset, offset + len)` of a pack from its blocks `got` (the first is block `k0`).
    fn cut(&self, got: &[Bytes], k0: u64, offset: u64, len: u64) -> Bytes {
        let (a, b) = (offset / self.block, (offset + len - 1) / self.block);
        let at = (offset - a * self.block) as usize;
        if a == b {
            let block = &got[(a - k0) as usize];
            let bytes = block.slice(at..at + len as usize);
            return if len < self.block / 4 {
                Bytes::copy_from_slice(&bytes)
            } else {
                bytes
            };
        }
        let mut out = Vec::with_capacity(len as usize);
        let mut from = at;
        for k in a..=b {
            let block = &got[(k - k0) as usize];
            let take = (len as usize - out.len()).min(block.len() - from);
            out.extend_from_slice(&block[from..from + take]);
            from = 0;
        }
        out.into()
    }

    /// Block `k` of `pack`: kept, being read by another worker (waited for), or read now.
    async fn get<F, Fut>(
        &self,
        pack: PackId,
        k: u64,
        pack_len: u64,
        read: &F,
    ) -> Result<Bytes, Miss>
    where
        F: Fn(u64, u64) -> Fut,
        Fut: Future<Output = Result<Bytes, Miss>>,
    {
        let cell = {
            let mut inner = self.lock();
            inner.tick += 1;
            let tick = inner.tick;
            let e = inner.blocks.entry((pack, k)).or_insert_with(|| Entry {
                cell: Cell::default(),
                used: tick,
                counted: 0,
            });
            e.used = tick;
            e.cell.clone()
        };
        let start = k * self.block;
        let len = self.block.min(pack_len - start);
        let got = cell
            .get_or_init(|| async {
                let _reading = self.reading.acquire().await;
                self.reads.fetch_add(1, Ordering::Relaxed);
                match read(start, len).await {
                    Ok(b) if b.len() as u64 == len => Ok(b),
                    Ok(_) => Err(Miss::ReadAlone),
                    Err(miss) => Err(miss),
                }
            })
            .await
            .clone()?;
        let mut inner = self.lock();
        if let Some(e) = inner
            .blocks
            .get_mut(&(pack, k))
            .filter(|e| Arc::ptr_eq(&e.cell, &cell) && e.counted == 0)
        {
            e.counted = len;
            inner.bytes += len;
            self.evict(&mut inner, (pack, k));
        }
        Ok(got)
    }

    /// Drops the least recently wanted read blocks (never `keep`) until the rest fit.
    fn evict(&self, inner: &mut Inner, keep: (PackId, u64)) {
        while inner.bytes > self.capacity {
            let Some(oldest) = inner
                .blocks
                .iter()
                .filter(|(key, e)| e.counted > 0 && **key != keep)
                .min_by_key(|(_, e)| e.used)
                .map(|(key, _)| *key)
            else {
                return;
            };
            let e = inner.blocks.remove(&oldest).expect("just found");
            inner.bytes -= e.counted;
        }
    }
}

#[cfg(test)]
#[path = "blocks_tests.rs"]
mod tests;
