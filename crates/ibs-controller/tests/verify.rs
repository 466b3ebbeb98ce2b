//! Scheduled verification against a real local-folder repository with real keys, on a
//! `ManualClock`: sampling covers every pack, a flipped byte or a missing pack marks exactly the
//! affected backups (and components) Corrupted with an alert, the next backup heals what the
//! sources still have, and verification goes through the job gate (skipped in maintenance or
//! while a backup runs). The `docs` source is the realistic tree of `ibs_testing` (symlinks of every
//! sort, hard links, a sparse file, a FIFO, a socket, odd names, xattrs), and a restore after the
//! heal must reproduce it entry by entry.

use base64::Engine as _;
use ibs_controller::alerts::AlertKind;
use ibs_controller::model::{Job, JobKind, JobStatus, MaintenanceOp, MaintenanceOutcome};
use ibs_controller::settings::LocationUpdate;
use ibs_controller::testing::{self, command, files, LocalOpener, TestController};
use ibs_controller::ControllerError;
use ibs_controller::RestoreRequest;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const T0: i64 = 1_800_000_000;
const H: i64 = 3600;

struct Fixture {
    t: TestController,
    share: tempfile::TempDir,
    docs: tempfile::TempDir,
    logs: tempfile::TempDir,
}

async fn fixture(extra: Vec<ibs_controller::component::ComponentConfig>) -> Fixture {
    let share = tempfile::tempdir().unwrap();
    let docs = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    ibs_testing::realistic_tree(docs.path());
    std::fs::write(
        docs.path().join("a.txt"),
        b"the docs, stable across backups",
    )
    .unwrap();
    std::fs::write(logs.path().join("b.txt"), b"a stable log file").unwrap();
    std::fs::write(logs.path().join("x.txt"), b"x, first version").unwrap();
    let mut comps = vec![files("docs", &[docs.path()]), files("logs", &[logs.path()])];
    comps.extend(extra);
    let t = testing::controller_with(T0, comps, Some(Arc::new(LocalOpener)));
    t.ctl
        .update_location(
            LocationUpdate {
                path: Some(share.path().display().to_string()),
                certificate: Some(
                    base64::engine::general_purpose::STANDARD
                        .encode(testing::identity().certificate().der()),
                ),
                verify_sample_percent: Some(100),
                ..Default::default()
            },
            "test",
        )
        .await
        .expect("configure");
    Fixture {
        t,
        share,
        docs,
        logs,
    }
}

fn packs(share: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let root = share.join("MASBackup/packs");
    for d in std::fs::read_dir(&root).into_iter().flatten() {
        for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
            out.insert(f.unwrap().path());
        }
    }
    out
}

async fn backup(t: &TestController) -> Job {
    let (j, h) = t.ctl.start_backup().expect("start backup");
    h.await.unwrap();
    let j = t.ctl.job(&j.id).unwrap();
    assert_eq!(j.status, JobStatus::Succeeded, "{j:?}");
    j
}

async fn verify(t: &TestController) -> Job {
    let (j, h) = t.ctl.start_verification().expect("start verification");
    h.await.unwrap();
    let j = t.ctl.job(&j.id).unwrap();
    assert_eq!(j.status, JobStatus::Succeeded, "{j:?}");
    j
}

/// B1: docs {a}, logs {b, x1}; B2: logs {b, x2}. Returns (B1, B2, packs of B1, packs new in B2).
async fn two_backups(f: &Fixture) -> (Job, Job, BTreeSet<PathBuf>, BTreeSet<PathBuf>) {
    let b1 = backup(&f.t).await;
    let p1 = packs(f.share.path());
    f.t.clock.advance(H);
    std::fs::write(f.logs.path().join("x.txt"), b"x, second version!").unwrap();
    let b2 = backup(&f.t).await;
    let p2: BTreeSet<PathBuf> = packs(f.share.path()).difference(&p1).cloned().collect();
    assert!(!p1.is_empty() && !p2.is_empty());
    (b1, b2, p1, p2)
}

