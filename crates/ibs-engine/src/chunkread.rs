//! Reading a backup's chunks for restore and check: the data keys a reader opens on demand, and
//! fetching, decrypting and verifying a sequence of chunks in order (rebuilding delta chunks from
//! their bases). Every plaintext handed on has been authenticated (AES-GCM with the chunk id as
//! associated data) and re-hashed to its id.

use crate::blocks::{Miss, PackBlocks};
use crate::openers::OpenerPool;
use crate::EngineError;
use bytes::Bytes;
use futures::StreamExt;
use ibs_repo::chunk::ChunkOpener;
use ibs_repo::crypto::SymKey;
use ibs_repo::ids::{ChunkId, KeyId};
use ibs_repo::index::{ChunkLocation, Index};
use ibs_repo::keyring::{RepoKeys, Unlock};
use ibs_repo::pack::encoding;
use ibs_repo::Repository;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Keys a reader has for one restore: repository keys plus data keys opened on demand.
pub(crate) struct KeyCache {
    repo: Arc<Repository>,
    unlock: Arc<Unlock>,
    keys: Mutex<HashMap<KeyId, SymKey>>,
    pub repo_keys: RepoKeys,
}

impl KeyCache {
    pub(crate) async fn open(
        repo: Arc<Repository>,
        unlock: Arc<Unlock>,
    ) -> Result<Self, EngineError> {
        if matches!(unlock.as_ref(), Unlock::Identities(ids) if ids.is_empty()) {
            return Err(EngineError::Repo(ibs_repo::RepoError::MissingKey(
                ibs_repo::MissingKey::PfxToDecrypt,
            )));
        }
        let repo_keys = repo.open_repo_keys(&unlock).await?;
        Ok(KeyCache {
            repo,
            unlock,
            keys: Mutex::new(HashMap::new()),
            repo_keys,
        })
    }

    /// Opens `manifest`'s tree part with its data key (for the certificate its catalog names).
    pub(crate) async fn open_tree(
        &self,
        manifest: &ibs_repo::manifest::Manifest,
    ) -> Result<ibs_repo::manifest::TreePart, EngineError> {
        let cat = &manifest.catalog;
        let data_key = self
            .data_key(
                &KeyId::from_hex(&cat.data_key_id)?,
                cat.certificate_thumbprint.as_deref(),
            )
            .await?;
        Ok(manifest.open_tree(&data_key)?)
    }

    /// [`KeyCache::data_key`] from a blocking thread: a key already opened costs no runtime call.
    pub(crate) fn data_key_blocking(
        &self,
        rt: &tokio::runtime::Handle,
        id: &KeyId,
    ) -> Result<SymKey, String> {
        if let Some(k) = self.keys.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            return Ok(k.clone());
        }
        rt.block_on(self.data_key(id, None))
            .map_err(|e| e.to_string())
    }

    pub(crate) async fn data_key(
        &self,
        id: &KeyId,
        expected: Option<&str>,
    ) -> Result<SymKey, EngineError> {
        if let Some(k) = self.keys.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            return Ok(k.clone());
        }
        let k = self.repo.open_data_key(id, &self.unlock, expected).await?;
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(*id, k.clone());
        Ok(k)
    }
}

/// Range reads in flight per sequence being read (per file worker). Enough to hide a network
/// share's or an object store's round trip; the bytes they hold are bounded by [`MAX_SPAN`] each
/// and, in a restore, by its [`ReadBudget`].
const FETCH_AHEAD: usize = 8;

/// The most bytes one range read covers when it coalesces chunks of one pack.
pub(crate) const MAX_SPAN: u64 = 4 << 20;

/// Chunks of one pack separated by at most this many bytes (other chunks) are still read with one
/// range read; the bytes between them are read and dropped. A request to a share or an object
/// store costs far more than this many bytes of transfer.
pub(crate) const MAX_GAP: u64 = 256 << 10;

