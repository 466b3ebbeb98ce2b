//! Attacks on the daemon and its client through the real binary: plain HTTP on a network address,
//! a second daemon on the same data directory, the first-start admin token landing in a service
//! journal, idle connections starving the listener (TLS and plain), and a client sending a .pfx or
//! a password in cleartext to a remote controller.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ibs");

mod common;

use ibs_testing::free_port;

struct Daemon {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// `ibs serve` with stdout and stderr to a file (as under a service manager), waiting until
    /// the port answers.
    fn start(data: &Path, port: u16, extra: &[&str]) -> Daemon {
        let log = data.with_extension(format!("{port}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let sample = data.with_extension("sample");
        std::fs::create_dir_all(&sample).unwrap();
        std::fs::write(sample.join("f"), b"x").unwrap();
        let child = Command::new(BIN)
            .args(["serve", "--data"])
            .arg(data)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--sample"])
            .arg(&sample)
            .arg("--restore-root")
            .arg(std::env::temp_dir())
            .args(extra)
            .env("IBS_LOG", "info")
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        let d = Daemon { child, log };
        let end = Instant::now() + Duration::from_secs(180);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < end,
                "ibs serve did not start: {}",
                d.text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until first start has finished (its notice is printed last).
    fn wait_bootstrap(&self) {
        let end = Instant::now() + Duration::from_secs(180);
        while !self.text().contains("ibs controller: data") {
            assert!(Instant::now() < end, "no bootstrap: {}", self.text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Waits up to `limit` for `child` to exit.
fn exits_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn output_of(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn serve_refuses_plain_http_on_a_non_loopback_address() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--data"])
        .arg(tmp.path().join("data"))
        .args(["--listen", "0.0.0.0:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = exits_within(&mut child, Duration::from_secs(15));
    if status.is_none() {
        let _ = child.kill();
    }
    let text = output_of(child);
    let status = status.expect("ibs serve is serving plain HTTP on 0.0.0.0");
    assert!(!status.success(), "{text}");
    assert!(text.contains("--insecure-http"), "{text}");
    assert!(text.contains("--tls-cert"), "{text}");
    assert!(
        !tmp.path().join("data/state.sqlite").exists(),
        "refused before touching the data directory"
    );
}

#[test]
fn a_second_daemon_on_the_same_data_directory_exits_at_once_naming_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = free_port();
    let first = Daemon::start(&data, port, &[]);
    first.wait_bootstrap();
    let mut second = Command::new(BIN)
        .args(["serve", "--data"])
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = exits_within(&mut second, Duration::from_secs(10));
    if status.is_none() {
        let _ = second.kill();
    }
    let text = output_of(second);
    let status = status.unwrap_or_else(|| panic!("the second daemon kept running: {text}"));
    assert!(!status.success(), "{text}");
    assert!(
        text.contains(&format!("pid {}", first.child.id())),
        "names the running daemon's pid: {text}"
    );
    assert!(
        text.contains(&format!("127.0.0.1:{port}")),
        "names the running daemon's API: {text}"
    );
    assert!(
        !first.text().contains("Interrupted") && !text.contains("Interrupted"),
        "no job of the first daemon was marked Interrupted: {text}"
    );
    // The first one still serves.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

#[test]
fn the_first_start_admin_token_never_reaches_a_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = free_port();
    let d = Daemon::start(&data, port, &[]);
    d.wait_bootstrap();
    let journal = d.text();
    assert!(
        !has_token(&journal),
        "the admin token is in the daemon's output:\n{journal}"
    );
    let file = data.join("first-start-admin-token");
    assert!(
        journal.contains(&file.display().to_string()),
        "the output names the token file:\n{journal}"
    );
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let token = std::fs::read_to_string(&file).unwrap().trim().to_string();
    let out = Command::new(BIN)
        .args(["backup", "list"])
        .env("IBS_SERVER", format!("http://127.0.0.1:{port}"))
        .env("IBS_TOKEN", &token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the token from the file works: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether `text` holds an API token (`ibs_` and 43 base64url characters).
fn has_token(text: &str) -> bool {
    text.match_indices("ibs_").any(|(i, _)| {
        let rest = &text.as_bytes()[i + 4..];
        rest.len() >= 43
            && rest[..43]
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
    })
}

fn tls_files(dir: &Path) -> (String, String) {
    let (cert, key) = common::daemon::self_signed_tls(dir, &[]);
    (cert.display().to_string(), key.display().to_string())
}

fn curl(args: &[&str]) -> (Output, Duration) {
    let t = Instant::now();
    let out = Command::new("curl")
        .args(["-s", "-m", "60"])
        .args(args)
        .output()
        .unwrap();
    (out, t.elapsed())
}

#[test]
fn idle_tcp_connections_do_not_delay_a_tls_client() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = tls_files(tmp.path());
    let port = free_port();
    let d = Daemon::start(
        &tmp.path().join("data"),
        port,
        &["--tls-cert", &cert, "--tls-key", &key],
    );
    d.wait_bootstrap();
    // Connections that never speak TLS.
    let idle: Vec<_> = (0..4)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let (out, took) = curl(&[
        "--cacert",
        &cert,
        &format!("https://127.0.0.1:{port}/healthz"),
    ]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Handshakes one at a time would take 10 s per idle connection.
    assert!(
        took < Duration::from_secs(10),
        "a TLS request behind {} idle connections took {took:?}",
        idle.len()
    );
    drop(idle);
}

#[test]
fn idle_and_slow_plain_http_connections_are_cut_and_never_delay_a_client() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let d = Daemon::start(&tmp.path().join("data"), port, &[]);
    d.wait_bootstrap();
    let mut silent = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let (out, took) = curl(&[&format!("http://127.0.0.1:{port}/healthz")]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // The server closes both: a request head must arrive within its header-read timeout.
    for (what, s) in [("silent", &mut silent), ("slow", &mut slow)] {
        s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
        let t = Instant::now();
        let mut buf = Vec::new();
        let r = s.read_to_end(&mut buf);
        assert!(
            r.is_ok() && t.elapsed() < Duration::from_secs(35),
            "the {what} connection is still open after {:?} ({r:?})",
            t.elapsed()
        );
    }
}

/// A stand-in controller on loopback that records every byte sent to it.
fn recorder() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            c.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let mut buf = [0u8; 65536];
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 {
                    break;
                }
                g.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            let body = br#"{"error":{"code":"not-found","message":"no"}}"#;
            let _ = c.write_all(
                format!(
                    "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            let _ = c.write_all(body);
        }
    });
    (port, got)
}

#[test]
fn the_client_never_sends_a_pfx_or_a_password_in_cleartext_to_a_remote_controller() {
    let tmp = tempfile::tempdir().unwrap();
    let pfx = tmp.path().join("k.pfx");
    let marker = "PFXBYTES-7f3a9c";
    std::fs::write(&pfx, marker).unwrap();
    let pfx_b64 = "UEZYQllURVMtN2YzYTlj"; // base64 of the marker
    let password = "Pfx-Pw-30c1";
    let share_password = "Share-Pw-91d0";
    let (port, got) = recorder();
    // 0.0.0.0 is not a loopback address, yet Linux delivers it to the local recorder: it stands for
    // a remote controller without sending anything off this host.
    let remote = format!("http://0.0.0.0:{port}");
    let run = |server: &str, args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env("IBS_SERVER", server)
            .env("IBS_TOKEN", "ibs_x")
            .env("IBS_PFX_PASSWORD", password)
            .env("IBS_SHARE_PASSWORD", share_password)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let restore = [
        "restore",
        "b1",
        "--target",
        tmp.path().to_str().unwrap(),
        "--pfx",
        pfx.to_str().unwrap(),
    ];
    let location = ["location", "set", "--path", "/srv/x", "--username", "u"];
    for args in [&restore[..], &location[..]] {
        let out = run(&remote, args);
        let text = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{args:?}: {text}");
        assert!(text.contains("refusing"), "{args:?}: {text}");
        std::thread::sleep(Duration::from_millis(700));
        let sent = String::from_utf8_lossy(&got.lock().unwrap()).to_string();
        for secret in [pfx_b64, password, share_password] {
            assert!(
                !sent.contains(secret),
                "{args:?} sent a secret over cleartext HTTP:\n{sent}"
            );
        }
    }
    // To this host's loopback it is allowed (the recorder gets the request).
    let out = run(&format!("http://127.0.0.1:{port}"), &restore);
    assert!(!out.status.success());
    std::thread::sleep(Duration::from_millis(700));
    let sent = String::from_utf8_lossy(&got.lock().unwrap()).to_string();
    assert!(sent.contains(pfx_b64), "the loopback request was sent");
}
