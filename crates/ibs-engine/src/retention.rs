//! Retention: `forget` (drop manifests older than N days, never the newest successful backup) and
//! `prune` (delete what no manifest references, repack partly used packs by copying sealed chunks —
//! no decryption). Both are a pure *plan* step followed by an *execute* step, so `--dry-run` prints
//! exactly what would happen.
//!
//! Prune's crash safety: new packs → new full index segment → delete old segments → delete packs →
//! delete unused data-key envelopes. At every point the index on storage covers every chunk that any
//! manifest references. Prune refuses to run if any manifest cannot be read, because it could not know
//! what that backup needs.
//!
//! Damaged packs (those with a `damaged/` marker): prune builds its index knowing them, so a chunk
//! with a healthy copy (stored again by a self-healing backup) is kept only in the healthy pack. A
//! damaged pack none of whose still-referenced chunks lacks a healthy copy therefore has nothing
//! live and is deleted, together with its marker. A damaged pack that still holds the only copy of
//! some referenced chunk is kept as it is (never repacked: its bytes cannot be trusted as a whole),
//! and so is its marker. Markers of packs that are neither indexed nor stored are removed.

use crate::state::WriterState;
use crate::EngineError;
use futures::StreamExt;
use ibs_repo::clock::parse_rfc3339;
use ibs_repo::ids::{ChunkId, KeyId, PackId};
use ibs_repo::index::{Index, PackRecord};
use ibs_repo::lock::LockKind;
use ibs_repo::manifest::{BackupStatus, Catalog};
use ibs_repo::pack::{verify_pack, PackBuilder, PackEntry};
use ibs_repo::{layout, Repository};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ForgetPlan {
    pub remove: Vec<String>,
    pub keep: Vec<String>,
    /// The backup kept because it is the newest successful one, even if older than the limit.
    pub protected: Option<String>,
}

/// Which backups `forget --keep-days` removes. Pure: the same inputs always give the same plan.
pub fn plan_forget(catalogs: &[Catalog], keep_days: u32, now: i64) -> ForgetPlan {
    let cutoff = now - keep_days as i64 * 86_400;
    let finished = |c: &Catalog| parse_rfc3339(&c.finished).unwrap_or(i64::MAX);
    let newest = |status: BackupStatus| {
        catalogs
            .iter()
            .filter(|c| c.status == status)
            .max_by(|a, b| (finished(a), &a.backup_id).cmp(&(finished(b), &b.backup_id)))
    };
    let protected = newest(BackupStatus::Succeeded)
        .or_else(|| newest(BackupStatus::PartialSucceeded))
        .map(|c| c.backup_id.clone());
    let mut plan = ForgetPlan {
        remove: Vec::new(),
        keep: Vec::new(),
        protected: protected.clone(),
    };
    for c in catalogs {
        if finished(c) < cutoff && Some(&c.backup_id) != protected.as_ref() {
            plan.remove.push(c.backup_id.clone());
        } else {
            plan.keep.push(c.backup_id.clone());
        }
    }
    plan.remove.sort();
    plan.keep.sort();
    plan
}

