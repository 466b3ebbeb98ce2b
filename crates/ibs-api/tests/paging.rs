//! Paging through the HTTP API (ADR 0024), for every list endpoint: more rows than the limit,
//! every page walked by its `X-Next-Cursor` (and the same cursor in `Link: <…>; rel="next"`),
//! every row exactly once in the list's order while rows are inserted between page fetches; a bad
//! `limit` or `cursor` is 400 naming the field; a cursor of another list is refused. And
//! `GET /api/v1/operations`: a running backup shown Running and then finished, a maintenance
//! window, a retention cleanup and a location clear, with the `running` and `kind` filters.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use ibs_controller::alerts::AlertKind;
use ibs_controller::model::{Job, JobKind, JobStatus, Role, Trigger};
use ibs_controller::testing::{self, TestController};
use ibs_types::OperationKind;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;
use tower::ServiceExt;

const T0: i64 = 1_800_000_000;

struct Resp {
    status: StatusCode,
    body: Value,
    next: Option<String>,
    link: Option<String>,
}

async fn get(t: &TestController, path: &str, role: Role) -> Resp {
    let token = t.ctl.db().create_token(role, "t", T0).unwrap();
    // The token just made is a row of /tokens: tests of that list make theirs up front.
    send(t, Method::GET, path, &token, None).await
}

async fn send(
    t: &TestController,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Resp {
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
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let (next, link) = (h("x-next-cursor"), h("link"));
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Resp {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        next,
        link,
    }
}

/// Walks `path` (with its own query, or none) `limit` rows a page with `token`, calling
/// `between` after each page but the last; returns each row's `key` field in order.
async fn walk(
    t: &TestController,
    path: &str,
    token: &str,
    key: &str,
    limit: u32,
    mut between: impl FnMut(usize),
) -> Vec<String> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut url = format!("{path}{sep}limit={limit}");
    let mut out = Vec::new();
    for page in 0.. {
        let r = send(t, Method::GET, &url, token, None).await;
        assert_eq!(r.status, StatusCode::OK, "{url}: {}", r.body);
        let rows = r.body.as_array().unwrap();
        assert!(rows.len() <= limit as usize, "{url}: over the limit");
        out.extend(rows.iter().map(|row| match &row[key] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }));
        let Some(next) = r.next else {
            assert!(r.link.is_none(), "a Link without a next cursor");
            break;
        };
        assert_eq!(
            rows.len(),
            limit as usize,
            "{url}: a short page before the end"
        );
        let link = r.link.expect("Link with X-Next-Cursor");
        assert!(
            link.starts_with(&format!("<{}?", path.split('?').next().unwrap()))
                && link.ends_with(&format!("cursor={next}>; rel=\"next\"")),
            "{link}"
        );
        // The Link is the URL of the next page: follow it, as a generic client would.
        url = link[1..link.find('>').unwrap()].to_string();
        between(page);
    }
    let unique: HashSet<&String> = out.iter().collect();
    assert_eq!(
        unique.len(),
        out.len(),
        "{path}: a row served twice: {out:?}"
    );
    out
}

/// Every row of `path` in one page.
async fn all(t: &TestController, path: &str, token: &str, key: &str) -> Vec<String> {
    walk(t, path, token, key, 1000, |_| {}).await
}

fn job(id: String, at: i64, status: JobStatus) -> Job {
    Job::new(id, JobKind::Backup, Trigger::Scheduled, status, at)
}

