//! The scheduling decision, as a pure function of the persisted schedule, the time and the
//! conditions. The controller calls [`tick`] periodically; tests call it with a `ManualClock`.
//!
//! Rules:
//! - A scheduled run is due at `next_due`. When a tick finds it due, `next_due` moves to the first
//!   slot after now: after downtime, missed slots collapse into **one** run, not N.
//! - On-demand backups never touch the schedule.
//! - A due slot that cannot run is recorded as a Skipped job with its reason: automatic backups
//!   disabled, a maintenance operation active (or failed), a job running, or no location configured.
//!   The slot is consumed either way, so re-enabling never causes a burst of catch-up runs.
//! - Changing the frequency keeps the slot anchor: the next run is the previous slot plus the new
//!   period (or now, if that is already past).

use crate::model::GateKind;
use serde::{Deserialize, Serialize};

pub const META_KEY: &str = "schedule";
/// The skip reason of a due slot with no location configured (it also raises the
/// `share-not-configured` alert).
pub const NOT_CONFIGURED: &str = "no backup location is configured";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleState {
    /// Unix seconds of the next scheduled run.
    pub next_due: i64,
    /// When the last scheduled slot was consumed (run or skipped).
    pub last_slot: Option<i64>,
}

impl ScheduleState {
    /// A schedule whose first run is due immediately.
    pub fn starting_now(now: i64) -> Self {
        ScheduleState {
            next_due: now,
            last_slot: None,
        }
    }
}

/// What else the decision depends on.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    pub scheduler_enabled: bool,
    /// The skip reason of an active or failed maintenance operation.
    pub maintenance: Option<String>,
    /// The id and kind of the job holding the gate.
    pub running: Option<(String, GateKind)>,
    pub configured: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    NotDue,
    Run,
    Skip(String),
}

pub fn period(frequency_hours: u32) -> i64 {
    frequency_hours.max(1) as i64 * 3600
}

/// Decides what a tick at `now` does and advances `state` when a slot is consumed.
pub fn tick(state: &mut ScheduleState, now: i64, frequency_hours: u32, c: &Conditions) -> Decision {
    if now < state.next_due {
        return Decision::NotDue;
    }
    let p = period(frequency_hours);
    let missed = (now - state.next_due) / p;
    state.next_due += (missed + 1) * p;
    state.last_slot = Some(now);
    if !c.scheduler_enabled {
        Decision::Skip("automatic backups are disabled".into())
    } else if let Some(m) = &c.maintenance {
        Decision::Skip(m.clone())
    } else if let Some((id, kind)) = &c.running {
        Decision::Skip(format!("{kind} {id} is running"))
    } else if !c.configured {
        Decision::Skip(NOT_CONFIGURED.into())
    } else {
        Decision::Run
    }
}

/// Re-anchors the schedule after a frequency change.
pub fn reschedule(state: &mut ScheduleState, old_hours: u32, new_hours: u32, now: i64) {
    let anchor = state.next_due - period(old_hours);
    state.next_due = (anchor + period(new_hours)).max(now);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Conditions {
        Conditions {
            scheduler_enabled: true,
            configured: true,
            ..Default::default()
        }
    }

    #[test]
    fn interval_and_missed_runs() {
        let mut s = ScheduleState::starting_now(1000);
        assert_eq!(tick(&mut s, 1000, 12, &ok()), Decision::Run);
        assert_eq!(s.next_due, 1000 + 12 * 3600);
        assert_eq!(tick(&mut s, 1000 + 3600, 12, &ok()), Decision::NotDue);
        // Down for five days: one run, then back on the grid.
        let late = 1000 + 5 * 86400 + 17;
        assert_eq!(tick(&mut s, late, 12, &ok()), Decision::Run);
        assert_eq!(tick(&mut s, late + 1, 12, &ok()), Decision::NotDue);
        assert!(s.next_due > late && s.next_due <= late + 12 * 3600);
        assert_eq!((s.next_due - 1000) % (12 * 3600), 0);
    }

    #[test]
    fn skips_consume_the_slot() {
        let mut s = ScheduleState::starting_now(0);
        let c = Conditions {
            maintenance: Some("maintenance: update in progress".into()),
            ..ok()
        };
        assert_eq!(
            tick(&mut s, 0, 4, &c),
            Decision::Skip("maintenance: update in progress".into())
        );
        assert_eq!(tick(&mut s, 1, 4, &ok()), Decision::NotDue);
        let off = Conditions {
            scheduler_enabled: false,
            ..ok()
        };
        assert!(
            matches!(tick(&mut s, 4 * 3600, 4, &off), Decision::Skip(r) if r.contains("disabled"))
        );
        let busy = Conditions {
            running: Some(("j1".into(), GateKind::Backup)),
            ..ok()
        };
        assert_eq!(
            tick(&mut s, 8 * 3600, 4, &busy),
            Decision::Skip("backup j1 is running".into())
        );
    }

    #[test]
    fn reschedule_keeps_anchor() {
        let mut s = ScheduleState {
            next_due: 12 * 3600,
            last_slot: Some(0),
        };
        reschedule(&mut s, 12, 4, 100);
        assert_eq!(s.next_due, 4 * 3600);
        reschedule(&mut s, 4, 1, 10 * 3600);
        assert_eq!(s.next_due, 10 * 3600);
    }
}
