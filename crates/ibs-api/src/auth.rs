//! Bearer-token authentication and authorisation. A [`Caller`] is extracted from the
//! `Authorization: Bearer TOKEN` header: a missing or unknown token is 401, and handlers call
//! [`Caller::require`] for their role (403 when too low). An expired token is 401 like an unknown one. Tokens are verified by
//! `ibs_controller::tokens` (hashed, constant-time). Repeated failures from one client address are
//! rate-limited: after [`MAX_FAILURES`] failures within [`WINDOW_SECS`], that address gets 429 for
//! every request without a valid token until the window has passed. A request that carries a valid
//! token is never refused by the limiter: a guesser sharing an address (a NAT, a proxy) cannot lock
//! out the operators behind it. Guessing itself is hopeless (256-bit tokens); the limiter keeps
//! failures cheap and the log quiet (a blocked address's failures are not logged one by one).

use crate::error::ApiError;
use crate::AppState;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::StatusCode;
use ibs_controller::model::Role;
use ibs_controller::tokens::TokenIdentity;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

pub const MAX_FAILURES: usize = 10;
pub const WINDOW_SECS: i64 = 60;

#[derive(Debug, Default)]
pub struct AuthLimiter {
    failures: Mutex<HashMap<String, Vec<i64>>>,
}

impl AuthLimiter {
    fn blocked(&self, ip: &str, now: i64) -> bool {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let v = f.entry(ip.to_string()).or_default();
        v.retain(|t| now - t < WINDOW_SECS);
        v.len() >= MAX_FAILURES
    }
    fn fail(&self, ip: &str, now: i64) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        f.entry(ip.to_string()).or_default().push(now);
        if f.len() > 10_000 {
            f.retain(|_, v| v.iter().any(|t| now - t < WINDOW_SECS));
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub identity: TokenIdentity,
}

impl Caller {
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.identity.role >= role {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "this needs the {} role; the token has {}",
                    role.as_str(),
                    self.identity.role.as_str()
                ),
            ))
        }
    }
    pub fn actor(&self) -> String {
        self.identity.actor()
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string())
            .unwrap_or_else(|| "local".into());
        let now = state.ctl.now();
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let verified = match token {
            Some(t) => state.ctl.verify_token(t, now)?,
            None => None,
        };
        if let Some(identity) = verified {
            return Ok(Caller { identity });
        }
        if state.limiter.blocked(&ip, now) {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "too many failed authentications from this address; try again later",
            ));
        }
        state.limiter.fail(&ip, now);
        match token {
            None => Err(ApiError::unauthorized()),
            Some(_) => {
                tracing::warn!("rejected an unknown API token from {ip}");
                Err(ApiError::unauthorized())
            }
        }
    }
}

/// A JSON body. A body over [`crate::MAX_BODY_BYTES`] is 413 and a missing or non-JSON
/// `Content-Type` is 415; every other rejection (syntax, wrong types, unknown fields) is a 400 with
/// the parser's message.
pub struct ApiJson<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                format!("the request body exceeds {} bytes", crate::MAX_BODY_BYTES),
            )),
            Err(e) if e.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "the request body must be JSON (Content-Type: application/json)",
            )),
            Err(e) => Err(ApiError::bad_request(
                "body",
                format!("malformed JSON: {}", e.body_text()),
            )),
        }
    }
}
