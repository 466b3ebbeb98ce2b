//! Secrets never leak. A full scenario through the real binary with KNOWN secrets: the share
//! password (an SMB location on the test Samba, scripts/samba-test-server.sh), the .pfx password
//! (generated at first start), a database password (a `postgres` component reading a password file),
//! the API token, a webhook URL's password and query token (deliveries fail, so they are logged),
//! plus the wrong passwords used in failure cases; the .pfx itself is sent, base64,
//! to the validation endpoint (`POST /api/v1/backups/ID/validate`). Then every place a secret could
//! surface is scanned: the daemon's stdout/stderr at IBS_LOG=debug, every API listing and record as
//! JSON, every CLI output including failures, the command lines of the daemon and its children
//! while a backup runs, and every byte under the data directory (the state database with its WAL
//! included). Each secret must be absent in plaintext, base64 and hex; the share password must be in
//! the database only sealed (it opens with DATA/secret.key).

mod leak_support;
use leak_support::*;

use base64::Engine as _;
use std::collections::BTreeSet;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ibs");
use ibs_testing::free_port;
use ibs_testing::samba::{shared_server, USER};

#[test]
fn secrets_never_leak() {
    shared_server();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let sample = tmp.path().join("sample");
    std::fs::create_dir_all(&sample).unwrap();
    std::fs::write(sample.join("a.txt"), b"hello, leak test").unwrap();
    let db_password = format!("Db-Pa55-{:016x}", rand::random::<u64>());
    let db_pw_file = tmp.path().join("db.password");
    std::fs::write(&db_pw_file, &db_password).unwrap();
    // A webhook URL with credentials in its userinfo and its query; nothing listens there, so every
    // delivery fails and is logged.
    let hook_password = format!("Hook-Pw-{:012x}", rand::random::<u64>());
    let hook_token = format!("HookTok{:016x}", rand::random::<u64>());
    let hook_url = format!(
        "http://alerts:{hook_password}@127.0.0.1:{}/hook?token={hook_token}",
        free_port()
    );
    let config = tmp.path().join("ibs.toml");
    std::fs::write(
        &config,
        format!(
            "tick_seconds = 1\nwebhook_url = {hook_url:?}\n\
             [[component]]\nname = \"files\"\nkind = \"files\"\npaths = [{sample:?}]\n\
             [[component]]\nname = \"appdb\"\nkind = \"postgres\"\n\
             url = \"postgresql://ibs@127.0.0.1:1/appdb\"\npassword_file = {db_pw_file:?}\n\
             essential_for_recovery = false\n\
             [[component]]\nname = \"slow\"\nkind = \"command\"\n\
             backup = \"sleep 2; cat {}\"\nessential_for_recovery = false\n",
            db_pw_file.display()
        ),
    )
    .unwrap();

    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let log_path = tmp.path().join("daemon.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let daemon = Daemon(
        Command::new(BIN)
            .args(["serve", "--data"])
            .arg(&data)
            .arg("--config")
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--restore-root")
            .arg(std::env::temp_dir())
            .arg("--sample")
            .arg(&sample)
            .env("IBS_LOG", "debug")
            .env_remove("IBS_SHARE_PASSWORD")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let end = Instant::now() + Duration::from_secs(180);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "ibs serve did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = ibs(
        &url,
        None,
        &[
            "token",
            "create",
            "--role",
            "admin",
            "--data",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string();
    let pfx = data.join("certs/ibs-backup.pfx");
    let pfx_pw_file = data.join("certs/ibs-backup.pfx.password");
    let end = Instant::now() + Duration::from_secs(180);
    while !pfx_pw_file.exists() {
        assert!(Instant::now() < end, "bootstrap did not finish");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    let pfx_password = std::fs::read_to_string(&pfx_pw_file)
        .unwrap()
        .trim()
        .to_string();
    assert!(pfx_password.len() >= 12, "a real .pfx password");

    let wrong_share = format!("Wr0ng-share-{:08x}", rand::random::<u32>());
    let wrong_pfx = format!("Wr0ng-pfx-{:08x}", rand::random::<u32>());
    let secrets = vec![
        Secret {
            name: "share password",
            value: smb_password(),
        },
        Secret {
            name: ".pfx password",
            value: pfx_password.clone(),
        },
        Secret {
            name: "database password",
            value: db_password.clone(),
        },
        Secret {
            name: "API token",
            value: token.clone(),
        },
        Secret {
            name: "wrong share password",
            value: wrong_share.clone(),
        },
        Secret {
            name: "wrong .pfx password",
            value: wrong_pfx.clone(),
        },
        Secret {
            name: "webhook URL password",
            value: hook_password.clone(),
        },
        Secret {
            name: "webhook URL token",
            value: hook_token.clone(),
        },
    ];
    let mut scanned = 0usize;
    let mut cli_outputs: Vec<(String, Vec<u8>)> = Vec::new();

    // The SMB location, then a failure case: the same folder with a wrong password.
    let loc = region();
    let out = ibs(
        &url,
        Some(&token),
        &["location", "set", "--path", &loc, "--username", USER],
        &[("IBS_SHARE_PASSWORD", &smb_password())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&both(&out))
    );
    cli_outputs.push(("location set".into(), both(&out)));
    let other = region();
    let out = ibs(
        &url,
        Some(&token),
        &["location", "set", "--path", &other, "--username", USER],
        &[("IBS_SHARE_PASSWORD", &wrong_share)],
    );
    assert!(!out.status.success(), "a wrong share password is refused");
    cli_outputs.push(("location set (wrong password)".into(), both(&out)));
    let out = ibs(&url, Some("ibs_not_a_token"), &["backup", "list"], &[]);
    assert!(!out.status.success());
    cli_outputs.push(("backup list (bad token)".into(), both(&out)));

    // A backup (after the first-start backup has ended: until then this is a 409); the process
    // tree is sampled while it runs.
    let mut cmdlines: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut samples = 0;
    let end = Instant::now() + Duration::from_secs(180);
    let out = loop {
        let mut backup = Command::new(BIN)
            .args(["backup", "start", "--wait"])
            .env("IBS_SERVER", &url)
            .env("IBS_TOKEN", &token)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        while backup.try_wait().unwrap().is_none() {
            for (_, c) in process_tree(daemon.0.id()) {
                cmdlines.insert(c);
            }
            samples += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = backup.wait_with_output().unwrap();
        cli_outputs.push(("backup start --wait".into(), both(&out)));
        if !contains(&out.stderr, b"409") || Instant::now() > end {
            break out;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let backup_id = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .trim()
        .to_string();
    assert!(
        !backup_id.is_empty(),
        "backup start: {}",
        String::from_utf8_lossy(&both(&out))
    );
    assert!(
        cmdlines.iter().any(|c| contains(c, b"sleep")),
        "the component's child process was sampled ({samples} samples): {:?}",
        cmdlines
            .iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
    );
    for c in &cmdlines {
        assert_clean(
            &format!("a command line: {}", String::from_utf8_lossy(c)),
            c,
            &secrets,
            &mut scanned,
        );
    }

    // Restores: with the right .pfx password, and a failure with a wrong one.
    let target = tmp.path().join("restored");
    let out = ibs(
        &url,
        Some(&token),
        &[
            "restore",
            &backup_id,
            "--component",
            "files",
            "--target",
            target.to_str().unwrap(),
            "--pfx",
            pfx.to_str().unwrap(),
            "--pfx-password-file",
            pfx_pw_file.to_str().unwrap(),
        ],
        &[],
    );
    cli_outputs.push(("restore".into(), both(&out)));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&both(&out))
    );
    let out = ibs(
        &url,
        Some(&token),
        &[
            "restore",
            &backup_id,
            "--component",
            "files",
            "--target",
            tmp.path().join("restored2").to_str().unwrap(),
            "--pfx",
            pfx.to_str().unwrap(),
        ],
        &[("IBS_PFX_PASSWORD", &wrong_pfx)],
    );
    assert!(!out.status.success(), "a wrong .pfx password fails");
    cli_outputs.push(("restore (wrong .pfx password)".into(), both(&out)));
    // Validation through the API: the .pfx (base64) and its password in the request body, then a
    // wrong password. Both responses, the job record and its reports are scanned below.
    let pfx_bytes = std::fs::read(&pfx).unwrap();
    let pfx_b64 = base64::engine::general_purpose::STANDARD.encode(&pfx_bytes);
    let validate_path = format!("/api/v1/backups/{backup_id}/validate");
    let resp = post_when_idle(
        port,
        &validate_path,
        &token,
        &serde_json::json!({"pfx": pfx_b64, "pfx_password": pfx_password}).to_string(),
    );
    assert!(
        resp.starts_with(b"HTTP/1.1 202"),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    let validation = body_json(&resp)["id"].as_str().unwrap().to_string();
    cli_outputs.push(("POST validate".into(), resp));
    let end = Instant::now() + Duration::from_secs(300);
    let job = loop {
        let j = body_json(&http_get(
            port,
            &format!("/api/v1/jobs/{validation}"),
            &token,
        ));
        if j["status"] != "Running" {
            break j;
        }
        assert!(Instant::now() < end, "the validation did not end: {j}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // The database component failed at backup time (its server is unreachable): not validated,
    // so the verdict is INCOMPLETE, the job PartialSucceeded.
    assert_eq!(job["status"], "PartialSucceeded", "{job:#}");
    let resp = post_when_idle(
        port,
        &validate_path,
        &token,
        &serde_json::json!({"pfx": pfx_b64, "pfx_password": wrong_pfx}).to_string(),
    );
    assert!(
        resp.starts_with(b"HTTP/1.1 400") && contains(&resp, b"pfx_password"),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    cli_outputs.push(("POST validate (wrong .pfx password)".into(), resp));
    // The .pfx itself: nowhere but its own file (checked in the data directory scan below).
    let pfx_window = pfx_bytes[pfx_bytes.len() / 2..][..48].to_vec();

    for (what, o) in &cli_outputs {
        assert_clean(
            &format!("the output of `ibs {what}`"),
            o,
            &secrets,
            &mut scanned,
        );
    }

    // Every API listing and record.
    let mut paths: Vec<String> = [
        "/api/v1/location",
        "/api/v1/components",
        "/api/v1/backups?limit=1000",
        "/api/v1/jobs?limit=1000",
        "/api/v1/alerts?state=all",
        "/api/v1/audit?limit=1000",
        "/api/v1/readiness",
        "/api/v1/maintenance",
        "/api/v1/openapi.json",
        "/metrics",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let jobs = body_json(&http_get(port, "/api/v1/jobs?limit=1000", &token));
    for j in jobs.as_array().unwrap() {
        paths.push(format!("/api/v1/jobs/{}", j["id"].as_str().unwrap()));
    }
    paths.push(format!("/api/v1/jobs/{validation}/report"));
    paths.push(format!("/api/v1/jobs/{validation}/report.html"));
    let backups = body_json(&http_get(port, "/api/v1/backups?limit=1000", &token));
    for b in backups.as_array().unwrap() {
        paths.push(format!("/api/v1/backups/{}", b["id"].as_str().unwrap()));
    }
    assert!(
        jobs.as_array().unwrap().len() >= 3,
        "backups and restores: {jobs}"
    );
    for p in &paths {
        let resp = http_get(port, p, &token);
        // The token is in our request, never in the response.
        assert_clean(&format!("GET {p}"), &resp, &secrets, &mut scanned);
        assert!(!contains(&resp, &pfx_window), "LEAK: the .pfx in GET {p}");
    }
    // The job records mention the database component's failure, not its password.
    let jobs_text = jobs.to_string();
    assert!(jobs_text.contains("appdb"), "{jobs_text}");

    // Stop the daemon, then scan its log and every byte under the data directory.
    drop(daemon);
    let log = std::fs::read(&log_path).unwrap();
    assert!(
        contains(&log, b"DEBUG") || contains(&log, b"debug"),
        "the daemon logged at debug level"
    );
    assert!(
        contains(&log, b"alert webhook"),
        "a webhook delivery failed and was logged (so the URL had a chance to leak)"
    );
    assert_clean("the daemon's stdout/stderr", &log, &secrets, &mut scanned);
    assert!(!contains(&log, &pfx_window), "LEAK: the .pfx in the log");
    assert!(
        !contains(&log, pfx_b64.as_bytes()),
        "LEAK: the .pfx (base64) in the log"
    );
    let mut data_files = 0;
    let mut reports = 0;
    for f in files_under(&data) {
        let bytes = std::fs::read(&f).unwrap();
        reports += usize::from(f.parent().is_some_and(|d| d.ends_with("reports")));
        if f != pfx {
            assert!(
                !contains(&bytes, &pfx_window) && !contains(&bytes, pfx_b64.as_bytes()),
                "LEAK: the .pfx in {}",
                f.display()
            );
        }
        if f == pfx_pw_file {
            // The one designated place of the generated .pfx password (mode 0600, to be moved off
            // the host); the other secrets must not be there either.
            assert_eq!(bytes.trim_ascii(), pfx_password.as_bytes());
            let others: Vec<Secret> = secrets
                .iter()
                .filter(|s| s.name != ".pfx password")
                .map(|s| Secret {
                    name: s.name,
                    value: s.value.clone(),
                })
                .collect();
            assert_clean(&f.display().to_string(), &bytes, &others, &mut scanned);
            continue;
        }
        assert_clean(&f.display().to_string(), &bytes, &secrets, &mut scanned);
        data_files += 1;
    }
    assert_eq!(
        reports, 2,
        "the validation's JSON and HTML reports were scanned"
    );
    // The share password is in the database, sealed: it opens with DATA/secret.key.
    let db = ibs_controller::db::Db::open(&data.join("state.sqlite")).unwrap();
    let loc: serde_json::Value = db.get_meta("location").unwrap().unwrap();
    let sealed = loc["password_sealed"]
        .as_str()
        .expect("a sealed share password");
    let sb =
        ibs_controller::secretbox::SecretBox::open_or_create(&data.join("secret.key")).unwrap();
    assert_eq!(sb.open("share-password", sealed).unwrap(), smb_password());
    println!(
        "secrets_leak: {} secrets x {} encodings, {scanned} places scanned ({} CLI outputs, {} API responses, {} command lines over {samples} samples, {data_files} data files, the daemon log)",
        secrets.len(),
        forms("x").len(),
        cli_outputs.len(),
        paths.len(),
        cmdlines.len()
    );
}

/// `http_post` again while the controller answers 409 because another job (the retention cleanup
/// it starts on its own) is running, for up to a minute; any other answer is returned as it is.
fn post_when_idle(port: u16, path: &str, token: &str, body: &str) -> Vec<u8> {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let resp = http_post(port, path, token, body);
        let busy = resp.starts_with(b"HTTP/1.1 409")
            && String::from_utf8_lossy(&resp).contains("\"running_job\"");
        if !busy || Instant::now() > end {
            return resp;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
