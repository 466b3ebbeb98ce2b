//! `ibs repo forget` and `ibs repo prune`: retention and space reclamation.

use super::{open_repo, Ctx};
use crate::cli::Location;
use crate::output::{exit, human};
use anyhow::{bail, Result};
use ibs_engine::ledger::Ledger;
use ibs_engine::retention::{Expected, PruneOptions};
use ibs_engine::state::WriterState;
use std::time::Duration;

/// `ibs repo forget`: removes backups older than the retention (never the newest successful one).
pub(super) async fn forget(ctx: &Ctx, loc: Location, keep_days: u32, dry_run: bool) -> Result<i32> {
    let repo = open_repo(&loc).await?;
    // With the writer state, catalogs are authenticated and the ledger learns what goes.
    let state = if WriterState::exists(&ctx.state_root, &repo.config().id) {
        Some(WriterState::load(&ctx.state_root, &repo.config().id)?)
    } else {
        None
    };
    let plan =
        ibs_engine::retention::forget(&repo, keep_days, dry_run, ctx.lock_wait, state.as_ref())
            .await?;
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

/// `ibs repo prune`: deletes and repacks what no backup references, checked against the ledger.
pub(super) async fn prune(
    ctx: &Ctx,
    loc: Location,
    dry_run: bool,
    grace_hours: u64,
    trust_listing: bool,
) -> Result<i32> {
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
    };
    let plan = ibs_engine::retention::prune(&repo, &state, opts).await?;
    if ctx.json {
        outln!("{}", serde_json::json!({"dry_run": dry_run, "plan": plan}));
    } else {
        let p = if dry_run { "would " } else { "" };
        outln!(
            "{p}delete {} unused packs and {} unindexed packs, {p}repack {} packs, keep {}; {p}free about {}; {} used / {} unused chunks; {p}delete {} data-key envelopes",
            plan.delete.len(), plan.unindexed.len(), plan.repack.len(), plan.keep, human(plan.bytes_freed_estimate), plan.chunks_used, plan.chunks_unused, plan.delete_keys.len()
        );
        if !plan.young_packs.is_empty() || !plan.young_keys.is_empty() {
            outln!(
                "kept {} packs and {} data-key envelopes younger than the grace period ({grace_hours} h)",
                plan.young_packs.len(),
                plan.young_keys.len()
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
