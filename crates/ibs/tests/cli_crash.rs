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

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

fn kill_points() -> usize {
    std::env::var("IBS_CRASH_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .max(10)
}

/// The seed to print and reproduce with (`IBS_CRASH_SEED`), and each test's RNG (salted per test).
fn seed(salt: u64) -> (u64, StdRng) {
    let base = std::env::var("IBS_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x1b5_c4a5);
    (base, StdRng::seed_from_u64(base ^ salt))
}

/// ~60 MiB of mixed data: incompressible files, text, duplicated content, zero runs, many small files,
/// nested folders, a symlink and an empty folder.
fn make_source(dir: &Path, rng: &mut StdRng) {
    let mut first_random = None;
    for i in 0..16 {
        let len = rng.gen_range(1_500_000..3_500_000);
        let data = pseudo_random(rng.gen(), len);
        if first_random.is_none() {
            first_random = Some(data.clone());
        }
        write(&dir.join(format!("bin/d{}/r{i:02}.bin", i % 3)), &data);
    }
    for i in 0..8 {
        let mut text = Vec::new();
        let n: u64 = rng.gen();
        while text.len() < 1_200_000 {
            text.extend_from_slice(
                format!(
                    "{n:x} line {} of log {i}: status=ok value={}\n",
                    text.len(),
                    rng.gen_range(0..1000)
                )
                .as_bytes(),
            );
        }
        write(&dir.join(format!("logs/log{i}.txt")), &text);
    }
    // Duplicated content (dedup) and zero runs.
    let dup = first_random.unwrap();
    write(&dir.join("copies/dup-a.bin"), &dup);
    write(&dir.join("copies/dup-b.bin"), &dup);
    let mut img = vec![0u8; 6 << 20];
    let island = pseudo_random(rng.gen(), 300_000);
    img[2 << 20..(2 << 20) + island.len()].copy_from_slice(&island);
    write(&dir.join("images/zeros.img"), &img);
    for i in 0..300 {
        let len = rng.gen_range(10..8_000);
        write(
            &dir.join(format!("small/s{:02}/f{i:03}.dat", i % 17)),
            &pseudo_random(rng.gen(), len),
        );
    }
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    std::os::unix::fs::symlink("../logs/log0.txt", dir.join("small/link-to-log")).unwrap();
}

/// Changes roughly a third of the data: rewrites, in-place edits, appends, deletions and additions.
fn mutate(dir: &Path, rng: &mut StdRng, round: usize) {
    let bins = files_under(&dir.join("bin"));
    // About 20 MiB of new data: more than one 16 MiB pack, so a pack is stored mid-run.
    for _ in 0..8 {
        let f = &bins[rng.gen_range(0..bins.len())];
        let len = rng.gen_range(1_500_000..3_500_000);
        std::fs::write(f, pseudo_random(rng.gen(), len)).unwrap();
    }
    let f = &bins[rng.gen_range(0..bins.len())];
    let len = std::fs::metadata(f).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(f).unwrap();
    file.write_all_at(&pseudo_random(rng.gen(), 4096), rng.gen_range(0..len / 2))
        .unwrap();
    drop(file);
    let logs = files_under(&dir.join("logs"));
    let log = &logs[rng.gen_range(0..logs.len())];
    let mut text = std::fs::read(log).unwrap();
    text.extend_from_slice(format!("round {round}: appended\n").repeat(2000).as_bytes());
    std::fs::write(log, text).unwrap();
    let smalls = files_under(&dir.join("small"));
    std::fs::remove_file(&smalls[rng.gen_range(0..smalls.len())]).unwrap();
    write(
        &dir.join(format!("new/round{round}.dat")),
        &pseudo_random(rng.gen(), rng.gen_range(1000..500_000)),
    );
}

fn spawn(cmd: Ibs, log: &Path) -> Child {
    let mut c = cmd.command();
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    c.spawn().expect("spawn ibs")
}

/// The one-line summary, written straight to stderr so it shows without `--nocapture`.
fn summary(line: String) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Classifies a killed child: true if it was interrupted, false if it had finished successfully.
/// Any other exit (an error of its own) fails the test.
fn interrupted(status: ExitStatus, log: &Path, what: &str) -> bool {
    match status.code() {
        None => true,
        Some(0) => false,
        Some(c) => panic!(
            "{what} exited {c} on its own before the kill:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        ),
    }
}

/// Restores every `(id, snapshot)` (two at a time) and compares it with the source as it was.
fn verify_restores(fx: &Fx, backups: &[(String, Snapshot)], pfx: &Path, when: &str) {
    std::thread::scope(|s| {
        for (k, part) in [0usize, 1]
            .iter()
            .map(|k| (k, backups.iter().skip(*k).step_by(2)))
        {
            s.spawn(move || {
                for (id, snap) in part {
                    let t = fx.path(&format!("verify{k}"));
                    if t.exists() {
                        std::fs::remove_dir_all(&t).unwrap();
                    }
                    fx.restore_cmd(id, &t, &[pfx])
                        .args(["--source", "data"])
                        .run()
                        .ok();
                    assert_tree(snap, &t, &format!("backup {id} {when}"));
                    std::fs::remove_dir_all(&t).unwrap();
                }
            });
        }
    });
}

/// Lock objects in `locks/` (a put's temporary, `.ibs-tmp-…`, left by a killed writer is no object).
fn lock_files(fx: &Fx) -> Vec<PathBuf> {
    let d = fx.mas().join("locks");
    if !d.exists() {
        return Vec::new();
    }
    files_under(&d)
        .into_iter()
        .filter(|f| {
            !f.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".ibs-tmp-")
        })
        .collect()
}

/// A copy of the repository folder made of hard links (ibs replaces objects, never edits them).
fn hardlink_clone(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            hardlink_clone(&e.path(), &dest);
        } else {
            std::fs::hard_link(e.path(), dest).unwrap();
        }
    }
}

