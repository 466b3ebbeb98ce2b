//! Lock objects: exclusion, stale-lock recovery for dead local processes and for holders that stop
//! refreshing, release, locks of older versions, and the fence that stops a holder whose lock is lost.

use ibs_repo::clock::{Clock, ManualClock};
use ibs_repo::lock::{
    acquire, acquire_with, list, FenceSlot, FencedStorage, Identity, LockConfig, LockKind,
    LockTiming, SETTLE_MILLIS, STALE_SECS, VALID_SECS,
};
use ibs_repo::RepoError;
use ibs_storage::faulty::{Fault, FaultyStorage, Op};
use ibs_storage::memory::MemoryStorage;
use ibs_storage::{DynStorage, ErrorKind, ObjectKey};
use std::sync::Arc;
use std::time::Duration;

mod lock_support;

fn setup() -> (DynStorage, Arc<ManualClock>) {
    (
        Arc::new(MemoryStorage::new()),
        Arc::new(ManualClock::new(1_800_000_000)),
    )
}

async fn plant(storage: &DynStorage, name: &str, body: serde_json::Value) {
    storage
        .put(
            &ObjectKey::new(format!("locks/{name}")).unwrap(),
            serde_json::to_vec(&body).unwrap().into(),
        )
        .await
        .unwrap();
}

/// A lock body as this version writes it, for identity `who`.
fn body(who: &Identity, now: i64) -> serde_json::Value {
    serde_json::json!({
        "kind": "exclusive", "operation": "backup", "host": who.host, "pid": who.pid,
        "pid_start": who.pid_start, "boot_id": who.boot_id, "pid_ns": who.pid_ns,
        "created": now, "refreshed": now, "seq": 1, "ticket": 1, "phase": "held",
    })
}

async fn exists(s: &DynStorage, name: &str) -> bool {
    s.stat(&ObjectKey::new(format!("locks/{name}")).unwrap())
        .await
        .is_ok()
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
    assert!(
        s.list("locks/").await.unwrap().is_empty(),
        "a failed request left its lock"
    );
}

#[tokio::test]
async fn a_dead_local_holder_is_cleared_at_once() {
    let (s, clock) = setup();
    // A process of this kernel and pid namespace that has exited.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = Identity {
        pid: child.id(),
        pid_start: Some(1),
        ..Identity::current()
    };
    child.wait().unwrap();
    plant(&s, "dead", body(&dead, clock.now_unix())).await;
    let g = acquire(
        &s,
        clock.clone(),
        LockKind::Exclusive,
        "backup",
        Duration::ZERO,
    )
    .await
    .expect("the dead holder's lock is stale");
    assert!(!exists(&s, "dead").await);
    g.release().await.unwrap();
}

#[tokio::test]
async fn a_live_local_holder_is_respected() {
    let (s, clock) = setup();
    plant(&s, "live", body(&Identity::current(), clock.now_unix())).await;
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
    assert!(exists(&s, "live").await);
}

#[tokio::test(start_paused = true)]
async fn a_remote_holder_that_stops_refreshing_is_stale_after_the_timeout_seen_from_here() {
    let (s, clock) = setup();
    // Its own timestamps say it refreshed a moment ago (its clock may be anything): only what we
    // observe counts.
    plant(
        &s,
        "remote",
        body(
            &Identity::foreign("other-host.example", 1),
            clock.now_unix() + 86_400,
        ),
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
    let t0 = tokio::time::Instant::now();
    let g = acquire(
        &s,
        clock.clone(),
        LockKind::Exclusive,
        "backup",
        Duration::from_secs(STALE_SECS + 60),
    )
    .await
    .expect("a lock nobody refreshes becomes stale");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(STALE_SECS - 5),
        "judged stale after only {waited:?}"
    );
    assert!(!exists(&s, "remote").await);
    g.release().await.unwrap();
}

