//! Helpers of the controller's S3 tests (`s3_maintenance`, `s3_tamper`) on the real Ceph RADOS
//! Gateway: a controller on an S3 location with the writer key, its jobs, the bucket's versions
//! as the bucket owner sees them, the tamper alert, and exact restores with the .pfx.

#![allow(dead_code)]

use base64::Engine as _;
use ibs_controller::alerts::{Alert, AlertKind};
use ibs_controller::model::{Job, JobStatus};
use ibs_controller::paging::PageRequest;
use ibs_controller::settings::LocationUpdate;
use ibs_controller::storage::LocationOpener;
use ibs_controller::testing::{self, files, TestController};
use ibs_controller::RestoreRequest;
use ibs_testing::rgw::{self, Gateway};
use ibs_types::SecretText;
use std::path::Path;
use std::sync::Arc;

pub const DAY: i64 = 86_400;

pub fn real_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// One object version: key, version id, delete marker.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub key: String,
    pub id: String,
    pub marker: bool,
}

/// Every version and delete marker in the bucket, as the bucket owner sees them.
pub async fn versions(gw: &Gateway, bucket: &str) -> Vec<Version> {
    let out = rgw::client(gw, &gw.maintenance)
        .list_object_versions()
        .bucket(bucket)
        .send()
        .await
        .expect("list versions");
    assert_ne!(out.is_truncated(), Some(true), "test buckets are small");
    let mut v: Vec<Version> = out
        .versions()
        .iter()
        .map(|v| Version {
            key: v.key().unwrap().to_owned(),
            id: v.version_id().unwrap().to_owned(),
            marker: false,
        })
        .chain(out.delete_markers().iter().map(|m| Version {
            key: m.key().unwrap().to_owned(),
            id: m.version_id().unwrap().to_owned(),
            marker: true,
        }))
        .collect();
    v.sort();
    v
}

/// What ibs keeps in the bucket: not repository locks, not accessibility probes.
pub fn repository_objects(v: &[Version]) -> Vec<Version> {
    v.iter()
        .filter(|v| !v.key.contains("/locks/") && !v.key.contains("ibs-probe-"))
        .cloned()
        .collect()
}

