//! The web console (issue 15, ADR 0030) in a real browser: Debian's headless Chromium driven
//! through chromedriver (started here on a free port) with fantoccini, against a real `ibs serve`
//! with a real repository. A missing chromium or chromedriver is a failure, never a skip.
//!
//! Flows: sign in; the overview shows the latest backup; "Backup now" and watch it complete; an
//! invalid frequency shows an inline error and saves nothing; lowering retention asks for
//! confirmation listing the backups it deletes; close an alert; a reader sees no write controls
//! and a forged POST with a reader's session gets 403; sign out, after which the session no
//! longer works; no browser console errors on any page. Each page's screenshot is written to
//! `target/console-screenshots/` (and to `docs/console/` with `IBS_UPDATE_SCREENSHOTS=1`).

mod common;

use common::daemon::{free_port, last_line, statuses, Server};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(180);

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        for tool in ["chromium", "chromedriver"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .unwrap();
            assert!(
                found.status.success(),
                "{tool} is missing: run scripts/ensure-deps.sh (Debian packages chromium, chromium-driver)"
            );
        }
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let end = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < end, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Driver { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// chromedriver's browser log (`goog:loggingPrefs`), drained on each read.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or("")))
    }
    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(json!({"type": "browser"}).to_string()))
    }
}

struct Browser {
    c: Client,
    base: String,
    shots: PathBuf,
    docs: Option<PathBuf>,
}

impl Browser {
    async fn goto(&self, path: &str) {
        self.c.goto(&format!("{}{path}", self.base)).await.unwrap();
    }

    async fn path(&self) -> String {
        self.c.current_url().await.unwrap().path().to_string()
    }

    async fn text(&self, css: &str) -> String {
        self.c
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    async fn click(&self, css: &str) {
        self.c
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap();
    }

    async fn fill(&self, css: &str, value: &str) {
        let e = self.c.find(Locator::Css(css)).await.unwrap();
        e.clear().await.unwrap();
        e.send_keys(value).await.unwrap();
    }

    async fn count(&self, css: &str) -> usize {
        self.c.find_all(Locator::Css(css)).await.unwrap().len()
    }

    /// Fails on any browser console message at SEVERE (errors, CSP violations, failed loads).
    async fn no_console_errors(&self, page: &str) {
        let log = self.c.issue_cmd(BrowserLog).await.unwrap();
        let severe: Vec<&Value> = log
            .as_array()
            .map(|a| a.iter().filter(|e| e["level"] == "SEVERE").collect())
            .unwrap_or_default();
        assert!(severe.is_empty(), "console errors on {page}: {severe:?}");
    }

    /// Checks the console log, then saves the page's screenshot.
    async fn shot(&self, name: &str) {
        self.no_console_errors(name).await;
        let png = self.c.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), &png).unwrap();
        if let Some(d) = &self.docs {
            std::fs::write(d.join(format!("{name}.png")), &png).unwrap();
        }
    }

    /// The session cookie and the page's CSRF token, as a forger holding them would send them.
    async fn credentials(&self) -> (String, String) {
        let cookie = self
            .c
            .get_all_cookies()
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.name() == "ibs_session")
            .expect("a session cookie")
            .value()
            .to_string();
        let csrf = self
            .c
            .execute(
                "return document.querySelector('meta[name=csrf-token]').content",
                vec![],
            )
            .await
            .unwrap();
        (cookie, csrf.as_str().unwrap().to_string())
    }
}

/// One raw HTTP/1.1 request to the daemon: (status, Location header, body).
fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let status = buf.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    let location = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().starts_with("location:").then(|| l[9..].trim().to_string()))
        .unwrap_or_default();
    (status, location, body.to_string())
}

fn api_get(s: &Server, port: u16, path: &str) -> Value {
    let auth = format!("Bearer {}", s.token.as_deref().unwrap());
    let (status, _, body) = http(port, "GET", path, &[("Authorization", &auth)], "");
    assert_eq!(status, 200, "{path}: {body}");
    // The body may be chunked: take the JSON between the first '{' or '[' and the last bracket.
    let start = body.find(['{', '[']).unwrap();
    let end = body.rfind(['}', ']']).unwrap();
    serde_json::from_str(&body[start..=end]).unwrap()
}

