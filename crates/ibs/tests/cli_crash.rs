//! Crash safety: `ibs repo backup`, `repo prune`, `repo rewrap` and `repo adopt` are killed with
//! SIGKILL at seeded random points (after a random delay, or right after the k-th object the process
//! creates or deletes). After every kill the repository must check clean (`check --read-data --pfx`),
//! the dead process's lock must not block the next command, the next operation must succeed, and
//! completed backups must restore byte-identical to their source at that time. An adopt is killed
//! with the writer state removed; the next adopt and backup must succeed, and the repository is
//! checked at the end of each segment.
//!
//! Modes (see `crash_support::Plan`):
//! - Default (CI): 10 kill points per operation, one segment; after each backup kill every completed
//!   backup is restored.
//! - Long: `IBS_CRASH_POINTS=100 cargo test -p ibs --test cli_crash -- --nocapture` (nightly-style;
//!   1,000 was run once, see `docs/reliability.md`). The kill points are split into segments of
//!   `IBS_CRASH_SEGMENT` (default 20), each on a fresh repository under the same certificate, so a
//!   kill point costs the same at point 990 as at point 10. After a backup kill the newest completed
//!   backup and a seeded sample of `IBS_CRASH_SAMPLE` (default 2, or `all`) earlier ones of the
//!   segment are restored; at the end of every segment a prune removes the dead runs' leftovers,
//!   must leave nothing to do, and every backup of the segment is restored. Long mode's repositories have 4 MiB
//!   packs (`repo init --pack-size 4`) and about a quarter of the data (`IBS_CRASH_COMPACT=0` keeps
//!   the default 16 MiB packs and full data): each backup round still stores a pack mid-run.
//!
//! `IBS_CRASH_SEED=N` replays a run (the seed is printed in each test's summary line); each segment
//! has its own RNG, so `IBS_CRASH_FROM=K` with the same seed and points replays the segment holding
//! kill point K and those after it.

mod common;
mod crash_support;

use common::*;
use crash_support::*;
use rand::rngs::StdRng;
use rand::Rng;
use std::time::{Duration, Instant};

/// What the kill points of one operation came to, summed over the segments.
#[derive(Default)]
struct Tally {
    cut: usize,
    finished: usize,
    mid_work: usize,
    /// Backups restored at least once (the newest after every kill, all at segment ends).
    backups: usize,
    refills: usize,
    adopt_cut: usize,
    /// Adopt kills that came after it had begun writing the new state.
    adopt_mid: usize,
}

#[test]
fn backup_killed_at_random_points_leaves_a_consistent_repository() {
    let started = Instant::now();
    let plan = Plan::from_env();
    let seed = seed();
    let cert = shared_cert(0);
    let mut t = Tally::default();
    let mut full = Duration::ZERO;
    for range in plan.segments() {
        let mut rng = segment_rng(seed, 1, range.start);
        full = backup_segment(&plan, range.clone(), &mut rng, cert, &mut t);
        segment_done("backup", &range, &plan, started);
    }
    summary(format!(
        "cli_crash backup: {} kill points exercised in {} segment(s) ({} interrupted a running backup, {} of them after it had written objects; {} came after it finished; last full backup {} ms; {} backups verified; IBS_CRASH_SEED={seed}; {:.1} s)",
        plan.exercised(),
        plan.segments().len(),
        t.cut,
        t.mid_work,
        t.finished,
        full.as_millis(),
        t.backups,
        started.elapsed().as_secs_f64()
    ));
    assert!(
        t.cut > 0,
        "no kill interrupted a backup: the test exercised nothing"
    );
    assert!(
        t.mid_work > 0,
        "no kill interrupted a backup that had written objects"
    );
}

