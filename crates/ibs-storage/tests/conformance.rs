//! Every in-tree backend that needs no server passes the conformance suite; the decorators pass it too
//! when they inject nothing.

use ibs_storage::conformance::{foreign_files, no_object_lock, run_all};
use ibs_storage::faulty::{Fault, FaultyStorage, Op};
use ibs_storage::memory::MemoryStorage;
use ibs_storage::{ErrorKind, LocalStorage, ObjectKey, RetryPolicy, RetryStorage, Storage};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn local_folder_passes_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStorage::open(dir.path()).unwrap();
    run_all(&s, 24 << 20).await;
    no_object_lock(&s).await;
    let root = dir.path().to_path_buf();
    foreign_files(&s, &|rel, data| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    })
    .await;
}

#[tokio::test]
async fn local_delete_foreign_never_leaves_the_folder() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("victim file.txt"), b"keep").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("link dir")).unwrap();
    let s = LocalStorage::open(dir.path()).unwrap();
    assert!(
        s.list_foreign().await.unwrap().is_empty(),
        "a symlinked folder is not walked"
    );
    let err = s
        .delete_foreign("link dir/victim file.txt")
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Invalid, "{err}");
    assert!(outside.path().join("victim file.txt").exists());
}

#[tokio::test]
async fn memory_passes_conformance() {
    run_all(&MemoryStorage::new(), 4 << 20).await;
    no_object_lock(&MemoryStorage::new()).await;
}

#[tokio::test]
async fn retry_and_faulty_decorators_pass_conformance_when_idle() {
    let inner: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let faulty: Arc<dyn Storage> = Arc::new(FaultyStorage::new(inner));
    let s = RetryStorage::new(faulty, RetryPolicy::default());
    run_all(&s, 1 << 20).await;
    no_object_lock(&s).await;
}

#[test]
fn missing_folder_is_a_path_error() {
    let err = LocalStorage::open("/nonexistent/ibs/folder").unwrap_err();
    assert_eq!(err.kind, ErrorKind::Path);
}

#[tokio::test]
async fn vanished_folder_is_a_path_error_on_put() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let s = LocalStorage::create(&root).unwrap();
    std::fs::remove_dir_all(&root).unwrap();
    let err = s
        .put(&ObjectKey::new("x").unwrap(), "y".into())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Path, "{err}");
}

#[tokio::test]
async fn killed_writer_temporaries_are_invisible_and_removable() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStorage::open(dir.path()).unwrap();
    std::fs::create_dir_all(dir.path().join("packs")).unwrap();
    std::fs::write(dir.path().join("packs/.ibs-tmp-123-0-abc"), b"partial").unwrap();
    assert!(
        s.list("").await.unwrap().is_empty(),
        "a temporary is never listed"
    );
    assert_eq!(s.remove_stale_temporaries(Duration::ZERO).await.unwrap(), 1);
    assert!(!dir.path().join("packs/.ibs-tmp-123-0-abc").exists());
}

#[tokio::test]
async fn retry_recovers_from_transient_errors_and_surfaces_permanent_ones() {
    let inner: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let faulty = Arc::new(FaultyStorage::new(inner));
    faulty.fail_nth(
        Op::Put,
        1,
        Fault::Error {
            kind: ErrorKind::Connectivity,
            transient: true,
        },
    );
    faulty.fail_nth(Op::Put, 2, Fault::TornWrite);
    let policy = RetryPolicy {
        timed_out_attempts: 2,
        attempts: 4,
        initial_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    };
    let retry = RetryStorage::new(faulty.clone(), policy);
    let k = ObjectKey::new("obj").unwrap();
    retry
        .put(&k, "whole".into())
        .await
        .expect("third attempt succeeds");
    assert_eq!(
        retry.get(&k).await.unwrap(),
        "whole",
        "the torn prefix was replaced by the retried put"
    );
    assert_eq!(faulty.injected(), 2);

    faulty.fail_from(
        Op::Put,
        1,
        Fault::Error {
            kind: ErrorKind::Capacity,
            transient: false,
        },
    );
    let err = retry.put(&k, "again".into()).await.unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::Capacity,
        "a permanent error is surfaced at once"
    );
    assert_eq!(faulty.injected(), 3, "a permanent error is not retried");
}

#[tokio::test]
async fn faulty_capacity_and_list_lag() {
    let inner: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let faulty = FaultyStorage::new(inner);
    faulty.set_capacity(Some(10));
    faulty
        .put(&ObjectKey::new("a").unwrap(), "12345".into())
        .await
        .unwrap();
    let err = faulty
        .put(&ObjectKey::new("b").unwrap(), "123456".into())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Capacity);
    faulty.set_capacity(None);
    faulty.set_list_lag(1);
    faulty
        .put(&ObjectKey::new("c").unwrap(), "x".into())
        .await
        .unwrap();
    let names: Vec<_> = faulty
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key.to_string())
        .collect();
    assert_eq!(
        names,
        ["a"],
        "the most recent put is hidden by the lagging listing"
    );
}

/// A listing runs while other processes create (temporary name, then rename) and delete objects in
/// the same folder, as lock objects are: an entry that vanishes between the directory read and its
/// size is simply not listed; the listing itself never fails with `NotFound`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_listing_tolerates_objects_that_vanish_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStorage::open(dir.path()).unwrap();
    let locks = dir.path().join("locks");
    std::fs::create_dir_all(&locks).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churners: Vec<_> = (0..2)
        .map(|t| {
            let locks = locks.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let tmp = locks.join(format!(".ibs-tmp-{t}-{i}"));
                    let fin = locks.join(format!("l{t}-{}", i % 64));
                    std::fs::write(&tmp, b"{}").unwrap();
                    std::fs::rename(&tmp, &fin).unwrap();
                    if i % 2 == 1 {
                        let _ = std::fs::remove_file(locks.join(format!("l{t}-{}", (i - 1) % 64)));
                    }
                    i += 1;
                }
            })
        })
        .collect();
    let started = std::time::Instant::now();
    let mut failure = None;
    let mut listings = 0;
    while started.elapsed() < Duration::from_secs(4) {
        match s.list("locks/").await {
            Ok(_) => listings += 1,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    churners.into_iter().for_each(|h| h.join().unwrap());
    assert!(
        failure.is_none(),
        "listing {listings} failed: {}",
        failure.unwrap()
    );
}
