//! The controller's HTTP API: REST/JSON under `/api/v1`, plus `/healthz`, Prometheus `/metrics` and
//! the OpenAPI document at `/api/v1/openapi.json`. This crate is a thin typed layer: handlers check
//! the caller's role, call [`ibs_controller::Controller`], and map `ControllerError` to a status code
//! and a safe JSON body ([`error`]). Authentication and its rate limit are in [`auth`].
//!
//! Request bodies are limited to [`MAX_BODY_BYTES`] (413 beyond, 415 when a JSON body lacks the
//! JSON content type). Request headers are limited by hyper: a head over its read buffer (~400 KiB)
//! or with more than 100 headers is answered 431 and the connection closed.
//!
//! Roles: **reader** may GET everything; **operator** also starts backups and begins/ends
//! maintenance; **admin** also changes settings and components, restores, validates, closes alerts, prunes the
//! store, creates, lists and revokes tokens and reads the audit log. No role can make the daemon run a
//! command or read a host file or environment variable it names: those come only from the host's
//! configuration (see `ibs_controller::component_api`).

pub mod auth;
pub mod error;
pub mod metrics;
pub mod openapi;
/// Handlers and their request bodies (public so fuzz targets can deserialize the bodies).
pub mod routes;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
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

/// The whole API.
pub fn router(state: AppState) -> Router {
    use routes::{admin, backups, location};
    let v1 = Router::new()
        .route(
            "/location",
            get(location::get)
                .put(location::put)
                .delete(location::clear),
        )
        .route(
            "/components",
            get(location::get_components).put(location::put_components),
        )
        .route("/backups", get(backups::list).post(backups::start))
        .route("/backups/{id}", get(backups::show))
        .route("/backups/{id}/restore", post(backups::restore))
        .route("/backups/{id}/validate", post(backups::validate))
        .route("/jobs", get(backups::jobs))
        .route(
            "/verification",
            get(backups::verification).post(backups::start_verification),
        )
        .route("/verification/packs", get(backups::verification_packs))
        .route("/jobs/{id}", get(backups::job))
        .route("/jobs/{id}/report", get(backups::report))
        .route("/jobs/{id}/report.html", get(backups::report_html))
        .route(
            "/maintenance",
            get(admin::maintenance)
                .post(admin::begin)
                .delete(admin::end),
        )
        .route("/maintenance/end", post(admin::end))
        .route("/maintenance/clear", post(admin::clear))
        .route("/readiness", get(admin::readiness))
        .route("/alerts", get(admin::alerts))
        .route("/alerts/{id}/close", post(admin::close_alert))
        .route("/store/prune", post(admin::prune))
        .route("/tokens", get(admin::list_tokens).post(admin::create_token))
        .route("/tokens/{id}", axum::routing::delete(admin::revoke_token))
        .route("/audit", get(admin::audit))
        .route("/openapi.json", get(openapi::document));
    Router::new()
        .nest("/api/v1", v1)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics::metrics))
        .fallback(|| async { error::ApiError::not_found("no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
