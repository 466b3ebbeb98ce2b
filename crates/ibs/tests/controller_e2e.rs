//! End to end through the real binary: `ibs serve` on embedded defaults with a temporary sample
//! folder, then the CLI client against it: first backup, list, on-demand backup with --wait,
//! restore byte-identical, a vanished location raising the Path alert and closing it on recovery,
//! a `kill -9` during a running job leaving it Interrupted after restart, the Authentication alert
//! from a real Samba share, TLS, and the alert webhook.

mod common;

use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{free_port, last_line, statuses, tree, Server, BIN};

#[test]
fn serve_backup_restore_and_alerts_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let sample = tmp.path().join("sample");
    std::fs::create_dir_all(sample.join("nested")).unwrap();
    std::fs::write(sample.join("hello.txt"), b"hello ibs\n").unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(sample.join("nested/big.bin"), &big).unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(&data, free_port(), &["--sample", sample.to_str().unwrap()]);

    // The first backup runs immediately on embedded defaults.
    let list = s.wait_for("the first backup", |v| {
        statuses(v).iter().any(|x| x == "Succeeded")
    });
    assert_eq!(list[0]["trigger"], "scheduled");
    assert_eq!(list[0]["recovery_ready"], true);

    // On-demand with --wait: the last line is the backup id, and it is final.
    let out = s.ibs(&["backup", "start", "--wait"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = last_line(&out);
    let shown = s.json(&["backup", "show", &id]);
    assert_eq!(shown["status"], "Succeeded");
    assert!(shown["backup_id"].is_string());

    // Restore one component, byte-identical.
    let target = tmp.path().join("restored");
    let pw = std::fs::read_to_string(data.join("certs/ibs-backup.pfx.password")).unwrap();
    let pfx = data.join("certs/ibs-backup.pfx");
    let out = s.ibs(
        &[
            "restore",
            &id,
            "--component",
            "sample",
            "--target",
            target.to_str().unwrap(),
            "--pfx",
            pfx.to_str().unwrap(),
        ],
        &[("IBS_PFX_PASSWORD", pw.trim())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tree(&target), tree(&sample));

    // The location vanishes: the backup fails with the Path alert.
    let loc = data.join("backups");
    let moved = data.join("backups.moved");
    std::fs::rename(&loc, &moved).unwrap();
    let out = s.ibs(&["backup", "start", "--wait"], &[]);
    assert_eq!(
        out.status.code(),
        Some(12),
        "path failures exit 12: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let alerts = s.json(&["alerts", "list"]);
    let open: Vec<&str> = alerts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(open, vec!["backup-failed-path"], "{alerts}");
    assert_eq!(
        alerts[0]["title"],
        "Backup failed due to a fault in the path."
    );
    // An operator closes it and reopens it through the CLI; an unknown id is not found (exit 8).
    let id = alerts[0]["id"].as_i64().unwrap().to_string();
    let closed = s.json(&["alerts", "close", &id]);
    assert_eq!(closed["state"], "closed", "{closed}");
    assert_eq!(s.json(&["alerts", "list"]), serde_json::json!([]));
    let reopened = s.json(&["alerts", "reopen", &id]);
    assert_eq!(reopened["state"], "open", "{reopened}");
    let open = s.json(&["alerts", "list"]);
    assert_eq!(open[0]["id"].as_i64().unwrap().to_string(), id, "{open}");
    let out = s.ibs(&["alerts", "reopen", "987654"], &[]);
    assert_eq!(
        out.status.code(),
        Some(8),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // It comes back: the next backup succeeds and closes the alert.
    std::fs::rename(&moved, &loc).unwrap();
    let out = s.ibs(&["backup", "start", "--wait"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.json(&["alerts", "list"]), serde_json::json!([]));
    let all = s.json(&["alerts", "list", "--all"]);
    assert_eq!(all[0]["state"], "closed");

    // Bad input through the CLI: a 400 with the field.
    let out = s.ibs(&["location", "set", "--frequency-hours", "0"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("frequency_hours"));
    // No token: 401.
    let out = Command::new(BIN)
        .args(["backup", "list"])
        .env("IBS_SERVER", &s.url)
        .env_remove("IBS_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    drop(s);
}

#[test]
fn a_job_running_at_a_crash_is_interrupted_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let flag = tmp.path().join("slow");
    std::fs::write(&flag, b"").unwrap();
    let config = tmp.path().join("ibs.toml");
    let mut f = std::fs::File::create(&config).unwrap();
    writeln!(
        f,
        "tick_seconds = 1\n[[component]]\nname = \"export\"\nkind = \"command\"\nbackup = \"if [ -f {0} ]; then sleep 60; fi; echo exported\"\nrestore = \"cat > /dev/null\"",
        flag.display()
    )
    .unwrap();
    drop(f);
    let data = tmp.path().join("data");
    let port = free_port();
    let mut s = Server::start(&data, port, &["--config", config.to_str().unwrap()]);
    s.wait_for("a running job", |v| {
        statuses(v).iter().any(|x| x == "Running")
    });
    s.child.kill().unwrap(); // SIGKILL
    s.child.wait().unwrap();
    std::fs::remove_file(&flag).unwrap();

    let s = Server::start(&data, port, &["--config", config.to_str().unwrap()]);
    let list = s.json(&["backup", "list"]);
    assert_eq!(statuses(&list), vec!["Interrupted"], "{list}");
    // The restarted daemon's first tick may run its hourly retention cleanup (it takes the
    // repository lock, so it lasts a moment); an on-demand backup is refused with 409 meanwhile.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let out = loop {
        let out = s.ibs(&["backup", "start", "--wait"], &[]);
        let busy = String::from_utf8_lossy(&out.stderr).contains("retention cleanup");
        if out.status.success() || !busy || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    assert!(
        out.status.success(),
        "the next backup succeeds: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = s.json(&["backup", "list"]);
    assert_eq!(statuses(&list), vec!["Succeeded", "Interrupted"], "{list}");
}

/// The controller against a real Samba share: the share password is stored (encrypted) when the
/// location is set; when the share starts refusing it, the backup fails with the Authentication
/// alert; once the password works again, the next backup succeeds and closes the alert.
#[test]
fn smb_password_failure_raises_and_clears_the_authentication_alert() {
    const DIR: &str = "/tmp/ibs-samba-ctl";
    const PORT: u16 = 4458;
    ibs_testing::samba::script(&["start", DIR, &PORT.to_string()]);
    let (_region, loc) = ibs_testing::samba::region(&Path::new(DIR).join("share"), "backup", PORT);
    let tmp = tempfile::tempdir().unwrap();
    let sample = tmp.path().join("sample");
    std::fs::create_dir_all(&sample).unwrap();
    std::fs::write(sample.join("f.txt"), b"on the share\n").unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(&data, free_port(), &["--sample", sample.to_str().unwrap()]);
    s.wait_for("the first backup", |v| {
        statuses(v).iter().any(|x| x == "Succeeded")
    });

    let password = ibs_testing::samba::password();
    let out = s.ibs(
        &[
            "location",
            "set",
            "--path",
            &loc,
            "--username",
            ibs_testing::samba::USER,
        ],
        &[("IBS_SHARE_PASSWORD", &password)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = s.ibs(&["backup", "start", "--wait"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(Path::new(DIR)
        .join("share")
        .join(loc.rsplit('/').next().unwrap())
        .join("MASBackup/config")
        .is_file());

    // `store prune` finds files ibs did not create inside MASBackup, whatever their names, and
    // deletes only those; the sibling folders of the region stay untouched.
    let region_dir = Path::new(DIR)
        .join("share")
        .join(loc.rsplit('/').next().unwrap());
    let mas = region_dir.join("MASBackup");
    std::fs::create_dir_all(mas.join("old exports")).unwrap();
    std::fs::write(mas.join("old exports/Notes 2026.docx"), b"x").unwrap();
    std::fs::write(mas.join("readme.txt"), b"x").unwrap();
    std::fs::create_dir_all(region_dir.join("switch")).unwrap();
    std::fs::write(region_dir.join("switch/tor-1 config.txt"), b"keep").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let open = std::fs::Permissions::from_mode(0o777);
        std::fs::set_permissions(mas.join("old exports"), open.clone()).unwrap();
        std::fs::set_permissions(&mas, open).unwrap();
    }
    let dry = s.json(&["store", "prune", "--dry-run"]);
    assert_eq!(
        dry["paths"],
        serde_json::json!([
            "MASBackup/old exports/Notes 2026.docx",
            "MASBackup/readme.txt"
        ]),
        "{dry}"
    );
    assert!(mas.join("readme.txt").exists(), "a dry run deletes nothing");
    let done = s.json(&["store", "prune"]);
    assert_eq!(done["paths"].as_array().unwrap().len(), 2, "{done}");
    assert!(!mas.join("old exports/Notes 2026.docx").exists());
    assert!(!mas.join("readme.txt").exists());
    assert!(region_dir.join("switch/tor-1 config.txt").exists());
    assert!(mas.join("config").is_file(), "repository objects are kept");

    // The share now refuses the stored password.
    ibs_testing::samba::set_password(DIR, "a-rotated-password-1");
    let out = s.ibs(&["backup", "start", "--wait"], &[]);
    assert_eq!(
        out.status.code(),
        Some(13),
        "authentication failures exit 13: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let alerts = s.json(&["alerts", "list"]);
    let kinds: Vec<&str> = alerts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["backup-failed-authentication"], "{alerts}");
    assert_eq!(
        alerts[0]["title"],
        "Backup failed due to authentication issue."
    );
    assert!(
        !alerts.to_string().contains(&password),
        "the password never appears in an alert"
    );

    // The password works again: success closes the alert.
    ibs_testing::samba::set_password(DIR, &password);
    let out = s.ibs(&["backup", "start", "--wait"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.json(&["alerts", "list"]), serde_json::json!([]));
    drop(s);
    ibs_testing::samba::script(&["stop", DIR]);
}

/// `ibs serve --tls-cert --tls-key` serves the API over TLS only; the CLI client trusts a
/// self-signed controller certificate through $IBS_CA_CERT.
#[test]
fn tls_serves_the_api_with_a_certificate_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) =
        common::daemon::self_signed_tls(tmp.path(), &["basicConstraints=critical,CA:FALSE"]);
    let sample = tmp.path().join("sample");
    std::fs::create_dir_all(&sample).unwrap();
    std::fs::write(sample.join("f"), b"x").unwrap();
    let port = free_port();
    let mut s = Server::start(
        &tmp.path().join("data"),
        port,
        &[
            "--sample",
            sample.to_str().unwrap(),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    s.url = format!("https://127.0.0.1:{port}");
    let ca = cert.to_str().unwrap().to_string();
    let out = s.ibs(&["backup", "list", "--json"], &[("IBS_CA_CERT", &ca)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .is_array());
    // Without trusting the certificate the client refuses the connection.
    let out = s.ibs(&["backup", "list"], &[]);
    assert!(!out.status.success());
    // Plain HTTP on the TLS port gets no API answer.
    let plain = Command::new("curl")
        .args(["-s", "-m", "5", &format!("http://127.0.0.1:{port}/healthz")])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&plain.stdout).contains("ok"),
        "{}",
        String::from_utf8_lossy(&plain.stdout)
    );
    let tls = Command::new("curl")
        .args([
            "-s",
            "-m",
            "5",
            "--cacert",
            &ca,
            &format!("https://127.0.0.1:{port}/healthz"),
        ])
        .output()
        .unwrap();
    assert!(
        tls.status.success(),
        "curl over TLS: {}",
        String::from_utf8_lossy(&tls.stderr)
    );
}

/// A minimal HTTP endpoint that records the bodies POSTed to it.
fn webhook_receiver() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use std::io::{BufRead, BufReader, Read};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let store = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            if reader.read_exact(&mut body).is_ok() {
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    store.lock().unwrap().push(v);
                }
            }
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (port, got)
}

/// `webhook_url` in the config: every alert raise and close is POSTed as JSON.
#[test]
fn the_webhook_receives_alert_raise_and_close() {
    let (hook_port, got) = webhook_receiver();
    let tmp = tempfile::tempdir().unwrap();
    let sample = tmp.path().join("sample");
    std::fs::create_dir_all(&sample).unwrap();
    std::fs::write(sample.join("f"), b"x").unwrap();
    let config = tmp.path().join("ibs.toml");
    std::fs::write(
        &config,
        format!("webhook_url = \"http://127.0.0.1:{hook_port}/hook\"\n"),
    )
    .unwrap();
    let s = Server::start(
        &tmp.path().join("data"),
        free_port(),
        &[
            "--config",
            config.to_str().unwrap(),
            "--sample",
            sample.to_str().unwrap(),
        ],
    );
    s.wait_for("the first backup", |v| {
        statuses(v).iter().any(|x| x == "Succeeded")
    });
    // Turning the scheduler off raises the "automatic backups disabled" warning; on closes it.
    let out = s.ibs(&["location", "set", "--scheduler", "off"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wait = |event: &str| {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let events: Vec<Value> = got.lock().unwrap().clone();
            if let Some(e) = events.iter().find(|e| e["event"] == event) {
                return e.clone();
            }
            assert!(Instant::now() < end, "no {event:?} webhook; got {events:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let raised = wait("raised");
    assert!(
        raised["alert"]["kind"]
            .as_str()
            .unwrap()
            .contains("disabled"),
        "{raised}"
    );
    let out = s.ibs(&["location", "set", "--scheduler", "on"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let closed = wait("closed");
    assert_eq!(closed["alert"]["kind"], raised["alert"]["kind"]);
}
