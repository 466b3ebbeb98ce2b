//! The console over HTTP without a browser (`tower::ServiceExt::oneshot` on the API's router with
//! the console merged, as `ibs serve` builds it, over a real test controller): the session cookie's
//! attributes, the CSP header on every page, CSRF refusal, role refusal of a forged POST, session
//! expiry on the controller's clock, sign-out, token revocation, and the settings form's inline
//! error that saves nothing; in `console_http/more.rs`: login CSRF, maintenance, verification,
//! components, reopening an alert and the location form.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use ibs_console::{ConsoleState, CSP};
use ibs_controller::model::Role;
use ibs_controller::testing::{self, TestController};
use tower::ServiceExt;

/// Maintenance, verification, components, alerts reopen, the location form, login CSRF.
#[path = "console_http/more.rs"]
mod more;

/// The pages' times with 1,000 backups (ignored by default: a benchmark printing a table).
#[path = "console_http/bench.rs"]
mod bench;

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
    operator: String,
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
        Console::with(secure, vec![])
    }

    fn with(secure: bool, components: Vec<ibs_controller::component::ComponentConfig>) -> Console {
        let t = testing::controller(T0, components);
        let api = ibs_api::AppState::new(t.ctl.clone());
        let app =
            ibs_api::router(api.clone()).merge(ibs_console::router(ConsoleState::new(api, secure)));
        let db = t.ctl.db().clone();
        Console {
            admin: db.create_token(Role::Admin, "a", T0).unwrap(),
            operator: db.create_token(Role::Operator, "o", T0).unwrap(),
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
        let cookie = cookie.map(|c| format!("ibs_session={c}"));
        self.send_raw(method, path, cookie.as_deref(), form).await
    }

    /// A request with a whole `Cookie` header.
    async fn send_raw(
        &self,
        method: Method,
        path: &str,
        cookie: Option<&str>,
        form: Option<&str>,
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(c) = cookie {
            b = b.header(header::COOKIE, c);
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

    /// A `multipart/form-data` POST of `fields` (name, file name for a file, bytes).
    async fn send_multipart(
        &self,
        path: &str,
        sid: &str,
        fields: &[(&str, Option<&str>, &[u8])],
    ) -> Resp {
        let boundary = "----ibs-test-boundary-7d3f";
        let mut body = Vec::new();
        for (name, file, data) in fields {
            body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            match file {
                Some(f) => body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
                ),
                None => body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                ),
            }
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::COOKIE, format!("ibs_session={sid}"))
            .header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(Body::from(body))
            .unwrap();
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

    /// The sign-in form's guard: (its cookie, its field), as a browser gets them from the page.
    async fn signin_guard(&self) -> (String, String) {
        let page = self.send(Method::GET, "/signin", None, None).await;
        let cookie = page.headers[header::SET_COOKIE].to_str().unwrap();
        let cookie = cookie.split(';').next().unwrap().to_string();
        let (_, rest) = page
            .body
            .split_once("name=\"signin_csrf\" value=\"")
            .expect("a guard field");
        (cookie, rest.split('"').next().unwrap().to_string())
    }

    /// Posts the sign-in form with `token`, as the page would.
    async fn post_signin(&self, token: &str) -> Resp {
        let (cookie, field) = self.signin_guard().await;
        self.send_raw(
            Method::POST,
            "/signin",
            Some(&cookie),
            Some(&format!("signin_csrf={field}&token={token}")),
        )
        .await
    }

    /// Signs in with `token`; the session id from the cookie.
    async fn sign_in(&self, token: &str) -> String {
        let r = self.post_signin(token).await;
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

    let signin = c.post_signin(&c.admin).await;
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
        "/maintenance",
        "/verification",
        "/components",
        "/restore",
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
    let r = tls.post_signin(&tls.admin).await;
    assert!(r.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("; Secure"));
}

#[tokio::test]
async fn a_wrong_token_gets_no_session() {
    let c = Console::new(false);
    let r = c.post_signin("nope").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .all(|v| !v.to_str().unwrap().starts_with("ibs_session=")),
        "no session cookie"
    );
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
