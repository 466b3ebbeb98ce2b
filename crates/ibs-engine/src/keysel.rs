//! Which data keys an operation may depend on (ADR 0013).
//!
//! The writer holds only the current certificate, so it cannot re-wrap an old data key for it.
//! After a certificate change (`set-cert`), a chunk sealed under a data key whose envelope does
//! not list the current certificate is therefore *absent* to a backup: the backup seals again
//! every such chunk it references (and never uses one as a delta base). Invariant: every chunk a
//! backup references is sealed under a key wrapped for the certificate that backup was written
//! for, so its own .pfx alone restores it.
//!
//! Readers prefer, among copies of one chunk under different keys, a copy whose key one of the
//! offered .pfx files opens; prune prefers the copy the writer may depend on.
//!
//! The writer remembers the keys it has seen wrapped for its certificate in
//! `STATE/<repo>/wrapped-keys.json` (mode 0600: key ids and a certificate thumbprint, no key
//! material), so a steady-state backup reads no envelope; a key not listed there costs one read
//! of its envelope per backup. The file is only a cache: a lost one is rebuilt from the envelopes.

use crate::state::WriterState;
use crate::EngineError;
use futures::StreamExt;
use ibs_keys::Certificate;
use ibs_repo::dedup::DedupSet;
use ibs_repo::ids::KeyId;
use ibs_repo::index::Index;
use ibs_repo::keyring::{recipient_id, Unlock};
use ibs_repo::Repository;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;

/// Envelopes read at once while sorting keys.
const READS_AT_ONCE: usize = 8;

#[derive(Serialize, Deserialize, Default)]
struct WrappedCache {
    thumbprint: String,
    keys: BTreeSet<String>,
}

fn cache_path(state: &WriterState) -> PathBuf {
    state.dir.join("wrapped-keys.json")
}

fn load_cache(state: &WriterState, cert: &Certificate) -> WrappedCache {
    std::fs::read(cache_path(state))
        .ok()
        .and_then(|b| serde_json::from_slice::<WrappedCache>(&b).ok())
        .filter(|c| c.thumbprint == cert.thumbprint())
        .unwrap_or_else(|| WrappedCache {
            thumbprint: cert.thumbprint().to_owned(),
            keys: BTreeSet::new(),
        })
}

fn save_cache(state: &WriterState, cache: &WrappedCache) -> Result<(), EngineError> {
    let bytes = serde_json::to_vec(cache).expect("cache serializes");
    crate::state::write_private(&cache_path(state), &bytes)
}

/// Records that the writer itself wrapped data key `id` for its certificate.
pub fn remember(state: &WriterState, id: &KeyId) -> Result<(), EngineError> {
    let Some(cert) = &state.certificate else {
        return Ok(());
    };
    let mut cache = load_cache(state, cert);
    if cache.keys.insert(id.to_hex()) {
        save_cache(state, &cache)?;
    }
    Ok(())
}

/// Forgets what the writer knew (a new state: adopt).
pub fn forget(state: &WriterState) {
    let _ = std::fs::remove_file(cache_path(state));
}

/// The keys among `ids` whose envelope lists one of `rids`; envelopes read concurrently.
async fn listing_any(
    repo: &Repository,
    ids: impl Iterator<Item = KeyId>,
    rids: &[String],
) -> Result<HashSet<KeyId>, EngineError> {
    let mut reads = futures::stream::iter(ids)
        .map(|id| async move { (id, repo.data_key_recipients(&id).await) })
        .buffer_unordered(READS_AT_ONCE);
    let mut out = HashSet::new();
    while let Some((id, r)) = reads.next().await {
        if r?.is_some_and(|r| r.iter().any(|x| rids.contains(x))) {
            out.insert(id);
        }
    }
    Ok(out)
}

/// The data keys among `ids` a backup by this writer may depend on: `None` (all of them) in
/// legacy-key mode, where every key derives from the key file; with a certificate, those whose
/// envelope lists it.
pub async fn writer_keys(
    repo: &Repository,
    state: &WriterState,
    ids: &[KeyId],
) -> Result<Option<HashSet<KeyId>>, EngineError> {
    let Some(cert) = &state.certificate else {
        return Ok(None);
    };
    let mut cache = load_cache(state, cert);
    let mut keys: HashSet<KeyId> = HashSet::new();
    let mut unknown = Vec::new();
    for id in ids {
        if cache.keys.contains(&id.to_hex()) {
            keys.insert(*id);
        } else {
            unknown.push(*id);
        }
    }
    if !unknown.is_empty() {
        let found = listing_any(repo, unknown.into_iter(), &[recipient_id(cert)]).await?;
        if !found.is_empty() {
            cache.keys.extend(found.iter().map(KeyId::to_hex));
            save_cache(state, &cache)?;
            keys.extend(found);
        }
    }
    Ok(Some(keys))
}

