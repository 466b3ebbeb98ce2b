//! The private Samba servers of the tests (scripts/samba-test-server.sh): start/stop under a lock,
//! and fresh region folders on a share, owned by the share user.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

pub const DIR: &str = "/tmp/ibs-samba";
pub const PORT: u16 = 4455;
pub const USER: &str = "ibsuser";

pub fn password() -> String {
    std::env::var("IBS_TEST_SMB_PASSWORD").unwrap_or_else(|_| "S3cret!pw".into())
}

/// Runs the script with `args` (`start DIR PORT`, `stop DIR`) under a lock; panics, never skips.
pub fn script(args: &[&str]) {
    let lock = format!("{}.lock", args.get(1).copied().unwrap_or(DIR));
    let out = Command::new("flock")
        .arg("-o")
        .arg(&lock)
        .arg("bash")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/samba-test-server.sh"))
        .args(args)
        .output()
        .expect("run samba-test-server.sh");
    assert!(
        out.status.success(),
        "samba-test-server.sh {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts the shared server once per test binary.
pub fn shared_server() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| script(&["start", DIR, &PORT.to_string()]));
}

pub fn uid_of(user: &str) -> u32 {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{user}:x:")))
        .and_then(|r| r.split(':').next())
        .and_then(|u| u.parse().ok())
        .expect("the Samba test user exists")
}

/// A fresh region folder on a share directory (owned by the share user), and its smb:// location.
pub fn region(share_dir: &Path, share: &str, port: u16) -> (PathBuf, String) {
    let name = format!("t-{}-{:08x}", std::process::id(), rand::random::<u32>());
    let dir = share_dir.join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(uid_of(USER)), None).unwrap();
    (dir, format!("smb://127.0.0.1:{port}/{share}/{name}"))
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
