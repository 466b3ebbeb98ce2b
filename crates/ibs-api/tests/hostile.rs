//! Hostile API input: oversized bodies (413) and headers (431, on a real socket, since hyper
//! enforces the header limit while parsing), wrong content types (415), missing, unknown, expired and
//! wrong-role tokens (401/403), and token guessing: failures are rate-limited per client address
//! (429) while other clients are unaffected.

use axum::http::{Method, StatusCode};
use ibs_api::MAX_BODY_BYTES;
use serde_json::Value;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;
use support::{Api, Call, T0};

fn api() -> Api {
    Api::with(vec![])
}

fn get<'a>(path: &'a str, token: Option<&'a str>) -> Call<'a> {
    let mut c = Call::new(Method::GET, path, token);
    c.body = Some(vec![]);
    c
}

fn json_call<'a>(method: Method, path: &'a str, token: Option<&'a str>, body: &[u8]) -> Call<'a> {
    Call::new(method, path, token).json(body)
}

/// A JSON document of exactly `n` bytes: `{"path":"aaaa…"}`.
fn json_of_len(n: usize) -> Vec<u8> {
    let mut v = br#"{"path":""#.to_vec();
    v.resize(n - 2, b'a');
    v.extend_from_slice(br#""}"#);
    assert_eq!(v.len(), n);
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_bodies_are_413_on_every_json_endpoint() {
    let a = api();
    let big = json_of_len(MAX_BODY_BYTES + 1);
    for (method, path) in [
        (Method::PUT, "/api/v1/location"),
        (Method::PUT, "/api/v1/components"),
        (Method::POST, "/api/v1/maintenance"),
        (Method::POST, "/api/v1/maintenance/end"),
        (Method::POST, "/api/v1/store/prune"),
        (Method::POST, "/api/v1/tokens"),
        (Method::POST, "/api/v1/backups/x/restore"),
        (Method::POST, "/api/v1/backups/x/validate"),
    ] {
        let (s, body) = a
            .send(json_call(method.clone(), path, Some(&a.admin), &big))
            .await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "too-large", "{method} {path}");
    }
    // At the limit the body is read and judged on its content (a path this long is invalid: 400).
    let (s, body) = a
        .send(json_call(
            Method::PUT,
            "/api/v1/location",
            Some(&a.admin),
            &json_of_len(MAX_BODY_BYTES),
        ))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    // The location is unchanged.
    let (s, loc) = a.send(get("/api/v1/location", Some(&a.reader))).await;
    assert_eq!(s, StatusCode::OK);
    assert!(!loc.to_string().contains("aaaaaaaaaaaaaaaa"), "{loc}");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_or_missing_content_type_is_415() {
    let a = api();
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut c = json_call(
            Method::POST,
            "/api/v1/maintenance",
            Some(&a.admin),
            br#"{"operation":"update"}"#,
        );
        c.content_type = ct;
        let (s, body) = a.send(c).await;
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}: {body}");
        assert_eq!(body["error"]["code"], "unsupported-media-type");
    }
    // Nothing was started.
    let (_, m) = a.send(get("/api/v1/maintenance", Some(&a.reader))).await;
    assert_eq!(m, Value::Null);
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_unknown_expired_and_wrong_role_tokens() {
    let a = api();
    let (s, _) = a.send(get("/api/v1/jobs", None)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = a
        .send(json_call(
            Method::PUT,
            "/api/v1/location",
            None,
            br#"{"path":"/x"}"#,
        ))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let mut c = get("/api/v1/jobs", None);
    c.token = Some(""); // "Authorization: Bearer "
    assert_eq!(a.send(c).await.0, StatusCode::UNAUTHORIZED);

    // Expiring tokens: valid before expiry, 401 from then on.
    let (s, created) = a
        .send(json_call(
            Method::POST,
            "/api/v1/tokens",
            Some(&a.admin),
            br#"{"role":"reader","label":"short","expires_in_seconds":60}"#,
        ))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(created["expires_at"], T0 + 60);
    let short = created["token"].as_str().unwrap().to_string();
    assert_eq!(
        a.send(get("/api/v1/jobs", Some(&short))).await.0,
        StatusCode::OK
    );
    a.t.clock.advance(59);
    assert_eq!(
        a.send(get("/api/v1/jobs", Some(&short))).await.0,
        StatusCode::OK
    );
    a.t.clock.advance(1);
    assert_eq!(
        a.send(get("/api/v1/jobs", Some(&short))).await.0,
        StatusCode::UNAUTHORIZED,
        "expired"
    );
    assert_eq!(
        a.send(get("/api/v1/jobs", Some(&a.reader))).await.0,
        StatusCode::OK,
        "tokens without expiry still work"
    );
    let (s, body) = a
        .send(json_call(
            Method::POST,
            "/api/v1/tokens",
            Some(&a.admin),
            br#"{"role":"reader","expires_in_seconds":0}"#,
        ))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "expires_in_seconds");

    // Wrong role: a reader may not write anything.
    for (method, path, body) in [
        (Method::PUT, "/api/v1/location", &br#"{}"#[..]),
        (Method::PUT, "/api/v1/components", b"[]"),
        (Method::POST, "/api/v1/store/prune", b"{}"),
        (Method::POST, "/api/v1/tokens", br#"{"role":"admin"}"#),
        (Method::POST, "/api/v1/alerts/1/close", b""),
        (Method::POST, "/api/v1/backups", b""),
    ] {
        let (s, b) = a
            .send(json_call(method.clone(), path, Some(&a.reader), body))
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{method} {path}: {b}");
    }
    let (s, _) = a.send(get("/api/v1/audit", Some(&a.reader))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread")]
async fn token_guessing_is_rate_limited_per_client() {
    let a = api();
    let guesser: SocketAddr = "10.0.0.66:40000".parse().unwrap();
    let other: SocketAddr = "10.0.0.7:40000".parse().unwrap();
    fn from(addr: SocketAddr, token: Option<&str>) -> Call<'_> {
        let mut c = get("/api/v1/jobs", token);
        c.from = Some(addr);
        c
    }
    for i in 0..ibs_api::auth::MAX_FAILURES {
        let guess = format!("ibs_{i:043}");
        assert_eq!(
            a.send(from(guesser, Some(&guess))).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    // The guesser's further failures are refused with 429.
    let (s, body) = a.send(from(guesser, Some("ibs_another_guess"))).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(
        a.send(from(guesser, None)).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another client is unaffected, including after its own failure.
    assert_eq!(
        a.send(from(other, Some("ibs_nope"))).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(a.send(from(other, Some(&a.reader))).await.0, StatusCode::OK);
    // The block lifts once the window has passed.
    a.t.clock.advance(ibs_api::auth::WINDOW_SECS);
    assert_eq!(
        a.send(from(guesser, Some(&a.reader))).await.0,
        StatusCode::OK
    );
}

/// Attack: from an address shared with the operators (a NAT, a jump host), send bad tokens until the
/// limiter blocks the address. The admin behind the same address must still get in.
#[tokio::test(flavor = "multi_thread")]
async fn a_guesser_on_a_shared_address_cannot_lock_out_a_valid_token() {
    let a = api();
    fn call(token: Option<&str>) -> Call<'_> {
        let mut c = get("/api/v1/jobs", token);
        c.from = Some("10.0.0.66:40000".parse().unwrap());
        c
    }
    for i in 0..ibs_api::auth::MAX_FAILURES * 3 {
        let guess = format!("ibs_{i:043}");
        let s = a.send(call(Some(&guess))).await.0;
        assert!(
            s == StatusCode::UNAUTHORIZED || s == StatusCode::TOO_MANY_REQUESTS,
            "{s}"
        );
    }
    assert_eq!(
        a.send(call(Some("ibs_yet_another"))).await.0,
        StatusCode::TOO_MANY_REQUESTS,
        "the guesser is limited"
    );
    let (s, body) = a.send(call(Some(&a.admin))).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "a valid admin token on the blocked address: {body}"
    );
    let (s, body) = a.send(call(Some(&a.reader))).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "a valid reader token on the blocked address: {body}"
    );
}

/// Serves the API on a loopback port (as `ibs serve` does) and returns its address.
async fn serve(a: &Api) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = a.app.clone();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

/// Sends raw bytes and returns the response's status code, or `None` if the server closed the
/// connection without one.
async fn raw(addr: SocketAddr, request: &[u8]) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before it has read everything; a failed write is fine.
    let _ = s.write_all(request).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_headers_on_a_real_socket_are_431() {
    let a = api();
    let addr = serve(&a).await;
    let ok = format!(
        "GET /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        a.reader
    );
    assert_eq!(raw(addr, ok.as_bytes()).await, Some(200));
    // One huge header (1 MiB), past hyper's ~400 KiB read buffer.
    let huge = format!(
        "GET /api/v1/jobs HTTP/1.1\r\nHost: x\r\nX-Junk: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(1 << 20)
    );
    assert_eq!(raw(addr, huge.as_bytes()).await, Some(431));
    // Too many headers (hyper's limit is 100).
    let mut many = String::from("GET /api/v1/jobs HTTP/1.1\r\nHost: x\r\n");
    for i in 0..200 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("Connection: close\r\n\r\n");
    assert_eq!(raw(addr, many.as_bytes()).await, Some(431));
    // An oversized body on the socket, declared and chunked.
    let body = json_of_len(MAX_BODY_BYTES + 10);
    let mut declared = format!(
        "PUT /api/v1/location HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        a.admin,
        body.len()
    )
    .into_bytes();
    declared.extend_from_slice(&body);
    assert_eq!(raw(addr, &declared).await, Some(413));
    let mut chunked = format!(
        "PUT /api/v1/location HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        a.admin
    )
    .into_bytes();
    for part in body.chunks(64 << 10) {
        chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(raw(addr, &chunked).await, Some(413));
    // The server is still healthy.
    assert_eq!(raw(addr, ok.as_bytes()).await, Some(200));
}
