//! End to end through the real binary: `ibs backup cancel` against `ibs serve` stops a backup
//! blocked in a `command` component's export within seconds; the job ends Canceled with nothing
//! committed (no manifest, `ibs repo check` clean, no backup listed, no alert), the export's
//! process is gone, and the next backup succeeds. Unknown ids and ended jobs are refused with
//! specific messages and nonzero exits. With a tiny `job_timeout_seconds` the same blocked backup
//! ends Failed "timed out after 2s" with the general alert open.

mod common;

use common::daemon::{free_port, last_line, statuses, Server};
use serde_json::Value;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(marker) {
                found.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
            }
        }
    }
    found
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A config with a files component and a `command` component that blocks in `sleep MARKER`
/// while `flag` exists; `extra` goes first (top-level keys).
fn config(dir: &Path, flag: &Path, marker: &str, extra: &str) -> std::path::PathBuf {
    let sample = dir.join("sample");
    std::fs::create_dir_all(&sample).unwrap();
    std::fs::write(sample.join("hello.txt"), b"hello ibs\n").unwrap();
    let path = dir.join("ibs.toml");
    std::fs::write(
        &path,
        format!(
            "tick_seconds = 1\n{extra}\n\
             [[component]]\nname = \"sample\"\nkind = \"files\"\npaths = [{:?}]\n\
             [[component]]\nname = \"slow\"\nkind = \"command\"\n\
             backup = \"if [ -e {} ]; then sleep {marker}; fi; echo slow\"\n",
            sample.display().to_string(),
            flag.display()
        ),
    )
    .unwrap();
    path
}

/// The id of the running backup (the first scheduled one starts at once).
fn running_backup(s: &Server) -> String {
    let v = s.wait_for("a backup running", |v| {
        statuses(v).iter().any(|x| x == "Running")
    });
    v.as_array()
        .unwrap()
        .iter()
        .find(|j| j["status"] == "Running")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn cancel_a_running_backup_through_the_cli_then_back_up_again() {
    let tmp = tempfile::tempdir().unwrap();
    let flag = tmp.path().join("block");
    std::fs::write(&flag, b"").unwrap();
    let marker = format!("86398.{}", std::process::id());
    let cfg = config(tmp.path(), &flag, &marker, "");
    let data = tmp.path().join("data");
    let s = Server::start(&data, free_port(), &["--config", cfg.to_str().unwrap()]);

    let id = running_backup(&s);
    wait_until("the export to run", || !processes_with(&marker).is_empty());
    let asked = Instant::now();
    let out = s.ibs(&["backup", "cancel", &id], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(asked.elapsed() < Duration::from_secs(30));
    assert!(stderr(&out).contains("Canceled"), "{}", stderr(&out));
    let j = s.json(&["backup", "show", &id]);
    assert_eq!(j["status"], "Canceled", "{j}");
    assert_eq!(j["backup_id"], Value::Null, "{j}");
    assert!(j["error"]
        .as_str()
        .unwrap()
        .starts_with("canceled by token#"));
    wait_until("no export process left", || {
        processes_with(&marker).is_empty()
    });
    // A cancel is not a failure.
    assert_eq!(s.json(&["alerts", "list"]), serde_json::json!([]));

    // Nothing half-written was committed: no manifest, no lock left, the repository checks clean.
    let repo = data.join("backups");
    let masb = repo.join("MASBackup");
    let count = |sub: &str| {
        std::fs::read_dir(masb.join(sub))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(count("backups"), 0, "no manifest");
    assert_eq!(count("locks"), 0, "the lock was released");
    let out = s.ibs(
        &[
            "repo",
            "check",
            "--state",
            tmp.path().join("check-state").to_str().unwrap(),
            "--repo",
            repo.to_str().unwrap(),
            "--pfx",
            data.join("certs/ibs-backup.pfx").to_str().unwrap(),
            "--pfx-password-file",
            data.join("certs/ibs-backup.pfx.password").to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "repo check: {}", stderr(&out));

    // Refusals: the ended job (409, exit 6, naming its status), an unknown id (404, exit 8).
    let out = s.ibs(&["backup", "cancel", &id], &[]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("already ended (Canceled)"),
        "{}",
        stderr(&out)
    );
    let out = s.ibs(&["backup", "cancel", "no-such-job"], &[]);
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("job no-such-job not found"),
        "{}",
        stderr(&out)
    );

    // The next backup runs normally.
    std::fs::remove_file(&flag).unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    let out = loop {
        let out = s.ibs(&["backup", "start", "--wait"], &[]);
        // The hourly cleanup may hold the gate for a moment after a job.
        if out.status.code() != Some(6) || Instant::now() > end {
            break out;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(out.status.success(), "{}", stderr(&out));
    let next = last_line(&out);
    assert_eq!(s.json(&["backup", "show", &next])["status"], "Succeeded");
    assert_eq!(count("backups"), 1);
}

#[test]
fn a_backup_over_the_job_timeout_fails_with_the_reason_and_the_general_alert() {
    let tmp = tempfile::tempdir().unwrap();
    let flag = tmp.path().join("block");
    std::fs::write(&flag, b"").unwrap();
    let marker = format!("86397.{}", std::process::id());
    let cfg = config(tmp.path(), &flag, &marker, "job_timeout_seconds = 2");
    let data = tmp.path().join("data");
    let s = Server::start(&data, free_port(), &["--config", cfg.to_str().unwrap()]);

    let id = running_backup(&s);
    s.wait_for("the backup to time out", |v| {
        v.as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == id.as_str() && j["status"] != "Running")
    });
    let j = s.json(&["backup", "show", &id]);
    assert_eq!(j["status"], "Failed", "{j}");
    assert_eq!(j["error"], "timed out after 2s", "{j}");
    assert_eq!(j["alert_class"], "general", "{j}");
    assert_eq!(j["backup_id"], Value::Null, "{j}");
    let alerts = s.json(&["alerts", "list"]);
    let kinds: Vec<&str> = alerts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"backup-failed-general"), "{alerts}");
    wait_until("no export process left", || {
        processes_with(&marker).is_empty()
    });
    assert_eq!(
        std::fs::read_dir(data.join("backups/MASBackup/backups"))
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "nothing committed"
    );
}
