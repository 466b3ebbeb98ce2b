//! The console's state-changing requests (POST): sign-in and sign-out, "Backup now", closing an
//! alert, and the settings form. Every one but sign-in needs a live session and its CSRF token
//! ([`Post`]: 403 before anything runs otherwise); each then calls the API's handler, whose role
//! check and validation decide (a reader's forged POST gets the API's 403).

use crate::pages::{or_page, settings_ctx, PageResult};
use crate::session::{self, csrf_matches};
use crate::{error_page, render, user_ctx, ConsoleState, Signed};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use ibs_api::auth::{ApiJson, Caller};
use ibs_api::error::ApiError;
use ibs_api::routes::{admin, backups as api_backups, location};
use ibs_types::LocationUpdate;
use minijinja::context;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::net::SocketAddr;

/// The largest form the console accepts.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// A signed-in POST whose CSRF token (form field `csrf` or header `X-CSRF-Token`) is the
/// session's, with its url-encoded form.
pub struct Post<T> {
    pub signed: Signed,
    pub form: T,
}

#[derive(Deserialize)]
struct CsrfField {
    csrf: Option<String>,
}

impl<T: DeserializeOwned> FromRequest<ConsoleState> for Post<T> {
    type Rejection = Response;

    async fn from_request(req: Request, st: &ConsoleState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let signed = Signed::from_request_parts(&mut parts, st).await?;
        let header_token = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = axum::body::to_bytes(body, MAX_FORM_BYTES)
            .await
            .map_err(|_| {
                error_page(
                    Some(&signed),
                    &ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "too-large",
                        "the form is too large",
                    ),
                )
            })?;
        let field = serde_urlencoded::from_bytes::<CsrfField>(&body)
            .ok()
            .and_then(|f| f.csrf);
        if !csrf_matches(
            &signed.session,
            field.as_deref().or(header_token.as_deref()),
        ) {
            return Err(error_page(
                Some(&signed),
                &ApiError::new(
                    StatusCode::FORBIDDEN,
                    "csrf",
                    "the request did not carry this session's CSRF token; reload the page and try again",
                ),
            ));
        }
        let form = serde_urlencoded::from_bytes::<T>(&body).map_err(|e| {
            error_page(
                Some(&signed),
                &ApiError::bad_request("form", format!("malformed form: {e}")),
            )
        })?;
        Ok(Post { signed, form })
    }
}

#[derive(Deserialize)]
pub struct Empty {}

#[derive(Deserialize)]
pub struct SigninForm {
    token: String,
}

