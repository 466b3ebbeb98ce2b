//! `ibs repo forget` and `ibs repo prune`: retention and space reclamation.

use super::{open_repo, Ctx};
use crate::cli::Location;
use crate::output::{count, exit, human};
use anyhow::{bail, Result};
use ibs_engine::ledger::Ledger;
use ibs_engine::retention::{Expected, Keep, PruneOptions};
use ibs_engine::state::WriterState;
use std::time::Duration;

/// `ibs repo forget`: removes the backups the retention does not keep (never the newest successful one).
pub(super) async fn forget(ctx: &Ctx, loc: Location, keep: Keep, dry_run: bool) -> Result<i32> {
    let repo = open_repo(&loc).await?;
    // With the writer state, catalogs are authenticated and the ledger learns what goes.
    let state = if WriterState::exists(&ctx.state_root, &repo.config().id) {
        Some(WriterState::load(&ctx.state_root, &repo.config().id)?)
    } else {
        None
    };
    let plan =
        ibs_engine::retention::forget(&repo, keep, dry_run, ctx.lock_wait, state.as_ref()).await?;
    if ctx.json {
        outln!("{}", serde_json::json!({"dry_run": dry_run, "plan": plan}));
    } else {
        let verb = if dry_run { "would remove" } else { "removed" };
        for id in &plan.remove {
            outln!("{verb} {id}");
        }
        if let Some(p) = &plan.protected {
            outln!("kept {p} (newest successful backup, never removed)");
        }
        outln!(
            "{verb} {} backups, kept {}",
            plan.remove.len(),
            plan.keep.len()
        );
        if !plan.locked.is_empty() {
            outln!(
                "{} forgotten backups stay on storage until their object lock expires (or the key may not delete); a later forget removes them",
                plan.locked.len()
            );
        }
    }
    Ok(exit::OK)
}

/// Prune's two periods, in hours, and its unused-space budget, in percent.
pub(super) struct PruneSettings {
    pub grace: u64,
    pub delete_delay: u64,
    pub max_unused_percent: u8,
}

