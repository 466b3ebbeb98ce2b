//! Immutability on a Ceph RADOS Gateway bucket with object lock and the operator guide's
//! append-only policy (ADR 0035, operator guide "Ransomware-resistant setup"): backups run with the
//! writer key, and every object they write is locked in COMPLIANCE mode; with the writer's key (all
//! an attacker on the controller host has) every delete, lock shortening, legal-hold or governance
//! bypass and policy change is refused, overwrites and truncations only add versions that ibs never
//! reads, `check` names them, and every backup still restores byte for byte with the .pfx. Retention
//! and prune run with the maintenance key: they extend the locks of what kept backups need, keep
//! what is still locked without failing, and remove it once the lock expired.

mod common;
use aws_sdk_s3::types::{
    BucketVersioningStatus, LifecycleExpiration, LifecycleRule, LifecycleRuleFilter,
    ObjectLockLegalHold, ObjectLockLegalHoldStatus, ObjectLockRetention, ObjectLockRetentionMode,
    VersioningConfiguration,
};
use common::s3::{block_on, s3_cmd};
use common::*;
use ibs_testing::rgw::aws_sdk_s3;
use ibs_testing::rgw::{self, Gateway};
use std::path::Path;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Every object version in the bucket: (key, version id).
fn versions(gw: &Gateway, bucket: &str) -> Vec<(String, String)> {
    block_on(async {
        let out = rgw::client(gw, &gw.maintenance)
            .list_object_versions()
            .bucket(bucket)
            .send()
            .await
            .expect("list versions");
        assert_ne!(
            out.is_truncated(),
            Some(true),
            "test repositories are small"
        );
        out.versions()
            .iter()
            .map(|v| {
                (
                    v.key().unwrap().to_owned(),
                    v.version_id().unwrap().to_owned(),
                )
            })
            .collect()
    })
}

/// The retain-until date (Unix seconds) and mode of one object's current version.
fn lock_of(gw: &Gateway, bucket: &str, key: &str) -> (Option<i64>, Option<String>) {
    block_on(async {
        let h = rgw::client(gw, &gw.maintenance)
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("head {key}: {e:?}"));
        (
            h.object_lock_retain_until_date().map(|d| d.secs()),
            h.object_lock_mode().map(|m| m.as_str().to_owned()),
        )
    })
}

fn first_key(all: &[(String, String)], part: &str) -> String {
    all.iter()
        .map(|(k, _)| k)
        .find(|k| k.contains(part))
        .unwrap_or_else(|| panic!("no object with {part:?} in {all:?}"))
        .clone()
}

