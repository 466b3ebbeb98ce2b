//! Controller jobs with a fake clock and in-memory storage: components (command failures, essential
//! flags, hooks, excludes), restore, alerts, retention, store prune and the restart rule.

mod controller_support;

use controller_support::*;
use ibs_controller::alerts::AlertKind;
use ibs_controller::model::JobStatus;
use ibs_controller::settings::LocationUpdate;
use ibs_controller::testing::{self, command, files};
use ibs_controller::ControllerError;
use ibs_controller::RestoreRequest;
use ibs_storage::AlertClass;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn failing_command_gives_partial_success_and_recovery_readiness() {
    let src = sample_dir();
    let t = setup(vec![
        files("sample", &[src.path()]),
        command("export", "echo partial; exit 3", None, false),
    ])
    .await;
    let (j, h) = t.ctl.start_backup().unwrap();
    h.await.unwrap();
    let j = t.ctl.job(&j.id).unwrap();
    assert_eq!(j.status, JobStatus::PartialSucceeded);
    let export = j.components.iter().find(|c| c.name == "export").unwrap();
    assert_eq!(export.status, JobStatus::Failed);
    assert!(export.message.as_deref().unwrap().contains("exited"));
    assert!(j.recovery_ready, "the failed component is not essential");
    assert!(t.ctl.alerts().is_open(AlertKind::PartialSucceeded).unwrap());

    t.ctl
        .set_components(
            vec![
                files("sample", &[src.path()]),
                command("export", "exit 1", None, true),
            ],
            "admin",
        )
        .unwrap();
    let (j, h) = t.ctl.start_backup().unwrap();
    h.await.unwrap();
    assert!(!t.ctl.job(&j.id).unwrap().recovery_ready);
}

