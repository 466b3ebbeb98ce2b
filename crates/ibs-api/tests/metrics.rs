//! `/metrics` under load and failure, as a scraper (or anyone who can reach it) sees it: with more
//! backup jobs than any in-memory cap, the counters are exact; when the state database fails, the
//! answer is a 500 with a fixed text that names nothing of the database.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use ibs_controller::model::{Job, JobKind, JobStatus, Trigger};
use ibs_controller::testing;
use tower::ServiceExt;

const T0: i64 = 1_800_000_000;

async fn scrape(app: &axum::Router) -> (StatusCode, String) {
    let resp = app
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn value(text: &str, name: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_every_job_and_fail_generically() {
    let t = testing::controller(T0, vec![]);
    let app = ibs_api::router(ibs_api::AppState::new(t.ctl.clone()));
    // 100,050 backup jobs, written straight into the state database in one transaction.
    let n: i64 = 100_050;
    {
        let mut conn = rusqlite::Connection::open(t.dir.path().join("state.sqlite")).unwrap();
        let tx = conn.transaction().unwrap();
        for i in 0..n {
            let status = if i % 10 == 0 {
                JobStatus::Failed
            } else {
                JobStatus::Succeeded
            };
            let mut j = Job::new(
                format!("b{i}"),
                JobKind::Backup,
                Trigger::Scheduled,
                status,
                T0 + i,
            );
            j.finished_at = Some(T0 + i + 5);
            j.duration_ms = Some(if i % 2 == 0 { 10_000 } else { 100_000 });
            tx.execute(
                "INSERT INTO jobs (id, kind, trigger, status, created_at, body) VALUES (?1, 'backup', 'scheduled', ?2, ?3, ?4)",
                rusqlite::params![j.id, status.as_str(), j.created_at, serde_json::to_string(&j).unwrap()],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let (s, text) = scrape(&app).await;
    assert_eq!(s, StatusCode::OK, "{text}");
    assert_eq!(value(&text, "ibs_backup_attempts_total"), n.to_string());
    assert_eq!(
        value(&text, "ibs_backup_failures_total"),
        (n / 10).to_string()
    );
    assert_eq!(
        value(&text, "ibs_backup_duration_seconds_bucket{le=\"30\"}"),
        (n / 2).to_string()
    );
    assert_eq!(
        value(&text, "ibs_backup_duration_seconds_count"),
        n.to_string()
    );
    assert_eq!(
        value(&text, "ibs_backup_last_success_timestamp_seconds"),
        (T0 + n - 1 + 5).to_string()
    );
    // The database fails: the scraper learns nothing about it.
    rusqlite::Connection::open(t.dir.path().join("state.sqlite"))
        .unwrap()
        .execute_batch("DROP TABLE jobs")
        .unwrap();
    let (s, text) = scrape(&app).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{text}");
    for leak in ["jobs", "table", "sqlite", "SELECT"] {
        assert!(
            !text.contains(leak),
            "the error text leaks {leak:?}: {text}"
        );
    }
}