#[test]
fn an_attacker_with_the_writer_key_cannot_destroy_backups() {
    let gw = rgw::gateway();
    let bucket = block_on(rgw::append_only_bucket("attack"));
    let loc = format!(
        "s3+http://{}/{bucket}/r?lock_retention=1h&lock_margin=0s",
        gw.host_port()
    );
    let fx = Fx::new();
    let cert = shared_cert(0);
    s3_cmd("init", &loc, &fx.state, &gw.writer)
        .arg("--cert")
        .arg(&cert.cer)
        .run()
        .ok();
    let data = fx.path("data");
    ibs_testing::realistic_tree(&data);
    let mut expected = Vec::new();
    let mut ids = Vec::new();
    for round in 0..2 {
        std::fs::write(data.join("round.txt"), format!("round {round}")).unwrap();
        expected.push(ibs_testing::snapshot(&data));
        let id = s3_cmd("backup", &loc, &fx.state, &gw.writer)
            .arg("--source")
            .arg(format!("files={}", data.display()))
            .run()
            .ok()
            .last_line();
        assert!(is_backup_id(&id), "{id}");
        ids.push(id);
    }
    // Every object but repository locks is locked in COMPLIANCE mode for about the hour asked.
    let all = versions(gw, &bucket);
    for (key, _) in &all {
        if key.contains("/locks/") {
            continue;
        }
        let (until, mode) = lock_of(gw, &bucket, key);
        let until = until.unwrap_or_else(|| panic!("{key} is not locked"));
        assert_eq!(mode.as_deref(), Some("COMPLIANCE"), "{key}");
        assert!(
            until > now() + 3000 && until <= now() + 3700,
            "{key}: {until}"
        );
    }

    let w = rgw::client(gw, &gw.writer);
    let refused = |what: &str, r: Result<(), String>| {
        let e = r.expect_err(&format!("the writer key must not be able to {what}"));
        assert!(e.contains("AccessDenied"), "{what}: {e}");
    };
    block_on(async {
        // Repository locks (`locks/`) are the one thing the writer may delete (the policy allows it).
        for (key, version) in all.iter().filter(|(k, _)| !k.contains("/locks/")) {
            let r = w.delete_object().bucket(&bucket).key(key).send().await;
            refused(
                "delete (delete marker)",
                r.map(|_| ()).map_err(|e| format!("{e:?}")),
            );
            let r = w
                .delete_object()
                .bucket(&bucket)
                .key(key)
                .version_id(version)
                .bypass_governance_retention(true)
                .send()
                .await;
            refused(
                "delete a version",
                r.map(|_| ()).map_err(|e| format!("{e:?}")),
            );
            for mode in [
                ObjectLockRetentionMode::Compliance,
                ObjectLockRetentionMode::Governance,
            ] {
                let r = w
                    .put_object_retention()
                    .bucket(&bucket)
                    .key(key)
                    .version_id(version)
                    .bypass_governance_retention(true)
                    .retention(
                        ObjectLockRetention::builder()
                            .mode(mode)
                            // Shorter than the lock (~1 h), yet still in the future when a
                            // loaded machine sends the request a few seconds later.
                            .retain_until_date(aws_sdk_s3::primitives::DateTime::from_secs(
                                now() + 120,
                            ))
                            .build(),
                    )
                    .send()
                    .await;
                refused(
                    "shorten a lock",
                    r.map(|_| ()).map_err(|e| format!("{e:?}")),
                );
            }
            let r = w
                .put_object_legal_hold()
                .bucket(&bucket)
                .key(key)
                .legal_hold(
                    ObjectLockLegalHold::builder()
                        .status(ObjectLockLegalHoldStatus::Off)
                        .build(),
                )
                .send()
                .await;
            refused(
                "change a legal hold",
                r.map(|_| ()).map_err(|e| format!("{e:?}")),
            );
        }
        let r = w.delete_bucket_policy().bucket(&bucket).send().await;
        refused(
            "delete the policy",
            r.map(|_| ()).map_err(|e| format!("{e:?}")),
        );
        let r = w
            .put_bucket_policy()
            .bucket(&bucket)
            .policy(r#"{"Version":"2012-10-17","Statement":[]}"#)
            .send()
            .await;
        refused(
            "replace the policy",
            r.map(|_| ()).map_err(|e| format!("{e:?}")),
        );
        let r = w
            .put_bucket_versioning()
            .bucket(&bucket)
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::Suspended)
                    .build(),
            )
            .send()
            .await;
        refused(
            "suspend versioning",
            r.map(|_| ()).map_err(|e| format!("{e:?}")),
        );
        let rule = LifecycleRule::builder()
            .id("expire")
            .status(aws_sdk_s3::types::ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix("").build())
            .expiration(LifecycleExpiration::builder().days(1).build())
            .build()
            .unwrap();
        let r = w
            .put_bucket_lifecycle_configuration()
            .bucket(&bucket)
            .lifecycle_configuration(
                aws_sdk_s3::types::BucketLifecycleConfiguration::builder()
                    .rules(rule)
                    .build()
                    .unwrap(),
            )
            .send()
            .await;
        refused(
            "expire objects by lifecycle",
            r.map(|_| ()).map_err(|e| format!("{e:?}")),
        );
        let r = w.delete_bucket().bucket(&bucket).send().await;
        refused(
            "delete the bucket",
            r.map(|_| ()).map_err(|e| format!("{e:?}")),
        );

        // Overwrites and truncations succeed as new versions on top: harmless to ibs.
        for part in [
            "/packs/",
            "/backups/",
            "/index/",
            "/refs/",
            "/keys/data/",
            "/config",
        ] {
            let key = first_key(&all, part);
            let orig = w
                .get_object()
                .bucket(&bucket)
                .key(&key)
                .send()
                .await
                .unwrap()
                .body
                .collect()
                .await
                .unwrap()
                .into_bytes();
            let body = if part == "/packs/" {
                orig.slice(..orig.len() / 2).to_vec()
            } else {
                b"overwritten by the attacker".to_vec()
            };
            w.put_object()
                .bucket(&bucket)
                .key(&key)
                .body(body.into())
                .send()
                .await
                .unwrap_or_else(|e| panic!("an overwrite of {key} adds a version: {e:?}"));
        }
    });

    // Every backup restores byte for byte with the .pfx, by the writer key or the maintenance key.
    for (i, id) in ids.iter().enumerate() {
        let out = fx.path(&format!("out{i}"));
        s3_cmd("restore", &loc, &fx.state, &gw.maintenance)
            .args(["--backup", id])
            .arg("--target")
            .arg(&out)
            .arg("--pfx")
            .arg(&cert.pfx)
            .pw()
            .run()
            .ok();
        ibs_testing::assert_restored(&expected[i], &out.join("files"), "restore after the attack");
    }
    // check sees each rewrite and still reads every chunk of the versions ibs wrote.
    let out = s3_cmd("check", &loc, &fx.state, &gw.writer)
        .arg("--read-data")
        .arg("--pfx")
        .arg(&cert.pfx)
        .pw()
        .run()
        .code(4);
    for part in [
        "packs/",
        "backups/",
        "index/",
        "refs/",
        "keys/data/",
        "config",
    ] {
        assert!(
            out.stdout
                .lines()
                .chain(out.stderr.lines())
                .any(|l| l.contains(part) && l.contains("overwritten")),
            "check must name the overwritten {part} object: {out}"
        );
    }
    // ... and reads the versions ibs wrote: the overwritten reference segment still opens.
    assert!(
        !out.stdout
            .lines()
            .chain(out.stderr.lines())
            .any(|l| l.contains("refs/") && !l.contains("overwritten")),
        "check must read the first version of the reference segment: {out}"
    );
    // A new backup by the writer still succeeds and dedups against the versions ibs wrote.
    let id = s3_cmd("backup", &loc, &fx.state, &gw.writer)
        .arg("--source")
        .arg(format!("files={}", data.display()))
        .run()
        .ok()
        .last_line();
    let out = fx.path("out-after");
    s3_cmd("restore", &loc, &fx.state, &gw.writer)
        .args(["--backup", &id])
        .arg("--target")
        .arg(&out)
        .arg("--pfx")
        .arg(&cert.pfx)
        .pw()
        .run()
        .ok();
    ibs_testing::assert_restored(
        &expected[1],
        &out.join("files"),
        "a backup after the attack",
    );
    // The writer may not run retention: nothing is deleted, prune says so (partial).
    s3_cmd("prune", &loc, &fx.state, &gw.writer)
        .args(["--grace-hours", "0"])
        .run()
        .code(3)
        .stderr_has("maintenance credential");
    // And set-cert refuses: the config is write-once on object-lock storage.
    s3_cmd("set-cert", &loc, &fx.state, &gw.writer)
        .arg("--cert")
        .arg(&shared_cert(1).cer)
        .run()
        .stderr_has("object-lock storage");
}

