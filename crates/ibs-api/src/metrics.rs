//! Prometheus `/metrics` (text format 0.0.4), computed from the state database at scrape time so the
//! numbers survive restarts: backup attempts, successes, partials and failures; a duration
//! histogram; the last success time; share free bytes; open alerts by kind. No authentication: the
//! values carry no secret, and the listener is loopback by default.
//!
//! A scrape costs a few aggregate SQL queries whatever the number of jobs (nothing is loaded per
//! job). When the database cannot answer, the scrape is a 500 with a fixed text; the cause goes to
//! the daemon's log only.

use crate::AppState;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use std::fmt::Write;

const BUCKETS: [f64; 8] = [30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0];

/// Prometheus metrics (no token needed).
#[utoipa::path(get, path = "/metrics", tag = "public",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain"),
        (status = 500, description = "The state database cannot answer (a fixed text; the cause is in the daemon's log)", body = String, content_type = "text/plain")))]
pub async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    match render(&s) {
        Ok(body) => (
            StatusCode::OK,
            [(CONTENT_TYPE, "text/plain; version=0.0.4")],
            body,
        ),
        Err(e) => {
            tracing::error!("/metrics: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(CONTENT_TYPE, "text/plain; version=0.0.4")],
                "# metrics are unavailable; see the controller's log\n".to_string(),
            )
        }
    }
}

fn render(s: &AppState) -> Result<String, ibs_controller::ControllerError> {
    let st = s.ctl.backup_stats(&BUCKETS)?;
    let mut o = String::new();
    let mut counter = |name: &str, help: &str, v: u64| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    };
    counter(
        "ibs_backup_attempts_total",
        "Backup jobs started.",
        st.attempts,
    );
    counter(
        "ibs_backup_successes_total",
        "Backup jobs that succeeded.",
        st.succeeded,
    );
    counter(
        "ibs_backup_partials_total",
        "Backup jobs that partially succeeded.",
        st.partial,
    );
    counter(
        "ibs_backup_failures_total",
        "Backup jobs that failed or were interrupted.",
        st.failed,
    );
    let _ = writeln!(o, "# HELP ibs_backup_duration_seconds Duration of finished backup jobs.\n# TYPE ibs_backup_duration_seconds histogram");
    for (b, n) in BUCKETS.iter().zip(&st.bucket_counts) {
        let _ = writeln!(o, "ibs_backup_duration_seconds_bucket{{le=\"{b}\"}} {n}");
    }
    let _ = writeln!(
        o,
        "ibs_backup_duration_seconds_bucket{{le=\"+Inf\"}} {}",
        st.durations
    );
    let _ = writeln!(
        o,
        "ibs_backup_duration_seconds_sum {}",
        st.duration_sum_secs
    );
    let _ = writeln!(o, "ibs_backup_duration_seconds_count {}", st.durations);
    let _ = writeln!(o, "# HELP ibs_backup_last_success_timestamp_seconds Unix time of the last successful backup.\n# TYPE ibs_backup_last_success_timestamp_seconds gauge\nibs_backup_last_success_timestamp_seconds {}", st.last_success);
    if let Some(c) = s.ctl.capacity()? {
        let _ = writeln!(o, "# HELP ibs_share_free_bytes Free bytes on the backup share (last measured).\n# TYPE ibs_share_free_bytes gauge\nibs_share_free_bytes {}", c.available);
        let _ = writeln!(o, "# HELP ibs_share_total_bytes Total bytes of the backup share.\n# TYPE ibs_share_total_bytes gauge\nibs_share_total_bytes {}", c.total);
    }
    let _ = writeln!(
        o,
        "# HELP ibs_open_alerts Open alerts by kind.\n# TYPE ibs_open_alerts gauge"
    );
    for (kind, n) in s.ctl.open_alert_counts()? {
        let _ = writeln!(o, "ibs_open_alerts{{kind=\"{kind}\"}} {n}");
    }
    Ok(o)
}
