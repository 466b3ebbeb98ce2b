//! End to end through the real binary: `ibs location clear` against `ibs serve` is refused (exit 6)
//! while the first backup runs, then resets the location (no share, no credentials, automatic
//! backups off) keeping the backup history; no alert follows from a deliberate clear; setting the
//! location again with `ibs location set` and backing up works.

mod common;

use common::daemon::{free_port, last_line, statuses, Server};
use serde_json::Value;
use std::time::Duration;

#[test]
fn location_clear_through_the_cli_refused_while_running_then_reconfigured() {
    let tmp = tempfile::tempdir().unwrap();
    let sample = tmp.path().join("sample");
    std::fs::create_dir_all(&sample).unwrap();
    std::fs::write(sample.join("hello.txt"), b"hello ibs\n").unwrap();
    let config = tmp.path().join("ibs.toml");
    std::fs::write(
        &config,
        format!(
            "tick_seconds = 1\n\
             [[component]]\nname = \"sample\"\nkind = \"files\"\npaths = [{:?}]\n\
             [[component]]\nname = \"slow\"\nkind = \"command\"\nbackup = \"sleep 8; echo slow\"\n\
             essential_for_recovery = false\n",
            sample.display().to_string()
        ),
    )
    .unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(&data, free_port(), &["--config", config.to_str().unwrap()]);

    // The first scheduled backup runs at once and holds the gate for seconds: the clear is refused.
    s.wait_for("the first backup running", |v| {
        statuses(v).iter().any(|x| x == "Running")
    });
    let out = s.ibs(&["location", "clear"], &[]);
    assert_eq!(
        out.status.code(),
        Some(6),
        "409 while a job runs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = s.json(&["location", "show"]);
    let path = before["path"]
        .as_str()
        .expect("bootstrap location")
        .to_string();
    s.wait_for("the first backup to end", |v| {
        statuses(v).iter().all(|x| x != "Running") && !statuses(v).is_empty()
    });

    let out = s.ibs_when_idle(&["location", "clear"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OFF"));
    let v = s.json(&["location", "show"]);
    assert_eq!(v["path"], Value::Null);
    assert_eq!(v["certificate"], Value::Null);
    assert_eq!(v["password_set"], Value::Bool(false));
    assert_eq!(v["scheduler_enabled"], Value::Bool(false));
    assert_eq!(v["next_backup_time"], Value::Null);
    let backups = s.json(&["backup", "list"]);
    assert_eq!(
        backups.as_array().unwrap().len(),
        1,
        "history kept: {backups}"
    );
    // Ticks run every second; a deliberate clear raises nothing.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(s.json(&["alerts", "list"]), serde_json::json!([]));
    assert_eq!(s.json(&["backup", "list"]).as_array().unwrap().len(), 1);

    // Set it again (the embedded certificate) with the scheduler on; a backup works.
    let cer = data.join("certs/ibs-backup.cer");
    let out = s.ibs(
        &[
            "location",
            "set",
            "--path",
            &path,
            "--cert",
            cer.to_str().unwrap(),
            "--scheduler",
            "on",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = s.json(&["location", "show"]);
    assert_eq!(v["path"], Value::String(path));
    assert_eq!(v["scheduler_enabled"], Value::Bool(true));
    assert!(v["next_backup_time"].is_i64());
    let out = s.ibs_when_idle(&["backup", "start", "--wait"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = last_line(&out);
    assert_eq!(s.json(&["backup", "show", &id])["status"], "Succeeded");
}
