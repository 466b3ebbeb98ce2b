//! `ibs repo …` against a real Ceph RADOS Gateway on loopback (scripts/ceph-rgw.sh): a repository
//! on an `s3+http://` location round-trips a realistic tree (symlinks, hard links, non-UTF-8
//! names) byte-exact; a wrong secret and a missing bucket get their alert classes and exit codes;
//! radosgw stopped in the middle of a backup fails it as Connectivity and loses nothing. A missing
//! gateway fails these tests.

mod common;
use common::s3::{block_on, s3_cmd};
use common::*;
use ibs_testing::rgw::{self, Gateway, Keys};

fn location(gw: &Gateway, bucket: &str, prefix: &str) -> String {
    format!("s3+http://{}/{bucket}/{prefix}", gw.host_port())
}

/// Every key in `bucket`.
fn keys_in(gw: &Gateway, bucket: &str) -> Vec<String> {
    block_on(async {
        let out = rgw::client(gw, &gw.writer)
            .list_objects_v2()
            .bucket(bucket)
            .send()
            .await
            .expect("list the bucket");
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    })
}

#[test]
fn a_repository_on_rgw_round_trips_a_realistic_tree() {
    let gw = rgw::gateway();
    let bucket = block_on(rgw::bucket("e2e"));
    let loc = location(gw, &bucket, "region-1");
    let fx = Fx::new();
    let cert = shared_cert(0);
    s3_cmd("init", &loc, &fx.state, &gw.writer)
        .arg("--cert")
        .arg(&cert.cer)
        .run()
        .ok();
    let keys = keys_in(gw, &bucket);
    assert!(
        keys.iter().any(|k| k == "region-1/MASBackup/config"),
        "the repository lives under PREFIX/MASBackup: {keys:?}"
    );
    assert!(
        keys.iter().all(|k| k.starts_with("region-1/MASBackup/")),
        "nothing outside MASBackup: {keys:?}"
    );
    let data = fx.path("data");
    ibs_testing::realistic_tree(&data);
    std::fs::write(
        data.join("big.bin"),
        ibs_testing::pseudo_random(3, 20 << 20),
    )
    .unwrap();
    let expected = ibs_testing::snapshot(&data);
    let id = s3_cmd("backup", &loc, &fx.state, &gw.writer)
        .arg("--source")
        .arg(format!("files={}", data.display()))
        .run()
        .ok()
        .last_line();
    assert!(is_backup_id(&id), "{id}");
    let out = fx.path("out");
    s3_cmd("restore", &loc, &fx.state, &gw.writer)
        .args(["--backup", &id])
        .arg("--target")
        .arg(&out)
        .arg("--pfx")
        .arg(&cert.pfx)
        .pw()
        .run()
        .ok();
    ibs_testing::assert_restored(&expected, &out.join("files"), "restore from RGW");
    s3_cmd("check", &loc, &fx.state, &gw.writer)
        .arg("--read-data")
        .arg("--pfx")
        .arg(&cert.pfx)
        .pw()
        .run()
        .ok();
    // The secret never shows in anything ibs printed.
    let listed = s3_cmd("list", &loc, &fx.state, &gw.writer).run().ok();
    assert!(!listed.stdout.contains(&gw.writer.secret_key));
    assert!(!listed.stderr.contains(&gw.writer.secret_key));
}

#[test]
fn a_wrong_secret_and_a_missing_bucket_get_their_classes() {
    let gw = rgw::gateway();
    let bucket = block_on(rgw::bucket("faults"));
    let loc = location(gw, &bucket, "r");
    let fx = Fx::new();
    let cert = shared_cert(0);
    let wrong = Keys {
        access_key: gw.writer.access_key.clone(),
        secret_key: "Wr0ngSecretThatMustNotLeak0000000000000".into(),
    };
    let out = s3_cmd("init", &loc, &fx.state, &wrong)
        .arg("--cert")
        .arg(&cert.cer)
        .run()
        .code(13)
        .stderr_has("authentication");
    assert!(!out.stderr.contains(&wrong.secret_key), "{out}");
    s3_cmd("list", &loc, &fx.state, &wrong).run().code(13);
    let missing = location(gw, &format!("{bucket}-absent"), "r");
    s3_cmd("init", &missing, &fx.state, &gw.writer)
        .arg("--cert")
        .arg(&cert.cer)
        .run()
        .code(12)
        .stderr_has("path");
    s3_cmd("list", &missing, &fx.state, &gw.writer)
        .run()
        .code(12);
    // A bucket without a repository is exit 7; a malformed location names its fault.
    s3_cmd("list", &loc, &fx.state, &gw.writer).run().code(7);
    s3_cmd(
        "list",
        &format!("s3+http://{}/Bad_Bucket/x", gw.host_port()),
        &fx.state,
        &gw.writer,
    )
    .run()
    .code(12)
    .stderr_has("bucket name");
    // No credentials at all: a usage error naming the variables, before any request.
    ibs(["repo", "list", "--repo", &loc])
        .arg("--state")
        .arg(&fx.state)
        .run()
        .code(2)
        .stderr_has("AWS_ACCESS_KEY_ID");
    // Nothing listens: connectivity.
    let port = ibs_testing::free_port();
    s3_cmd(
        "list",
        &format!("s3+http://127.0.0.1:{port}/{bucket}/r"),
        &fx.state,
        &gw.writer,
    )
    .run()
    .code(11)
    .stderr_has("connectivity");
}

