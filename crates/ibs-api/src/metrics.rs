//! Prometheus `/metrics` (text format 0.0.4), computed from the state database at scrape time so the
//! numbers survive restarts: backup attempts, successes, partials and failures; a duration
//! histogram; the last success time; share free bytes; open alerts by kind. No authentication: the
//! values carry no secret, and the listener is loopback by default.

use crate::AppState;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use ibs_controller::model::JobStatus;
use std::fmt::Write;

const BUCKETS: [f64; 8] = [30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0];

pub async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    let body = render(&s).unwrap_or_else(|e| format!("# error: {e}\n"));
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

fn render(s: &AppState) -> Result<String, ibs_controller::ControllerError> {
    let backups = s.ctl.db().backups(100_000)?;
    let count = |st: JobStatus| backups.iter().filter(|j| j.status == st).count();
    let finished: Vec<_> = backups.iter().filter(|j| j.status.is_final()).collect();
    let mut o = String::new();
    let mut counter = |name: &str, help: &str, v: usize| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    };
    counter(
        "ibs_backup_attempts_total",
        "Backup jobs started.",
        backups.len(),
    );
    counter(
        "ibs_backup_successes_total",
        "Backup jobs that succeeded.",
        count(JobStatus::Succeeded),
    );
    counter(
        "ibs_backup_partials_total",
        "Backup jobs that partially succeeded.",
        count(JobStatus::PartialSucceeded),
    );
    counter(
        "ibs_backup_failures_total",
        "Backup jobs that failed or were interrupted.",
        count(JobStatus::Failed) + count(JobStatus::Interrupted),
    );
    let durations: Vec<f64> = finished
        .iter()
        .filter_map(|j| j.duration_ms)
        .map(|d| d as f64 / 1000.0)
        .collect();
    let _ = writeln!(o, "# HELP ibs_backup_duration_seconds Duration of finished backup jobs.\n# TYPE ibs_backup_duration_seconds histogram");
    for b in BUCKETS {
        let n = durations.iter().filter(|d| **d <= b).count();
        let _ = writeln!(o, "ibs_backup_duration_seconds_bucket{{le=\"{b}\"}} {n}");
    }
    let _ = writeln!(
        o,
        "ibs_backup_duration_seconds_bucket{{le=\"+Inf\"}} {}",
        durations.len()
    );
    let _ = writeln!(
        o,
        "ibs_backup_duration_seconds_sum {}",
        durations.iter().sum::<f64>()
    );
    let _ = writeln!(o, "ibs_backup_duration_seconds_count {}", durations.len());
    let last = backups
        .iter()
        .filter(|j| j.status == JobStatus::Succeeded)
        .filter_map(|j| j.finished_at)
        .max()
        .unwrap_or(0);
    let _ = writeln!(o, "# HELP ibs_backup_last_success_timestamp_seconds Unix time of the last successful backup.\n# TYPE ibs_backup_last_success_timestamp_seconds gauge\nibs_backup_last_success_timestamp_seconds {last}");
    if let Some(c) = s.ctl.capacity()? {
        let _ = writeln!(o, "# HELP ibs_share_free_bytes Free bytes on the backup share (last measured).\n# TYPE ibs_share_free_bytes gauge\nibs_share_free_bytes {}", c.available);
        let _ = writeln!(o, "# HELP ibs_share_total_bytes Total bytes of the backup share.\n# TYPE ibs_share_total_bytes gauge\nibs_share_total_bytes {}", c.total);
    }
    let _ = writeln!(
        o,
        "# HELP ibs_open_alerts Open alerts by kind.\n# TYPE ibs_open_alerts gauge"
    );
    for (kind, n) in s.ctl.alerts().open_counts()? {
        let _ = writeln!(o, "ibs_open_alerts{{kind=\"{kind}\"}} {n}");
    }
    Ok(o)
}