#[tokio::test]
async fn every_list_walks_each_row_once_while_rows_are_inserted() {
    let t = testing::controller(
        T0,
        (0..7)
            .map(|i| testing::command(&format!("c{i}"), "echo x", None, false))
            .collect(),
    );
    let db = t.ctl.db().clone();
    let admin = db.create_token(Role::Admin, "admin", T0).unwrap();
    for i in 0..6 {
        db.create_token(Role::Reader, &format!("r{i}"), T0).unwrap();
    }
    // Jobs: 13 backups (two skipped) and 4 restores, several in the same second (ties).
    for i in 0..17 {
        let status = if i % 7 == 3 {
            JobStatus::Skipped
        } else {
            JobStatus::Succeeded
        };
        let mut j = job(format!("job-{i:02}"), T0 + i / 3, status);
        if i >= 13 {
            j.kind = JobKind::Restore;
        }
        db.put_job(&j).unwrap();
    }
    for i in 0..12 {
        db.audit(T0 + i, "admin#1", "test.action", &[format!("n{i}")])
            .unwrap();
    }
    let alerts = t.ctl.alerts();
    for i in 0..5 {
        let a = alerts
            .raise(AlertKind::RetentionFailed, &format!("round {i}"), T0 + i)
            .unwrap();
        alerts.close(a.id, "t", T0 + i).unwrap();
    }
    alerts
        .raise(AlertKind::LegacyKeyInUse, "open one", T0)
        .unwrap();
    for i in 0..9 {
        db.record_pack_check(&format!("{i:02x}aa"), T0 + i % 4, true, None, 10)
            .unwrap();
    }
    for i in 0..8 {
        let op = db
            .op_begin(OperationKind::StorePrune, T0 + i / 2, "admin#1", None)
            .unwrap();
        db.op_end(op, JobStatus::Succeeded, T0 + i / 2, None)
            .unwrap();
    }

    // Newest-first lists: rows inserted between pages are newer than every row served, so the
    // walk is exactly the list as it was when it began.
    let before = all(&t, "/api/v1/jobs", &admin, "id").await;
    assert_eq!(before.len(), 17);
    let mut n = 0;
    let walked = walk(&t, "/api/v1/jobs", &admin, "id", 4, |_| {
        n += 1;
        db.put_job(&job(format!("new-{n}"), T0 + 5, JobStatus::Succeeded))
            .unwrap();
    })
    .await;
    assert_eq!(walked, before, "jobs");

    let before = all(&t, "/api/v1/backups", &admin, "id").await;
    assert_eq!(before.len(), 11 + n, "backups: no skipped, no restores");
    let walked = walk(&t, "/api/v1/backups", &admin, "id", 3, |p| {
        db.put_job(&job(format!("newer-{p}"), T0 + 9, JobStatus::Succeeded))
            .unwrap();
    })
    .await;
    assert_eq!(walked, before, "backups");

    let before = all(&t, "/api/v1/audit", &admin, "id").await;
    let walked = walk(&t, "/api/v1/audit", &admin, "id", 5, |p| {
        db.audit(T0 + 50, "admin#1", "between", &[p.to_string()])
            .unwrap();
    })
    .await;
    assert_eq!(walked, before, "audit");
    assert!(before.len() >= 12);

    let before = all(&t, "/api/v1/alerts?state=all", &admin, "id").await;
    assert_eq!(before.len(), 6);
    let walked = walk(&t, "/api/v1/alerts?state=all", &admin, "id", 2, |p| {
        let a = alerts
            .raise(AlertKind::RetentionFailed, &format!("between {p}"), T0 + 60)
            .unwrap();
        alerts.close(a.id, "t", T0 + 60).unwrap();
    })
    .await;
    assert_eq!(walked, before, "alerts");
    let open = all(&t, "/api/v1/alerts", &admin, "id").await;
    assert_eq!(open.len(), 1, "state=open (the default) still filters");

    let before = all(&t, "/api/v1/operations", &admin, "id").await;
    assert_eq!(
        before.len(),
        8 + all(&t, "/api/v1/jobs", &admin, "id").await.len()
    );
    let walked = walk(&t, "/api/v1/operations", &admin, "id", 6, |_| {
        let op = db
            .op_begin(OperationKind::StorePrune, T0 + 100, "admin#1", None)
            .unwrap();
        db.op_end(op, JobStatus::Succeeded, T0 + 100, None).unwrap();
    })
    .await;
    assert_eq!(walked, before, "operations");

    // Oldest-first lists: rows inserted between pages come after every row served, so the walk
    // also serves them, once, at the end.
    let before = all(&t, "/api/v1/tokens", &admin, "label").await;
    assert!(before.len() >= 7);
    let mut added = 0;
    let walked = walk(&t, "/api/v1/tokens", &admin, "label", 3, |_| {
        added += 1;
        db.create_token(Role::Reader, &format!("between-{added}"), T0)
            .unwrap();
    })
    .await;
    assert_eq!(walked, all(&t, "/api/v1/tokens", &admin, "label").await);
    assert_eq!(walked.len(), before.len() + added, "tokens");
    assert!(added > 0);

    let mut added = 0;
    let walked = walk(&t, "/api/v1/verification/packs", &admin, "pack", 2, |_| {
        added += 1;
        db.record_pack_check(&format!("ff{added:02}"), T0 + 200, true, None, 1)
            .unwrap();
    })
    .await;
    assert_eq!(
        walked,
        all(&t, "/api/v1/verification/packs", &admin, "pack").await
    );
    assert_eq!(walked.len(), 9 + added, "packs");
    assert!(added > 0);

    // Components, in their configured order.
    let walked = walk(&t, "/api/v1/components", &admin, "name", 3, |_| {}).await;
    let names: Vec<String> = (0..7).map(|i| format!("c{i}")).collect();
    assert_eq!(walked, names, "components");
}

