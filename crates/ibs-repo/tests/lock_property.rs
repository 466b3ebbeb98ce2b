//! A property test of the lock protocol: N contenders on one in-memory store, every storage call
//! delayed at random, on a simulated clock (a paused runtime whose time jumps to the next timer).
//! Contenders crash at random, in the middle of requesting a lock or while holding one; their
//! objects stay behind. Whatever the interleaving:
//! - never two conflicting holders at once (checked at every entry, on the simulated clock);
//! - no process deletes the lock of a contender that is still running (checked at every delete);
//! - a holder's lock stays valid for as long as it holds it (no fence trips without a fault).

mod lock_support;

use ibs_repo::clock::ManualClock;
use ibs_repo::lock::{acquire_with, Identity, LockConfig, LockKind, LockTiming};
use ibs_storage::memory::MemoryStorage;
use ibs_storage::{DynStorage, ObjectKey};
use lock_support::{Hooked, Op};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct World {
    /// Contenders inside their critical section: (id, kind).
    inside: Vec<(usize, LockKind)>,
    /// Lock key → (owner, owner still running).
    owners: HashMap<String, (usize, bool)>,
    violations: Vec<String>,
    entries: usize,
}

type Shared = Arc<Mutex<World>>;

fn w(world: &Shared) -> std::sync::MutexGuard<'_, World> {
    world.lock().unwrap()
}

fn hook(id: usize, world: Shared, seed: u64, max_delay_ms: u64) -> lock_support::Hook {
    let rng = Arc::new(Mutex::new(StdRng::seed_from_u64(seed)));
    Arc::new(move |op: Op, key: &ObjectKey| {
        // Most calls are quick; some stall (a slow share), which is what opens race windows.
        let delay = {
            let mut r = rng.lock().unwrap();
            if r.gen_bool(0.6) {
                0
            } else {
                r.gen_range(0..=max_delay_ms)
            }
        };
        let world = world.clone();
        let key = key.as_str().to_owned();
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            if !key.starts_with("locks/") {
                return;
            }
            let mut w = w(&world);
            match op {
                Op::Put => {
                    w.owners.entry(key).or_insert((id, true));
                }
                Op::Delete => {
                    if let Some(&(owner, running)) = w.owners.get(&key) {
                        if owner != id && running {
                            w.violations
                                .push(format!("contender {id} deleted the live lock of {owner}"));
                        }
                    }
                }
                _ => {}
            }
        })
    })
}

/// The table of the lock module's doc, written out independently of its `conflicts`.
fn conflicts(a: LockKind, b: LockKind) -> bool {
    use LockKind::*;
    !matches!(
        (a, b),
        (Shared, Shared) | (Append, Append) | (Append, Prune) | (Prune, Append)
    )
}

async fn contender(id: usize, store: DynStorage, world: Shared, seed: u64, rounds: usize) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let cfg = LockConfig {
        timing: LockTiming::default(),
        identity: Identity::foreign(&format!("host{id}"), 1000 + id as u32),
    };
    let clock = Arc::new(ManualClock::new(1_800_000_000));
    let crash = |world: &Shared| {
        for (_, (owner, running)) in w(world).owners.iter_mut() {
            if *owner == id {
                *running = false;
            }
        }
    };
    for round in 0..rounds {
        let kind = match rng.gen_range(0..10) {
            0..=3 => LockKind::Exclusive,
            4 => LockKind::Prune,
            5..=7 => LockKind::Append,
            _ => LockKind::Shared,
        };
        // Often no wait at all (fail and come back soon), so contenders meet in the doorway
        // again and again; sometimes long enough to outlast a crashed holder.
        // The first round always waits, so that the property below (someone gets in) is about the
        // protocol's progress, not about every contender giving up at once: with no wait, all of
        // them can meet in the doorway, see each other and back off, which is allowed.
        let wait = if round == 0 {
            Duration::from_secs(rng.gen_range(60..400))
        } else if rng.gen_bool(0.5) {
            Duration::ZERO
        } else {
            Duration::from_secs(rng.gen_range(0..400))
        };
        // Sometimes the process dies while it is still requesting the lock (never in the first
        // round, so that someone always gets in).
        let die_after =
            (round > 0 && rng.gen_bool(0.1)).then(|| Duration::from_millis(rng.gen_range(0..3000)));
        let req = acquire_with(&store, clock.clone(), kind, "op", wait, &cfg);
        let got = match die_after {
            Some(d) => match tokio::time::timeout(d, req).await {
                Ok(r) => r,
                Err(_) => {
                    crash(&world);
                    return;
                }
            },
            None => req.await,
        };
        let Ok(guard) = got else {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..2000))).await;
            continue;
        };
        {
            let mut w = w(&world);
            if let Some((other, k)) = w.inside.iter().find(|(_, k)| conflicts(*k, kind)) {
                let msg = format!("contender {id} ({kind:?}) entered while {other} ({k:?}) holds");
                w.violations.push(msg);
            }
            w.inside.push((id, kind));
            w.entries += 1;
        }
        // Mostly short, sometimes across several refreshes.
        let hold = if rng.gen_bool(0.8) { 2_000 } else { 90_000 };
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..hold))).await;
        if let Err(e) = guard.check() {
            w(&world)
                .violations
                .push(format!("contender {id} lost its lock: {e}"));
        }
        w(&world).inside.retain(|(i, _)| *i != id);
        if rng.gen_bool(0.15) {
            // Killed while holding: the object stays, nobody refreshes it any more.
            drop(guard);
            crash(&world);
            return;
        }
        if let Err(e) = guard.release().await {
            w(&world).violations.push(format!("contender {id}: {e}"));
        }
    }
}

fn simulate(n: usize, rounds: usize, max_delay_ms: u64, seed: u64) -> World {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let mem: DynStorage = Arc::new(MemoryStorage::new());
        let world: Shared = Arc::default();
        let tasks: Vec<_> = (0..n)
            .map(|id| {
                let s = seed.wrapping_mul(31).wrapping_add(id as u64);
                let view = Hooked::over(mem.clone(), hook(id, world.clone(), s, max_delay_ms));
                tokio::spawn(contender(id, view, world.clone(), s, rounds))
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let out = std::mem::take(&mut *w(&world));
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn contenders_under_random_delays_never_overlap_and_never_delete_a_live_lock(
        n in 2usize..=6,
        rounds in 2usize..=10,
        max_delay_ms in prop_oneof![Just(0u64), 1u64..50, 50u64..3000],
        seed in any::<u64>(),
    ) {
        let world = simulate(n, rounds, max_delay_ms, seed);
        prop_assert!(world.violations.is_empty(), "{:?}", world.violations);
        prop_assert!(world.entries > 0, "nobody ever got the lock");
    }
}
