//! Helpers of the secrets-leak test: the secrets' encoded forms and the scan for them, running the
//! real binary against a daemon, raw HTTP calls, and the process tree and files to scan.
#![allow(dead_code)]

use base64::Engine as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_ibs");
use ibs_testing::samba::{DIR, PORT};

pub fn smb_password() -> String {
    ibs_testing::samba::password()
}

pub fn region() -> String {
    let share = std::path::Path::new(DIR).join("share");
    ibs_testing::samba::region_named("leak", &share, "backup", PORT).1
}

pub struct Secret {
    pub name: &'static str,
    pub value: String,
}

/// Every encoding of a secret the scan looks for.
pub fn forms(s: &str) -> Vec<(String, Vec<u8>)> {
    let b = s.as_bytes();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    vec![
        ("plaintext".into(), b.to_vec()),
        (
            "base64".into(),
            base64::engine::general_purpose::STANDARD_NO_PAD
                .encode(b)
                .into_bytes(),
        ),
        (
            "base64url".into(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(b)
                .into_bytes(),
        ),
        ("hex".into(), hex.clone().into_bytes()),
        ("HEX".into(), hex.to_uppercase().into_bytes()),
    ]
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Panics naming the secret, its form and the place if any form occurs in `hay`.
pub fn assert_clean(place: &str, hay: &[u8], secrets: &[Secret], scanned: &mut usize) {
    *scanned += 1;
    for s in secrets {
        for (form, needle) in forms(&s.value) {
            assert!(
                !contains(hay, &needle),
                "LEAK: the {} ({form}) appears in {place}",
                s.name
            );
        }
    }
}

pub fn ibs(url: &str, token: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("IBS_SERVER", url)
        .env_remove("IBS_SHARE_PASSWORD")
        .env_remove("IBS_PFX_PASSWORD")
        .stdin(Stdio::null());
    if let Some(t) = token {
        c.env("IBS_TOKEN", t);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

pub fn both(o: &Output) -> Vec<u8> {
    [o.stdout.clone(), o.stderr.clone()].concat()
}

/// GET over a plain socket; returns the whole response (head and body).
pub fn http_get(port: u16, path: &str, token: &str) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    assert!(
        buf.starts_with(b"HTTP/1.1 200"),
        "GET {path}: {}",
        String::from_utf8_lossy(&buf)
    );
    buf
}

/// POST a JSON body over a plain socket; returns the whole response (head and body).
pub fn http_post(port: u16, path: &str, token: &str, body: &str) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    buf
}

pub fn body_json(resp: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(resp);
    let body = text.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str(body).unwrap()
}

/// The daemon and every descendant: pid -> command line (NULs as spaces).
pub fn process_tree(root: u32) -> Vec<(u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            out.push((pid, cmd));
        }
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for t in tasks.flatten() {
                if let Ok(children) = std::fs::read_to_string(t.path().join("children")) {
                    stack.extend(
                        children
                            .split_whitespace()
                            .filter_map(|c| c.parse::<u32>().ok()),
                    );
                }
            }
        }
    }
    out
}

pub fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

pub struct Daemon(pub Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
