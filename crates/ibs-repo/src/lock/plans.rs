//! What locks say about prune plans (§19, ADR 0044): the plans an append holder lists and reads
//! once its lock is held, and the rule that stops a backup which could not open a plan that a
//! sweeper announces.
//!
//! A plan that does not open is honoured by nobody: a sweeper that cannot open it ignores its marks
//! (which only keeps more), and a backup that cannot open it does not name it, so a sweeper that
//! *can* open it waits for that backup (the sweep condition). What the sweep condition cannot see
//! is a backup that becomes held after the sweeper checked it; such a backup still lists the plan
//! (it is deleted only after the sweep), and if it cannot open it either (a transport fault, a
//! server that lies to one client), it must not go on deduplicating against what the plan may
//! mark. So a sweeper announces the plans it sweeps in its prune lock *before* it reads the locks,
//! and a backup that skipped a plan reads the locks *after* its held write and stops if some prune
//! lock announces that plan (or may: a prune lock of a build that announces nothing, or a lock
//! object that does not parse). The order is the one of §19's invariant with "plan written"
//! replaced by "sweep announced": either the sweeper sees the backup held without the plan and
//! waits, or the backup's look follows the announcement and sees it.

use super::{observe, Identity, LockInfo, LockKind, LockTiming, Phase};
use crate::crypto::SymKey;
use crate::error::{RepoError, Result};
use crate::layout;
use crate::plan::{PlanReading, PrunePlanObject, RejectedPlan};
use ibs_storage::{DynStorage, ObjectKey};

/// The names of the prune plans on storage, sorted.
pub async fn list_plans(storage: &DynStorage) -> Result<Vec<String>> {
    let mut names: Vec<String> = storage
        .list(layout::PLANS)
        .await?
        .into_iter()
        .filter_map(|o| layout::parse_plan(&o.key).map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

/// Reads the plans `names`: the marks of those that open under `metadata_key`, and those that do
/// not ([`PlanReading::rejected`]). A plan that is gone was swept and dropped (what it marked is
/// in no index segment read afterwards). A plan of a newer version that opens, and storage errors,
/// fail the call.
pub async fn read_plans(
    storage: &DynStorage,
    names: &[String],
    metadata_key: &SymKey,
) -> Result<PlanReading> {
    let mut reading = PlanReading::default();
    for n in names {
        let read = match storage.get(&layout::plan(n)).await {
            Ok(b) => PrunePlanObject::from_bytes(n, &b, metadata_key),
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        reading.take(n, read)?;
    }
    for r in &reading.rejected {
        tracing::warn!(
            "prune plan plans/{} is ignored: it does not open under the metadata key ({})",
            r.name,
            r.reason
        );
    }
    Ok(reading)
}

/// An append holder's look at the plans, right after its held write: list, read, and, if it
/// skipped any, make sure no sweep of one of them may be under way (see the module doc).
pub(super) async fn note(
    storage: &DynStorage,
    metadata_key: &SymKey,
    me: &Identity,
    t: &LockTiming,
    own: &ObjectKey,
) -> Result<PlanReading> {
    let names = list_plans(storage).await?;
    let reading = read_plans(storage, &names, metadata_key).await?;
    if reading.rejected.is_empty() {
        return Ok(reading);
    }
    let view = observe::look(storage, me, Some(own), t.stale, false).await?;
    if let Some(holder) = sweeper_of(&view.others, &reading.rejected) {
        return Err(RepoError::Locked { holder });
    }
    Ok(reading)
}

/// The lock that may be sweeping one of the plans `skipped`, described for the error: a prune lock
/// announcing one of them, a held prune lock that announces nothing (a build before ADR 0044), or
/// a lock object that does not parse (a newer build's).
pub(super) fn sweeper_of(
    others: &[(ObjectKey, LockInfo)],
    skipped: &[RejectedPlan],
) -> Option<String> {
    others.iter().find_map(|(_, l)| {
        let why = if l.unreadable {
            skipped.first()
        } else if l.kind != LockKind::Prune {
            None
        } else {
            match &l.sweeping {
                Some(s) => skipped.iter().find(|r| s.contains(&r.name)),
                None if l.phase == Phase::Held => skipped.first(),
                None => None,
            }
        }?;
        Some(format!(
            "{} may be sweeping prune plan {}, which this backup could not open ({}); back up again once it ends",
            l.describe(),
            why.name,
            why.reason
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(kind: LockKind, phase: Phase, sweeping: Option<Vec<String>>) -> LockInfo {
        LockInfo {
            kind,
            operation: "prune".into(),
            host: "h".into(),
            pid: 1,
            pid_start: None,
            boot_id: None,
            pid_ns: None,
            created: 0,
            refreshed: 0,
            seq: 1,
            ticket: 1,
            phase,
            plans: Vec::new(),
            sweeping,
            unreadable: false,
        }
    }

    #[test]
    fn only_a_prune_lock_that_may_sweep_a_skipped_plan_stops_a_backup() {
        let skipped = vec![RejectedPlan {
            name: "aa".into(),
            reason: "does not authenticate".into(),
        }];
        let k = layout::lock("x");
        let stops = |l: LockInfo| sweeper_of(&[(k.clone(), l)], &skipped).is_some();
        let p = LockKind::Prune;
        assert!(stops(lock(p, Phase::Held, Some(vec!["aa".into()]))));
        assert!(!stops(lock(p, Phase::Held, Some(vec!["bb".into()]))));
        assert!(!stops(lock(p, Phase::Held, Some(vec![]))));
        // A build that announces nothing may sweep anything once held.
        assert!(stops(lock(p, Phase::Held, None)));
        assert!(!stops(lock(p, Phase::Waiting, None)));
        // Other backups never stop one.
        assert!(!stops(lock(LockKind::Append, Phase::Held, None)));
        // A lock object that does not parse may be a newer build's prune.
        let mut u = lock(LockKind::Exclusive, Phase::Held, None);
        u.unreadable = true;
        assert!(stops(u));
        // Nothing skipped: nothing stops it.
        let any = lock(p, Phase::Held, None);
        assert!(sweeper_of(&[(k.clone(), any)], &[]).is_none());
    }
}