#[test]
fn radosgw_stopped_mid_backup_fails_it_as_connectivity_and_loses_nothing() {
    let cluster = rgw::Cluster::start("fault");
    let gw = &cluster.gateway;
    let bucket = block_on(rgw::bucket_on(gw, "fault"));
    let loc = location(gw, &bucket, "r");
    let fx = Fx::new();
    let cert = shared_cert(0);
    s3_cmd("init", &loc, &fx.state, &gw.writer)
        .arg("--cert")
        .arg(&cert.cer)
        .run()
        .ok();
    let small = fx.path("small");
    ibs_testing::realistic_tree(&small);
    let first = s3_cmd("backup", &loc, &fx.state, &gw.writer)
        .arg("--source")
        .arg(format!("files={}", small.display()))
        .run()
        .ok()
        .last_line();
    let packs_before = keys_in(gw, &bucket)
        .iter()
        .filter(|k| k.contains("/packs/"))
        .count();
    let big = fx.path("big");
    std::fs::create_dir_all(&big).unwrap();
    for i in 0..6u64 {
        let name = big.join(format!("part-{i}.bin"));
        std::fs::write(name, ibs_testing::pseudo_random(100 + i, 25 << 20)).unwrap();
    }
    let child = s3_cmd("backup", &loc, &fx.state, &gw.writer)
        .arg("--source")
        .arg(format!("big={}", big.display()))
        .command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Stop the gateway once the backup has uploaded at least one new pack: mid-backup for sure.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while keys_in(gw, &bucket)
        .iter()
        .filter(|k| k.contains("/packs/"))
        .count()
        <= packs_before
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the backup uploaded no pack within 120 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    cluster.stop_rgw();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(11),
        "a backup whose gateway went away fails as Connectivity:\n{stderr}"
    );
    assert!(stderr.contains("connectivity"), "{stderr}");
    cluster.start_rgw();
    // Nothing was lost: the earlier backup is listed and restores; the next backup succeeds.
    let list = s3_cmd("list", &loc, &fx.state, &gw.writer)
        .arg("--json")
        .run()
        .ok()
        .json();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["backup_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![first.as_str()],
        "only the completed backup is listed"
    );
    let second = s3_cmd("backup", &loc, &fx.state, &gw.writer)
        .arg("--source")
        .arg(format!("big={}", big.display()))
        .run()
        .ok()
        .last_line();
    s3_cmd("check", &loc, &fx.state, &gw.writer)
        .arg("--read-data")
        .arg("--pfx")
        .arg(&cert.pfx)
        .pw()
        .run()
        .ok();
    for (id, src, name) in [(&first, &small, "files"), (&second, &big, "big")] {
        let target = fx.path(&format!("out-{name}"));
        s3_cmd("restore", &loc, &fx.state, &gw.writer)
            .args(["--backup", id])
            .arg("--target")
            .arg(&target)
            .arg("--pfx")
            .arg(&cert.pfx)
            .pw()
            .run()
            .ok();
        ibs_testing::assert_restored(
            &ibs_testing::snapshot(src),
            &target.join(name),
            "restore after the gateway fault",
        );
    }
}

/// `ibs location set` against `ibs serve` accepts an S3 location after its accessibility test,
/// with the keys from the AWS variables; a wrong secret is refused as authentication and nothing
/// is saved; a backup then goes to the bucket.
#[test]
fn the_controller_takes_an_s3_location_after_the_accessibility_test() {
    let gw = rgw::gateway();
    let bucket = block_on(rgw::bucket("ctl"));
    let loc = location(gw, &bucket, "ctl");
    controller_backs_up_to(gw, &bucket, &loc);
}

