//! The console's forms with files (`multipart/form-data`, or url-encoded when no file is sent):
//! [`Upload`] reads every field of a signed-in POST into memory, checks the session's CSRF token
//! before anything else looks at the fields, and hands them to the action.
//!
//! Invariants: an uploaded file (a .pfx, a .cer) and a password field live only in this request's
//! memory, in buffers zeroed when dropped; nothing here writes a field to disk, to the log or to
//! the session store. The whole form is bounded ([`MAX_UPLOAD_BYTES`]) and so is the number of
//! fields; a larger form is 413 before the action runs.

use crate::session::csrf_matches;
use crate::{error_page, ConsoleState, Signed};
use axum::extract::{FromRequest, FromRequestParts, Multipart, Request};
use axum::http::{header, StatusCode};
use axum::response::Response;
use ibs_api::error::ApiError;
use zeroize::Zeroizing;

/// The largest form with files: a .pfx is at most 64 KiB, and base64 is never sent here.
pub const MAX_UPLOAD_BYTES: usize = 256 * 1024;
/// At most this many fields in one form.
const MAX_FIELDS: usize = 32;

/// One field: its name, the file name when it is a file, and its bytes.
pub struct Field {
    pub name: String,
    pub file_name: Option<String>,
    pub data: Zeroizing<Vec<u8>>,
}

/// A signed-in POST whose CSRF token is the session's, with all its fields in memory.
pub struct Upload {
    pub signed: Signed,
    fields: Vec<Field>,
}

impl Upload {
    /// A text field, trimmed of nothing (empty when absent or not UTF-8).
    pub fn text(&self, name: &str) -> String {
        self.fields
            .iter()
            .find(|f| f.name == name && f.file_name.is_none())
            .and_then(|f| std::str::from_utf8(&f.data).ok())
            .unwrap_or_default()
            .to_string()
    }

    /// A secret text field (a password), in a zeroing buffer.
    pub fn secret(&self, name: &str) -> Zeroizing<String> {
        Zeroizing::new(self.text(name))
    }

    /// A checkbox: present and `on`/`true`/`1`.
    pub fn checked(&self, name: &str) -> bool {
        matches!(self.text(name).as_str(), "on" | "true" | "1")
    }

    /// An uploaded file with content (a file input left empty sends an empty part: `None`).
    pub fn file(&self, name: &str) -> Option<&Field> {
        self.fields
            .iter()
            .find(|f| f.name == name && f.file_name.is_some() && !f.data.is_empty())
    }
}

fn too_large(s: &Signed) -> Response {
    error_page(
        Some(s),
        &ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("the form is larger than {MAX_UPLOAD_BYTES} bytes"),
        ),
    )
}

fn malformed(s: &Signed, e: impl std::fmt::Display) -> Response {
    error_page(
        Some(s),
        &ApiError::bad_request("form", format!("malformed form: {e}")),
    )
}

impl FromRequest<ConsoleState> for Upload {
    type Rejection = Response;

    async fn from_request(req: Request, st: &ConsoleState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let signed = Signed::from_request_parts(&mut parts, st).await?;
        let multipart = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("multipart/form-data"));
        let header_token = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let req = Request::from_parts(parts, body);
        let mut fields = Vec::new();
        if multipart {
            let mut mp = Multipart::from_request(req, st)
                .await
                .map_err(|e| malformed(&signed, e))?;
            let mut total = 0usize;
            while let Some(mut f) = mp.next_field().await.map_err(|e| malformed(&signed, e))? {
                if fields.len() >= MAX_FIELDS {
                    return Err(too_large(&signed));
                }
                let name = f.name().unwrap_or_default().to_string();
                let file_name = f.file_name().map(str::to_string);
                let mut data = Zeroizing::new(Vec::new());
                while let Some(chunk) = f.chunk().await.map_err(|e| malformed(&signed, e))? {
                    total += chunk.len();
                    if total > MAX_UPLOAD_BYTES {
                        return Err(too_large(&signed));
                    }
                    data.extend_from_slice(&chunk);
                }
                fields.push(Field {
                    name,
                    file_name,
                    data,
                });
            }
        } else {
            let body = Zeroizing::new(
                axum::body::to_bytes(req.into_body(), MAX_UPLOAD_BYTES)
                    .await
                    .map_err(|_| too_large(&signed))?
                    .to_vec(),
            );
            let pairs: Vec<(String, String)> =
                serde_urlencoded::from_bytes(&body).map_err(|e| malformed(&signed, e))?;
            if pairs.len() > MAX_FIELDS {
                return Err(too_large(&signed));
            }
            for (name, value) in pairs {
                fields.push(Field {
                    name,
                    file_name: None,
                    data: Zeroizing::new(value.into_bytes()),
                });
            }
        }
        let up = Upload { signed, fields };
        let field = up.text("csrf");
        let presented = if field.is_empty() {
            header_token
        } else {
            Some(field)
        };
        if !csrf_matches(&up.signed.session, presented.as_deref()) {
            return Err(error_page(
                Some(&up.signed),
                &ApiError::new(
                    StatusCode::FORBIDDEN,
                    "csrf",
                    "the request did not carry this session's CSRF token; reload the page and try again",
                ),
            ));
        }
        Ok(up)
    }
}