/// Bytes of sealed chunks a whole restore may hold in flight across its workers (range reads
/// under way and read but not yet written), so its memory does not grow with its worker count.
pub(crate) struct ReadBudget {
    sem: Arc<tokio::sync::Semaphore>,
    total: u32,
}

impl ReadBudget {
    pub(crate) fn new(bytes: u32) -> Self {
        ReadBudget {
            sem: Arc::new(tokio::sync::Semaphore::new(bytes as usize)),
            total: bytes,
        }
    }

    /// Waits for `bytes` of the budget (all of it for a read larger than the whole budget). A
    /// caller takes what one read needs at once and holds nothing else while it waits, so readers
    /// never wait on each other in a circle.
    async fn take(&self, bytes: u64) -> tokio::sync::OwnedSemaphorePermit {
        let n = bytes.min(self.total as u64) as u32;
        self.sem
            .clone()
            .acquire_many_owned(n)
            .await
            .expect("the read budget's semaphore is never closed")
    }
}

/// Sealed chunks fetched ahead for a batch of small files ([`prefetch`]), with the share of the
/// read budget they hold until the batch is done.
#[derive(Default)]
pub(crate) struct Prefetched {
    chunks: HashMap<ChunkId, Bytes>,
    _budget: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Where [`read_chunks_via`] finds chunks besides storage, and what bounds its reads.
#[derive(Clone, Copy, Default)]
pub(crate) struct ReadVia<'a> {
    /// Chunks already fetched; any other is read from storage.
    pub prefetched: Option<&'a Prefetched>,
    /// Bounds the bytes of this sequence's range reads in flight (a restore's workers share it).
    pub budget: Option<&'a ReadBudget>,
    /// Openers shared with other readers, leased for each range read's chunks in turn; the
    /// caller's own opener is used without it. Storage read on the calling thread (a local
    /// folder) always uses the caller's opener.
    pub openers: Option<&'a OpenerPool>,
    /// Pack blocks shared with other readers: chunks are cut from them rather than read alone.
    pub blocks: Option<&'a PackBlocks>,
}

/// Reads the sealed chunks of one span ([`spans`]): cut from `blocks` when given, or with a range
/// read of its own, also when blocks say to read alone ([`Miss::ReadAlone`]: that read reports
/// what is wrong, chunk by chunk).
async fn read_span(
    repo: &Repository,
    index: &Index,
    blocks: Option<&PackBlocks>,
    locs: &[ChunkLocation],
) -> Result<Vec<Bytes>, String> {
    if let (Some(blocks), Some(first)) = (blocks, locs.first()) {
        let sane = locs
            .iter()
            .all(|l| l.raw_length <= ibs_repo::chunk::MAX_CHUNK);
        if let Some(len) = index.pack_length(&first.pack).filter(|_| sane) {
            let read = |o, n| async move {
                repo.read_pack_range(&first.pack, o, n)
                    .await
                    .map_err(|e| match e {
                        ibs_repo::RepoError::Corrupt { .. } => Miss::ReadAlone,
                        e => Miss::Failed(e.to_string()),
                    })
            };
            match blocks.span(locs, len, read).await {
                Ok(got) => return Ok(got),
                Err(Miss::Failed(e)) => return Err(e),
                Err(Miss::ReadAlone) => {}
            }
        }
    }
    repo.read_sealed_span(locs).await.map_err(|e| e.to_string())
}

/// The ranges of `locs` to read with one range read each: consecutive locations of one pack, in
/// ascending order, at most [`MAX_GAP`] apart and [`MAX_SPAN`] long in all (a single chunk larger
/// than that is its own range). `alone(i)` keeps location `i` out of every multi-chunk range.
pub(crate) fn spans(
    locs: &[ChunkLocation],
    alone: impl Fn(usize) -> bool,
) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, loc) in locs.iter().enumerate() {
        if let Some(last) = out.last_mut() {
            let (first, prev) = (&locs[last.start], &locs[i - 1]);
            let end = prev.offset as u64 + prev.length as u64;
            let joins = !alone(i)
                && !alone(i - 1)
                && loc.pack == prev.pack
                && loc.offset as u64 >= end
                && loc.offset as u64 - end <= MAX_GAP
                && loc.offset as u64 + loc.length as u64 - first.offset as u64 <= MAX_SPAN;
            if joins {
                last.end = i + 1;
                continue;
            }
        }
        out.push(i..i + 1);
    }
    out
}

