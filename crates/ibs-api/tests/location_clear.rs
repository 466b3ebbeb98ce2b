//! Through the HTTP API (`tower::ServiceExt::oneshot`): `DELETE /api/v1/location` (admin only,
//! 409 while a job runs, credentials gone, audited), the `share-not-configured` alert in
//! `GET /api/v1/alerts`, and closed alerts purged from the list after seven days while
//! `GET /api/v1/audit` keeps them.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use base64::Engine as _;
use http_body_util::BodyExt;
use ibs_controller::model::Role;
use ibs_controller::testing::{self, command, TestController};
use serde_json::{json, Value};
use tower::ServiceExt;

const T0: i64 = 1_800_000_000;
const DAY: i64 = 86_400;

async fn call(
    t: &TestController,
    method: Method,
    path: &str,
    role: Role,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let token = t.ctl.db().create_token(role, "t", T0).unwrap();
    let app = ibs_api::router(ibs_api::AppState::new(t.ctl.clone()));
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("Authorization", format!("Bearer {token}"));
    let req = match body {
        Some(b) => req
            .header("Content-Type", "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let resp = app.oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn configured() -> Value {
    let cert =
        base64::engine::general_purpose::STANDARD.encode(testing::identity().certificate().der());
    json!({"path": "/mem/share", "username": "CONTOSO\\svc", "password": "hunter2-api-pw", "certificate": cert})
}

async fn put_configured(t: &TestController) {
    let (s, v) = call(
        t,
        Method::PUT,
        "/api/v1/location",
        Role::Admin,
        Some(configured()),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// The newest audit record of `action`.
async fn audited(t: &TestController, action: &str) -> Value {
    let (_, audit) = call(t, Method::GET, "/api/v1/audit", Role::Admin, None).await;
    audit
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == action)
        .cloned()
        .unwrap_or_else(|| panic!("no {action} in {audit}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_location_is_admin_only_refused_while_a_job_runs_and_audited() {
    let t = testing::controller(T0, vec![command("slow", "sleep 2; echo x", None, true)]);
    put_configured(&t).await;
    for role in [Role::Reader, Role::Operator] {
        let (s, _) = call(&t, Method::DELETE, "/api/v1/location", role, None).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }
    let (running, h) = t.ctl.start_backup().unwrap();
    let (s, v) = call(&t, Method::DELETE, "/api/v1/location", Role::Admin, None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["details"]["running_job"], json!(running.id));
    h.await.unwrap();

    let (s, v) = call(&t, Method::DELETE, "/api/v1/location", Role::Admin, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["path"], Value::Null);
    assert_eq!(v["username"], Value::Null);
    assert_eq!(v["password_set"], json!(false));
    assert_eq!(v["certificate"], Value::Null);
    assert_eq!(v["scheduler_enabled"], json!(false));
    let (_, shown) = call(&t, Method::GET, "/api/v1/location", Role::Reader, None).await;
    assert_eq!(shown, v);
    let clear = audited(&t, "location.clear").await;
    assert!(clear["actor"].as_str().unwrap().starts_with("token#"));
    assert!(clear["fields"]
        .as_array()
        .unwrap()
        .contains(&json!("password")));
    let (_, audit) = call(&t, Method::GET, "/api/v1/audit", Role::Admin, None).await;
    assert!(!audit.to_string().contains("hunter2") && !v.to_string().contains("hunter2"));
    let (_, jobs) = call(&t, Method::GET, "/api/v1/backups", Role::Reader, None).await;
    assert_eq!(jobs.as_array().unwrap().len(), 1, "history is kept: {jobs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn share_not_configured_shows_in_the_alert_list_and_purged_alerts_stay_audited() {
    let t = testing::controller(T0, vec![]);
    t.ctl.tick().unwrap();
    let (s, open) = call(&t, Method::GET, "/api/v1/alerts", Role::Reader, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(open.as_array().unwrap().len(), 1, "{open}");
    let a = &open[0];
    assert_eq!(a["kind"], "share-not-configured");
    assert_eq!(a["severity"], "Critical");
    assert_eq!(
        a["title"],
        "Backup skipped because the backup share is not configured."
    );
    let id = a["id"].as_i64().unwrap();

    // Configuring closes it (kept in the history).
    put_configured(&t).await;
    let (_, open) = call(&t, Method::GET, "/api/v1/alerts", Role::Reader, None).await;
    assert!(
        open.as_array().unwrap().iter().all(|x| x["id"] != id),
        "{open}"
    );
    let (_, all) = call(
        &t,
        Method::GET,
        "/api/v1/alerts?state=all",
        Role::Reader,
        None,
    )
    .await;
    let closed = all
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == id)
        .unwrap();
    assert_eq!(closed["state"], "closed");

    // Eight days later it is purged from the list; the audit trail keeps it.
    t.clock.set(T0 + 8 * DAY);
    let out = t.ctl.tick().unwrap();
    for h in [out.handle, out.retention, out.verify]
        .into_iter()
        .flatten()
    {
        h.await.unwrap();
    }
    let (_, all) = call(
        &t,
        Method::GET,
        "/api/v1/alerts?state=all",
        Role::Reader,
        None,
    )
    .await;
    assert!(
        all.as_array().unwrap().iter().all(|x| x["id"] != id),
        "{all}"
    );
    let purge = audited(&t, "alert.purge").await;
    let fields = purge["fields"].as_array().unwrap();
    assert!(fields.contains(&json!(format!("alert:{id}"))), "{purge}");
    assert!(
        fields.contains(&json!("kind:share-not-configured")),
        "{purge}"
    );
}
