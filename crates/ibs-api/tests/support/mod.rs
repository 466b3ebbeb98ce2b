//! The API under test without a socket (`tower::ServiceExt::oneshot`): a router over a test
//! controller with an admin, an operator and a reader token, and one request helper that every
//! test file's call shapes go through.
#![allow(dead_code)]

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use base64::Engine as _;
use http_body_util::BodyExt;
use ibs_controller::model::Role;
use ibs_controller::testing::{self, TestController};
use serde_json::Value;
use std::net::SocketAddr;
use tower::ServiceExt;

pub mod jobs;
#[allow(unused_imports)] // each test file uses some of them
pub use jobs::{processes_with, tool_processes, wait_until};

/// The test controllers' clock at start.
pub const T0: i64 = 1_800_000_000;

pub struct Api {
    pub t: TestController,
    pub app: axum::Router,
    pub admin: String,
    pub operator: String,
    pub reader: String,
}

/// One request: method, path, bearer token, content type, body (`None`: an empty body) and the
/// client address the connection would carry.
pub struct Call<'a> {
    pub method: Method,
    pub path: &'a str,
    pub token: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub body: Option<Vec<u8>>,
    pub from: Option<SocketAddr>,
}

impl<'a> Call<'a> {
    pub fn new(method: Method, path: &'a str, token: Option<&'a str>) -> Call<'a> {
        Call {
            method,
            path,
            token,
            content_type: None,
            body: None,
            from: None,
        }
    }

    /// With a JSON body (`Content-Type: application/json`).
    pub fn json(mut self, body: impl Into<Vec<u8>>) -> Call<'a> {
        self.content_type = Some("application/json");
        self.body = Some(body.into());
        self
    }
}

/// The body as JSON, or as a JSON string when it is not JSON.
pub fn json_or_text(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into()))
}

impl Api {
    /// An API over the controller of `t`, with tokens `a` (admin), `o` (operator) and `r`
    /// (reader) made at [`T0`].
    pub fn new(t: TestController) -> Api {
        let app = ibs_api::router(ibs_api::AppState::new(t.ctl.clone()));
        let db = t.ctl.db().clone();
        Api {
            admin: db.create_token(Role::Admin, "a", T0).unwrap(),
            operator: db.create_token(Role::Operator, "o", T0).unwrap(),
            reader: db.create_token(Role::Reader, "r", T0).unwrap(),
            t,
            app,
        }
    }

    /// An API over a fresh test controller at [`T0`] with `components`.
    pub fn with(components: Vec<ibs_controller::component::ComponentConfig>) -> Api {
        Api::new(testing::controller(T0, components))
    }

    /// Sends `c`; the status, the body bytes and the response's content type.
    pub async fn send_raw(&self, c: Call<'_>) -> (StatusCode, Vec<u8>, String) {
        let mut b = Request::builder().method(c.method).uri(c.path);
        if let Some(t) = c.token {
            b = b.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(ct) = c.content_type {
            b = b.header("Content-Type", ct);
        }
        let mut req = match c.body {
            Some(bytes) => b.body(Body::from(bytes)).unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        if let Some(addr) = c.from {
            req.extensions_mut().insert(ConnectInfo(addr));
        }
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let ctype = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, bytes.to_vec(), ctype)
    }

    /// Sends `c`; the status and the body as JSON (see [`json_or_text`]).
    pub async fn send(&self, c: Call<'_>) -> (StatusCode, Value) {
        let (s, bytes, _) = self.send_raw(c).await;
        (s, json_or_text(&bytes))
    }

    /// `method path` with an optional `token` and, if given, the JSON `body`.
    pub async fn call_json(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let c = Call::new(method, path, token);
        match body {
            Some(v) => self.send(c.json(v.to_string())).await,
            None => self.send(c).await,
        }
    }

    /// `method path` with `token` and, if given, the JSON `body`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_json(method, path, Some(token), body).await
    }
}

// Call shapes shared by api.rs and bad_input.rs.
impl Api {
    pub async fn call_text(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let c = Call::new(method, path, token);
        match body {
            Some(text) => self.send(c.json(text)).await,
            None => self.send(c).await,
        }
    }
    pub async fn put_location(&self, body: Value) -> (StatusCode, Value) {
        self.call_text(
            Method::PUT,
            "/api/v1/location",
            Some(&self.admin),
            Some(&body.to_string()),
        )
        .await
    }
}

pub fn cert_b64() -> String {
    base64::engine::general_purpose::STANDARD.encode(testing::identity().certificate().der())
}
