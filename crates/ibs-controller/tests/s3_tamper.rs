//! Tampering with what ibs locked, on a real Ceph RADOS Gateway bucket with object lock and the
//! operator guide's append-only policy (ADR 0040). The attacker here holds more than the writer
//! key: the bucket owner's credentials, with GOVERNANCE bypass rights.
//! - A pack re-locked shorter (bypass) and a pack stripped of its lock (its locked version deleted
//!   with bypass and the same bytes put back unlocked): the verification raises
//!   `repository-tampered`, names the shortened pack with both dates and the unlocked one, and
//!   every backup still restores with the .pfx.
//! - A bucket policy that refuses the maintenance credential the delete of an expired backup's
//!   manifest: retention with the maintenance credential raises the alert naming it, and the
//!   retained backup still restores.
//! - An object under `plans/` put and locked with the writer key that does not open under the
//!   metadata key (ADR 0044): backups still succeed, the verification raises the alert naming it.

mod s3_support;

use ibs_testing::rgw::{self, aws_sdk_s3};
use s3_support::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn a_pack_relocked_shorter_or_stripped_of_its_lock_raises_the_alert() {
    let gw = rgw::gateway();
    let TwoBackups {
        bucket,
        src: _src,
        t,
        a,
        want_a,
        b,
        want_b,
    } = two_verified_backups(
        gw,
        "ctl-relock",
        "lock_retention=1h&lock_margin=0s&lock_mode=governance",
    )
    .await;

    let packs: Vec<Version> = repository_objects(&versions(gw, &bucket).await)
        .into_iter()
        .filter(|v| v.key.contains("/packs/"))
        .collect();
    assert!(packs.len() >= 2, "two packs to tamper with: {packs:?}");
    let (short, strip) = (&packs[0], &packs[1]);
    let owner = rgw::client(gw, &gw.maintenance);

    // Re-lock one pack shorter: GOVERNANCE lets a principal with bypass rights do it.
    let short_until = real_now() + 120;
    owner
        .put_object_retention()
        .bucket(&bucket)
        .key(&short.key)
        .version_id(&short.id)
        .bypass_governance_retention(true)
        .retention(
            aws_sdk_s3::types::ObjectLockRetention::builder()
                .mode(aws_sdk_s3::types::ObjectLockRetentionMode::Governance)
                .retain_until_date(aws_sdk_s3::primitives::DateTime::from_secs(short_until))
                .build(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("the owner shortens the lock of {}: {e:?}", short.key));

    // Strip another of its lock: delete the locked version (bypass), put the same bytes back.
    let bytes = object_bytes(gw, &gw.maintenance, &bucket, &strip.key).await;
    owner
        .delete_object()
        .bucket(&bucket)
        .key(&strip.key)
        .version_id(&strip.id)
        .bypass_governance_retention(true)
        .send()
        .await
        .unwrap_or_else(|e| panic!("the owner deletes the locked {}: {e:?}", strip.key));
    owner
        .put_object()
        .bucket(&bucket)
        .key(&strip.key)
        .body(aws_sdk_s3::primitives::ByteStream::from(bytes))
        .send()
        .await
        .unwrap_or_else(|e| panic!("the owner puts {} back unlocked: {e:?}", strip.key));

    t.clock.set(real_now());
    let v = verify(&t).await.verification.unwrap();
    assert_eq!(v.damaged_found, 0, "the data is intact: {v:?}");
    let alert = tamper_alert(&t).expect("the tamper alert is open");
    let d = &alert.details;
    assert!(
        d.contains(&format!(
            "1 object(s) carry a lock shorter than ibs set (re-locked by someone with governance bypass rights): {} (locked until {}, ibs locked it until at least ",
            rel(&short.key),
            ibs_repo::clock::rfc3339(short_until)
        )),
        "{alert:?}"
    );
    assert!(
        d.contains(&format!(
            "1 object(s) carry no object lock although ibs locked them: {}",
            rel(&strip.key)
        )),
        "{alert:?}"
    );
    assert!(!d.contains("overwritten"), "{alert:?}");
    assert_eq!(alert.severity, "Critical");
    restores_exactly(&t, &a, &want_a).await;
    restores_exactly(&t, &b, &want_b).await;
}

/// The append-only policy plus a statement denying the maintenance user the deletes of `key`.
fn policy_refusing_maintenance(bucket: &str, key: &str) -> String {
    let mut p: serde_json::Value =
        serde_json::from_str(&rgw::append_only_policy(bucket)).expect("the policy is JSON");
    p["Statement"]
        .as_array_mut()
        .expect("statements")
        .push(serde_json::json!({
            "Sid": "SomeoneRefusesTheMaintenanceKey",
            "Effect": "Deny",
            "Principal": { "AWS": ["arn:aws:iam:::user/maintenance"] },
            "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion"],
            "Resource": [format!("arn:aws:s3:::{bucket}/{key}")]
        }));
    p.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delete_refused_to_the_maintenance_credential_raises_the_alert() {
    let gw = rgw::gateway();
    let bucket = rgw::append_only_bucket("ctl-refuse").await;
    const HOLD: u64 = 6;
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
    store_maintenance(&t, gw).await;
    let manifest = format!("r/MASBackup/backups/{}", a.backup_id.as_ref().unwrap());
    rgw::client(gw, &gw.maintenance)
        .put_bucket_policy()
        .bucket(&bucket)
        .policy(policy_refusing_maintenance(&bucket, &manifest))
        .send()
        .await
        .expect("the owner changes the bucket policy");
    // Every lock of A's objects has expired: only the policy stops the manifest's delete now.
    tokio::time::sleep(Duration::from_secs(HOLD + 2)).await;
    t.clock.set(real_now());

    let detail = retention(&t).await;
    assert!(
        !detail.contains("maintenance credential"),
        "no writer-key note: {detail}"
    );
    let left = repository_objects(&versions(gw, &bucket).await);
    assert!(
        left.iter().any(|v| v.key == manifest && !v.marker),
        "the refused manifest stays: {left:?}"
    );
    let alert = tamper_alert(&t).expect("the tamper alert is open");
    assert!(
        alert.details.starts_with(&format!(
            "retention: 1 object(s) could not be deleted by the maintenance credential (the storage refused): {}",
            rel(&manifest)
        )),
        "{alert:?}"
    );
    assert_eq!(alert.severity, "Critical");
    // The retained backup is whole and restores with the .pfx.
    let v = verify(&t).await.verification.unwrap();
    assert_eq!(v.damaged_found, 0, "{v:?}");
    restores_exactly(&t, &b, &want_b).await;
}

/// The metadata key of the controller's writer state (`DATA/state/<repo id>/writer.json`).
fn metadata_key(t: &ibs_controller::testing::TestController) -> ibs_repo::crypto::SymKey {
    let root = t.dir.path().join("state");
    let repo_id = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.path().join("writer.json").is_file())
        .expect("the controller's writer state")
        .file_name();
    ibs_engine::state::WriterState::load(&root, repo_id.to_str().unwrap())
        .unwrap()
        .keys
        .metadata
}

