//! The grace area (`trash/`, repository format §Grace area): prune and forget never delete a
//! repository object outright. Each operation moves what it removes into one batch,
//! `trash/<batch>/<original key>`, where the batch name is the operation's time and a random part
//! (the shape of a backup id). A later prune purges a batch once the delete delay
//! ([`DEFAULT_DELETE_DELAY`], 24 h) has passed since the batch's time, and [`undelete`] moves
//! everything still in the grace area back.
//!
//! Invariants:
//! - A batch's age is read from its name, written by the host that ran the operation, against the
//!   purging host's clock; a server's listing times are never used (a writer or a lying server
//!   cannot make a batch look old by its modification time).
//! - Undelete writes only names that [`layout::parse_trash`] accepts (names ibs itself creates),
//!   never under `trash/`, and moves packs, key envelopes and index segments back before
//!   manifests, so a crash part-way leaves no restored backup whose data is still in the grace
//!   area once undelete is run again.
//! - A delete delay of zero deletes at once and purges every batch (an operator who needs the
//!   space now).

use crate::EngineError;
use futures::{StreamExt, TryStreamExt};
use ibs_repo::clock::{id_unix, new_backup_id};
use ibs_repo::lock::LockKind;
use ibs_repo::{layout, Repository};
use ibs_storage::ObjectKey;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// How long removed objects stay in the grace area, unless the operator says otherwise.
pub const DEFAULT_DELETE_DELAY: Duration = Duration::from_secs(24 * 3600);

/// Where one operation puts what it removes.
#[derive(Debug, Clone)]
pub struct Retire {
    /// `None`: delete at once (a delete delay of zero).
    batch: Option<String>,
}

impl Retire {
    /// A new batch at the repository clock's time, or immediate deletion for a zero delay. On
    /// object-lock storage (ADR 0035) there is no grace area either: an object can only be
    /// removed once its lock expired, and the lock lasts the margin beyond the last backup that
    /// needed it, which is the grace period there; moving it would copy it (a new, locked object)
    /// and then fail to delete the original.
    pub fn new(repo: &Repository, delay: Duration) -> Self {
        let keep = !delay.is_zero() && repo.storage().lock_policy().is_none();
        Retire {
            batch: keep.then(|| new_backup_id(repo.clock().now_unix())),
        }
    }

    /// The batch this operation fills, if it keeps what it removes.
    pub fn batch(&self) -> Option<&str> {
        self.batch.as_deref()
    }

    /// Removes `key` from the repository: into the batch, or for good. A key already gone is not
    /// an error (a crashed earlier run, or another path removed it).
    pub async fn remove(&self, repo: &Repository, key: &ObjectKey) -> Result<(), EngineError> {
        match self.remove_raw(repo, key).await {
            Err(e) if !e.is_not_found() => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// [`Retire::remove`] with the storage's own error (a missing key is `NotFound`).
    pub async fn remove_raw(&self, repo: &Repository, key: &ObjectKey) -> ibs_storage::Result<()> {
        match &self.batch {
            Some(b) => repo.storage().rename(key, &layout::trash(b, key)).await,
            None => repo.storage().delete(key).await,
        }
    }
}

/// One batch in the grace area.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Batch {
    pub name: String,
    /// The operation's time (Unix seconds), from the batch name.
    pub time: i64,
    pub objects: usize,
    pub bytes: u64,
    /// Backups (manifests) the batch holds.
    pub backups: Vec<String>,
}

/// What the grace area holds, oldest batch first, and the keys under `trash/` that are not a
/// batch's object (left alone: ibs did not write them).
async fn scan(repo: &Repository) -> Result<(Vec<(Batch, Vec<ObjectKey>)>, usize), EngineError> {
    let mut batches: BTreeMap<String, (Batch, Vec<ObjectKey>)> = BTreeMap::new();
    let mut foreign = 0;
    for o in repo.storage().list(layout::TRASH).await? {
        let Some((name, original)) = layout::parse_trash(&o.key) else {
            foreign += 1;
            continue;
        };
        let Some(time) = id_unix(name) else {
            foreign += 1;
            continue;
        };
        let (b, keys) = batches.entry(name.to_owned()).or_insert_with(|| {
            let b = Batch {
                name: name.to_owned(),
                time,
                objects: 0,
                bytes: 0,
                backups: Vec::new(),
            };
            (b, Vec::new())
        });
        b.objects += 1;
        b.bytes += o.size;
        if let Some(id) = original.as_str().strip_prefix(layout::BACKUPS) {
            b.backups.push(id.to_owned());
        }
        keys.push(o.key.clone());
    }
    let mut out: Vec<_> = batches.into_values().collect();
    out.sort_by(|a, b| (a.0.time, &a.0.name).cmp(&(b.0.time, &b.0.name)));
    for (b, _) in &mut out {
        b.backups.sort();
    }
    Ok((out, foreign))
}

/// The batches in the grace area, oldest first.
pub async fn batches(repo: &Repository) -> Result<Vec<Batch>, EngineError> {
    Ok(scan(repo).await?.0.into_iter().map(|(b, _)| b).collect())
}

/// What a purge deleted for good.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Purged {
    pub batches: usize,
    pub objects: usize,
    pub bytes: u64,
}

