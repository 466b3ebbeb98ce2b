//! Reading a backup's chunks for restore and check: the data keys a reader opens on demand, and
//! fetching, decrypting and verifying a sequence of chunks in order (rebuilding delta chunks from
//! their bases). Every plaintext handed on has been authenticated (AES-GCM with the chunk id as
//! associated data) and re-hashed to its id.

use crate::EngineError;
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

/// Chunk fetches in flight per sequence being read (per file worker). Enough to hide a network
/// share's round trip (each fetch is one READ); memory stays bounded at this many sealed chunks.
const FETCH_AHEAD: usize = 8;

/// Fetches, decrypts and verifies a sequence of chunks, calling `sink` with each plaintext in order.
/// Runs on a non-runtime thread. A storage that can read on this thread (a local folder) is read
/// one chunk after another without the runtime (the restore's several workers keep the disk busy);
/// any other (SMB) with [`FETCH_AHEAD`] fetches in flight to hide its round trips.
pub(crate) fn read_chunks(
    rt: &tokio::runtime::Handle,
    repo: &Arc<Repository>,
    keys: &KeyCache,
    index: &Index,
    ids: &[ChunkId],
    opener: &mut ChunkOpener,
    mut sink: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<(), String> {
    let locs = ids
        .iter()
        .map(|id| {
            index
                .get(id)
                .map(|l| (*id, l))
                .ok_or_else(|| format!("chunk {id} is missing from the index"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // A storage that reads on this thread (a local folder): one chunk after another, no runtime.
    if let Some(&(_, first)) = locs.first() {
        if let Some(got) = repo.read_sealed_blocking(&first) {
            let mut got = Some(got);
            for (id, loc) in &locs {
                let sealed = match got.take() {
                    Some(g) => g,
                    None => repo
                        .read_sealed_blocking(loc)
                        .expect("a storage reads blocking for every call or for none"),
                }
                .map_err(|e| e.to_string())?;
                let key = keys.data_key_blocking(rt, &loc.key_id)?;
                let data = open(opener, keys, id, loc, &sealed, &key)?;
                drop(sealed);
                if loc.encoding == encoding::DELTA {
                    sink(&rt.block_on(rebuild(repo, keys, index, opener, &data))?)?;
                } else {
                    sink(&data)?;
                }
            }
            return Ok(());
        }
    }
    rt.block_on(async {
        let mut fetched = futures::stream::iter(locs)
            .map(|(id, loc)| async move {
                fetch(repo, keys, &loc)
                    .await
                    .map(|(sealed, key)| (id, loc, sealed, key))
            })
            .buffered(FETCH_AHEAD);
        while let Some(r) = fetched.next().await {
            let (id, loc, sealed, key) = r?;
            let data = open(opener, keys, &id, &loc, &sealed, &key)?;
            if loc.encoding == encoding::DELTA {
                sink(&rebuild(repo, keys, index, opener, &data).await?)?;
            } else {
                sink(&data)?;
            }
        }
        Ok(())
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

/// Decrypts and verifies a fetched chunk; errors name its pack.
fn open(
    opener: &mut ChunkOpener,
    keys: &KeyCache,
    id: &ChunkId,
    loc: &ChunkLocation,
    sealed: &[u8],
    key: &SymKey,
) -> Result<Vec<u8>, String> {
    opener
        .open(
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
    ibs_repo::delta::apply(recipe, &base, &keys.repo_keys.dedup).map_err(|e| e.to_string())
}
