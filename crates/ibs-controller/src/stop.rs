//! Stopping a running job: the operator's cancel (`POST /jobs/{id}/cancel`) and the job timeout.
//! A [`JobStop`] is created for each job that can be stopped (backups), kept in the gate's live
//! registry beside its progress, and handed to the job, which passes its [`CancelToken`] to the
//! engine and to its sources. The first reason given wins; the job reads it when it ends to record
//! `Canceled` (an operator's cancel) or `Failed` with "timed out after …" (the timeout).
//!
//! A stop takes effect only before the backup's manifest is committed; a job that committed
//! records its real outcome (see ADR 0022).

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
}
