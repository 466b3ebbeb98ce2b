//! Console sessions: the API token an operator pastes once is exchanged for a random session id in
//! an `HttpOnly; SameSite=Strict` cookie (`Secure` under TLS) with a fixed lifetime
//! ([`SESSION_TTL_SECS`]). The token itself stays on the server, in memory, in the session record:
//! every request re-verifies it with the controller, so a revoked or expired token ends its
//! sessions at once. Sessions are keyed by the SHA-256 of their id (the map never holds a value a
//! cookie could be forged from) and end on sign-out, on expiry, or when the daemon stops.
//!
//! Each session has its own CSRF token: every state-changing request must carry it (form field
//! `csrf` or header `X-CSRF-Token`) or it is refused with 403 before any handler runs
//! ([`crate::actions`]).

use ibs_controller::tokens::TokenIdentity;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use zeroize::Zeroizing;

/// The session cookie's name.
pub const COOKIE: &str = "ibs_session";
/// A session's lifetime from sign-in (8 hours).
pub const SESSION_TTL_SECS: i64 = 8 * 3600;
/// At most this many live sessions; beyond, expired ones are dropped and then the oldest.
const MAX_SESSIONS: usize = 10_000;

/// One signed-in browser.
#[derive(Clone)]
pub struct Session {
    /// The API token, used server-side only (never sent to the browser).
    pub(crate) token: Zeroizing<String>,
    pub identity: TokenIdentity,
    pub csrf: String,
    pub created_at: i64,
    pub expires_at: i64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("identity", &self.identity)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The server-side session store.
#[derive(Debug)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    ttl: i64,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::with_ttl(SESSION_TTL_SECS)
    }
}

fn random_hex() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