/// The ransomware-resistant setup through the controller (ADR 0035): a bucket with object lock
/// and the append-only policy, the writer key only. The accessibility test passes (the policy lets
/// the writer remove its probe), backups succeed, and what they write is locked in COMPLIANCE mode.
#[test]
fn the_controller_backs_up_with_an_append_only_key_to_an_object_lock_bucket() {
    let gw = rgw::gateway();
    let bucket = block_on(rgw::append_only_bucket("ctlworm"));
    let loc = format!(
        "{}?lock_retention=1h&lock_margin=0s",
        location(gw, &bucket, "ctl")
    );
    let (s, tmp) = controller_backs_up_to(gw, &bucket, &loc);
    maintenance_credential_is_tested_and_never_shown(gw, &s, tmp.path());
    let pack = keys_in(gw, &bucket)
        .into_iter()
        .find(|k| k.starts_with("ctl/MASBackup/packs/"))
        .unwrap();
    let head = block_on(
        rgw::client(gw, &gw.maintenance)
            .head_object()
            .bucket(&bucket)
            .key(&pack)
            .send(),
    )
    .unwrap();
    assert_eq!(
        head.object_lock_mode().map(|m| m.as_str()),
        Some("COMPLIANCE"),
        "{pack} is locked"
    );
    assert!(
        keys_in(gw, &bucket)
            .iter()
            .all(|k| !k.contains("ibs-probe-")),
        "the accessibility probe was removed"
    );
}

/// The maintenance credential through the CLI and the API (ADR 0040): from a credentials file,
/// tested before it is stored (a wrong secret is refused as authentication, nothing saved), shown
/// as its key id only, with the warning of what holding it costs; the secret is in no output,
/// no API response and no daemon log line; `--maintenance-clear` drops it.
fn maintenance_credential_is_tested_and_never_shown(
    gw: &Gateway,
    s: &common::daemon::Server,
    tmp: &std::path::Path,
) {
    let file = tmp.join("maintenance.credentials");
    let write = |secret: &str| {
        std::fs::write(
            &file,
            format!(
                "[default]\naws_access_key_id = {}\naws_secret_access_key = {secret}\n",
                gw.maintenance.access_key
            ),
        )
        .unwrap()
    };
    let set = || {
        s.ibs(
            &[
                "location",
                "set",
                "--maintenance-key-file",
                file.to_str().unwrap(),
            ],
            &[],
        )
    };
    let wrong = "MaintWr0ngSecretThatMustNotLeak000000000";
    write(wrong);
    let out = set();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(13), "{stderr}");
    assert!(
        stderr.contains("maintenance credential accessibility test failed"),
        "{stderr}"
    );
    assert!(!stderr.contains(wrong), "{stderr}");
    assert_eq!(
        s.json(&["location", "show"])["maintenance_password_set"],
        false
    );

    let secret = &gw.maintenance.secret_key;
    write(secret);
    let out = set();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("maintenance credential: this controller can now delete backups"),
        "{text}"
    );
    let shown = s.json(&["location", "show"]);
    assert_eq!(
        shown["maintenance_username"],
        gw.maintenance.access_key.as_str()
    );
    assert_eq!(shown["maintenance_password_set"], true);
    let human = s.ibs(&["location", "show"], &[]);
    let human = String::from_utf8_lossy(&human.stdout).into_owned();
    assert!(human.contains("(secret set)"), "{human}");
    let audit = s.json(&["audit"]);
    for (what, t) in [
        ("set output", text),
        ("location show --json", shown.to_string()),
        ("location show", human),
        ("audit", audit.to_string()),
    ] {
        assert!(
            !t.contains(secret.as_str()),
            "{what} shows the maintenance secret: {t}"
        );
    }
    let out = s.ibs(&["location", "set", "--maintenance-clear"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = s.json(&["location", "show"]);
    assert_eq!(shown["maintenance_username"], serde_json::Value::Null);
    assert_eq!(shown["maintenance_password_set"], false);
    // The daemon's log, at info, never had it either.
    for e in std::fs::read_dir(tmp).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "log") {
            let log = std::fs::read_to_string(&p).unwrap_or_default();
            assert!(
                !log.contains(secret.as_str()) && !log.contains(wrong),
                "{}",
                p.display()
            );
        }
    }
}

