//! Prune on WORM storage (object lock, ADR 0035): extending the locks of what retained backups
//! still need, and deletes that a lock or a missing permission may refuse.
//!
//! Invariants:
//! - Before prune deletes anything, every object a kept backup needs is locked until at least
//!   [`LockPolicy::retention_from`] the finish time of the newest kept backup that needs it (the
//!   newest successful backup counts as finishing now: retention never removes it). Times come
//!   from the manifests' catalogs, which prune has just authenticated, never from listings.
//! - A refused delete is a result, not a failure: the object stays, the plan names it, and the
//!   next prune tries again. An index segment that stays keeps every pack it names (see prune):
//!   the index never points at a deleted pack.

use crate::trash::Retire;
use crate::EngineError;
use futures::{StreamExt, TryStreamExt};
use ibs_repo::ids::{KeyId, PackId, SegmentId};
use ibs_repo::{layout, Repository};
use ibs_storage::{ErrorKind, LockPolicy, ObjectKey};
use std::collections::HashMap;

/// Requests in flight while extending locks.
const EXTEND_CONCURRENCY: usize = 8;

/// When the newest kept backup that needs each object finished (Unix seconds).
#[derive(Debug, Default)]
pub struct NeededUntil {
    pub packs: HashMap<PackId, i64>,
    pub manifests: Vec<(String, i64)>,
    pub keys: HashMap<KeyId, i64>,
    /// Reference segments (`refs/`) the kept manifests list.
    pub segments: HashMap<SegmentId, i64>,
}

impl NeededUntil {
    pub fn pack(&mut self, id: PackId, t: i64) {
        let e = self.packs.entry(id).or_insert(t);
        *e = (*e).max(t);
    }

    pub fn key(&mut self, id: KeyId, t: i64) {
        let e = self.keys.entry(id).or_insert(t);
        *e = (*e).max(t);
    }
}

/// Extends the locks of every object kept backups need: the packs `kept` (each with the data keys
/// of its entries that stay indexed; the caller leaves out the packs it just wrote, locked
/// already), the kept manifests and the reference segments they list, the data-key envelopes they
/// and the kept chunks use, and the repository's certificates, key envelopes and config (needed by
/// every backup: until `now` plus the horizon). Returns how many objects it asked about.
pub async fn extend_locks<'a>(
    repo: &Repository,
    policy: LockPolicy,
    needed: &mut NeededUntil,
    kept: impl IntoIterator<Item = (PackId, &'a [KeyId])>,
    now: i64,
) -> Result<usize, EngineError> {
    let mut work: Vec<(ObjectKey, i64)> = Vec::new();
    for (pack, keys) in kept {
        let t = needed.packs.get(&pack).copied().unwrap_or(now);
        for k in keys {
            needed.key(*k, t);
        }
        work.push((layout::pack(&pack), t));
    }
    for (id, t) in &needed.manifests {
        work.push((layout::backup(id), *t));
    }
    for (k, t) in &needed.keys {
        work.push((layout::data_key(k), *t));
    }
    for (g, t) in &needed.segments {
        work.push((layout::refs_segment(g), *t));
    }
    work.push((layout::config(), now));
    for o in repo.storage().list("keys/").await? {
        if !o.key.as_str().starts_with(layout::DATA_KEYS) {
            work.push((o.key, now));
        }
    }
    let n = work.len();
    futures::stream::iter(work)
        .map(|(key, t)| async move {
            match repo
                .storage()
                .extend_lock(&key, policy.retention_from(t))
                .await
            {
                // Gone since it was listed (a data key whose envelope was never written).
                Err(e) if e.is_not_found() => Ok(()),
                other => other,
            }
        })
        .buffer_unordered(EXTEND_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(n)
}

/// What became of one delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// Gone (or was already).
    Yes,
    /// Still under an object lock: kept until a later prune.
    Locked,
    /// The credentials may not delete (an append-only writer key): kept.
    Refused,
}

/// Removes `key` as `retire` says (into the grace area, or for good), turning a lock or a refused
/// permission into a result.
pub async fn try_remove(
    repo: &Repository,
    retire: &Retire,
    key: &ObjectKey,
) -> Result<Deleted, EngineError> {
    match retire.remove_raw(repo, key).await {
        Ok(()) => Ok(Deleted::Yes),
        Err(e) if e.is_not_found() => Ok(Deleted::Yes),
        Err(e) if e.kind == ErrorKind::Locked => Ok(Deleted::Locked),
        Err(e) if e.kind == ErrorKind::Authentication => {
            tracing::warn!("prune: delete of {key} refused: {e}");
            Ok(Deleted::Refused)
        }
        Err(e) => Err(e.into()),
    }
}

/// Removals in flight at once: each is a round trip on network storage and a blocking `unlink`
/// on a local folder (thousands after a large forget).
const REMOVE_CONCURRENCY: usize = 8;

/// [`try_remove`] of every key, several at once; the outcomes in the order of `keys`. The first
/// error ends it (what was removed by then stays removed: callers remove only what may go).
pub async fn try_remove_all(
    repo: &Repository,
    retire: &Retire,
    keys: &[ObjectKey],
) -> Result<Vec<Deleted>, EngineError> {
    futures::stream::iter(keys)
        .map(|k| try_remove(repo, retire, k))
        .buffered(REMOVE_CONCURRENCY)
        .try_collect()
        .await
}
