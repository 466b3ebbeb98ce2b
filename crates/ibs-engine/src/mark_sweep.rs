//! Prune beside running backups, in two phases (`docs/design/repository-format.md` §19, ADR 0039).
//! This module owns the protocol: when to mark, when a sweep may run, and what a run reports;
//! [`crate::prune`] owns what one pass computes and retires.
//!
//! - **Mark.** Under the `prune` lock (compatible with `append`), compute what is unreferenced
//!   (packs to delete or repack, unindexed packs, unused data-key envelopes) and write it as a
//!   sealed plan `plans/<name>`. Nothing is retired.
//! - **Backups** list `plans/` right after their append lock becomes held, record the names in the
//!   lock, read the plans, and build their index without any marked pack, so they never depend on
//!   a marked chunk (they store it again).
//! - **Sweep.** Only once every held append lock names every plan on storage
//!   ([`ibs_repo::lock::appends_unaware_of`] is empty): a backup that does not is one that may
//!   have loaded the index before the plan existed, or a build that does not read plans. Then one
//!   pass re-reads every manifest (those committed since the mark included) and retires only
//!   marked objects that are still unreferenced; every unmarked pack is kept whole. Then the plans
//!   are dropped.
//!
//! Invariant (why the order is safe): a prune writes its plan *before* it reads the locks, and a
//! backup makes its lock held *before* it lists the plans. So for any backup, either the sweep
//! reads its lock held (and waits unless the lock names the plan), or it read the lock before the
//! held write, so the backup's plan listing comes after the plan was written and shows it; a
//! backup whose lock is gone committed its manifest before releasing it (the sweep reads it) or
//! lost its lock (and stopped writing before anyone could judge it stale).
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
use ibs_repo::lock::{appends_unaware_of, LockKind, LockTiming};
use ibs_repo::plan::{Marks, PrunePlanObject};
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
    let own = guard.name().to_owned();
    let result = run(repo, state, &opts, &own, deadline).await;
    guard.finish(result).await
}

async fn run(
    repo: &Repository,
    state: &WriterState,
    opts: &PruneOptions,
    own: &str,
    deadline: Instant,
) -> Result<PrunePlan, EngineError> {
    let mk = &state.keys.metadata;
    let deadline = if opts.dry_run {
        Instant::now()
    } else {
        deadline
    };
    let mut out = PrunePlan::default();

    // 1. Plans an earlier mark left.
    let names = repo.list_plans().await?;
    if !names.is_empty() {
        let marks = repo.read_marks(&names, mk).await?;
        let waiting = wait_sweepable(repo, &names, own, deadline).await?;
        if !waiting.is_empty() {
            pending(&mut out, &marks, names.join(","), waiting);
            return finish_unswept(repo, opts, out).await;
        }
        absorb(&mut out, sweep(repo, state, opts, &marks).await?);
        if opts.dry_run {
            return Ok(out);
        }
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
            prune_pass(repo, state, opts, Some(&Marks::default())).await?
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
    absorb(&mut out, sweep(repo, state, opts, &marks).await?);
    Ok(out)
}

/// One sweep pass over `marks`, then (not in a dry run) the plans are dropped.
async fn sweep(
    repo: &Repository,
    state: &WriterState,
    opts: &PruneOptions,
    marks: &Marks,
) -> Result<PrunePlan, EngineError> {
    let mut pass = prune_pass(repo, state, opts, Some(marks)).await?;
    if !opts.dry_run {
        for n in &marks.names {
            // On object-lock storage the plan may be locked (or the key may not delete): it stays
            // until a later sweep can delete it; sweeping it again is harmless (it recomputes).
            let key = ibs_repo::layout::plan(n);
            match repo.storage().delete(&key).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) if e.kind == ibs_storage::ErrorKind::Locked => {
                    pass.locked.push(key.to_string())
                }
                Err(e) if e.kind == ibs_storage::ErrorKind::Authentication => {
                    pass.refused.push(key.to_string())
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    pass.swept_plans = marks.names.clone();
    Ok(pass)
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
    into.bytes_freed_estimate += p.bytes_freed_estimate;
    into.locks_checked += p.locks_checked;
    into.purged.batches += p.purged.batches;
    into.purged.objects += p.purged.objects;
    into.purged.bytes += p.purged.bytes;
    if p.grace_batch.is_some() {
        into.grace_batch = p.grace_batch;
    }
}
