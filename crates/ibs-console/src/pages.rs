//! The console's pages (GET): sign-in, overview, backups and one backup, alerts, and the
//! running job's progress as JSON for the page script. Each reads through the API's handlers with
//! the session's caller, so a page shows exactly what the token may read.

use crate::view::{self, job_row};
use crate::{error_page, render, user_ctx, ConsoleState, Signed};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ibs_api::error::ApiError;
use ibs_api::routes::{admin, backups as api_backups, location};
use ibs_types::{AlertQuery, Job, JobStatus, PageQuery};
use minijinja::context;
use serde::Deserialize;

pub(crate) type PageResult = Result<Response, Response>;

/// Maps an API error to its page (the handler's status and message).
pub(crate) fn or_page<T>(s: &Signed, r: Result<T, ApiError>) -> Result<T, Response> {
    r.map_err(|e| error_page(Some(s), &e))
}

fn page(limit: u32, cursor: Option<String>) -> PageQuery {
    PageQuery {
        limit: Some(limit.to_string()),
        cursor,
    }
}

/// Backups, newest first (up to `limit`), and the next page's cursor.
pub(crate) async fn list_backups(
    st: &ConsoleState,
    s: &Signed,
    limit: u32,
    cursor: Option<String>,
) -> Result<(Vec<Job>, Option<String>), Response> {
    let r = api_backups::list(
        State(st.api.clone()),
        s.caller.clone(),
        Uri::from_static("/api/v1/backups"),
        Query(page(limit, cursor)),
    )
    .await;
    Ok(or_page(s, r)?.into_parts())
}

pub async fn signin(State(st): State<ConsoleState>) -> Response {
    signin_page(&st, StatusCode::OK, None)
}

/// The sign-in page with a fresh login-CSRF guard in its form and its cookie.
pub(crate) fn signin_page(
    st: &ConsoleState,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let guard = crate::session::new_signin_guard();
    let mut resp = render(
        status,
        "signin.html",
        context! { signin_csrf => guard.clone(), error => error },
    );
    if let Ok(v) =
        axum::http::HeaderValue::from_str(&crate::session::signin_cookie(&guard, st.secure))
    {
        resp.headers_mut().insert(axum::http::header::SET_COOKIE, v);
    }
    resp
}

pub async fn overview(State(st): State<ConsoleState>, s: Signed) -> PageResult {
    let now = st.api.ctl.now();
    let loc = or_page(
        &s,
        location::get(State(st.api.clone()), s.caller.clone()).await,
    )?
    .0;
    let ready = or_page(
        &s,
        admin::readiness(State(st.api.clone()), s.caller.clone()).await,
    )?
    .0;
    let (recent, _) = list_backups(&st, &s, 100, None).await?;
    let last_good = recent.iter().find(|j| {
        matches!(j.status, JobStatus::Succeeded | JobStatus::PartialSucceeded)
            && j.corrupted.is_none()
    });
    let alerts = or_page(
        &s,
        admin::alerts(
            State(st.api.clone()),
            s.caller.clone(),
            Uri::from_static("/api/v1/alerts"),
            Query(AlertQuery::default()),
            Query(page(1000, None)),
        )
        .await,
    )?
    .into_parts()
    .0;
    let mut by_severity: Vec<(String, usize)> = Vec::new();
    for a in &alerts {
        match by_severity.iter_mut().find(|(k, _)| *k == a.severity) {
            Some((_, n)) => *n += 1,
            None => by_severity.push((a.severity.clone(), 1)),
        }
    }
    let maintenance = ready.maintenance.as_ref().map(|m| m.skip_reason());
    let no_next = if loc.path.is_none() {
        Some("no backup location is configured")
    } else if !loc.scheduler_enabled {
        Some("the scheduler is off")
    } else if ready.maintenance.is_some() {
        Some("maintenance: scheduled backups are skipped")
    } else if loc.next_backup_time.is_none() {
        Some("no backup is scheduled")
    } else {
        None
    };
    let running = match &ready.running_job {
        Some(id) => api_backups::job(State(st.api.clone()), s.caller.clone(), Path(id.clone()))
            .await
            .ok()
            .map(|j| job_row(&j.0)),
        None => None,
    };
    let used = match (loc.total_bytes, loc.available_bytes) {
        (Some(t), Some(a)) => Some(view::bytes(t.saturating_sub(a))),
        _ => None,
    };
    let ctx = context! {
        last_good => last_good.map(job_row),
        last_good_age => last_good.and_then(|j| j.finished_at).map(|t| view::age(t, now)),
        next_backup => loc.next_backup_time,
        no_next => no_next,
        location_path => loc.path.clone(),
        certificate => loc.certificate.as_ref().map(|c| serde_json::to_value(c).unwrap_or_default()),
        capacity_used => used,
        capacity_free => loc.available_bytes.map(view::bytes),
        warnings => loc.warnings.clone(),
        alerts_by_severity => by_severity,
        open_alerts => alerts.len(),
        maintenance => maintenance,
        running => running,
        ..user_ctx(&s, "overview")
    };
    Ok(render(StatusCode::OK, "overview.html", ctx))
}

