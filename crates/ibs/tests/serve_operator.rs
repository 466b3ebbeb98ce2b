//! The operator's view of `ibs serve` and the controller commands (issue 17, ADR 0027): the first-run
//! banner's hints work and every URL it prints answers; the log has one line per job start and end
//! (JSON with `--log-format json`, never colour codes in a file); controller commands end quietly on
//! a closed pipe, report JSON errors, and exit with the same codes as `ibs repo` for the same
//! mistake; `restore` refuses to overwrite differing files; `token create --data WRONG` creates
//! nothing; maintenance prints tables.

mod common;

use common::daemon::{free_port, last_line, statuses, Server, BIN};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `GET path` on the daemon; (status, body).
fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

#[test]
fn first_run_log_pipes_json_errors_exit_codes_and_restore_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let sample = tmp.path().join("sample");
    std::fs::create_dir_all(sample.join("nested")).unwrap();
    std::fs::write(sample.join("hello.txt"), b"hello ibs\n").unwrap();
    std::fs::write(sample.join("nested/two.txt"), b"two\n").unwrap();
    let data = tmp.path().join("data");
    let port = free_port();
    // The default log level (IBS_LOG unset), as JSON lines.
    let s = Server::start_logging(
        &data,
        port,
        &["--sample", sample.to_str().unwrap(), "--log-format", "json"],
        None,
    );
    let list = s.wait_for("the first backup", |v| {
        statuses(v).iter().any(|x| x == "Succeeded")
    });
    let id = list[0]["id"].as_str().unwrap().to_string();

    // The banner: every URL it prints answers, and the hint names a command that runs.
    // The job's end is logged just after its record is written: wait for that line.
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let log = loop {
        let log = std::fs::read_to_string(Server::log_path(&data, port)).unwrap();
        if log
            .lines()
            .any(|l| l.contains("job ended") && l.contains(&id))
        {
            break log;
        }
        assert!(std::time::Instant::now() < end, "no job end line:\n{log}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let banner = log
        .lines()
        .find(|l| l.starts_with("ibs controller:"))
        .unwrap_or_else(|| panic!("no banner:\n{log}"));
    let mut urls = 0;
    for word in banner.split([' ', '(', ')', ',']) {
        if let Some(rest) = word.strip_prefix(&s.url) {
            let (status, body) = http_get(port, rest);
            assert_eq!(status, 200, "{word} answers {status}: {body}");
            urls += 1;
        }
    }
    assert!(urls >= 3, "{banner}");
    let (_, index) = http_get(port, "/api/v1");
    let index: Value = serde_json::from_str(&index).unwrap();
    assert_eq!(index["openapi"], "/api/v1/openapi.json", "{index}");
    let hint = log
        .lines()
        .find(|l| l.starts_with("List backups:"))
        .unwrap_or_else(|| panic!("no hint:\n{log}"));
    let real = std::fs::canonicalize(BIN).unwrap();
    assert!(
        hint.contains(&format!("{} backup list", real.display())),
        "the hint must name this binary (ibs is not on PATH): {hint}"
    );

    // One JSON log line per job start and end, with what an operator needs; no colour codes.
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log}"
    );
    let events: Vec<Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let started = events
        .iter()
        .find(|e| e["message"] == "job started" && e["job"] == id.as_str())
        .unwrap_or_else(|| panic!("no start line for {id}:\n{log}"));
    assert_eq!(started["kind"], "backup");
    assert_eq!(started["level"], "INFO");
    let ended = events
        .iter()
        .find(|e| e["message"] == "job ended" && e["job"] == id.as_str())
        .unwrap_or_else(|| panic!("no end line for {id}:\n{log}"));
    assert_eq!(ended["status"], "Succeeded", "{ended}");
    assert!(ended["duration_ms"].is_u64(), "{ended}");
    assert!(ended["bytes_read"].as_u64().unwrap() >= 14, "{ended}");
    assert!(ended["bytes_stored"].is_u64(), "{ended}");

    // A closed stdout: quiet, exit 0.
    for args in [
        &["backup", "list"][..],
        &["backup", "list", "--json"],
        &["alerts", "list"],
    ] {
        let out = Command::new("bash")
            .arg("-c")
            .arg(r#"{ sleep 0.3; exec "$0" "$@"; } | true; echo "exit=${PIPESTATUS[0]}" >&2"#)
            .arg(BIN)
            .args(args)
            .env("IBS_SERVER", &s.url)
            .env("IBS_TOKEN", s.token.as_ref().unwrap())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("exit=0") && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }

    // JSON errors and the shared codes: not found 8, access denied 9, unreachable 11.
    let out = s.ibs(
        &["backup", "show", "20200101T000000Z-0a1b2c3d", "--json"],
        &[],
    );
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    let v: Value =
        serde_json::from_slice(&out.stderr).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(v["error"]["code"], "not-found", "{v}");
    assert_eq!(v["error"]["exit_code"], 8, "{v}");
    let out = s.ibs(&["backup", "list"], &[("IBS_TOKEN", "not-a-token")]);
    assert_eq!(out.status.code(), Some(9), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not valid"),
        "{}",
        text(&out)
    );
    let out = Command::new(BIN)
        .args(["backup", "list"])
        .env("IBS_SERVER", format!("http://127.0.0.1:{}", free_port()))
        .env_remove("IBS_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(11), "{}", text(&out));

    // Restore: wrong .pfx password is 5 here as in `ibs repo restore`; a .cer is no .pfx (5).
    let pfx = data.join("certs/ibs-backup.pfx");
    let cer = data.join("certs/ibs-backup.cer");
    let pw = std::fs::read_to_string(data.join("certs/ibs-backup.pfx.password")).unwrap();
    let target = std::env::temp_dir().join(format!("ibs-operator-{}", port));
    let _ = std::fs::remove_dir_all(&target);
    let restore = |key: &Path, password: &str, extra: &[&str]| {
        let mut a = vec![
            "restore",
            &id,
            "--component",
            "sample",
            "--target",
            target.to_str().unwrap(),
            "--pfx",
            key.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        s.ibs(&a, &[("IBS_PFX_PASSWORD", password)])
    };
    let out = restore(&pfx, "wrong password", &[]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let out = restore(&cer, pw.trim(), &[]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(!target.exists(), "a refused restore created the target");
    let out = restore(&pfx, pw.trim(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("into {}", target.display()))
            && err.contains("2 files, 14 B restored"),
        "{}",
        text(&out)
    );
    // Again over an untouched restore: nothing differs, it runs.
    let out = restore(&pfx, pw.trim(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    // An edited file: refused before anything is written, naming the file and the flag.
    std::fs::write(target.join("hello.txt"), b"edited\n").unwrap();
    std::fs::remove_file(target.join("nested/two.txt")).unwrap();
    // A refusal, as HTTP 409 is: exit 6, and the job records the kind (`error_code`), no alert.
    let out = restore(&pfx, pw.trim(), &[]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&target.join("hello.txt").display().to_string())
            && err.contains("--overwrite"),
        "{}",
        text(&out)
    );
    let refused = last_line(&out);
    assert!(refused.starts_with("restore-"), "{}", text(&out));
    let job = s.json(&["jobs", "show", &refused]);
    assert_eq!(job["status"], "Failed", "{job}");
    assert_eq!(job["error_code"], "conflict", "{job}");
    assert!(job["alert_class"].is_null(), "{job}");
    // `ibs backup show` on a restore's id says which command shows it.
    let out = s.ibs(&["backup", "show", &refused], &[]);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("ibs jobs show {refused}")),
        "{}",
        text(&out)
    );
    let out = restore(&pfx, pw.trim(), &["--json"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error_code"], "conflict", "{v}");
    assert_eq!(
        std::fs::read(target.join("hello.txt")).unwrap(),
        b"edited\n"
    );
    assert!(
        !target.join("nested/two.txt").exists(),
        "a refused restore wrote a file"
    );
    let out = restore(&pfx, pw.trim(), &["--overwrite"]);
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("into {}", target.display()))
            && err.contains("2 files, 14 B restored"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read(target.join("hello.txt")).unwrap(),
        b"hello ibs\n"
    );
    let _ = std::fs::remove_dir_all(&target);

    // Maintenance prints tables with ISO times.
    let out = s.ibs(&["maintenance", "begin", "--operation", "update"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let o = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        o.starts_with("OPERATION") && o.contains("update") && o.contains("active"),
        "{o}"
    );
    assert!(
        o.contains('T') && o.contains('Z') && !o.contains('{'),
        "{o}"
    );
    let out = s.ibs(&["maintenance", "end", "--outcome", "succeeded"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let o = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!o.contains("no maintenance operation is active"), "{o}");
    let out = s.ibs(&["maintenance", "status"], &[]);
    let o = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        o.contains("no maintenance operation is active") && o.contains("backup running"),
        "{o}"
    );

    // A failed operation: an operator cannot end it again (that is clearing it, exit 9) nor clear
    // it; an admin clears it.
    let op = s.ibs(
        &[
            "token",
            "create",
            "--role",
            "operator",
            "--data",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert!(op.status.success(), "{}", text(&op));
    let op_token = last_line(&op);
    let as_op = [("IBS_TOKEN", op_token.as_str())];
    let out = s.ibs(&["maintenance", "begin", "--operation", "fru"], &as_op);
    assert!(out.status.success(), "{}", text(&out));
    let out = s.ibs(&["maintenance", "end", "--outcome", "failed"], &as_op);
    assert!(out.status.success(), "{}", text(&out));
    let out = s.ibs(&["maintenance", "end", "--outcome", "succeeded"], &as_op);
    assert_eq!(out.status.code(), Some(9), "{}", text(&out));
    assert!(text(&out).contains("maintenance clear"), "{}", text(&out));
    let out = s.ibs(&["maintenance", "clear"], &as_op);
    assert_eq!(out.status.code(), Some(9), "{}", text(&out));
    let out = s.ibs(&["maintenance", "clear"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let out = s.ibs(&["maintenance", "status"], &[]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no maintenance operation is active"),
        "{}",
        text(&out)
    );

    // token create on a directory with no controller data: refused, nothing created.
    let wrong = tmp.path().join("not-the-data");
    let out = Command::new(BIN)
        .args(["token", "create", "--role", "admin", "--data"])
        .arg(&wrong)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no controller data"),
        "{}",
        text(&out)
    );
    assert!(!wrong.exists(), "token create created {}", wrong.display());
    assert_eq!(last_line(&out), "");
}

#[test]
fn with_configured_components_the_banner_has_no_sample_and_creates_none() {
    let tmp = tempfile::tempdir().unwrap();
    let etc = tmp.path().join("etc-data");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("app.conf"), b"x=1\n").unwrap();
    let config = tmp.path().join("ibs.toml");
    std::fs::write(
        &config,
        format!(
            "[[component]]\nname = \"etc\"\nkind = \"files\"\npaths = [\"{}\"]\n",
            etc.display()
        ),
    )
    .unwrap();
    let data = tmp.path().join("data");
    let port = free_port();
    let s = Server::start(&data, port, &["--config", config.to_str().unwrap()]);
    s.wait_for("the first backup", |v| {
        statuses(v).iter().any(|x| x == "Succeeded")
    });
    let log = std::fs::read_to_string(Server::log_path(&data, port)).unwrap();
    assert!(log.contains("FIRST START"), "{log}");
    assert!(
        !log.contains("Component 'sample'"),
        "the banner mentions the sample:\n{log}"
    );
    assert!(!data.join("sample").exists(), "DATA/sample was created");
}
