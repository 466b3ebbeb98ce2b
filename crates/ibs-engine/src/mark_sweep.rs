//! Prune beside running backups, in two phases (`docs/design/repository-format.md` §19, ADR 0039).
//! This module owns the protocol: when to mark, when a sweep may run, and what a run reports;
//! [`crate::prune`] owns what one pass computes and retires.
//!
//! - **Mark.** Under the `prune` lock (compatible with `append`), compute what is unreferenced
//!   (packs to delete or repack, unindexed packs, unused data-key envelopes) and write it as a
//!   sealed plan `plans/<name>`. Nothing is retired.
//! - **Backups** list and read `plans/` right after their append lock becomes held, record the
//!   names of the plans that open in the lock, and build their index without any marked pack, so
//!   they never depend on a marked chunk (they store it again).
//! - **Sweep.** "The plans" are the plans that open under the metadata key for the sweeper; one
//!   that does not is honoured by nobody, reported ([`PrunePlan::rejected_plans`]), never blocks,
//!   and is deleted after a sweep where the storage allows it (ADR 0044). The sweeper announces the
//!   plans in its prune lock ([`ibs_repo::lock::LockGuard::announce_sweep`]), then sweeps only
//!   once every held append lock names all of them ([`ibs_repo::lock::appends_unaware_of`] is
//!   empty): a backup that does not is one that may have loaded the index before the plan
//!   existed, could not open it, or a build that does not read plans. Then one pass re-reads
//!   every manifest (those committed since the mark included) and retires only marked objects
//!   that are still unreferenced; every unmarked pack is kept whole. Then the plans are dropped; a
//!   plan whose delete is refused or locked stays and is swept again (idempotent) by later runs,
//!   which still mark.
//!
//! Invariant (why the order is safe): a prune writes its plan *before* it reads the locks, and a
//! backup makes its lock held *before* it lists the plans. So for any backup, either the sweep
//! reads its lock held (and waits unless the lock names the plan), or it read the lock before the
//! held write, so the backup's plan listing comes after the plan was written and shows it; a
//! backup whose lock is gone committed its manifest before releasing it (the sweep reads it) or
//! lost its lock (and stopped writing before anyone could judge it stale). A backup whose look at
//! the plans follows the sweeper's check and cannot open a plan the sweeper opened sees the
//! sweeper's announcement, which precedes that check, and stops.
//!
//! A run: sweep the plans an earlier run left if that is allowed now or becomes allowed before
//! `lock_wait` ends (otherwise report them pending and stop); then mark, and sweep at once when no
//! backup is running (the common, quiet case: one run does what prune always did), or wait for the
//! running ones up to `lock_wait`, or leave the plan for the next prune. With nothing to mark, the
//! pass still rewrites the index into one segment (keeping every pack whole), which is safe beside
//! backups. A dry run writes nothing and waits for nothing: it reports the sweep the run would do
//! now, or the plan it would leave pending; after sweeping an earlier plan a real run also marks
//! again, which a dry run does not show.

use crate::prune::{prune_pass, PruneOptions, PrunePlan};
use crate::state::WriterState;
use crate::EngineError;
use ibs_repo::lock::{appends_unaware_of, LockGuard, LockKind, LockTiming};
use ibs_repo::plan::{Marks, PrunePlanObject, RejectedPlan};
use ibs_repo::Repository;
use tokio::time::Instant;

pub async fn prune(
    repo: &Repository,
    state: &WriterState,
    opts: PruneOptions,
) -> Result<PrunePlan, EngineError> {
    repo.check_keys(&state.keys)?;
    let deadline = Instant::now()
        .checked_add(opts.lock_wait)
        .unwrap_or_else(|| Instant::now() + std::time::Duration::from_secs(100 * 365 * 86_400));
    let guard = repo.lock(LockKind::Prune, "prune", opts.lock_wait).await?;
    let result = run(repo, state, &opts, &guard, deadline).await;
    guard.finish(result).await
}