#[derive(Deserialize)]
pub struct CursorQuery {
    cursor: Option<String>,
}

pub async fn backups(
    State(st): State<ConsoleState>,
    s: Signed,
    Query(q): Query<CursorQuery>,
) -> PageResult {
    let (jobs, next) = list_backups(&st, &s, 100, q.cursor).await?;
    let rows: Vec<_> = jobs.iter().map(job_row).collect();
    let ctx = context! { backups => rows, next => next, ..user_ctx(&s, "backups") };
    Ok(render(StatusCode::OK, "backups.html", ctx))
}

pub async fn backup(
    State(st): State<ConsoleState>,
    s: Signed,
    Path(id): Path<String>,
) -> PageResult {
    let j = or_page(
        &s,
        api_backups::show(State(st.api.clone()), s.caller.clone(), Path(id)).await,
    )?
    .0;
    let components: Vec<_> = j
        .components
        .iter()
        .map(|c| {
            serde_json::json!({
                "name": c.name, "kind": c.kind, "status": c.status.as_str(),
                "size": view::bytes(c.bytes), "files": c.files,
                "message": c.message, "essential": c.essential_for_recovery,
            })
        })
        .collect();
    let ctx = context! {
        job => job_row(&j),
        components => components,
        backup_id => j.backup_id.clone(),
        thumbprint => j.certificate_thumbprint.clone(),
        corrupted => j.corrupted.as_ref().map(|c| c.components.join(", ")),
        ..user_ctx(&s, "backups")
    };
    Ok(render(StatusCode::OK, "backup.html", ctx))
}

/// A job's status and progress for the page script's poll (the API's job record).
pub async fn progress(
    State(st): State<ConsoleState>,
    s: Signed,
    Path(id): Path<String>,
) -> Response {
    match api_backups::job(State(st.api.clone()), s.caller.clone(), Path(id)).await {
        Ok(Json(j)) => Json(serde_json::json!({
            "status": view::status(&j),
            "running": matches!(j.status, JobStatus::Queued | JobStatus::Running),
            "percent": j.progress.as_ref().and_then(|p| p.percent),
        }))
        .into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
pub struct AlertsQuery {
    state: Option<String>,
}

pub async fn alerts(
    State(st): State<ConsoleState>,
    s: Signed,
    Query(q): Query<AlertsQuery>,
) -> PageResult {
    let all = q.state.as_deref() == Some("all");
    let list = or_page(
        &s,
        admin::alerts(
            State(st.api.clone()),
            s.caller.clone(),
            Uri::from_static("/api/v1/alerts"),
            Query(AlertQuery {
                state: Some(if all { "all" } else { "open" }.into()),
            }),
            Query(page(1000, None)),
        )
        .await,
    )?
    .into_parts()
    .0;
    let ctx = context! { alerts => list, all => all, ..user_ctx(&s, "alerts") };
    Ok(render(StatusCode::OK, "alerts.html", ctx))
}
