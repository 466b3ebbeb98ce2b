//! A controller without a location, with a fake clock and in-memory storage: clearing the location
//! (defaults, credentials deleted from the database file, scheduler off, history and audit kept,
//! 409 while a job runs, configurable again), the `share-not-configured` alert raised by a due
//! scheduled slot and closed by configuring, and closed alerts purged after seven days into the
//! audit trail.

use base64::Engine as _;
use ibs_controller::alerts::AlertKind;
use ibs_controller::model::JobStatus;
use ibs_controller::scheduler::{Decision, NOT_CONFIGURED};
use ibs_controller::settings::{LocationUpdate, StoredLocation};
use ibs_controller::testing::{self, command, files, TestController};
use ibs_controller::{Controller, ControllerError};
use ibs_storage::AlertClass;

const T0: i64 = 1_800_000_000;
const H: i64 = 3600;
const DAY: i64 = 24 * H;

fn cert_b64() -> String {
    base64::engine::general_purpose::STANDARD.encode(testing::identity().certificate().der())
}

async fn set(ctl: &Controller, u: LocationUpdate) {
    ctl.update_location(u, "admin").await.expect("location set");
}

fn share(path: &str) -> LocationUpdate {
    LocationUpdate {
        path: Some(path.into()),
        certificate: Some(cert_b64()),
        ..Default::default()
    }
}

async fn finish(out: ibs_controller::TickOutcome) {
    for h in [out.handle, out.retention, out.verify]
        .into_iter()
        .flatten()
    {
        h.await.unwrap();
    }
}

