//! Retention in the controller: the plan of which backups a retention period removes (used to
//! warn before lowering retention), and the hourly cleanup that forgets them and then prunes.
//!
//! The controller acts on its own records, never on the catalogs on the share (which anyone with
//! write access could edit): the rule is the engine's ([`ibs_engine::retention::plan_retention`])
//! applied to the database's backup jobs and their finish times. The cleanup marks the chosen
//! backups deleted in the database first, then deletes their manifests (it retries any recorded
//! deletion still listed), then prunes with the set of backups the database says exist in this
//! repository, so a listing that hides manifests makes prune refuse rather than delete their data.
//! A cleanup failure raises the "retention deletion failed" alert; a success closes it.
//!
//! Credentials (ADR 0040): the cleanup opens the location with its maintenance credential when
//! one is stored, else with the writer key. With the writer key on object-lock storage the
//! deletes are refused: the run deletes nothing and says why (log and the operation's detail).
//! With the maintenance credential, a refused delete is tamper evidence, and so is a rewritten
//! write-once object ([`super::tamper`]): both raise `repository-tampered`.

use crate::alerts::AlertKind;
use crate::context::JobContext;
use crate::jobs::tamper;
use crate::model::{Job, JobKind, JobOutcome};
use ibs_engine::retention::{Expected, PruneOptions, RetentionRecord};
use ibs_repo::manifest::BackupStatus;
use std::collections::BTreeSet;

/// How a committed backup job ended, in the engine's terms (`None`: not a committed backup).
fn outcome(j: &Job) -> Option<BackupStatus> {
    j.backup_id.as_ref()?;
    j.status.backup_outcome()
}

/// The backups (job ids) that a retention of `days` would remove at `now`. Pure.
pub fn would_delete(backups: &[Job], days: u32, now: i64) -> Vec<String> {
    let records: Vec<RetentionRecord> = backups
        .iter()
        .filter(|j| j.deleted_at.is_none())
        .filter_map(|j| {
            outcome(j).map(|status| RetentionRecord::new(j.id.clone(), j.finished_at, status))
        })
        .collect();
    ibs_engine::retention::plan_retention(&records, ibs_engine::retention::Keep::days(days), now)
        .remove
}

/// The backups the database says exist in repository `repo_id`: committed there, not deleted.
pub fn expected_backups(backups: &[Job], repo_id: &str) -> BTreeSet<String> {
    backups
        .iter()
        .filter(|j| j.deleted_at.is_none() && outcome(j).is_some())
        .filter(|j| j.repository_id.as_deref() == Some(repo_id))
        .filter_map(|j| j.backup_id.clone())
        .collect()
}

/// What a cleanup did: the backups it removed from the records, and what the operator should
/// know (deletes the storage refused, and why).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleaned {
    pub removed: usize,
    pub note: Option<String>,
}

impl std::fmt::Display for Cleaned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "removed {} backup(s)", self.removed)?;
        match &self.note {
            Some(n) => write!(f, "; {n}"),
            None => Ok(()),
        }
    }
}

/// The note of a cleanup whose deletes the writer key may not make (ADR 0040).
pub const WRITER_KEY_NOTE: &str = "this key may not delete on the object-lock bucket (an append-only writer key), so nothing was deleted: store the maintenance credential (`ibs location set --maintenance-key-file FILE`) or run `ibs repo prune` with the maintenance credential on a trusted host";

/// One retention cleanup: forget, then prune. Records the outcome as an alert and returns it (the
/// backups removed, or why it failed).
pub(crate) async fn cleanup(ctx: &JobContext) -> Result<Cleaned, String> {
    let now = ctx.now();
    let result = run(ctx).await;
    let alerts = &ctx.alerts;
    let r = match &result {
        Ok(n) => {
            tracing::info!("retention cleanup {n}");
            alerts.close_kind(AlertKind::RetentionFailed, "a later cleanup succeeded", now)
        }
        Err(m) => {
            tracing::warn!("retention cleanup failed: {m}");
            alerts.raise(AlertKind::RetentionFailed, m, now).map(|_| ())
        }
    };
    if let Err(e) = r {
        tracing::error!("recording the retention outcome: {e}");
    }
    result
}

/// Backup jobs the cleanup considers (all of them: the database keeps one row per backup).
const MAX_BACKUP_RECORDS: u32 = 1_000_000;