#[tokio::test(flavor = "multi_thread")]
async fn hooks_run_and_post_always_runs() {
    let src = sample_dir();
    let marks = tempfile::tempdir().unwrap();
    let m = marks.path().display().to_string();
    let mut bad = files("sample", &[src.path()]);
    bad.pre_hook = Some("exit 1".into());
    bad.post_hook = Some(format!("touch {m}/post-ran"));
    let t = setup(vec![bad, command("other", "echo x", None, false)]).await;
    let (j, h) = t.ctl.start_backup().unwrap();
    h.await.unwrap();
    let j = t.ctl.job(&j.id).unwrap();
    assert_eq!(j.status, JobStatus::PartialSucceeded);
    assert!(
        marks.path().join("post-ran").exists(),
        "post hook runs after a failed pre hook"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_files_and_command_components_and_exclusion() {
    let src = sample_dir();
    let out_dir = tempfile::tempdir().unwrap();
    let restored_cmd = out_dir.path().join("cmd.out");
    let t = setup(vec![
        files("sample", &[src.path()]),
        command(
            "db",
            "printf 'exported-bytes'",
            Some(&format!("cat > {}", restored_cmd.display())),
            true,
        ),
    ])
    .await;
    let (b, h) = t.ctl.start_backup().unwrap();
    h.await.unwrap();
    assert_eq!(t.ctl.job(&b.id).unwrap().status, JobStatus::Succeeded);
    let id = testing::identity();
    let pfx = id.to_pfx("pw").unwrap();
    let req = |component: Option<&str>, target: std::path::PathBuf| RestoreRequest {
        component: component.map(String::from),
        target,
        force: false,
        pfx: pfx.clone(),
        pfx_password: "pw".into(),
        more_keys: Vec::new(),
        allow_newer: false,
    };
    // A bad password is refused before any job exists.
    let mut wrong = req(None, out_dir.path().join("x"));
    wrong.pfx_password = "nope".into();
    assert!(
        matches!(t.ctl.start_restore(&b.id, wrong, "admin").await, Err(ControllerError::Invalid { ref field, .. }) if field == "pfx_password")
    );
    assert!(matches!(
        t.ctl
            .start_restore(&b.id, req(Some("nope"), out_dir.path().join("x")), "admin")
            .await,
        Err(ControllerError::Invalid { .. })
    ));

    let target = out_dir.path().join("all");
    let (r, h) = t
        .ctl
        .start_restore(&b.id, req(None, target.clone()), "admin")
        .await
        .unwrap();
    // Restore and backup exclude each other.
    assert!(matches!(
        t.ctl.start_backup(),
        Err(ControllerError::Conflict { .. })
    ));
    h.await.unwrap();
    let r = t.ctl.job(&r.id).unwrap();
    assert_eq!(r.status, JobStatus::Succeeded, "{r:?}");
    assert_eq!(
        std::fs::read(target.join("sample/sub/b.bin")).unwrap(),
        vec![7u8; 100_000]
    );
    assert_eq!(std::fs::read(&restored_cmd).unwrap(), b"exported-bytes");
    let one = out_dir.path().join("one");
    let (r, h) = t
        .ctl
        .start_restore(&b.id, req(Some("sample"), one.clone()), "admin")
        .await
        .unwrap();
    h.await.unwrap();
    assert_eq!(t.ctl.job(&r.id).unwrap().status, JobStatus::Succeeded);
    assert_eq!(std::fs::read(one.join("a.txt")).unwrap(), b"alpha");
}

#[tokio::test(flavor = "multi_thread")]
async fn failure_alerts_follow_the_lifecycle() {
    let src = sample_dir();
    let t = setup(vec![files("sample", &[src.path()])]).await;
    t.opener.fail("/mem/share", Some(AlertClass::Path));
    let (j, h) = t.ctl.start_backup().unwrap();
    h.await.unwrap();
    let j = t.ctl.job(&j.id).unwrap();
    assert_eq!(
        (j.status, j.alert_class.as_deref()),
        (JobStatus::Failed, Some("path"))
    );
    assert!(t
        .ctl
        .alerts()
        .is_open(AlertKind::BackupFailed(AlertClass::Path))
        .unwrap());
    t.opener
        .fail("/mem/share", Some(AlertClass::Authentication));
    let (_, h) = t.ctl.start_backup().unwrap();
    h.await.unwrap();
    let open: Vec<_> = t
        .ctl
        .alerts()
        .list(true)
        .unwrap()
        .into_iter()
        .filter(|a| a.category == "backup-failed")
        .collect();
    assert_eq!(open.len(), 1, "a new category closes the previous");
    assert_eq!(open[0].title, AlertClass::Authentication.title());
    t.opener.fail("/mem/share", None);
    let (_, h) = t.ctl.start_backup().unwrap();
    h.await.unwrap();
    assert!(
        t.ctl.alerts().list(true).unwrap().is_empty(),
        "a success closes every failed alert"
    );
    assert_eq!(
        t.ctl.alerts().list(false).unwrap().len(),
        2,
        "history is kept"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn accessibility_test_refuses_a_bad_location() {
    let t = testing::controller(T0, vec![]);
    t.opener.fail("/mem/bad", Some(AlertClass::Authentication));
    let e = t
        .ctl
        .update_location(
            LocationUpdate {
                path: Some("/mem/bad".into()),
                certificate: Some(cert_b64()),
                ..Default::default()
            },
            "admin",
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ControllerError::Storage {
                class: AlertClass::Authentication,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        t.ctl.location().unwrap().path.is_none(),
        "nothing was saved"
    );
    configure(&t.ctl, "/mem/good").await;
    let s = t.opener.storage("/mem/good").unwrap();
    assert!(
        s.list("").await.unwrap().is_empty(),
        "the probe was deleted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lowering_retention_needs_confirmation_and_cleanup_keeps_newest() {
    let src = sample_dir();
    let t = setup(vec![files("sample", &[src.path()])]).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (j, h) = t.ctl.start_backup().unwrap();
        h.await.unwrap();
        ids.push(j.id);
        t.clock.advance(3 * 24 * H);
    }
    // Now: backups 9, 6 and 3 days old. Retention 7 → 2 would keep the newest only.
    t.ctl
        .update_location(
            LocationUpdate {
                retention_days: Some(7),
                ..Default::default()
            },
            "admin",
        )
        .await
        .unwrap();
    let e = t
        .ctl
        .update_location(
            LocationUpdate {
                retention_days: Some(2),
                ..Default::default()
            },
            "admin",
        )
        .await
        .unwrap_err();
    match e {
        ControllerError::Conflict {
            details: Some(d), ..
        } => {
            let list: Vec<String> = serde_json::from_value(d["would_delete"].clone()).unwrap();
            assert_eq!(list, {
                let mut v = ids[..2].to_vec();
                v.sort();
                v
            });
        }
        other => panic!("expected 409 with the list, got {other:?}"),
    }
    assert_eq!(
        t.ctl.location().unwrap().retention_days,
        7,
        "not applied without confirmation"
    );
    t.ctl
        .update_location(
            LocationUpdate {
                retention_days: Some(2),
                confirm: true,
                ..Default::default()
            },
            "admin",
        )
        .await
        .unwrap();
    t.ctl.start_retention().unwrap().await.unwrap();
    let repo_ids: Vec<String> = {
        let s = t.opener.storage("/mem/share").unwrap();
        s.list("backups/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key.as_str().to_string())
            .collect()
    };
    assert_eq!(
        repo_ids.len(),
        1,
        "only the newest backup is left: {repo_ids:?}"
    );
    assert!(t.ctl.backup(&ids[0]).unwrap().deleted_at.is_some());
    assert!(t.ctl.backup(&ids[2]).unwrap().deleted_at.is_none());
    assert!(!t.ctl.alerts().is_open(AlertKind::RetentionFailed).unwrap());
    // A cleanup that cannot reach the share raises the alert.
    t.opener.fail("/mem/share", Some(AlertClass::Connectivity));
    t.ctl.start_retention().unwrap().await.unwrap();
    assert!(t.ctl.alerts().is_open(AlertKind::RetentionFailed).unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn certificate_expiry_alerts_follow_the_clock() {
    let t = testing::controller(T0, vec![]);
    configure(&t.ctl, "/mem/share").await;
    let not_after = testing::identity().certificate().not_after();
    t.clock.set(not_after - 40 * 24 * H);
    t.ctl.evaluate_conditions().unwrap();
    assert!(!t
        .ctl
        .alerts()
        .is_open(AlertKind::CertificateExpiring)
        .unwrap());
    t.clock.set(not_after - 10 * 24 * H);
    t.ctl.evaluate_conditions().unwrap();
    assert!(t
        .ctl
        .alerts()
        .is_open(AlertKind::CertificateExpiring)
        .unwrap());
    t.clock.set(not_after + 1);
    t.ctl.evaluate_conditions().unwrap();
    assert!(t
        .ctl
        .alerts()
        .is_open(AlertKind::CertificateExpired)
        .unwrap());
    assert!(!t
        .ctl
        .alerts()
        .is_open(AlertKind::CertificateExpiring)
        .unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn store_prune_removes_only_foreign_files() {
    let src = sample_dir();
    let t = setup(vec![files("sample", &[src.path()])]).await;
    let (_, h) = t.ctl.start_backup().unwrap();
    h.await.unwrap();
    let s = t.opener.storage("/mem/share").unwrap();
    s.put(
        &ibs_storage::ObjectKey::new("notes.txt").unwrap(),
        bytes::Bytes::from_static(b"x"),
    )
    .await
    .unwrap();
    let dry = t.ctl.store_prune(true, "admin").await.unwrap();
    assert_eq!(dry.paths, vec!["MASBackup/notes.txt"]);
    assert_eq!(
        t.ctl.store_prune(false, "admin").await.unwrap().paths.len(),
        1
    );
    assert!(t
        .ctl
        .store_prune(true, "admin")
        .await
        .unwrap()
        .paths
        .is_empty());
    assert_eq!(t.ctl.backups(10).unwrap()[0].status, JobStatus::Succeeded);
    assert!(ibs_repo::Repository::open(s, t.ctl.clock().clone())
        .await
        .is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn running_jobs_are_interrupted_at_shutdown() {
    let t = setup(vec![command("slow", "sleep 1", None, true)]).await;
    let (j, h) = t.ctl.start_backup().unwrap();
    assert_eq!(t.ctl.shutdown().unwrap(), vec![j.id.clone()]);
    assert_eq!(t.ctl.job(&j.id).unwrap().status, JobStatus::Interrupted);
    h.abort();
    let _ = h.await;
    assert!(t.ctl.wait_idle(Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn files_excludes_are_applied_and_bad_patterns_refused() {
    let src = sample_dir();
    std::fs::write(src.path().join("scratch.tmp"), b"drop").unwrap();
    std::fs::create_dir(src.path().join("cache")).unwrap();
    std::fs::write(src.path().join("cache/blob"), b"drop").unwrap();
    let mut c = files("sample", &[src.path()]);
    c.exclude = vec!["*.tmp".into(), "cache".into()];
    let t = setup(vec![c]).await;
    let (b, h) = t.ctl.start_backup().unwrap();
    h.await.unwrap();
    assert_eq!(t.ctl.job(&b.id).unwrap().status, JobStatus::Succeeded);
    let out_dir = tempfile::tempdir().unwrap();
    let pfx = testing::identity().to_pfx("pw").unwrap();
    let req = RestoreRequest {
        component: Some("sample".into()),
        target: out_dir.path().join("r"),
        force: false,
        pfx,
        pfx_password: "pw".into(),
        more_keys: Vec::new(),
        allow_newer: false,
    };
    let (r, h) = t.ctl.start_restore(&b.id, req, "admin").await.unwrap();
    h.await.unwrap();
    assert_eq!(t.ctl.job(&r.id).unwrap().status, JobStatus::Succeeded);
    let root = out_dir.path().join("r");
    assert_eq!(std::fs::read(root.join("a.txt")).unwrap(), b"alpha");
    assert!(!root.join("scratch.tmp").exists() && !root.join("cache").exists());

    let mut bad = files("bad", &[src.path()]);
    bad.exclude = vec!["a[".into()];
    let Err(err) = ibs_controller::component::validate(&[bad]) else {
        panic!("a bad exclude pattern must be refused")
    };
    assert!(err.to_string().contains("exclude"), "{err}");
}

/// Issue 13 finding 9: a data folder an older ibs left with default modes (0755 folders, 0644
/// database, writer state and certificate files) is made owner-only when the daemon opens it;
/// the operator's own folders inside it (the embedded sample) are left alone.
#[test]
fn opening_an_old_data_folder_tightens_its_modes() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let loose = |p: &std::path::Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    for d in ["state/abc/delta", "certs", "tmp/job", "sample"] {
        std::fs::create_dir_all(data.join(d)).unwrap();
    }
    let files = [
        "admin-token",
        "secret.key",
        "state/abc/writer.json",
        "state/abc/files-cache.sqlite",
        "state/abc/delta/pg.sig",
        "certs/ibs-backup.pfx",
        "tmp/job/export.sql",
    ];
    for f in files {
        std::fs::write(data.join(f), b"x").unwrap();
        loose(&data.join(f), 0o644);
    }
    std::fs::write(data.join("sample/notes.txt"), b"operator data").unwrap();
    loose(&data.join("sample/notes.txt"), 0o644);
    for d in [
        "",
        "state",
        "state/abc",
        "state/abc/delta",
        "certs",
        "tmp",
        "tmp/job",
        "sample",
    ] {
        loose(&data.join(d), 0o755);
    }
    let db = ibs_controller::db::Db::open(&data.join("state.sqlite")).unwrap();
    drop(db);
    ibs_controller::controller::secure_data_dir(&data).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for f in files.iter().chain(&["state.sqlite"]) {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    for d in [
        "",
        "state",
        "state/abc",
        "state/abc/delta",
        "certs",
        "tmp",
        "tmp/job",
    ] {
        assert_eq!(mode(&data.join(d)), 0o700, "{d:?}");
    }
    assert_eq!(
        mode(&data.join("sample")),
        0o755,
        "the operator's folder is left alone"
    );
    assert_eq!(mode(&data.join("sample/notes.txt")), 0o644);
}
