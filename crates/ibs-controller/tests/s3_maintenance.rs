//! The controller on a real Ceph RADOS Gateway bucket with object lock and the operator guide's
//! append-only policy (ADR 0035, ADR 0040):
//! - retention with only the writer key deletes nothing and says why (the operation's detail);
//!   with the maintenance credential stored, the same cleanup really deletes the expired backup's
//!   manifest and data, and neither the API view, the audit trail nor the state database shows
//!   the maintenance secret;
//! - an attacker with the writer key overwrites a pack and an index segment and tries deletes;
//!   the controller's verification raises `repository-tampered` naming what was overwritten,
//!   every backup still restores with the .pfx, and once the bucket owner removed the attacker's
//!   versions a later verification closes the alert.
//!
//! Real time matters here (object locks expire by the gateway's clock), so the controller's
//! manual clock follows the real one, except that the first backup is recorded days back so that
//! retention removes it.

mod s3_support;

use ibs_controller::model::Job;
use ibs_controller::settings::{LocationUpdate, MAINTENANCE_WARNING};
use ibs_testing::rgw::{self, aws_sdk_s3};
use ibs_types::SecretText;
use s3_support::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn retention_deletes_with_the_maintenance_key_and_nothing_with_the_writer_key() {
    let gw = rgw::gateway();
    let bucket = rgw::append_only_bucket("ctl-maint").await;
    const HOLD: u64 = 8;
    let loc = format!(
        "s3+http://{}/{bucket}/r?lock_retention={HOLD}s&lock_margin=0s",
        gw.host_port()
    );
    let src = tempfile::tempdir().unwrap();
    write_data(src.path(), 1);
    // Backup A is recorded three days back: retention (one day) removes it.
    let t = controller(gw, &loc, src.path(), real_now() - 3 * DAY, 1).await;
    let a = backup(&t).await;
    t.clock.set(real_now());
    write_data(src.path(), 2);
    let want_b = ibs_testing::snapshot(src.path());
    let b = backup(&t).await;
    let manifest = |j: &Job| format!("r/MASBackup/backups/{}", j.backup_id.as_ref().unwrap());
    let before = repository_objects(&versions(gw, &bucket).await);
    assert!(before.iter().any(|v| v.key == manifest(&a)), "{before:?}");
    // Every lock of A's objects has expired: only the key's permission stops a delete now.
    tokio::time::sleep(Duration::from_secs(HOLD + 2)).await;
    t.clock.set(real_now());

    // With the writer key only: nothing is deleted, and the operation says why.
    let detail = retention(&t).await;
    assert!(
        detail.contains("maintenance credential") && detail.contains("refused"),
        "{detail}"
    );
    let after = repository_objects(&versions(gw, &bucket).await);
    let gone: Vec<&Version> = before.iter().filter(|v| !after.contains(v)).collect();
    assert!(gone.is_empty(), "the writer key deleted {gone:?}");
    assert!(!after.iter().any(|v| v.marker), "{after:?}");
    assert!(
        tamper_alert(&t).is_none(),
        "a writer key's refusal is no tampering"
    );

    // The maintenance credential: stored sealed, never shown.
    let secret = gw.maintenance.secret_key.clone();
    let view = t
        .ctl
        .update_location(
            LocationUpdate {
                maintenance_username: Some(gw.maintenance.access_key.clone()),
                maintenance_password: Some(SecretText::from(secret.as_str())),
                ..Default::default()
            },
            "test",
        )
        .await
        .expect("store the maintenance credential");
    assert_eq!(
        view.maintenance_username.as_deref(),
        Some(gw.maintenance.access_key.as_str())
    );
    assert!(view.maintenance_password_set);
    assert!(
        view.warnings.iter().any(|w| w == MAINTENANCE_WARNING),
        "{view:?}"
    );
    let shown = serde_json::to_string(&view).unwrap()
        + &serde_json::to_string(&t.ctl.location().unwrap()).unwrap();
    assert!(
        !shown.contains(&secret),
        "the API view shows the secret: {shown}"
    );
    let audit = t.ctl.audit_log(20).unwrap();
    let audit_text = serde_json::to_string(&audit).unwrap();
    assert!(!audit_text.contains(&secret), "{audit_text}");
    assert!(
        audit_text.contains("maintenance_username") && audit_text.contains("maintenance_password"),
        "the audit names the changed fields: {audit_text}"
    );
    let db = std::fs::read(t.dir.path().join("state.sqlite")).unwrap();
    assert!(
        !db.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the state database holds the maintenance secret in clear"
    );

    // The writer-key cleanup wrote a merged index segment (it could not delete the old ones); it
    // is locked like everything ibs writes and names A's pack, which it keeps until it expires.
    tokio::time::sleep(Duration::from_secs(HOLD + 1)).await;
    t.clock.set(real_now());
    // With it, the same cleanup deletes A's manifest and the data only A needed.
    let detail = retention(&t).await;
    assert!(!detail.contains("refused"), "{detail}");
    let now_there = repository_objects(&versions(gw, &bucket).await);
    assert!(
        !now_there.iter().any(|v| v.key == manifest(&a)),
        "A's manifest is gone: {now_there:?}"
    );
    assert!(now_there.iter().any(|v| v.key == manifest(&b)));
    let packs = |v: &[Version]| v.iter().filter(|v| v.key.contains("/packs/")).count();
    assert!(
        packs(&now_there) < packs(&before),
        "A's own packs are deleted: {} -> {}",
        packs(&before),
        packs(&now_there)
    );
    assert!(
        !now_there.iter().any(|v| v.marker),
        "versions are deleted, not hidden"
    );
    assert!(tamper_alert(&t).is_none(), "{:?}", tamper_alert(&t));
    // B is whole: verification (writer key) finds nothing, and B restores with the .pfx.
    let v = verify(&t).await.verification.unwrap();
    assert_eq!(v.damaged_found, 0, "{v:?}");
    assert!(tamper_alert(&t).is_none(), "{:?}", tamper_alert(&t));
    restores_exactly(&t, &b, &want_b).await;

    // Clearing the credential drops it; retention is back on the writer key.
    let view = t
        .ctl
        .update_location(
            LocationUpdate {
                maintenance_clear: true,
                ..Default::default()
            },
            "test",
        )
        .await
        .unwrap();
    assert!(view.maintenance_username.is_none() && !view.maintenance_password_set);
}

