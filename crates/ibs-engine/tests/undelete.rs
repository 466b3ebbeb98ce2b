//! Delayed delete: forget and prune move what they remove into the grace area, a later prune
//! purges a batch only once the delete delay has passed by the pruning host's clock, and
//! `undelete` brings forgotten backups back whole while their batch is there.

mod common;

use common::*;
use ibs_engine::check::{check, CheckOptions};
use ibs_engine::retention::{forget_backups, prune, Expected, PruneOptions, PrunePlan};
use ibs_engine::trash::{self, DEFAULT_DELETE_DELAY};
use ibs_repo::clock::{Clock, ManualClock, SystemClock};
use ibs_repo::{layout, Repository};
use ibs_storage::{DynStorage, LocalStorage, ObjectKey};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const H: i64 = 3600;

fn source(env: &Env, name: &str, seed: u64) -> PathBuf {
    let src = env.path(name);
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("a.txt"), format!("{name}\n")).unwrap();
    std::fs::write(src.join("d/b.bin"), bytes(seed, 3 << 20)).unwrap();
    src
}

/// The repository on a manual clock `offset` seconds from now.
async fn at(env: &Env, clock: &Arc<ManualClock>) -> Repository {
    let local: DynStorage = Arc::new(LocalStorage::open(env.repo_dir()).unwrap());
    Repository::open(local, clock.clone()).await.unwrap()
}

async fn prune_at(env: &Env, repo: &Repository, keep: &[&str], delay: Duration) -> PrunePlan {
    prune(
        repo,
        &env.state,
        PruneOptions {
            dry_run: false,
            lock_wait: Duration::ZERO,
            expected: Expected::Backups(keep.iter().map(|s| s.to_string()).collect()),
            grace: Duration::ZERO,
            delete_delay: delay,
            max_unused_percent: ibs_engine::retention::DEFAULT_MAX_UNUSED_PERCENT,
        },
    )
    .await
    .unwrap()
}

async fn keys_under(env: &Env, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = env
        .repo
        .storage()
        .list(prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key.as_str().to_owned())
        .collect();
    v.sort();
    v
}

