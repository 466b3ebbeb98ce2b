//! The HTTP side of the API client commands: one [`Client`] per command (the controller's URL, the
//! token from $IBS_TOKEN, a CA from $IBS_CA_CERT), typed requests and answers (`ibs-types`), the
//! cleartext-secret guard before anything is sent, and the API's error body made into an
//! [`HttpError`] whose status and field choose the exit code (`crate::errors::code_for`); a
//! controller that cannot be reached is an [`Unreachable`] (exit 11).

use crate::cli_controller::Server;
use anyhow::{bail, Context, Result};
use ibs_types::ErrorBody;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

/// An HTTP error from the controller, with its status code.
#[derive(Debug)]
pub struct HttpError {
    pub status: u16,
    pub message: String,
    /// For a 409 from the job gate: what holds it (`backup`, `retention cleanup`, …).
    pub running_kind: Option<String>,
    /// The request field a 400 concerns (`pfx`, `path`, …).
    pub field: Option<String>,
    /// For an inaccessible location: its alert class (`path`, `authentication`, …).
    pub alert_class: Option<String>,
    /// For a refusal that a request field overrides (`allow_newer`): that field.
    pub override_flag: Option<String>,
}

/// The controller could not be reached (refused, timed out, TLS spoken to plain HTTP, …).
#[derive(Debug)]
pub struct Unreachable(pub String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Unreachable {}

/// The message for a failed connection, with what to do about the usual causes.
fn unreachable(base: &str, e: &ureq::Error) -> Unreachable {
    let text = e.to_string();
    let next = if text.contains("InvalidContentType") || text.contains("corrupt message") {
        format!(
            "the controller at {base} does not speak TLS: use {} (or start `ibs serve` with --tls-cert/--tls-key)",
            base.replacen("https://", "http://", 1)
        )
    } else {
        "check that `ibs serve` runs there, or set --server or IBS_SERVER".to_string()
    };
    Unreachable(format!(
        "cannot reach the controller at {base}: {text} — {next}"
    ))
}

impl HttpError {
    /// The controller's own housekeeping job holding the gate, if that is why this is a 409.
    fn housekeeping(&self) -> Option<&str> {
        self.running_kind
            .as_deref()
            .filter(|k| matches!(*k, "retention cleanup" | "verification"))
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.message)
    }
}
impl std::error::Error for HttpError {}

pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(server: &Server) -> Client {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)));
        // A controller with a self-signed TLS certificate: trust it through $IBS_CA_CERT (PEM).
        if let Some(ca) = std::env::var_os("IBS_CA_CERT") {
            if let Ok(pem) = std::fs::read(&ca) {
                let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                    .filter_map(|i| match i {
                        Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                        _ => None,
                    })
                    .collect();
                let tls = ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build();
                config = config.tls_config(tls);
            }
        }
        let agent: ureq::Agent = config.build().into();
        Client {
            base: server.url().trim_end_matches('/').to_string(),
            token: std::env::var("IBS_TOKEN").ok().filter(|t| !t.is_empty()),
            agent,
        }
    }

    pub fn get<R: DeserializeOwned>(&self, path: &str) -> Result<R> {
        parse(path, &self.call("GET", path, None)?.0)
    }

    /// One page of a list (`path` carries its own query, or none): the rows and the
    /// `X-Next-Cursor` of the next page, if any.
    pub fn get_page<R: DeserializeOwned>(&self, path: &str) -> Result<(Vec<R>, Option<String>)> {
        let (text, next) = self.call("GET", path, None)?;
        Ok((parse(path, &text)?, next))
    }

    pub fn post<B: Serialize, R: DeserializeOwned>(&self, path: &str, body: &B) -> Result<R> {
        parse(
            path,
            &self
                .call("POST", path, Some(serde_json::to_value(body)?))?
                .0,
        )
    }

    /// A POST without a body; the answer is returned as text (empty for 204).
    pub fn post_empty(&self, path: &str) -> Result<String> {
        Ok(self.call("POST", path, None)?.0)
    }

    pub fn put<B: Serialize, R: DeserializeOwned>(&self, path: &str, body: &B) -> Result<R> {
        parse(
            path,
            &self.call("PUT", path, Some(serde_json::to_value(body)?))?.0,
        )
    }

    /// A DELETE without a body; the answer parsed as `R`.
    pub fn delete<R: DeserializeOwned>(&self, path: &str) -> Result<R> {
        parse(path, &self.call("DELETE", path, None)?.0)
    }

    /// Sends one request; returns the body of a 2xx answer, or the API's error as [`HttpError`].
    /// A 409 because the controller's own housekeeping (retention cleanup, verification) holds the
    /// job gate is waited out for up to [`HOUSEKEEPING_WAIT`]: those jobs start by themselves and
    /// end by themselves, and an operator's request should not fail because one happened to run.
    /// The answer's body and its `X-Next-Cursor` header (a paged list's next page).
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(String, Option<String>)> {
        let started = std::time::Instant::now();
        let mut told = false;
        loop {
            match self.call_once(method, path, body.clone()) {
                Err(e) if started.elapsed() < HOUSEKEEPING_WAIT => {
                    let Some(kind) = e.downcast_ref::<HttpError>().and_then(|h| h.housekeeping())
                    else {
                        return Err(e);
                    };
                    if !told {
                        errln!("waiting for the controller's {kind} to finish …");
                        told = true;
                    }
                    std::thread::sleep(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }

    fn call_once(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(String, Option<String>)> {
        if let Some(b) = &body {
            crate::client_guard::refuse_cleartext_secrets(&self.base, b)?;
        }
        let url = format!("{}/api/v1{path}", self.base);
        let auth = format!("Bearer {}", self.token.as_deref().unwrap_or(""));
        let result = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            ("POST", Some(b)) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send_json(b),
            ("POST", None) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send_empty(),
            ("PUT", Some(b)) => self
                .agent
                .put(&url)
                .header("Authorization", &auth)
                .send_json(b),
            ("DELETE", None) => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .call(),
            _ => bail!("unsupported request {method} {path}"),
        };
        let mut resp = result.map_err(|e| unreachable(&self.base, &e))?;
        let status = resp.status().as_u16();
        let next = resp
            .headers()
            .get(ibs_types::paging::NEXT_CURSOR_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        if status >= 400 {
            return Err(http_error(status, &text, self.token.is_none()).into());
        }
        Ok((text, next))
    }
}

/// Reads a 2xx answer as the operation's response type.
pub fn parse<R: DeserializeOwned>(path: &str, text: &str) -> Result<R> {
    serde_json::from_str(text).with_context(|| format!("unexpected answer from {path}"))
}

/// The API's error body made into one message (with what a retention change would delete, or the
/// remediation of an inaccessible location).
/// How long a request waits for housekeeping that holds the job gate.
const HOUSEKEEPING_WAIT: Duration = Duration::from_secs(180);

fn http_error(status: u16, text: &str, no_token: bool) -> HttpError {
    let body = serde_json::from_str::<ErrorBody>(text).ok();
    let mut message = match &body {
        Some(b) => b.error.message.clone(),
        None => text.trim().to_string(),
    };
    if status == 401 {
        message = if no_token {
            "no API token: set IBS_TOKEN (create one with `ibs token create --role …` on the controller host)".into()
        } else {
            "the API token in IBS_TOKEN is not valid here (wrong, revoked or expired); list tokens with `ibs token list` on the controller host and create a new one with `ibs token create --role …`".into()
        };
    }
    let field = body.as_ref().and_then(|b| b.error.field.clone());
    let details = body.and_then(|b| b.error.details);
    let alert_class = details
        .as_ref()
        .and_then(|d| d["alert_class"].as_str())
        .map(String::from);
    let running_kind = details
        .as_ref()
        .filter(|_| status == 409)
        .and_then(|d| d["running_kind"].as_str())
        .map(String::from);
    let override_flag = details
        .as_ref()
        .filter(|_| status == 409)
        .and_then(|d| d["override"].as_str())
        .map(String::from);
    if let Some(d) = details {
        if let Some(list) = d["would_delete"].as_array() {
            let ids: Vec<_> = list.iter().filter_map(|v| v.as_str()).collect();
            message.push_str(&format!("\nwould delete: {}", ids.join(", ")));
        }
        // A location that fails its test is no failed backup: the class's description, never
        // the backup-failed alert's title.
        if let Some(r) = d["remediation"].as_str() {
            message.push_str(&format!(
                "\n{} Remediation: {r}",
                d["description"].as_str().unwrap_or("")
            ));
        }
    }
    HttpError {
        status,
        message,
        running_kind,
        field,
        alert_class,
        override_flag,
    }
}
