//! The prune lock kind and the lock side of the two-phase prune (format spec §19): prune is
//! compatible with append and with nothing else; an append lock names the plans listed and opened
//! after it was published; a sweep waits for every append lock that does not name its plans; a
//! backup that cannot open a plan a sweeper announces stops (ADR 0044).

use ibs_repo::clock::ManualClock;
use ibs_repo::crypto::SymKey;
use ibs_repo::lock::{
    acquire_noting, acquire_with, appends_unaware_of, conflicts, Identity, LockConfig, LockKind,
    LockTiming,
};
use ibs_repo::plan::PrunePlanObject;
use ibs_repo::RepoError;
use ibs_storage::memory::MemoryStorage;
use ibs_storage::{DynStorage, ObjectKey};
use std::sync::Arc;
use std::time::Duration;

fn cfg() -> LockConfig {
    LockConfig {
        timing: LockTiming {
            settle: Duration::from_millis(5),
            poll: Duration::from_millis(10),
            ..LockTiming::default()
        },
        identity: Identity::current(),
    }
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(1_800_000_000))
}

async fn lock_names(s: &DynStorage) -> Vec<String> {
    s.list("locks/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key.name().to_owned())
        .collect()
}

async fn put_raw_plan(s: &DynStorage, name: &str, bytes: &[u8]) {
    s.put(
        &ObjectKey::new(format!("plans/{name}")).unwrap(),
        bytes.to_vec().into(),
    )
    .await
    .unwrap();
}

async fn put_plan(s: &DynStorage, name: &str, mk: &SymKey) {
    let mut p = PrunePlanObject::new(1_800_000_000, "h".into(), &[], &[]);
    p.name = name.to_owned();
    put_raw_plan(s, name, &p.to_bytes(mk)).await;
}

#[test]
fn prune_is_compatible_with_append_only() {
    use LockKind::*;
    let all = [Shared, Append, Prune, Exclusive];
    let granted: Vec<(LockKind, LockKind)> = all
        .iter()
        .flat_map(|a| all.iter().map(move |b| (*a, *b)))
        .filter(|(a, b)| !conflicts(*a, *b))
        .collect();
    assert_eq!(
        granted,
        vec![
            (Shared, Shared),
            (Append, Append),
            (Append, Prune),
            (Prune, Append)
        ]
    );
}

#[tokio::test]
async fn prune_runs_beside_backups_but_not_beside_another_prune_or_a_reader() {
    let s: DynStorage = Arc::new(MemoryStorage::new());
    let c = clock();
    let cfg = cfg();
    let a = acquire_with(
        &s,
        c.clone(),
        LockKind::Append,
        "backup",
        Duration::ZERO,
        &cfg,
    )
    .await
    .unwrap();
    let p = acquire_with(
        &s,
        c.clone(),
        LockKind::Prune,
        "prune",
        Duration::ZERO,
        &cfg,
    )
    .await
    .expect("prune beside a backup");
    let a2 = acquire_with(
        &s,
        c.clone(),
        LockKind::Append,
        "backup",
        Duration::ZERO,
        &cfg,
    )
    .await
    .expect("a backup beside prune");
    for (kind, op) in [
        (LockKind::Prune, "prune"),
        (LockKind::Shared, "check"),
        (LockKind::Exclusive, "rewrap"),
    ] {
        match acquire_with(&s, c.clone(), kind, op, Duration::ZERO, &cfg).await {
            // Another prune can only be held back by the prune (appends are compatible with it).
            Err(RepoError::Locked { holder }) => assert!(
                kind != LockKind::Prune || holder.contains("prune lock held"),
                "{op} waits for prune: {holder}"
            ),
            Err(e) => panic!("{op}: {e}"),
            Ok(_) => panic!("{op} was granted beside prune"),
        }
    }
    for g in [a, p, a2] {
        g.release().await.unwrap();
    }
    assert!(lock_names(&s).await.is_empty());
}

/// The ordering invariant: a plan written while a backup's lock is published but not yet held is
/// named by the held lock; a sweep does not wait for the lock before it is held nor once it names
/// the plan, and does wait for a held lock that does not name a plan (written after it was held).
#[tokio::test]
async fn an_append_lock_names_the_plans_listed_after_it_was_published() {
    let s: DynStorage = Arc::new(MemoryStorage::new());
    let c = clock();
    let cfg = cfg();
    // A reader holds the repository, so the backup's lock is published and then waits.
    let reader = acquire_with(
        &s,
        c.clone(),
        LockKind::Shared,
        "check",
        Duration::ZERO,
        &cfg,
    )
    .await
    .unwrap();
    let reader_name = reader.name().to_owned();
    let mk = SymKey::random();
    let backup = {
        let (s, c, cfg, mk) = (s.clone(), c.clone(), cfg.clone(), mk.clone());
        tokio::spawn(async move {
            acquire_noting(
                &s,
                c,
                LockKind::Append,
                "backup",
                Duration::from_secs(60),
                &cfg,
                Some(&mk),
            )
            .await
        })
    };
    // Wait (on the storage, not on time) until the backup's lock is published.
    while lock_names(&s).await.len() < 2 {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let plan = "0123456789abcdef0123456789abcdef".to_owned();
    put_plan(&s, &plan, &mk).await;
    // And one that does not open: honoured by nobody, named by no lock.
    let junk = "00000000000000000000000000000bad".to_owned();
    put_raw_plan(&s, &junk, b"IBSPLN\x01\x00not sealed").await;
    let timing = cfg.timing.clone();
    // A backup not yet holding its lock does not hold the sweep back (it lists the plans once it
    // holds the lock): otherwise a sweep could wait for a backup that waits for a reader queued
    // behind the sweeper.
    let unaware = appends_unaware_of(&s, std::slice::from_ref(&plan), None, &timing)
        .await
        .unwrap();
    assert!(unaware.is_empty(), "{unaware:?}");
    reader.release().await.unwrap();
    let guard = backup.await.unwrap().unwrap();
    assert_eq!(guard.plans(), std::slice::from_ref(&plan));
    let rejected = &guard.plan_reading().rejected;
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0].name, junk);
    assert!(!lock_names(&s).await.contains(&reader_name));
    let unaware = appends_unaware_of(&s, std::slice::from_ref(&plan), None, &timing)
        .await
        .unwrap();
    assert!(unaware.is_empty(), "{unaware:?}");
    // A second plan, written after the backup held its lock: it may not honour it.
    let later = "fedcba9876543210fedcba9876543210".to_owned();
    let unaware = appends_unaware_of(&s, &[plan.clone(), later], None, &timing)
        .await
        .unwrap();
    assert_eq!(unaware.len(), 1);
    guard.release().await.unwrap();
}