/// `ibs repo prune`: deletes and repacks what no backup references, checked against the ledger;
/// beside running backups in two phases (mark now, sweep once they finished: ADR 0039).
pub(super) async fn prune(
    ctx: &Ctx,
    loc: Location,
    dry_run: bool,
    settings: PruneSettings,
    trust_listing: bool,
) -> Result<i32> {
    let grace_hours = settings.grace;
    let settings_percent = settings.max_unused_percent;
    let repo = open_repo(&loc).await?;
    let state = WriterState::load(&ctx.state_root, &repo.config().id)?;
    let expected = match (trust_listing, Ledger::of(&state).expected()?) {
        (true, _) => Expected::TrustListing,
        (false, Some(known)) => Expected::Backups(known),
        (false, None) => bail!(
            "this writer state has no ledger of the backups it wrote (it was adopted, or is older than the ledger), so prune cannot tell a complete storage listing from one that hides backups; nothing was deleted. Check that `ibs repo list` shows every backup you expect, then run prune with --trust-listing"
        ),
    };
    let opts = PruneOptions {
        dry_run,
        lock_wait: ctx.lock_wait,
        expected,
        grace: Duration::from_secs(grace_hours.saturating_mul(3600)),
        delete_delay: Duration::from_secs(settings.delete_delay.saturating_mul(3600)),
        max_unused_percent: settings.max_unused_percent,
    };
    let plan = ibs_engine::retention::prune(&repo, &state, opts).await?;
    for r in &plan.rejected_plans {
        errln!(
            "warning: prune plan plans/{} does not open under the metadata key ({}): honoured by nobody and ignored; a sweep deletes it where storage allows. See the operator guide, \"A prune plan that fails authentication\"",
            r.name,
            r.reason
        );
    }
    if ctx.json {
        outln!("{}", serde_json::json!({"dry_run": dry_run, "plan": plan}));
    } else {
        let p = if dry_run { "would " } else { "" };
        outln!(
            "{p}delete {} unused packs and {} unindexed packs, {p}repack {} packs (copying {}), keep {}; {p}free about {}; {} used / {} unused chunks; {p}delete {} data-key envelopes",
            plan.delete.len(), plan.unindexed.len(), plan.repack.len(), human(plan.repack_bytes), plan.keep, human(plan.bytes_freed_estimate), plan.chunks_used, plan.chunks_unused, plan.delete_keys.len()
        );
        let stays = plan.used_bytes + plan.unused_bytes_after;
        outln!(
            "unused in the packs that stay: {} of {} ({:.1} %, at most {} %)",
            human(plan.unused_bytes_after),
            human(stays),
            plan.unused_bytes_after as f64 * 100.0 / stays.max(1) as f64,
            settings_percent
        );
        if !plan.delete_segments.is_empty() {
            outln!(
                "{p}delete {} reference segments no backup lists (keep {})",
                plan.delete_segments.len(),
                plan.segments_kept
            );
        }
        if !plan.young_packs.is_empty() || !plan.young_keys.is_empty() {
            outln!(
                "kept {} packs and {} data-key envelopes younger than the grace period ({grace_hours} h) or not marked by a prune plan",
                plan.young_packs.len(),
                plan.young_keys.len()
            );
        }
        if !plan.swept_plans.is_empty() {
            outln!("{p}sweep prune plan {}", plan.swept_plans.join(", "));
        }
        if let Some(pending) = &plan.pending_plan {
            outln!(
                "{}marked {} packs and {} data-key envelopes (prune plan {pending}); sweep at the next prune after the running backups finish:",
                if dry_run { "would have " } else { "" },
                plan.marked_packs,
                plan.marked_keys
            );
            for w in &plan.waiting_for {
                outln!("  {w}");
            }
        }
        if let Some(b) = &plan.grace_batch {
            outln!(
                "moved what was removed into the grace area (batch {b}); `ibs repo undelete` brings it back for {} h",
                settings.delete_delay
            );
        }
        if plan.purged.batches > 0 {
            outln!(
                "deleted {} from the grace area ({}, older than {} h)",
                human(plan.purged.bytes),
                count(plan.purged.batches as u64, "batch|batches"),
                settings.delete_delay
            );
        }
        for d in &plan.damaged {
            errln!("warning: pack {d} is damaged and was not repacked; run `ibs repo check --read-data`");
        }
        if plan.locks_checked > 0 {
            outln!(
                "object lock: made sure {} objects stay locked as long as kept backups need them",
                plan.locks_checked
            );
        }
        if !plan.locked.is_empty() || !plan.kept_for_index.is_empty() {
            outln!(
                "kept {} objects whose object lock has not expired (and {} packs a locked index segment names); a later prune removes them",
                plan.locked.len(),
                plan.kept_for_index.len()
            );
        }
    }
    if !plan.refused.is_empty() {
        errln!(
            "warning: the storage refused to delete {} objects (access denied): this key may not delete; run prune with the maintenance credential",
            plan.refused.len()
        );
        return Ok(exit::PARTIAL);
    }
    Ok(exit::OK)
}

/// `ibs repo undelete`: moves everything in the grace area back; the writer's ledger expects the
/// backups that return.
pub(super) async fn undelete(ctx: &Ctx, loc: Location, dry_run: bool) -> Result<i32> {
    let repo = open_repo(&loc).await?;
    let batches = ibs_engine::trash::batches(&repo).await?;
    let done = ibs_engine::trash::undelete(&repo, ctx.lock_wait, dry_run).await?;
    if !dry_run && WriterState::exists(&ctx.state_root, &repo.config().id) {
        let state = WriterState::load(&ctx.state_root, &repo.config().id)?;
        let ledger = Ledger::of(&state);
        if ledger.exists() {
            for id in &done.backups {
                ledger.record_written(id)?;
            }
        }
    }
    if ctx.json {
        outln!(
            "{}",
            serde_json::json!({"batches": batches, "result": done})
        );
        return Ok(exit::OK);
    }
    if batches.is_empty() {
        outln!("the grace area is empty: nothing to undelete");
        return Ok(exit::OK);
    }
    for b in &batches {
        outln!(
            "batch {} ({}): {}, {}, {}",
            b.name,
            ibs_repo::clock::rfc3339(b.time),
            count(b.objects as u64, "object"),
            human(b.bytes),
            count(b.backups.len() as u64, "backup")
        );
    }
    let verb = if dry_run {
        "would bring back"
    } else {
        "brought back"
    };
    outln!(
        "{verb} {} and {} ({})",
        count(done.restored as u64, "object"),
        count(done.backups.len() as u64, "backup"),
        human(done.bytes)
    );
    for id in &done.backups {
        outln!("  {id}");
    }
    Ok(exit::OK)
}