#[test]
fn prune_extends_locks_keeps_locked_objects_and_removes_them_once_expired() {
    let gw = rgw::gateway();
    let bucket = block_on(rgw::append_only_bucket("prune"));
    const HOLD: i64 = 12;
    let loc = format!(
        "s3+http://{}/{bucket}/r?lock_retention={HOLD}s&lock_margin=0s",
        gw.host_port()
    );
    let fx = Fx::new();
    let cert = shared_cert(0);
    s3_cmd("init", &loc, &fx.state, &gw.writer)
        .arg("--cert")
        .arg(&cert.cer)
        .run()
        .ok();
    let (a, b) = (fx.path("a"), fx.path("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(a.join("old.bin"), ibs_testing::pseudo_random(1, 3 << 20)).unwrap();
    std::fs::write(b.join("new.bin"), ibs_testing::pseudo_random(2, 2 << 20)).unwrap();
    let backup = |dir: &Path| {
        s3_cmd("backup", &loc, &fx.state, &gw.writer)
            .arg("--source")
            .arg(format!("files={}", dir.display()))
            .run()
            .ok()
            .last_line()
    };
    let old = backup(&a);
    next_second();
    let new = backup(&b);
    let packs = |gw: &Gateway| {
        versions(gw, &bucket)
            .into_iter()
            .filter(|(k, _)| k.contains("/packs/"))
            .count()
    };
    let packs_before = packs(gw);
    let manifest = format!("r/MASBackup/backups/{new}");
    let until_before = lock_of(gw, &bucket, &manifest).0.unwrap();
    next_second();
    // Forget the old backup with the maintenance key while it is still locked: it stays.
    let out = s3_cmd("forget", &loc, &fx.state, &gw.maintenance)
        .args(["--keep-days", "0", "--json"])
        .run()
        .ok();
    let plan = &out.json()["plan"];
    assert_eq!(plan["remove"], serde_json::json!([old]), "{out}");
    assert_eq!(plan["locked"], serde_json::json!([old]), "{out}");
    // Prune keeps everything the old backup still names, extends the newest backup's locks.
    let out = s3_cmd("prune", &loc, &fx.state, &gw.maintenance)
        .args(["--grace-hours", "0", "--json"])
        .run()
        .ok();
    let plan = &out.json()["plan"];
    assert!(plan["locks_checked"].as_u64().unwrap() > 0, "{out}");
    let until = lock_of(gw, &bucket, &manifest).0.unwrap();
    assert!(
        until > until_before && until >= now() + HOLD - 5,
        "the newest backup's lock is extended from now: {until_before} -> {until}"
    );
    assert_eq!(packs(gw), packs_before, "nothing locked was deleted");
    // Once the old backup's locks expired, forget and prune remove it and its data.
    std::thread::sleep(std::time::Duration::from_secs(HOLD as u64 + 2));
    let out = s3_cmd("forget", &loc, &fx.state, &gw.maintenance)
        .args(["--keep-days", "0", "--json"])
        .run()
        .ok();
    assert_eq!(
        out.json()["plan"]["locked"],
        serde_json::Value::Null,
        "{out}"
    );
    let out = s3_cmd("prune", &loc, &fx.state, &gw.maintenance)
        .args(["--grace-hours", "0", "--json"])
        .run()
        .ok();
    let plan = &out.json()["plan"];
    assert!(
        plan["delete"].as_array().unwrap().len() + plan["unindexed"].as_array().unwrap().len() > 0,
        "the old backup's packs go: {out}"
    );
    assert!(packs(gw) < packs_before, "{out}");
    assert_eq!(
        s3_cmd("list", &loc, &fx.state, &gw.maintenance)
            .run()
            .ok()
            .stdout
            .matches(&old)
            .count(),
        0
    );
    let out_dir = fx.path("out");
    s3_cmd("restore", &loc, &fx.state, &gw.maintenance)
        .args(["--backup", &new])
        .arg("--target")
        .arg(&out_dir)
        .arg("--pfx")
        .arg(&cert.pfx)
        .pw()
        .run()
        .ok();
    ibs_testing::assert_restored(
        &ibs_testing::snapshot(&b),
        &out_dir.join("files"),
        "the kept backup after prune",
    );
    s3_cmd("check", &loc, &fx.state, &gw.maintenance)
        .arg("--read-data")
        .arg("--pfx")
        .arg(&cert.pfx)
        .pw()
        .run()
        .ok();
}
