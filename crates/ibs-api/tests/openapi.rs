//! The generated OpenAPI document: it passes the third-party `openapi-spec-validator` (PyPI,
//! installed by `scripts/ensure-deps.sh`), lists exactly the operations the router serves, gives
//! every operation a response schema, declares every path parameter, and each operation's
//! `x-ibs-role` is the role the handler enforces.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use ibs_controller::model::Role;
use ibs_controller::testing;
use serde_json::Value;
use std::collections::BTreeSet;
use tower::ServiceExt;

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

fn document() -> Value {
    serde_json::to_value(ibs_api::openapi::build()).unwrap()
}

/// Every (method, path) of the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in METHODS {
            if item.get(m).is_some() {
                out.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in METHODS {
            if let Some(op) = item.get(m) {
                out.push((m.to_string(), path.clone(), op.clone()));
            }
        }
    }
    out
}

#[test]
fn document_passes_openapi_spec_validator() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&document()).unwrap()).unwrap();
    let out = std::process::Command::new("openapi-spec-validator")
        .arg(&file)
        .output()
        .expect("openapi-spec-validator is required (scripts/ensure-deps.sh installs it with pip)");
    assert!(
        out.status.success(),
        "openapi-spec-validator rejected the document:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn document_lists_exactly_the_routed_operations() {
    let routed: BTreeSet<(String, String)> = ibs_api::routed_operations()
        .into_iter()
        .map(|(m, p)| (m.as_str().to_string(), p.to_string()))
        .collect();
    assert_eq!(
        routed.len(),
        ibs_api::routed_operations().len(),
        "an operation is routed twice"
    );
    let doc = documented(&document());
    let undocumented: Vec<_> = routed.difference(&doc).collect();
    let unrouted: Vec<_> = doc.difference(&routed).collect();
    assert!(
        undocumented.is_empty(),
        "routed, not documented: {undocumented:?}"
    );
    assert!(unrouted.is_empty(), "documented, not routed: {unrouted:?}");
}

#[test]
fn every_operation_has_a_response_schema() {
    let doc = document();
    for (method, path, op) in operations(&doc) {
        let responses = op["responses"].as_object().unwrap();
        let success: Vec<_> = responses.keys().filter(|k| k.starts_with('2')).collect();
        assert!(!success.is_empty(), "{method} {path}: no success response");
        for (status, r) in responses {
            if status == "204" {
                assert!(
                    r.get("content").is_none(),
                    "{method} {path}: 204 with a body"
                );
                continue;
            }
            let content = r["content"]
                .as_object()
                .unwrap_or_else(|| panic!("{method} {path} {status}: no content"));
            for (media, c) in content {
                assert!(
                    c["schema"].is_object(),
                    "{method} {path} {status} {media}: no schema"
                );
            }
        }
        if path.starts_with("/api/v1/") && path != "/api/v1/openapi.json" {
            for status in ["400", "401", "403"] {
                assert!(
                    responses[status]["content"]["application/json"]["schema"]["$ref"]
                        .as_str()
                        .is_some_and(|r| r.ends_with("/ErrorBody")),
                    "{method} {path}: {status} without the error body"
                );
            }
            assert!(
                op["security"][0]["bearer"].is_array(),
                "{method} {path}: no bearer requirement"
            );
        }
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

#[test]
fn every_path_parameter_is_declared() {
    let doc = document();
    for (method, path, op) in operations(&doc) {
        let declared: BTreeSet<String> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect();
        let in_path: BTreeSet<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(String::from)
            .collect();
        assert_eq!(declared, in_path, "{method} {path}");
    }
}

/// A body the operation's request type accepts (the body is read before the role is checked, so
/// a malformed one would answer 400 whatever the role).
fn valid_body(method: &str, path: &str) -> &'static str {
    match (method, path) {
        ("put", "/api/v1/components") => "[]",
        ("post", "/api/v1/backups/{id}/restore") => {
            r#"{"target": "/nonexistent", "pfx": "", "pfx_password": ""}"#
        }
        ("post", "/api/v1/backups/{id}/validate") => r#"{"pfx": "", "pfx_password": ""}"#,
        ("post", "/api/v1/maintenance") => r#"{"operation": "update"}"#,
        ("delete", "/api/v1/maintenance") | ("post", "/api/v1/maintenance/end") => {
            r#"{"outcome": "succeeded"}"#
        }
        ("post", "/api/v1/tokens") => r#"{"role": "reader"}"#,
        _ => "{}",
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn x_ibs_role_is_the_role_the_handler_enforces() {
    let t = testing::controller(1_800_000_000, vec![]);
    let app = ibs_api::router(ibs_api::AppState::new(t.ctl.clone()));
    let db = t.ctl.db().clone();
    let reader = db.create_token(Role::Reader, "r", 1_800_000_000).unwrap();
    let operator = db.create_token(Role::Operator, "o", 1_800_000_000).unwrap();
    let doc = document();
    let mut checked = 0;
    for (method, path, op) in operations(&doc) {
        let role = match op.get("x-ibs-role").and_then(Value::as_str) {
            Some(r) => r.to_string(),
            None => {
                assert!(
                    op.get("security").is_none(),
                    "{method} {path}: authenticated without x-ibs-role"
                );
                continue;
            }
        };
        // The token just below the documented role is refused; the documented role is not.
        let (below, at) = match role.as_str() {
            "reader" => (None, Some(&reader)),
            "operator" => (Some(&reader), Some(&operator)),
            "admin" => (Some(&operator), None),
            other => panic!("{method} {path}: unknown role {other}"),
        };
        let uri = path.replace("{id}", "1");
        let body = valid_body(&method, &path);
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let status = |token: &String| {
            let req = Request::builder()
                .method(m.clone())
                .uri(&uri)
                .header("Authorization", format!("Bearer {token}"))
                .header("Content-Type", "application/json")
                .body(Body::from(body))
                .unwrap();
            let app = app.clone();
            async move { app.oneshot(req).await.unwrap().status() }
        };
        if let Some(tok) = below {
            assert_eq!(status(tok).await, StatusCode::FORBIDDEN, "{method} {path}");
        }
        if let Some(tok) = at {
            assert_ne!(status(tok).await, StatusCode::FORBIDDEN, "{method} {path}");
        }
        checked += 1;
    }
    assert!(checked >= 29, "only {checked} operations carry a role");
}