/// The state database file and its WAL, as bytes.
fn db_bytes(t: &TestController) -> Vec<u8> {
    let mut all = Vec::new();
    for name in ["state.sqlite", "state.sqlite-wal"] {
        if let Ok(b) = std::fs::read(t.dir.path().join(name)) {
            all.extend(b);
        }
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn open_kinds(ctl: &Controller) -> Vec<String> {
    ctl.alerts()
        .list(true)
        .unwrap()
        .into_iter()
        .map(|a| a.kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn clearing_resets_the_location_deletes_credentials_and_stops_scheduled_backups() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("a.txt"), b"alpha").unwrap();
    let t = testing::controller(T0, vec![files("sample", &[src.path()])]);
    set(
        &t.ctl,
        LocationUpdate {
            username: Some("CONTOSO\\backup".into()),
            password: Some("hunter2-share-pw".into()),
            ..share("/mem/share")
        },
    )
    .await;
    let out = t.ctl.tick().unwrap();
    assert_eq!(out.decision, Decision::Run);
    finish(out).await;
    assert_eq!(t.ctl.backups(10).unwrap()[0].status, JobStatus::Succeeded);
    let sealed = t.ctl.stored_location().unwrap().password_sealed.unwrap();
    assert!(
        contains(&db_bytes(&t), &sealed),
        "the sealed password is in the database before the clear"
    );

    let view = t.ctl.clear_location("admin#1").unwrap();
    assert_eq!(view.path, None);
    assert_eq!(view.username, None);
    assert!(!view.password_set && !view.legacy_key_set);
    assert!(view.certificate.is_none());
    assert!(!view.scheduler_enabled);
    assert_eq!(view.next_backup_time, None);
    assert_eq!(view.available_bytes, None, "the cached capacity is dropped");
    let stored = t.ctl.stored_location().unwrap();
    assert_eq!(
        stored,
        StoredLocation {
            scheduler_enabled: false,
            updated_at: T0,
            ..StoredLocation::default()
        }
    );
    assert!(
        !contains(&db_bytes(&t), &sealed),
        "the sealed password is gone from the database file and its WAL"
    );
    assert_eq!(t.ctl.backups(10).unwrap().len(), 1, "job history is kept");
    let audit = t.ctl.db().audit_log(10).unwrap();
    assert_eq!(audit[0].action, "location.clear");
    assert_eq!(audit[0].actor, "admin#1");
    for f in [
        "path",
        "username",
        "password",
        "certificate",
        "scheduler_enabled",
    ] {
        assert!(audit[0].fields.contains(&f.to_string()), "{:?}", audit[0]);
    }
    assert!(
        audit.iter().any(|r| r.action == "location.update"),
        "the earlier audit trail is kept"
    );

    // The next due slot does not back up, and a deliberately cleared location raises nothing.
    t.clock.advance(12 * H);
    let out = t.ctl.tick().unwrap();
    assert_eq!(
        out.decision,
        Decision::Skip("automatic backups are disabled".into())
    );
    assert!(out.handle.is_none());
    finish(out).await;
    assert_eq!(t.ctl.backups(10).unwrap().len(), 1);
    assert_eq!(open_kinds(&t.ctl), Vec::<String>::new());

    // Configuring again and turning the scheduler on works.
    set(
        &t.ctl,
        LocationUpdate {
            scheduler_enabled: Some(true),
            ..share("/mem/share")
        },
    )
    .await;
    t.clock.advance(12 * H);
    let out = t.ctl.tick().unwrap();
    assert_eq!(out.decision, Decision::Run);
    finish(out).await;
    let b = t.ctl.backups(10).unwrap();
    assert_eq!(b.len(), 2);
    assert_eq!(b[0].status, JobStatus::Succeeded);
}

#[tokio::test(flavor = "multi_thread")]
async fn clearing_is_refused_while_a_job_runs() {
    let t = testing::controller(T0, vec![command("slow", "sleep 2; echo x", None, true)]);
    set(&t.ctl, share("/mem/share")).await;
    let (running, h) = t.ctl.start_backup().unwrap();
    match t.ctl.clear_location("admin") {
        Err(ControllerError::Conflict { message, .. }) => {
            assert!(message.contains(&running.id), "{message}")
        }
        other => panic!("expected 409, got {other:?}"),
    }
    h.await.unwrap();
    assert_eq!(
        t.ctl.stored_location().unwrap().path.as_deref(),
        Some("/mem/share")
    );
    assert!(t
        .ctl
        .db()
        .audit_log(10)
        .unwrap()
        .iter()
        .all(|r| r.action != "location.clear"));
    // Once the job ended the clear goes through.
    assert!(t.ctl.clear_location("admin").unwrap().path.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_due_backup_without_location_raises_share_not_configured_until_one_is_set() {
    let src = tempfile::tempdir().unwrap();
    let t = testing::controller(T0, vec![files("sample", &[src.path()])]);
    let out = t.ctl.tick().unwrap();
    assert_eq!(out.decision, Decision::Skip(NOT_CONFIGURED.into()));
    assert_eq!(out.job.as_ref().unwrap().status, JobStatus::Skipped);
    finish(out).await;
    let open = t.ctl.alerts().list(true).unwrap();
    assert_eq!(open.len(), 1, "{open:?}");
    let a = &open[0];
    let (title, description, remediation) = AlertKind::ShareNotConfigured.texts();
    assert_eq!(a.kind, "share-not-configured");
    assert_eq!(
        (a.category.as_str(), a.severity.as_str()),
        ("condition", "Critical")
    );
    assert_eq!(
        (
            a.title.as_str(),
            a.description.as_str(),
            a.remediation.as_str()
        ),
        (title, description, remediation)
    );
    assert!(a.details.contains("no share path"), "{}", a.details);

    // A share without a certificate is not a location yet: the next due slot refreshes the alert.
    set(
        &t.ctl,
        LocationUpdate {
            path: Some("/mem/share".into()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(open_kinds(&t.ctl), ["share-not-configured"]);
    t.clock.advance(12 * H);
    finish(t.ctl.tick().unwrap()).await;
    // (The hourly retention cleanup also runs on the bare share; its alert is not this test's.)
    let again: Vec<_> = t
        .ctl
        .alerts()
        .list(true)
        .unwrap()
        .into_iter()
        .filter(|x| x.kind == "share-not-configured")
        .collect();
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].id, a.id, "refreshed, not a second alert");
    assert!(
        again[0].details.contains("certificate"),
        "{}",
        again[0].details
    );

    // Configuring closes it; the next due slot backs up.
    set(&t.ctl, share("/mem/share")).await;
    assert!(!t
        .ctl
        .alerts()
        .is_open(AlertKind::ShareNotConfigured)
        .unwrap());
    let closed = t.ctl.alerts().get(a.id).unwrap().unwrap();
    assert_eq!(closed.state, "closed");
    assert_eq!(closed.closed_by.as_deref(), Some("condition cleared"));
    t.clock.advance(12 * H);
    let out = t.ctl.tick().unwrap();
    assert_eq!(out.decision, Decision::Run);
    finish(out).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn turning_automatic_backups_off_closes_share_not_configured() {
    let t = testing::controller(T0, vec![]);
    finish(t.ctl.tick().unwrap()).await;
    assert_eq!(open_kinds(&t.ctl), ["share-not-configured"]);
    set(
        &t.ctl,
        LocationUpdate {
            scheduler_enabled: Some(false),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(open_kinds(&t.ctl), Vec::<String>::new());
    t.clock.advance(12 * H);
    finish(t.ctl.tick().unwrap()).await;
    assert_eq!(open_kinds(&t.ctl), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn closed_alerts_are_purged_after_seven_days_and_kept_in_the_audit_trail() {
    let t = testing::controller(T0, vec![]);
    // No location and automatic backups off: the tick raises nothing of its own.
    set(
        &t.ctl,
        LocationUpdate {
            scheduler_enabled: Some(false),
            ..Default::default()
        },
    )
    .await;
    let alerts = t.ctl.alerts();
    let old = alerts
        .raise(AlertKind::PartialSucceeded, "c1 failed", T0)
        .unwrap();
    alerts
        .close_kind(AlertKind::PartialSucceeded, "a later backup succeeded", T0)
        .unwrap();
    let open = alerts
        .raise(AlertKind::BackupFailed(AlertClass::Path), "gone", T0)
        .unwrap();
    t.clock.set(T0 + 2 * DAY);
    let young = alerts
        .raise(AlertKind::RetentionFailed, "r", T0 + 2 * DAY)
        .unwrap();
    t.ctl.close_alert(young.id, "admin#1").unwrap();

    t.clock.set(T0 + 6 * DAY);
    finish(t.ctl.tick().unwrap()).await;
    assert!(
        alerts.get(old.id).unwrap().is_some(),
        "closed 6 days ago: kept"
    );

    t.clock.set(T0 + 8 * DAY);
    finish(t.ctl.tick().unwrap()).await;
    assert!(
        alerts.get(old.id).unwrap().is_none(),
        "closed 8 days ago: purged"
    );
    assert!(
        alerts.get(young.id).unwrap().is_some(),
        "closed 6 days ago: kept"
    );
    assert_eq!(
        alerts.get(open.id).unwrap().unwrap().state,
        "open",
        "open alerts are never purged"
    );
    let ids: Vec<i64> = alerts.list(false).unwrap().iter().map(|a| a.id).collect();
    assert_eq!(ids, [open.id, young.id]);
    let audit = t.ctl.db().audit_log(100).unwrap();
    let purged: Vec<_> = audit.iter().filter(|r| r.action == "alert.purge").collect();
    assert_eq!(purged.len(), 1, "{audit:?}");
    assert_eq!(purged[0].at, T0 + 8 * DAY);
    for f in [
        format!("alert:{}", old.id),
        "kind:backup-partially-succeeded".to_string(),
        "details:c1 failed".to_string(),
        "closed_by:a later backup succeeded".to_string(),
    ] {
        assert!(purged[0].fields.contains(&f), "{f} in {:?}", purged[0]);
    }

    // Ten days later the operator-closed one goes too, and is audited as well.
    t.clock.set(T0 + 10 * DAY);
    finish(t.ctl.tick().unwrap()).await;
    assert!(alerts.get(young.id).unwrap().is_none());
    assert!(alerts.get(open.id).unwrap().is_some());
    let audit = t.ctl.db().audit_log(100).unwrap();
    assert!(audit
        .iter()
        .any(|r| r.action == "alert.purge" && r.fields.contains(&format!("alert:{}", young.id))));
}

#[tokio::test(flavor = "multi_thread")]
async fn switching_from_a_share_to_a_local_folder_drops_the_share_credentials() {
    let t = testing::controller(T0, vec![]);
    set(
        &t.ctl,
        LocationUpdate {
            username: Some("CONTOSO\\backup".into()),
            password: Some("hunter2-share-pw".into()),
            ..share("\\\\fs01.contoso.com\\backups\\nyc")
        },
    )
    .await;
    let view = t.ctl.location().unwrap();
    assert_eq!(view.username.as_deref(), Some("CONTOSO\\backup"));
    assert!(view.password_set);
    // A local folder takes no credentials: `location show` must not go on naming the share user.
    set(
        &t.ctl,
        LocationUpdate {
            path: Some("/srv/ibs-local".into()),
            ..Default::default()
        },
    )
    .await;
    let view = t.ctl.location().unwrap();
    assert_eq!(view.path.as_deref(), Some("/srv/ibs-local"));
    assert_eq!(view.username, None);
    assert!(!view.password_set);
    assert_eq!(t.ctl.stored_location().unwrap().password_sealed, None);
}
