//! A real `ibs serve` for the controller end-to-end tests: start on a free port, wait for first
//! start, run the CLI client against it, and stop it when dropped.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ibs");

#[allow(unused_imports)] // not every test binary starts a daemon
pub use ibs_testing::free_port;

pub struct Server {
    pub child: Child,
    pub url: String,
    pub token: Option<String>,
}

impl Server {
    pub fn start(data: &Path, port: u16, extra: &[&str]) -> Server {
        Self::start_logging(data, port, extra, Some("info"))
    }

    /// The daemon's stdout and stderr, as [`Server::start`] writes them.
    pub fn log_path(data: &Path, port: u16) -> PathBuf {
        data.with_extension(format!("{port}.log"))
    }

    /// [`Server::start`] with `IBS_LOG` set to `level`, or unset (the default level) for `None`.
    pub fn start_logging(data: &Path, port: u16, extra: &[&str], level: Option<&str>) -> Server {
        let log = std::fs::File::create(Self::log_path(data, port)).unwrap();
        let mut cmd = Command::new(BIN);
        match level {
            Some(l) => cmd.env("IBS_LOG", l),
            None => cmd.env_remove("IBS_LOG"),
        };
        let child = cmd
            .args(["serve", "--data"])
            .arg(data)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--restore-root")
            .arg(std::env::temp_dir())
            .args(extra)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let end = Instant::now() + Duration::from_secs(180);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < end, "ibs serve did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
        // The listener is bound before bootstrap; wait until bootstrap finished (the token file exists).
        let mut s = Server {
            child,
            url,
            token: None,
        };
        let out = s.ibs(
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
        s.token = Some(last_line(&out));
        s
    }

    pub fn ibs(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("IBS_SERVER", &self.url)
            .stdin(Stdio::null());
        if let Some(t) = &self.token {
            c.env("IBS_TOKEN", t);
        }
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    /// [`Server::ibs`] again while it exits 6 (409), for up to a minute: the hourly retention
    /// cleanup starts at the tick after a backup or a location change and holds the gate briefly.
    #[allow(dead_code)] // not every test binary changes settings
    pub fn ibs_when_idle(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.ibs(args, env);
            if out.status.code() != Some(6) || Instant::now() > end {
                return out;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.ibs(&a, &[]);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn wait_for(&self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + Duration::from_secs(180);
        loop {
            let v = self.json(&["backup", "list"]);
            if f(&v) {
                return v;
            }
            assert!(Instant::now() < end, "timed out waiting for {what}: {v}");
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn last_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .trim()
        .to_string()
}

pub fn tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(root).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

pub fn statuses(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|j| j["status"].as_str().unwrap().to_string())
        .collect()
}

/// A self-signed TLS certificate for `localhost` and 127.0.0.1 (openssl, RSA 2048, 2 days) and its
/// key, written to `dir/api.pem` and `dir/api.key`; each of `extra` is one more `-addext`.
pub fn self_signed_tls(dir: &Path, extra: &[&str]) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("api.pem"), dir.join("api.key"));
    let mut c = Command::new("openssl");
    c.args([
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
    ])
    .args(["-subj", "/CN=localhost", "-addext"])
    .arg("subjectAltName=IP:127.0.0.1,DNS:localhost");
    for e in extra {
        c.arg("-addext").arg(e);
    }
    let out = c
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}