#[tokio::test]
async fn a_lock_written_by_an_older_version_is_respected() {
    let (s, clock) = setup();
    // No boot id, no phase, no ticket: an older ibs on another host holds it.
    plant(
        &s,
        "old",
        serde_json::json!({
            "kind": "exclusive", "operation": "prune", "host": "old-host", "pid": 9,
            "pid_start": null, "created": 1, "refreshed": 1,
        }),
    )
    .await;
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
    assert!(err.to_string().contains("old-host"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_lost_lock_fences_every_later_write_with_a_typed_error() {
    let mem: DynStorage = Arc::new(MemoryStorage::new());
    let faulty = Arc::new(FaultyStorage::new(mem.clone()));
    let raw: DynStorage = faulty.clone();
    let slot = Arc::new(FenceSlot::default());
    let repo_view: DynStorage = Arc::new(FencedStorage::new(raw.clone(), slot.clone()));
    let timing = LockTiming {
        refresh: Duration::from_secs(30),
        ..LockTiming::default()
    };
    let mut guard = acquire_with(
        &raw,
        Arc::new(ManualClock::new(0)),
        LockKind::Exclusive,
        "prune",
        Duration::ZERO,
        &LockConfig {
            timing,
            ..LockConfig::default()
        },
    )
    .await
    .unwrap();
    guard.arm(slot.clone());
    let data = ObjectKey::new("packs/00/aa").unwrap();
    repo_view.put(&data, "before".into()).await.unwrap();
    // The share starts refusing writes: the next refresh fails.
    let from = faulty.count(Op::Put) + 1;
    faulty.fail_from(
        Op::Put,
        from,
        Fault::Error {
            kind: ErrorKind::Capacity,
            transient: false,
        },
    );
    tokio::time::sleep(Duration::from_secs(31)).await;
    faulty.clear();
    // The share works again, but the holder must not write: someone may judge its lock stale.
    let refused = repo_view.put(&data, "after".into()).await.unwrap_err();
    assert!(
        refused.to_string().contains("lock of prune was lost"),
        "{refused}"
    );
    assert!(repo_view.delete(&data).await.is_err());
    assert_eq!(&mem.get(&data).await.unwrap()[..], b"before");
    assert!(matches!(guard.check(), Err(RepoError::LockLost { .. })));
    let released = guard.release().await.unwrap_err();
    assert!(matches!(released, RepoError::LockLost { .. }), "{released}");
    // Once the guard is gone, the handle writes again (nothing is held through it).
    repo_view.put(&data, "later".into()).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_holder_whose_refresh_hangs_stops_before_others_may_take_over() {
    let mem: DynStorage = Arc::new(MemoryStorage::new());
    let faulty = Arc::new(FaultyStorage::new(mem.clone()));
    let raw: DynStorage = faulty.clone();
    let mut guard = acquire(
        &raw,
        Arc::new(ManualClock::new(0)),
        LockKind::Exclusive,
        "backup",
        Duration::ZERO,
    )
    .await
    .unwrap();
    let slot = Arc::new(FenceSlot::default());
    guard.arm(slot.clone());
    // The share answers, but only after 10 minutes: no refresh completes. The holder must give up
    // within its validity window, which ends well before anyone may judge its lock stale.
    faulty.set_latency(Some(Duration::from_secs(600)));
    tokio::time::sleep(Duration::from_secs(VALID_SECS - 1)).await;
    assert!(slot.check().is_ok(), "still within the validity window");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let err = slot.check().unwrap_err();
    assert!(matches!(err, RepoError::LockLost { .. }), "{err}");
}

/// Someone with write access plants an object under `locks/` that is no lock and puts it under an
/// object lock (or a policy refuses its delete). It counts as an exclusive lock until it is stale;
/// then its refused delete leaves it in place, out of every view, instead of failing every
/// operation of the repository from then on.
#[tokio::test(start_paused = true)]
async fn a_planted_lock_whose_delete_is_refused_stops_nothing_once_stale() {
    for kind in [ErrorKind::Locked, ErrorKind::Authentication] {
        let (mem, clock) = setup();
        let faulty = Arc::new(FaultyStorage::new(mem));
        let s: DynStorage = faulty.clone();
        let planted = format!("planted-{kind:?}");
        s.put(
            &ObjectKey::new(format!("locks/{planted}")).unwrap(),
            b"not a lock, locked until 2099".to_vec().into(),
        )
        .await
        .unwrap();
        faulty.refuse_deletes_under(&format!("locks/{planted}"), kind);
        let err = acquire(
            &s,
            clock.clone(),
            LockKind::Append,
            "backup",
            Duration::ZERO,
        )
        .await
        .err()
        .unwrap();
        assert!(err.to_string().contains("unreadable lock object"), "{err}");
        let g = acquire(
            &s,
            clock.clone(),
            LockKind::Exclusive,
            "check",
            Duration::from_secs(STALE_SECS + 60),
        )
        .await
        .unwrap_or_else(|e| panic!("{kind:?}: a stale planted lock whose delete is refused: {e}"));
        assert!(exists(&s, &planted).await, "its delete was refused");
        let live = list(&s, clock.as_ref()).await.unwrap();
        assert!(
            live.iter().all(|l| !l.unreadable && l.operation == "check"),
            "only the holder's own lock is live: {live:?}"
        );
        g.release().await.unwrap();
        // Every later operation of this process gets in at once.
        let g = acquire(
            &s,
            clock.clone(),
            LockKind::Append,
            "backup",
            Duration::ZERO,
        )
        .await
        .expect("the planted object is known stale");
        g.release().await.unwrap();
    }
}

/// The settle delay is for listings that lag behind writes: a backend whose listing shows every
/// completed put grants an uncontended lock without it, one that lags still waits it out.
#[tokio::test(start_paused = true)]
async fn the_settle_delay_is_waited_only_where_listings_lag() {
    let (s, clock) = setup();
    let t0 = tokio::time::Instant::now();
    let g = acquire(
        &s,
        clock.clone(),
        LockKind::Exclusive,
        "prune",
        Duration::ZERO,
    )
    .await
    .expect("an uncontended lock");
    assert!(
        t0.elapsed() < Duration::from_millis(SETTLE_MILLIS),
        "a consistent listing waited {:?} for an uncontended lock",
        t0.elapsed()
    );
    g.release().await.unwrap();

    let s = lock_support::Hooked::lagging(
        Arc::new(MemoryStorage::new()),
        Arc::new(|_, _| Box::pin(async {})),
    );
    assert!(!s.capabilities().list_after_write);
    let t0 = tokio::time::Instant::now();
    let g = acquire(&s, clock, LockKind::Exclusive, "prune", Duration::ZERO)
        .await
        .expect("an uncontended lock");
    assert!(
        t0.elapsed() >= Duration::from_millis(SETTLE_MILLIS),
        "a lagging listing was trusted after {:?}",
        t0.elapsed()
    );
    g.release().await.unwrap();
}
