//! `POST /api/v1/jobs/{id}/cancel` for the jobs that are not backups, through the router over a
//! real controller whose repository sits behind a slow storage (each operation delayed, as a
//! distant share would be):
//!
//! - a restore is stopped part-way: the job ends `Canceled` within seconds naming who canceled and
//!   what the target holds; fewer files than the backup's are restored, each one whole and
//!   byte-identical, and no temporary file is left; the next restore (storage fast again) completes;
//! - a verification is stopped: `Canceled`, no verdict recorded, and the next one completes;
//! - a validation is stopped: `Canceled`, no report, its scratch folder gone.

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use ibs_controller::testing;
use ibs_storage::faulty::FaultyStorage;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

mod support;
use support::{wait_until, Api};

const PFX_PASSWORD: &str = "Cancel-Jobs-Pfx-51c2";
const FILES: usize = 200;

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Distinct, incompressible bytes for file `i` (xorshift; no two files share a chunk).
fn content(i: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1).wrapping_mul(0x1000_0000_01B3);
    (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A controller with one `docs` component of [`FILES`] files, backed up once into a storage whose
/// latency the test controls. Returns the API, the slow storage, the source folder and the backup.
async fn fixture() -> (Api, Arc<FaultyStorage>, tempfile::TempDir, String) {
    let src = tempfile::tempdir().unwrap();
    for i in 0..FILES {
        std::fs::write(src.path().join(format!("f{i:03}.bin")), content(i)).unwrap();
    }
    let a = Api::with(vec![testing::files("docs", &[src.path()])]);
    let slow = Arc::new(FaultyStorage::new(Arc::new(
        ibs_storage::memory::MemoryStorage::new(),
    )));
    a.t.opener.insert("/mem/slow", slow.clone());
    a.use_location("/mem/slow").await;
    let (job, handle) = a.t.ctl.start_backup().unwrap();
    handle.await.unwrap();
    let b = a.t.ctl.backup(&job.id).unwrap();
    assert_eq!(b.status.as_str(), "Succeeded", "{b:?}");
    (a, slow, src, job.id)
}

fn names(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

async fn restore(a: &Api, backup: &str, target: &Path) -> (StatusCode, Value) {
    let pfx = b64(&testing::identity().to_pfx(PFX_PASSWORD).unwrap());
    a.call(
        Method::POST,
        &format!("/api/v1/backups/{backup}/restore"),
        &a.admin,
        Some(json!({
            "component": "docs",
            "target": target,
            "pfx": pfx,
            "pfx_password": PFX_PASSWORD,
        })),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_canceled_midway_leaves_only_whole_files_and_the_next_one_completes() {
    let (a, slow, src, backup) = fixture().await;
    let target = tempfile::tempdir().unwrap();
    slow.set_latency(Some(Duration::from_millis(250)));
    let (s, started) = restore(&a, &backup, target.path()).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    assert_eq!(started["kind"], "restore");
    let done = |d: &Path| names(d).into_iter().filter(|n| n.ends_with(".bin")).count();
    wait_until("the first file to be restored", || done(target.path()) > 0).await;

    let (j, took) = a.cancel_and_wait(&id).await;
    assert_eq!(j["status"], "Canceled", "{j}");
    let error = j["error"].as_str().unwrap();
    assert!(error.starts_with("canceled by "), "{j}");
    assert!(error.contains("remain in the target"), "{j}");
    assert!(j.get("alert_class").is_none_or(Value::is_null), "{j}");
    assert!(took < Duration::from_secs(10), "stopped in {took:?}");
    assert_eq!(j["components"][0]["status"], "Canceled", "{j}");

    // What is there is whole; nothing half-written is left under any name.
    let left = names(target.path());
    let restored: Vec<&String> = left.iter().filter(|n| n.ends_with(".bin")).collect();
    assert!(
        !restored.is_empty() && restored.len() < FILES,
        "{} of {FILES} restored",
        restored.len()
    );
    assert_eq!(restored.len(), left.len(), "only restored files: {left:?}");
    for n in restored {
        let i: usize = n[1..4].parse().unwrap();
        assert_eq!(
            std::fs::read(target.path().join(n)).unwrap(),
            content(i),
            "{n}"
        );
    }
    let (_, audit) = a.call(Method::GET, "/api/v1/audit", &a.admin, None).await;
    assert!(
        audit.to_string().contains("job.cancel"),
        "the audit trail records the cancel: {audit}"
    );

    // The storage is fast again: a fresh restore completes, identical to the source.
    slow.set_latency(None);
    let again = tempfile::tempdir().unwrap();
    let (s, started) = restore(&a, &backup, again.path()).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{started}");
    assert!(a.t.ctl.wait_idle(Duration::from_secs(60)).await);
    let j = a.job(started["id"].as_str().unwrap()).await;
    assert_eq!(j["status"], "Succeeded", "{j}");
    assert_eq!(
        ibs_testing::snapshot(again.path()),
        ibs_testing::snapshot(src.path())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canceled_verification_records_nothing_and_the_next_one_completes() {
    let (a, slow, _src, _backup) = fixture().await;
    slow.set_latency(Some(Duration::from_millis(1500)));
    let (s, started) = a
        .call(Method::POST, "/api/v1/verification", &a.operator, None)
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    let (j, _) = a.cancel_and_wait(&id).await;
    assert_eq!(j["status"], "Canceled", "{j}");
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .contains("no verdicts were recorded"),
        "{j}"
    );
    let (_, packs) = a
        .call(Method::GET, "/api/v1/verification/packs", &a.reader, None)
        .await;
    assert_eq!(packs, json!([]), "no verdict recorded");

    slow.set_latency(None);
    let (s, started) = a
        .call(Method::POST, "/api/v1/verification", &a.operator, None)
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{started}");
    assert!(a.t.ctl.wait_idle(Duration::from_secs(60)).await);
    let j = a.job(started["id"].as_str().unwrap()).await;
    assert_eq!(j["status"], "Succeeded", "{j}");
    let (_, packs) = a
        .call(Method::GET, "/api/v1/verification/packs", &a.reader, None)
        .await;
    assert_ne!(packs, json!([]), "the next verification records verdicts");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canceled_validation_writes_no_report_and_leaves_no_scratch() {
    let (a, slow, _src, backup) = fixture().await;
    slow.set_latency(Some(Duration::from_millis(250)));
    let pfx = b64(&testing::identity().to_pfx(PFX_PASSWORD).unwrap());
    let (s, started) = a
        .call(
            Method::POST,
            &format!("/api/v1/backups/{backup}/validate"),
            &a.admin,
            Some(json!({"pfx": pfx, "pfx_password": PFX_PASSWORD})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    // Wait until it is restoring into its scratch folder.
    let scratch = a.t.dir.path().join("tmp").join(&id);
    wait_until("the validation to restore into its scratch folder", || {
        walk_files(&scratch) > 0
    })
    .await;
    let (j, took) = a.cancel_and_wait(&id).await;
    assert_eq!(j["status"], "Canceled", "{j}");
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .contains("no report was written"),
        "{j}"
    );
    assert!(took < Duration::from_secs(10), "stopped in {took:?}");
    assert!(!scratch.exists(), "the scratch folder is removed");
    let (s, _) = a
        .call(
            Method::GET,
            &format!("/api/v1/jobs/{id}/report"),
            &a.reader,
            None,
        )
        .await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "no report for a canceled validation"
    );
}

/// Regular files anywhere below `dir`.
fn walk_files(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => walk_files(&e.path()),
            Ok(t) if t.is_file() => 1,
            _ => 0,
        })
        .sum()
}
