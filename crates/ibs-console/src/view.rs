//! How values look on a page: times (a `<time>` in UTC that the script shows in the browser's
//! zone, with the UTC value on hover), ages, durations, byte sizes, and a job as a table row.

use ibs_types::{Job, JobStatus};
use minijinja::Value;
use serde_json::json;

/// RFC 3339 UTC of Unix seconds.
pub fn iso(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

/// The `ts` filter: Unix seconds as a `<time>` element (safe HTML; the text is digits and signs).
pub fn ts_filter(t: Option<i64>) -> Value {
    match t {
        Some(t) => {
            let s = iso(t);
            let shown = s.replace('T', " ").replace('Z', " UTC");
            Value::from_safe_string(format!(
                "<time datetime=\"{s}\" title=\"{shown}\">{shown}</time>"
            ))
        }
        None => Value::from("—"),
    }
}

/// "3 min ago" style age of `t` at `now`.
pub fn age(t: i64, now: i64) -> String {
    let d = (now - t).max(0);
    match d {
        0..60 => format!("{d} s ago"),
        60..3600 => format!("{} min ago", d / 60),
        3600..86400 => format!("{} h {} min ago", d / 3600, d % 3600 / 60),
        _ => format!("{} days ago", d / 86400),
    }
}

pub fn duration(ms: Option<u64>) -> String {
    match ms {
        None => "—".into(),
        Some(ms) if ms < 1000 => format!("{ms} ms"),
        Some(ms) if ms < 60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        Some(ms) => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
    }
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The status shown for a job: `Corrupted` when verification marked it, else its status.
pub fn status(j: &Job) -> &'static str {
    if j.corrupted.is_some() {
        "Corrupted"
    } else {
        j.status.as_str()
    }
}

pub fn status_class(j: &Job) -> &'static str {
    if j.corrupted.is_some() {
        return "bad";
    }
    match j.status {
        JobStatus::Succeeded => "good",
        JobStatus::PartialSucceeded | JobStatus::Skipped | JobStatus::Canceled => "warn",
        JobStatus::Queued | JobStatus::Running => "busy",
        JobStatus::Failed | JobStatus::Interrupted => "bad",
    }
}

fn enum_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A job as one row of a table.
pub fn job_row(j: &Job) -> serde_json::Value {
    json!({
        "id": j.id,
        "kind": enum_text(&j.kind),
        "trigger": enum_text(&j.trigger),
        "status": status(j),
        "status_class": status_class(j),
        "started_at": j.started_at.unwrap_or(j.created_at),
        "finished_at": j.finished_at,
        "duration": duration(j.duration_ms),
        "size": bytes(j.bytes_stored),
        "read": bytes(j.bytes_read),
        "location": j
            .location
            .clone()
            .or_else(|| j.repository_id.clone())
            .unwrap_or_else(|| "—".into()),
        "previous_location": j.previous_location,
        "deleted": j.deleted_at.is_some(),
        "error": j.error,
        "running": matches!(j.status, JobStatus::Queued | JobStatus::Running),
        "percent": j.progress.as_ref().and_then(|p| p.percent).unwrap_or(0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_ages_and_durations_read_naturally() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(age(0, 59), "59 s ago");
        assert_eq!(age(0, 7260), "2 h 1 min ago");
        assert_eq!(duration(Some(61_000)), "1 min 1 s");
        assert_eq!(iso(0), "1970-01-01T00:00:00Z");
    }
}
