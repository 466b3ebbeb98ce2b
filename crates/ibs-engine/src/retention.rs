//! Retention: `forget` drops manifests by age and count, never the newest successful backup. The rule is
//! owned here ([`plan_retention`]); the controller applies it to its own database records, the
//! CLI to the catalogs it lists. `prune` (crate::prune, re-exported here) then deletes what no
//! manifest references. Both are a pure *plan* step followed by an *execute* step, so `--dry-run`
//! prints exactly what would happen.
//!
//! Catalog times are cleartext on the share. With the writer state, forget opens each manifest's
//! refs part, which authenticates a version-2 catalog, and keeps any backup whose catalog does not
//! authenticate (an edited time cannot make it forget a recent backup). Version-1 catalogs are
//! not authenticated; without the writer state nothing is.

use crate::ledger::Ledger;
use crate::state::WriterState;
use crate::EngineError;
use ibs_repo::clock::parse_rfc3339;
use ibs_repo::lock::LockKind;
use ibs_repo::manifest::{BackupStatus, Catalog};
use ibs_repo::{layout, Repository};
use serde::Serialize;
use std::collections::HashSet;
use std::time::Duration;

pub use crate::prune::{
    prune, Expected, Listed, PruneOptions, PrunePlan, DEFAULT_GRACE, DEFAULT_MAX_UNUSED_PERCENT,
};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ForgetPlan {
    pub remove: Vec<String>,
    pub keep: Vec<String>,
    /// The backup kept because it is the newest successful one, even if older than the limit.
    pub protected: Option<String>,
    /// Of `remove`, the manifests the storage would not delete yet (an object lock that has not
    /// expired, or a key without delete permission): forgotten, but still on storage until a
    /// later forget. Their data stays referenced, so prune keeps it.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub locked: Vec<String>,
}

/// One backup as the retention rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionRecord {
    pub id: String,
    /// When it finished, Unix seconds.
    pub finished: i64,
    pub status: BackupStatus,
}

impl RetentionRecord {
    /// A record whose finish time may be unknown (unreadable in a catalog, missing in a job
    /// record): unknown counts as the future, so the backup is kept.
    pub fn new(id: String, finished: Option<i64>, status: BackupStatus) -> Self {
        RetentionRecord {
            id,
            finished: finished.unwrap_or(i64::MAX),
            status,
        }
    }
}

/// What a retention keeps: backups younger than `days`, and the newest `last` usable backups
/// (succeeded or partially succeeded; failed ones are not restore points and do not count).
/// A backup either rule keeps is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Keep {
    pub days: u32,
    pub last: u32,
}

impl Keep {
    /// Keep by age only (the controller's policy).
    pub fn days(days: u32) -> Self {
        Keep { days, last: 0 }
    }
}

/// The retention rule: a backup is removed when it finished before `now - keep.days` and is not
/// one of the newest `keep.last` usable backups, except the newest successful backup (or, if none
/// succeeded, the newest partially successful one), which is never removed. "Newest" orders by
/// finish time, then id. Pure: the same inputs always give the same plan.
pub fn plan_retention(records: &[RetentionRecord], keep: Keep, now: i64) -> ForgetPlan {
    let cutoff = now - keep.days as i64 * 86_400;
    let newest = |status: BackupStatus| {
        records
            .iter()
            .filter(|r| r.status == status)
            .max_by(|a, b| (a.finished, &a.id).cmp(&(b.finished, &b.id)))
    };
    let protected = newest(BackupStatus::Succeeded)
        .or_else(|| newest(BackupStatus::PartialSucceeded))
        .map(|r| r.id.clone());
    let mut usable: Vec<&RetentionRecord> = records
        .iter()
        .filter(|r| r.status != BackupStatus::Failed)
        .collect();
    usable.sort_by(|a, b| (b.finished, &b.id).cmp(&(a.finished, &a.id)));
    let last: HashSet<&str> = usable
        .iter()
        .take(keep.last as usize)
        .map(|r| r.id.as_str())
        .collect();
    let mut plan = ForgetPlan {
        remove: Vec::new(),
        keep: Vec::new(),
        protected: protected.clone(),
        locked: Vec::new(),
    };
    for r in records {
        let kept = r.finished >= cutoff
            || last.contains(r.id.as_str())
            || Some(&r.id) == protected.as_ref();
        if kept {
            plan.keep.push(r.id.clone());
        } else {
            plan.remove.push(r.id.clone());
        }
    }
    plan.remove.sort();
    plan.keep.sort();
    plan
}

