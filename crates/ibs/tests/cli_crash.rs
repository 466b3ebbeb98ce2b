//! Crash safety: `ibs repo backup` and `ibs repo prune` are killed with SIGKILL at seeded random
//! points. After every kill the repository must check clean (`check --read-data --pfx`), every backup
//! that had completed must restore byte-identical to its source at that time, and the dead process's
//! lock must not block the next command.
//!
//! Default: 10 kill points per test. Long mode: `IBS_CRASH_POINTS=30 cargo test -p ibs --test
//! cli_crash -- --nocapture` (more kill points, printed one per line; every completed backup is
//! restored after every kill, so the time grows with the square of the count; `IBS_CRASH_SEED=N`
//! picks another seed).

mod common;
mod crash_support;

use common::*;
use crash_support::*;
use rand::rngs::StdRng;
use rand::Rng;
use std::time::{Duration, Instant};

#[test]
fn backup_killed_at_random_points_leaves_a_consistent_repository() {
    let started = Instant::now();
    let n = kill_points();
    let (seed, mut rng) = seed(1);
    let fx = Fx::new();
    let cert = shared_cert(0);
    fx.init_cert(&cert.cer);
    let src = fx.path("src");
    make_source(&src, &mut rng);
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

    let (mut cut, mut finished, mut mid_work) = (0, 0, 0);
    for round in 0..n {
        mutate(&src, &mut rng, round);
        let snap = snapshot(&src);
        let before = fx.list_ids();
        let kill = choose_kill(&mut rng, &last, full);
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
            cut += 1;
            if k.created > 0 {
                mid_work += 1;
            }
        } else {
            finished += 1;
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
        verify_restores(&fx, &completed, &cert.pfx, &format!("after kill {round}"));
    }
    // Prune removes what the dead backups left, and every backup still restores.
    fx.repo_cmd("prune").args(["--grace-hours", "0"]).run().ok();
    fx.check_full(&cert.pfx);
    verify_restores(
        &fx,
        &completed,
        &cert.pfx,
        "after pruning the dead backups' leftovers",
    );
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
    summary(format!(
        "cli_crash backup: {n} kill points exercised ({cut} interrupted a running backup, {mid_work} of them after it had written objects; {finished} came after it finished; full backup {} ms; {} backups verified; IBS_CRASH_SEED={seed}; {:.1} s)",
        full.as_millis(),
        completed.len(),
        started.elapsed().as_secs_f64()
    ));
    assert!(
        cut > 0,
        "no kill interrupted a backup: the test exercised nothing"
    );
    assert!(
        mid_work > 0,
        "no kill interrupted a backup that had written objects"
    );
}

#[test]
fn prune_killed_at_random_points_leaves_a_consistent_repository() {
    let started = Instant::now();
    let n = kill_points();
    let (seed, mut rng) = seed(2);
    let fx = Fx::new();
    let cert = shared_cert(0);
    fx.init_cert(&cert.cer);
    let src = fx.path("src");
    make_source(&src, &mut rng);
    let mut backups: Vec<(String, Snapshot)> = Vec::new();
    for round in 0..3 {
        if round > 0 {
            mutate(&src, &mut rng, 1000 + round);
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

    let (mut cut, mut finished, mut refills, mut mid_work) = (0, 0, 0, 0);
    let mut need_garbage = false;
    let prune_args: Vec<String> = ["prune", "--grace-hours", "0"].map(String::from).to_vec();
    for round in 0..n {
        if need_garbage {
            // The last prune completed: make new garbage (a new backup, the old one forgotten).
            refills += 1;
            mutate(&src, &mut rng, 2000 + round);
            let snap = snapshot(&src);
            backups.push((fx.backup(&[("data", &src)]), snap));
            next_second();
            fx.repo_cmd("forget").args(["--keep-days", "0"]).run().ok();
            keep(&fx, &mut backups);
            need_garbage = false;
        }
        let rehearsal = rehearse(&fx, &prune_args, false);
        let kill = choose_kill(&mut rng, &rehearsal, rehearsal.took);
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
            cut += 1;
            if k.created + k.deleted > 0 {
                mid_work += 1;
            }
        } else {
            finished += 1;
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
    summary(format!(
        "cli_crash prune: {n} kill points exercised ({cut} interrupted a running prune, {mid_work} of them after it had changed the repository; {finished} came after it finished; {refills} garbage refills; IBS_CRASH_SEED={seed}; {:.1} s)",
        started.elapsed().as_secs_f64()
    ));
    assert!(
        cut > 0,
        "no kill interrupted a prune: the test exercised nothing"
    );
    assert!(
        mid_work > 0,
        "no kill interrupted a prune that had changed the repository"
    );
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
    let n = kill_points();
    let (seed, mut rng) = seed(3);
    let fx = Fx::new();
    let (a, b) = (shared_cert(0), shared_cert(1));
    fx.init_cert(&a.cer);
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
    let (mut cut, mut finished) = (0, 0);
    for round in 0..n {
        let args: Vec<String> = vec![
            "rewrap".into(),
            "--pfx".into(),
            old.pfx.display().to_string(),
            "--cert".into(),
            new.cer.display().to_string(),
        ];
        let rehearsal = rehearse(&fx, &args, true);
        let kill = choose_kill(&mut rng, &rehearsal, rehearsal.took);
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
            "  rewrap kill {round}: {kill:?} -> {} after {} ms",
            if was_cut {
                "interrupted"
            } else {
                "had finished"
            },
            k.at.as_millis()
        );
        check_and_sample(
            &fx,
            a,
            b,
            &backups,
            &mut rng,
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
            cut += 1;
        } else {
            finished += 1;
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
    let mut adopt_cut = 0;
    for round in 0..n {
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
            adopt_cut += 1;
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
    verify_restores(
        &fx,
        &backups[backups.len() - 3..],
        &new.pfx,
        "after the adopt kills",
    );
    summary(format!(
        "cli_crash rewrap/adopt: {n} rewrap kill points ({cut} interrupted, {finished} after it finished), {n} adopt kill points ({adopt_cut} interrupted); {} backups; IBS_CRASH_SEED={seed}; {:.1} s",
        backups.len(),
        started.elapsed().as_secs_f64()
    ));
    assert!(
        cut > 0,
        "no kill interrupted a rewrap: the test exercised nothing"
    );
}
