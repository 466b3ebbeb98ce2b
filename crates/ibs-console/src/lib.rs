//! The web console (issue 15, ADR 0030): server-rendered HTML pages served by `ibs serve` under
//! `/` on the API's port. This crate owns the pages ([`pages`]; [`ops`]: maintenance,
//! verification, components; [`recovery`]: restore, validate, job pages and report downloads;
//! [`settings`]), the actions ([`actions`]), forms with uploads held in memory ([`form`]), the
//! console's sessions, CSRF tokens and sign-in guard ([`session`]), the SVG charts ([`charts`]) and
//! the security headers of every console response.
//!
//! The console is a view over the API, not a second API: every page and every action calls the
//! API's own handler (`ibs_api::routes`) with the signed-in token's [`Caller`], so the role rules,
//! the validation and the error messages are the API's, enforced on the server whatever the page
//! shows. Templates (minijinja) and the one small script and stylesheet are compiled into the
//! binary; nothing is loaded from another origin, and the Content-Security-Policy allows no inline
//! script or style.

// Handlers and extractors answer early with a ready page: `Result<_, Response>` is axum's own
// shape for that, and a response is as large as it is.
#![allow(clippy::result_large_err)]

pub mod actions;
pub mod charts;
pub mod form;
pub mod ops;
pub mod pages;
pub mod recovery;
pub mod session;
pub mod settings;
mod view;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use ibs_api::auth::Caller;
use ibs_api::error::ApiError;
use ibs_api::AppState;
use minijinja::Environment;
use session::{Session, Sessions};
use std::sync::{Arc, LazyLock};

/// The Content-Security-Policy of every console response: own origin only, no inline script or
/// style, no framing, forms post only to the console.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

#[derive(Clone)]
pub struct ConsoleState {
    pub api: AppState,
    pub sessions: Arc<Sessions>,
    /// Served under TLS: the session cookie is `Secure`.
    pub secure: bool,
}

impl ConsoleState {
    pub fn new(api: AppState, secure: bool) -> Self {
        ConsoleState {
            api,
            sessions: Arc::new(Sessions::default()),
            secure,
        }
    }
}

static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, text) in [
        ("base.html", include_str!("../templates/base.html")),
        ("signin.html", include_str!("../templates/signin.html")),
        ("overview.html", include_str!("../templates/overview.html")),
        ("backups.html", include_str!("../templates/backups.html")),
        ("backup.html", include_str!("../templates/backup.html")),
        ("alerts.html", include_str!("../templates/alerts.html")),
        ("settings.html", include_str!("../templates/settings.html")),
        ("confirm.html", include_str!("../templates/confirm.html")),
        (
            "maintenance.html",
            include_str!("../templates/maintenance.html"),
        ),
        (
            "verification.html",
            include_str!("../templates/verification.html"),
        ),
        (
            "components.html",
            include_str!("../templates/components.html"),
        ),
        ("restore.html", include_str!("../templates/restore.html")),
        ("job.html", include_str!("../templates/job.html")),
        ("error.html", include_str!("../templates/error.html")),
    ] {
        env.add_template(name, text)
            .expect("the embedded templates parse");
    }
    env.add_filter("ts", view::ts_filter);
    env
});

/// Renders an embedded template.
pub(crate) fn render(status: StatusCode, name: &str, ctx: minijinja::Value) -> Response {
    match TEMPLATES.get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!("console template {name}: {e:#}");
            (StatusCode::INTERNAL_SERVER_ERROR, "console template error").into_response()
        }
    }
}

/// The page context every signed-in page shares: who is signed in, what they may do, the CSRF token.
pub(crate) fn user_ctx(s: &Signed, nav: &str) -> minijinja::Value {
    let role = s.caller.identity.role;
    minijinja::context! {
        nav => nav,
        user => s.caller.identity.label.clone(),
        role => role.as_str(),
        can_operate => role >= ibs_types::Role::Operator,
        can_admin => role >= ibs_types::Role::Admin,
        csrf => s.session.csrf.clone(),
    }
}

