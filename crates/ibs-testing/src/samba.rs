//! The private Samba servers of the tests (`scripts/samba-test-server.sh`): the shared instance in
//! [`DIR`] on [`PORT`] (started once per test binary, serialized across binaries with `flock`),
//! extra instances of their own ([`Server`], stopped and removed on drop), fresh region folders on
//! a share owned by the share user, and the share user's password. A server that cannot start fails
//! the test; it never skips.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

/// The shared instance's folder (its shares live below it, e.g. `DIR/share` is share `backup`).
pub const DIR: &str = "/tmp/ibs-samba";
/// The shared instance's port.
pub const PORT: u16 = 4455;
/// The share user every instance serves.
pub const USER: &str = "ibsuser";

/// The share user's password (`IBS_TEST_SMB_PASSWORD`, or the script's default).
pub fn password() -> String {
    std::env::var("IBS_TEST_SMB_PASSWORD").unwrap_or_else(|_| "S3cret!pw".into())
}

/// The path of `scripts/samba-test-server.sh`.
pub fn script_path() -> PathBuf {
    crate::workspace_root().join("scripts/samba-test-server.sh")
}

/// Runs the script with `args` (`start DIR PORT`, `stop DIR`) and extra environment `envs` under
/// the lock `DIR.lock`; panics (never skips) when it fails.
pub fn run_script(args: &[&str], envs: &[(&str, &str)]) {
    let lock = format!("{}.lock", args.get(1).copied().unwrap_or(DIR));
    // -o: smbd, forked by the script, must not inherit (and hold) the lock.
    let out = Command::new("flock")
        .arg("-o")
        .arg(&lock)
        .arg("bash")
        .arg(script_path())
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("run samba-test-server.sh");
    assert!(
        out.status.success(),
        "samba-test-server.sh {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// [`run_script`] without extra environment.
pub fn script(args: &[&str]) {
    run_script(args, &[]);
}

/// Starts the shared server once per test binary (idempotent across binaries).
pub fn shared_server() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| script(&["start", DIR, &PORT.to_string()]));
}

/// A private Samba instance in its own folder on a free port, started with extra environment
/// (e.g. `IBS_TEST_SMB_MAX_PROTOCOL`); dropping it stops the server and removes its folder.
pub struct Server {
    pub dir: String,
    pub port: u16,
}

impl Server {
    /// Starts an instance in `/tmp/ibs-samba-TAG-PID`.
    pub fn start(tag: &str, envs: &[(&str, &str)]) -> Server {
        let dir = format!("/tmp/ibs-samba-{tag}-{}", std::process::id());
        let port = crate::free_port();
        run_script(&["start", &dir, &port.to_string()], envs);
        Server { dir, port }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        run_script(&["stop", &self.dir], &[]);
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(format!("{}.lock", self.dir));
    }
}

/// The uid of a local user (from `/etc/passwd`).
pub fn uid_of(user: &str) -> u32 {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{user}:x:")))
        .and_then(|r| r.split(':').next())
        .and_then(|u| u.parse().ok())
        .expect("the Samba test user exists")
}

/// A fresh folder `PREFIX-PID-RANDOM` on a share directory (owned by the share user), and its
/// smb:// location.
pub fn region_named(prefix: &str, share_dir: &Path, share: &str, port: u16) -> (PathBuf, String) {
    let name = format!(
        "{prefix}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    );
    let dir = share_dir.join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(uid_of(USER)), None).unwrap();
    (dir, format!("smb://127.0.0.1:{port}/{share}/{name}"))
}

/// A fresh region folder (`t-…`) on a share directory, and its smb:// location.
pub fn region(share_dir: &Path, share: &str, port: u16) -> (PathBuf, String) {
    region_named("t", share_dir, share, port)
}

/// Sets the share user's password on the Samba instance in `dir` (through stdin, never argv).
pub fn set_password(dir: &str, password: &str) {
    use std::io::Write;
    let mut child = Command::new("smbpasswd")
        .args(["-c", &format!("{dir}/smb.conf"), "-s", "-a", USER])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("smbpasswd");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n{password}\n").as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "smbpasswd failed");
}
