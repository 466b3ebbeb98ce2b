//! Attacks on the lock protocol, each the way a second host, a container or a slow share would
//! bring it: a live lock that merely carries this host's name, a live holder whose clock is behind,
//! two writers racing through the acquisition, and a holder whose refresh fails.

mod lock_support;

use ibs_repo::clock::{Clock, ManualClock};
use ibs_repo::lock::{acquire, hostname, LockKind};
use ibs_repo::RepoError;
use ibs_storage::faulty::{Fault, FaultyStorage, Op as FOp};
use ibs_storage::memory::MemoryStorage;
use ibs_storage::{DynStorage, ErrorKind, ObjectKey};
use lock_support::{Hooked, Op};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(1_800_000_000))
}

/// A pid that belongs to no process on this host.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// Writes a lock object the way a holder on another machine (or in another pid namespace) would,
/// refreshing it with an increasing counter while `alive` is set, every `every`.
fn remote_holder(
    s: DynStorage,
    name: &str,
    host: String,
    pid: u32,
    refreshed: i64,
    alive: Arc<AtomicBool>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    let key = ObjectKey::new(format!("locks/{name}")).unwrap();
    tokio::spawn(async move {
        let mut seq = 0u64;
        while alive.load(Ordering::SeqCst) {
            // Old and new readers alike parse this: unknown fields are ignored, missing optional
            // ones default.
            let body = serde_json::json!({
                "kind": "exclusive",
                "operation": "backup",
                "host": host,
                "pid": pid,
                "pid_start": 4242u64,
                "boot_id": "0b5e55ed-0000-4000-8000-00000000abcd",
                "pid_ns": "pid:[4026530000]",
                "created": refreshed,
                "refreshed": refreshed + seq as i64,
                "seq": seq,
                "ticket": 1u64,
                "phase": "held",
            });
            s.put(&key, serde_json::to_vec(&body).unwrap().into())
                .await
                .unwrap();
            seq += 1;
            tokio::time::sleep(every).await;
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_live_lock_with_this_hosts_name_and_a_foreign_pid_is_not_deleted() {
    let s: DynStorage = Arc::new(MemoryStorage::new());
    let c = clock();
    let alive = Arc::new(AtomicBool::new(true));
    // A container or a second machine called like this one: same hostname, a pid that means
    // nothing here, and a holder that is very much alive (it keeps refreshing).
    let holder = remote_holder(
        s.clone(),
        "live-elsewhere",
        hostname(),
        dead_pid(),
        c.now_unix(),
        alive.clone(),
        Duration::from_secs(20),
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    let got = acquire(&s, c.clone(), LockKind::Exclusive, "prune", Duration::ZERO).await;
    let still_there = s
        .stat(&ObjectKey::new("locks/live-elsewhere").unwrap())
        .await
        .is_ok();
    alive.store(false, Ordering::SeqCst);
    holder.abort();
    assert!(
        still_there,
        "a live holder's lock was deleted because it carries this host's name"
    );
    let err = got.err().expect("a second exclusive holder was admitted");
    assert!(matches!(err, RepoError::Locked { .. }), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_live_holder_whose_clock_is_behind_is_not_judged_stale() {
    let s: DynStorage = Arc::new(MemoryStorage::new());
    let c = clock();
    let alive = Arc::new(AtomicBool::new(true));
    // Its clock is two hours behind ours, so its own "refreshed" times look old to us; it refreshes
    // every 20 s all the same.
    let holder = remote_holder(
        s.clone(),
        "behind",
        "other-host.example".into(),
        77,
        c.now_unix() - 7200,
        alive.clone(),
        Duration::from_secs(20),
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    // Wait 10 minutes for it: it stays live the whole time, so the wait must end in Locked.
    let got = acquire(
        &s,
        c.clone(),
        LockKind::Exclusive,
        "backup",
        Duration::from_secs(600),
    )
    .await;
    let still_there = s
        .stat(&ObjectKey::new("locks/behind").unwrap())
        .await
        .is_ok();
    alive.store(false, Ordering::SeqCst);
    holder.abort();
    assert!(still_there, "a live, refreshing lock was deleted");
    assert!(
        matches!(got, Err(RepoError::Locked { .. })),
        "a second exclusive holder was admitted next to a live one"
    );
}

/// Contender A lists, then stalls (a slow share) until contender B has finished acquiring; then A
/// goes on. Whoever lists last must not conclude that it holds the lock too.
#[tokio::test(start_paused = true)]
async fn two_writers_racing_through_acquisition_never_both_hold() {
    race_with_a_stalled_put(1).await;
}

/// Contender A has published that it is choosing a ticket, read the others, and stalls before it
/// publishes its ticket; B comes and goes meanwhile. B must not ignore a contender that is still
/// choosing: A's ticket may turn out as small as B's.
#[tokio::test(start_paused = true)]
async fn a_contender_still_choosing_its_ticket_is_waited_for() {
    race_with_a_stalled_put(2).await;
}

/// A's `stalled_put`-th write waits until B's acquisition has ended, whichever way.
async fn race_with_a_stalled_put(stalled_put: u32) {
    for round in 0..24 {
        let shared: DynStorage = Arc::new(MemoryStorage::new());
        let b_done = Arc::new(Notify::new());
        let puts = Arc::new(AtomicU32::new(0));
        let hook = {
            let b_done = b_done.clone();
            let puts = puts.clone();
            Arc::new(move |op: Op, _k: &ObjectKey| {
                let b_done = b_done.clone();
                let stall = op == Op::Put && puts.fetch_add(1, Ordering::SeqCst) + 1 == stalled_put;
                Box::pin(async move {
                    if stall {
                        b_done.notified().await;
                    }
                })
                    as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
            })
        };
        let a_store = Hooked::over(shared.clone(), hook);
        let c = clock();
        let a = tokio::spawn({
            let c = c.clone();
            async move {
                acquire(
                    &a_store,
                    c,
                    LockKind::Exclusive,
                    "prune",
                    Duration::from_secs(5),
                )
                .await
            }
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        let b = acquire(
            &shared,
            c.clone(),
            LockKind::Exclusive,
            "backup",
            Duration::from_secs(1),
        )
        .await;
        b_done.notify_one();
        let a = tokio::time::timeout(Duration::from_secs(3), a).await;
        let a_holds = matches!(&a, Ok(Ok(Ok(_))));
        let b_holds = b.is_ok();
        assert!(
            !(a_holds && b_holds),
            "round {round}: two exclusive holders at once"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_holder_whose_refresh_fails_is_told_it_lost_the_lock() {
    let mem: DynStorage = Arc::new(MemoryStorage::new());
    let faulty = Arc::new(FaultyStorage::new(mem.clone()));
    let s: DynStorage = faulty.clone();
    let guard = acquire(&s, clock(), LockKind::Exclusive, "backup", Duration::ZERO)
        .await
        .unwrap();
    // From now on the share refuses writes (permissions changed, quota, a dead session that does
    // not come back): every refresh fails.
    let from = faulty.count(FOp::Put) + 1;
    faulty.fail_from(
        FOp::Put,
        from,
        Fault::Error {
            kind: ErrorKind::Authentication,
            transient: false,
        },
    );
    tokio::time::sleep(Duration::from_secs(3600)).await;
    faulty.clear();
    let released = guard.release().await;
    assert!(
        released.is_err(),
        "the holder went on for an hour without a refreshed lock and was never told"
    );
}
