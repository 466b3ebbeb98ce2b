//! Prune plans planted with the writer key on a Ceph RADOS Gateway bucket with object lock and the
//! append-only policy (ADR 0044, format spec §19): objects under `plans/` that do not open under
//! the metadata key, locked by the attacker in COMPLIANCE mode so that nobody can delete them, stop
//! neither backups nor prune. Backups succeed with a warning naming them and restore byte for
//! byte with the .pfx; prune (maintenance key) marks and sweeps as if they were not there,
//! reports them under `rejected_plans`, and keeps them because they are locked; nothing is lost.

mod common;
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

/// The versions of every object under `prefix`: (key, version id).
fn versions_under(gw: &Gateway, bucket: &str, prefix: &str) -> Vec<(String, String)> {
    block_on(async {
        let out = rgw::client(gw, &gw.maintenance)
            .list_object_versions()
            .bucket(bucket)
            .prefix(prefix)
            .send()
            .await
            .expect("list versions");
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

/// The metadata key of the one writer state under `state_root` (the attacker on the controller
/// host holds it too; here it only serves to seal a body that names another plan).
fn metadata_key(state_root: &Path) -> ibs_repo::crypto::SymKey {
    let repo_id = std::fs::read_dir(state_root)
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.path().join("writer.json").is_file())
        .expect("a writer state")
        .file_name()
        .into_string()
        .unwrap();
    ibs_engine::state::WriterState::load(state_root, &repo_id)
        .unwrap()
        .keys
        .metadata
}

#[test]
fn plans_planted_and_locked_with_the_writer_key_stop_neither_backups_nor_prune() {
    let gw = rgw::gateway();
    let bucket = block_on(rgw::append_only_bucket("plans"));
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
    let data = fx.path("data");
    ibs_testing::realistic_tree(&data);
    std::fs::write(data.join("old.bin"), ibs_testing::pseudo_random(1, 3 << 20)).unwrap();
    let backup = || {
        s3_cmd("backup", &loc, &fx.state, &gw.writer)
            .arg("--source")
            .arg(format!("files={}", data.display()))
            .run()
            .ok()
    };
    let old = backup().last_line();

    // The attack: three objects under plans/, put with the writer key and locked for a day in
    // COMPLIANCE mode (nobody can delete them before then).
    let mk = metadata_key(&fx.state);
    let garbage = "0000000000000000000000000000000a";
    let bad_seal = "0000000000000000000000000000000b";
    let renamed = "0000000000000000000000000000000c";
    let other = "ffffffffffffffffffffffffffffffff";
    let body = format!(r#"{{"name":"{other}","created":0,"host":"x","packs":[],"keys":[]}}"#);
    let names_another = [
        b"IBSPLN\x01\x00".as_slice(),
        &mk.seal(
            format!("ibs-prune-plan\0{renamed}").as_bytes(),
            body.as_bytes(),
        ),
    ]
    .concat();
    let planted: Vec<(&str, Vec<u8>)> = vec![
        (garbage, b"stop every backup for months".to_vec()),
        (
            bad_seal,
            b"IBSPLN\x01\x00sealed by nobody you know".to_vec(),
        ),
        (renamed, names_another),
    ];
    block_on(async {
        let w = rgw::client(gw, &gw.writer);
        for (name, bytes) in &planted {
            w.put_object()
                .bucket(&bucket)
                .key(format!("r/MASBackup/plans/{name}"))
                .body(bytes.clone().into())
                .object_lock_mode(aws_sdk_s3::types::ObjectLockMode::Compliance)
                .object_lock_retain_until_date(aws_sdk_s3::primitives::DateTime::from_secs(
                    now() + 86_400,
                ))
                .send()
                .await
                .unwrap_or_else(|e| panic!("the writer may add {name}: {e:?}"));
        }
    });
    let planted_versions = versions_under(gw, &bucket, "r/MASBackup/plans/");
    assert_eq!(planted_versions.len(), 3, "{planted_versions:?}");

    // Backups succeed, and say what they ignored.
    std::fs::remove_file(data.join("old.bin")).unwrap();
    std::fs::write(data.join("new.bin"), ibs_testing::pseudo_random(2, 2 << 20)).unwrap();
    let expected = ibs_testing::snapshot(&data);
    next_second();
    let out = backup();
    let new = out.last_line();
    for (name, why) in [
        (garbage, "bad magic"),
        (bad_seal, "does not authenticate"),
        (renamed, "names plan"),
    ] {
        assert!(
            out.stderr
                .lines()
                .any(|l| l.contains(&format!("plans/{name}")) && l.contains(why)),
            "the backup must warn about {name} ({why}): {out}"
        );
    }

    // Prune with the maintenance key, once the old backup's locks expired: it forgets and sweeps
    // the old data normally, reports the planted plans and keeps them (locked).
    std::thread::sleep(std::time::Duration::from_secs(HOLD as u64 + 2));
    let out = s3_cmd("forget", &loc, &fx.state, &gw.maintenance)
        .args(["--keep-days", "0", "--json"])
        .run()
        .ok();
    assert_eq!(
        out.json()["plan"]["remove"],
        serde_json::json!([old]),
        "{out}"
    );
    let out = s3_cmd("prune", &loc, &fx.state, &gw.maintenance)
        .args(["--grace-hours", "0", "--json"])
        .run()
        .ok();
    let plan = &out.json()["plan"];
    let mut rejected: Vec<&str> = plan["rejected_plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    rejected.sort();
    assert_eq!(rejected, [garbage, bad_seal, renamed], "{out}");
    assert!(
        plan["delete"].as_array().unwrap().len() + plan["repack"].as_array().unwrap().len() > 0,
        "the old backup's data goes: {out}"
    );
    assert_eq!(plan["swept_plans"].as_array().unwrap().len(), 1, "{out}");
    assert!(plan["pending_plan"].is_null(), "{out}");
    let locked: Vec<&str> = plan["locked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for name in [garbage, bad_seal, renamed] {
        assert!(
            locked.contains(&format!("plans/{name}").as_str()),
            "{name} is locked and stays: {out}"
        );
    }
    assert!(
        out.stderr.contains("does not open under the metadata key"),
        "{out}"
    );
    // Still there, every version: nothing the attacker locked was deleted, and prune's own plan
    // (written without a lock) is gone.
    assert_eq!(
        versions_under(gw, &bucket, "r/MASBackup/plans/"),
        planted_versions
    );

    // Nothing was lost: check reads every chunk, the kept backup restores byte for byte, and a
    // later backup still succeeds.
    s3_cmd("check", &loc, &fx.state, &gw.maintenance)
        .arg("--read-data")
        .arg("--pfx")
        .arg(&cert.pfx)
        .pw()
        .run()
        .ok();
    let target = fx.path("out");
    s3_cmd("restore", &loc, &fx.state, &gw.writer)
        .args(["--backup", &new])
        .arg("--target")
        .arg(&target)
        .arg("--pfx")
        .arg(&cert.pfx)
        .pw()
        .run()
        .ok();
    ibs_testing::assert_restored(
        &expected,
        &target.join("files"),
        "restore beside planted plans",
    );
    next_second();
    backup();
    // The prune after it has nothing left to do but report them again.
    let out = s3_cmd("prune", &loc, &fx.state, &gw.maintenance)
        .args(["--grace-hours", "0", "--json"])
        .run()
        .ok();
    assert_eq!(
        out.json()["plan"]["rejected_plans"]
            .as_array()
            .unwrap()
            .len(),
        3,
        "{out}"
    );
}
