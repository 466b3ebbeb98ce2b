//! The console over HTTP without a browser (`tower::ServiceExt::oneshot` on the API's router with
//! the console merged, as `ibs serve` builds it, over a real test controller): the session cookie's
//! attributes, the CSP header on every page, CSRF refusal, role refusal of a forged POST, session
//! expiry on the controller's clock, sign-out, token revocation, and the settings form's inline
//! error that saves nothing.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use ibs_console::{ConsoleState, CSP};
use ibs_controller::model::Role;
use ibs_controller::testing::{self, TestController};
use tower::ServiceExt;

const T0: i64 = 1_800_000_000;

fn all() -> ibs_controller::PageRequest {
    ibs_controller::PageRequest {
        limit: 1000,
        after: None,
    }
}

struct Console {
    t: TestController,
    app: axum::Router,
    admin: String,
    reader: String,
}

struct Resp {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Resp {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
    fn csrf(&self) -> String {
        let (_, rest) = self
            .body
            .split_once("name=\"csrf-token\" content=\"")
            .unwrap_or_else(|| panic!("no csrf meta in {}", self.body));
        rest.split('"').next().unwrap().to_string()
    }
}

impl Console {
    fn new(secure: bool) -> Console {
        let t = testing::controller(T0, vec![]);
        let api = ibs_api::AppState::new(t.ctl.clone());
        let app =
            ibs_api::router(api.clone()).merge(ibs_console::router(ConsoleState::new(api, secure)));
        let db = t.ctl.db().clone();
        Console {
            admin: db.create_token(Role::Admin, "a", T0).unwrap(),
            reader: db.create_token(Role::Reader, "r", T0).unwrap(),
            t,
            app,
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        cookie: Option<&str>,
        form: Option<&str>,
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(c) = cookie {
            b = b.header(header::COOKIE, format!("ibs_session={c}"));
        }
        let req = match form {
            Some(f) => b
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(f.to_string()))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Resp {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into(),
        }
    }

    /// Signs in with `token`; the session id from the cookie.
    async fn sign_in(&self, token: &str) -> String {
        let r = self
            .send(
                Method::POST,
                "/signin",
                None,
                Some(&format!("token={token}")),
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        let c = r.headers.get(header::SET_COOKIE).unwrap().to_str().unwrap();
        c.strip_prefix("ibs_session=")
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string()
    }

    fn jobs(&self) -> usize {
        self.t.ctl.backups_page(&all()).unwrap().items.len()
    }
}

#[tokio::test]
async fn sign_in_sets_a_strict_httponly_cookie_and_every_page_has_the_csp() {
    let c = Console::new(false);
    let r = c.send(Method::GET, "/", None, None).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/signin");
    let page = c.send(Method::GET, "/signin", None, None).await;
    assert_eq!(page.headers[header::CONTENT_SECURITY_POLICY], CSP);
    assert!(!page.body.contains("<script>"), "no inline script");

    let signin = c
        .send(
            Method::POST,
            "/signin",
            None,
            Some(&format!("token={}", c.admin)),
        )
        .await;
    let cookie = signin.headers[header::SET_COOKIE].to_str().unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Max-Age=28800", "Path=/"] {
        assert!(cookie.contains(attr), "{attr} missing: {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    assert!(
        !cookie.contains(&c.admin),
        "the token is never in the cookie"
    );
    let sid = c.sign_in(&c.admin).await;
    for path in [
        "/",
        "/backups",
        "/alerts",
        "/settings",
        "/charts/duration.svg",
        "/static/console.js",
    ] {
        let r = c.send(Method::GET, path, Some(&sid), None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        assert_eq!(r.headers[header::CONTENT_SECURITY_POLICY], CSP, "{path}");
        assert!(!r.body.contains(&c.admin), "{path} shows the token");
    }
    // The API itself is unchanged: a session cookie is no bearer token.
    let api = c
        .send(Method::GET, "/api/v1/backups", Some(&sid), None)
        .await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);

    let tls = Console::new(true);
    let r = tls
        .send(
            Method::POST,
            "/signin",
            None,
            Some(&format!("token={}", tls.admin)),
        )
        .await;
    assert!(r.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("; Secure"));
}

#[tokio::test]
async fn a_wrong_token_gets_no_session() {
    let c = Console::new(false);
    let r = c
        .send(Method::POST, "/signin", None, Some("token=nope"))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers.get(header::SET_COOKIE).is_none());
    assert!(r.body.contains("not valid"), "{}", r.body);
}

#[tokio::test]
async fn a_post_without_the_sessions_csrf_token_is_refused_and_does_nothing() {
    let c = Console::new(false);
    let sid = c.sign_in(&c.admin).await;
    let other = c.sign_in(&c.admin).await;
    let others_csrf = c.send(Method::GET, "/", Some(&other), None).await.csrf();
    for form in ["", "csrf=", "csrf=0000", &format!("csrf={others_csrf}")] {
        let r = c
            .send(Method::POST, "/backups/now", Some(&sid), Some(form))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{form}: {}", r.body);
        assert!(r.body.contains("CSRF"), "{}", r.body);
        let r = c
            .send(
                Method::POST,
                "/settings",
                Some(&sid),
                Some(&format!("{form}&frequency_hours=2&retention_days=30")),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }
    assert_eq!(c.jobs(), 0, "no backup was started");
    assert_eq!(c.t.ctl.location().unwrap().frequency_hours, 12);
}

#[tokio::test]
async fn a_readers_forged_post_with_a_valid_csrf_token_is_403_from_the_api_role_check() {
    let c = Console::new(false);
    let sid = c.sign_in(&c.reader).await;
    let page = c.send(Method::GET, "/", Some(&sid), None).await;
    assert!(
        !page.body.contains("backup-now"),
        "a reader sees no Backup now"
    );
    let csrf = page.csrf();
    let r = c
        .send(
            Method::POST,
            "/backups/now",
            Some(&sid),
            Some(&format!("csrf={csrf}")),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(r.body.contains("needs the operator role"), "{}", r.body);
    let r = c
        .send(
            Method::POST,
            "/settings",
            Some(&sid),
            Some(&format!("csrf={csrf}&frequency_hours=x&retention_days=1")),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = c
        .send(
            Method::POST,
            "/alerts/1/close",
            Some(&sid),
            Some(&format!("csrf={csrf}")),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(c.jobs(), 0);
}

#[tokio::test]
async fn a_session_expires_on_the_controllers_clock() {
    let c = Console::new(false);
    let sid = c.sign_in(&c.admin).await;
    c.t.clock
        .advance(ibs_console::session::SESSION_TTL_SECS - 1);
    assert_eq!(
        c.send(Method::GET, "/", Some(&sid), None).await.status,
        StatusCode::OK
    );
    c.t.clock.advance(1);
    let r = c.send(Method::GET, "/", Some(&sid), None).await;
    assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/signin"));
    let r = c
        .send(Method::POST, "/backups/now", Some(&sid), Some(""))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn sign_out_ends_the_session_on_the_server_and_revoking_the_token_ends_its_sessions() {
    let c = Console::new(false);
    let sid = c.sign_in(&c.admin).await;
    let csrf = c.send(Method::GET, "/", Some(&sid), None).await.csrf();
    let r = c
        .send(
            Method::POST,
            "/signout",
            Some(&sid),
            Some(&format!("csrf={csrf}")),
        )
        .await;
    assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/signin"));
    assert!(r.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    // The old cookie, replayed, no longer works.
    let r = c.send(Method::GET, "/", Some(&sid), None).await;
    assert_eq!(r.location(), "/signin");

    let reader_sid = c.sign_in(&c.reader).await;
    let id =
        c.t.ctl
            .tokens_page(&all())
            .unwrap()
            .items
            .iter()
            .find(|t| t.role == "reader")
            .unwrap()
            .id;
    assert!(c.t.ctl.revoke_token(id).unwrap());
    let r = c.send(Method::GET, "/", Some(&reader_sid), None).await;
    assert_eq!(r.location(), "/signin");
}

#[tokio::test]
async fn an_invalid_frequency_is_shown_beside_its_field_and_nothing_is_saved() {
    let c = Console::new(false);
    let sid = c.sign_in(&c.admin).await;
    let csrf = c
        .send(Method::GET, "/settings", Some(&sid), None)
        .await
        .csrf();
    for (freq, needle) in [("25", "frequency_hours"), ("abc", "is not a whole number")] {
        let r = c
            .send(
                Method::POST,
                "/settings",
                Some(&sid),
                Some(&format!(
                    "csrf={csrf}&frequency_hours={freq}&retention_days=7"
                )),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let (_, err) = r
            .body
            .split_once("id=\"frequency_hours-error\"")
            .expect("an error beside the field");
        assert!(err.split("</p>").next().unwrap().contains(needle), "{err}");
        assert!(
            r.body.contains(&format!("value=\"{freq}\"")),
            "the typed value is kept"
        );
    }
    let loc = c.t.ctl.location().unwrap();
    assert_eq!(
        (loc.frequency_hours, loc.retention_days),
        (12, 7),
        "nothing saved"
    );
}
