//! Shared helpers for the `ibs` end-to-end tests: running the real binary, fixtures (a repository
//! folder and a state directory per test), certificates made with `ibs cert new` and `openssl`, and
//! tree snapshots for byte-for-byte restore comparisons.
#![allow(dead_code)]

pub mod daemon;
pub mod s3;
mod trees;

#[allow(unused_imports)]
pub use trees::*;

use std::ffi::OsStr;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The .pfx password every test certificate uses (passed through the environment only).
pub const PASSWORD: &str = "correct horse battery staple 7";

/// The `ibs` binary under test: this build's, or `IBS_TEST_BIN` (a long run keeps its own copy
/// while the tree is rebuilt).
pub fn ibs_bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("IBS_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ibs").to_owned())
    })
}

/// The result of one `ibs` run.
pub struct Out {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`ibs {}` exited {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }
}

impl Out {
    /// Asserts exit code 0.
    #[track_caller]
    pub fn ok(self) -> Out {
        assert_eq!(self.code, 0, "expected success:\n{self}");
        self
    }

    /// Asserts an exact exit code.
    #[track_caller]
    pub fn code(self, code: i32) -> Out {
        assert_eq!(self.code, code, "expected exit code {code}:\n{self}");
        self
    }

    /// Asserts stderr contains `needle`.
    #[track_caller]
    pub fn stderr_has(self, needle: &str) -> Out {
        assert!(
            self.stderr.contains(needle),
            "expected stderr to contain {needle:?}:\n{self}"
        );
        self
    }

    pub fn last_line(&self) -> String {
        self.stdout
            .lines()
            .last()
            .unwrap_or_else(|| panic!("no stdout:\n{self}"))
            .trim()
            .to_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }
}

/// A builder for one `ibs` invocation. The environment is scrubbed of every ibs variable, HOME points
/// nowhere usable, and stdin is empty unless given.
pub struct Ibs {
    args: Vec<String>,
    envs: Vec<(String, String)>,
    stdin: Option<Vec<u8>>,
}

pub fn ibs<I, S>(args: I) -> Ibs
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Ibs {
        args: args
            .into_iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect(),
        envs: Vec::new(),
        stdin: None,
    }
}

