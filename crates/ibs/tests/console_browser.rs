//! The web console (issue 15, ADR 0030) in a real browser: Debian's headless Chromium driven by
//! Selenium (`console_browser.py` beside this file, chromedriver from Debian on a free port)
//! against a real `ibs serve` with a real repository started here. A missing chromium,
//! chromedriver or Selenium is a failure, never a skip (`scripts/ensure-deps.sh` installs them).
//!
//! Flows: sign in; the overview shows the latest backup; "Backup now" and watch it complete; an
//! invalid frequency shows an inline error and saves nothing; lowering retention asks for
//! confirmation listing the backups it deletes; close an alert; a reader sees no write controls
//! and a forged POST with a reader's session gets 403; sign out, after which the session no
//! longer works; no browser console errors on any page. Each page's screenshot is written to
//! `target/console-screenshots/` (and to `docs/console/` with `IBS_UPDATE_SCREENSHOTS=1`).

mod common;

use common::daemon::{free_port, last_line, statuses, Server};
use std::path::Path;
use std::process::Command;

#[test]
fn the_console_in_chromium() {
    let tmp = tempfile::tempdir().unwrap();
    let sample = tmp.path().join("sample");
    std::fs::create_dir_all(sample.join("etc")).unwrap();
    std::fs::write(sample.join("etc/app.conf"), b"setting = 1\n").unwrap();
    let big: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(sample.join("big.bin"), &big).unwrap();
    let data = tmp.path().join("data");
    let port = free_port();
    let s = Server::start(&data, port, &["--sample", sample.to_str().unwrap()]);
    let first = s.wait_for("the first backup", |v| {
        statuses(v).iter().any(|x| x == "Succeeded")
    });
    let reader = last_line(&s.ibs(
        &[
            "token",
            "create",
            "--role",
            "reader",
            "--data",
            data.to_str().unwrap(),
        ],
        &[],
    ));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let shots = root.join("target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console_browser.py"))
        .env("IBS_URL", &s.url)
        .env("IBS_ADMIN", s.token.as_deref().unwrap())
        .env("IBS_READER", &reader)
        .env("IBS_DATA", &data)
        .env("IBS_FIRST", first[0]["id"].as_str().unwrap())
        .env("IBS_SHOTS", &shots);
    if std::env::var_os("IBS_UPDATE_SCREENSHOTS").is_some() {
        let docs = root.join("docs/console");
        std::fs::create_dir_all(&docs).unwrap();
        cmd.env("IBS_DOCS", docs);
    } else {
        cmd.env_remove("IBS_DOCS");
    }
    let out = cmd.output().expect("python3 runs");
    let log = std::fs::read_to_string(Server::log_path(&data, port)).unwrap_or_default();
    assert!(
        out.status.success(),
        "the browser flows failed\n--- stdout\n{}--- stderr\n{}--- daemon log (tail)\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        log.lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("console flows: all passed"));
}
