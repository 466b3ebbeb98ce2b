//! The crash-test harness of `cli_crash`: seeded random sources and mutations, rehearsals of a
//! command on a hard-linked copy of the repository (how long it runs, how many objects it writes),
//! kill-point selection, running a command and SIGKILLing it, and the checks after a kill
//! (restores byte-identical, no lock left behind).

use crate::common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How a run is laid out: `IBS_CRASH_POINTS` kill points per operation (at least 10), split into
/// segments of `IBS_CRASH_SEGMENT` (default 20) kill points, each on a fresh repository with the same
/// certificate, so the repository, and with it the cost of `check --read-data`, stays bounded. After
/// a backup kill the newest completed backup and `IBS_CRASH_SAMPLE` (default 2; `all`) earlier ones
/// of the segment, picked by the seeded RNG, are restored; at the end of every segment all of them.
/// With 10 points or fewer (the default mode) every backup is restored after every kill, and the
/// repository has the default 16 MiB packs and the full-size source.
pub struct Plan {
    pub points: usize,
    pub segment: usize,
    /// Earlier backups restored after each kill besides the newest (`None`: all of them).
    pub sample: Option<usize>,
    /// Long mode: repositories with 4 MiB packs (`repo init --pack-size 4`) and about a quarter of
    /// the data, so each round still stores a pack mid-run at a third of the cost
    /// (`IBS_CRASH_COMPACT=1` or `0` chooses either way in any mode).
    pub compact: bool,
}

impl Plan {
    pub fn from_env() -> Plan {
        let var = |k: &str| std::env::var(k).ok();
        let points = var("IBS_CRASH_POINTS")
            .and_then(|v| v.parse().ok())
            .unwrap_or(10usize)
            .max(10);
        let segment = var("IBS_CRASH_SEGMENT")
            .and_then(|v| v.parse().ok())
            .unwrap_or(20usize)
            .max(1);
        let sample = match var("IBS_CRASH_SAMPLE").as_deref() {
            Some("all") => None,
            Some(v) => Some(v.parse().expect("IBS_CRASH_SAMPLE: a number or `all`")),
            None if points <= 10 => None,
            None => Some(2),
        };
        Plan {
            points,
            segment,
            sample,
            compact: match var("IBS_CRASH_COMPACT").as_deref() {
                Some(v) => v == "1",
                None => points > 10,
            },
        }
    }

    /// A fresh repository for a segment, under `cert`.
    pub fn init(&self, fx: &Fx, cer: &Path) {
        let cmd = fx.repo_cmd("init").arg("--cert").arg(cer);
        let cmd = if self.compact {
            cmd.args(["--pack-size", "4"])
        } else {
            cmd
        };
        cmd.run().ok();
    }

    /// The global kill-point numbers of each segment, from the one holding `IBS_CRASH_FROM` on
    /// (default 0: all).
    pub fn segments(&self) -> Vec<std::ops::Range<usize>> {
        let from = std::env::var("IBS_CRASH_FROM")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0usize);
        (0..self.points)
            .step_by(self.segment)
            .map(|s| s..(s + self.segment).min(self.points))
            .filter(|r| r.end > from)
            .collect()
    }

    /// Kill points this run exercises (all of them unless `IBS_CRASH_FROM` skips some).
    pub fn exercised(&self) -> usize {
        self.segments().iter().map(|r| r.len()).sum()
    }

    /// The backups to restore after a kill: the newest and a seeded sample of the earlier ones.
    pub fn after_kill<'a>(
        &self,
        rng: &mut StdRng,
        backups: &'a [(String, Snapshot)],
    ) -> Vec<&'a (String, Snapshot)> {
        let Some((newest, earlier)) = backups.split_last() else {
            return Vec::new();
        };
        let mut out: Vec<&(String, Snapshot)> = match self.sample {
            Some(k) if k < earlier.len() => rand::seq::index::sample(rng, earlier.len(), k)
                .into_iter()
                .map(|i| &earlier[i])
                .collect(),
            _ => earlier.iter().collect(),
        };
        out.push(newest);
        out
    }
}

/// Progress of a long run, one line per segment (shown with `--nocapture`).
pub fn segment_done(what: &str, range: &std::ops::Range<usize>, plan: &Plan, since: Instant) {
    println!(
        "{what}: segment done, kill points {}..{} of {} passed, {:.0} s",
        range.start,
        range.end,
        plan.points,
        since.elapsed().as_secs_f64()
    );
}