impl Ibs {
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_string_lossy().into_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self.args.push(a.as_ref().to_string_lossy().into_owned());
        }
        self
    }

    /// Supplies the .pfx password through `IBS_PFX_PASSWORD`.
    pub fn pw(self) -> Self {
        self.env("IBS_PFX_PASSWORD", PASSWORD)
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.envs.push((k.into(), v.into()));
        self
    }

    pub fn stdin(mut self, bytes: Vec<u8>) -> Self {
        self.stdin = Some(bytes);
        self
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(ibs_bin());
        cmd.args(&self.args);
        for k in [
            "IBS_PFX_PASSWORD",
            "IBS_STATE_DIR",
            "XDG_STATE_HOME",
            "IBS_SHARE_PASSWORD",
            "IBS_LOG",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        ] {
            cmd.env_remove(k);
        }
        cmd.env("HOME", "/nonexistent/ibs-test-home");
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn run(self) -> Out {
        let mut cmd = self.command();
        cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ibs");
        if let Some(bytes) = self.stdin {
            let mut stdin = child.stdin.take().unwrap();
            let writer = std::thread::spawn(move || {
                let _ = stdin.write_all(&bytes);
            });
            let out = child.wait_with_output().expect("wait for ibs");
            writer.join().unwrap();
            return Out {
                args: self.args,
                code: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            };
        }
        let out = child.wait_with_output().expect("wait for ibs");
        Out {
            args: self.args,
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// openssl

/// Runs `openssl` with the .pfx password in `IBS_PFX_PASSWORD`; panics (never skips) if it is missing
/// or fails.
#[track_caller]
pub fn openssl<I, S>(args: I) -> Vec<u8>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    let out = Command::new("openssl")
        .args(&args)
        .env("IBS_PFX_PASSWORD", PASSWORD)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl (it is required by these tests): {e}"));
    assert!(
        out.status.success(),
        "openssl {} failed: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The SHA-1 thumbprint of a DER certificate as openssl reports it (colons stripped, upper case).
pub fn thumbprint(cer: &Path) -> String {
    let out = openssl([
        OsStr::new("x509"),
        OsStr::new("-fingerprint"),
        OsStr::new("-sha1"),
        OsStr::new("-noout"),
        OsStr::new("-inform"),
        OsStr::new("DER"),
        OsStr::new("-in"),
        cer.as_os_str(),
    ]);
    let text = String::from_utf8(out).unwrap();
    let fp = text
        .trim()
        .rsplit('=')
        .next()
        .expect("fingerprint line")
        .replace(':', "")
        .to_uppercase();
    assert_eq!(
        fp.len(),
        40,
        "unexpected openssl fingerprint output {text:?}"
    );
    fp
}

// ---------------------------------------------------------------------------------------------
// certificates

#[derive(Clone, Debug)]
pub struct Cert {
    pub cer: PathBuf,
    pub pfx: PathBuf,
    pub thumbprint: String,
}

/// Makes a 2048-bit certificate with `ibs cert new` in `dir`.
pub fn new_cert(dir: &Path, name: &str) -> Cert {
    new_cert_with_password(dir, name, PASSWORD)
}

/// [`new_cert`] with the .pfx under `password`.
pub fn new_cert_with_password(dir: &Path, name: &str, password: &str) -> Cert {
    let cer = dir.join(format!("{name}.cer"));
    let pfx = dir.join(format!("{name}.pfx"));
    ibs(["cert", "new", "--subject"])
        .arg(format!("ibs test {name}"))
        .arg("--cer")
        .arg(&cer)
        .arg("--pfx")
        .arg(&pfx)
        .args(["--bits", "2048"])
        .env("IBS_PFX_PASSWORD", password)
        .run()
        .ok();
    let thumbprint = thumbprint(&cer);
    Cert {
        cer,
        pfx,
        thumbprint,
    }
}

/// This test process's folder of shared certificates. Each folder names its owner in `owner.pid`;
/// folders of earlier runs are removed once they are over an hour old and their owner is gone (a
/// long crash run outlives the hour and keeps its certificates).
fn shared_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        std::fs::create_dir_all(base).unwrap();
        if let Ok(rd) = std::fs::read_dir(base) {
            for e in rd.flatten() {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| SystemTime::now().duration_since(m).ok())
                    .is_some_and(|age| age > Duration::from_secs(3600));
                let owner_alive = std::fs::read_to_string(e.path().join("owner.pid"))
                    .ok()
                    .and_then(|p| p.trim().parse::<u32>().ok())
                    .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
                if old
                    && !owner_alive
                    && e.file_name()
                        .to_string_lossy()
                        .starts_with("ibs-e2e-certs-")
                {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("ibs-e2e-certs-")
            .tempdir_in(base)
            .unwrap()
            .keep();
        std::fs::write(dir.join("owner.pid"), std::process::id().to_string()).unwrap();
        dir
    })
}

/// One of a few certificates shared by all tests of a test binary (generated once, lazily).
pub fn shared_cert(i: usize) -> &'static Cert {
    static CERTS: [OnceLock<Cert>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    CERTS[i].get_or_init(|| new_cert(shared_dir(), &format!("shared{i}")))
}

// ---------------------------------------------------------------------------------------------
// fixture

/// One test's world: a temp dir holding the repository folder (`repo/`, the repository itself lives
/// in `repo/MASBackup`) and the writer state directory (`state/`).
pub struct Fx {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub repo: PathBuf,
    pub state: PathBuf,
}

impl Fx {
    pub fn new() -> Fx {
        let tmp = tempfile::Builder::new()
            .prefix("ibs-e2e-")
            .tempdir()
            .unwrap();
        let root = tmp.path().to_path_buf();
        let repo = root.join("repo");
        std::fs::create_dir(&repo).unwrap();
        Fx {
            repo,
            state: root.join("state"),
            root,
            tmp,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn mas(&self) -> PathBuf {
        self.repo.join("MASBackup")
    }

    /// `ibs repo <sub> --state STATE --repo REPO`.
    pub fn repo_cmd(&self, sub: &str) -> Ibs {
        ibs(["repo", sub])
            .arg("--state")
            .arg(&self.state)
            .arg("--repo")
            .arg(&self.repo)
    }

    pub fn init_cert(&self, cer: &Path) -> Out {
        self.repo_cmd("init").arg("--cert").arg(cer).run().ok()
    }

    /// Runs a backup of `NAME=PATH` sources and returns the new backup id (last stdout line).
    pub fn backup(&self, sources: &[(&str, &Path)]) -> String {
        let out = self.backup_cmd(sources).run().ok();
        let id = out.last_line();
        assert!(is_backup_id(&id), "last line is not a backup id:\n{out}");
        id
    }

    pub fn backup_cmd(&self, sources: &[(&str, &Path)]) -> Ibs {
        let mut c = self.repo_cmd("backup");
        for (n, p) in sources {
            c = c.arg("--source").arg(format!("{n}={}", p.display()));
        }
        c
    }

    pub fn restore_cmd(&self, id: &str, target: &Path, pfx: &[&Path]) -> Ibs {
        let mut c = self
            .repo_cmd("restore")
            .args(["--backup", id])
            .arg("--target")
            .arg(target);
        for p in pfx {
            c = c.arg("--pfx").arg(p);
        }
        c.pw()
    }

    /// `repo list --json`, run with no password and no state.
    pub fn list(&self) -> Vec<serde_json::Value> {
        let out = ibs(["repo", "list", "--json", "--repo"])
            .arg(&self.repo)
            .run()
            .ok();
        match out.json() {
            serde_json::Value::Array(a) => a,
            v => panic!("repo list --json is not an array: {v}"),
        }
    }

    pub fn list_ids(&self) -> Vec<String> {
        self.list()
            .iter()
            .map(|c| c["backup_id"].as_str().unwrap().to_owned())
            .collect()
    }

    pub fn catalog(&self, id: &str) -> serde_json::Value {
        self.list()
            .into_iter()
            .find(|c| c["backup_id"] == id)
            .unwrap_or_else(|| panic!("backup {id} not listed"))
    }

    /// `repo check --read-data --pfx PFX`, which must find no problems.
    pub fn check_full(&self, pfx: &Path) -> Out {
        self.repo_cmd("check")
            .arg("--read-data")
            .arg("--pfx")
            .arg(pfx)
            .pw()
            .run()
            .ok()
    }
}

pub fn is_backup_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 25
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z'
        && b[16] == b'-'
        && b[17..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// Sleeps until the wall clock is in a later second than now (catalog times have 1 s resolution).
pub fn next_second() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let rest = Duration::from_secs(1) - Duration::from_nanos(now.subsec_nanos() as u64);
    std::thread::sleep(rest + Duration::from_millis(20));
}