#[tokio::test]
async fn order_matches_the_unpaged_order() {
    let t = testing::controller(T0, vec![]);
    let db = t.ctl.db().clone();
    let admin = db.create_token(Role::Admin, "admin", T0).unwrap();
    for i in 0..9 {
        db.put_job(&job(format!("j{i}"), T0 + i % 3, JobStatus::Succeeded))
            .unwrap();
    }
    // The facade's unpaged list (what the API served before paging) is the reference order.
    let reference: Vec<String> = t
        .ctl
        .jobs(1000)
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(
        walk(&t, "/api/v1/jobs", &admin, "id", 2, |_| {}).await,
        reference
    );
    // The default page is 100 rows.
    for i in 0..150 {
        db.audit(T0, "a", "x", &[i.to_string()]).unwrap();
    }
    let r = get(&t, "/api/v1/audit", Role::Admin).await;
    assert_eq!(r.body.as_array().unwrap().len(), 100);
    assert!(r.next.is_some());
}

const LISTS: [&str; 8] = [
    "/api/v1/backups",
    "/api/v1/jobs",
    "/api/v1/alerts",
    "/api/v1/tokens",
    "/api/v1/audit",
    "/api/v1/verification/packs",
    "/api/v1/components",
    "/api/v1/operations",
];

#[tokio::test]
async fn bad_limit_and_cursor_are_400_naming_the_field() {
    let t = testing::controller(T0, vec![testing::command("a", "echo", None, false)]);
    for list in LISTS {
        for bad in ["0", "1001", "-1", "ten", "", "99999999999"] {
            let r = get(&t, &format!("{list}?limit={bad}"), Role::Admin).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{list} limit={bad}");
            assert_eq!(r.body["error"]["field"], "limit", "{list}: {}", r.body);
            assert!(r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("1 to 1000"));
        }
        for ok in ["1", "1000"] {
            let r = get(&t, &format!("{list}?limit={ok}"), Role::Admin).await;
            assert_eq!(r.status, StatusCode::OK, "{list} limit={ok}: {}", r.body);
        }
        for bad in ["x", "aWJzMTpqb2JzOng6MTo", "%00%01", "ibs1:jobs:1:2:"] {
            let r = get(&t, &format!("{list}?cursor={bad}"), Role::Admin).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{list} cursor={bad}");
            assert_eq!(r.body["error"]["field"], "cursor");
            assert_eq!(r.body["error"]["message"], "invalid cursor");
        }
    }
    // A real cursor of one list is refused by every other list.
    let db = t.ctl.db().clone();
    for i in 0..3 {
        db.audit(T0, "a", "x", &[i.to_string()]).unwrap();
    }
    let r = get(&t, "/api/v1/audit?limit=1", Role::Admin).await;
    let cursor = r.next.expect("more audit rows");
    for list in LISTS.iter().filter(|l| **l != "/api/v1/audit") {
        let r = get(&t, &format!("{list}?cursor={cursor}"), Role::Admin).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{list} took an audit cursor"
        );
        assert_eq!(r.body["error"]["message"], "invalid cursor");
    }
    let r = get(&t, &format!("/api/v1/audit?cursor={cursor}"), Role::Admin).await;
    assert_eq!(r.status, StatusCode::OK);
    // Filters of the operations list.
    let r = get(&t, "/api/v1/operations?running=maybe", Role::Reader).await;
    assert_eq!(
        (r.status, r.body["error"]["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("running"))
    );
    let r = get(&t, "/api/v1/operations?kind=nap", Role::Reader).await;
    assert_eq!(r.body["error"]["field"], "kind");
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("retention-cleanup"));
}

