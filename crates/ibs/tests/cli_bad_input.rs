//! Bad input: each case checks the exit code, a specific part of the message, and that nothing was
//! lost or half-created.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

/// A repository (shared cert 0) with one backup of a small tree; returns (fixture, source, id).
fn repo_with_backup() -> (Fx, PathBuf, String) {
    let fx = Fx::new();
    fx.init_cert(&shared_cert(0).cer);
    let src = fx.path("src");
    write(&src.join("a.txt"), b"alpha\n");
    write(&src.join("d/b.bin"), &pseudo_random(5, 300_000));
    let id = fx.backup(&[("data", &src)]);
    (fx, src, id)
}

/// The backup still restores byte-identical (nothing was lost).
fn assert_restores(fx: &Fx, id: &str, src: &Path, tag: &str) {
    let want = snapshot(src);
    let t = fx.path(&format!("verify-{tag}"));
    fx.restore_cmd(id, &t, &[&shared_cert(0).pfx])
        .args(["--source", "data"])
        .run()
        .ok();
    assert_tree(&want, &t, tag);
}

fn assert_absent_or_empty(p: &Path) {
    if p.exists() {
        let n = std::fs::read_dir(p).unwrap().count();
        assert_eq!(n, 0, "{} must be empty after a failed restore", p.display());
    }
}

#[test]
fn missing_source_path_fails_and_records_nothing() {
    let (fx, src, id) = repo_with_backup();
    let gone = fx.path("no/such/folder");
    let out = fx.backup_cmd(&[("data", &src), ("gone", &gone)]).run();
    assert_ne!(out.code, 0, "a missing source must fail:\n{out}");
    let out = out
        .stderr_has("source gone")
        .stderr_has(&gone.display().to_string());
    assert!(
        !out.stdout.lines().any(is_backup_id),
        "no id may be printed:\n{out}"
    );
    assert_eq!(fx.list_ids(), [id.as_str()], "no new backup may be listed");
    assert_restores(&fx, &id, &src, "after missing source");
}

#[test]
fn restore_refuses_a_symlink_planted_at_target_source_and_writes_nothing_outside() {
    // Someone who can write into the restore target planted `TARGET/data -> outside`.
    let (fx, src, id) = repo_with_backup();
    let outside = fx.path("outside");
    write(&outside.join("keep"), b"k");
    let t = fx.path("t");
    std::fs::create_dir_all(&t).unwrap();
    std::os::unix::fs::symlink(&outside, t.join("data")).unwrap();
    fx.restore_cmd(&id, &t, &[&shared_cert(0).pfx])
        .run()
        .code(1)
        .stderr_has(&format!(
            "{}: exists and is not a directory (it is a symlink)",
            t.join("data").display()
        ));
    let names: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["keep"], "nothing may be written outside the target");
    assert!(std::fs::symlink_metadata(t.join("data"))
        .unwrap()
        .is_symlink());
    assert_restores(&fx, &id, &src, "after a planted symlink");
}

#[test]
fn source_without_equals_is_a_usage_error() {
    let (fx, src, id) = repo_with_backup();
    let out = fx
        .repo_cmd("backup")
        .arg("--source")
        .arg(&src)
        .run()
        .stderr_has("expected NAME=PATH");
    // A malformed argument is a usage error: exit code 2 (output.rs `exit::USAGE`).
    assert_eq!(
        out.code, 2,
        "malformed --source must exit 2 (usage):\n{out}"
    );
    assert_eq!(fx.list_ids(), [id]);
}

#[test]
fn folder_that_is_not_a_repository_exits_7() {
    let fx = Fx::new();
    // An existing folder with unrelated content.
    write(&fx.repo.join("notes.txt"), b"not a backup\n");
    let src = fx.path("src");
    write(&src.join("a"), b"a");
    ibs(["repo", "list", "--repo"])
        .arg(&fx.repo)
        .run()
        .code(7)
        .stderr_has("is not an ibs repository");
    fx.backup_cmd(&[("a", &src)])
        .run()
        .code(7)
        .stderr_has("is not an ibs repository");
    fx.restore_cmd(
        "20260101T000000Z-0a1b2c3d",
        &fx.path("t"),
        &[&shared_cert(0).pfx],
    )
    .run()
    .code(7)
    .stderr_has("is not an ibs repository");
    assert!(
        !fx.mas().exists(),
        "a failed command must not create MASBackup"
    );
    assert_eq!(
        std::fs::read(fx.repo.join("notes.txt")).unwrap(),
        b"not a backup\n"
    );
    // A MASBackup folder without a config is not a repository either.
    std::fs::create_dir(fx.mas()).unwrap();
    ibs(["repo", "list", "--repo"])
        .arg(&fx.repo)
        .run()
        .code(7)
        .stderr_has("is not an ibs repository");
}