/// [`plan_retention`] over catalogs (an unreadable finish time counts as the future: kept).
pub fn plan_forget(catalogs: &[Catalog], keep: Keep, now: i64) -> ForgetPlan {
    let records: Vec<RetentionRecord> = catalogs
        .iter()
        .map(|c| RetentionRecord::new(c.backup_id.clone(), parse_rfc3339(&c.finished), c.status))
        .collect();
    plan_retention(&records, keep, now)
}

async fn exclusive<T>(
    repo: &Repository,
    what: &str,
    lock_wait: Duration,
    op: impl std::future::Future<Output = Result<T, EngineError>>,
) -> Result<T, EngineError> {
    // Forget only removes manifests: it runs beside backups (the prune lock, §19), and prune's
    // sweep re-reads the manifests, so what a running backup needs stays.
    let guard = repo.lock(LockKind::Prune, what, lock_wait).await?;
    let result = op.await;
    guard.finish(result).await
}

/// What [`forget_backups`] did with each backup it was asked to forget that the listing showed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// Backup ids whose manifest is gone.
    pub deleted: Vec<String>,
    /// Backup ids whose manifest is still under an object lock: kept until a later forget.
    pub locked: Vec<String>,
    /// Backup ids whose manifest's delete the storage refused for lack of permission: kept.
    pub refused: Vec<String>,
}

/// Removes the manifests of `ids` (into a grace-area batch: `ibs repo undelete` can bring them
/// back until a prune purges the batch after the delete delay); those the storage would not remove
/// (locked, or no delete permission) stay.
async fn delete_manifests(repo: &Repository, ids: &[String]) -> Result<Forgotten, EngineError> {
    let retire = crate::trash::Retire::new(repo, crate::trash::DEFAULT_DELETE_DELAY);
    let mut out = Forgotten::default();
    for id in ids {
        let key = layout::backup(id);
        let into = match crate::worm::try_remove(repo, &retire, &key).await? {
            crate::worm::Deleted::Yes => &mut out.deleted,
            crate::worm::Deleted::Locked => &mut out.locked,
            crate::worm::Deleted::Refused => &mut out.refused,
        };
        into.push(id.clone());
    }
    Ok(out)
}

/// Forgets the backups that `keep` does not keep, by their catalogs. With `writer`, catalogs are
/// authenticated first (see the module doc) and the ledger records what is forgotten before it is
/// deleted.
pub async fn forget(
    repo: &Repository,
    keep: Keep,
    dry_run: bool,
    lock_wait: Duration,
    writer: Option<&WriterState>,
) -> Result<ForgetPlan, EngineError> {
    let run = async {
        let mut catalogs = Vec::new();
        for id in repo.list_backup_ids().await? {
            match read_catalog(repo, &id, writer).await {
                Ok(c) => catalogs.push(c),
                Err(e) => tracing::warn!("forget: keeping backups/{id}: {e}"),
            }
        }
        let mut plan = plan_forget(&catalogs, keep, repo.clock().now_unix());
        if !dry_run {
            if let Some(w) = writer {
                Ledger::of(w).record_forgotten(&plan.remove)?;
            }
            let f = delete_manifests(repo, &plan.remove).await?;
            plan.locked = f.locked.into_iter().chain(f.refused).collect();
        }
        Ok(plan)
    };
    if dry_run {
        run.await
    } else {
        exclusive(repo, "forget", lock_wait, run).await
    }
}

