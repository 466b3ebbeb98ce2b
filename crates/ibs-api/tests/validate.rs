//! `POST /api/v1/backups/{id}/validate` and the report endpoints, through `oneshot`, on a real
//! repository (the controller's own backup into memory storage, encrypted for a real 2048-bit
//! certificate) with its real .pfx. The `files` component's folder is the realistic tree of
//! `ibs_testing` (symlinks of every sort, hard links, a sparse file, a FIFO, a socket, odd names,
//! xattrs), whose entry counts the validation must find. The happy path (PASS, both reports, the
//! scratch area gone, no secret in the job record, the reports or the audit log), then each failure
//! with its specific answer: wrong password (400 pfx_password), not a .pfx (400 pfx), oversized .pfx
//! (413), unknown backup (404), a .pfx of another certificate (job Failed naming both thumbprints),
//! maintenance and a running job (409), and a damaged pack (job Failed, report verdict FAIL).

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use ibs_controller::testing::{self};
use serde_json::{json, Value};
use std::time::Duration;

mod support;
use support::{Api, Call, T0};

const PFX_PASSWORD: &str = "Validate-Pfx-Pa55-7a1c";

/// The API over a controller with a backup of a realistic `docs` source.
struct Fixture {
    api: Api,
    _src: tempfile::TempDir,
    /// The entry counts of the `docs` source, as the catalog must record them.
    want: ibs_testing::Counts,
}