/// A put as a second writer makes it: locked like everything ibs writes, as one `PutObject` or
/// as a one-part multipart upload (whose ETag differs from a plain put's of the same bytes).
async fn put_again(gw: &rgw::Gateway, bucket: &str, key: &str, body: Vec<u8>, multipart: bool) {
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ObjectLockMode};
    let w = rgw::client(gw, &gw.writer);
    let until = aws_sdk_s3::primitives::DateTime::from_secs(real_now() + 3600);
    if !multipart {
        w.put_object()
            .bucket(bucket)
            .key(key)
            .object_lock_mode(ObjectLockMode::Compliance)
            .object_lock_retain_until_date(until)
            .body(aws_sdk_s3::primitives::ByteStream::from(body))
            .send()
            .await
            .unwrap_or_else(|e| panic!("put {key} again: {e:?}"));
        return;
    }
    let up = w
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .object_lock_mode(ObjectLockMode::Compliance)
        .object_lock_retain_until_date(until)
        .send()
        .await
        .unwrap_or_else(|e| panic!("start a multipart upload of {key}: {e:?}"));
    let id = up.upload_id().unwrap();
    let part = w
        .upload_part()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .part_number(1)
        .body(aws_sdk_s3::primitives::ByteStream::from(body))
        .send()
        .await
        .unwrap();
    w.complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .parts(
                    CompletedPart::builder()
                        .part_number(1)
                        .set_e_tag(part.e_tag().map(str::to_owned))
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("complete the multipart upload of {key}: {e:?}"));
}

