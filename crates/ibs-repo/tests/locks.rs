//! Lock objects: exclusion, stale-lock recovery for dead processes and expired holders, and release.

use ibs_repo::clock::{Clock, ManualClock};
use ibs_repo::lock::{acquire, hostname, list, LockInfo, LockKind, EXPIRE_SECS};
use ibs_repo::RepoError;
use ibs_storage::memory::MemoryStorage;
use ibs_storage::{DynStorage, ObjectKey};
use std::sync::Arc;
use std::time::Duration;

fn setup() -> (DynStorage, Arc<ManualClock>) {
    (
        Arc::new(MemoryStorage::new()),
        Arc::new(ManualClock::new(1_800_000_000)),
    )
}

async fn plant(storage: &DynStorage, name: &str, info: &LockInfo) {
    storage
        .put(
            &ObjectKey::new(format!("locks/{name}")).unwrap(),
            serde_json::to_vec(info).unwrap().into(),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn exclusive_excludes_and_shared_coexist() {
    let (s, clock) = setup();
    let a = acquire(
        &s,
        clock.clone(),
        LockKind::Shared,
        "restore",
        Duration::ZERO,
    )
    .await
    .unwrap();
    let b = acquire(&s, clock.clone(), LockKind::Shared, "check", Duration::ZERO)
        .await
        .unwrap();
    let err = acquire(
        &s,
        clock.clone(),
        LockKind::Exclusive,
        "backup",
        Duration::ZERO,
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(err, RepoError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("shared lock held by"), "{err}");
    a.release().await.unwrap();
    b.release().await.unwrap();
    let x = acquire(
        &s,
        clock.clone(),
        LockKind::Exclusive,
        "backup",
        Duration::ZERO,
    )
    .await
    .unwrap();
    let err = acquire(
        &s,
        clock.clone(),
        LockKind::Shared,
        "restore",
        Duration::ZERO,
    )
    .await
    .err()
    .unwrap();
    assert!(
        err.to_string().contains("exclusive lock held by backup"),
        "{err}"
    );
    x.release().await.unwrap();
    assert!(list(&s, clock.as_ref()).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_dead_local_holder_is_cleared() {
    let (s, clock) = setup();
    // A process that has exited: spawn and reap one to get a pid that no longer exists.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    let now = clock.now_unix();
    plant(
        &s,
        "dead",
        &LockInfo {
            kind: LockKind::Exclusive,
            operation: "backup".into(),
            host: hostname(),
            pid: dead_pid,
            pid_start: Some(1),
            created: now,
            refreshed: now,
        },
    )
    .await;
    let g = acquire(
        &s,
        clock.clone(),
        LockKind::Exclusive,
        "backup",
        Duration::ZERO,
    )
    .await
    .expect("the dead holder's lock is stale");
    g.release().await.unwrap();
}

#[tokio::test]
async fn a_live_holder_blocks_until_it_expires() {
    let (s, clock) = setup();
    let now = clock.now_unix();
    // A live process on another host: only expiry frees it.
    plant(
        &s,
        "remote",
        &LockInfo {
            kind: LockKind::Exclusive,
            operation: "prune".into(),
            host: "other-host.example".into(),
            pid: 1,
            pid_start: None,
            created: now,
            refreshed: now,
        },
    )
    .await;
    let err = acquire(
        &s,
        clock.clone(),
        LockKind::Exclusive,
        "backup",
        Duration::ZERO,
    )
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains("other-host.example"), "{err}");
    clock.advance(EXPIRE_SECS + 1);
    acquire(
        &s,
        clock.clone(),
        LockKind::Exclusive,
        "backup",
        Duration::ZERO,
    )
    .await
    .expect("expired")
    .release()
    .await
    .unwrap();
}

#[tokio::test]
async fn a_live_local_holder_is_respected() {
    let (s, clock) = setup();
    let now = clock.now_unix();
    let me = std::process::id();
    plant(
        &s,
        "live",
        &LockInfo {
            kind: LockKind::Exclusive,
            operation: "backup".into(),
            host: hostname(),
            pid: me,
            pid_start: ibs_repo::lock::process_start(me),
            created: now,
            refreshed: now,
        },
    )
    .await;
    assert!(acquire(
        &s,
        clock.clone(),
        LockKind::Exclusive,
        "backup",
        Duration::ZERO
    )
    .await
    .is_err());
}
