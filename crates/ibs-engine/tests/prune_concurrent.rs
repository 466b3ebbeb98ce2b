//! Prune beside running backups (format spec §19, ADR 0039), with explicit ordering points
//! instead of timing: a backup stops right after loading its index (`pause_after_index`) while
//! prune marks and sweeps, then commits.
//!
//! The race the design exists for: a backup that deduplicates against a chunk no committed
//! manifest references (here: the chunks of a forgotten backup of the same tree) and commits
//! after prune removed them. With the design the backup either holds the sweep back (it was
//! running at the mark) or stores those chunks again (it started after the mark); with the test
//! hook that makes a backup ignore prune plans, the same sequence loses the chunks and `check
//! --read-data` reports them, so these tests can fail.

mod common;

use common::prune::{check_data, paused_backup, prune_at_once, source};
use common::*;
use ibs_engine::retention::{forget_backups, prune, Expected, PruneOptions, PrunePlan};
use ibs_engine::state::WriterState;
use ibs_engine::BackupReport;
use std::path::{Path, PathBuf};
use std::time::Duration;

async fn prune_now(env: &Env) -> PrunePlan {
    prune_at_once(env, Expected::TrustListing, Duration::ZERO).await
}

async fn plans(env: &Env) -> Vec<String> {
    env.repo.list_plans().await.unwrap()
}

/// A second writer (two backups of one writer state take turns on a host).
async fn second_writer(env: &Env) -> WriterState {
    ibs_engine::keyops::adopt(&env.repo, &env.unlock(), &env.path("state2"))
        .await
        .unwrap()
}

/// A backup of `src` whose chunks are then unreferenced (the backup is forgotten).
async fn forgotten_backup_of(env: &Env, src: &Path) {
    let x = backup(env, &[("data", src)]).await.catalog.backup_id;
    let gone = forget_backups(&env.repo, std::slice::from_ref(&x), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(gone.deleted, vec![x]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_running_at_the_mark_holds_the_sweep_back() {
    let env = env().await;
    let src = source(&env, "src", 1);
    forgotten_backup_of(&env, &src).await;

    // The backup has loaded an index in which the forgotten backup's chunks are present.
    let (task, go) = paused_backup(env.repo.clone(), &env.state, &src, false).await;
    let plan = prune_now(&env).await;
    let pending = plan.pending_plan.clone().expect("the mark is left pending");
    assert!(plan.marked_packs > 0, "{plan:?}");
    assert_eq!(plan.waiting_for.len(), 1, "{plan:?}");
    assert!(plan.waiting_for[0].contains("append lock held by backup"));
    assert!(plan.delete.is_empty() && plan.unindexed.is_empty() && plan.swept_plans.is_empty());
    assert_eq!(plans(&env).await, vec![pending.clone()]);
    // Still held back: nothing is swept while the backup runs.
    let again = prune_now(&env).await;
    assert_eq!(again.pending_plan.as_deref(), Some(pending.as_str()));
    assert!(again.delete.is_empty() && again.repack.is_empty());

    go.wait().await;
    let report = task.await.unwrap();
    // It deduplicated against the marked chunks (only its tree is new).
    assert!(report.chunks_new <= 2, "{} new chunks", report.chunks_new);

    let swept = prune_now(&env).await;
    assert_eq!(swept.swept_plans, vec![pending]);
    assert!(swept.pending_plan.is_none());
    assert!(plans(&env).await.is_empty());
    let c = check_data(&env).await;
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let t = env.path("t");
    restore(&env, &report.catalog.backup_id, &t, None)
        .await
        .unwrap();
    assert_same_tree(&src, &t.join("data"));
}

/// A backup that starts after the mark and pauses after its index; a backup running at the mark
/// (of another tree) finishes; prune sweeps while the first is paused; then it commits.
async fn after_the_mark(ignore_plans: bool) -> (Env, PathBuf, BackupReport, PrunePlan) {
    let env = env().await;
    let src = source(&env, "src", 1);
    let other = source(&env, "other", 2);
    forgotten_backup_of(&env, &src).await;
    let second = second_writer(&env).await;

    let (early, early_go) = paused_backup(env.repo.clone(), &second, &other, false).await;
    let marked = prune_now(&env).await;
    let plan = marked
        .pending_plan
        .clone()
        .expect("pending while a backup runs");

    let (late, late_go) = paused_backup(env.repo.clone(), &env.state, &src, ignore_plans).await;
    early_go.wait().await;
    early.await.unwrap();

    // Every running backup now names the plan: the sweep runs while `late` is paused.
    let swept = prune_now(&env).await;
    assert_eq!(swept.swept_plans, vec![plan]);
    assert!(!swept.delete.is_empty(), "{swept:?}");
    late_go.wait().await;
    let report = late.await.unwrap();
    (env, src, report, swept)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_that_starts_after_the_mark_stores_marked_chunks_again() {
    let (env, src, report, _) = after_the_mark(false).await;
    // 3 MiB of file data in ~1 MiB chunks, sealed again rather than deduplicated.
    assert!(report.chunks_new >= 3, "{} new chunks", report.chunks_new);
    let c = check_data(&env).await;
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let t = env.path("t");
    restore(&env, &report.catalog.backup_id, &t, None)
        .await
        .unwrap();
    assert_same_tree(&src, &t.join("data"));
    // The next prune finds nothing of this backup to remove.
    let next = prune_now(&env).await;
    assert!(next.pending_plan.is_none());
    assert!(check_data(&env).await.problems.is_empty());
}

/// The same sequence with a backup that ignores prune plans (as one without the design would):
/// the sweep removes the chunks it deduplicated against, and check sees them missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_plan_the_same_sequence_loses_chunks() {
    let (env, _src, report, _) = after_the_mark(true).await;
    assert!(report.chunks_new <= 2, "{} new chunks", report.chunks_new);
    let c = check_data(&env).await;
    assert!(
        !c.problems.is_empty(),
        "the race must show as missing chunks without the design"
    );
}

async fn dry_prune(env: &Env) -> PrunePlan {
    prune(
        &env.repo,
        &env.state,
        PruneOptions {
            dry_run: true,
            lock_wait: Duration::ZERO,
            expected: Expected::TrustListing,
            grace: Duration::ZERO,
            delete_delay: Duration::ZERO,
            max_unused_percent: ibs_engine::retention::DEFAULT_MAX_UNUSED_PERCENT,
        },
    )
    .await
    .unwrap()
}

/// A dry run writes no plan and reports what a run would do now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_reports_the_pending_mark_and_writes_nothing() {
    let env = env().await;
    let src = source(&env, "src", 1);
    let other = source(&env, "other", 2);
    forgotten_backup_of(&env, &src).await;
    let second = second_writer(&env).await;
    // Quiet: the dry run is the sweep a run would do at once.
    let quiet = dry_prune(&env).await;
    assert!(quiet.pending_plan.is_none() && !quiet.delete.is_empty());
    let (task, go) = paused_backup(env.repo.clone(), &second, &other, false).await;
    let busy = dry_prune(&env).await;
    assert!(busy.pending_plan.is_some() && busy.delete.is_empty());
    assert_eq!(busy.marked_packs, quiet.delete.len() + quiet.repack.len());
    assert!(plans(&env).await.is_empty(), "a dry run wrote a plan");
    go.wait().await;
    task.await.unwrap();
    let real = prune_now(&env).await;
    assert_eq!(real.delete, quiet.delete);
}