fn flip_byte(p: &Path) {
    let mut b = std::fs::read(p).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x40;
    std::fs::write(p, b).unwrap();
}

fn corrupted_alert(t: &TestController) -> Option<ibs_controller::alerts::Alert> {
    t.ctl
        .alerts()
        .list(true)
        .unwrap()
        .into_iter()
        .find(|a| a.kind == AlertKind::BackupsCorrupted.as_str())
}

#[tokio::test(flavor = "multi_thread")]
async fn sampling_covers_every_pack_once_in_four_runs() {
    let f = fixture(vec![]).await;
    for i in 0..8 {
        std::fs::write(
            f.docs.path().join(format!("n{i}.txt")),
            format!("new file {i}"),
        )
        .unwrap();
        backup(&f.t).await;
        f.t.clock.advance(H);
    }
    let all: BTreeSet<String> = packs(f.share.path())
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(all.len(), 8, "one pack per backup");
    f.t.ctl
        .update_location(
            LocationUpdate {
                verify_sample_percent: Some(25),
                ..Default::default()
            },
            "test",
        )
        .await
        .unwrap();
    let mut run_times = Vec::new();
    for run in 0..4 {
        let j = verify(&f.t).await;
        run_times.push(f.t.ctl.now());
        let v = j.verification.unwrap();
        assert_eq!((v.packs_total, v.packs_checked, v.damaged_found), (8, 2, 0));
        assert!(v.bytes_read > 0);
        assert_eq!(v.coverage_ever, (run + 1) as f64 * 2.0 / 8.0);
        f.t.clock.advance(24 * H);
    }
    let records = f.t.ctl.db().pack_checks().unwrap();
    assert_eq!(records.keys().cloned().collect::<BTreeSet<_>>(), all);
    for r in records.values() {
        assert_eq!(r.checks, 1, "pack {} verified exactly once", r.pack);
        assert!(r.ok);
    }
    for t in &run_times {
        let n = records.values().filter(|r| r.verified_at == *t).count();
        assert_eq!(n, 2, "two packs recorded at run time {t}");
    }
    let status = f.t.ctl.verification_status().unwrap();
    assert_eq!((status.packs_recorded, status.coverage_window), (8, 1.0));
    // A fifth run starts over with the least recently verified packs.
    verify(&f.t).await;
    let again = f.t.ctl.db().pack_checks().unwrap();
    assert_eq!(again.values().filter(|r| r.checks == 2).count(), 2);
    assert!(again
        .values()
        .filter(|r| r.checks == 2)
        .all(|r| records[&r.pack].verified_at == run_times[0]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flipped_byte_marks_exactly_the_affected_backup_and_component() {
    let f = fixture(vec![]).await;
    let (b1, b2, _, p2) = two_backups(&f).await;
    p2.iter().for_each(|p| flip_byte(p));
    let j = verify(&f.t).await;
    let v = j.verification.unwrap();
    assert_eq!(v.damaged_found, p2.len() as u64);
    assert_eq!(v.corrupted_backups, vec![b2.id.clone()]);

    let b2 = f.t.ctl.backup(&b2.id).unwrap();
    let c = b2.corrupted.expect("B2 is Corrupted");
    assert_eq!(c.components, vec!["logs"]);
    assert!(!c.all_components);
    assert_eq!(
        b2.status,
        JobStatus::Succeeded,
        "the original status is kept"
    );
    let b1 = f.t.ctl.backup(&b1.id).unwrap();
    assert!(b1.corrupted.is_none(), "B1 does not use the damaged pack");
    assert_eq!(b1.status, JobStatus::Succeeded);

    let a = corrupted_alert(&f.t).expect("the corrupted alert is open");
    assert!(a.details.contains(&b2.id), "{}", a.details);
    assert!(a.details.contains("components logs"), "{}", a.details);
    assert!(!a.details.contains(&b1.id) && !a.details.contains("docs"));
    assert_eq!(a.severity, "Critical");
    // The damage is persisted in the repository, where store prune does not call it foreign.
    let marker = f.share.path().join("MASBackup/damaged");
    assert_eq!(std::fs::read_dir(&marker).unwrap().count(), p2.len());
    assert!(f
        .t
        .ctl
        .store_prune(true, "test")
        .await
        .unwrap()
        .paths
        .is_empty());
    let status = f.t.ctl.verification_status().unwrap();
    assert_eq!(status.corrupted_backups, vec![b2.id.clone()]);
    assert!(status.damaged[0]
        .reason
        .as_deref()
        .unwrap()
        .starts_with("hash-mismatch"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_next_backup_heals_what_the_sources_still_have() {
    let f = fixture(vec![]).await;
    let (b1, b2, p1, _) = two_backups(&f).await;
    p1.iter().for_each(|p| flip_byte(p));
    let v = verify(&f.t).await.verification.unwrap();
    let mut affected = v.corrupted_backups.clone();
    affected.sort();
    assert_eq!(affected, vec![b1.id.clone(), b2.id.clone()]);
    let c1 = f.t.ctl.backup(&b1.id).unwrap().corrupted.unwrap();
    assert_eq!(c1.components, vec!["docs", "logs"]);

    // B3 reads the same sources (docs {a}, logs {b, x2}): a, b and the docs tree are stored
    // again; x1 and B1's logs tree are no longer at the source.
    f.t.clock.advance(H);
    let before = packs(f.share.path());
    let b3 = backup(&f.t).await;
    let new: Vec<_> = packs(f.share.path()).difference(&before).cloned().collect();
    assert!(!new.is_empty(), "the heal wrote new packs");
    assert!(f.t.ctl.backup(&b3.id).unwrap().corrupted.is_none());
    let b2 = f.t.ctl.backup(&b2.id).unwrap();
    assert!(
        b2.corrupted.is_none(),
        "B2 is whole again: {:?}",
        b2.corrupted
    );
    let c1 =
        f.t.ctl
            .backup(&b1.id)
            .unwrap()
            .corrupted
            .expect("B1 stays Corrupted");
    assert_eq!(c1.components, vec!["logs"]);
    let a = corrupted_alert(&f.t).expect("B1 is still affected");
    assert!(a.details.contains(&b1.id) && !a.details.contains(&b2.id));

    // B2 restores byte-identical with the .pfx (through the healthy copies).
    for comp in ["docs", "logs"] {
        let out = tempfile::tempdir().unwrap();
        let req = RestoreRequest {
            component: Some(comp.into()),
            target: out.path().join("r"),
            force: false,
            pfx: testing::identity().to_pfx("pw").unwrap(),
            pfx_password: "pw".into(),
            more_keys: Vec::new(),
            allow_newer: false,
        };
        let (r, h) = f.t.ctl.start_restore(&b2.id, req, "test").await.unwrap();
        h.await.unwrap();
        let r = f.t.ctl.job(&r.id).unwrap();
        assert_eq!(r.status, JobStatus::Succeeded, "{r:?}");
        if comp == "docs" {
            let expected = ibs_testing::snapshot(f.docs.path());
            ibs_testing::assert_restored(&expected, &out.path().join("r"), "docs of B2");
            continue;
        }
        let src = &f.logs;
        for e in std::fs::read_dir(src.path()).unwrap() {
            let e = e.unwrap();
            let restored = find_file(&out.path().join("r"), &e.file_name());
            assert_eq!(
                std::fs::read(restored).unwrap(),
                std::fs::read(e.path()).unwrap()
            );
        }
    }

    // Once B1 is gone, prune deletes the damaged packs (every still-referenced chunk has a
    // healthy copy) and their markers. B1 is removed as retention removes a backup: in the
    // controller's records first (a manifest deleted behind the controller's back makes prune
    // refuse), then the cleanup deletes its manifest.
    let s = f.share.path().join("MASBackup");
    let mut j1 = f.t.ctl.backup(&b1.id).unwrap();
    j1.deleted_at = Some(1);
    f.t.ctl.db().put_job(&j1).unwrap();
    f.t.ctl.start_retention().unwrap().await.unwrap();
    assert!(!s
        .join("backups")
        .join(b1.backup_id.as_ref().unwrap())
        .exists());
    assert!(p1.iter().all(|p| !p.exists()), "damaged packs were pruned");
    assert_eq!(
        std::fs::read_dir(s.join("damaged"))
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );
    f.t.clock.advance(H);
    let j = verify(&f.t).await;
    assert!(j.verification.unwrap().corrupted_backups.is_empty());
    assert!(
        corrupted_alert(&f.t).is_none(),
        "nothing is affected any more"
    );
}

fn find_file(root: &Path, name: &std::ffi::OsStr) -> PathBuf {
    for e in walk(root) {
        if e.file_name() == Some(name) {
            return e;
        }
    }
    panic!("{name:?} not restored under {}", root.display());
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_pack_counts_as_damage() {
    let f = fixture(vec![]).await;
    let (b1, b2, _, p2) = two_backups(&f).await;
    p2.iter().for_each(|p| std::fs::remove_file(p).unwrap());
    let v = verify(&f.t).await.verification.unwrap();
    assert_eq!(v.damaged_found, p2.len() as u64);
    assert_eq!(v.corrupted_backups, vec![b2.id.clone()]);
    assert!(f.t.ctl.backup(&b1.id).unwrap().corrupted.is_none());
    let status = f.t.ctl.verification_status().unwrap();
    assert!(status
        .damaged
        .iter()
        .all(|d| d.reason.as_deref().unwrap().starts_with("missing")));
}

#[tokio::test(flavor = "multi_thread")]
async fn verification_is_skipped_in_maintenance_and_while_a_backup_runs() {
    let f = fixture(vec![command("slow", "sleep 2; echo slow", None, false)]).await;
    // The first tick runs the due backup and schedules the first verification a period later.
    let out = f.t.ctl.tick().unwrap();
    assert!(out.verify_job.is_none());
    out.handle.unwrap().await.unwrap();
    if let Some(r) = out.retention {
        r.await.unwrap();
    }

    f.t.ctl
        .begin_maintenance(MaintenanceOp::Update, "test")
        .unwrap();
    f.t.clock.advance(24 * H + 1);
    let out = f.t.ctl.tick().unwrap();
    let v = out.verify_job.expect("a verification slot was due");
    assert_eq!((v.kind, v.status), (JobKind::Verify, JobStatus::Skipped));
    assert!(v.error.as_deref().unwrap().contains("maintenance"), "{v:?}");
    if let Some(r) = out.retention {
        r.await.unwrap();
    }
    assert!(matches!(
        f.t.ctl.start_verification(),
        Err(ControllerError::Conflict { .. })
    ));
    f.t.ctl
        .end_maintenance(MaintenanceOutcome::Succeeded, "test")
        .unwrap();

    let (b, h) = f.t.ctl.start_backup().unwrap();
    assert!(matches!(
        f.t.ctl.start_verification(),
        Err(ControllerError::Conflict { .. })
    ));
    f.t.clock.advance(24 * H + 1);
    let out = f.t.ctl.tick().unwrap();
    let v = out.verify_job.expect("a verification slot was due");
    assert_eq!(v.status, JobStatus::Skipped);
    assert_eq!(
        v.error.as_deref(),
        Some(format!("backup {} is running", b.id).as_str())
    );
    h.await.unwrap();
    assert!(
        f.t.ctl.db().pack_checks().unwrap().is_empty(),
        "nothing was verified"
    );
    // The skips are recorded like other jobs.
    let skipped =
        f.t.ctl
            .jobs(100)
            .unwrap()
            .into_iter()
            .filter(|j| j.kind == JobKind::Verify && j.status == JobStatus::Skipped)
            .count();
    assert_eq!(skipped, 2);
}