pub async fn forget(
    repo: &Repository,
    keep_days: u32,
    dry_run: bool,
    lock_wait: Duration,
) -> Result<ForgetPlan, EngineError> {
    let guard = if dry_run {
        None
    } else {
        Some(repo.lock(LockKind::Exclusive, "forget", lock_wait).await?)
    };
    let result = async {
        let mut catalogs = Vec::new();
        for id in repo.list_backup_ids().await? {
            match repo.read_catalog(&id).await {
                Ok(c) => catalogs.push(c),
                Err(e) => tracing::warn!("forget: skipping backups/{id}: {e}"),
            }
        }
        let plan = plan_forget(&catalogs, keep_days, repo.clock().now_unix());
        if !dry_run {
            for id in &plan.remove {
                match repo.storage().delete(&layout::backup(id)).await {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(plan)
    }
    .await;
    match guard {
        Some(g) => g.finish(result).await,
        None => result,
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct PrunePlan {
    pub packs_total: usize,
    pub delete: Vec<PackId>,
    pub repack: Vec<PackId>,
    pub unindexed: Vec<PackId>,
    pub keep: usize,
    pub bytes_freed_estimate: u64,
    pub chunks_used: usize,
    pub chunks_unused: usize,
    pub delete_keys: Vec<KeyId>,
    /// Packs that fail their hash check: never repacked (their contents cannot be trusted).
    pub damaged: Vec<PackId>,
    /// Damage markers removed with their pack (or because their pack is gone).
    pub delete_markers: Vec<PackId>,
}

/// A pack is repacked when more than this share of its bytes is unused.
pub const REPACK_UNUSED_RATIO: f64 = 0.2;

/// Decides what prune does. `records` are the index's packs; `listed` what storage holds.
pub fn plan_prune(
    records: &[PackRecord],
    index: &Index,
    used: &HashSet<ChunkId>,
    listed: &HashMap<PackId, u64>,
    manifest_keys: &HashSet<KeyId>,
    envelopes: &[KeyId],
) -> (PrunePlan, Vec<PackRecord>) {
    let mut plan = PrunePlan {
        packs_total: listed.len(),
        ..Default::default()
    };
    let mut seen = HashSet::new();
    let mut live_records = Vec::new();
    let mut live_keys: HashSet<KeyId> = manifest_keys.clone();
    for rec in records {
        if !seen.insert(rec.id) {
            continue;
        }
        let live: Vec<PackEntry> = rec
            .entries
            .iter()
            .filter(|e| used.contains(&e.id) && index.get(&e.id).is_some_and(|l| l.pack == rec.id))
            .copied()
            .collect();
        plan.chunks_used += live.len();
        plan.chunks_unused += rec.entries.len() - live.len();
        let live_bytes: u64 = live.iter().map(|e| e.length as u64).sum();
        if live.is_empty() {
            plan.delete.push(rec.id);
            plan.bytes_freed_estimate += rec.length;
        } else if !index.is_damaged(&rec.id)
            && (rec.length - live_bytes.min(rec.length)) as f64
                > REPACK_UNUSED_RATIO * rec.length as f64
        {
            plan.repack.push(rec.id);
            plan.bytes_freed_estimate += rec.length - live_bytes;
            live_keys.extend(live.iter().map(|e| e.key_id));
            live_records.push(PackRecord {
                id: rec.id,
                length: rec.length,
                entries: live,
            });
        } else {
            plan.keep += 1;
            live_keys.extend(live.iter().map(|e| e.key_id));
            live_records.push(PackRecord {
                id: rec.id,
                length: rec.length,
                entries: live,
            });
        }
    }
    for (id, size) in listed {
        if !seen.contains(id) {
            plan.unindexed.push(*id);
            plan.bytes_freed_estimate += size;
        }
    }
    plan.delete.sort();
    plan.repack.sort();
    plan.unindexed.sort();
    // Envelopes no kept chunk and no manifest uses, including those of backups that died before
    // committing anything.
    plan.delete_keys = envelopes
        .iter()
        .chain(index.key_ids())
        .filter(|k| !live_keys.contains(k))
        .copied()
        .collect();
    plan.delete_keys.sort();
    plan.delete_keys.dedup();
    (plan, live_records)
}

pub async fn prune(
    repo: &Repository,
    state: &WriterState,
    dry_run: bool,
    lock_wait: Duration,
) -> Result<PrunePlan, EngineError> {
    repo.check_keys(&state.keys)?;
    let guard = repo.lock(LockKind::Exclusive, "prune", lock_wait).await?;
    let result = prune_locked(repo, state, dry_run).await;
    guard.finish(result).await
}

async fn prune_locked(
    repo: &Repository,
    state: &WriterState,
    dry_run: bool,
) -> Result<PrunePlan, EngineError> {
    let mk = &state.keys.metadata;
    let mut used = HashSet::new();
    let mut manifest_keys = HashSet::new();
    for id in repo.list_backup_ids().await? {
        let m = repo.read_manifest(&id).await.map_err(|e| {
            EngineError::State(format!("prune stopped: backup {id} cannot be read ({e}); nothing was deleted. Run `ibs repo check`"))
        })?;
        used.extend(m.open_refs(mk)?);
        manifest_keys.insert(KeyId::from_hex(&m.catalog.data_key_id)?);
    }
    let segments = repo.load_segments(mk).await?;
    let records: Vec<PackRecord> = segments
        .iter()
        .flat_map(|(_, r)| r.iter().cloned())
        .collect();
    let damaged = repo.damaged_packs().await?;
    // Where a chunk has copies under several data keys (a backup after a certificate change
    // sealed it again), the copy kept is the one new backups depend on (keysel).
    let index = crate::keysel::prune_index(repo, state, &damaged, &records).await?;
    let listed: HashMap<PackId, u64> = repo.list_packs().await?;
    let envelopes: Vec<KeyId> = repo
        .storage()
        .list(layout::DATA_KEYS)
        .await?
        .iter()
        .filter_map(|o| layout::parse_data_key(&o.key))
        .collect();
    let (mut plan, mut live) =
        plan_prune(&records, &index, &used, &listed, &manifest_keys, &envelopes);
    let indexed: HashSet<PackId> = index.packs().map(|(p, _)| p).collect();
    plan.delete_markers = damaged
        .iter()
        .filter(|p| {
            plan.delete.contains(p)
                || plan.unindexed.contains(p)
                || (!indexed.contains(p) && !listed.contains_key(p))
        })
        .copied()
        .collect();
    plan.delete_markers.sort();
    if dry_run {
        return Ok(plan);
    }

    // 1. Repack: copy the live sealed chunks of partly used packs into new packs.
    let repack: HashSet<PackId> = plan.repack.iter().copied().collect();
    let target = repo.config().pack_target_size as usize;
    let mut builder = PackBuilder::new(target);
    let mut new_records = Vec::new();
    let mut kept_damaged = Vec::new();
    let mut fetched = futures::stream::iter(
        live.iter()
            .filter(|r| repack.contains(&r.id))
            .cloned()
            .collect::<Vec<_>>(),
    )
    .map(|rec| async move { (repo.storage().get(&layout::pack(&rec.id)).await, rec) })
    .buffered(2);
    while let Some((bytes, rec)) = fetched.next().await {
        let bytes = bytes?;
        if verify_pack(&rec.id, &bytes, None).is_err() {
            kept_damaged.push(rec.id);
            continue;
        }
        for e in &rec.entries {
            builder.add(
                e.id,
                e.encoding,
                e.raw_length,
                e.key_id,
                &bytes[e.offset as usize..(e.offset + e.length) as usize],
            );
            if builder.len() >= target {
                let (id, data, entries) =
                    std::mem::replace(&mut builder, PackBuilder::new(target)).finish(mk);
                let length = data.len() as u64;
                repo.put_pack(&id, data).await?;
                new_records.push(PackRecord {
                    id,
                    length,
                    entries,
                });
            }
        }
    }
    drop(fetched);
    if !builder.is_empty() {
        let (id, data, entries) = builder.finish(mk);
        let length = data.len() as u64;
        repo.put_pack(&id, data).await?;
        new_records.push(PackRecord {
            id,
            length,
            entries,
        });
    }
    plan.repack.retain(|p| !kept_damaged.contains(p));
    plan.damaged = kept_damaged;
    let repacked: HashSet<PackId> = plan.repack.iter().copied().collect();
    live.retain(|r| !repacked.contains(&r.id));
    live.extend(new_records);

    // 2. One new segment for everything that stays, then 3. drop the old segments.
    let old_segments: Vec<String> = segments.into_iter().map(|(n, _)| n).collect();
    let mut new_names = HashSet::new();
    for group in live.chunks(2000) {
        new_names.insert(repo.write_index(group, mk).await?.0);
    }
    for name in old_segments.iter().filter(|n| !new_names.contains(*n)) {
        delete_ok(repo, &layout::index(name)).await?;
    }
    // 4. Packs nothing needs any more.
    for id in plan
        .delete
        .iter()
        .chain(plan.repack.iter())
        .chain(plan.unindexed.iter())
    {
        delete_ok(repo, &layout::pack(id)).await?;
    }
    // 5. Markers of damaged packs that are gone (after their pack: a crash in between leaves a
    //    marker without a pack, which the next prune removes).
    for id in &plan.delete_markers {
        repo.delete_damage_marker(id).await?;
    }
    // 6. Envelopes of data keys no chunk and no manifest uses.
    for k in &plan.delete_keys {
        delete_ok(repo, &layout::data_key(k)).await?;
    }
    let _ = repo
        .storage()
        .remove_stale_temporaries(Duration::from_secs(3600))
        .await;
    Ok(plan)
}

async fn delete_ok(repo: &Repository, key: &ibs_storage::ObjectKey) -> Result<(), EngineError> {
    match repo.storage().delete(key).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ibs_repo::clock::rfc3339;

    fn cat(id: &str, finished: i64, status: BackupStatus) -> Catalog {
        Catalog {
            format_version: 1,
            backup_id: id.into(),
            repository_id: String::new(),
            started: rfc3339(finished),
            finished: rfc3339(finished),
            duration_ms: 0,
            status,
            sources: vec![],
            encryption_mode: "certificate".into(),
            certificate_thumbprint: None,
            data_key_id: String::new(),
            bytes_read: 0,
            bytes_new: 0,
            bytes_stored: 0,
            hostname: String::new(),
            ibs_version: String::new(),
            recovery_ready: None,
        }
    }

    const DAY: i64 = 86_400;

    #[test]
    fn forget_keeps_recent_and_the_newest_successful() {
        let now = 100 * DAY;
        let c = vec![
            cat("old-ok", now - 20 * DAY, BackupStatus::Succeeded),
            cat("old-failed", now - 15 * DAY, BackupStatus::Failed),
            cat("newest-ok-but-old", now - 10 * DAY, BackupStatus::Succeeded),
            cat("recent-failed", now - DAY, BackupStatus::Failed),
        ];
        let p = plan_forget(&c, 7, now);
        assert_eq!(p.remove, vec!["old-failed", "old-ok"]);
        assert_eq!(p.protected.as_deref(), Some("newest-ok-but-old"));
        assert_eq!(p.keep, vec!["newest-ok-but-old", "recent-failed"]);
        // Keeping 0 days removes everything but the newest successful backup.
        let p = plan_forget(&c, 0, now);
        assert_eq!(p.keep, vec!["newest-ok-but-old"]);
    }

    #[test]
    fn forget_protects_a_partial_backup_when_none_succeeded() {
        let now = 100 * DAY;
        let c = vec![
            cat("a", now - 30 * DAY, BackupStatus::PartialSucceeded),
            cat("b", now - 20 * DAY, BackupStatus::Failed),
        ];
        let p = plan_forget(&c, 7, now);
        assert_eq!(p.remove, vec!["b"]);
        assert_eq!(p.protected.as_deref(), Some("a"));
    }
}