/// Deletes in flight at once while purging (see `worm::try_remove_all`).
const PURGE_CONCURRENCY: usize = 8;

/// Deletes every batch whose time is at least `delay` ago by the repository clock. The caller
/// holds the exclusive lock (prune).
pub async fn purge(repo: &Repository, delay: Duration) -> Result<Purged, EngineError> {
    let now = repo.clock().now_unix();
    let delay = delay.as_secs() as i64;
    let mut out = Purged::default();
    for (b, keys) in scan(repo).await?.0 {
        if now.saturating_sub(b.time) < delay {
            continue;
        }
        futures::stream::iter(&keys)
            .map(|k| async move {
                match repo.storage().delete(k).await {
                    Err(e) if !e.is_not_found() => Err(e),
                    _ => Ok(()),
                }
            })
            .buffer_unordered(PURGE_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        out.batches += 1;
        out.objects += b.objects;
        out.bytes += b.bytes;
    }
    Ok(out)
}

/// What [`undelete`] brought back (or, in a dry run, would).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Undeleted {
    pub dry_run: bool,
    pub batches: Vec<String>,
    /// Objects moved back to their names.
    pub restored: usize,
    /// Objects whose name held an object again (content-addressed: the same bytes); their grace
    /// copies were dropped.
    pub already_present: usize,
    pub bytes: u64,
    /// Backups whose manifests came back.
    pub backups: Vec<String>,
}

/// Moves everything in the grace area back, under the exclusive lock: packs, key envelopes and
/// index segments first, manifests last.
pub async fn undelete(
    repo: &Repository,
    lock_wait: Duration,
    dry_run: bool,
) -> Result<Undeleted, EngineError> {
    let run = async {
        let (found, _) = scan(repo).await?;
        let mut out = Undeleted {
            dry_run,
            ..Default::default()
        };
        let mut keys: Vec<(ObjectKey, ObjectKey)> = Vec::new();
        for (b, ks) in found {
            out.batches.push(b.name);
            out.backups.extend(b.backups);
            out.bytes += b.bytes;
            for k in ks {
                let original = layout::parse_trash(&k).expect("scanned").1;
                keys.push((k, original));
            }
        }
        out.backups.sort();
        if dry_run {
            out.restored = keys.len();
            return Ok(out);
        }
        // Manifests last: a backup reappears only once everything it may need is back.
        keys.sort_by_key(|(_, o)| o.as_str().starts_with(layout::BACKUPS));
        for (k, original) in keys {
            match repo.storage().stat(&original).await {
                Ok(_) => {
                    repo.storage().delete(&k).await?;
                    out.already_present += 1;
                }
                Err(e) if e.is_not_found() => {
                    repo.storage().rename(&k, &original).await?;
                    out.restored += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    };
    if dry_run {
        run.await
    } else {
        let guard = repo
            .lock(LockKind::Exclusive, "undelete", lock_wait)
            .await?;
        let result = run.await;
        guard.finish(result).await
    }
}
