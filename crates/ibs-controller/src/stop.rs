//! Stopping a running job: the operator's cancel (`POST /jobs/{id}/cancel`) and the job timeout.
//! A [`JobStop`] is created for every job (backup, restore, verification, validation), kept in the
//! gate's live registry beside its progress, and handed to the job, which passes its
//! [`CancelToken`] to the engine and to its sources. The first reason given wins; the job reads it
//! when it ends ([`settle`]) to record `Canceled` (an operator's cancel) or `Failed` with "timed out
//! after …" and the general class (the timeout).
//!
//! A stop takes effect only before a backup's manifest is committed; a job that completed records
//! its real outcome (see ADR 0022). A stopped restore keeps the whole files it put in place (no
//! file is left with partial bytes); a stopped verification records no verdicts; a stopped
//! validation writes no report.

use crate::model::{Job, JobStatus};
use ibs_engine::CancelToken;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The default job timeout (as in the brief's system): 4 hours.
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(4 * 3600);
/// The configured job timeout must lie within these bounds (1 second to 7 days).
pub const JOB_TIMEOUT_BOUNDS_SECS: (u64, u64) = (1, 7 * 24 * 3600);

/// Why a job was stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// An operator cancelled it (the actor, as recorded in the audit trail).
    Canceled { by: String },
    /// It ran longer than the job timeout.
    TimedOut { after: Duration },
}

impl StopReason {
    /// The job record's `error` text.
    pub fn message(&self) -> String {
        match self {
            StopReason::Canceled { by } => format!("canceled by {by}"),
            StopReason::TimedOut { after } => format!("timed out after {}", human(*after)),
        }
    }
}

/// `4h`, `90m`, `1h 30m`, `2s`: a duration as the config file states it.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, s % 3600 / 60, s % 60);
    let mut parts = Vec::new();
    if h > 0 {
        parts.push(format!("{h}h"));
    }
    if m > 0 {
        parts.push(format!("{m}m"));
    }
    if sec > 0 || parts.is_empty() {
        parts.push(format!("{sec}s"));
    }
    parts.join(" ")
}

/// One stoppable job's stop signal and the reason it was stopped.
#[derive(Debug, Default)]
pub struct JobStop {
    token: CancelToken,
    reason: Mutex<Option<StopReason>>,
}

impl JobStop {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Stops the job for `reason`; false when it was already stopped (the first reason stays).
    pub fn stop(&self, reason: StopReason) -> bool {
        {
            let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
            if r.is_some() {
                return false;
            }
            *r = Some(reason);
        }
        self.token.cancel();
        true
    }

    pub fn reason(&self) -> Option<StopReason> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn token(&self) -> &CancelToken {
        &self.token
    }

    /// Stops the job with [`StopReason::TimedOut`] after `after` unless it ended before (the
    /// timer holds only a weak reference, so an ended job is not kept alive by it).
    pub fn arm_timeout(self: &Arc<Self>, after: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if let Some(s) = weak.upgrade() {
                if s.stop(StopReason::TimedOut { after }) {
                    tracing::warn!("a job ran longer than the job timeout ({})", human(after));
                }
            }
        });
    }
}

/// Records how a job that was stopped before it completed ends: `Canceled` with "canceled by …"
/// for an operator's cancel, `Failed` with "timed out after …" and the general class for the
/// timeout, `note` appended to the message; components that had not ended take the same status.
/// A job that was not stopped, or that completed (`Succeeded`) before the stop reached it, keeps
/// its outcome. Returns whether the stop decided the outcome.
pub(crate) fn settle(stop: &JobStop, job: &mut Job, note: &str) -> bool {
    let Some(reason) = stop.reason() else {
        return false;
    };
    if job.status == JobStatus::Succeeded {
        return false;
    }
    let status = match reason {
        StopReason::Canceled { .. } => {
            job.alert_class = None;
            JobStatus::Canceled
        }
        StopReason::TimedOut { .. } => {
            job.alert_class = Some(ibs_storage::AlertClass::General.as_str().into());
            JobStatus::Failed
        }
    };
    job.status = status;
    job.error = Some(format!("{}{note}", reason.message()));
    for c in &mut job.components {
        if !matches!(c.status, JobStatus::Succeeded | JobStatus::PartialSucceeded) {
            c.status = status;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reason_wins_and_messages_name_it() {
        let s = JobStop::new();
        assert!(s.stop(StopReason::Canceled {
            by: "token:ops".into()
        }));
        assert!(!s.stop(StopReason::TimedOut {
            after: Duration::from_secs(5)
        }));
        assert!(s.token().is_cancelled());
        assert_eq!(s.reason().unwrap().message(), "canceled by token:ops");
        assert_eq!(human(DEFAULT_JOB_TIMEOUT), "4h");
        assert_eq!(human(Duration::from_secs(5400)), "1h 30m");
        assert_eq!(human(Duration::from_secs(2)), "2s");
    }

    fn job_with(components: &[JobStatus], status: JobStatus) -> Job {
        let mut j = Job::new(
            "restore-1".into(),
            crate::model::JobKind::Restore,
            crate::model::Trigger::OnDemand,
            status,
            0,
        );
        j.components = components
            .iter()
            .enumerate()
            .map(|(i, st)| {
                serde_json::from_value(serde_json::json!({
                    "name": format!("c{i}"), "kind": "files", "status": st,
                    "essential_for_recovery": true,
                }))
                .unwrap()
            })
            .collect();
        j
    }

    #[test]
    fn settle_records_the_stop_unless_the_job_completed() {
        // Not stopped: the outcome stays.
        let mut j = job_with(&[JobStatus::Failed], JobStatus::Failed);
        assert!(!settle(&JobStop::new(), &mut j, "; note"));
        assert_eq!(j.status, JobStatus::Failed);

        // Canceled: the job and its unfinished components, no alert class; finished ones stay.
        let s = JobStop::new();
        s.stop(StopReason::Canceled { by: "admin".into() });
        let mut j = job_with(
            &[JobStatus::Succeeded, JobStatus::Failed],
            JobStatus::Failed,
        );
        j.alert_class = Some("general".into());
        assert!(settle(&s, &mut j, "; partial"));
        assert_eq!(j.status, JobStatus::Canceled);
        assert_eq!(j.error.as_deref(), Some("canceled by admin; partial"));
        assert_eq!(j.alert_class, None);
        assert_eq!(j.components[0].status, JobStatus::Succeeded);
        assert_eq!(j.components[1].status, JobStatus::Canceled);

        // Timed out: Failed with the reason and the general class.
        let s = JobStop::new();
        s.stop(StopReason::TimedOut {
            after: Duration::from_secs(90),
        });
        let mut j = job_with(&[JobStatus::Running], JobStatus::Failed);
        assert!(settle(&s, &mut j, ""));
        assert_eq!(j.status, JobStatus::Failed);
        assert_eq!(j.error.as_deref(), Some("timed out after 1m 30s"));
        assert_eq!(j.alert_class.as_deref(), Some("general"));
        assert_eq!(j.components[0].status, JobStatus::Failed);

        // A job that completed before the stop reached it keeps its outcome.
        let mut j = job_with(&[JobStatus::Succeeded], JobStatus::Succeeded);
        assert!(!settle(&s, &mut j, ""));
        assert_eq!(j.status, JobStatus::Succeeded);
        assert_eq!(j.error, None);
    }
}
