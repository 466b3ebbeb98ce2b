//! The console's simple state-changing requests (POST, url-encoded): sign-in and sign-out,
//! "Backup now", closing and reopening an alert. Every one but sign-in needs a live session and
//! its CSRF token ([`Post`]: 403 before anything runs otherwise); each then calls the API's
//! handler, whose role check and validation decide (a reader's forged POST gets the API's 403).
//! Sign-in has no session yet: its form carries the token of a short-lived pre-session cookie
//! (login CSRF, [`crate::session::SIGNIN_COOKIE`]).

use crate::pages::{or_page, signin_page, PageResult};
use crate::session::{self, csrf_matches};
use crate::{error_page, render, user_ctx, ConsoleState, Signed};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use ibs_api::auth::Caller;
use ibs_api::error::ApiError;
use ibs_api::routes::{admin, backups as api_backups};
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
    #[serde(default)]
    signin_csrf: String,
}

/// Exchanges a pasted API token for a session. The form must carry the sign-in page's guard
/// (login CSRF: 403 otherwise, and the token is not looked at). The token is verified the way
/// the API verifies a bearer token, with the same rate limit on failures per client address.
pub async fn signin(State(st): State<ConsoleState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().cloned();
    let guard = session::named_cookie(&parts.headers, session::SIGNIN_COOKIE);
    let form = Bytes::from_request(Request::from_parts(parts, body), &st)
        .await
        .ok()
        .and_then(|b| serde_urlencoded::from_bytes::<SigninForm>(&b).ok());
    let (token, field) = match form {
        Some(f) => (
            zeroize::Zeroizing::new(f.token.trim().to_string()),
            f.signin_csrf,
        ),
        None => (zeroize::Zeroizing::new(String::new()), String::new()),
    };
    if !session::signin_guard_matches(guard.as_deref(), Some(&field)) {
        return signin_page(
            &st,
            StatusCode::FORBIDDEN,
            Some(
                "the sign-in form had expired or did not come from this console; sign in again"
                    .into(),
            ),
        );
    }
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
        Err(e) => signin_page(
            &st,
            e.status,
            Some(if e.status == StatusCode::TOO_MANY_REQUESTS {
                e.message
            } else {
                "that token is not valid (unknown, revoked or expired)".to_string()
            }),
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

/// Reopens a closed alert through `POST /api/v1/alerts/{id}/reopen` (operator, as closing).
pub async fn reopen_alert(
    State(st): State<ConsoleState>,
    Path(id): Path<i64>,
    p: Post<Empty>,
) -> PageResult {
    let s = &p.signed;
    let _open = or_page(
        s,
        admin::reopen_alert(State(st.api.clone()), s.caller.clone(), Path(id)).await,
    )?;
    Ok(Redirect::to("/alerts").into_response())
}