impl std::ops::Deref for Fixture {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn pfx_b64() -> String {
    b64(&testing::identity().to_pfx(PFX_PASSWORD).unwrap())
}

/// A controller with one `files` component, a location encrypted for the test certificate, and
/// one successful backup. Returns the API and the backup's job id.
async fn with_backup(
    components: Vec<ibs_controller::component::ComponentConfig>,
) -> (Fixture, String) {
    let t = testing::controller(T0, vec![]);
    let src = tempfile::tempdir().unwrap();
    ibs_testing::realistic_tree(src.path());
    std::fs::write(src.path().join("a.txt"), b"validate me").unwrap();
    std::fs::create_dir(src.path().join("sub")).unwrap();
    std::fs::write(src.path().join("sub/b.bin"), vec![7u8; 300_000]).unwrap();
    let want = ibs_testing::counts(&ibs_testing::snapshot(src.path()));
    let mut cs = vec![testing::files("docs", &[src.path()])];
    cs.extend(components);
    t.ctl.set_components(cs, "t").unwrap();
    let a = Fixture {
        api: Api::new(t),
        _src: src,
        want,
    };
    let cert = b64(testing::identity().certificate().der());
    let (s, v) = a
        .call(
            Method::PUT,
            "/api/v1/location",
            &a.admin,
            Some(json!({"path": "/mem/share", "certificate": cert})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (job, handle) = a.t.ctl.start_backup().unwrap();
    handle.await.unwrap();
    let b = a.t.ctl.backup(&job.id).unwrap();
    assert_eq!(b.status.as_str(), "Succeeded", "{b:?}");
    (a, job.id)
}

impl Api {
    async fn raw(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Vec<u8>, String) {
        let c = Call::new(method, path, Some(token));
        match body {
            Some(v) => self.send_raw(c.json(v.to_string())).await,
            None => self.send_raw(c).await,
        }
    }

    /// `GET path` as a reader.
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, &self.reader, None).await
    }

    async fn validate(&self, backup: &str, pfx: &str, password: &str) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            &format!("/api/v1/backups/{backup}/validate"),
            &self.admin,
            Some(json!({"pfx": pfx, "pfx_password": password})),
        )
        .await
    }

    /// Starts a validation (202) and waits for its job to end; returns the final job record.
    async fn validate_to_end(&self, backup: &str, pfx: &str) -> Value {
        let (s, job) = self.validate(backup, pfx, PFX_PASSWORD).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{job}");
        assert_eq!(job["kind"], "validate");
        assert_eq!(job["status"], "Running");
        assert!(
            self.t.ctl.wait_idle(Duration::from_secs(120)).await,
            "the validation ended"
        );
        let id = job["id"].as_str().unwrap();
        let (s, job) = self.get(&format!("/api/v1/jobs/{id}")).await;
        assert_eq!(s, StatusCode::OK);
        job
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn validation_passes_and_serves_both_reports_without_secrets() {
    let (a, backup) = with_backup(vec![]).await;
    // Only admins validate.
    let body = Some(json!({"pfx": pfx_b64(), "pfx_password": PFX_PASSWORD}));
    let path = format!("/api/v1/backups/{backup}/validate");
    assert_eq!(
        a.call(Method::POST, &path, &a.operator, body.clone())
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        a.call(Method::POST, &path, &a.reader, body).await.0,
        StatusCode::FORBIDDEN
    );

    let job = a.validate_to_end(&backup, &pfx_b64()).await;
    assert_eq!(job["status"], "Succeeded", "{job:#}");
    assert_eq!(job["source_job"], backup.as_str());
    assert_eq!(job["error"], Value::Null, "{job:#}");
    // What it read back: at least the tree's largest file (300,000 bytes) and the note.
    let read = job["bytes_read"].as_u64().unwrap_or(0);
    assert!(read >= 300_011, "bytes_read {read}: {job:#}");
    let comps = job["components"].as_array().unwrap();
    assert_eq!(comps.len(), 1, "{job:#}");
    assert_eq!(comps[0]["name"], "docs");
    assert_eq!(comps[0]["status"], "Succeeded");
    let id = job["id"].as_str().unwrap().to_string();

    // The JSON report: verdict PASS, every chunk decrypted, the component restored and counted.
    let (s, bytes, ctype) = a
        .raw(
            Method::GET,
            &format!("/api/v1/jobs/{id}/report"),
            &a.reader,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(ctype.starts_with("application/json"), "{ctype}");
    let report: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(report["verdict"], "PASS", "{report:#}");
    assert_eq!(report["backup_id"], job["backup_id"]);
    assert_eq!(report["repository"]["status"], "PASS", "{report:#}");
    assert_eq!(
        report["validated_at_unix"], T0,
        "time from the injected clock"
    );
    let c = &report["components"][0];
    assert_eq!(
        (c["name"].as_str(), c["status"].as_str()),
        (Some("docs"), Some("PASS")),
        "{report:#}"
    );
    let figures = format!("{} files, {} folders", a.want.files, a.want.dirs);
    assert!(
        c["checks"][0]["figures"]
            .as_str()
            .unwrap()
            .contains(&figures),
        "{figures}: {report:#}"
    );

    // The HTML report: one self-contained page.
    let (s, html, ctype) = a
        .raw(
            Method::GET,
            &format!("/api/v1/jobs/{id}/report.html"),
            &a.reader,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(ctype.starts_with("text/html"), "{ctype}");
    let html = String::from_utf8(html).unwrap();
    assert!(
        html.contains("PASS") && html.contains("docs") && !html.contains("<script"),
        "{html}"
    );

    // Reports of other jobs: 404 with a reason.
    let (s, v) = a.get(&format!("/api/v1/jobs/{backup}/report")).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("only validation jobs"),
        "{v}"
    );
    assert_eq!(
        a.get("/api/v1/jobs/nope/report.html").await.0,
        StatusCode::NOT_FOUND
    );

    // The scratch area is gone; the .pfx and its password are nowhere: not in the job records,
    // the reports, the audit log, or any file under the data directory.
    let data = a.t.dir.path();
    assert!(!data.join("tmp").join(&id).exists(), "scratch removed");
    let pfx = testing::identity().to_pfx(PFX_PASSWORD).unwrap();
    let secrets: Vec<Vec<u8>> = vec![
        PFX_PASSWORD.as_bytes().to_vec(),
        pfx_b64().into_bytes(),
        b64(PFX_PASSWORD.as_bytes()).into_bytes(),
        hex::encode(PFX_PASSWORD).into_bytes(),
        pfx[..64].to_vec(),
    ];
    let (_, jobs) = a.get("/api/v1/jobs").await;
    let (_, audit) = a.call(Method::GET, "/api/v1/audit", &a.admin, None).await;
    assert!(audit.to_string().contains("backup.validate"), "{audit}");
    let mut places: Vec<(String, Vec<u8>)> = vec![
        ("jobs".into(), jobs.to_string().into_bytes()),
        ("audit".into(), audit.to_string().into_bytes()),
        ("report".into(), bytes.clone()),
        ("report.html".into(), html.clone().into_bytes()),
    ];
    for f in walk(data) {
        places.push((f.display().to_string(), std::fs::read(&f).unwrap()));
    }
    assert!(
        places.len() > 6,
        "the data directory holds the state database and the reports"
    );
    for (what, hay) in &places {
        for s in &secrets {
            assert!(
                !hay.windows(s.len()).any(|w| w == s.as_slice()),
                "a secret in {what}"
            );
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn each_failure_has_its_specific_answer() {
    let flag = tempfile::tempdir().unwrap();
    let go = flag.path().join("go");
    let (a, backup) = with_backup(vec![]).await;

    // Before any job: wrong password, not a .pfx, not base64, too large, unknown backup.
    let (s, v) = a.validate(&backup, &pfx_b64(), "wrong password").await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("pfx_password")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("password is wrong"),
        "{v}"
    );
    let (s, v) = a
        .validate(&backup, &b64(b"not a pfx at all"), PFX_PASSWORD)
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("pfx")),
        "{v}"
    );
    let (s, v) = a.validate(&backup, "***", PFX_PASSWORD).await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("pfx")),
        "{v}"
    );
    let big = b64(&vec![
        0u8;
        ibs_controller::jobs::validate::MAX_PFX_BYTES + 1
    ]);
    let (s, v) = a.validate(&backup, &big, PFX_PASSWORD).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("too-large")),
        "{v}"
    );
    let (s, v) = a
        .validate("20990101T000000Z-dead", &pfx_b64(), PFX_PASSWORD)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (_, jobs) = a.get("/api/v1/jobs").await;
    assert_eq!(
        jobs.as_array().unwrap().len(),
        1,
        "no job for refused requests: {jobs}"
    );

    // A .pfx of another certificate: the job fails naming the certificate needed and the one given.
    let other = ibs_keys::generate_self_signed("ibs other", 2048, 3650, 1_799_000_000).unwrap();
    let job = a
        .validate_to_end(&backup, &b64(&other.to_pfx(PFX_PASSWORD).unwrap()))
        .await;
    assert_eq!(job["status"], "Failed", "{job:#}");
    let err = job["error"].as_str().unwrap();
    assert!(
        err.contains(testing::identity().certificate().thumbprint())
            && err.contains(other.certificate().thumbprint()),
        "{err}"
    );
    let id = job["id"].as_str().unwrap();
    let (s, v) = a.get(&format!("/api/v1/jobs/{id}/report")).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ended before a report"),
        "{v}"
    );

    // Maintenance: 409 with its reason.
    let (s, _) = a
        .call(
            Method::POST,
            "/api/v1/maintenance",
            &a.operator,
            Some(json!({"operation": "update"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = a.validate(&backup, &pfx_b64(), PFX_PASSWORD).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("maintenance: update in progress"),
        "{v}"
    );
    let (s, _) = a
        .call(
            Method::POST,
            "/api/v1/maintenance/end",
            &a.operator,
            Some(json!({"outcome": "succeeded"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    // A running backup (held until `go` exists): 409 naming it.
    a.t.ctl
        .set_components(
            vec![testing::command(
                "held",
                &format!(
                    "while [ ! -e {} ]; do sleep 0.05; done; echo x",
                    go.display()
                ),
                None,
                false,
            )],
            "t",
        )
        .unwrap();
    let (running, handle) = a.t.ctl.start_backup().unwrap();
    let (s, v) = a.validate(&backup, &pfx_b64(), PFX_PASSWORD).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&running.id),
        "{v}"
    );
    std::fs::write(&go, b"").unwrap();
    handle.await.unwrap();

    // A damaged pack: the job fails, and the report says which check failed.
    let storage = a.t.opener.storage("/mem/share").unwrap();
    let packs = storage.list("packs/").await.unwrap();
    assert!(!packs.is_empty());
    for p in &packs {
        let mut bytes = storage.get(&p.key).await.unwrap().to_vec();
        let i = bytes.len() / 2;
        bytes[i] ^= 0x55;
        storage.put(&p.key, bytes.into()).await.unwrap();
    }
    let job = a.validate_to_end(&backup, &pfx_b64()).await;
    assert_eq!(job["status"], "Failed", "{job:#}");
    assert!(
        job["error"].as_str().unwrap().starts_with("verdict FAIL"),
        "{job:#}"
    );
    let id = job["id"].as_str().unwrap();
    let (s, report) = a.get(&format!("/api/v1/jobs/{id}/report")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(report["verdict"], "FAIL", "{report:#}");
    assert_eq!(report["repository"]["status"], "FAIL", "{report:#}");
    assert!(
        a.t.dir
            .path()
            .join("tmp")
            .read_dir()
            .unwrap()
            .next()
            .is_none(),
        "scratch removed after a failure too"
    );
}