/// One segment of backup kill points on a fresh repository; returns what its full backup took.
fn backup_segment(
    plan: &Plan,
    rounds: std::ops::Range<usize>,
    rng: &mut StdRng,
    cert: &Cert,
    t: &mut Tally,
) -> Duration {
    let fx = Fx::new();
    plan.init(&fx, &cert.cer);
    let src = fx.path("src");
    make_source(&src, rng, plan.compact);
    let mut completed: Vec<(String, Snapshot)> = Vec::new();
    let snap = snapshot(&src);
    let t0 = Instant::now();
    completed.push((fx.backup(&[("data", &src)]), snap));
    let full = t0.elapsed();
    // What the last complete incremental backup took (each round changes about the same amount of
    // data; the first round guesses from the full backup).
    let mut last = Rehearsal {
        took: full / 2,
        changes: 4,
    };

    for round in rounds {
        mutate(&src, rng, round, plan.compact);
        let snap = snapshot(&src);
        let before = fx.list_ids();
        let kill = choose_kill(rng, &last, full);
        let log = fx.path("killed.log");
        let objects_before = listing(&fx.mas());
        let k = run_and_kill(&fx, fx.backup_cmd(&[("data", &src)]), kill, &log);
        // A backup only adds objects: nothing that existed was removed or rewritten.
        let objects_after = listing(&fx.mas());
        for (name, meta) in objects_before
            .iter()
            .filter(|(n, _)| !n.starts_with("locks/"))
        {
            assert_eq!(
                objects_after.get(name),
                Some(meta),
                "the killed backup removed or rewrote {name}"
            );
        }
        let was_cut = interrupted(k.status, &log, "backup");
        println!(
            "  backup kill {round}: {kill:?} -> {} after {} ms, {} of {} objects written",
            if was_cut {
                "interrupted"
            } else {
                "had finished"
            },
            k.at.as_millis(),
            k.created,
            last.changes
        );
        assert_eq!(k.deleted, 0, "a backup deleted objects");
        let new: Vec<String> = fx
            .list_ids()
            .into_iter()
            .filter(|i| !before.contains(i))
            .collect();
        assert!(new.len() <= 1, "one backup run made {new:?}");
        if !was_cut {
            assert_eq!(new.len(), 1, "a finished backup is not listed");
        }
        // The manifest is the commit point: if it exists, the backup completed (even if killed later).
        for id in new {
            completed.push((id, snap.clone()));
        }
        if was_cut {
            t.cut += 1;
            if k.created > 0 {
                t.mid_work += 1;
            }
        } else {
            t.finished += 1;
            last = Rehearsal {
                took: k.at,
                changes: k.created,
            };
        }
        fx.check_full(&cert.pfx);
        if was_cut {
            // The next backup does not wait for the dead process, and clears its lock.
            let before = objects(&fx);
            let t = Instant::now();
            let id = fx.backup(&[("data", &src)]);
            last = Rehearsal {
                took: t.elapsed(),
                changes: objects(&fx).difference(&before).count(),
            };
            assert!(
                lock_files(&fx).is_empty(),
                "locks left after a backup: {:?}",
                lock_files(&fx)
            );
            completed.push((id, snap.clone()));
        }
        let sample = plan.after_kill(rng, &completed);
        verify_restores(&fx, sample, &cert.pfx, &format!("after kill {round}"));
    }
    t.backups += completed.len();
    // Prune removes what the dead backups left, and every backup still restores.
    fx.repo_cmd("prune").args(["--grace-hours", "0"]).run().ok();
    fx.check_full(&cert.pfx);
    verify_restores(
        &fx,
        &completed,
        &cert.pfx,
        "after pruning the dead backups' leftovers",
    );
    assert_nothing_to_prune(&fx);
    full
}

/// A dry-run prune after a full prune plans nothing.
fn assert_nothing_to_prune(fx: &Fx) {
    let again = fx
        .repo_cmd("prune")
        .args(["--grace-hours", "0"])
        .args(["--dry-run", "--json"])
        .run()
        .ok();
    let plan = &again.json()["plan"];
    for k in ["delete", "repack", "unindexed", "delete_keys"] {
        assert_eq!(
            plan[k].as_array().unwrap().len(),
            0,
            "{k} left after a full prune:\n{again}"
        );
    }
}

#[test]
fn prune_killed_at_random_points_leaves_a_consistent_repository() {
    let started = Instant::now();
    let plan = Plan::from_env();
    let seed = seed();
    let cert = shared_cert(0);
    let mut t = Tally::default();
    for range in plan.segments() {
        let mut rng = segment_rng(seed, 2, range.start);
        prune_segment(&plan, range.clone(), &mut rng, cert, &mut t);
        segment_done("prune", &range, &plan, started);
    }
    summary(format!(
        "cli_crash prune: {} kill points exercised in {} segment(s) ({} interrupted a running prune, {} of them after it had changed the repository; {} came after it finished; {} garbage refills; IBS_CRASH_SEED={seed}; {:.1} s)",
        plan.exercised(),
        plan.segments().len(),
        t.cut,
        t.mid_work,
        t.finished,
        t.refills,
        started.elapsed().as_secs_f64()
    ));
    assert!(
        t.cut > 0,
        "no kill interrupted a prune: the test exercised nothing"
    );
    assert!(
        t.mid_work > 0,
        "no kill interrupted a prune that had changed the repository"
    );
}

