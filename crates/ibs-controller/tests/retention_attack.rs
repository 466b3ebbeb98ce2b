//! Retention against someone who controls the share's answers: a listing that hides the manifests
//! (a lying server or a man in the middle) and a catalog whose times were forged on the share.
//! The controller must act on its own records: prune refuses, nothing is deleted, and no recent
//! backup is forgotten.

use base64::Engine as _;
use ibs_controller::alerts::AlertKind;
use ibs_controller::settings::LocationUpdate;
use ibs_controller::testing::{self, files, TestController};
use ibs_storage::faulty::FaultyStorage;
use ibs_storage::{DynStorage, ObjectKey};
use std::collections::BTreeSet;
use std::sync::Arc;

const T0: i64 = 1_800_000_000;
const DAY: i64 = 86_400;
const SHARE: &str = "/mem/share";

async fn setup(src: &std::path::Path) -> TestController {
    let t = testing::controller(T0, vec![files("sample", &[src])]);
    t.ctl
        .update_location(
            LocationUpdate {
                path: Some(SHARE.into()),
                certificate: Some(
                    base64::engine::general_purpose::STANDARD
                        .encode(testing::identity().certificate().der()),
                ),
                retention_days: Some(7),
                ..Default::default()
            },
            "test",
        )
        .await
        .expect("configure");
    t
}

fn sample(seed: u8) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("a.txt"), [seed; 1000]).unwrap();
    std::fs::write(
        d.path().join("b.bin"),
        (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    d
}

async fn keys(s: &DynStorage, prefix: &str) -> BTreeSet<String> {
    s.list(prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key.as_str().to_owned())
        .collect()
}

async fn backup(t: &TestController) -> String {
    let (j, h) = t.ctl.start_backup().unwrap();
    h.await.unwrap();
    t.ctl.backup(&j.id).unwrap().backup_id.expect("committed")
}

fn retention_alert(t: &TestController) -> Option<String> {
    t.ctl
        .alerts()
        .list(true)
        .unwrap()
        .into_iter()
        .find(|a| a.kind == AlertKind::RetentionFailed.as_str())
        .map(|a| a.details)
}

#[tokio::test(flavor = "multi_thread")]
async fn controller_prune_refuses_when_the_listing_hides_the_manifests() {
    let src = sample(1);
    let t = setup(src.path()).await;
    let id = backup(&t).await;
    let inner = t.opener.storage(SHARE).unwrap();
    let before = (
        keys(&inner, "packs/").await,
        keys(&inner, "keys/data/").await,
    );
    assert!(!before.0.is_empty());

    let faulty = Arc::new(FaultyStorage::new(inner.clone()));
    faulty.hide_prefix("backups/");
    t.opener.insert(SHARE, faulty);
    t.ctl.start_retention().unwrap().await.unwrap();

    let after = (
        keys(&inner, "packs/").await,
        keys(&inner, "keys/data/").await,
    );
    assert_eq!(after, before, "prune deleted data behind a lying listing");
    let alert = retention_alert(&t).expect("the refusal raises the retention alert");
    assert!(alert.contains("refused") && alert.contains(&id), "{alert}");
    assert!(t.ctl.backup(&id).unwrap().deleted_at.is_none());
}

/// Rewrites one field of a manifest's catalog on the share (JSON and length field).
async fn forge(s: &DynStorage, id: &str, field: &str, value: &str) {
    let key = ObjectKey::new(format!("backups/{id}")).unwrap();
    let b = s.get(&key).await.unwrap();
    let len = u32::from_le_bytes(b[8..12].try_into().unwrap()) as usize;
    let mut cat: serde_json::Value = serde_json::from_slice(&b[12..12 + len]).unwrap();
    cat[field] = value.into();
    let cat = serde_json::to_vec(&cat).unwrap();
    let mut out = b[..8].to_vec();
    out.extend_from_slice(&(cat.len() as u32).to_le_bytes());
    out.extend_from_slice(&cat);
    out.extend_from_slice(&b[12 + len..]);
    s.put(&key, out.into()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_old_start_time_on_the_share_does_not_make_retention_forget_a_recent_backup() {
    let src = sample(2);
    let t = setup(src.path()).await;
    let older = backup(&t).await;
    t.clock.advance(DAY);
    let recent = backup(&t).await;
    t.clock.advance(DAY);
    let s = t.opener.storage(SHARE).unwrap();
    // The recent backup now claims to be years old: by the catalogs it would be removed, and the
    // older one would become "the newest successful backup".
    forge(&s, &recent, "started", "2020-01-01T00:00:00Z").await;
    forge(&s, &recent, "finished", "2020-01-01T00:10:00Z").await;
    t.ctl.start_retention().unwrap().await.unwrap();

    let listed = keys(&s, "backups/").await;
    assert!(
        listed.contains(&format!("backups/{recent}")),
        "retention forgot the recent backup by its forged time: {listed:?}"
    );
    assert!(listed.contains(&format!("backups/{older}")), "{listed:?}");
    let job = t
        .ctl
        .backups(10)
        .unwrap()
        .into_iter()
        .find(|j| j.backup_id.as_deref() == Some(recent.as_str()))
        .unwrap();
    assert!(job.deleted_at.is_none());
}
