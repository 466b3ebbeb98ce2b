//! The web console (issue 15, ADR 0030) in a real browser: Debian's headless Chromium driven by
//! Selenium (`console_browser.py` beside this file, chromedriver from Debian on a free port)
//! against a real `ibs serve` with a real repository started here. A missing chromium,
//! chromedriver or Selenium is a failure, never a skip (`scripts/ensure-deps.sh` installs them).
//!
//! Flows: sign in (the form's login-CSRF guard included); the overview shows the latest backup;
//! times in the browser's zone with the UTC value on hover; Tab to "Backup now", press Enter and
//! watch it complete; validate that backup with its .pfx (a wrong password refused beside the
//! field) and download the report; restore one component with the .pfx and compare the restored
//! file; an invalid frequency shows an inline error and saves nothing; lowering retention asks for
//! confirmation listing the backups it deletes; close and reopen an alert; maintenance begin and
//! end; the verification view and "Verify now"; the components view shows no hook or command; a
//! .pfx uploaded as the certificate is refused as a private key, a bad path beside its field, a
//! new folder passes the accessibility test; a reader sees no write controls on any page and a
//! forged POST with a reader's session gets 403; sign out, after which the session no longer
//! works; each main page at phone width without sideways scrolling; no browser console errors on
//! any page; the typed .pfx password is in neither the data directory nor the daemon's log.
//! Each page's screenshot is written to `target/console-screenshots/` (and to
//! `docs/console/` with `IBS_UPDATE_SCREENSHOTS=1`).

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
    // The component has a hook: the components page must say it is set and never show it.
    let config = tmp.path().join("ibs.toml");
    std::fs::write(
        &config,
        format!(
            "[[component]]\nname = \"sample\"\nkind = \"files\"\npaths = [\"{}\"]\n\
             pre_hook = \"true CONSOLE-PRE-HOOK-MARKER\"\n",
            sample.display()
        ),
    )
    .unwrap();
    let s = Server::start(&data, port, &["--config", config.to_str().unwrap()]);
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
    let downloads = tmp.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console_browser.py"))
        .env("IBS_URL", &s.url)
        .env("IBS_ADMIN", s.token.as_deref().unwrap())
        .env("IBS_READER", &reader)
        .env("IBS_DATA", &data)
        .env("IBS_FIRST", first[0]["id"].as_str().unwrap())
        .env("IBS_SHOTS", &shots)
        .env("IBS_RESTORE_TARGET", tmp.path().join("restored"))
        .env("IBS_LOCATION2", tmp.path().join("location2"))
        .env("IBS_DOWNLOADS", &downloads);
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
    // The .pfx password the flows typed into the restore and validate forms is not in the log.
    let password = std::fs::read_to_string(data.join("certs/ibs-backup.pfx.password")).unwrap();
    assert!(
        !log.contains(password.trim()),
        "the .pfx password is in the daemon's log"
    );
}