async fn run(ctx: &JobContext) -> Result<Cleaned, String> {
    let stored = ctx.stored_location().map_err(|e| e.to_string())?;
    let days = stored.retention_days;
    let maintenance = stored.maintenance_username.is_some();
    let (repo, state) = ctx
        .open_repository_for_maintenance()
        .await
        .map_err(|f| f.message)?;
    // On object-lock storage the location's lock must cover the retention (ADR 0035).
    if let Some(p) = repo.storage().lock_policy() {
        if p.retention.as_secs() < days as u64 * 86_400 {
            tracing::warn!(
                "retention: the location locks objects for {} s (lock_retention), less than the {days} days backups are kept; raise lock_retention",
                p.retention.as_secs()
            );
        }
    }
    let db = &ctx.db;
    let mut jobs = db
        .jobs(Some(JobKind::Backup), MAX_BACKUP_RECORDS)
        .map_err(|e| e.to_string())?;
    let now = ctx.now();
    let remove: BTreeSet<String> = would_delete(&jobs, days, now).into_iter().collect();
    // Recorded before the manifests go: a crash in between leaves a manifest the records no
    // longer expect (deleted by the next cleanup), never a record of one that is gone.
    for j in jobs.iter_mut().filter(|j| remove.contains(&j.id)) {
        j.deleted_at = Some(now);
        db.put_job(j).map_err(|e| e.to_string())?;
    }
    let forgotten: Vec<String> = jobs
        .iter()
        .filter(|j| j.deleted_at.is_some())
        .filter_map(|j| j.backup_id.clone())
        .collect();
    let forgot = ibs_engine::retention::forget_backups(&repo, &forgotten, ctx.lock_wait)
        .await
        .map_err(|e| format!("forget: {e}"))?;
    let expected = expected_backups(&jobs, &repo.config().id);
    let plan = ibs_engine::retention::prune(
        &repo,
        &state,
        PruneOptions {
            dry_run: false,
            lock_wait: ctx.lock_wait,
            expected: Expected::Backups(expected),
            grace: ctx.prune_grace,
            delete_delay: ctx.delete_delay,
            max_unused_percent: ctx.prune_max_unused_percent,
        },
    )
    .await
    .map_err(|e| format!("prune: {e}"))?;
    // On object-lock storage (ADR 0035) what is still locked stays until a later cleanup; with an
    // append-only writer key nothing can be deleted here: prune runs with the maintenance key
    // (stored in the controller, or `ibs repo prune` on a trusted host).
    let refused: Vec<String> = forgot
        .refused
        .iter()
        .map(|id| ibs_repo::layout::backup(id).to_string())
        .chain(plan.refused.iter().cloned())
        .collect();
    let mut note = None;
    if !refused.is_empty() && !maintenance {
        tracing::warn!(
            "retention: the storage refused {} deletes: {WRITER_KEY_NOTE}",
            refused.len()
        );
        note = Some(format!(
            "the storage refused {} deletes ({} backup(s) deleted from storage): {WRITER_KEY_NOTE}",
            refused.len(),
            forgot.deleted.len()
        ));
    }
    if let Some(p) = &plan.pending_plan {
        tracing::info!(
            "retention: prune marked {} packs and {} data-key envelopes (plan {p}); the next cleanup sweeps them once the {} backups running now have finished",
            plan.marked_packs,
            plan.marked_keys,
            plan.waiting_for.len()
        );
    }
    if !plan.locked.is_empty() {
        tracing::info!(
            "retention: {} objects are still under object lock and stay until a later cleanup",
            plan.locked.len()
        );
    }
    if tamper::applies(repo.storage()) {
        let findings = tamper::Findings {
            rewritten: tamper::rewritten(&repo, &state.keys.metadata)
                .await
                .map_err(|e| format!("tamper scan: {e}"))?,
            unlocked: Vec::new(),
            shortened: Vec::new(),
            // The maintenance credential may delete every version of what prune removes: a
            // refusal means someone weakened it or the bucket (policy, legal hold).
            refused: if maintenance { refused } else { Vec::new() },
            rejected_plans: plan
                .rejected_plans
                .iter()
                .map(|r| format!("plans/{}", r.name))
                .collect(),
        };
        tamper::record(ctx, &findings, "retention", false);
    }
    ctx.record_capacity(repo.storage()).await;
    Ok(Cleaned {
        removed: remove.len(),
        note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{JobStatus, Trigger};

    fn job(id: &str, status: JobStatus, finished: i64) -> Job {
        let mut j = Job::new(
            id.into(),
            JobKind::Backup,
            Trigger::Scheduled,
            status,
            finished,
        );
        j.finished_at = Some(finished);
        j.backup_id = Some(format!("b-{id}"));
        j
    }

    #[test]
    fn never_the_newest_success() {
        let day = 86_400;
        let jobs = vec![
            job("a", JobStatus::Succeeded, 0),
            job("b", JobStatus::Succeeded, day),
            job("c", JobStatus::Failed, 2 * day),
            job("d", JobStatus::Succeeded, 9 * day),
        ];
        assert_eq!(would_delete(&jobs, 7, 10 * day), vec!["a", "b", "c"]);
        assert_eq!(would_delete(&jobs, 1, 100 * day), vec!["a", "b", "c"]);
        assert!(would_delete(&jobs, 30, 10 * day).is_empty());
    }
}