/// The data keys among `ids` that `unlock` opens: `None` (all of them) for a legacy key file.
pub async fn reader_keys(
    repo: &Repository,
    unlock: &Unlock,
    ids: &[KeyId],
) -> Result<Option<HashSet<KeyId>>, EngineError> {
    let Unlock::Identities(idents) = unlock else {
        return Ok(None);
    };
    let rids: Vec<String> = idents
        .iter()
        .map(|i| recipient_id(i.certificate()))
        .collect();
    Ok(Some(listing_any(repo, ids.iter().copied(), &rids).await?))
}

fn empty(damaged: &HashSet<ibs_repo::ids::PackId>, preferred: Option<HashSet<KeyId>>) -> Index {
    match preferred {
        Some(p) => Index::with_preference(damaged.clone(), p),
        None => Index::with_damaged(damaged.clone()),
    }
}

/// Builds the index from the segments on storage, one segment at a time (no list of every record
/// is held beside the index).
async fn load_build(
    repo: &Repository,
    metadata_key: &ibs_repo::crypto::SymKey,
    damaged: &HashSet<ibs_repo::ids::PackId>,
    preferred: Option<HashSet<KeyId>>,
) -> Result<Index, EngineError> {
    let mut index = empty(damaged, preferred);
    repo.for_each_segment(metadata_key, |_, records| {
        records.iter().for_each(|r| index.add_pack(r))
    })
    .await?;
    Ok(index)
}

/// The writer's view of the index ([`DedupSet`], ~23 bytes per chunk), from the segments on
/// storage one at a time; locations in `skip` (damaged or marked packs) never count.
async fn dedup_build(
    repo: &Repository,
    metadata_key: &ibs_repo::crypto::SymKey,
    skip: &HashSet<ibs_repo::ids::PackId>,
    preferred: Option<HashSet<KeyId>>,
) -> Result<DedupSet, EngineError> {
    let mut set = DedupSet::new(skip.clone(), preferred);
    repo.for_each_segment(metadata_key, |_, records| {
        records.iter().for_each(|r| set.add_pack(r))
    })
    .await?;
    Ok(set)
}

/// What a backup deduplicates against: only chunks under keys the writer may depend on
/// ([`writer_keys`]), at their best such location, and nothing in a damaged pack (such a chunk is
/// stored again, which heals it) or in a pack a prune plan marks (`marked`, §19: such a chunk counts
/// as absent and is stored again). Where some chunk has copies under several keys (after a
/// certificate change) the segments are read a second time with the preference.
pub async fn writer_index(
    repo: &Repository,
    state: &WriterState,
    marked: &HashSet<ibs_repo::ids::PackId>,
) -> Result<DedupSet, EngineError> {
    let damaged = repo.damaged_packs().await?;
    if !damaged.is_empty() {
        tracing::info!(
            "{} packs are damaged; chunks with copies only there are stored again if a source still has them",
            damaged.len()
        );
    }
    let skip: HashSet<_> = damaged.union(marked).copied().collect();
    let metadata = &state.keys.metadata;
    let set = dedup_build(repo, metadata, &skip, None).await?;
    let Some(keys) = writer_keys(repo, state, set.key_ids()).await? else {
        return Ok(set);
    };
    let mut set = if set.mixed_keys() {
        drop(set);
        dedup_build(repo, metadata, &skip, Some(keys.clone())).await?
    } else {
        set
    };
    let dropped = set.forget_keys_except(&keys);
    if dropped > 0 {
        tracing::info!(
            "{dropped} chunks are sealed under data keys not wrapped for the current certificate; \
             this backup seals again those it references"
        );
    }
    Ok(set)
}

/// The data keys prune prefers where a chunk has copies under several keys (the copy the writer
/// may depend on is the one kept): `None` when no chunk of `index` has copies under two keys, or
/// in legacy-key mode. Prune then builds its index again, reading the segments with the preference.
pub async fn prune_preference(
    repo: &Repository,
    state: &WriterState,
    index: &Index,
) -> Result<Option<HashSet<KeyId>>, EngineError> {
    if !index.mixed_keys() {
        return Ok(None);
    }
    writer_keys(repo, state, index.key_ids()).await
}

/// The index a restore or check reads through: where a chunk has copies under several keys, a
/// copy whose key `unlock` opens.
pub async fn reader_index(
    repo: &Repository,
    metadata_key: &ibs_repo::crypto::SymKey,
    unlock: &Unlock,
) -> Result<Index, EngineError> {
    let damaged = repo.damaged_packs().await?;
    let index = load_build(repo, metadata_key, &damaged, None).await?;
    if !index.mixed_keys() {
        return Ok(index);
    }
    Ok(match reader_keys(repo, unlock, index.key_ids()).await? {
        Some(keys) => {
            drop(index);
            load_build(repo, metadata_key, &damaged, Some(keys)).await?
        }
        None => index,
    })
}