#[test]
fn folder_that_does_not_exist_exits_12() {
    let fx = Fx::new();
    let missing = fx.path("no-such-share");
    ibs(["repo", "list", "--repo"])
        .arg(&missing)
        .run()
        .code(12)
        .stderr_has("does not exist")
        .stderr_has("(path)");
    // `init` creates a missing local folder (issue 17 item 8), as restic does; an unmounted
    // fstab mount point is still refused (unit tests in src/location.rs).
    let nested = missing.join("a/b");
    ibs(["repo", "init", "--state"])
        .arg(&fx.state)
        .arg("--repo")
        .arg(&nested)
        .arg("--cert")
        .arg(&shared_cert(0).cer)
        .run()
        .ok();
    assert!(
        nested.join("MASBackup").is_dir(),
        "init creates the folder and the repository"
    );
    ibs(["repo", "list", "--repo"]).arg(&nested).run().ok();
}

#[test]
fn unknown_format_version_exits_7_and_names_it() {
    let (fx, src, id) = repo_with_backup();
    let cfg_path = fx.mas().join("config");
    let original = std::fs::read(&cfg_path).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_slice(&original).unwrap();
    assert_eq!(cfg["version"], 1);
    cfg["version"] = 99.into();
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();

    ibs(["repo", "list", "--repo"])
        .arg(&fx.repo)
        .run()
        .code(7)
        .stderr_has("version 99");
    fx.backup_cmd(&[("data", &src)])
        .run()
        .code(7)
        .stderr_has("version 99");
    let t = fx.path("t");
    fx.restore_cmd(&id, &t, &[&shared_cert(0).pfx])
        .run()
        .code(7)
        .stderr_has("version 99");
    assert_absent_or_empty(&t);
    fx.repo_cmd("check").run().code(7).stderr_has("version 99");
    // Nothing was touched: with the original config everything is back.
    std::fs::write(&cfg_path, &original).unwrap();
    assert_eq!(fx.list_ids(), [id.as_str()]);
    assert_restores(&fx, &id, &src, "after version 99");
}

#[test]
fn wrong_pfx_on_restore_names_both_thumbprints() {
    let (fx, src, id) = repo_with_backup();
    let right = shared_cert(0);
    let wrong = shared_cert(1);
    let right_tp = thumbprint(&right.cer);
    let wrong_tp = thumbprint(&wrong.cer);
    assert_ne!(right_tp, wrong_tp);
    let t = fx.path("t");
    fx.restore_cmd(&id, &t, &[&wrong.pfx])
        .run()
        .code(5)
        .stderr_has(&right_tp)
        .stderr_has(&wrong_tp);
    assert_absent_or_empty(&t);
    assert_restores(&fx, &id, &src, "after wrong pfx");
}

#[test]
fn wrong_pfx_password_exits_5() {
    let (fx, _src, id) = repo_with_backup();
    let t = fx.path("t");
    fx.restore_cmd(&id, &t, &[&shared_cert(0).pfx])
        .env("IBS_PFX_PASSWORD", "not the password")
        .run()
        .code(5)
        .stderr_has("password is wrong");
    assert_absent_or_empty(&t);
}

#[test]
fn restore_without_pfx_exits_5_and_asks_for_it() {
    let (fx, _src, id) = repo_with_backup();
    let t = fx.path("t");
    fx.repo_cmd("restore")
        .args(["--backup", &id])
        .arg("--target")
        .arg(&t)
        .run()
        .code(5)
        .stderr_has("needs the .pfx");
    assert_absent_or_empty(&t);
}

