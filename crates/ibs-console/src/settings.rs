//! The settings page (admin changes, everyone reads): two forms over `PUT /api/v1/location`.
//!
//! - **Location** (`POST /settings/location`, multipart): path, username, password and the
//!   certificate upload. A changed share runs the API's accessibility test, whose result is shown
//!   (passed with the capacity and warnings, or refused beside the path field with the alert's
//!   remediation). A .pfx given as the certificate is refused by the API's validation as a private
//!   key. The password is never shown back: the page says only whether one is set, and a refused
//!   form is shown again with the password field empty. An S3 location's maintenance key (access
//!   key id and secret, ADR 0040) is set in the same form; its secret is never shown either.
//! - **Schedule and retention** (`POST /settings`): frequency, retention and the scheduler switch;
//!   a retention that would delete backups asks for confirmation, listing them.
//!
//! The API's handler validates; its error is shown beside the field it names, and nothing is saved.

use crate::form::Upload;
use crate::pages::{or_page, PageResult};
use crate::{error_page, render, user_ctx, ConsoleState, Signed};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use ibs_api::auth::ApiJson;
use ibs_api::error::ApiError;
use ibs_api::routes::location;
use ibs_types::{LocationUpdate, LocationView, Role, SecretText};
use minijinja::context;

/// What a settings page shows besides the stored values.
#[derive(Default)]
struct Shown {
    /// The schedule form as typed: frequency, retention, scheduler.
    schedule: Option<(String, String, bool)>,
    /// The location form as typed: path, username (never the password).
    location: Option<(String, String)>,
    /// (form, field, message) of a refusal.
    error: Option<(&'static str, String, String)>,
    /// The alert texts of a failed accessibility test.
    remediation: Option<serde_json::Value>,
    /// A saved location change: the accessibility test passed (when the share changed), warnings.
    saved: Option<(bool, Vec<String>)>,
}

fn settings_page(s: &Signed, loc: &LocationView, shown: Shown) -> Response {
    let (freq, ret, sched) = shown.schedule.unwrap_or((
        loc.frequency_hours.to_string(),
        loc.retention_days.to_string(),
        loc.scheduler_enabled,
    ));
    let (path, username) = shown.location.unwrap_or((
        loc.path.clone().unwrap_or_default(),
        loc.username.clone().unwrap_or_default(),
    ));
    let (error_form, error_field, error_message) = match shown.error {
        Some((f, field, m)) => (Some(f), Some(field), Some(m)),
        None => (None, None, None),
    };
    let ctx = context! {
        loc => serde_json::to_value(loc).unwrap_or_default(),
        frequency_hours => freq,
        retention_days => ret,
        scheduler_enabled => sched,
        path => path,
        username => username,
        error_form => error_form,
        error_field => error_field,
        error_message => error_message,
        remediation => shown.remediation,
        saved => shown.saved.as_ref().map(|s| s.0),
        tested => shown.saved.as_ref().map(|s| s.0),
        warnings => shown.saved.map(|s| s.1).unwrap_or_default(),
        used => match (loc.total_bytes, loc.available_bytes) {
            (Some(t), Some(a)) => Some(crate::view::bytes(t.saturating_sub(a))),
            _ => None,
        },
        free => loc.available_bytes.map(crate::view::bytes),
        ..user_ctx(s, "settings")
    };
    render(StatusCode::OK, "settings.html", ctx)
}

/// The stored location, as the API shows it to this caller.
async fn current(st: &ConsoleState, s: &Signed) -> Result<LocationView, Response> {
    or_page(
        s,
        location::get(State(st.api.clone()), s.caller.clone()).await,
    )
    .map(|j| j.0)
}

pub async fn page(State(st): State<ConsoleState>, s: Signed) -> PageResult {
    let loc = current(&st, &s).await?;
    Ok(settings_page(&s, &loc, Shown::default()))
}

/// A number field: a whole number goes to the API for its range check; anything else is refused
/// here with the same kind of message, naming the field.
fn number(field: &str, text: &str) -> Result<i64, (String, String)> {
    text.trim().parse::<i64>().map_err(|_| {
        (
            field.to_string(),
            format!("{field}: {:?} is not a whole number", text.trim()),
        )
    })
}

/// Applies frequency, retention and the scheduler switch through `PUT /api/v1/location`.
pub async fn schedule(State(st): State<ConsoleState>, up: Upload) -> PageResult {
    let s = &up.signed;
    // The role check comes first, as in the API: a reader's forged POST is 403 even when its
    // numbers are wrong.
    or_page(s, s.caller.require(Role::Admin))?;
    let (freq_text, ret_text) = (up.text("frequency_hours"), up.text("retention_days"));
    let sched = up.checked("scheduler_enabled");
    let typed = Some((freq_text.clone(), ret_text.clone(), sched));
    let fields = number("frequency_hours", &freq_text)
        .and_then(|fh| number("retention_days", &ret_text).map(|r| (fh, r)));
    let (frequency, retention) = match fields {
        Ok(v) => v,
        Err((field, message)) => {
            let loc = current(&st, s).await?;
            let shown = Shown {
                schedule: typed,
                error: Some(("schedule", field, message)),
                ..Shown::default()
            };
            return Ok(settings_page(s, &loc, shown));
        }
    };
    let update = LocationUpdate {
        frequency_hours: Some(frequency),
        retention_days: Some(retention),
        scheduler_enabled: Some(sched),
        confirm: up.text("confirm") == "1",
        ..LocationUpdate::default()
    };
    match location::put(State(st.api.clone()), s.caller.clone(), ApiJson(update)).await {
        Ok(_) => Ok(Redirect::to("/settings").into_response()),
        Err(e) if e.status == StatusCode::BAD_REQUEST && e.field.is_some() => {
            let loc = current(&st, s).await?;
            let shown = Shown {
                schedule: typed,
                error: Some(("schedule", e.field.clone().unwrap_or_default(), e.message)),
                ..Shown::default()
            };
            Ok(settings_page(s, &loc, shown))
        }
        Err(e) if e.status == StatusCode::CONFLICT => {
            let would_delete: Vec<String> = e
                .details
                .as_ref()
                .and_then(|d| d.get("would_delete"))
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .map(|x| {
                            x.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| x.to_string())
                        })
                        .collect()
                })
                .unwrap_or_default();
            Ok(render(
                StatusCode::OK,
                "confirm.html",
                context! {
                    message => e.message, would_delete => would_delete,
                    frequency_hours => freq_text, retention_days => ret_text,
                    scheduler_enabled => sched,
                    ..user_ctx(s, "settings")
                },
            ))
        }
        Err(e) => Err(error_page(Some(s), &e)),
    }
}

