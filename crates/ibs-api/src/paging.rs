//! Paging on the wire (ADR 0024): `?limit=N&cursor=C` in, a JSON array out with the next page's
//! cursor in `X-Next-Cursor` and in `Link: <…>; rel="next"` (RFC 8288) when more rows follow.
//!
//! A cursor is `base64url("ibs1:" LIST ":" A ":" B ":" hex(S))` over the controller's
//! [`PageKey`]: opaque to clients, naming the list it came from so that a cursor of another list
//! (or a malformed one) is refused with 400 `invalid cursor` (`field: cursor`) instead of paging
//! from a wrong place. It carries no secret and grants nothing: it only says where to continue.

use crate::error::ApiError;
use axum::http::header::{HeaderName, HeaderValue, LINK};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use ibs_controller::{Page, PageKey, PageRequest};
use ibs_types::paging::{parse_limit, NEXT_CURSOR_HEADER};
use ibs_types::PageQuery;
use serde::Serialize;

/// The lists, each with its own cursor scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    Backups,
    Jobs,
    Alerts,
    Tokens,
    Audit,
    Packs,
    Components,
    Operations,
}

impl List {
    fn tag(self) -> &'static str {
        match self {
            List::Backups => "backups",
            List::Jobs => "jobs",
            List::Alerts => "alerts",
            List::Tokens => "tokens",
            List::Audit => "audit",
            List::Packs => "packs",
            List::Components => "components",
            List::Operations => "operations",
        }
    }
}

const PREFIX: &str = "ibs1";
/// Longer cursors are refused before decoding.
const MAX_CURSOR_CHARS: usize = 512;

fn invalid_cursor() -> ApiError {
    ApiError::bad_request("cursor", "invalid cursor")
}

/// The opaque cursor continuing `list` after `key`.
pub fn encode(list: List, key: &PageKey) -> String {
    let hex: String = key.s.bytes().map(|b| format!("{b:02x}")).collect();
    B64URL.encode(format!("{PREFIX}:{}:{}:{}:{hex}", list.tag(), key.a, key.b))
}

/// The key a cursor of `list` names; 400 `invalid cursor` for anything else.
pub fn decode(list: List, cursor: &str) -> Result<PageKey, ApiError> {
    if cursor.len() > MAX_CURSOR_CHARS {
        return Err(invalid_cursor());
    }
    let raw = B64URL.decode(cursor.trim()).map_err(|_| invalid_cursor())?;
    let text = String::from_utf8(raw).map_err(|_| invalid_cursor())?;
    let parts: Vec<&str> = text.split(':').collect();
    let [prefix, tag, a, b, hex] = parts.as_slice() else {
        return Err(invalid_cursor());
    };
    if *prefix != PREFIX || *tag != list.tag() || hex.len() % 2 != 0 {
        return Err(invalid_cursor());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| invalid_cursor())?;
    Ok(PageKey {
        a: a.parse().map_err(|_| invalid_cursor())?,
        b: b.parse().map_err(|_| invalid_cursor())?,
        s: String::from_utf8(bytes).map_err(|_| invalid_cursor())?,
    })
}

/// The page a query asks for: `limit` checked (400 naming `limit`), `cursor` decoded for `list`.
pub fn request(list: List, q: &PageQuery) -> Result<PageRequest, ApiError> {
    let limit = parse_limit(q.limit.as_deref()).map_err(|m| ApiError::bad_request("limit", m))?;
    let after = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(decode(list, c)?),
    };
    Ok(PageRequest { limit, after })
}

/// A page as the response: the JSON array, and when more rows follow the two next-page headers.
pub struct Paged<T> {
    items: Vec<T>,
    next: Option<(String, String)>,
}

impl<T> Paged<T> {
    /// `uri` is the request's: the `Link` repeats its path and query with the cursor replaced.
    pub fn new(list: List, page: Page<T>, uri: &Uri) -> Self {
        let next = page.next.map(|k| {
            let cursor = encode(list, &k);
            let mut query: Vec<String> = uri
                .query()
                .unwrap_or("")
                .split('&')
                .filter(|p| !p.is_empty() && !p.starts_with("cursor="))
                .map(str::to_string)
                .collect();
            query.push(format!("cursor={cursor}"));
            let link = format!("<{}?{}>; rel=\"next\"", uri.path(), query.join("&"));
            (cursor, link)
        });
        Paged {
            items: page.items,
            next,
        }
    }

    /// The rows and the next page's cursor (for in-process callers such as the web console).
    pub fn into_parts(self) -> (Vec<T>, Option<String>) {
        (self.items, self.next.map(|(cursor, _)| cursor))
    }
}

impl<T: Serialize> IntoResponse for Paged<T> {
    fn into_response(self) -> Response {
        let mut resp = Json(self.items).into_response();
        if let Some((cursor, link)) = self.next {
            let h = resp.headers_mut();
            if let (Ok(c), Ok(l)) = (HeaderValue::from_str(&cursor), HeaderValue::from_str(&link)) {
                h.insert(HeaderName::from_static(NEXT_CURSOR_HEADER), c);
                h.insert(LINK, l);
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_stay_in_their_list() {
        let k = PageKey {
            a: -5,
            b: 42,
            s: "op-000000000007:ü".into(),
        };
        let c = encode(List::Operations, &k);
        assert_eq!(decode(List::Operations, &c).unwrap(), k);
        let foreign = decode(List::Jobs, &c).unwrap_err();
        assert_eq!(foreign.field.as_deref(), Some("cursor"));
        for bad in [
            "",
            "!!",
            "aWJzMQ",
            &B64URL.encode("ibs1:jobs:x:1:"),
            &"A".repeat(600),
        ] {
            assert_eq!(
                decode(List::Jobs, bad).unwrap_err().message,
                "invalid cursor"
            );
        }
    }
}
