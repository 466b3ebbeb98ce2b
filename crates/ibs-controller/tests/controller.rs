//! Controller behaviour with a fake clock and in-memory storage: the scheduler (interval, on-demand
//! not shifting the schedule, skips while running / in maintenance / disabled, a missed run after
//! downtime), the job gate and maintenance. Jobs, components, restore, alerts and retention are in
//! `controller_jobs.rs`.

mod controller_support;

use controller_support::*;
use ibs_controller::alerts::AlertKind;
use ibs_controller::model::{JobStatus, MaintenanceOp, MaintenanceOutcome, Trigger};
use ibs_controller::scheduler::Decision;
use ibs_controller::settings::LocationUpdate;
use ibs_controller::testing::{self, command, files};
use ibs_controller::ControllerError;

#[tokio::test(flavor = "multi_thread")]
async fn interval_runs_and_on_demand_does_not_shift_schedule() {
    let src = sample_dir();
    let t = setup(vec![files("sample", &[src.path()])]).await;
    let out = t.ctl.tick().unwrap();
    assert_eq!(out.decision, Decision::Run, "first backup runs immediately");
    finish(out).await;
    let next = t.ctl.schedule().unwrap().next_due;
    assert_eq!(next, T0 + 12 * H);
    let j = &t.ctl.backups(10).unwrap()[0];
    assert_eq!(j.status, JobStatus::Succeeded);
    assert_eq!(j.trigger, Trigger::Scheduled);
    assert!(j.backup_id.is_some() && j.recovery_ready);
    assert_eq!(
        j.certificate_thumbprint.as_deref(),
        Some(testing::identity().certificate().thumbprint())
    );

    t.clock.advance(2 * H);
    let (od, h) = t.ctl.start_backup().unwrap();
    h.await.unwrap();
    assert_eq!(t.ctl.job(&od.id).unwrap().status, JobStatus::Succeeded);
    assert_eq!(
        t.ctl.schedule().unwrap().next_due,
        next,
        "on-demand does not shift the schedule"
    );
    finish(t.ctl.tick().unwrap()).await; // not due; starts the hourly retention cleanup
    t.clock.set(next);
    let out = t.ctl.tick().unwrap();
    assert_eq!(out.decision, Decision::Run);
    finish(out).await;
    assert_eq!(t.ctl.schedule().unwrap().next_due, next + 12 * H);
}

