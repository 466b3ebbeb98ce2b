//! API handlers through `tower::ServiceExt::oneshot`, without a socket: authentication (401),
//! roles (403), every 400 case of the location and components resources, 409s, and the
//! unauthenticated endpoints.

use axum::http::{Method, StatusCode};
use ibs_controller::testing::{self};
use serde_json::json;

mod support;
use support::{cert_b64, Api};

fn api() -> Api {
    Api::with(vec![])
}

#[tokio::test(flavor = "multi_thread")]
async fn authentication_and_roles() {
    let a = api();
    assert_eq!(
        a.call_text(Method::GET, "/api/v1/backups", None, None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        a.call_text(Method::GET, "/api/v1/backups", Some("ibs_bogus"), None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        a.call_text(Method::GET, "/api/v1/backups", Some(&a.reader), None)
            .await
            .0,
        StatusCode::OK
    );
    // reader cannot start backups or maintenance; operator cannot change settings or restore.
    assert_eq!(
        a.call_text(Method::POST, "/api/v1/backups", Some(&a.reader), None)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    let begin = r#"{"operation":"update"}"#;
    assert_eq!(
        a.call_text(
            Method::POST,
            "/api/v1/maintenance",
            Some(&a.reader),
            Some(begin)
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(a.put_location(json!({})).await.0, StatusCode::OK);
    let (s, _) = a
        .call_text(
            Method::PUT,
            "/api/v1/location",
            Some(&a.operator),
            Some("{}"),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let restore = json!({"target":"/tmp/x","pfx":"","pfx_password":"p"}).to_string();
    assert_eq!(
        a.call_text(
            Method::POST,
            "/api/v1/backups/x/restore",
            Some(&a.operator),
            Some(&restore)
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        a.call_text(
            Method::POST,
            "/api/v1/store/prune",
            Some(&a.operator),
            Some("{}")
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    // Alerts are the operator's: closing one needs no admin (a reader is refused).
    assert_eq!(
        a.call_text(
            Method::POST,
            "/api/v1/alerts/1/close",
            Some(&a.reader),
            None
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        a.call_text(
            Method::POST,
            "/api/v1/tokens",
            Some(&a.operator),
            Some(r#"{"role":"admin"}"#)
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        a.call_text(
            Method::POST,
            "/api/v1/maintenance",
            Some(&a.operator),
            Some(begin)
        )
        .await
        .0,
        StatusCode::OK
    );
    // admin creates a token that works.
    let (s, v) = a
        .call_text(
            Method::POST,
            "/api/v1/tokens",
            Some(&a.admin),
            Some(r#"{"role":"reader"}"#),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let t = v["token"].as_str().unwrap().to_string();
    assert_eq!(
        a.call_text(Method::GET, "/api/v1/alerts", Some(&t), None)
            .await
            .0,
        StatusCode::OK
    );
    // Public endpoints.
    assert_eq!(
        a.call_text(Method::GET, "/healthz", None, None).await.0,
        StatusCode::OK
    );
    let (s, m) = a.call_text(Method::GET, "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(m.as_str().unwrap().contains("ibs_backup_attempts_total"));
    let (s, doc) = a
        .call_text(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc["paths"]["/api/v1/backups"]["post"].is_object());
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_auth_failures_are_rate_limited() {
    let a = api();
    for _ in 0..ibs_api::auth::MAX_FAILURES {
        assert_eq!(
            a.call_text(Method::GET, "/api/v1/jobs", Some("ibs_wrong"), None)
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        a.call_text(Method::GET, "/api/v1/jobs", Some("ibs_wrong"), None)
            .await
            .0,
        StatusCode::TOO_MANY_REQUESTS
    );
    // A valid token is never refused by the failure limiter.
    assert_eq!(
        a.call_text(Method::GET, "/api/v1/jobs", Some(&a.admin), None)
            .await
            .0,
        StatusCode::OK
    );
    a.t.clock.advance(ibs_api::auth::WINDOW_SECS);
    assert_eq!(
        a.call_text(Method::GET, "/api/v1/jobs", Some("ibs_wrong"), None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_write_only_and_changes_audited() {
    let a = api();
    let (s, v) = a
        .put_location(json!({"path": "/mem/share", "username": "CONTOSO\\svc", "password": "hunter2", "certificate": cert_b64()}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let text = v.to_string();
    assert!(!text.contains("hunter2"));
    assert_eq!(v["password_set"], json!(true));
    assert_eq!(
        v["certificate"]["thumbprint"],
        json!(testing::identity().certificate().thumbprint())
    );
    assert!(v["certificate"].get("der").is_none());
    let (_, audit) = a
        .call_text(Method::GET, "/api/v1/audit", Some(&a.admin), None)
        .await;
    let text = audit.to_string();
    assert!(
        text.contains("\"password\"") && !text.contains("hunter2"),
        "{text}"
    );
    assert!(text.contains("token#"), "the actor is recorded: {text}");
    // IP hosts are accepted with a warning.
    let (s, v) = a
        .put_location(json!({"path": "\\\\10.1.2.3\\backup", "username": "u", "password": "p"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["warnings"][0].as_str().unwrap().contains("IP"));
    // The accessibility test refuses a failing share with the classified error.
    a.t.opener
        .fail("/mem/down", Some(ibs_storage::AlertClass::Connectivity));
    let (s, v) = a.put_location(json!({"path": "/mem/down"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["details"]["alert_class"], json!("connectivity"));
}

#[tokio::test(flavor = "multi_thread")]
async fn backups_conflicts_and_maintenance() {
    let a = api();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"data").unwrap();
    a.t.ctl
        .set_components(
            vec![testing::command("slow", "sleep 1; echo x", None, true)],
            "t",
        )
        .unwrap();
    a.put_location(json!({"path": "/mem/share", "certificate": cert_b64()}))
        .await;
    let (s, job) = a
        .call_text(Method::POST, "/api/v1/backups", Some(&a.operator), None)
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let id = job["id"].as_str().unwrap().to_string();
    let (s, v) = a
        .call_text(Method::POST, "/api/v1/backups", Some(&a.operator), None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(
        v["error"]["message"].as_str().unwrap().contains(&id),
        "409 names the running job: {v}"
    );
    let (_, r) = a
        .call_text(Method::GET, "/api/v1/readiness", Some(&a.reader), None)
        .await;
    assert_eq!(r["backup_running"], json!(true));
    assert!(a.t.ctl.wait_idle(std::time::Duration::from_secs(30)).await);
    let (s, b) = a
        .call_text(
            Method::GET,
            &format!("/api/v1/backups/{id}"),
            Some(&a.reader),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["status"], json!("Succeeded"));
    assert_eq!(
        a.call_text(Method::GET, "/api/v1/backups/nope", Some(&a.reader), None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (_, list) = a
        .call_text(Method::GET, "/api/v1/jobs", Some(&a.reader), None)
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    // Maintenance blocks on-demand backups with its reason.
    let begin = r#"{"operation":"fru"}"#;
    assert_eq!(
        a.call_text(
            Method::POST,
            "/api/v1/maintenance",
            Some(&a.operator),
            Some(begin)
        )
        .await
        .0,
        StatusCode::OK
    );
    let (s, v) = a
        .call_text(Method::POST, "/api/v1/backups", Some(&a.operator), None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(v["error"]["message"], json!("maintenance: fru in progress"));
    let (s, _) = a
        .call_text(
            Method::POST,
            "/api/v1/maintenance",
            Some(&a.operator),
            Some(r#"{"operation":"reboot"}"#),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = a
        .call_text(
            Method::DELETE,
            "/api/v1/maintenance",
            Some(&a.operator),
            Some(r#"{"outcome":"succeeded"}"#),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        a.call_text(Method::POST, "/api/v1/backups", Some(&a.operator), None)
            .await
            .0,
        StatusCode::ACCEPTED
    );
    assert!(a.t.ctl.wait_idle(std::time::Duration::from_secs(30)).await);
    // Lowering retention that deletes backups needs confirmation.
    a.t.clock.advance(5 * 86_400);
    assert_eq!(
        a.call_text(Method::POST, "/api/v1/backups", Some(&a.operator), None)
            .await
            .0,
        StatusCode::ACCEPTED
    );
    assert!(a.t.ctl.wait_idle(std::time::Duration::from_secs(30)).await);
    let (s, v) = a.put_location(json!({"retention_days": 2})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(
        v["error"]["details"]["would_delete"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        a.put_location(json!({"retention_days": 2, "confirm": true}))
            .await
            .0,
        StatusCode::OK
    );
    // Store prune (dry run) as admin.
    let (s, v) = a
        .call_text(
            Method::POST,
            "/api/v1/store/prune",
            Some(&a.admin),
            Some(r#"{"dry_run":true}"#),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["paths"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_operation_is_routed() {
    let a = api();
    let doc = serde_json::to_value(ibs_api::openapi::build()).unwrap();
    let ops: Vec<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| (path.clone(), m.clone()))
        })
        .collect();
    assert!(ops.len() >= 32, "{} operations", ops.len());
    for (path, method) in &ops {
        let p = path.replace("{id}", "1");
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let (s, v) = a.call_text(m, &p, Some(&a.reader), Some("{}")).await;
        assert_ne!(
            v["error"]["message"],
            json!("no such endpoint"),
            "{method} {path}"
        );
        assert_ne!(s, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn verification_status_start_and_roles() {
    let a = api();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"data to verify").unwrap();
    a.t.ctl
        .set_components(vec![testing::files("docs", &[src.path()])], "t")
        .unwrap();
    let (s, v) = a.put_location(json!({"verify_sample_percent": 0})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["field"], json!("verify_sample_percent"), "{v}");
    let (s, v) = a.put_location(json!({"verify_every_hours": 721})).await;
    assert_eq!(
        (s, &v["error"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("verify_every_hours"))
    );
    let (s, _) = a
        .put_location(json!({"path": "/mem/share", "certificate": cert_b64(), "verify_sample_percent": 100, "verify_every_hours": 12}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, b) = a
        .call_text(Method::POST, "/api/v1/backups", Some(&a.operator), None)
        .await;
    assert!(a.t.ctl.wait_idle(std::time::Duration::from_secs(30)).await);
    assert!(b["id"].is_string());

    let (s, _) = a
        .call_text(Method::POST, "/api/v1/verification", Some(&a.reader), None)
        .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "a reader cannot start a verification"
    );
    let (s, job) = a
        .call_text(
            Method::POST,
            "/api/v1/verification",
            Some(&a.operator),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["kind"], json!("verify"));
    assert!(a.t.ctl.wait_idle(std::time::Duration::from_secs(30)).await);
    let (s, st) = a
        .call_text(Method::GET, "/api/v1/verification", Some(&a.reader), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(st["verify_every_hours"], json!(12));
    assert_eq!(st["verify_sample_percent"], json!(100));
    assert_eq!(st["coverage_ever"], json!(1.0));
    assert_eq!(st["last_run"]["verification"]["damaged_found"], json!(0));
    assert!(st["packs_recorded"].as_u64().unwrap() >= 1);
    let (s, packs) = a
        .call_text(
            Method::GET,
            "/api/v1/verification/packs",
            Some(&a.reader),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        packs.as_array().unwrap().len() as u64,
        st["packs_recorded"].as_u64().unwrap()
    );
    assert!(packs
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["ok"] == json!(true)));
    let (s, _) = a
        .call_text(Method::GET, "/api/v1/verification", None, None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_alert_is_reopened_by_an_operator_unless_another_of_its_kind_is_open() {
    use ibs_controller::alerts::AlertKind;
    use ibs_storage::AlertClass;
    use support::T0;
    let a = api();
    let alerts = a.t.ctl.alerts();
    let first = alerts
        .raise(AlertKind::BackupFailed(AlertClass::Connectivity), "one", T0)
        .unwrap()
        .id;
    let close = format!("/api/v1/alerts/{first}/close");
    let reopen = format!("/api/v1/alerts/{first}/reopen");
    let (s, v) = a
        .call_text(Method::POST, &close, Some(&a.reader), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(
        a.call_text(Method::POST, &close, Some(&a.operator), None)
            .await
            .0,
        StatusCode::OK
    );
    // The same role as closing: a reader is refused, and nothing changes.
    let (s, v) = a
        .call_text(Method::POST, &reopen, Some(&a.reader), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = a
        .call_text(Method::POST, &reopen, Some(&a.operator), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], json!("open"));
    assert_eq!(v["closed_at"], json!(null));
    // Reopening an open alert changes nothing.
    let (s, v) = a
        .call_text(Method::POST, &reopen, Some(&a.admin), None)
        .await;
    assert_eq!((s, v["state"].clone()), (StatusCode::OK, json!("open")));

    // A newer failure of another class supersedes it; reopening the old one would break the
    // one-failed-alert rule: 409 naming the open one.
    let second = alerts
        .raise(AlertKind::BackupFailed(AlertClass::Capacity), "two", T0 + 5)
        .unwrap()
        .id;
    let (s, v) = a
        .call_text(Method::POST, &reopen, Some(&a.admin), None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("alert {second}")),
        "{v}"
    );
    assert_eq!(a.t.ctl.alert_list(true).unwrap().len(), 1);
    let (s, _) = a
        .call_text(
            Method::POST,
            "/api/v1/alerts/999999/reopen",
            Some(&a.admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let audit = a.t.ctl.audit_page(&ibs_controller::PageRequest {
        limit: 100,
        after: None,
    });
    assert!(audit
        .unwrap()
        .items
        .iter()
        .any(|r| r.action == "alert.reopen"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pfx_given_as_the_location_certificate_is_refused_as_a_private_key() {
    use base64::Engine as _;
    let a = api();
    let pfx = testing::identity().to_pfx("pw").unwrap();
    let pem_key = "-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEA\n-----END PRIVATE KEY-----\n";
    for cert in [
        base64::engine::general_purpose::STANDARD.encode(&pfx),
        pem_key.to_string(),
    ] {
        let body = json!({"path": "/srv/b", "certificate": cert}).to_string();
        let (s, v) = a
            .call_text(Method::PUT, "/api/v1/location", Some(&a.admin), Some(&body))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["error"]["field"], json!("certificate"));
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("private key"),
            "{v}"
        );
    }
    assert!(a.t.ctl.location().unwrap().path.is_none(), "nothing saved");
    // The certificate itself is accepted.
    let body = json!({"path": "/srv/b", "certificate": cert_b64()}).to_string();
    let (s, v) = a
        .call_text(Method::PUT, "/api/v1/location", Some(&a.admin), Some(&body))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}