/// A lock object that does not parse (a newer build's, perhaps a backup) holds a sweep back.
#[tokio::test]
async fn an_unreadable_lock_holds_the_sweep_back() {
    let s: DynStorage = Arc::new(MemoryStorage::new());
    s.put(
        &ObjectKey::new("locks/0000000000000000000000000000ffff").unwrap(),
        br#"{"kind":"someday","phase":"held"}"#.to_vec().into(),
    )
    .await
    .unwrap();
    let plan = "0123456789abcdef0123456789abcdef".to_owned();
    let unaware = appends_unaware_of(&s, &[plan], None, &LockTiming::default())
        .await
        .unwrap();
    assert_eq!(unaware.len(), 1);
    assert!(unaware[0].1.unreadable);
}

/// A plan the sweeper opens and a backup cannot (a transport fault, a server lying to one client):
/// the backup does not name it, so a sweep waits for it; and a backup that becomes held after the
/// sweeper's check sees the sweeper's announcement and stops instead of deduplicating against
/// what the plan may mark. A plan announced by nobody does not stop it.
#[tokio::test]
async fn a_backup_that_cannot_open_a_plan_a_sweeper_announces_stops() {
    let s: DynStorage = Arc::new(MemoryStorage::new());
    let (c, cfg) = (clock(), cfg());
    let plan = "0123456789abcdef0123456789abcdef".to_owned();
    // Sealed under a key the backup does not hold: to it, the plan does not open.
    let sweeper_key = SymKey::random();
    put_plan(&s, &plan, &sweeper_key).await;
    let backup_key = SymKey::random();
    let backup = |wait| {
        let (s, c, cfg, k) = (s.clone(), c.clone(), cfg.clone(), backup_key.clone());
        async move { acquire_noting(&s, c, LockKind::Append, "backup", wait, &cfg, Some(&k)).await }
    };
    let prune = acquire_with(
        &s,
        c.clone(),
        LockKind::Prune,
        "prune",
        Duration::ZERO,
        &cfg,
    )
    .await
    .unwrap();
    // Before the announcement: the backup skips the plan, and a sweep of it waits for the backup.
    let b = backup(Duration::ZERO).await.unwrap();
    assert!(b.plans().is_empty());
    assert_eq!(b.plan_reading().rejected[0].name, plan);
    let unaware = appends_unaware_of(
        &s,
        std::slice::from_ref(&plan),
        Some(prune.name()),
        &cfg.timing,
    )
    .await
    .unwrap();
    assert_eq!(unaware.len(), 1, "{unaware:?}");
    b.release().await.unwrap();
    // Another plan announced: no reason to stop.
    prune
        .announce_sweep(&["fedcba9876543210fedcba9876543210".to_owned()])
        .await
        .unwrap();
    backup(Duration::ZERO)
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    // This plan announced: a backup that cannot open it stops, naming the sweeper and the plan,
    // and leaves no lock behind.
    prune
        .announce_sweep(std::slice::from_ref(&plan))
        .await
        .unwrap();
    let e = backup(Duration::ZERO).await.err().expect("must stop");
    assert!(matches!(e, RepoError::Locked { .. }), "{e}");
    let m = e.to_string();
    assert!(
        m.contains("sweeping prune plan") && m.contains(&plan),
        "{m}"
    );
    assert_eq!(lock_names(&s).await, vec![prune.name().to_owned()]);
    // A backup that opens the plan honours it and is not stopped.
    let honours = acquire_noting(
        &s,
        c.clone(),
        LockKind::Append,
        "backup",
        Duration::ZERO,
        &cfg,
        Some(&sweeper_key),
    )
    .await
    .unwrap();
    assert_eq!(honours.plans(), std::slice::from_ref(&plan));
    honours.release().await.unwrap();
    prune.release().await.unwrap();
}