/// Exchanges a pasted API token for a session. The token is verified the way the API verifies a
/// bearer token, with the same rate limit on failures per client address.
pub async fn signin(State(st): State<ConsoleState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().cloned();
    let token = match Bytes::from_request(Request::from_parts(parts, body), &st)
        .await
        .ok()
        .and_then(|b| serde_urlencoded::from_bytes::<SigninForm>(&b).ok())
    {
        Some(f) => zeroize::Zeroizing::new(f.token.trim().to_string()),
        None => zeroize::Zeroizing::new(String::new()),
    };
    // The API's own extractor: the same verification, expiry and failure limiter.
    let mut probe = axum::http::Request::new(());
    if let Ok(v) = HeaderValue::from_str(&format!("Bearer {}", token.as_str())) {
        probe.headers_mut().insert(header::AUTHORIZATION, v);
    }
    if let Some(p) = peer {
        probe.extensions_mut().insert(p);
    }
    let (mut probe, ()) = probe.into_parts();
    match Caller::from_request_parts(&mut probe, &st.api).await {
        Ok(caller) => {
            let now = st.api.ctl.now();
            let (sid, _) = st.sessions.create(&token, caller.identity, now);
            let mut resp = Redirect::to("/").into_response();
            if let Ok(v) =
                HeaderValue::from_str(&session::set_cookie(&sid, st.sessions.ttl(), st.secure))
            {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
        Err(e) => render(
            e.status,
            "signin.html",
            context! { error => if e.status == StatusCode::TOO_MANY_REQUESTS { e.message } else { "that token is not valid (unknown, revoked or expired)".to_string() } },
        ),
    }
}

pub async fn signout(State(st): State<ConsoleState>, p: Post<Empty>) -> Response {
    st.sessions.remove(&p.signed.sid);
    let mut resp = Redirect::to("/signin").into_response();
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie(st.secure)) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// "Backup now": the API's `POST /backups`; a 409 shows which job runs.
pub async fn backup_now(State(st): State<ConsoleState>, p: Post<Empty>) -> Response {
    let s = &p.signed;
    match api_backups::start(State(st.api.clone()), s.caller.clone()).await {
        Ok((_, Json(job))) => Redirect::to(&format!("/backups/{}", job.id)).into_response(),
        Err(e) => {
            let running = admin::readiness(State(st.api.clone()), s.caller.clone())
                .await
                .ok()
                .and_then(|r| r.0.running_job);
            let mut resp = error_page(Some(s), &e);
            if let Some(id) = running.filter(|_| e.status == StatusCode::CONFLICT) {
                resp = render(
                    e.status,
                    "error.html",
                    context! { status => 409, code => e.code, message => e.message, running => id, ..user_ctx(s, "backups") },
                );
            }
            resp
        }
    }
}

pub async fn close_alert(
    State(st): State<ConsoleState>,
    Path(id): Path<i64>,
    p: Post<Empty>,
) -> PageResult {
    let s = &p.signed;
    let _closed = or_page(
        s,
        admin::close_alert(State(st.api.clone()), s.caller.clone(), Path(id)).await,
    )?;
    Ok(Redirect::to("/alerts").into_response())
}

/// The settings form as submitted (text, so a wrong value is shown back as typed).
#[derive(Debug, Clone, Deserialize)]
pub struct SettingsForm {
    #[serde(default)]
    pub frequency_hours: String,
    #[serde(default)]
    pub retention_days: String,
    #[serde(default, deserialize_with = "checkbox")]
    pub scheduler_enabled: bool,
    #[serde(default)]
    pub confirm: Option<String>,
}

fn checkbox<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = Option::<String>::deserialize(d)?;
    Ok(matches!(v.as_deref(), Some("on" | "true" | "1")))
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

/// The stored location, as the API shows it to this caller.
async fn current(st: &ConsoleState, s: &Signed) -> Result<ibs_types::LocationView, Response> {
    or_page(
        s,
        location::get(State(st.api.clone()), s.caller.clone()).await,
    )
    .map(|j| j.0)
}

/// Applies frequency, retention and the scheduler switch through `PUT /api/v1/location`. An
/// invalid field re-shows the form with the API's message beside it (nothing is saved); a
/// retention that would delete backups asks for confirmation, listing them.
pub async fn settings(State(st): State<ConsoleState>, p: Post<SettingsForm>) -> PageResult {
    let s = &p.signed;
    let f = &p.form;
    let fields = number("frequency_hours", &f.frequency_hours)
        .and_then(|fh| number("retention_days", &f.retention_days).map(|r| (fh, r)));
    let (frequency, retention) = match fields {
        Ok(v) => v,
        Err(err) => {
            // The role check comes first, as in the API: a reader's forged POST is 403 even
            // when its numbers are wrong.
            or_page(s, s.caller.require(ibs_types::Role::Admin))?;
            let loc = current(&st, s).await?;
            return Ok(render(
                StatusCode::OK,
                "settings.html",
                settings_ctx(s, &loc, Some(f), Some(err)),
            ));
        }
    };
    let update = LocationUpdate {
        frequency_hours: Some(frequency),
        retention_days: Some(retention),
        scheduler_enabled: Some(f.scheduler_enabled),
        confirm: f.confirm.as_deref() == Some("1"),
        ..LocationUpdate::default()
    };
    match location::put(State(st.api.clone()), s.caller.clone(), ApiJson(update)).await {
        Ok(_) => Ok(Redirect::to("/settings").into_response()),
        Err(e) if e.status == StatusCode::BAD_REQUEST && e.field.is_some() => {
            let loc = current(&st, s).await?;
            let field = e.field.clone().unwrap_or_default();
            Ok(render(
                StatusCode::OK,
                "settings.html",
                settings_ctx(s, &loc, Some(f), Some((field, e.message))),
            ))
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
                    frequency_hours => f.frequency_hours.clone(), retention_days => f.retention_days.clone(),
                    scheduler_enabled => f.scheduler_enabled,
                    ..user_ctx(s, "settings")
                },
            ))
        }
        Err(e) => Err(error_page(Some(s), &e)),
    }
}