/// A backup's catalog; with the writer state, only if it authenticates.
async fn read_catalog(
    repo: &Repository,
    id: &str,
    writer: Option<&WriterState>,
) -> Result<Catalog, EngineError> {
    let Some(w) = writer else {
        return Ok(repo.read_catalog(id).await?);
    };
    let m = repo.read_manifest(id).await?;
    // Opening the refs part authenticates the catalog (a version-3 part names its segments;
    // they need not be read for that).
    m.open_refs_part(&w.keys.metadata)?;
    Ok(m.catalog)
}

/// Forgets exactly the backups `ids` that the listing shows (the caller decided by its own
/// records).
pub async fn forget_backups(
    repo: &Repository,
    ids: &[String],
    lock_wait: Duration,
) -> Result<Forgotten, EngineError> {
    exclusive(repo, "forget", lock_wait, async {
        let wanted: HashSet<&String> = ids.iter().collect();
        let present: Vec<String> = repo
            .list_backup_ids()
            .await?
            .into_iter()
            .filter(|id| wanted.contains(id))
            .collect();
        delete_manifests(repo, &present).await
    })
    .await
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
            deployment_id: None,
            format_revision: None,
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
        let p = plan_forget(&c, Keep::days(7), now);
        assert_eq!(p.remove, vec!["old-failed", "old-ok"]);
        assert_eq!(p.protected.as_deref(), Some("newest-ok-but-old"));
        assert_eq!(p.keep, vec!["newest-ok-but-old", "recent-failed"]);
        // Keeping 0 days removes everything but the newest successful backup.
        let p = plan_forget(&c, Keep::days(0), now);
        assert_eq!(p.keep, vec!["newest-ok-but-old"]);
    }

    #[test]
    fn forget_protects_a_partial_backup_when_none_succeeded() {
        let now = 100 * DAY;
        let c = vec![
            cat("a", now - 30 * DAY, BackupStatus::PartialSucceeded),
            cat("b", now - 20 * DAY, BackupStatus::Failed),
        ];
        let p = plan_forget(&c, Keep::days(7), now);
        assert_eq!(p.remove, vec!["b"]);
        assert_eq!(p.protected.as_deref(), Some("a"));
    }

    #[test]
    fn keep_last_keeps_the_newest_usable_backups_beside_the_age_rule() {
        let now = 100 * DAY;
        let c = vec![
            cat("d1", now - 40 * DAY, BackupStatus::Succeeded),
            cat("d2", now - 30 * DAY, BackupStatus::PartialSucceeded),
            cat("d3", now - 25 * DAY, BackupStatus::Failed),
            cat("d4", now - 20 * DAY, BackupStatus::Succeeded),
            cat("d5", now - 2 * DAY, BackupStatus::Succeeded),
        ];
        // The newest two usable: d5 and d4 (the failed d3 does not count, is not kept).
        let p = plan_forget(&c, Keep { days: 0, last: 2 }, now);
        assert_eq!(p.keep, vec!["d4", "d5"]);
        assert_eq!(p.remove, vec!["d1", "d2", "d3"]);
        // Three reaches past the failed one to the partial d2.
        let p = plan_forget(&c, Keep { days: 0, last: 3 }, now);
        assert_eq!(p.keep, vec!["d2", "d4", "d5"]);
        // Either rule keeps: 26 days keep d3, d4 and d5; last 1 adds nothing more.
        let p = plan_forget(&c, Keep { days: 26, last: 1 }, now);
        assert_eq!(p.keep, vec!["d3", "d4", "d5"]);
        // A count above the number of backups keeps every usable one.
        let p = plan_forget(&c, Keep { days: 0, last: 50 }, now);
        assert_eq!(p.remove, vec!["d3"]);
    }

    #[test]
    fn keep_last_orders_by_finish_time_then_id() {
        let now = 100 * DAY;
        let c = vec![
            cat("b", now - DAY, BackupStatus::Succeeded),
            cat("a", now - DAY, BackupStatus::Succeeded),
            cat("c", now - 3 * DAY, BackupStatus::Succeeded),
        ];
        let p = plan_forget(&c, Keep { days: 0, last: 1 }, now);
        assert_eq!(p.keep, vec!["b"]);
        let p = plan_forget(&c, Keep { days: 0, last: 2 }, now);
        assert_eq!(p.keep, vec!["a", "b"]);
    }
}