/// Ages backup job `id` by `days` in the daemon's state database, as if it had run that long ago.
fn age_backup(data: &Path, id: &str, days: i64) {
    let db = rusqlite::Connection::open(data.join("state.sqlite")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    let secs = days * 86_400;
    let n = db
        .execute(
            "UPDATE jobs SET created_at = created_at - ?1, body = json_set(body,
               '$.created_at', json_extract(body, '$.created_at') - ?1,
               '$.started_at', json_extract(body, '$.started_at') - ?1,
               '$.finished_at', json_extract(body, '$.finished_at') - ?1) WHERE id = ?2",
            rusqlite::params![secs, id],
        )
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_chromium() {
    let tmp = tempfile::tempdir().unwrap();
    let sample = tmp.path().join("sample");
    std::fs::create_dir_all(sample.join("etc")).unwrap();
    std::fs::write(sample.join("etc/app.conf"), b"setting = 1\n").unwrap();
    let big: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(sample.join("big.bin"), &big).unwrap();
    let data = tmp.path().join("data");
    let port = free_port();
    let s = Server::start(&data, port, &["--sample", sample.to_str().unwrap()]);
    let first = s.wait_for("the first backup", |v| statuses(v).iter().any(|x| x == "Succeeded"));
    let first_id = first[0]["id"].as_str().unwrap().to_string();
    let reader = last_line(&s.ibs(
        &["token", "create", "--role", "reader", "--data", data.to_str().unwrap()],
        &[],
    ));
    let admin = s.token.clone().unwrap();

    let driver = Driver::start();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": "/usr/bin/chromium", "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=1280,800", "--lang=en-US"]}),
    );
    caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let c = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session through chromedriver");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let shots = root.join("target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let docs = std::env::var_os("IBS_UPDATE_SCREENSHOTS").map(|_| root.join("docs/console"));
    if let Some(d) = &docs {
        std::fs::create_dir_all(d).unwrap();
    }
    let b = Browser { c, base: s.url.clone(), shots, docs };

    // Sign in: the console sends an unknown visitor to the sign-in page.
    b.goto("/").await;
    assert_eq!(b.path().await, "/signin");
    b.shot("signin").await;
    b.fill("#token", "not-a-token").await;
    b.click("#signin").await;
    assert!(b.text("#token-error").await.contains("not valid"));
    b.fill("#token", &admin).await;
    b.click("#signin").await;
    b.c.wait().at_most(WAIT).for_url(&url::Url::parse(&format!("{}/", s.url)).unwrap()).await.unwrap();

    // The overview shows the latest backup.
    assert!(b.text("#last-backup").await.contains(&first_id));
    b.shot("overview").await;

    // Backup now, and watch it complete (the page polls and reloads).
    b.goto("/backups").await;
    assert!(b.text("#backups").await.contains(&first_id));
    let charts: Value = b
        .c
        .execute("return Array.from(document.querySelectorAll('.charts img')).map(i => i.complete && i.naturalWidth > 0)", vec![])
        .await
        .unwrap();
    assert_eq!(charts, json!([true, true]), "both charts render");
    b.shot("backups").await;
    b.click("#backup-now").await;
    let end = Instant::now() + WAIT;
    let new_id = loop {
        let p = b.path().await;
        if let Some(id) = p.strip_prefix("/backups/") {
            break id.to_string();
        }
        assert!(Instant::now() < end, "no job page after Backup now: {p}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(new_id, first_id);
    loop {
        let st = b.text("#job-status").await;
        if st == "Succeeded" {
            break;
        }
        assert!(["Queued", "Running"].contains(&st.as_str()), "the backup ended {st}");
        assert!(Instant::now() < end, "the backup did not complete");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(b.text("#components").await.contains("sample"));
    b.shot("backup").await;

    // An invalid frequency: the API's message beside the field, nothing saved.
    b.goto("/settings").await;
    b.shot("settings").await;
    b.fill("#frequency_hours", "99").await;
    b.click("#save-settings").await;
    let err = b.text("#frequency_hours-error").await;
    assert!(err.contains("frequency_hours"), "{err}");
    b.shot("settings-invalid").await;
    let loc = api_get(&s, port, "/api/v1/location");
    assert_eq!(loc["frequency_hours"], 12, "nothing saved: {loc}");

    // Lowering retention asks for confirmation listing what it deletes (the first backup, aged
    // to ten days old in the state database).
    age_backup(&data, &first_id, 10);
    b.goto("/settings").await;
    b.fill("#retention_days", "3").await;
    b.click("#save-settings").await;
    assert!(b.text("#would-delete").await.contains(&first_id));
    assert_eq!(api_get(&s, port, "/api/v1/location")["retention_days"], 7, "not applied before confirmation");
    b.shot("settings-confirm").await;
    b.click("#confirm-retention").await;
    b.c.wait().at_most(WAIT).for_element(Locator::Css("#settings-form")).await.unwrap();
    assert_eq!(api_get(&s, port, "/api/v1/location")["retention_days"], 3);

    // Close an alert: turning the scheduler off raises one.
    b.goto("/settings").await;
    b.click("#scheduler_enabled").await;
    b.click("#save-settings").await;
    b.c.wait().at_most(WAIT).for_element(Locator::Css("#settings-form")).await.unwrap();
    b.goto("/").await;
    assert!(b.text("#next-backup").await.contains("the scheduler is off"));
    b.goto("/alerts").await;
    let alert = b.c.wait().at_most(WAIT).for_element(Locator::Css("article.alert")).await.unwrap();
    let alert_id = alert.attr("id").await.unwrap().unwrap();
    assert!(b.text(&format!("#{alert_id} .remediation")).await.len() > 10, "remediation shown");
    b.shot("alerts").await;
    b.click(&format!("#{alert_id} .close-alert")).await;
    b.goto("/alerts?state=all").await;
    assert!(b.text(&format!("#{alert_id}")).await.contains("(closed)"));
    b.shot("alerts-closed").await;

    // Sign out: the old session cookie no longer works.
    let (old_cookie, _) = b.credentials().await;
    b.click("#signout").await;
    assert_eq!(b.path().await, "/signin");
    let (status, location, _) = http(port, "GET", "/", &[("Cookie", &format!("ibs_session={old_cookie}"))], "");
    assert_eq!((status, location.as_str()), (303, "/signin"));

    // A reader sees no write controls; a forged POST with the reader's session gets 403.
    b.fill("#token", &reader).await;
    b.click("#signin").await;
    b.c.wait().at_most(WAIT).for_url(&url::Url::parse(&format!("{}/", s.url)).unwrap()).await.unwrap();
    for page in ["/", "/backups", "/alerts?state=all", "/settings"] {
        b.goto(page).await;
        assert_eq!(b.count("main form, main button, main input").await, 0, "write controls on {page} for a reader");
        b.no_console_errors(page).await;
    }
    b.goto("/").await;
    b.shot("overview-reader").await;
    let (cookie, csrf) = b.credentials().await;
    let cookie = format!("ibs_session={cookie}");
    let form = format!("csrf={csrf}");
    let jobs_before = api_get(&s, port, "/api/v1/backups").as_array().unwrap().len();
    for (path, body) in [
        ("/backups/now", form.clone()),
        ("/settings", format!("{form}&frequency_hours=2&retention_days=30")),
        (&format!("/alerts/{}/close", alert_id.trim_start_matches("alert-")), form.clone()),
    ] {
        let (status, _, page) = http(port, "POST", path, &[("Cookie", &cookie), ("Content-Type", "application/x-www-form-urlencoded")], &body);
        assert_eq!(status, 403, "{path}: {page}");
    }
    assert_eq!(api_get(&s, port, "/api/v1/backups").as_array().unwrap().len(), jobs_before);
    assert_eq!(api_get(&s, port, "/api/v1/location")["frequency_hours"], 12);

    // A narrow (phone) screen.
    b.c.set_window_size(390, 844).await.unwrap();
    b.goto("/").await;
    b.shot("overview-phone").await;
    b.c.close().await.unwrap();
}