async fn run(
    repo: &Repository,
    state: &WriterState,
    opts: &PruneOptions,
    guard: &LockGuard,
    deadline: Instant,
) -> Result<PrunePlan, EngineError> {
    let own = guard.name();
    let mk = &state.keys.metadata;
    let deadline = if opts.dry_run {
        Instant::now()
    } else {
        deadline
    };
    let mut out = PrunePlan::default();

    // 1. Plans an earlier mark left: those that open; the others are honoured by nobody.
    let reading = repo.read_plans(&repo.list_plans().await?, mk).await?;
    let mut rejected = reading.rejected;
    out.rejected_plans.clone_from(&rejected);
    let marks = reading.marks;
    if !marks.is_empty() {
        let names = marks.names.clone();
        if !opts.dry_run {
            guard.announce_sweep(&names).await?;
        }
        let waiting = wait_sweepable(repo, &names, own, deadline).await?;
        if !waiting.is_empty() {
            pending(&mut out, &marks, names.join(","), waiting);
            return finish_unswept(repo, opts, out).await;
        }
        absorb(&mut out, sweep(repo, state, opts, &marks, &rejected).await?);
        if opts.dry_run {
            return Ok(out);
        }
        // Dropped (or left, locked) with the plans just swept.
        rejected.clear();
    }

    // 2. Mark.
    let candidates = prune_pass(
        repo,
        state,
        &PruneOptions {
            dry_run: true,
            ..opts.clone()
        },
        None,
    )
    .await?;
    let packs: Vec<_> = candidates
        .delete
        .iter()
        .chain(&candidates.repack)
        .chain(&candidates.unindexed)
        .copied()
        .collect();
    if packs.is_empty()
        && candidates.delete_keys.is_empty()
        && candidates.delete_segments.is_empty()
    {
        // Nothing unreferenced: one pass that keeps every pack whole still merges the index
        // segments, removes markers of vanished packs and purges old grace-area batches.
        let pass = if opts.dry_run {
            candidates
        } else {
            let mut pass = prune_pass(repo, state, opts, Some(&Marks::default())).await?;
            drop_plans(repo, rejected.iter().map(|r| &r.name), &mut pass).await?;
            pass
        };
        absorb(&mut out, pass);
        return Ok(out);
    }
    let mut plan = PrunePlanObject::new(
        repo.clock().now_unix(),
        ibs_repo::lock::hostname(),
        &packs,
        &candidates.delete_keys,
    );
    // Every append lock live now (none can name a plan not yet written).
    let observed = appends_unaware_of(
        repo.storage(),
        std::slice::from_ref(&plan.name),
        Some(own),
        &LockTiming::default(),
    )
    .await?;
    plan.observed_appends = observed.iter().map(|(n, _)| n.clone()).collect();
    plan.segments = candidates
        .delete_segments
        .iter()
        .map(|g| g.to_hex())
        .collect();
    let mut marks = Marks::default();
    marks.add(&plan)?;
    if opts.dry_run {
        if observed.is_empty() {
            absorb(&mut out, candidates);
        } else {
            let who = observed.iter().map(|(_, l)| l.describe()).collect();
            pending(&mut out, &marks, plan.name.clone(), who);
        }
        return Ok(out);
    }
    // Announced before it is written: a backup that becomes held after this run's check of the
    // locks and cannot open the plan sees the announcement and stops.
    guard.announce_sweep(&marks.names).await?;
    repo.put_plan(&plan, mk).await?;
    tracing::info!(
        "prune marked {} packs and {} data-key envelopes (plan {})",
        marks.packs.len(),
        marks.keys.len(),
        plan.name
    );
    let waiting = wait_sweepable(repo, &marks.names, own, deadline).await?;
    if !waiting.is_empty() {
        pending(&mut out, &marks, plan.name.clone(), waiting);
        return finish_unswept(repo, opts, out).await;
    }
    absorb(&mut out, sweep(repo, state, opts, &marks, &rejected).await?);
    Ok(out)
}

/// One sweep pass over `marks`, then (not in a dry run) the plans are dropped, and with them the
/// plans `rejected` that opened for nobody.
async fn sweep(
    repo: &Repository,
    state: &WriterState,
    opts: &PruneOptions,
    marks: &Marks,
    rejected: &[RejectedPlan],
) -> Result<PrunePlan, EngineError> {
    let mut pass = prune_pass(repo, state, opts, Some(marks)).await?;
    if !opts.dry_run {
        let names = marks.names.iter().chain(rejected.iter().map(|r| &r.name));
        drop_plans(repo, names, &mut pass).await?;
    }
    pass.swept_plans = marks.names.clone();
    Ok(pass)
}