/// Two writers that store the same content-addressed object at once leave two versions: the same
/// bytes (an index segment, here once with another ETag), or another sealing of the same
/// reference segment. Neither is tampering; a reference segment overwritten with another list is.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_put_of_the_same_content_is_no_tampering_and_other_content_is() {
    let gw = rgw::gateway();
    let bucket = rgw::append_only_bucket("ctl-twice").await;
    let loc = format!(
        "s3+http://{}/{bucket}/r?lock_retention=1h&lock_margin=0s",
        gw.host_port()
    );
    let src = tempfile::tempdir().unwrap();
    write_data(src.path(), 1);
    let want = ibs_testing::snapshot(src.path());
    let t = controller(gw, &loc, src.path(), real_now(), 7).await;
    let a = backup(&t).await;
    let mk = metadata_key(&t);
    let all = repository_objects(&versions(gw, &bucket).await);
    let key_of = |part: &str| {
        all.iter()
            .find(|v| v.key.contains(part))
            .unwrap_or_else(|| panic!("no {part} object in {all:?}"))
            .key
            .clone()
    };
    let (index, refs) = (key_of("/index/"), key_of("/refs/"));
    let index_bytes = object_bytes(gw, &gw.writer, &bucket, &index).await;
    let refs_bytes = object_bytes(gw, &gw.writer, &bucket, &refs).await;
    let id =
        ibs_repo::layout::parse_refs_segment(&ibs_storage::ObjectKey::new(rel(&refs)).unwrap())
            .expect("a reference segment name");
    let list = ibs_repo::refseg::decode(&id, &refs_bytes, &mk).expect("the segment opens");
    let (id2, resealed) = ibs_repo::refseg::encode(&list, &mk);
    assert_eq!(id2, id);
    assert_ne!(resealed, refs_bytes, "another sealing has other bytes");

    put_again(gw, &bucket, &index, index_bytes.clone(), false).await;
    put_again(gw, &bucket, &index, index_bytes, true).await;
    put_again(gw, &bucket, &refs, resealed, false).await;
    let now = repository_objects(&versions(gw, &bucket).await);
    assert_eq!(now.iter().filter(|v| v.key == index).count(), 3, "{now:?}");
    assert_eq!(now.iter().filter(|v| v.key == refs).count(), 2, "{now:?}");
    t.clock.set(real_now());
    let v = verify(&t).await.verification.unwrap();
    assert_eq!(v.damaged_found, 0, "{v:?}");
    assert!(tamper_alert(&t).is_none(), "{:?}", tamper_alert(&t));

    // Another list sealed under the segment's name is an overwrite.
    let (_, other) = ibs_repo::refseg::encode(&[ibs_repo::ids::ChunkId([7; 32])], &mk);
    put_again(gw, &bucket, &refs, other, false).await;
    t.clock.set(real_now());
    verify(&t).await;
    let alert = tamper_alert(&t).expect("the tamper alert is open");
    assert!(
        alert.details.contains(&format!(
            "1 object(s) overwritten or hidden by a delete marker after ibs wrote them: {}",
            rel(&refs)
        )),
        "{alert:?}"
    );
    restores_exactly(&t, &a, &want).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_planted_prune_plan_stops_no_backup_and_raises_the_alert() {
    let gw = rgw::gateway();
    let bucket = rgw::append_only_bucket("ctl-plan").await;
    let loc = format!(
        "s3+http://{}/{bucket}/r?lock_retention=1h&lock_margin=0s",
        gw.host_port()
    );
    let src = tempfile::tempdir().unwrap();
    write_data(src.path(), 1);
    let want_a = ibs_testing::snapshot(src.path());
    let t = controller(gw, &loc, src.path(), real_now(), 7).await;
    let a = backup(&t).await;
    verify(&t).await;
    assert!(tamper_alert(&t).is_none(), "{:?}", tamper_alert(&t));

    // The writer key puts garbage under plans/ and locks it for a day in COMPLIANCE mode.
    let planted = "r/MASBackup/plans/0123456789abcdef0123456789abcdef";
    rgw::client(gw, &gw.writer)
        .put_object()
        .bucket(&bucket)
        .key(planted)
        .body(aws_sdk_s3::primitives::ByteStream::from_static(
            b"IBSPLN\x01\x00stall",
        ))
        .object_lock_mode(aws_sdk_s3::types::ObjectLockMode::Compliance)
        .object_lock_retain_until_date(aws_sdk_s3::primitives::DateTime::from_secs(
            real_now() + 86_400,
        ))
        .send()
        .await
        .unwrap_or_else(|e| panic!("the writer adds a locked object: {e:?}"));

    t.clock.set(real_now());
    write_data(src.path(), 2);
    let want_b = ibs_testing::snapshot(src.path());
    let b = backup(&t).await;
    assert!(
        b.warnings.len() == 1
            && b.warnings[0].starts_with(
                "prune plan plans/0123456789abcdef0123456789abcdef was ignored: it does not open"
            ),
        "the backup's record names the ignored plan: {:?}",
        b.warnings
    );
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    t.clock.set(real_now());
    verify(&t).await;
    let alert = tamper_alert(&t).expect("the tamper alert is open");
    assert!(
        alert.details.contains(&format!(
            "1 object(s) under plans/ do not open under the metadata key (put there by someone with storage access; backups and prune ignore them): {}",
            rel(planted)
        )),
        "{alert:?}"
    );
    assert_eq!(alert.severity, "Critical");
    restores_exactly(&t, &a, &want_a).await;
    restores_exactly(&t, &b, &want_b).await;
}