fn controller_backs_up_to(
    gw: &Gateway,
    bucket: &str,
    loc: &str,
) -> (common::daemon::Server, tempfile::TempDir) {
    use common::daemon::{free_port, last_line, statuses, Server};
    let tmp = tempfile::tempdir().unwrap();
    let sample = tmp.path().join("sample");
    std::fs::create_dir_all(&sample).unwrap();
    std::fs::write(sample.join("hello.txt"), b"hello s3\n").unwrap();
    let config = tmp.path().join("ibs.toml");
    std::fs::write(
        &config,
        format!(
            "[[component]]\nname = \"sample\"\nkind = \"files\"\npaths = [{:?}]\n",
            sample.display().to_string()
        ),
    )
    .unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(&data, free_port(), &["--config", config.to_str().unwrap()]);
    s.wait_for("the first backup", |v| {
        statuses(v).iter().any(|x| x == "Succeeded")
    });
    let set = |secret: &str| {
        s.ibs(
            &["location", "set", "--path", loc],
            &[
                ("AWS_ACCESS_KEY_ID", &gw.writer.access_key),
                ("AWS_SECRET_ACCESS_KEY", secret),
            ],
        )
    };
    let before = s.json(&["location", "show"]);
    let out = set("Wr0ngSecretThatMustNotLeak0000000000000");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(13), "{stderr}");
    assert!(stderr.contains("accessibility test failed"), "{stderr}");
    assert!(!stderr.contains("Wr0ngSecret"), "{stderr}");
    assert_eq!(s.json(&["location", "show"])["path"], before["path"]);

    let out = set(&gw.writer.secret_key);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = s.json(&["location", "show"]);
    assert_eq!(shown["path"], serde_json::Value::String(loc.to_owned()));
    assert!(!shown.to_string().contains(&gw.writer.secret_key));
    let end = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let out = loop {
        let out = s.ibs(&["backup", "start", "--wait"], &[]);
        if out.status.code() != Some(6) || std::time::Instant::now() > end {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = last_line(&out);
    assert_eq!(s.json(&["backup", "show", &id])["status"], "Succeeded");
    assert!(
        keys_in(gw, bucket)
            .iter()
            .any(|k| k.starts_with("ctl/MASBackup/packs/")),
        "the backup's packs are in the bucket"
    );
    (s, tmp)
}

/// Delayed delete on a bucket: prune moves what it removes under `trash/` with server-side
/// copies, `undelete` brings the forgotten backup back whole, a zero delay empties `trash/`.
#[test]
fn forget_prune_and_undelete_on_rgw() {
    let gw = rgw::gateway();
    let bucket = block_on(rgw::bucket("grace"));
    let loc = location(gw, &bucket, "r");
    let fx = Fx::new();
    let cert = shared_cert(0);
    let cmd = |sub: &str| s3_cmd(sub, &loc, &fx.state, &gw.writer);
    cmd("init").arg("--cert").arg(&cert.cer).run().ok();
    let src = fx.path("src");
    write(&src.join("a.bin"), &pseudo_random(31, 3 << 20));
    let first = snapshot(&src);
    let backup = || {
        cmd("backup")
            .arg("--source")
            .arg(format!("data={}", src.display()))
            .run()
            .ok()
            .last_line()
    };
    let id1 = backup();
    next_second();
    write(&src.join("a.bin"), &pseudo_random(32, 3 << 20));
    backup();
    next_second();
    cmd("forget").args(["--keep-days", "0"]).run().ok();
    cmd("prune").args(["--grace-hours", "0"]).run().ok();
    let trash = |keys: Vec<String>| -> usize {
        keys.iter()
            .filter(|k| k.starts_with("r/MASBackup/trash/"))
            .count()
    };
    assert!(
        trash(keys_in(gw, &bucket)) >= 3,
        "manifest, pack, index in the grace area"
    );
    let done = cmd("undelete").run().ok();
    assert!(done.stdout.contains(&id1), "{done}");
    assert_eq!(trash(keys_in(gw, &bucket)), 0);
    let out = fx.path("out");
    cmd("restore")
        .args(["--backup", &id1])
        .arg("--target")
        .arg(&out)
        .arg("--pfx")
        .arg(&cert.pfx)
        .pw()
        .run()
        .ok();
    assert_tree(
        &first,
        &out.join("data"),
        "an undeleted backup restores from RGW",
    );
    cmd("forget").args(["--keep-days", "0"]).run().ok();
    cmd("prune")
        .args(["--grace-hours", "0", "--delete-delay-hours", "0"])
        .run()
        .ok();
    assert_eq!(trash(keys_in(gw, &bucket)), 0);
    let listed = cmd("list").run().ok();
    assert!(!listed.stdout.contains(&id1), "{listed}");
}
