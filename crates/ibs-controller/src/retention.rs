//! Retention in the controller: the pure plan of which backups a retention period removes (used to
//! warn before lowering retention), and the hourly cleanup that executes the engine's own
//! plan-then-execute `forget` (keep-days = retention) and then `prune`.
//!
//! Both follow the engine's rule: a backup is removed when it finished before `now - days`, except
//! the newest successful backup (or, if none succeeded, the newest partially successful one), which
//! is never deleted. A cleanup failure raises the "retention deletion failed" alert; a success closes it.

use crate::alerts::AlertKind;
use crate::controller::Controller;
use crate::model::{Job, JobStatus};

/// The backups (job ids) that a retention of `days` would remove at `now`. Pure.
pub fn would_delete(backups: &[Job], days: u32, now: i64) -> Vec<String> {
    let cutoff = now - days as i64 * 86_400;
    let committed: Vec<&Job> = backups
        .iter()
        .filter(|j| j.backup_id.is_some() && j.deleted_at.is_none())
        .filter(|j| {
            matches!(
                j.status,
                JobStatus::Succeeded | JobStatus::PartialSucceeded | JobStatus::Failed
            )
        })
        .collect();
    let newest = |st: JobStatus| {
        committed
            .iter()
            .filter(|j| j.status == st)
            .max_by_key(|j| (j.finished_at.unwrap_or(0), j.id.clone()))
            .map(|j| j.id.clone())
    };
    let protected = newest(JobStatus::Succeeded).or_else(|| newest(JobStatus::PartialSucceeded));
    let mut out: Vec<String> = committed
        .iter()
        .filter(|j| j.finished_at.unwrap_or(i64::MAX) < cutoff && Some(&j.id) != protected.as_ref())
        .map(|j| j.id.clone())
        .collect();
    out.sort();
    out
}

/// One retention cleanup: forget, then prune. Records the outcome as an alert.
pub(crate) async fn cleanup(ctl: &Controller) {
    let now = ctl.now();
    let result = run(ctl).await;
    let alerts = ctl.alerts();
    let r = match result {
        Ok(n) => {
            tracing::info!("retention cleanup removed {n} backup(s)");
            alerts.close_kind(AlertKind::RetentionFailed, "a later cleanup succeeded", now)
        }
        Err(m) => {
            tracing::warn!("retention cleanup failed: {m}");
            alerts
                .raise(AlertKind::RetentionFailed, &m, now)
                .map(|_| ())
        }
    };
    if let Err(e) = r {
        tracing::error!("recording the retention outcome: {e}");
    }
}

async fn run(ctl: &Controller) -> Result<usize, String> {
    let days = ctl
        .stored_location()
        .map_err(|e| e.to_string())?
        .retention_days;
    let (repo, state) = crate::runner::open_repository(ctl, false)
        .await
        .map_err(|f| f.message)?;
    let plan = ibs_engine::retention::forget(&repo, days, false, ctl.inner.lock_wait)
        .await
        .map_err(|e| format!("forget: {e}"))?;
    let now = ctl.now();
    for id in &plan.remove {
        if let Ok(Some(mut j)) = ctl.db().find_backup(id) {
            j.deleted_at = Some(now);
            let _ = ctl.db().put_job(&j);
        }
    }
    ibs_engine::retention::prune(&repo, &state, false, ctl.inner.lock_wait)
        .await
        .map_err(|e| format!("prune: {e}"))?;
    ctl.record_capacity(repo.storage()).await;
    Ok(plan.remove.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{JobKind, Trigger};

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