/// One segment of prune kill points on a fresh repository. Every backup left is restored after
/// every kill (forget keeps one or two, so there is nothing to sample).
fn prune_segment(
    plan: &Plan,
    rounds: std::ops::Range<usize>,
    rng: &mut StdRng,
    cert: &Cert,
    t: &mut Tally,
) {
    let fx = Fx::new();
    plan.init(&fx, &cert.cer);
    let src = fx.path("src");
    make_source(&src, rng, plan.compact);
    let mut backups: Vec<(String, Snapshot)> = Vec::new();
    for round in 0..3 {
        if round > 0 {
            mutate(&src, rng, 1000 + round, plan.compact);
        }
        let snap = snapshot(&src);
        backups.push((fx.backup(&[("data", &src)]), snap));
    }
    // Forget all but the newest: most packs become garbage or partly used.
    next_second();
    fx.repo_cmd("forget").args(["--keep-days", "0"]).run().ok();
    let keep = |fx: &Fx, backups: &mut Vec<(String, Snapshot)>| {
        let ids = fx.list_ids();
        backups.retain(|(id, _)| ids.contains(id));
        assert_eq!(
            backups.len(),
            ids.len(),
            "listed backups unknown to the test"
        );
    };
    keep(&fx, &mut backups);
    assert_eq!(backups.len(), 1);

    let mut need_garbage = false;
    let prune_args: Vec<String> = ["prune", "--grace-hours", "0"].map(String::from).to_vec();
    for round in rounds {
        if need_garbage {
            // The last prune completed: make new garbage (a new backup, the old one forgotten).
            t.refills += 1;
            mutate(&src, rng, 2000 + round, plan.compact);
            let snap = snapshot(&src);
            backups.push((fx.backup(&[("data", &src)]), snap));
            next_second();
            fx.repo_cmd("forget").args(["--keep-days", "0"]).run().ok();
            keep(&fx, &mut backups);
            need_garbage = false;
        }
        let rehearsal = rehearse(&fx, &prune_args, false);
        let kill = choose_kill(rng, &rehearsal, rehearsal.took);
        let log = fx.path("killed.log");
        let k = run_and_kill(
            &fx,
            fx.repo_cmd("prune").args(["--grace-hours", "0"]),
            kill,
            &log,
        );
        let was_cut = interrupted(k.status, &log, "prune");
        println!(
            "  prune kill {round}: {kill:?} -> {} after {} ms, {} created + {} deleted of {} changes",
            if was_cut { "interrupted" } else { "had finished" },
            k.at.as_millis(),
            k.created,
            k.deleted,
            rehearsal.changes
        );
        if was_cut {
            t.cut += 1;
            if k.created + k.deleted > 0 {
                t.mid_work += 1;
            }
        } else {
            t.finished += 1;
            need_garbage = true;
        }
        fx.check_full(&cert.pfx);
        keep(&fx, &mut backups);
        verify_restores(
            &fx,
            &backups,
            &cert.pfx,
            &format!("after prune kill {round}"),
        );
    }
    // Finally a prune runs to the end (clearing the last dead lock), and leaves nothing to do.
    fx.repo_cmd("prune").args(["--grace-hours", "0"]).run().ok();
    assert!(lock_files(&fx).is_empty(), "{:?}", lock_files(&fx));
    fx.check_full(&cert.pfx);
    verify_restores(&fx, &backups, &cert.pfx, "after the final prune");
    assert_nothing_to_prune(&fx);
}

/// Checks with both .pfx files (a killed rewrap leaves some envelopes for the old certificate and
/// some for the new one) and restores a sample of backups with both.
fn check_and_sample(
    fx: &Fx,
    a: &Cert,
    b: &Cert,
    backups: &[(String, Snapshot)],
    rng: &mut StdRng,
    when: &str,
) {
    fx.repo_cmd("check")
        .args(["--read-data", "--pfx"])
        .arg(&a.pfx)
        .arg("--pfx")
        .arg(&b.pfx)
        .pw()
        .run()
        .ok();
    for _ in 0..2 {
        let (id, snap) = &backups[rng.gen_range(0..backups.len())];
        let target = fx.path("sample-restore");
        let _ = std::fs::remove_dir_all(&target);
        fx.restore_cmd(id, &target, &[&a.pfx, &b.pfx]).run().ok();
        assert_tree(snap, &target.join("data"), &format!("{id} {when}"));
    }
}

#[test]
fn rewrap_and_adopt_killed_at_random_points_lose_nothing() {
    let started = Instant::now();
    let plan = Plan::from_env();
    let seed = seed();
    let mut t = Tally::default();
    for range in plan.segments() {
        let mut rng = segment_rng(seed, 3, range.start);
        rewrap_adopt_segment(&plan, range.clone(), &mut rng, &mut t);
        segment_done("rewrap/adopt", &range, &plan, started);
    }
    summary(format!(
        "cli_crash rewrap/adopt: {n} rewrap kill points in {} segment(s) ({} interrupted, {} of them after it had changed the repository; {} after it finished), {n} adopt kill points ({} interrupted, {} of them after it had begun writing the state); {} backups; IBS_CRASH_SEED={seed}; {:.1} s",
        plan.segments().len(),
        t.cut,
        t.mid_work,
        t.finished,
        t.adopt_cut,
        t.adopt_mid,
        t.backups,
        started.elapsed().as_secs_f64(),
        n = plan.exercised(),
    ));
    assert!(
        t.cut > 0,
        "no kill interrupted a rewrap: the test exercised nothing"
    );
}