/// The repository's objects (data, index, manifests, envelopes: no locks, no temporaries).
fn objects(fx: &Fx) -> std::collections::BTreeSet<String> {
    objects_in(&fx.mas())
}

fn objects_in(mas: &Path) -> std::collections::BTreeSet<String> {
    listing(mas)
        .into_keys()
        .filter(|k| !k.ends_with('/') && !k.starts_with("locks/") && !k.contains(".ibs-tmp-"))
        .collect()
}

/// A real copy of a folder (the writer state: its files cache is updated in place).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// What a rehearsal of a command on a throw-away copy of the repository showed.
struct Rehearsal {
    took: Duration,
    /// Objects it created or deleted.
    changes: usize,
}

/// Rehearses `repo <args>` on a copy of the repository (objects hard-linked, writer state copied).
fn rehearse(fx: &Fx, args: &[String], pfx_password: bool) -> Rehearsal {
    let cal = fx.path("rehearsal");
    let mas = cal.join("repo/MASBackup");
    hardlink_clone(&fx.mas(), &mas);
    copy_dir(&fx.state, &cal.join("state"));
    let before = objects_in(&mas);
    let log = fx.path("rehearsal.log");
    let cmd = ibs(["repo"])
        .args(args)
        .arg("--state")
        .arg(cal.join("state"))
        .arg("--repo")
        .arg(cal.join("repo"));
    let cmd = if pfx_password { cmd.pw() } else { cmd };
    let t0 = Instant::now();
    let status = spawn(cmd, &log).wait().unwrap();
    let took = t0.elapsed();
    assert!(
        status.success(),
        "rehearsal of {args:?} failed: {status}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let changes = objects_in(&mas).symmetric_difference(&before).count();
    std::fs::remove_dir_all(&cal).unwrap();
    Rehearsal { took, changes }
}

/// When to kill.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// After a random delay.
    After(Duration),
    /// As soon as the process has created or deleted this many objects (the windows between one
    /// write and the next: after the envelope, a pack, the index, the manifest, a deletion …).
    AtChange(usize),
}

/// Half the kills after a random delay from 20 ms to the end of the expected run (at most `cap`),
/// the others right after a random one of the run's writes (timed kills mostly land while the
/// process reads; these hit the windows between its writes).
fn choose_kill(rng: &mut StdRng, r: &Rehearsal, cap: Duration) -> Kill {
    if r.changes == 0 || rng.gen_ratio(1, 2) {
        let hi = r.took.min(cap).as_millis().max(40) as u64;
        Kill::After(Duration::from_millis(rng.gen_range(20..=hi)))
    } else {
        Kill::AtChange(rng.gen_range(1..=r.changes))
    }
}

struct Killed {
    status: ExitStatus,
    at: Duration,
    created: usize,
    deleted: usize,
}

/// Runs `cmd`, SIGKILLs it as `kill` says (unless it finishes first), reaps it.
fn run_and_kill(fx: &Fx, cmd: Ibs, kill: Kill, log: &Path) -> Killed {
    let before = objects(fx);
    let t0 = Instant::now();
    let mut child = spawn(cmd, log);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        let fire = match kill {
            Kill::After(d) => t0.elapsed() >= d,
            Kill::AtChange(k) => objects(fx).symmetric_difference(&before).count() >= k,
        } || t0.elapsed() > Duration::from_secs(120);
        if fire {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_micros(500));
    };
    let at = t0.elapsed();
    let after = objects(fx);
    Killed {
        status,
        at,
        created: after.difference(&before).count(),
        deleted: before.difference(&after).count(),
    }
}

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
    fx.repo_cmd("prune").run().ok();
    fx.check_full(&cert.pfx);
    verify_restores(
        &fx,
        &completed,
        &cert.pfx,
        "after pruning the dead backups' leftovers",
    );
    let again = fx
        .repo_cmd("prune")
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
    let prune_args = vec!["prune".to_string()];
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
        let k = run_and_kill(&fx, fx.repo_cmd("prune"), kill, &log);
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
    fx.repo_cmd("prune").run().ok();
    assert!(lock_files(&fx).is_empty(), "{:?}", lock_files(&fx));
    fx.check_full(&cert.pfx);
    verify_restores(&fx, &backups, &cert.pfx, "after the final prune");
    let again = fx
        .repo_cmd("prune")
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