async fn problems(env: &Env) -> Vec<String> {
    let r = check(
        env.reopen().await,
        CheckOptions {
            read_data: true,
            unlock: Some(env.unlock()),
            state: Some(env.state.clone()),
            progress: Default::default(),
            lock_wait: Duration::ZERO,
        },
    )
    .await
    .unwrap();
    r.problems
        .into_iter()
        .map(|p| format!("{}: {}", p.object, p.detail))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_moves_into_the_grace_area_and_undelete_brings_the_backup_back() {
    let env = env().await;
    let one = source(&env, "one", 11);
    let two = source(&env, "two", 12);
    let gone = backup(&env, &[("data", &one)]).await.catalog.backup_id;
    let kept = backup(&env, &[("data", &two)]).await.catalog.backup_id;
    let packs_before = keys_under(&env, layout::PACKS).await;
    // Something under trash/ that ibs did not write: undelete must never write it elsewhere.
    let stray = ObjectKey::new("trash/20260101T000000Z-00000000/notes.txt").unwrap();
    env.repo
        .storage()
        .put(&stray, b"not ours".to_vec().into())
        .await
        .unwrap();

    assert_eq!(
        forget_backups(&env.repo, std::slice::from_ref(&gone), Duration::ZERO)
            .await
            .unwrap()
            .deleted,
        vec![gone.clone()]
    );
    let clock = Arc::new(ManualClock::new(SystemClock.now_unix()));
    let repo = at(&env, &clock).await;
    let plan = prune_at(&env, &repo, &[&kept], DEFAULT_DELETE_DELAY).await;
    assert!(
        !plan.delete.is_empty(),
        "the forgotten backup's packs are unused"
    );
    let batch = plan.grace_batch.clone().expect("a grace batch");
    assert_eq!(plan.purged.batches, 0, "nothing is old enough to purge");
    let packs_after = keys_under(&env, layout::PACKS).await;
    for p in &plan.delete {
        let k = layout::pack(p);
        assert!(
            !packs_after.contains(&k.as_str().to_owned()),
            "{k} still in packs/"
        );
        env.repo
            .storage()
            .stat(&layout::trash(&batch, &k))
            .await
            .unwrap_or_else(|e| panic!("{k} is not in the grace area: {e}"));
    }
    let listed = trash::batches(&env.repo).await.unwrap();
    assert_eq!(
        listed.len(),
        2,
        "the forget's batch and the prune's: {listed:?}"
    );
    assert_eq!(
        listed
            .iter()
            .flat_map(|b| b.backups.clone())
            .collect::<Vec<_>>(),
        vec![gone.clone()]
    );
    // The kept backup is whole while the other waits in the grace area.
    let t = env.path("t-kept");
    restore(&env, &kept, &t, None).await.unwrap();
    assert_same_tree(&two, &t.join("data"));
    assert_eq!(problems(&env).await, Vec::<String>::new());

    let dry = trash::undelete(&env.repo, Duration::ZERO, true)
        .await
        .unwrap();
    assert_eq!(dry.backups, vec![gone.clone()]);
    assert!(
        restore(&env, &gone, &env.path("t-no"), None).await.is_err(),
        "a dry run moved nothing"
    );

    let done = trash::undelete(&env.repo, Duration::ZERO, false)
        .await
        .unwrap();
    assert_eq!(done.backups, vec![gone.clone()]);
    assert!(done.restored > plan.delete.len(), "{done:?}");
    assert_eq!(keys_under(&env, layout::PACKS).await, {
        let mut all = packs_before.clone();
        all.extend(packs_after.iter().cloned());
        all.sort();
        all.dedup();
        all
    });
    let t = env.path("t-gone");
    restore(&env, &gone, &t, None).await.unwrap();
    assert_same_tree(&one, &t.join("data"));
    assert_eq!(problems(&env).await, Vec::<String>::new());
    assert_eq!(
        keys_under(&env, layout::TRASH).await,
        vec![stray.as_str().to_owned()],
        "only the stray object stays, untouched and not moved"
    );
    assert!(env
        .repo
        .storage()
        .stat(&ObjectKey::new("notes.txt").unwrap())
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_purged_only_after_the_delete_delay_by_the_pruners_clock() {
    let env = env().await;
    let gone = backup(&env, &[("data", &source(&env, "one", 21))])
        .await
        .catalog
        .backup_id;
    let kept = backup(&env, &[("data", &source(&env, "two", 22))])
        .await
        .catalog
        .backup_id;
    forget_backups(&env.repo, std::slice::from_ref(&gone), Duration::ZERO)
        .await
        .unwrap();
    let now = SystemClock.now_unix();
    let clock = Arc::new(ManualClock::new(now));
    let repo = at(&env, &clock).await;
    let first = prune_at(&env, &repo, &[&kept], DEFAULT_DELETE_DELAY).await;
    assert!(first.grace_batch.is_some());
    let held = keys_under(&env, layout::TRASH).await;
    assert!(!held.is_empty());

    // 23 h later: both batches (forget's and prune's) are younger than 24 h and stay. (Every
    // prune writes the index anew, so this prune retires the previous segment in a batch of its
    // own.)
    clock.set(now + 23 * H);
    let early = prune_at(&env, &repo, &[&kept], DEFAULT_DELETE_DELAY).await;
    assert_eq!(early.purged.batches, 0, "{early:?}");
    let after_early = keys_under(&env, layout::TRASH).await;
    assert!(
        held.iter().all(|k| after_early.contains(k)),
        "{held:?} {after_early:?}"
    );

    // 25 h later: those two are purged, the 2 h old batch stays; the forgotten backup is gone
    // for good and undelete cannot bring it back.
    clock.set(now + 25 * H);
    let late = prune_at(&env, &repo, &[&kept], DEFAULT_DELETE_DELAY).await;
    assert_eq!(late.purged.batches, 2, "{late:?}");
    assert_eq!(late.purged.objects, held.len());
    let left = keys_under(&env, layout::TRASH).await;
    assert!(held.iter().all(|k| !left.contains(k)), "{left:?}");
    let names: Vec<String> = trash::batches(&env.repo)
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(names.len(), 2, "the +23 h and +25 h batches: {names:?}");
    assert!(names
        .iter()
        .all(|n| n.as_str() > held[0].as_str().split('/').nth(1).unwrap()));
    let back = trash::undelete(&env.repo, Duration::ZERO, false)
        .await
        .unwrap();
    assert_eq!(back.backups, Vec::<String>::new());
    assert!(restore(&env, &gone, &env.path("t"), None).await.is_err());
    let t = env.path("t-kept");
    restore(&env, &kept, &t, None).await.unwrap();
    assert_eq!(problems(&env).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_delay_deletes_at_once_and_empties_the_grace_area() {
    let env = env().await;
    let gone = backup(&env, &[("data", &source(&env, "one", 31))])
        .await
        .catalog
        .backup_id;
    let kept = backup(&env, &[("data", &source(&env, "two", 32))])
        .await
        .catalog
        .backup_id;
    forget_backups(&env.repo, std::slice::from_ref(&gone), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        keys_under(&env, layout::TRASH).await.len(),
        1,
        "the forgotten manifest"
    );
    let clock = Arc::new(ManualClock::new(SystemClock.now_unix()));
    let repo = at(&env, &clock).await;
    let plan = prune_at(&env, &repo, &[&kept], Duration::ZERO).await;
    assert_eq!(plan.grace_batch, None);
    assert_eq!(plan.purged.batches, 1, "the forget's batch goes too");
    assert_eq!(keys_under(&env, layout::TRASH).await, Vec::<String>::new());
    for p in &plan.delete {
        assert!(env.repo.storage().stat(&layout::pack(p)).await.is_err());
    }
}