/// One segment on a fresh repository: 24 backups, rewrap killed at each of `rounds`, a final rewrap,
/// then adopt killed at as many points.
fn rewrap_adopt_segment(
    plan: &Plan,
    rounds: std::ops::Range<usize>,
    rng: &mut StdRng,
    t: &mut Tally,
) {
    let fx = Fx::new();
    let (a, b) = (shared_cert(0), shared_cert(1));
    plan.init(&fx, &a.cer);
    let src = fx.path("src");
    std::fs::create_dir_all(&src).unwrap();
    // Many small backups: many data-key envelopes for rewrap to work through.
    let mut backups: Vec<(String, Snapshot)> = Vec::new();
    for i in 0..24 {
        write(
            &src.join(format!("f{i}.txt")),
            format!("backup {i}\n").repeat(100).as_bytes(),
        );
        let snap = snapshot(&src);
        backups.push((fx.backup(&[("data", &src)]), snap));
    }
    // Rewrap old -> new until one run finishes, then the other way round.
    let (mut old, mut new) = (a, b);
    for round in rounds.clone() {
        let args: Vec<String> = vec![
            "rewrap".into(),
            "--pfx".into(),
            old.pfx.display().to_string(),
            "--cert".into(),
            new.cer.display().to_string(),
        ];
        let rehearsal = rehearse(&fx, &args, true);
        let kill = choose_kill(rng, &rehearsal, rehearsal.took);
        let log = fx.path("killed.log");
        let cmd = fx
            .repo_cmd("rewrap")
            .arg("--pfx")
            .arg(&old.pfx)
            .arg("--cert")
            .arg(&new.cer)
            .pw();
        let k = run_and_kill(&fx, cmd, kill, &log);
        let was_cut = interrupted(k.status, &log, "rewrap");
        println!(
            "  rewrap kill {round}: {kill:?} -> {} after {} ms, {} created + {} deleted of {} changes",
            if was_cut {
                "interrupted"
            } else {
                "had finished"
            },
            k.at.as_millis(),
            k.created,
            k.deleted,
            rehearsal.changes
        );
        check_and_sample(
            &fx,
            a,
            b,
            &backups,
            rng,
            &format!("after rewrap kill {round}"),
        );
        // The next backup succeeds (the dead process's lock is cleared) and restores.
        write(
            &src.join("changing.txt"),
            format!("round {round}\n").as_bytes(),
        );
        let snap = snapshot(&src);
        backups.push((fx.backup(&[("data", &src)]), snap));
        if was_cut {
            t.cut += 1;
            if k.created + k.deleted > 0 {
                t.mid_work += 1;
            }
        } else {
            t.finished += 1;
            std::mem::swap(&mut old, &mut new);
        }
    }
    // A rewrap run to the end: afterwards every backup restores with the new .pfx alone.
    fx.repo_cmd("rewrap")
        .arg("--pfx")
        .arg(&old.pfx)
        .arg("--cert")
        .arg(&new.cer)
        .pw()
        .run()
        .ok();
    verify_restores(&fx, &backups, &new.pfx, "after the final rewrap");

    // adopt: killed at random points, the writer state is either the old one or a complete new one,
    // and the next adopt and backup succeed.
    for round in rounds {
        std::fs::remove_dir_all(&fx.state).unwrap();
        let log = fx.path("adopt.log");
        let kill = Kill::After(Duration::from_millis(rng.gen_range(1..=60)));
        let k = run_and_kill(
            &fx,
            fx.repo_cmd("adopt").arg("--pfx").arg(&new.pfx).pw(),
            kill,
            &log,
        );
        if interrupted(k.status, &log, "adopt") {
            t.adopt_cut += 1;
            if fx.state.exists() {
                t.adopt_mid += 1;
            }
            fx.repo_cmd("adopt")
                .arg("--pfx")
                .arg(&new.pfx)
                .pw()
                .run()
                .ok();
        }
        write(
            &src.join("changing.txt"),
            format!("adopt round {round}\n").as_bytes(),
        );
        let snap = snapshot(&src);
        backups.push((fx.backup(&[("data", &src)]), snap));
        println!(
            "  adopt kill {round}: {kill:?} -> {}",
            if k.status.code().is_none() {
                "interrupted"
            } else {
                "had finished"
            }
        );
    }
    fx.check_full(&new.pfx);
    let at_end = if plan.sample.is_some() {
        &backups[..]
    } else {
        &backups[backups.len() - 3..]
    };
    verify_restores(&fx, at_end, &new.pfx, "after the adopt kills");
    t.backups += backups.len();
}
