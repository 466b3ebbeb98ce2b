//! The engine over a fault-injecting storage: transient faults are retried, permanent ones surface
//! with their alert class, and a manifest is never committed over missing or partial data.

mod common;
use common::*;
use ibs_repo::clock::SystemClock;
use ibs_repo::Repository;
use ibs_storage::faulty::{Fault, FaultyStorage, Op};
use ibs_storage::{AlertClass, DynStorage, ErrorKind, LocalStorage, RetryPolicy, RetryStorage};
use std::sync::Arc;
use std::time::Duration;

struct Faulty {
    env: Env,
    faulty: Arc<FaultyStorage>,
}

async fn faulty_env() -> Faulty {
    let base = env().await;
    let local: DynStorage = Arc::new(LocalStorage::open(base.repo_dir()).unwrap());
    let faulty = Arc::new(FaultyStorage::new(local));
    let policy = RetryPolicy {
        timed_out_attempts: 2,
        attempts: 4,
        initial_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    };
    let storage: DynStorage = Arc::new(RetryStorage::new(faulty.clone(), policy));
    let repo = Arc::new(
        Repository::open(storage, Arc::new(SystemClock))
            .await
            .unwrap(),
    );
    Faulty {
        env: Env { repo, ..base },
        faulty,
    }
}

fn source(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..4 {
        std::fs::write(src.join(format!("f{i}")), bytes(i, 9 << 20)).unwrap();
    }
    src
}

async fn manifests(env: &Env) -> usize {
    env.repo.list_backup_ids().await.unwrap().len()
}

#[tokio::test]
async fn transient_faults_are_retried() {
    let f = faulty_env().await;
    let src = source(&f.env);
    // Puts 1-3 are the lock (choosing, ticket, held), put 4 the data-key envelope, put 5 the
    // first pack.
    f.faulty.fail_nth(
        Op::Put,
        4,
        Fault::Error {
            kind: ErrorKind::Connectivity,
            transient: true,
        },
    );
    f.faulty.fail_nth(Op::Put, 5, Fault::TornWrite);
    let r = backup(&f.env, &[("s", &src)]).await;
    assert!(f.faulty.injected() >= 2);
    let out = f.env.path("out");
    restore(&f.env, &r.catalog.backup_id, &out, Some("s"))
        .await
        .unwrap();
    assert_same_tree(&src, &out);
}

#[tokio::test]
async fn a_full_disk_fails_as_capacity_and_commits_nothing() {
    let f = faulty_env().await;
    let src = source(&f.env);
    f.faulty.set_capacity(Some(12 << 20));
    let err = try_backup(&f.env, &[("s", &src)]).await.unwrap_err();
    assert_eq!(err.storage_class(), Some(AlertClass::Capacity), "{err}");
    assert_eq!(manifests(&f.env).await, 0);
    f.faulty.set_capacity(None);
    let r = backup(&f.env, &[("s", &src)]).await;
    assert_eq!(manifests(&f.env).await, 1);
    let out = f.env.path("out");
    restore(&f.env, &r.catalog.backup_id, &out, Some("s"))
        .await
        .unwrap();
    assert_same_tree(&src, &out);
}

/// Storage that fails while the reader is far ahead: far more bytes than the pipeline's budget
/// (16 MiB) and a pack or two are still to be read when the packer and the sealers give up. The
/// reader must stop and the backup end with the storage's class instead of waiting for budget
/// that nobody will give back (ADR 0062).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_failure_far_behind_the_reader_ends_the_backup_instead_of_stalling_it() {
    let f = faulty_env().await;
    let src = f.env.path("big");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..6 {
        std::fs::write(src.join(format!("f{i}")), bytes(100 + i, 16 << 20)).unwrap();
    }
    f.faulty.set_capacity(Some(1 << 20));
    // Every storage call waits, so the reader is far ahead when the first pack's put fails.
    f.faulty.set_latency(Some(Duration::from_secs(2)));
    let err = tokio::time::timeout(Duration::from_secs(300), try_backup(&f.env, &[("s", &src)]))
        .await
        .expect("the backup stalled after its storage failed")
        .unwrap_err();
    assert_eq!(err.storage_class(), Some(AlertClass::Capacity), "{err}");
    f.faulty.set_latency(None);
    assert_eq!(manifests(&f.env).await, 0);
}

#[tokio::test]
async fn a_silently_short_write_is_caught_before_the_manifest() {
    let f = faulty_env().await;
    let src = source(&f.env);
    // Puts 1-3 are the lock (choosing, ticket, held), put 4 the data-key envelope, put 5 the
    // first pack.
    f.faulty.fail_nth(Op::Put, 5, Fault::ShortWrite);
    let err = try_backup(&f.env, &[("s", &src)]).await.unwrap_err();
    assert!(err.to_string().contains("not committed"), "{err}");
    assert_eq!(manifests(&f.env).await, 0, "no manifest over partial data");
}

#[tokio::test]
async fn a_permanent_error_is_not_retried_and_names_its_class() {
    let f = faulty_env().await;
    let src = source(&f.env);
    f.faulty.fail_from(
        Op::Put,
        4, // the data-key envelope, the first write after the lock's three
        Fault::Error {
            kind: ErrorKind::Authentication,
            transient: false,
        },
    );
    let err = try_backup(&f.env, &[("s", &src)]).await.unwrap_err();
    assert_eq!(err.storage_class(), Some(AlertClass::Authentication));
    assert_eq!(manifests(&f.env).await, 0);
}