/// `openssl req -x509` with the given key options, DER output; returns the .cer path.
fn openssl_cert(dir: &Path, name: &str, newkey: &[&str]) -> PathBuf {
    let cer = dir.join(format!("{name}.cer"));
    let key = dir.join(format!("{name}.key.pem"));
    let mut args: Vec<String> = vec!["req".into(), "-x509".into(), "-newkey".into()];
    args.extend(newkey.iter().map(|s| s.to_string()));
    args.extend(
        [
            "-nodes",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cer.to_str().unwrap(),
            "-outform",
            "DER",
            "-subj",
            &format!("/CN={name}"),
            "-days",
            "30",
        ]
        .map(String::from),
    );
    openssl(&args);
    cer
}

#[test]
fn rsa_1024_certificate_is_refused_with_sizes() {
    let fx = Fx::new();
    let cer = openssl_cert(&fx.root, "small", &["rsa:1024"]);
    let out = fx.repo_cmd("init").arg("--cert").arg(&cer).run();
    assert_ne!(out.code, 0, "{out}");
    let out = out.code(5).stderr_has("1024").stderr_has("2048");
    assert!(
        !fx.mas().join("config").exists(),
        "refused init wrote a config:\n{out}"
    );
    assert!(!fx.state.exists(), "refused init wrote a writer state");
    ibs(["repo", "list", "--repo"]).arg(&fx.repo).run().code(7);
    // The location is still usable.
    fx.init_cert(&shared_cert(0).cer);
}

#[test]
fn ec_certificate_is_refused_as_not_rsa() {
    let fx = Fx::new();
    let cer = openssl_cert(
        &fx.root,
        "ec",
        &["ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let out = fx
        .repo_cmd("init")
        .arg("--cert")
        .arg(&cer)
        .run()
        .code(5)
        .stderr_has("only RSA keys are supported");
    assert!(
        !fx.mas().join("config").exists(),
        "refused init wrote a config:\n{out}"
    );
    assert!(!fx.state.exists());
}

#[test]
fn expired_certificate_is_accepted_with_a_warning() {
    let fx = Fx::new();
    let ca = fx.path("ca");
    std::fs::create_dir(&ca).unwrap();
    std::fs::write(ca.join("index.txt"), b"").unwrap();
    std::fs::write(ca.join("serial"), b"01\n").unwrap();
    std::fs::write(
        ca.join("ca.cnf"),
        format!(
            "[ ca ]\ndefault_ca = myca\n[ myca ]\ndir = {d}\ndatabase = {d}/index.txt\n\
             new_certs_dir = {d}\nserial = {d}/serial\ndefault_md = sha256\npolicy = pol\n\
             unique_subject = no\nemail_in_dn = no\n[ pol ]\ncommonName = supplied\n\
             [ req ]\ndistinguished_name = dn\nprompt = no\n[ dn ]\nCN = ibs expired test\n",
            d = ca.display()
        ),
    )
    .unwrap();
    let p = |n: &str| ca.join(n).to_str().unwrap().to_owned();
    openssl([
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &p("k.pem"),
        "-out",
        &p("r.csr"),
        "-config",
        &p("ca.cnf"),
    ]);
    openssl([
        "ca",
        "-batch",
        "-config",
        &p("ca.cnf"),
        "-selfsign",
        "-keyfile",
        &p("k.pem"),
        "-in",
        &p("r.csr"),
        "-startdate",
        "20190101000000Z",
        "-enddate",
        "20200101000000Z",
        "-notext",
        "-out",
        &p("e.pem"),
    ]);
    openssl([
        "x509",
        "-in",
        &p("e.pem"),
        "-outform",
        "DER",
        "-out",
        &p("e.cer"),
    ]);
    let dates = String::from_utf8(openssl([
        "x509",
        "-inform",
        "DER",
        "-in",
        &p("e.cer"),
        "-noout",
        "-enddate",
    ]))
    .unwrap();
    assert!(dates.contains("2020"), "openssl made {dates:?}");

    let out = fx
        .repo_cmd("init")
        .arg("--cert")
        .arg(ca.join("e.cer"))
        .run()
        .ok()
        .stderr_has("expired");
    assert!(out.stderr.contains("warning"), "{out}");
    // Backups keep working, with the warning.
    let src = fx.path("src");
    write(&src.join("f"), b"data");
    fx.backup_cmd(&[("s", &src)])
        .run()
        .ok()
        .stderr_has("expired");
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}

/// Field 22 of /proc/<pid>/stat (start time in clock ticks), as lock.rs reads it.
fn process_start(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 1..];
    after.split_whitespace().nth(19).unwrap().parse().unwrap()
}

#[test]
fn lock_held_by_live_process_exits_6_then_clears_when_it_dies() {
    let (fx, src, id) = repo_with_backup();
    let mut holder = Command::new("sleep")
        .arg("300")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sleep");
    let pid = holder.id();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let host = hostname();
    let lock = serde_json::json!({
        "kind": "exclusive",
        "operation": "backup",
        "host": host,
        "pid": pid,
        "pid_start": process_start(pid),
        // What proves the holder is a process of this kernel and pid namespace (a hostname
        // alone does not), so that its pid may be looked up here.
        "boot_id": std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap().trim(),
        "pid_ns": std::fs::read_link("/proc/self/ns/pid").unwrap().to_str().unwrap(),
        "created": now,
        "refreshed": now,
    });
    let locks = fx.mas().join("locks");
    std::fs::create_dir_all(&locks).unwrap();
    let lock_file = locks.join(format!("{now}-{pid}-00112233445566778899aabbccddeeff"));
    std::fs::write(&lock_file, serde_json::to_vec(&lock).unwrap()).unwrap();

    write(&src.join("new.txt"), b"new\n");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        fx.backup_cmd(&[("data", &src)])
            .run()
            .code(6)
            .stderr_has("locked")
            .stderr_has(&format!("pid {pid}"))
            .stderr_has(&host)
            .stderr_has("backup");
        assert!(
            lock_file.exists(),
            "a live holder's lock must not be removed"
        );
        assert_eq!(fx.list_ids(), [id.as_str()]);
    }));
    holder.kill().unwrap();
    holder.wait().unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }

    // The holder is gone: the next backup clears its lock and succeeds at once.
    let start = std::time::Instant::now();
    let id2 = fx.backup(&[("data", &src)]);
    assert!(start.elapsed().as_secs() < 20);
    assert!(
        !lock_file.exists(),
        "the dead holder's lock was not cleared"
    );
    assert_eq!(std::fs::read_dir(&locks).unwrap().count(), 0);
    assert_eq!(fx.list_ids().len(), 2);
    assert_restores(&fx, &id2, &src, "after lock");
}