#[tokio::test(flavor = "multi_thread")]
async fn missed_runs_after_downtime_run_once() {
    let src = sample_dir();
    let t = setup(vec![files("sample", &[src.path()])]).await;
    finish(t.ctl.tick().unwrap()).await;
    t.clock.advance(10 * 24 * H + 5);
    let out = t.ctl.tick().unwrap();
    assert_eq!(out.decision, Decision::Run);
    finish(out).await;
    assert_eq!(t.ctl.tick().unwrap().decision, Decision::NotDue);
    assert_eq!(
        t.ctl.backups(100).unwrap().len(),
        2,
        "one catch-up run, not twenty"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tick_while_running_is_skipped_and_on_demand_gets_409() {
    let t = setup(vec![command("slow", "sleep 2; echo done", None, true)]).await;
    let (running, h) = t.ctl.start_backup().unwrap();
    assert!(t.ctl.readiness().unwrap().backup_running);
    let out = t.ctl.tick().unwrap();
    assert_eq!(
        out.decision,
        Decision::Skip(format!("backup {} is running", running.id))
    );
    let skipped = out.job.unwrap();
    assert_eq!(skipped.status, JobStatus::Skipped);
    assert!(skipped.error.unwrap().contains(&running.id));
    match t.ctl.start_backup() {
        Err(ControllerError::Conflict { message, .. }) => {
            assert!(message.contains(&running.id), "{message}")
        }
        other => panic!("expected 409, got {other:?}"),
    }
    // A running job shows live progress fields.
    assert_eq!(t.ctl.job(&running.id).unwrap().status, JobStatus::Running);
    h.await.unwrap();
    assert_eq!(t.ctl.job(&running.id).unwrap().status, JobStatus::Succeeded);
    assert!(!t.ctl.readiness().unwrap().backup_running);
    assert_eq!(
        t.ctl.backups(10).unwrap().len(),
        1,
        "skipped runs are jobs, not backups"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn maintenance_gate() {
    let src = sample_dir();
    let t = setup(vec![files("sample", &[src.path()])]).await;
    t.ctl
        .begin_maintenance(MaintenanceOp::Update, "op")
        .unwrap();
    let out = t.ctl.tick().unwrap();
    assert_eq!(
        out.decision,
        Decision::Skip("maintenance: update in progress".into())
    );
    finish(out).await;
    match t.ctl.start_backup() {
        Err(ControllerError::Conflict { message, .. }) => {
            assert_eq!(message, "maintenance: update in progress")
        }
        other => panic!("expected 409, got {other:?}"),
    }
    assert!(
        t.ctl.begin_maintenance(MaintenanceOp::Fru, "op").is_err(),
        "one operation at a time"
    );
    // Failed: scheduled backups stay skipped, with an alert, until cleared.
    t.ctl
        .end_maintenance(MaintenanceOutcome::Failed, "op")
        .unwrap();
    assert!(t
        .ctl
        .alerts()
        .is_open(AlertKind::SkippedMaintenanceFailed)
        .unwrap());
    t.clock.advance(12 * H);
    let out = t.ctl.tick().unwrap();
    assert!(matches!(&out.decision, Decision::Skip(r) if r.contains("failed")));
    finish(out).await;
    t.ctl.clear_maintenance("admin").unwrap();
    assert!(!t
        .ctl
        .alerts()
        .is_open(AlertKind::SkippedMaintenanceFailed)
        .unwrap());
    t.clock.advance(12 * H);
    let out = t.ctl.tick().unwrap();
    assert_eq!(out.decision, Decision::Run);
    finish(out).await;
    // Succeeded: back to normal at once.
    t.ctl
        .begin_maintenance(MaintenanceOp::SecretRotation, "op")
        .unwrap();
    t.ctl
        .end_maintenance(MaintenanceOutcome::Succeeded, "op")
        .unwrap();
    assert!(t.ctl.maintenance().unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn disable_and_enable_scheduler() {
    let src = sample_dir();
    let t = setup(vec![files("sample", &[src.path()])]).await;
    t.ctl
        .update_location(
            LocationUpdate {
                scheduler_enabled: Some(false),
                ..Default::default()
            },
            "admin",
        )
        .await
        .unwrap();
    assert!(t
        .ctl
        .alerts()
        .is_open(AlertKind::SchedulerDisabled)
        .unwrap());
    assert!(t.ctl.location().unwrap().next_backup_time.is_none());
    let out = t.ctl.tick().unwrap();
    assert_eq!(
        out.decision,
        Decision::Skip("automatic backups are disabled".into())
    );
    finish(out).await;
    // An operator closing the alert does not hide the cause: it comes back at the next tick.
    let a = t
        .ctl
        .alerts()
        .list(true)
        .unwrap()
        .into_iter()
        .find(|a| a.kind == "automatic-backups-disabled")
        .unwrap();
    t.ctl.close_alert(a.id, "admin").unwrap();
    t.ctl.tick().unwrap();
    assert!(t
        .ctl
        .alerts()
        .is_open(AlertKind::SchedulerDisabled)
        .unwrap());
    t.ctl
        .update_location(
            LocationUpdate {
                scheduler_enabled: Some(true),
                ..Default::default()
            },
            "admin",
        )
        .await
        .unwrap();
    assert!(!t
        .ctl
        .alerts()
        .is_open(AlertKind::SchedulerDisabled)
        .unwrap());
    let out = t.ctl.tick().unwrap();
    assert_eq!(
        out.decision,
        Decision::NotDue,
        "re-enabling causes no burst"
    );
    finish(out).await;
    t.clock.advance(12 * H);
    let out = t.ctl.tick().unwrap();
    assert_eq!(out.decision, Decision::Run);
    finish(out).await;
    let audit = t.ctl.db().audit_log(10).unwrap();
    assert!(audit
        .iter()
        .any(|r| r.fields == vec!["scheduler_enabled".to_string()]));
}
