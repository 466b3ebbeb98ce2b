//! Every 400 case of the location and components resources through the API handlers (without a
//! socket): each bad body is refused with the field it concerns and a specific message.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

mod support;
use base64::Engine as _;
use support::Api;

fn api() -> Api {
    Api::with(vec![])
}

async fn expect_400(a: &Api, body: Value, field: &str, needle: &str) {
    let (s, v) = a.put_location(body.clone()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
    assert_eq!(v["error"]["field"], json!(field), "{body}: {v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains(needle), "{body}: {msg}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_field_specific_400s() {
    let a = api();
    expect_400(
        &a,
        json!({"path": "\\\\host.contoso.com"}),
        "path",
        "malformed UNC path",
    )
    .await;
    expect_400(
        &a,
        json!({"path": "\\\\\\share"}),
        "path",
        "malformed UNC path",
    )
    .await;
    expect_400(
        &a,
        json!({"path": "\\\\fileserver\\backup"}),
        "path",
        "single-label host",
    )
    .await;
    expect_400(
        &a,
        json!({"frequency_hours": 0}),
        "frequency_hours",
        "out of range",
    )
    .await;
    expect_400(
        &a,
        json!({"frequency_hours": 25}),
        "frequency_hours",
        "1–24",
    )
    .await;
    expect_400(
        &a,
        json!({"retention_days": 0}),
        "retention_days",
        "out of range",
    )
    .await;
    expect_400(&a, json!({"retention_days": 91}), "retention_days", "1–90").await;
    expect_400(
        &a,
        json!({"username": "CONTOSO\\backup"}),
        "password",
        "password is required",
    )
    .await;
    expect_400(
        &a,
        json!({"certificate": "bm90IGEgY2VydA=="}),
        "certificate",
        "certificate",
    )
    .await;
    // A 1024-bit RSA certificate and an EC certificate, made by openssl (as the ibs-keys tests do).
    let dir = tempfile::tempdir().unwrap();
    let make = |name: &str, newkey: &[&str]| -> String {
        let cert = dir.path().join(format!("{name}.pem"));
        let st = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-nodes",
                "-days",
                "30",
                "-subj",
                &format!("/CN={name}"),
            ])
            .args(newkey)
            .arg("-keyout")
            .arg(dir.path().join(format!("{name}.key")))
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl");
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(cert).unwrap())
    };
    expect_400(
        &a,
        json!({"certificate": make("short", &["-newkey", "rsa:1024"])}),
        "certificate",
        "at least 2048 bits",
    )
    .await;
    expect_400(&a, json!({"certificate": make("ec", &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])}), "certificate", "only RSA").await;
    // Malformed JSON and unknown fields.
    let (s, v) = a
        .call_text(
            Method::PUT,
            "/api/v1/location",
            Some(&a.admin),
            Some("{\"path\": "),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("malformed JSON"),
        "{v}"
    );
    let (s, _) = a
        .call_text(
            Method::PUT,
            "/api/v1/location",
            Some(&a.admin),
            Some(r#"{"colour":"red"}"#),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Unknown component kind.
    let (s, v) = a
        .call_text(
            Method::PUT,
            "/api/v1/components",
            Some(&a.admin),
            Some(r#"[{"name":"db","kind":"oracle"}]"#),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["field"], json!("component[0].kind"));
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("unknown component kind"));
    // Nothing was stored by any of them.
    let (_, loc) = a
        .call_text(Method::GET, "/api/v1/location", Some(&a.reader), None)
        .await;
    assert_eq!(loc["frequency_hours"], json!(12));
    assert!(loc["path"].is_null());
}