fn key(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

impl Sessions {
    pub fn with_ttl(ttl: i64) -> Self {
        Sessions {
            map: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    pub fn ttl(&self) -> i64 {
        self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session for a verified token: (the cookie value, the session).
    pub fn create(&self, token: &str, identity: TokenIdentity, now: i64) -> (String, Session) {
        let id = random_hex();
        let s = Session {
            token: Zeroizing::new(token.to_string()),
            identity,
            csrf: random_hex(),
            created_at: now,
            expires_at: now.saturating_add(self.ttl),
        };
        let mut m = self.lock();
        if m.len() >= MAX_SESSIONS {
            m.retain(|_, s| s.expires_at > now);
            if m.len() >= MAX_SESSIONS {
                if let Some(oldest) = m
                    .iter()
                    .min_by_key(|(_, s)| s.created_at)
                    .map(|(k, _)| k.clone())
                {
                    m.remove(&oldest);
                }
            }
        }
        m.insert(key(&id), s.clone());
        (id, s)
    }

    /// The live session a cookie value names; an expired one is removed and gives `None`.
    pub fn get(&self, id: &str, now: i64) -> Option<Session> {
        let k = key(id);
        let mut m = self.lock();
        match m.get(&k) {
            Some(s) if s.expires_at > now => Some(s.clone()),
            Some(_) => {
                m.remove(&k);
                None
            }
            None => None,
        }
    }

    /// Ends a session (sign-out, or its token no longer verifies).
    pub fn remove(&self, id: &str) {
        self.lock().remove(&key(id));
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The `Set-Cookie` value starting a session.
pub fn set_cookie(id: &str, ttl: i64, secure: bool) -> String {
    cookie::Cookie::build((COOKIE, id.to_string()))
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .secure(secure)
        .path("/")
        .max_age(cookie::time::Duration::seconds(ttl))
        .build()
        .to_string()
}

/// The `Set-Cookie` value ending a session in the browser.
pub fn clear_cookie(secure: bool) -> String {
    cookie::Cookie::build((COOKIE, ""))
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .secure(secure)
        .path("/")
        .max_age(cookie::time::Duration::ZERO)
        .build()
        .to_string()
}

/// The session id in a request's `Cookie` headers.
pub fn cookie_value(headers: &axum::http::HeaderMap) -> Option<String> {
    named_cookie(headers, COOKIE)
}

/// The pre-session cookie of the sign-in form (login CSRF): a random value the sign-in page sets
/// (`HttpOnly; SameSite=Strict`, path `/signin`, ten minutes) and also puts in the form; a
/// sign-in POST must carry both, equal. A cross-site page can make a browser post the form but
/// cannot read the value nor, being another site, have the strict cookie sent with its post.
pub const SIGNIN_COOKIE: &str = "ibs_signin";
const SIGNIN_TTL_SECS: i64 = 600;

/// A fresh sign-in guard value.
pub fn new_signin_guard() -> String {
    random_hex()
}

/// The `Set-Cookie` value of a sign-in guard.
pub fn signin_cookie(value: &str, secure: bool) -> String {
    cookie::Cookie::build((SIGNIN_COOKIE, value.to_string()))
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .secure(secure)
        .path("/signin")
        .max_age(cookie::time::Duration::seconds(SIGNIN_TTL_SECS))
        .build()
        .to_string()
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn named_cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
        .filter(|v| !v.is_empty())
}

/// Whether a sign-in form's guard matches its cookie (both present, equal; compared as digests).
pub fn signin_guard_matches(cookie: Option<&str>, field: Option<&str>) -> bool {
    match (cookie, field) {
        (Some(c), Some(f)) if !c.is_empty() => Sha256::digest(c.as_bytes()) == Sha256::digest(f),
        _ => false,
    }
}

/// Whether a presented CSRF token is the session's (compared as digests, so the time taken says
/// nothing about the token).
pub fn csrf_matches(session: &Session, presented: Option<&str>) -> bool {
    match presented {
        Some(p) if !p.is_empty() => Sha256::digest(p.as_bytes()) == Sha256::digest(&session.csrf),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ibs_types::Role;

    fn who() -> TokenIdentity {
        TokenIdentity {
            id: 7,
            role: Role::Operator,
            label: "t".into(),
        }
    }

    #[test]
    fn a_session_lives_until_its_expiry_and_not_a_second_longer() {
        let s = Sessions::with_ttl(100);
        let (id, sess) = s.create("tok", who(), 1_000);
        assert_eq!(sess.expires_at, 1_100);
        assert!(s.get(&id, 1_099).is_some());
        assert!(s.get(&id, 1_100).is_none());
        // An expired session is gone, not merely hidden.
        assert!(s.is_empty());
    }

    #[test]
    fn sign_out_removes_the_session_server_side() {
        let s = Sessions::default();
        let (id, _) = s.create("tok", who(), 0);
        s.remove(&id);
        assert!(s.get(&id, 1).is_none());
    }

    #[test]
    fn ids_and_csrf_tokens_are_random_and_the_map_holds_no_cookie_value() {
        let s = Sessions::default();
        let (a, sa) = s.create("tok", who(), 0);
        let (b, sb) = s.create("tok", who(), 0);
        assert_ne!(a, b);
        assert_ne!(sa.csrf, sb.csrf);
        assert_eq!(a.len(), 64);
        let m = s.lock();
        assert!(!m.contains_key(&a) && m.contains_key(&key(&a)));
    }

    #[test]
    fn csrf_must_match_exactly() {
        let s = Sessions::default();
        let (_, sess) = s.create("tok", who(), 0);
        assert!(csrf_matches(&sess, Some(&sess.csrf.clone())));
        assert!(!csrf_matches(&sess, None));
        assert!(!csrf_matches(&sess, Some("")));
        assert!(!csrf_matches(&sess, Some(&sess.csrf[1..])));
    }

    #[test]
    fn the_cookie_is_httponly_samesite_strict_with_an_expiry_and_secure_only_under_tls() {
        let plain = set_cookie("abc", 3600, false);
        assert!(plain.starts_with("ibs_session=abc;"), "{plain}");
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=3600"] {
            assert!(plain.contains(attr), "{attr} missing in {plain}");
        }
        assert!(!plain.contains("Secure"), "{plain}");
        let tls = set_cookie("abc", 3600, true);
        assert!(tls.contains("; Secure"), "{tls}");
        let gone = clear_cookie(true);
        assert!(gone.contains("Max-Age=0") && gone.starts_with("ibs_session=;"));
    }

    #[test]
    fn the_signin_guard_needs_the_cookie_and_the_field_equal() {
        let g = new_signin_guard();
        assert!(signin_guard_matches(Some(&g), Some(&g)));
        assert!(!signin_guard_matches(None, Some(&g)));
        assert!(!signin_guard_matches(Some(&g), None));
        assert!(!signin_guard_matches(Some(""), Some("")));
        assert!(!signin_guard_matches(Some(&g), Some(&new_signin_guard())));
        let c = signin_cookie(&g, false);
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/signin", "Max-Age=600"] {
            assert!(c.contains(attr), "{attr} missing in {c}");
        }
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = axum::http::HeaderMap::new();
        h.append("cookie", "a=1; ibs_session=xyz; b=2".parse().unwrap());
        assert_eq!(cookie_value(&h).as_deref(), Some("xyz"));
        let mut none = axum::http::HeaderMap::new();
        none.append("cookie", "ibs_session=".parse().unwrap());
        assert_eq!(cookie_value(&none), None);
    }
}