/// A catalog edited on the share (a forged start time, finish time or hostname) is found by
/// `check --pfx` and by `check` with the writer state, naming the backup; check without a key
/// says it could not authenticate catalogs.
#[test]
fn an_edited_catalog_fails_check_naming_the_backup() {
    let (fx, _src, id) = repo_with_backup();
    let path = fx.mas().join("backups").join(&id);
    let original = std::fs::read(&path).unwrap();
    for (field, value) in [
        ("started", "2020-01-01T00:00:00Z"),
        ("finished", "2020-01-01T00:00:01Z"),
        ("hostname", "elsewhere"),
    ] {
        let b = &original;
        let len = u32::from_le_bytes(b[8..12].try_into().unwrap()) as usize;
        let mut cat: serde_json::Value = serde_json::from_slice(&b[12..12 + len]).unwrap();
        cat[field] = value.into();
        let cat = serde_json::to_vec(&cat).unwrap();
        let mut out = b[..8].to_vec();
        out.extend_from_slice(&(cat.len() as u32).to_le_bytes());
        out.extend_from_slice(&cat);
        out.extend_from_slice(&b[12 + len..]);
        std::fs::write(&path, out).unwrap();
        let pfx = fx
            .repo_cmd("check")
            .arg("--pfx")
            .arg(&shared_cert(0).pfx)
            .pw()
            .run()
            .code(4);
        assert!(
            pfx.stdout.contains(&format!("PROBLEM backups/{id}"))
                && pfx.stdout.contains("changed after the backup was written"),
            "check --pfx missed an edited {field}:\n{pfx}"
        );
        let state = fx.repo_cmd("check").run().code(4);
        assert!(
            state.stdout.contains(&format!("PROBLEM backups/{id}")),
            "check with the writer state missed an edited {field}:\n{state}"
        );
    }
    let nokey = ibs(["repo", "check", "--repo"]).arg(&fx.repo).run().ok();
    assert!(nokey.stdout.contains("not authenticated"), "{nokey}");
    std::fs::write(&path, &original).unwrap();
    fx.check_full(&shared_cert(0).pfx);
}
