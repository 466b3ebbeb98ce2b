//! Several writers, one repository: four writers (each joined with the .pfx, each with its own
//! writer state) back up overlapping trees into one repository at the same time, on a local
//! folder, on a real Samba share and on a real Ceph RADOS Gateway bucket. Backups hold the append lock, so with `--lock-wait 0` none
//! of them may fail on another's lock; then more rounds run while prune runs between them. Every
//! backup succeeds, `check --read-data` passes, each backup restores exactly, and the repository
//! after a final prune is close to the size of the union of the trees: at least the union and
//! less than 1.2 times it (packs are compressed and encrypted; the trees are incompressible).

mod common;
use common::s3::block_on;
use common::*;
use ibs_testing::rgw::{self, Gateway};
use ibs_testing::samba::{region, shared_server, DIR, PORT, USER};
use std::path::{Path, PathBuf};
use std::sync::Barrier;

const WRITERS: usize = 4;
const SHARED_MIB: usize = 8;
const OWN_MIB: usize = 2;

/// Where the repository is and how to reach it.
struct Loc {
    arg: String,
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
        .arg(state);
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
    src
}

fn backup(loc: &Loc, state: &Path, src: &Path, lock_wait: u64) -> Out {
    cmd(loc, "backup", state)
        .args(["--lock-wait", &lock_wait.to_string()])
        .arg("--source")
        .arg(format!("data={}", src.display()))
        .run()
}

fn scenario(root: &Path, loc: &Loc) {
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

    // Rounds 1 and 2 with prune running between backups (it takes the exclusive lock; backups
    // and prune wait for each other, never fail).
    let more: Vec<(String, Snapshot)> = std::thread::scope(|sc| {
        let pruner = sc.spawn(|| {
            for _ in 0..3 {
                cmd(loc, "prune", &states[0])
                    .args(["--lock-wait", "300", "--grace-hours", "0"])
                    .run()
                    .ok();
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
        });
        let hs: Vec<_> = (0..WRITERS)
            .map(|i| {
                let states = &states;
                sc.spawn(move || {
                    let mut out = Vec::new();
                    for round in 1..=2 {
                        let src = tree(root, i, round);
                        let want = snapshot(&src);
                        let o = backup(loc, &states[i], &src, 300);
                        assert_eq!(o.code, 0, "writer {i} round {round}:\n{o}");
                        out.push((o.last_line(), want));
                    }
                    out
                })
            })
            .collect();
        let r = hs.into_iter().flat_map(|h| h.join().unwrap()).collect();
        pruner.join().unwrap();
        r
    });
    done.extend(more);

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
    let union = ((SHARED_MIB + WRITERS * OWN_MIB) << 20) as u64;
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
        kind: Kind::S3 {
            gw,
            bucket,
            prefix: "r".into(),
        },
    };
    scenario(tmp.path(), &loc);
}