async fn wait_for_status(t: &TestController, token: &str, id: &str, want: &str) -> Value {
    for _ in 0..600 {
        let r = send(
            t,
            Method::GET,
            "/api/v1/operations?kind=backup",
            token,
            None,
        )
        .await;
        if let Some(o) = r.body.as_array().unwrap().iter().find(|o| o["id"] == id) {
            if o["status"] == want {
                return o.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("operation {id} never became {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_show_every_kind_running_then_finished() {
    let t = testing::controller(T0, vec![]);
    t.ctl
        .set_components(
            vec![testing::command("slow", "sleep 2; echo x", None, true)],
            "t",
        )
        .unwrap();
    let cert = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        testing::identity().certificate().der(),
    );
    t.ctl
        .update_location(
            serde_json::from_value(json!({"path": "/mem/share", "certificate": cert})).unwrap(),
            "t",
        )
        .await
        .unwrap();
    let db = t.ctl.db().clone();
    let reader = db.create_token(Role::Reader, "r", T0).unwrap();
    let operator = db.create_token(Role::Operator, "o", T0).unwrap();
    let admin = db.create_token(Role::Admin, "a", T0).unwrap();

    // A running backup: Running in the list (with its link), in `running=true`, then Succeeded.
    let r = send(&t, Method::POST, "/api/v1/backups", &operator, None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    let running = send(
        &t,
        Method::GET,
        "/api/v1/operations?running=true",
        &reader,
        None,
    )
    .await;
    let rows = running.body.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{}", running.body);
    assert_eq!(rows[0]["id"], id.as_str());
    assert_eq!(rows[0]["kind"], "backup");
    assert_eq!(rows[0]["status"], "Running");
    assert_eq!(rows[0]["trigger"], "on-demand");
    assert_eq!(rows[0]["link"], format!("/api/v1/jobs/{id}"));
    assert_eq!(rows[0]["ended_at"], Value::Null);
    let done = wait_for_status(&t, &reader, &id, "Succeeded").await;
    assert!(done["ended_at"].is_i64());
    assert!(t.ctl.wait_idle(Duration::from_secs(30)).await);
    let running = send(
        &t,
        Method::GET,
        "/api/v1/operations?running=true",
        &reader,
        None,
    )
    .await;
    assert_eq!(running.body, json!([]));

    // A retention cleanup, run to its end.
    t.clock.advance(10);
    t.ctl.start_retention().unwrap().await.unwrap();
    let r = send(
        &t,
        Method::GET,
        "/api/v1/operations?kind=retention-cleanup",
        &reader,
        None,
    )
    .await;
    let rows = r.body.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{}", r.body);
    assert_eq!(rows[0]["status"], "Succeeded", "{}", r.body);
    assert_eq!(rows[0]["trigger"], "scheduler");
    assert!(rows[0]["id"].as_str().unwrap().starts_with("op-"));

    // A maintenance window: Running while it lasts, Succeeded when it ends.
    t.clock.advance(10);
    let r = send(
        &t,
        Method::POST,
        "/api/v1/maintenance",
        &operator,
        Some(json!({"operation": "update"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = send(
        &t,
        Method::GET,
        "/api/v1/operations?running=true",
        &reader,
        None,
    )
    .await;
    let rows = r.body.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{}", r.body);
    assert_eq!(
        (&rows[0]["kind"], &rows[0]["status"], &rows[0]["detail"]),
        (&json!("maintenance"), &json!("Running"), &json!("update"))
    );
    let trigger = rows[0]["trigger"].as_str().unwrap();
    assert!(
        trigger.starts_with("token#") && trigger.ends_with("operator)"),
        "{trigger}"
    );
    t.clock.advance(10);
    let r = send(
        &t,
        Method::POST,
        "/api/v1/maintenance/end",
        &operator,
        Some(json!({"outcome": "succeeded"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // A location clear.
    t.clock.advance(10);
    let r = send(&t, Method::DELETE, "/api/v1/location", &admin, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // Newest first, every kind; each finished.
    let r = send(&t, Method::GET, "/api/v1/operations", &reader, None).await;
    let kinds: Vec<&str> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        vec![
            "location-clear",
            "maintenance",
            "retention-cleanup",
            "backup"
        ],
        "{}",
        r.body
    );
    for o in r.body.as_array().unwrap() {
        assert_eq!(o["status"], "Succeeded", "{o}");
        assert!(o["ended_at"].as_i64().unwrap() >= o["started_at"].as_i64().unwrap());
    }
}
