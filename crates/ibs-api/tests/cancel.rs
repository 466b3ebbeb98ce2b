//! `POST /api/v1/jobs/{id}/cancel` through the router over a real controller: a backup blocked in a
//! `command` component's export is canceled within seconds and ends `Canceled` with nothing
//! committed (no manifest, no lock left, no backup listed, no alert), its export process is gone,
//! the audit trail names who canceled, and the next backup succeeds. Unknown ids are 404, ended
//! jobs 409 naming their status, readers 403. And a storage operation that never answers fails
//! the backup with the connectivity alert (the timeout decorator's typed error).

use axum::http::{Method, StatusCode};
use ibs_controller::testing;
use ibs_storage::faulty::FaultyStorage;
use ibs_storage::{OpTimeouts, TimeoutStorage};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;
use support::{cert_b64, processes_with, wait_until, Api};

#[tokio::test(flavor = "multi_thread")]
async fn cancel_a_running_backup_through_the_api() {
    let flag = tempfile::NamedTempFile::new().unwrap();
    // A unique duration marks the export's `sleep` among the host's processes.
    let marker = format!("86399.{}", std::process::id());
    let slow = format!(
        "if [ -e {} ]; then sleep {marker}; fi; echo exported",
        flag.path().display()
    );
    let a = Api::with(vec![testing::command("slow", &slow, None, true)]);
    let (s, _) = a
        .call(
            Method::PUT,
            "/api/v1/location",
            &a.admin,
            Some(json!({"path": "/mem/share", "certificate": cert_b64()})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, started) = a
        .call(Method::POST, "/api/v1/backups", &a.operator, None)
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    wait_until("the export to run", || {
        !processes_with(&[&marker]).is_empty()
    })
    .await;

    // A reader may not cancel.
    let path = format!("/api/v1/jobs/{id}/cancel");
    let (s, _) = a.call(Method::POST, &path, &a.reader, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let asked = Instant::now();
    let (s, v) = a.call(Method::POST, &path, &a.operator, None).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["id"], json!(id));
    wait_until("the job to end", || {
        a.t.ctl.job(&id).unwrap().status != ibs_controller::model::JobStatus::Running
    })
    .await;
    assert!(asked.elapsed() < Duration::from_secs(30));
    let j = a.job(&id).await;
    assert_eq!(j["status"], json!("Canceled"), "{j}");
    assert_eq!(j["backup_id"], Value::Null, "nothing committed: {j}");
    assert!(
        j["error"].as_str().unwrap().contains("canceled by token#"),
        "{j}"
    );
    assert_eq!(j["components"][0]["status"], json!("Canceled"), "{j}");
    wait_until("the export process to be killed", || {
        processes_with(&[&marker]).is_empty()
    })
    .await;

    // Nothing half-written is committed: no manifest, the lock released, no backup listed.
    assert!(a.t.ctl.wait_idle(Duration::from_secs(30)).await);
    let store = a.t.opener.storage("/mem/share").unwrap();
    assert!(store.list("backups/").await.unwrap().is_empty());
    assert!(store.list("locks/").await.unwrap().is_empty());
    let (_, backups) = a
        .call(Method::GET, "/api/v1/backups", &a.reader, None)
        .await;
    assert!(
        backups
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["backup_id"].is_null()),
        "{backups}"
    );
    // A cancel is not a failure: no alert.
    let (_, alerts) = a.call(Method::GET, "/api/v1/alerts", &a.reader, None).await;
    assert_eq!(alerts, json!([]), "{alerts}");
    // The audit trail records who canceled.
    let (_, audit) = a.call(Method::GET, "/api/v1/audit", &a.admin, None).await;
    let entry = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e.to_string().contains("job.cancel"))
        .unwrap_or_else(|| panic!("no job.cancel in {audit}"));
    assert!(entry.to_string().contains("(o, operator)"), "{entry}");
    assert!(entry.to_string().contains(&id), "{entry}");

    // The ended job: 409 naming its status. An unknown id: 404.
    let (s, v) = a.call(Method::POST, &path, &a.operator, None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains("already ended (Canceled)"), "{m}");
    let (s, v) = a
        .call(Method::POST, "/api/v1/jobs/nope/cancel", &a.operator, None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["error"]["message"], json!("job nope not found"));

    // The next backup runs normally.
    std::fs::remove_file(flag.path()).unwrap();
    let (s, next) = a
        .call(Method::POST, "/api/v1/backups", &a.operator, None)
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{next}");
    assert!(a.t.ctl.wait_idle(Duration::from_secs(60)).await);
    let next = a.job(next["id"].as_str().unwrap()).await;
    assert_eq!(next["status"], json!("Succeeded"), "{next}");
    assert_eq!(store.list("backups/").await.unwrap().len(), 1);
    // A succeeded job cannot be canceled either.
    let (s, v) = a
        .call(
            Method::POST,
            &format!("/api/v1/jobs/{}/cancel", next["id"].as_str().unwrap()),
            &a.operator,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already ended (Succeeded)"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_storage_operation_that_never_answers_fails_the_backup_as_connectivity() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"data").unwrap();
    let a = Api::with(vec![testing::files("f", &[src.path()])]);
    let hanging = Arc::new(FaultyStorage::new(Arc::new(
        ibs_storage::memory::MemoryStorage::new(),
    )));
    let tiny = OpTimeouts::uniform(Duration::from_millis(300));
    a.t.opener.insert(
        "/mem/hangs",
        Arc::new(TimeoutStorage::new(hanging.clone(), tiny)),
    );
    let (s, v) = a
        .call(
            Method::PUT,
            "/api/v1/location",
            &a.admin,
            Some(json!({"path": "/mem/hangs", "certificate": cert_b64()})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // The server now accepts requests and never answers.
    hanging.set_latency(Some(Duration::from_secs(3600)));
    let (s, started) = a
        .call(Method::POST, "/api/v1/backups", &a.operator, None)
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert!(a.t.ctl.wait_idle(Duration::from_secs(60)).await);
    let j = a.job(started["id"].as_str().unwrap()).await;
    assert_eq!(j["status"], json!("Failed"), "{j}");
    assert_eq!(j["alert_class"], json!("connectivity"), "{j}");
    assert!(j["error"].as_str().unwrap().contains("TimedOut"), "{j}");
    let (_, alerts) = a.call(Method::GET, "/api/v1/alerts", &a.reader, None).await;
    assert!(
        alerts.to_string().contains("connectivity problems"),
        "the connectivity alert is open: {alerts}"
    );
}