#[tokio::test(flavor = "multi_thread")]
async fn tampering_with_the_writer_key_raises_an_alert_and_every_backup_still_restores() {
    let gw = rgw::gateway();
    let TwoBackups {
        bucket,
        src: _src,
        t,
        a,
        want_a,
        b,
        want_b,
    } = two_verified_backups(gw, "ctl-tamper", "lock_retention=1h&lock_margin=0s").await;

    // The attacker holds the writer key: overwrite a pack (truncated) and an index segment, and
    // try to delete a manifest (a delete marker, then its version).
    let all = repository_objects(&versions(gw, &bucket).await);
    let key_of = |part: &str| {
        all.iter()
            .find(|v| v.key.contains(part))
            .unwrap_or_else(|| panic!("no {part} object in {all:?}"))
            .clone()
    };
    let (pack, index) = (key_of("/packs/"), key_of("/index/"));
    let manifest = key_of(&format!("/backups/{}", a.backup_id.as_ref().unwrap()));
    let w = rgw::client(gw, &gw.writer);
    let orig = w
        .get_object()
        .bucket(&bucket)
        .key(&pack.key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    let mut added = Vec::new();
    for (key, body) in [
        (&pack.key, orig.slice(..orig.len() / 2).to_vec()),
        (&index.key, b"overwritten by the attacker".to_vec()),
    ] {
        let out = w
            .put_object()
            .bucket(&bucket)
            .key(key)
            .body(aws_sdk_s3::primitives::ByteStream::from(body))
            .send()
            .await
            .unwrap_or_else(|e| panic!("an overwrite of {key} adds a version: {e:?}"));
        added.push((key.clone(), out.version_id().unwrap().to_owned()));
    }
    let r = w
        .delete_object()
        .bucket(&bucket)
        .key(&manifest.key)
        .send()
        .await;
    assert!(format!("{r:?}").contains("AccessDenied"), "{r:?}");
    let r = w
        .delete_object()
        .bucket(&bucket)
        .key(&manifest.key)
        .version_id(&manifest.id)
        .send()
        .await;
    assert!(format!("{r:?}").contains("AccessDenied"), "{r:?}");

    // The controller's verification sees it and names what was done.
    let v = verify(&t).await.verification.unwrap();
    assert_eq!(
        v.damaged_found, 0,
        "reads take the versions ibs wrote: {v:?}"
    );
    let alert = tamper_alert(&t).expect("the tamper alert is open");
    for k in [&pack.key, &index.key] {
        assert!(alert.details.contains(&rel(k)), "{k} not named: {alert:?}");
    }
    assert!(
        alert.details.contains("2 object(s) overwritten or hidden"),
        "{alert:?}"
    );
    assert_eq!(alert.severity, "Critical");
    // Every backup still restores exactly with the .pfx.
    restores_exactly(&t, &a, &want_a).await;
    restores_exactly(&t, &b, &want_b).await;

    // The bucket owner removes the attacker's (unlocked) versions: a later verification finds no
    // tampering and closes the alert.
    let m = rgw::client(gw, &gw.maintenance);
    for (key, id) in &added {
        m.delete_object()
            .bucket(&bucket)
            .key(key)
            .version_id(id)
            .send()
            .await
            .unwrap_or_else(|e| panic!("the owner deletes the attacker's version of {key}: {e:?}"));
    }
    t.clock.set(real_now());
    verify(&t).await;
    assert!(tamper_alert(&t).is_none(), "{:?}", tamper_alert(&t));
}