/// Deletes the plans `names`. A delete that a lock or a missing permission refuses is a result
/// (`locked`, `refused`), not a failure: such a plan stays, and a later run sweeps it again (a
/// sweep recomputes) or, if it does not open, ignores it again; either way it blocks no mark.
async fn drop_plans<'a>(
    repo: &Repository,
    names: impl Iterator<Item = &'a String>,
    pass: &mut PrunePlan,
) -> Result<(), EngineError> {
    for n in names {
        let key = ibs_repo::layout::plan(n);
        match repo.storage().delete(&key).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) if e.kind == ibs_storage::ErrorKind::Locked => pass.locked.push(key.to_string()),
            Err(e) if e.kind == ibs_storage::ErrorKind::Authentication => {
                tracing::warn!("prune: delete of {key} refused: {e}");
                pass.refused.push(key.to_string())
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The descriptions of the locks a sweep of `plans` waits for, once `deadline` has passed (empty:
/// the sweep may run). Polls the lock listing; observations of a dead holder's lock accumulate in
/// this process until it counts as stale.
pub async fn wait_sweepable(
    repo: &Repository,
    plans: &[String],
    own: &str,
    deadline: Instant,
) -> Result<Vec<String>, EngineError> {
    let timing = LockTiming::default();
    loop {
        let unaware = appends_unaware_of(repo.storage(), plans, Some(own), &timing).await?;
        if unaware.is_empty() || Instant::now() >= deadline {
            return Ok(unaware.iter().map(|(_, l)| l.describe()).collect());
        }
        let pause = timing
            .poll
            .min(deadline.saturating_duration_since(Instant::now()));
        tokio::time::sleep(pause.max(std::time::Duration::from_millis(50))).await;
    }
}

fn pending(out: &mut PrunePlan, marks: &Marks, name: String, waiting: Vec<String>) {
    out.pending_plan = Some(name);
    out.marked_packs = marks.packs.len();
    out.marked_keys = marks.keys.len();
    out.waiting_for = waiting;
}

/// A run that leaves a plan pending still purges old grace-area batches.
async fn finish_unswept(
    repo: &Repository,
    opts: &PruneOptions,
    mut out: PrunePlan,
) -> Result<PrunePlan, EngineError> {
    if !opts.dry_run {
        let p = crate::trash::purge(repo, opts.delete_delay).await?;
        out.purged.batches += p.batches;
        out.purged.objects += p.objects;
        out.purged.bytes += p.bytes;
    }
    Ok(out)
}

/// Adds a later pass to what a run reports: lists and sums add up, the figures that describe the
/// repository as it is (totals, kept, young) are the later pass's.
fn absorb(into: &mut PrunePlan, p: PrunePlan) {
    into.packs_total = p.packs_total;
    into.keep = p.keep;
    into.chunks_used = p.chunks_used;
    into.chunks_unused = p.chunks_unused;
    into.young_packs = p.young_packs;
    into.young_keys = p.young_keys;
    into.delete.extend(p.delete);
    into.repack.extend(p.repack);
    into.unindexed.extend(p.unindexed);
    into.delete_keys.extend(p.delete_keys);
    into.delete_segments.extend(p.delete_segments);
    into.young_segments = p.young_segments;
    into.segments_kept = p.segments_kept;
    into.damaged.extend(p.damaged);
    into.delete_markers.extend(p.delete_markers);
    into.locked.extend(p.locked);
    into.refused.extend(p.refused);
    into.kept_for_index.extend(p.kept_for_index);
    into.swept_plans.extend(p.swept_plans);
    for r in p.rejected_plans {
        if !into.rejected_plans.contains(&r) {
            into.rejected_plans.push(r);
        }
    }
    into.bytes_freed_estimate += p.bytes_freed_estimate;
    into.repack_bytes += p.repack_bytes;
    into.used_bytes = p.used_bytes;
    into.unused_bytes_after = p.unused_bytes_after;
    into.locks_checked += p.locks_checked;
    into.purged.batches += p.purged.batches;
    into.purged.objects += p.purged.objects;
    into.purged.bytes += p.purged.bytes;
    if p.grace_batch.is_some() {
        into.grace_batch = p.grace_batch;
    }
}