/// Applies path, username, password and certificate through `PUT /api/v1/location`; the
/// accessibility test's result is shown on the page.
pub async fn location(State(st): State<ConsoleState>, up: Upload) -> PageResult {
    let s = &up.signed;
    or_page(s, s.caller.require(Role::Admin))?;
    let cur = current(&st, s).await?;
    let (path, username) = (up.text("path"), up.text("username"));
    let password = up.secret("password");
    let maintenance_user = up.text("maintenance_username");
    let maintenance_secret = up.secret("maintenance_password");
    let certificate = up
        .file("certificate")
        .map(|f| base64::engine::general_purpose::STANDARD.encode(&f.data[..]));
    // Only what the operator gave or changed: the path always (the API checks it and tests the
    // share only when it differs), the username when typed, the password and certificate when given.
    let update = LocationUpdate {
        path: (!path.is_empty() || cur.path.is_some()).then(|| path.clone()),
        username: Some(username.clone()).filter(|u| !u.is_empty()),
        password: Some(password.as_str())
            .filter(|p| !p.is_empty())
            .map(|p| SecretText::new(p.to_string())),
        // The maintenance key (ADR 0040): sent when a secret is given or the user changes.
        maintenance_username: Some(maintenance_user.clone()).filter(|u| {
            !u.is_empty()
                && (!maintenance_secret.is_empty()
                    || cur.maintenance_username.as_deref() != Some(u.as_str()))
        }),
        maintenance_password: Some(maintenance_secret.as_str())
            .filter(|p| !p.is_empty())
            .map(|p| SecretText::new(p.to_string())),
        certificate,
        ..LocationUpdate::default()
    };
    let share_changes = update.password.is_some()
        || update
            .path
            .as_deref()
            .is_some_and(|p| cur.path.as_deref() != Some(p))
        || update
            .username
            .as_deref()
            .is_some_and(|u| cur.username.as_deref() != Some(u));
    let typed = Some((path, username));
    match location::put(State(st.api.clone()), s.caller.clone(), ApiJson(update)).await {
        Ok(view) => {
            let shown = Shown {
                saved: Some((share_changes, view.0.warnings.clone())),
                ..Shown::default()
            };
            Ok(settings_page(s, &view.0, shown))
        }
        Err(e) if e.field.is_some() && e.status == StatusCode::BAD_REQUEST => {
            Ok(refused(s, &cur, typed, e))
        }
        Err(e) => Err(error_page(Some(s), &e)),
    }
}

fn refused(
    s: &Signed,
    cur: &LocationView,
    typed: Option<(String, String)>,
    e: ApiError,
) -> Response {
    let shown = Shown {
        location: typed,
        remediation: (e.code == "location-inaccessible")
            .then(|| e.details.clone())
            .flatten(),
        error: Some(("location", e.field.unwrap_or_default(), e.message)),
        ..Shown::default()
    };
    settings_page(s, cur, shown)
}
