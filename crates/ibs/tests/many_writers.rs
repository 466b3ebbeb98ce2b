//! Several writers, one repository: four writers (each joined with the .pfx, each with its own
//! writer state) back up overlapping trees into one repository at the same time, on a local
//! folder, on a real Samba share and on a real Ceph RADOS Gateway bucket. Backups hold the append lock, so with `--lock-wait 0` none
//! of them may fail on another's lock; then more rounds run while forget and prune run in a loop
//! beside them (two-phase prune, format spec §19). Every backup succeeds, `check --read-data`
//! passes, each backup still listed restores exactly, and the repository after a final prune is
//! close to the size of the union of what the listed backups hold.

mod common;
use common::s3::block_on;
use common::*;
use ibs_testing::rgw::{self, Gateway};
use ibs_testing::samba::{region, shared_server, DIR, PORT, USER};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Barrier;

const WRITERS: usize = 4;
const SHARED_MIB: usize = 8;
const OWN_MIB: usize = 2;
const ROUND_MIB: usize = 1;
/// Rounds beside forget and prune; forgetting stops once every writer finished the one before last.
/// A local folder gets more: its backups take milliseconds, and in 4 rounds no forget or prune lock
/// sometimes fell inside a backup's.
fn rounds(loc: &Loc) -> usize {
    match loc.kind {
        Kind::Folder { smb: false, .. } => 10,
        _ => 4,
    }
}

/// Where the repository is and how to reach it.
struct Loc {
    arg: String,
    /// Every command appends its lock enter/exit lines here (`IBS_LOCK_TRACE`).
    trace: PathBuf,
    kind: Kind,
}

enum Kind {
    /// A local folder or a Samba share: `dir` holds `MASBackup` on this machine's disk.
    Folder { smb: bool, dir: PathBuf },
    /// A bucket on the test gateway, with `MASBackup` under `prefix`.
    S3 {
        gw: Gateway,
        bucket: String,
        prefix: String,
    },
}

fn cmd(loc: &Loc, sub: &str, state: &Path) -> Ibs {
    let c = ibs(["repo", sub, "--repo", &loc.arg])
        .arg("--state")
        .arg(state)
        .env("IBS_LOCK_TRACE", loc.trace.to_str().unwrap());
    match &loc.kind {
        Kind::Folder { smb: true, .. } => c
            .args(["--username", USER])
            .env("IBS_SHARE_PASSWORD", &ibs_testing::samba::password()),
        Kind::Folder { smb: false, .. } => c,
        Kind::S3 { gw, .. } => c
            .env("AWS_ACCESS_KEY_ID", &gw.writer.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &gw.writer.secret_key),
    }
}

/// The bytes of every pack in the repository.
fn packs_size(loc: &Loc) -> u64 {
    match &loc.kind {
        Kind::Folder { dir, .. } => dir_size(&dir.join("MASBackup/packs")),
        Kind::S3 { gw, bucket, prefix } => block_on(async {
            let c = rgw::client(gw, &gw.writer);
            let (mut total, mut token) = (0u64, None);
            loop {
                let out = c
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(format!("{prefix}/MASBackup/packs/"))
                    .set_continuation_token(token)
                    .send()
                    .await
                    .expect("list packs");
                total += out
                    .contents()
                    .iter()
                    .map(|o| o.size().unwrap_or(0) as u64)
                    .sum::<u64>();
                token = out.next_continuation_token().map(str::to_owned);
                if token.is_none() {
                    return total;
                }
            }
        }),
    }
}

/// Writer `i`'s tree: a large file and configs that every writer has, its own file, and a note
/// that changes every round.
fn tree(root: &Path, i: usize, round: usize) -> PathBuf {
    let src = root.join(format!("src{i}"));
    write(
        &src.join("shared/image.bin"),
        &pseudo_random(1, SHARED_MIB << 20),
    );
    for n in 0..20 {
        write(
            &src.join(format!("shared/etc/conf{n}.ini")),
            format!("[section]\nkey{n} = value\n").as_bytes(),
        );
    }
    write(
        &src.join("own/data.bin"),
        &pseudo_random(100 + i as u64, OWN_MIB << 20),
    );
    write(
        &src.join("own/round.txt"),
        format!("writer {i} round {round}\n").as_bytes(),
    );
    // Two contents in turn: round r holds what round r - 2 held.
    write(
        &src.join("own/round.bin"),
        &pseudo_random(1000 + 10 * i as u64 + (round % 2) as u64, ROUND_MIB << 20),
    );
    src
}

