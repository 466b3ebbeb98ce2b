//! Prune plans that do not open (format spec §19, ADR 0044): honoured by nobody, they stop neither
//! backups nor prune; a backup that cannot open a plan the sweeper can open holds the sweep back;
//! and a plan whose delete storage refuses blocks no later mark.

mod common;

use common::prune::{check_data, paused_backup, source};
use common::*;
use ibs_engine::retention::{forget_backups, prune, Expected, PruneOptions, PrunePlan};
use ibs_engine::state::WriterState;
use ibs_repo::clock::SystemClock;
use ibs_repo::Repository;
use ibs_storage::faulty::FaultyStorage;
use ibs_storage::{DynStorage, ErrorKind, LocalStorage, ObjectKey};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn opts(dry_run: bool) -> PruneOptions {
    PruneOptions {
        dry_run,
        lock_wait: Duration::ZERO,
        expected: Expected::TrustListing,
        grace: Duration::ZERO,
        delete_delay: Duration::ZERO,
        max_unused_percent: ibs_engine::retention::DEFAULT_MAX_UNUSED_PERCENT,
    }
}

async fn prune_on(repo: &Repository, state: &WriterState) -> PrunePlan {
    prune(repo, state, opts(false)).await.unwrap()
}

/// The repository of `env` seen through a fault-injecting decorator.
async fn faulty_repo(env: &Env) -> (Arc<Repository>, Arc<FaultyStorage>) {
    let local: DynStorage = Arc::new(LocalStorage::open(env.repo_dir()).unwrap());
    let faulty = Arc::new(FaultyStorage::new(local));
    let storage: DynStorage = faulty.clone();
    let repo = Repository::open(storage, Arc::new(SystemClock))
        .await
        .unwrap();
    (Arc::new(repo), faulty)
}

async fn put_plan_object(env: &Env, name: &str, bytes: &[u8]) {
    env.repo
        .storage()
        .put(
            &ObjectKey::new(format!("plans/{name}")).unwrap(),
            bytes.to_vec().into(),
        )
        .await
        .unwrap();
}

async fn forgotten_backup_of(env: &Env, src: &Path) {
    let x = backup(env, &[("data", src)]).await.catalog.backup_id;
    forget_backups(&env.repo, std::slice::from_ref(&x), Duration::ZERO)
        .await
        .unwrap();
}

/// Garbage, a plan-looking header with a bad seal, and a sealed body naming another plan: every
/// backup succeeds (warning), prune marks and sweeps as if they were not there, reports them and
/// deletes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_that_do_not_open_stop_nothing_and_are_retired() {
    let env = env().await;
    let src = source(&env, "src", 1);
    forgotten_backup_of(&env, &src).await;
    let garbage = "00000000000000000000000000000001";
    let bad_seal = "00000000000000000000000000000002";
    put_plan_object(&env, garbage, b"not a plan at all").await;
    put_plan_object(&env, bad_seal, b"IBSPLN\x01\x00sealed by nobody we know").await;
    // A genuine plan of another name, stored under this one: its body names the other plan.
    let other = ibs_repo::plan::PrunePlanObject::new(0, "h".into(), &[], &[]);
    let renamed = "00000000000000000000000000000003";
    let forged = [
        b"IBSPLN\x01\x00".as_slice(),
        &env.state.keys.metadata.seal(
            format!("ibs-prune-plan\0{renamed}").as_bytes(),
            &serde_json::to_vec(&other).unwrap(),
        ),
    ]
    .concat();
    put_plan_object(&env, renamed, &forged).await;

    let report = backup(&env, &[("data", &src)]).await;
    let warned: Vec<_> = report
        .warnings
        .iter()
        .filter(|w| w.starts_with("prune plan plans/"))
        .collect();
    assert_eq!(warned.len(), 3, "{:?}", report.warnings);
    assert!(warned.iter().any(|w| w.contains("bad magic")));
    assert!(warned.iter().any(|w| w.contains("does not authenticate")));
    assert!(warned.iter().any(|w| w.contains("names plan")));

    // A dry run reports them and deletes nothing.
    let dry = prune(&env.repo, &env.state, opts(true)).await.unwrap();
    assert_eq!(dry.rejected_plans.len(), 3, "{dry:?}");
    assert_eq!(env.repo.list_plans().await.unwrap().len(), 3);

    // Quiet: the run marks what the forgotten backup left (nothing: the new backup references the
    // same chunks) and retires the three objects nobody honours.
    let forgotten_other = source(&env, "other", 2);
    forgotten_backup_of(&env, &forgotten_other).await;
    let run = prune_on(&env.repo, &env.state).await;
    let mut rejected: Vec<_> = run.rejected_plans.iter().map(|r| r.name.as_str()).collect();
    rejected.sort();
    assert_eq!(rejected, [garbage, bad_seal, renamed]);
    assert!(run.pending_plan.is_none(), "{run:?}");
    assert!(
        !run.delete.is_empty(),
        "the forgotten backup's packs: {run:?}"
    );
    assert!(env.repo.list_plans().await.unwrap().is_empty());
    assert!(check_data(&env).await.problems.is_empty());
    let t = env.path("t");
    restore(&env, &report.catalog.backup_id, &t, None)
        .await
        .unwrap();
    assert_same_tree(&src, &t.join("data"));
}