/// An API error as a console page with the API's status and message.
pub(crate) fn error_page(s: Option<&Signed>, e: &ApiError) -> Response {
    let base = s
        .map(|s| user_ctx(s, ""))
        .unwrap_or_else(|| minijinja::context! {});
    render(
        e.status,
        "error.html",
        minijinja::context! { status => e.status.as_u16(), code => e.code, message => e.message.clone(), ..base },
    )
}

/// A signed-in request: the session and the API caller it stands for.
pub struct Signed {
    pub caller: Caller,
    pub session: Session,
    pub sid: String,
}

impl FromRequestParts<ConsoleState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        st: &ConsoleState,
    ) -> Result<Self, Self::Rejection> {
        let now = st.api.ctl.now();
        let live = session::cookie_value(&parts.headers)
            .and_then(|sid| st.sessions.get(&sid, now).map(|s| (sid, s)));
        let Some((sid, sess)) = live else {
            return Err(not_signed_in(&parts.method));
        };
        match st.api.ctl.verify_token(&sess.token, now) {
            Ok(Some(identity)) => Ok(Signed {
                caller: Caller { identity },
                session: sess,
                sid,
            }),
            Ok(None) => {
                st.sessions.remove(&sid);
                Err(not_signed_in(&parts.method))
            }
            Err(e) => Err(error_page(None, &ApiError::from(e))),
        }
    }
}

fn not_signed_in(method: &Method) -> Response {
    if method == Method::GET || method == Method::HEAD {
        Redirect::to("/signin").into_response()
    } else {
        error_page(
            None,
            &ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "not signed in, or the session has ended; sign in again",
            ),
        )
    }
}

/// Adds the security headers to every console response.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../static/console.js"),
    )
        .into_response()
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../static/console.css"),
    )
        .into_response()
}

async fn icon() -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "max-age=86400"),
        ],
        include_str!("../static/icon.svg"),
    )
        .into_response()
}

/// The console's routes (merge them into the API's router; they share no path with it).
pub fn router(state: ConsoleState) -> Router {
    Router::new()
        .route("/", get(pages::overview))
        .route("/signin", get(pages::signin).post(actions::signin))
        .route("/signout", post(actions::signout))
        .route("/backups", get(pages::backups))
        .route("/backups/now", post(actions::backup_now))
        .route("/backups/{id}", get(pages::backup))
        .route("/jobs/{id}/progress.json", get(pages::progress))
        .route("/alerts", get(pages::alerts))
        .route("/alerts/{id}/close", post(actions::close_alert))
        .route("/alerts/{id}/reopen", post(actions::reopen_alert))
        .route("/settings", get(settings::page).post(settings::schedule))
        .route("/settings/location", post(settings::location))
        .route("/maintenance", get(ops::maintenance))
        .route("/maintenance/begin", post(ops::begin))
        .route("/maintenance/end", post(ops::end))
        .route("/maintenance/clear", post(ops::clear))
        .route(
            "/verification",
            get(ops::verification).post(ops::verify_now),
        )
        .route("/components", get(ops::components))
        .route(
            "/restore",
            get(recovery::restore_page).post(recovery::restore),
        )
        .route("/validate", post(recovery::validate))
        .route("/jobs/{id}", get(recovery::job))
        .route("/jobs/{id}/report.json", get(recovery::report_json))
        .route("/jobs/{id}/report.html", get(recovery::report_html))
        .route("/charts/{name}", get(charts::chart))
        .route("/static/console.js", get(script))
        .route("/static/console.css", get(stylesheet))
        .route("/static/icon.svg", get(icon))
        .route("/favicon.ico", get(icon))
        .layer(axum::extract::DefaultBodyLimit::max(form::MAX_UPLOAD_BYTES))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}