fn backup(loc: &Loc, state: &Path, src: &Path, lock_wait: u64) -> Out {
    cmd(loc, "backup", state)
        .args(["--lock-wait", &lock_wait.to_string()])
        .arg("--source")
        .arg(format!("data={}", src.display()))
        .run()
}

/// Adds one to its counter when dropped (a writer thread that ends, or panics), and sets the flag
/// when it panics.
struct Finished<'a>(&'a AtomicUsize, &'a AtomicBool);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.1.store(true, Ordering::SeqCst);
        }
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Waits until `flag` is set; panics once `failed` is (another writer failed, so the flag may never
/// be set), or after ten minutes, naming `what`.
fn wait_for(flag: &AtomicBool, failed: &AtomicBool, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    while !flag.load(Ordering::SeqCst) {
        assert!(
            !failed.load(Ordering::SeqCst),
            "another writer failed while this one waited for {what}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "waited 10 minutes for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// From `IBS_LOCK_TRACE` lines (`enter KIND PID NAME NS`, `exit - PID NAME NS`): how many prune-lock
/// intervals (forget, prune) overlapped an append-lock interval (a backup), and how many there were.
fn prunes_beside_backups(trace: &Path) -> (usize, usize) {
    let text = std::fs::read_to_string(trace).unwrap();
    let mut open: std::collections::HashMap<&str, (&str, u128)> = Default::default();
    let mut intervals: Vec<(&str, u128, u128)> = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let ns: u128 = f[4].parse().unwrap();
        match f[0] {
            "enter" => {
                open.insert(f[3], (f[1], ns));
            }
            _ => {
                if let Some((kind, start)) = open.remove(f[3]) {
                    intervals.push((kind, start, ns));
                }
            }
        }
    }
    let prunes: Vec<_> = intervals.iter().filter(|i| i.0 == "Prune").collect();
    let beside = prunes
        .iter()
        .filter(|p| {
            intervals
                .iter()
                .any(|a| a.0 == "Append" && a.1 < p.2 && p.1 < a.2)
        })
        .count();
    (beside, prunes.len())
}

fn scenario(root: &Path, loc: &Loc) {
    let rounds = rounds(loc);
    let cert = shared_cert(0);
    let states: Vec<PathBuf> = (0..WRITERS)
        .map(|i| root.join(format!("state{i}")))
        .collect();
    cmd(loc, "init", &states[0])
        .arg("--cert")
        .arg(&cert.cer)
        .run()
        .ok();
    // Joining is explicit: each further writer adopts the repository once with the .pfx.
    for s in &states[1..] {
        cmd(loc, "adopt", s)
            .arg("--pfx")
            .arg(&cert.pfx)
            .pw()
            .run()
            .ok();
    }

    // Round 0: all four at once, none willing to wait for a lock.
    let mut done: Vec<(String, Snapshot)> = Vec::new();
    let barrier = Barrier::new(WRITERS);
    let round0: Vec<(String, Snapshot)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..WRITERS)
            .map(|i| {
                let (barrier, states) = (&barrier, &states);
                sc.spawn(move || {
                    let src = tree(root, i, 0);
                    let want = snapshot(&src);
                    barrier.wait();
                    let out = backup(loc, &states[i], &src, 0);
                    assert_eq!(
                        out.code, 0,
                        "writer {i}'s backup failed next to the others (it must not wait for them):\n{out}"
                    );
                    (out.last_line(), want)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    done.extend(round0);

    // Rounds 1 to `rounds` while forget and prune run in a loop beside them (the prune lock is
    // compatible with append: no backup waits for them, so backups still use --lock-wait 0).
    // Each writer's `round.bin` alternates between two contents, so a backup of round r holds what
    // round r - 2 backups held, and those are forgotten: prune marks their chunks while backups that
    // want them again are running (the race of format spec §19). Forgetting stops once every
    // writer finished the round before last, and no writer starts its last round before the pruner
    // has stopped forgetting (`forget_stopped`): `forget --keep-days 0` keeps only the newest backup
    // of all, so a last-round backup made while another writer was still in the round before last
    // would otherwise be forgotten. Every last-round backup is therefore still there to restore.
    let next_to_last_done = AtomicUsize::new(0);
    let forget_stopped = AtomicBool::new(false);
    // Set by a writer or pruner thread that panics, so the writers stop waiting for `forget_stopped`.
    let failed = AtomicBool::new(false);
    let pruners_done = AtomicUsize::new(0);
    let writers_done = AtomicUsize::new(0);
    // Writers start their rounds only once the pruner is about to start its first forget: on a
    // fast local folder they could otherwise all be done before it took its first lock.
    let pruner_started = AtomicBool::new(false);
    let mut prune_log: Vec<serde_json::Value> = Vec::new();
    let more: Vec<(String, Snapshot)> = std::thread::scope(|sc| {
        let pruner = sc.spawn(|| {
            // A pruner that panics releases the writers waiting for `forget_stopped`.
            let _done = Finished(&pruners_done, &failed);
            let mut log = Vec::new();
            let mut n = 0;
            while writers_done.load(Ordering::SeqCst) < WRITERS || n < 3 {
                n += 1;
                pruner_started.store(true, Ordering::SeqCst);
                if next_to_last_done.load(Ordering::SeqCst) < WRITERS {
                    cmd(loc, "forget", &states[0])
                        .args(["--keep-days", "0", "--lock-wait", "60"])
                        .run()
                        .ok();
                } else {
                    // No forget runs now, and none will: the last rounds may start.
                    forget_stopped.store(true, Ordering::SeqCst);
                }
                let out = cmd(loc, "prune", &states[0])
                    .args([
                        "--lock-wait",
                        "30",
                        "--grace-hours",
                        "0",
                        "--delete-delay-hours",
                        "0",
                        "--json",
                    ])
                    .run()
                    .ok();
                log.push(out.json()["plan"].clone());
            }
            log
        });
        let hs: Vec<_> = (0..WRITERS)
            .map(|i| {
                let (states, next_to_last_done, writers_done, pruner_started) =
                    (&states, &next_to_last_done, &writers_done, &pruner_started);
                let (forget_stopped, failed) = (&forget_stopped, &failed);
                sc.spawn(move || {
                    while !pruner_started.load(Ordering::SeqCst) {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    // Counted however the thread ends, so the pruner's loop ends too.
                    let _done = Finished(writers_done, failed);
                    let mut out = Vec::new();
                    for round in 1..=rounds {
                        if round == rounds {
                            wait_for(forget_stopped, failed, "the pruner to stop forgetting");
                        }
                        let src = tree(root, i, round);
                        let want = snapshot(&src);
                        let o = backup(loc, &states[i], &src, 0);
                        assert_eq!(
                            o.code, 0,
                            "writer {i} round {round} failed beside forget and prune:\n{o}"
                        );
                        out.push((o.last_line(), want));
                        if round == rounds - 1 {
                            next_to_last_done.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    out
                })
            })
            .collect();
        let r = hs.into_iter().flat_map(|h| h.join().unwrap()).collect();
        prune_log = pruner.join().unwrap();
        r
    });
    let swept = prune_log
        .iter()
        .filter(|p| !p["swept_plans"].as_array().unwrap().is_empty())
        .count();
    let pending = prune_log
        .iter()
        .filter(|p| !p["pending_plan"].is_null())
        .count();
    eprintln!(
        "{} prune runs beside the backups: {swept} swept a plan, {pending} left one pending",
        prune_log.len()
    );
    assert!(swept > 0, "no prune run swept anything: {prune_log:?}");
    // Prune really ran beside backups: lock intervals from every process's trace.
    let (beside, prunes) = prunes_beside_backups(&loc.trace);
    eprintln!("{beside} of {prunes} forget/prune lock intervals overlapped a running backup");
    assert!(beside > 0, "no forget or prune ran while a backup did");

    // What is still listed: every last-round backup, and whatever forget left of the others.
    let listed = cmd(loc, "list", &states[0]).arg("--json").run().ok().json();
    let listed: std::collections::BTreeSet<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["backup_id"].as_str().unwrap().to_owned())
        .collect();
    let last: Vec<&String> = more
        .iter()
        .skip(rounds - 1)
        .step_by(rounds)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(last.len(), WRITERS);
    for id in &last {
        assert!(listed.contains(*id), "last-round backup {id} is not listed");
    }
    // Which writer and round each backup is, for the union below.
    let mut meta: std::collections::HashMap<String, (usize, usize)> = done
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (id.clone(), (i, 0)))
        .collect();
    for (n, (id, _)) in more.iter().enumerate() {
        meta.insert(id.clone(), (n / rounds, n % rounds + 1));
    }
    done.extend(more);
    done.retain(|(id, _)| listed.contains(id));

    let mut ids: Vec<&str> = done.iter().map(|(id, _)| id.as_str()).collect();
    ids.sort();
    let listed = cmd(loc, "list", &states[0]).arg("--json").run().ok().json();
    let mut listed: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["backup_id"].as_str().unwrap())
        .collect();
    listed.sort();
    assert_eq!(listed, ids, "every writer's backups are listed");

    // Each backup restores exactly, with any writer's state.
    for (n, (id, want)) in done.iter().enumerate() {
        let t = root.join(format!("restore{n}"));
        cmd(loc, "restore", &states[n % WRITERS])
            .args(["--backup", id])
            .arg("--target")
            .arg(&t)
            .arg("--pfx")
            .arg(&cert.pfx)
            .pw()
            .run()
            .ok();
        assert_tree(want, &t.join("data"), &format!("backup {id}"));
    }
    cmd(loc, "check", &states[1])
        .arg("--read-data")
        .arg("--pfx")
        .arg(&cert.pfx)
        .pw()
        .run()
        .ok();

    // Duplicates stored by writers that raced are gone after a prune; the repository holds about
    // the union of what the writers have.
    cmd(loc, "prune", &states[0])
        .args([
            "--grace-hours",
            "0",
            "--delete-delay-hours",
            "0",
            "--trust-listing",
        ])
        .run()
        .ok();
    // The union of what the listed backups hold: the shared tree, each writer's own file, and
    // each `round.bin` content some listed backup of that writer has. Tolerance: a pack of which
    // at most 20 % is unused is kept as it is (prune's repack threshold), so duplicates stored by
    // writers that raced, or stored again beside a marked copy, may survive up to that share.
    let variants: std::collections::BTreeSet<(usize, usize)> = done
        .iter()
        .map(|(id, _)| meta[id])
        .map(|(w, r)| (w, r % 2))
        .collect();
    let union = ((SHARED_MIB + WRITERS * OWN_MIB + variants.len() * ROUND_MIB) << 20) as u64;
    let packs = packs_size(loc);
    eprintln!(
        "{}: {packs} bytes of packs for a union of {union} bytes ({:.3}x)",
        loc.arg,
        packs as f64 / union as f64
    );
    assert!(
        packs < union + union / 5,
        "the repository holds {packs} bytes of packs for a union of {union} bytes: cross-writer deduplication failed"
    );
    assert!(packs >= union, "{packs} < {union}: data is missing");
    cmd(loc, "check", &states[2])
        .arg("--read-data")
        .arg("--pfx")
        .arg(&cert.pfx)
        .pw()
        .run()
        .ok();
}

#[test]
fn four_writers_back_up_one_local_repository_at_once() {
    let tmp = tempfile::Builder::new()
        .prefix("ibs-writers-")
        .tempdir()
        .unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let loc = Loc {
        arg: repo.display().to_string(),
        trace: tmp.path().join("locks.trace"),
        kind: Kind::Folder {
            smb: false,
            dir: repo,
        },
    };
    scenario(tmp.path(), &loc);
}

#[test]
fn four_writers_back_up_one_smb_repository_at_once() {
    shared_server();
    let tmp = tempfile::Builder::new()
        .prefix("ibs-writers-smb-")
        .tempdir()
        .unwrap();
    let (dir, arg) = region(&Path::new(DIR).join("share"), "backup", PORT);
    let loc = Loc {
        arg,
        trace: tmp.path().join("locks.trace"),
        kind: Kind::Folder { smb: true, dir },
    };
    scenario(tmp.path(), &loc);
}

#[test]
fn four_writers_back_up_one_s3_repository_at_once() {
    let gw = rgw::gateway().clone();
    let bucket = block_on(rgw::bucket("writers"));
    let tmp = tempfile::Builder::new()
        .prefix("ibs-writers-s3-")
        .tempdir()
        .unwrap();
    let loc = Loc {
        arg: format!("s3+http://{}/{bucket}/r", gw.host_port()),
        trace: tmp.path().join("locks.trace"),
        kind: Kind::S3 {
            gw,
            bucket,
            prefix: "r".into(),
        },
    };
    scenario(tmp.path(), &loc);
}