/// The safety rule: a backup that could not open a plan (its reads of `plans/` arrive corrupted)
/// while the sweeper can does not name it, so the sweep waits for it; it deduplicates against
/// the marked chunks, commits, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_that_could_not_open_a_plan_holds_the_sweep_back() {
    let env = env().await;
    let src = source(&env, "src", 1);
    let other = source(&env, "other", 2);
    forgotten_backup_of(&env, &src).await;
    let second = ibs_engine::keyops::adopt(&env.repo, &env.unlock(), &env.path("state2"))
        .await
        .unwrap();

    // A backup running at the mark keeps the plan pending.
    let (early, early_go) = paused_backup(env.repo.clone(), &second, &other, false).await;
    let marked = prune_on(&env.repo, &env.state).await;
    let plan = marked.pending_plan.clone().expect("pending");

    // A backup whose reads of the plan are corrupted in transit.
    let (faulty_repo, faulty) = faulty_repo(&env).await;
    faulty.corrupt_reads_under("plans/");
    let (late, late_go) = paused_backup(faulty_repo, &env.state, &src, false).await;
    early_go.wait().await;
    early.await.unwrap();

    // The sweeper opens the plan; the late backup's lock does not name it: no sweep. (The
    // backup is let go before the assertions, so that a failing one fails instead of hanging.)
    let held = prune_on(&env.repo, &env.state).await;
    late_go.wait().await;
    let report = late.await.unwrap();
    assert_eq!(
        held.pending_plan.as_deref(),
        Some(plan.as_str()),
        "{held:?}"
    );
    assert!(
        held.swept_plans.is_empty() && held.delete.is_empty(),
        "{held:?}"
    );
    assert_eq!(held.waiting_for.len(), 1, "{held:?}");
    assert!(held.rejected_plans.is_empty());
    assert!(
        report.warnings.iter().any(|w| w.contains(&plan)),
        "{:?}",
        report.warnings
    );
    // It deduplicated against the marked chunks (only its tree is new) ...
    assert!(report.chunks_new <= 2, "{} new chunks", report.chunks_new);
    // ... which the sweep, now allowed, keeps: the committed manifest references them.
    let swept = prune_on(&env.repo, &env.state).await;
    assert_eq!(swept.swept_plans, vec![plan]);
    let c = check_data(&env).await;
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let t = env.path("t");
    restore(&env, &report.catalog.backup_id, &t, None)
        .await
        .unwrap();
    assert_same_tree(&src, &t.join("data"));
}

/// A sweep whose own plan delete is refused (a lock, a policy): the plan stays and is reported;
/// the next run sweeps it again, still marks and sweeps its own plan, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swept_plan_that_cannot_be_deleted_blocks_no_later_mark() {
    let env = env().await;
    let (repo, faulty) = faulty_repo(&env).await;
    faulty.refuse_deletes_under("plans/", ErrorKind::Locked);
    let one = source(&env, "one", 1);
    let two = source(&env, "two", 2);
    let kept = source(&env, "kept", 3);
    let kept_id = backup(&env, &[("data", &kept)]).await.catalog.backup_id;

    forgotten_backup_of(&env, &one).await;
    let first = prune_on(&repo, &env.state).await;
    assert_eq!(first.swept_plans.len(), 1, "{first:?}");
    let stuck = format!("plans/{}", first.swept_plans[0]);
    assert!(first.locked.contains(&stuck), "{first:?}");
    assert!(!first.delete.is_empty());
    assert_eq!(repo.list_plans().await.unwrap().len(), 1);

    forgotten_backup_of(&env, &two).await;
    let second = prune_on(&repo, &env.state).await;
    // The stuck plan is swept again (harmless) and a new one is marked and swept in the same run.
    assert_eq!(second.swept_plans.len(), 2, "{second:?}");
    assert!(second.swept_plans.contains(&first.swept_plans[0]));
    assert!(second.pending_plan.is_none(), "{second:?}");
    assert!(
        !second.delete.is_empty(),
        "the second forgotten backup: {second:?}"
    );
    // A backup beside the stuck plans still succeeds and restores.
    let after = backup(&env, &[("data", &kept)]).await.catalog.backup_id;
    assert!(check_data(&env).await.problems.is_empty());
    for id in [kept_id, after] {
        let t = env.path(&format!("t-{id}"));
        restore(&env, &id, &t, None).await.unwrap();
        assert_same_tree(&kept, &t.join("data"));
    }
}