pub fn write_data(dir: &Path, seed: u8) {
    std::fs::write(dir.join("a.txt"), [seed; 1000]).unwrap();
    std::fs::write(
        dir.join("b.bin"),
        (0..400_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
}

pub async fn controller(
    gw: &Gateway,
    loc: &str,
    src: &Path,
    now: i64,
    retention_days: i64,
) -> TestController {
    let t = testing::controller_opening(
        now,
        vec![files("data", &[src])],
        Arc::new(LocationOpener::default()),
    );
    t.ctl
        .update_location(
            LocationUpdate {
                path: Some(loc.to_owned()),
                username: Some(gw.writer.access_key.clone()),
                password: Some(SecretText::from(gw.writer.secret_key.as_str())),
                certificate: Some(
                    base64::engine::general_purpose::STANDARD
                        .encode(testing::identity().certificate().der()),
                ),
                retention_days: Some(retention_days),
                verify_sample_percent: Some(100),
                ..Default::default()
            },
            "test",
        )
        .await
        .expect("configure the S3 location with the writer key");
    t
}

pub async fn backup(t: &TestController) -> Job {
    let (j, h) = t.ctl.start_backup().expect("start backup");
    h.await.unwrap();
    let j = t.ctl.job(&j.id).unwrap();
    assert_eq!(j.status, JobStatus::Succeeded, "{j:?}");
    j
}

pub async fn verify(t: &TestController) -> Job {
    let (j, h) = t.ctl.start_verification().expect("start verification");
    h.await.unwrap();
    let j = t.ctl.job(&j.id).unwrap();
    assert_eq!(j.status, JobStatus::Succeeded, "{j:?}");
    j
}

/// Runs the retention cleanup now; returns the operation's detail.
pub async fn retention(t: &TestController) -> String {
    t.ctl.start_retention().unwrap().await.unwrap();
    let ops = t
        .ctl
        .operations_page(Default::default(), &PageRequest::first(50))
        .unwrap();
    let op = ops
        .items
        .iter()
        .find(|o| o.kind == ibs_types::OperationKind::RetentionCleanup)
        .expect("the cleanup is recorded");
    assert_eq!(op.status, JobStatus::Succeeded, "{op:?}");
    op.detail.clone().unwrap_or_default()
}

pub fn tamper_alert(t: &TestController) -> Option<Alert> {
    t.ctl
        .alerts()
        .list(true)
        .unwrap()
        .into_iter()
        .find(|a| a.kind == AlertKind::RepositoryTampered.as_str())
}

pub async fn restores_exactly(t: &TestController, backup: &Job, want: &ibs_testing::Snapshot) {
    let out = tempfile::tempdir().unwrap();
    let req = RestoreRequest {
        component: Some("data".into()),
        target: out.path().join("r"),
        force: false,
        pfx: testing::identity().to_pfx("pw").unwrap(),
        pfx_password: "pw".into(),
        more_keys: Vec::new(),
        allow_newer: false,
    };
    let (r, h) = t.ctl.start_restore(&backup.id, req, "test").await.unwrap();
    h.await.unwrap();
    let r = t.ctl.job(&r.id).unwrap();
    assert_eq!(r.status, JobStatus::Succeeded, "{r:?}");
    ibs_testing::assert_restored(want, &out.path().join("r"), &backup.id);
}

/// Stores the maintenance credential in the controller's location settings.
pub async fn store_maintenance(t: &TestController, gw: &Gateway) {
    t.ctl
        .update_location(
            LocationUpdate {
                maintenance_username: Some(gw.maintenance.access_key.clone()),
                maintenance_password: Some(SecretText::from(gw.maintenance.secret_key.as_str())),
                ..Default::default()
            },
            "test",
        )
        .await
        .expect("store the maintenance credential");
}

/// The bytes of the current version of `key`, read with `keys`.
pub async fn object_bytes(gw: &Gateway, keys: &rgw::Keys, bucket: &str, key: &str) -> Vec<u8> {
    rgw::client(gw, keys)
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e:?}"))
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes()
        .to_vec()
}

/// `k` relative to the repository root `r/MASBackup/` (how alerts name objects).
pub fn rel(k: &str) -> String {
    k.trim_start_matches("r/MASBackup/").to_owned()
}

/// Two backups (data seeds 1 and 2) by a controller with the writer key on a new append-only
/// object-lock bucket named after `name`, at `r?{query}`, verified with no tamper alert.
pub struct TwoBackups {
    pub bucket: String,
    /// The source folder; it lives as long as the controller backs it up.
    pub src: tempfile::TempDir,
    pub t: TestController,
    pub a: Job,
    pub want_a: ibs_testing::Snapshot,
    pub b: Job,
    pub want_b: ibs_testing::Snapshot,
}

pub async fn two_verified_backups(gw: &Gateway, name: &str, query: &str) -> TwoBackups {
    let bucket = rgw::append_only_bucket(name).await;
    let loc = format!("s3+http://{}/{bucket}/r?{query}", gw.host_port());
    let src = tempfile::tempdir().unwrap();
    write_data(src.path(), 1);
    let want_a = ibs_testing::snapshot(src.path());
    let t = controller(gw, &loc, src.path(), real_now(), 7).await;
    let a = backup(&t).await;
    t.clock.set(real_now());
    write_data(src.path(), 2);
    let want_b = ibs_testing::snapshot(src.path());
    let b = backup(&t).await;
    verify(&t).await;
    assert!(tamper_alert(&t).is_none(), "{:?}", tamper_alert(&t));
    TwoBackups {
        bucket,
        src,
        t,
        a,
        want_a,
        b,
        want_b,
    }
}
