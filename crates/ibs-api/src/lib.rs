//! The controller's HTTP API: REST/JSON under `/api/v1`, plus `/healthz`, Prometheus `/metrics` and
//! the OpenAPI document at `/api/v1/openapi.json`. This crate is a thin typed layer: handlers check
//! the caller's role, call [`ibs_controller::Controller`], and map `ControllerError` to a status code
//! and a safe JSON body ([`error`]). Authentication and its rate limit are in [`auth`]. The request
//! and response bodies are the types of `ibs-types`; the OpenAPI document is generated from them
//! and from each handler's `#[utoipa::path]` ([`openapi`]).
//!
//! Request bodies are limited to [`MAX_BODY_BYTES`] (413 beyond, 415 when a JSON body lacks the
//! JSON content type). Request headers are limited by hyper: a head over its read buffer (~400 KiB)
//! or with more than 100 headers is answered 431 and the connection closed.
//!
//! Roles: **reader** may GET everything; **operator** also starts backups and begins/ends
//! maintenance; **admin** also changes settings and components, restores, validates, closes and reopens alerts, prunes the
//! store, creates, lists and revokes tokens and reads the audit log. No role can make the daemon run a
//! command or read a host file or environment variable it names: those come only from the host's
//! configuration (see `ibs_controller::component_api`).

pub mod auth;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod paging;
/// Handlers, each documented by its `#[utoipa::path]`.
pub mod routes;

use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{on, MethodFilter};
use axum::Router;
use ibs_controller::Controller;
use std::sync::Arc;

/// The largest accepted request body (the largest legitimate one, a restore request carrying a
/// base64 .pfx, is a few KiB).
pub const MAX_BODY_BYTES: usize = 1 << 20;

#[derive(Clone)]
pub struct AppState {
    pub ctl: Controller,
    pub limiter: Arc<auth::AuthLimiter>,
}

impl AppState {
    pub fn new(ctl: Controller) -> Self {
        AppState {
            ctl,
            limiter: Arc::new(auth::AuthLimiter::default()),
        }
    }
}

/// The routes being registered, and a record of each (method, path) as it is registered: the
/// record is what the test comparing the router with the OpenAPI document reads.
struct Routes {
    router: Router<AppState>,
    table: Vec<(Method, &'static str)>,
}

impl Routes {
    fn op<H, T>(mut self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("a routable method");
        self.router = self.router.route(path, on(filter, handler));
        self.table.push((method, path));
        self
    }
}

/// Liveness (no token needed).
#[utoipa::path(get, path = "/healthz", tag = "public",
    responses((status = 200, description = "`ok`", body = String, content_type = "text/plain")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// The API's front door (no token needed): what `ibs serve` prints as the API URL answers with
/// the version and where the document, health and metrics are.
#[utoipa::path(get, path = "/api/v1", tag = "public",
    responses((status = 200, description = "Version and links: `openapi`, `health`, `metrics`", body = Object)))]
pub async fn index() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "service": "ibs controller API",
        "version": env!("CARGO_PKG_VERSION"),
        "openapi": "/api/v1/openapi.json",
        "health": "/healthz",
        "metrics": "/metrics",
        "auth": "Authorization: Bearer TOKEN (create one with `ibs token create --role ROLE` on the controller host)",
    }))
}

fn routes() -> Routes {
    use routes::{admin, backups, location, operations};
    use Method as M;
    Routes {
        router: Router::new(),
        table: Vec::new(),
    }
    .op(M::GET, "/api/v1/location", location::get)
    .op(M::PUT, "/api/v1/location", location::put)
    .op(M::DELETE, "/api/v1/location", location::clear)
    .op(M::GET, "/api/v1/components", location::get_components)
    .op(M::PUT, "/api/v1/components", location::put_components)
    .op(M::GET, "/api/v1/backups", backups::list)
    .op(M::POST, "/api/v1/backups", backups::start)
    .op(M::GET, "/api/v1/backups/{id}", backups::show)
    .op(M::POST, "/api/v1/backups/{id}/restore", backups::restore)
    .op(M::POST, "/api/v1/backups/{id}/validate", backups::validate)
    .op(M::GET, "/api/v1/jobs", backups::jobs)
    .op(M::GET, "/api/v1/jobs/{id}", backups::job)
    .op(M::POST, "/api/v1/jobs/{id}/cancel", backups::cancel)
    .op(M::GET, "/api/v1/jobs/{id}/report", backups::report)
    .op(
        M::GET,
        "/api/v1/jobs/{id}/report.html",
        backups::report_html,
    )
    .op(M::GET, "/api/v1/verification", backups::verification)
    .op(M::POST, "/api/v1/verification", backups::start_verification)
    .op(
        M::GET,
        "/api/v1/verification/packs",
        backups::verification_packs,
    )
    .op(M::GET, "/api/v1/operations", operations::list)
    .op(M::GET, "/api/v1/maintenance", admin::maintenance)
    .op(M::POST, "/api/v1/maintenance", admin::begin)
    .op(M::DELETE, "/api/v1/maintenance", admin::end)
    .op(M::POST, "/api/v1/maintenance/end", admin::end_post)
    .op(M::POST, "/api/v1/maintenance/clear", admin::clear)
    .op(M::GET, "/api/v1/readiness", admin::readiness)
    .op(M::GET, "/api/v1/alerts", admin::alerts)
    .op(M::POST, "/api/v1/alerts/{id}/close", admin::close_alert)
    .op(M::POST, "/api/v1/alerts/{id}/reopen", admin::reopen_alert)
    .op(M::POST, "/api/v1/store/prune", admin::prune)
    .op(M::GET, "/api/v1/tokens", admin::list_tokens)
    .op(M::POST, "/api/v1/tokens", admin::create_token)
    .op(M::DELETE, "/api/v1/tokens/{id}", admin::revoke_token)
    .op(M::GET, "/api/v1/audit", admin::audit)
    .op(M::GET, "/api/v1", index)
    .op(M::GET, "/api/v1/openapi.json", openapi::document)
    .op(M::GET, "/healthz", healthz)
    .op(M::GET, "/metrics", metrics::metrics)
}

/// Every (method, path) the router serves, in registration order (`GET` also answers `HEAD`).
pub fn routed_operations() -> Vec<(Method, &'static str)> {
    routes().table
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    routes()
        .router
        .fallback(|| async { error::ApiError::not_found("no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