/// Fetches, decrypts and verifies a sequence of chunks, calling `sink` with each plaintext in order.
/// Runs on a non-runtime thread. A storage that can read on this thread (a local folder) is read
/// one chunk after another without the runtime (the restore's several workers keep the disk busy);
/// any other (SMB, S3) with adjacent chunks of a pack coalesced into one range read ([`spans`])
/// and [`FETCH_AHEAD`] reads in flight to hide its round trips.
pub(crate) fn read_chunks(
    rt: &tokio::runtime::Handle,
    repo: &Arc<Repository>,
    keys: &KeyCache,
    index: &Index,
    ids: &[ChunkId],
    opener: &mut ChunkOpener,
    sink: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<(), String> {
    read_chunks_via(rt, repo, keys, index, ids, opener, ReadVia::default(), sink)
}

/// [`read_chunks`] taking chunks from `via.prefetched` where it has them and bounding its reads by
/// `via.budget`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn read_chunks_via(
    rt: &tokio::runtime::Handle,
    repo: &Arc<Repository>,
    keys: &KeyCache,
    index: &Index,
    ids: &[ChunkId],
    opener: &mut ChunkOpener,
    via: ReadVia<'_>,
    mut sink: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<(), String> {
    let (ids, locs): (Vec<ChunkId>, Vec<ChunkLocation>) = ids
        .iter()
        .map(|id| {
            index
                .get(id)
                .map(|l| (*id, l))
                .ok_or_else(|| format!("chunk {id} is missing from the index"))
        })
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .unzip();
    let ready = |i: usize| via.prefetched.and_then(|p| p.chunks.get(&ids[i]));
    // A storage that reads on this thread (a local folder): one chunk after another, no runtime.
    if let Some(first) = locs.first() {
        if let Some(got) = repo.read_sealed_blocking(first) {
            let mut got = Some(got);
            for (id, loc) in ids.iter().zip(&locs) {
                let sealed = match got.take() {
                    Some(g) => g,
                    None => repo
                        .read_sealed_blocking(loc)
                        .expect("a storage reads blocking for every call or for none"),
                }
                .map_err(|e| e.to_string())?;
                let key = keys.data_key_blocking(rt, &loc.key_id)?;
                let data = open(opener, keys, id, loc, &sealed, &key)?;
                if loc.encoding == encoding::DELTA {
                    let recipe = data.to_vec();
                    sink(&rt.block_on(rebuild(repo, keys, index, opener, &recipe))?)?;
                } else {
                    sink(data)?;
                }
            }
            return Ok(());
        }
    }
    let ranges = spans(&locs, |i| ready(i).is_some());
    let (ids, locs) = (&ids, &locs);
    rt.block_on(async {
        let fetched = futures::stream::iter(ranges)
            .then(|r| async move {
                let bytes = locs[r.clone()].iter().map(|l| l.length as u64).sum::<u64>();
                let permit = match (via.budget, ready(r.start)) {
                    (Some(b), None) => Some(b.take(bytes).await),
                    _ => None,
                };
                (r, permit)
            })
            .map(|(r, permit)| async move {
                let sealed = match ready(r.start) {
                    Some(b) => vec![b.clone()],
                    None => read_span(repo, index, via.blocks, &locs[r.clone()]).await?,
                };
                Ok::<_, String>((r, sealed, permit))
            })
            .buffered(FETCH_AHEAD);
        let mut fetched = std::pin::pin!(fetched);
        while let Some(got) = fetched.next().await {
            let (r, sealed, _permit) = got?;
            let mut lease = via.openers.map(OpenerPool::lease);
            let opener: &mut ChunkOpener = match lease.as_mut() {
                Some(l) => l,
                None => &mut *opener,
            };
            for (i, sealed) in r.zip(sealed) {
                let (id, loc) = (&ids[i], &locs[i]);
                let key = keys
                    .data_key(&loc.key_id, None)
                    .await
                    .map_err(|e| e.to_string())?;
                let data = open(opener, keys, id, loc, &sealed, &key)?;
                if loc.encoding == encoding::DELTA {
                    let recipe = data.to_vec();
                    sink(&rebuild(repo, keys, index, opener, &recipe).await?)?;
                } else {
                    sink(data)?;
                }
            }
        }
        Ok(())
    })
}

/// Fetches the sealed chunks of `ids` (a batch of small files' chunks, on storage that is not read
/// on the calling thread) ahead, sorted by pack and offset and coalesced into as few range reads as
/// [`spans`] allows, holding their bytes against `budget` until the result is dropped. Chunks it
/// cannot fetch (missing from the index, a delta chunk, a failed read) are left out: reading them
/// again one by one reports what is wrong with each.
pub(crate) fn prefetch(
    rt: &tokio::runtime::Handle,
    repo: &Arc<Repository>,
    index: &Index,
    ids: &[ChunkId],
    budget: Option<&ReadBudget>,
    blocks: Option<&PackBlocks>,
) -> Prefetched {
    let mut seen = std::collections::HashSet::new();
    let mut want: Vec<(ChunkId, ChunkLocation)> = ids
        .iter()
        .filter(|id| seen.insert(**id))
        .filter_map(|id| index.get(id).map(|l| (*id, l)))
        .filter(|(_, l)| l.encoding != encoding::DELTA)
        .collect();
    want.sort_by_key(|(_, l)| (l.pack, l.offset));
    let locs: Vec<ChunkLocation> = want.iter().map(|(_, l)| *l).collect();
    let ranges = spans(&locs, |_| false);
    let total: u64 = ranges
        .iter()
        .map(|r| {
            let (a, b) = (&locs[r.start], &locs[r.end - 1]);
            b.offset as u64 + b.length as u64 - a.offset as u64
        })
        .sum();
    rt.block_on(async {
        let permit = match budget {
            Some(b) => Some(b.take(total).await),
            None => None,
        };
        let got: Vec<_> = futures::stream::iter(ranges)
            .map(|r| {
                let locs = &locs[r.clone()];
                async move { (r, read_span(repo, index, blocks, locs).await) }
            })
            .buffer_unordered(FETCH_AHEAD)
            .collect()
            .await;
        let mut chunks = HashMap::with_capacity(want.len());
        for (r, sealed) in got {
            if let Ok(sealed) = sealed {
                for ((id, _), b) in want[r].iter().zip(sealed) {
                    chunks.insert(*id, b);
                }
            }
        }
        Prefetched {
            chunks,
            _budget: permit,
        }
    })
}

/// Reads a chunk's sealed bytes and the data key that opens them.
async fn fetch(
    repo: &Repository,
    keys: &KeyCache,
    loc: &ChunkLocation,
) -> Result<(bytes::Bytes, SymKey), String> {
    let sealed = repo.read_sealed(loc).await.map_err(|e| e.to_string())?;
    let key = keys
        .data_key(&loc.key_id, None)
        .await
        .map_err(|e| e.to_string())?;
    Ok((sealed, key))
}

/// Decrypts and verifies a fetched chunk (into the opener's buffer); errors name its pack.
fn open<'a>(
    opener: &'a mut ChunkOpener,
    keys: &KeyCache,
    id: &ChunkId,
    loc: &ChunkLocation,
    sealed: &[u8],
    key: &SymKey,
) -> Result<&'a [u8], String> {
    opener
        .open_buf(
            id,
            loc.encoding,
            loc.raw_length,
            sealed,
            key,
            &keys.repo_keys.dedup,
        )
        .map_err(|e| format!("{e} (in pack {})", loc.pack))
}