/// The writer state is saved before the repository config is written: if the state cannot be
/// saved (or the process dies there), the location holds no repository whose writer keys exist
/// nowhere, and a later init succeeds.
#[tokio::test]
async fn an_init_that_cannot_save_its_writer_state_leaves_no_repository() {
    let dir = tempfile::tempdir().unwrap();
    let storage: DynStorage = Arc::new(LocalStorage::create(dir.path().join("repo")).unwrap());
    let ident = identity();
    // A file where the state folder should be: saving the writer state fails.
    let blocked = dir.path().join("state");
    std::fs::write(&blocked, b"not a folder").unwrap();
    let err = ibs_engine::keyops::init(
        storage.clone(),
        Arc::new(SystemClock),
        &blocked,
        ibs_repo::InitKeys::Certificate(ident.certificate()),
    )
    .await
    .err()
    .expect("init with an unwritable state folder succeeded");
    assert!(
        matches!(
            Repository::open(storage.clone(), Arc::new(SystemClock)).await,
            Err(ibs_repo::RepoError::NotARepository { .. })
        ),
        "a repository was left whose writer state was never saved (init failed with: {err})"
    );
    // With a usable state folder the next init succeeds and its state loads.
    let state_root = dir.path().join("state2");
    let (repo, _) = ibs_engine::keyops::init(
        storage.clone(),
        Arc::new(SystemClock),
        &state_root,
        ibs_repo::InitKeys::Certificate(ident.certificate()),
    )
    .await
    .unwrap();
    ibs_engine::state::WriterState::load(&state_root, &repo.config().id).unwrap();
}

/// A config write that fails after the certificate and envelope were stored leaves no repository;
/// the next init overwrites the leftovers and works.
#[tokio::test]
async fn an_init_whose_config_write_fails_can_be_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let local: DynStorage = Arc::new(LocalStorage::create(dir.path().join("repo")).unwrap());
    let faulty = Arc::new(FaultyStorage::new(local));
    let storage: DynStorage = faulty.clone();
    // Put 1 is the certificate, put 2 the repository-key envelope, put 3 the config.
    faulty.fail_nth(
        Op::Put,
        3,
        Fault::Error {
            kind: ErrorKind::Connectivity,
            transient: false,
        },
    );
    let ident = identity();
    let state_root = dir.path().join("state");
    assert!(ibs_engine::keyops::init(
        storage.clone(),
        Arc::new(SystemClock),
        &state_root,
        ibs_repo::InitKeys::Certificate(ident.certificate()),
    )
    .await
    .is_err());
    assert_eq!(faulty.injected(), 1);
    assert!(matches!(
        Repository::open(storage.clone(), Arc::new(SystemClock)).await,
        Err(ibs_repo::RepoError::NotARepository { .. })
    ));
    let (repo, state) = ibs_engine::keyops::init(
        storage.clone(),
        Arc::new(SystemClock),
        &state_root,
        ibs_repo::InitKeys::Certificate(ident.certificate()),
    )
    .await
    .unwrap();
    let repo = Arc::new(repo);
    let env = Env {
        dir,
        repo,
        state,
        ident,
    };
    let src = source(&env);
    let r = backup(&env, &[("s", &src)]).await;
    let out = env.path("out");
    restore(&env, &r.catalog.backup_id, &out, Some("s"))
        .await
        .unwrap();
    assert_same_tree(&src, &out);
}

/// Every file under `dir`, relative.
fn files_under(dir: &std::path::Path) -> std::collections::BTreeSet<std::path::PathBuf> {
    let mut out = std::collections::BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path().strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out
}

/// A full share while prune writes a repacked pack: the prune fails as Capacity, every pack and
/// index segment that was there still is, and once there is room a prune finishes and the kept
/// backup restores. (The repack's copier and writer run side by side: the writer's failure must
/// stop both.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_that_cannot_store_a_repacked_pack_fails_as_capacity_and_deletes_nothing() {
    use ibs_engine::retention::{forget_backups, prune, Expected, PruneOptions};
    let f = faulty_env().await;
    let src = source(&f.env);
    let b1 = backup(&f.env, &[("s", &src)]).await.catalog.backup_id;
    std::fs::remove_file(src.join("f0")).unwrap();
    std::fs::remove_file(src.join("f2")).unwrap();
    let b2 = backup(&f.env, &[("s", &src)]).await.catalog.backup_id;
    forget_backups(&f.env.repo, std::slice::from_ref(&b1), Duration::ZERO)
        .await
        .unwrap();
    let opts = PruneOptions {
        dry_run: false,
        lock_wait: Duration::ZERO,
        expected: Expected::TrustListing,
        grace: Duration::ZERO,
        delete_delay: Duration::ZERO,
        // Every pack with a dead byte: the repack must write.
        max_unused_percent: 0,
    };
    let mas = f.env.repo_dir();
    let stored = |sub: &str| files_under(&mas.join(sub));
    let (packs, index) = (stored("packs"), stored("index"));
    assert!(!packs.is_empty() && !index.is_empty());
    f.faulty.set_capacity(Some(1 << 20));
    let err = prune(&f.env.repo, &f.env.state, opts.clone())
        .await
        .unwrap_err();
    assert_eq!(err.storage_class(), Some(AlertClass::Capacity), "{err}");
    assert!(stored("packs").is_superset(&packs), "a pack was deleted");
    assert!(stored("index").is_superset(&index), "a segment was deleted");

    f.faulty.set_capacity(None);
    let plan = prune(&f.env.repo, &f.env.state, opts).await.unwrap();
    assert!(!plan.repack.is_empty(), "{plan:?}");
    assert_eq!(plan.unused_bytes_after, 0, "{plan:?}");
    let out = f.env.path("out");
    restore(&f.env, &b2, &out, Some("s")).await.unwrap();
    assert_same_tree(&src, &out);
}