/// The seed to print and reproduce with (`IBS_CRASH_SEED`).
pub fn seed() -> u64 {
    std::env::var("IBS_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x1b5_c4a5)
}

/// A segment's RNG, salted per test and by the segment's first kill point, so a segment replays
/// alone (`IBS_CRASH_FROM`).
pub fn segment_rng(seed: u64, salt: u64, first: usize) -> StdRng {
    StdRng::seed_from_u64(seed ^ salt ^ ((first as u64) << 24))
}

/// ~75 MiB (compact: ~20 MiB) of mixed data: incompressible files, text, duplicated content, zero
/// runs, many small files, nested folders, a symlink and an empty folder.
pub fn make_source(dir: &Path, rng: &mut StdRng, compact: bool) {
    let mut first_random = None;
    for i in 0..if compact { 4 } else { 16 } {
        let len = rng.gen_range(1_500_000..3_500_000);
        let data = pseudo_random(rng.gen(), len);
        if first_random.is_none() {
            first_random = Some(data.clone());
        }
        write(&dir.join(format!("bin/d{}/r{i:02}.bin", i % 3)), &data);
    }
    for i in 0..if compact { 2 } else { 8 } {
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
    let mut img = vec![0u8; if compact { 3 << 20 } else { 6 << 20 }];
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
pub fn mutate(dir: &Path, rng: &mut StdRng, round: usize, compact: bool) {
    let bins = files_under(&dir.join("bin"));
    // About 20 MiB of new data (compact: about 7.5 MiB): more than one pack of 16 MiB (compact:
    // 4 MiB), so a pack is stored mid-run.
    for _ in 0..if compact { 3 } else { 8 } {
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

pub fn spawn(cmd: Ibs, log: &Path) -> Child {
    let mut c = cmd.command();
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    c.spawn().expect("spawn ibs")
}

/// The one-line summary, written straight to stderr so it shows without `--nocapture`.
pub fn summary(line: String) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Classifies a killed child: true if it was interrupted, false if it had finished successfully.
/// Any other exit (an error of its own) fails the test.
pub fn interrupted(status: ExitStatus, log: &Path, what: &str) -> bool {
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
pub fn verify_restores<'a>(
    fx: &Fx,
    backups: impl IntoIterator<Item = &'a (String, Snapshot)>,
    pfx: &Path,
    when: &str,
) {
    let backups: Vec<&(String, Snapshot)> = backups.into_iter().collect();
    std::thread::scope(|s| {
        for (k, part) in [0usize, 1]
            .iter()
            .map(|k| (k, backups.iter().skip(*k).step_by(2)))
        {
            s.spawn(move || {
                for &(id, snap) in part {
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
pub fn lock_files(fx: &Fx) -> Vec<PathBuf> {
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
pub fn hardlink_clone(from: &Path, to: &Path) {
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
pub fn objects(fx: &Fx) -> std::collections::BTreeSet<String> {
    objects_in(&fx.mas())
}

pub fn objects_in(mas: &Path) -> std::collections::BTreeSet<String> {
    listing(mas)
        .into_keys()
        .filter(|k| !k.ends_with('/') && !k.starts_with("locks/") && !k.contains(".ibs-tmp-"))
        .collect()
}

pub use ibs_testing::copy_dir;

/// What a rehearsal of a command on a throw-away copy of the repository showed.
pub struct Rehearsal {
    pub took: Duration,
    /// Objects it created or deleted.
    pub changes: usize,
}

/// Rehearses `repo <args>` on a copy of the repository (objects hard-linked, writer state copied).
pub fn rehearse(fx: &Fx, args: &[String], pfx_password: bool) -> Rehearsal {
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
pub enum Kill {
    /// After a random delay.
    After(Duration),
    /// As soon as the process has created or deleted this many objects (the windows between one
    /// write and the next: after the envelope, a pack, the index, the manifest, a deletion …).
    AtChange(usize),
}

/// Half the kills after a random delay from 20 ms to the end of the expected run (at most `cap`),
/// the others right after a random one of the run's writes (timed kills mostly land while the
/// process reads; these hit the windows between its writes).
pub fn choose_kill(rng: &mut StdRng, r: &Rehearsal, cap: Duration) -> Kill {
    if r.changes == 0 || rng.gen_ratio(1, 2) {
        let hi = r.took.min(cap).as_millis().max(40) as u64;
        Kill::After(Duration::from_millis(rng.gen_range(20..=hi)))
    } else {
        Kill::AtChange(rng.gen_range(1..=r.changes))
    }
}

pub struct Killed {
    pub status: ExitStatus,
    pub at: Duration,
    pub created: usize,
    pub deleted: usize,
}

/// Runs `cmd`, SIGKILLs it as `kill` says (unless it finishes first), reaps it.
pub fn run_and_kill(fx: &Fx, cmd: Ibs, kill: Kill, log: &Path) -> Killed {
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