/// Rebuilds a delta chunk's content from its recipe and its base (a full chunk, fetched now).
async fn rebuild(
    repo: &Arc<Repository>,
    keys: &KeyCache,
    index: &Index,
    opener: &mut ChunkOpener,
    recipe: &[u8],
) -> Result<Vec<u8>, String> {
    let h = ibs_repo::delta::header(recipe).map_err(|e| e.to_string())?;
    let loc = index.get(&h.base).ok_or_else(|| {
        format!(
            "chunk {}: its delta base {} is missing from the index",
            h.target, h.base
        )
    })?;
    if loc.encoding == encoding::DELTA {
        return Err(format!(
            "chunk {}: its delta base {} is itself a delta chunk",
            h.target, h.base
        ));
    }
    let (sealed, key) = fetch(repo, keys, &loc).await?;
    let base = open(opener, keys, &h.base, &loc, &sealed, &key)?;
    ibs_repo::delta::apply(recipe, base, &keys.repo_keys.dedup).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ibs_repo::ids::PackId;

    fn loc(pack: u8, offset: u32, length: u32) -> ChunkLocation {
        ChunkLocation {
            pack: PackId([pack; PackId::LEN]),
            offset,
            length,
            raw_length: length,
            encoding: encoding::RAW,
            key_id: KeyId([0; KeyId::LEN]),
        }
    }

    #[test]
    fn adjacent_chunks_of_one_pack_are_read_with_one_range() {
        let locs = [loc(1, 0, 100), loc(1, 100, 50), loc(1, 150, 10)];
        assert_eq!(spans(&locs, |_| false), vec![0..3]);
    }

    #[test]
    fn a_small_gap_is_read_through_and_a_large_one_is_not() {
        let gap = MAX_GAP as u32;
        let locs = [
            loc(1, 0, 100),
            loc(1, 100 + gap, 100),
            loc(1, 200 + 2 * gap + 1, 100),
        ];
        assert_eq!(spans(&locs, |_| false), vec![0..2, 2..3]);
    }

    #[test]
    fn another_pack_a_step_back_or_an_overlap_starts_a_new_range() {
        let locs = [
            loc(1, 1000, 100),
            loc(2, 1100, 100),
            loc(2, 0, 100),
            loc(2, 50, 100),
            loc(2, 50, 100),
        ];
        assert_eq!(spans(&locs, |_| false), vec![0..1, 1..2, 2..3, 3..4, 4..5]);
    }

    #[test]
    fn a_range_never_grows_past_the_span_limit_but_a_huge_chunk_is_read_alone() {
        let mb = 1 << 20;
        let locs = [
            loc(1, 0, 3 * mb),
            loc(1, 3 * mb, mb),
            loc(1, 4 * mb, 1),
            loc(1, 4 * mb + 1, 9 * mb),
        ];
        let got = spans(&locs, |_| false);
        assert_eq!(got, vec![0..2, 2..3, 3..4]);
        for r in &got {
            let (a, b) = (&locs[r.start], &locs[r.end - 1]);
            let len = (b.offset + b.length - a.offset) as u64;
            assert!(r.len() == 1 || len <= MAX_SPAN, "{r:?} covers {len} bytes");
            assert!(ibs_repo::span_ok(&locs[r.clone()]));
        }
    }

    #[test]
    fn chunks_kept_alone_are_never_merged() {
        let locs = [
            loc(1, 0, 10),
            loc(1, 10, 10),
            loc(1, 20, 10),
            loc(1, 30, 10),
        ];
        assert_eq!(spans(&locs, |i| i == 1), vec![0..1, 1..2, 2..4]);
    }
}
