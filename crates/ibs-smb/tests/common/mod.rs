//! Test helpers: start the private Samba server through `scripts/samba-test-server.sh` (once per
//! process, serialized across test binaries with `flock`), and build storages in unique folders.
#![allow(dead_code)]

pub mod proxy;

use ibs_smb::{Dialect, SmbCredentials, SmbLocation, SmbOptions, SmbStorage};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Once;
use std::time::Duration;

pub const SHARED_DIR: &str = "/tmp/ibs-samba";
pub const SHARED_PORT: u16 = 4455;

pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/samba-test-server.sh")
}

pub fn password() -> String {
    std::env::var("IBS_TEST_SMB_PASSWORD").unwrap_or_else(|_| "S3cret!pw".into())
}

/// Runs the script with `args` under a lock; panics (never skips) when it fails.
pub fn run_script(args: &[&str], envs: &[(&str, &str)]) {
    let lock = format!("{}.lock", args.get(1).copied().unwrap_or(SHARED_DIR));
    // -o: smbd, forked by the script, must not inherit (and hold) the lock.
    let out = Command::new("flock")
        .arg("-o")
        .arg(&lock)
        .arg("bash")
        .arg(script())
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

/// Starts the shared server (idempotent).
pub fn shared_server() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| run_script(&["start", SHARED_DIR, &SHARED_PORT.to_string()], &[]));
}

pub fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("t-{tag}-{}-{nanos:08x}", std::process::id())
}

pub fn location(port: u16, share: &str, folder: &[&str]) -> SmbLocation {
    SmbLocation {
        host: "127.0.0.1".into(),
        port,
        share: share.into(),
        folder: folder.iter().map(|s| s.to_string()).collect(),
        min_dialect: ibs_smb::location::DEFAULT_MIN_DIALECT,
    }
}

pub fn creds() -> SmbCredentials {
    SmbCredentials::new("ibsuser", password())
}

pub fn options() -> SmbOptions {
    SmbOptions {
        connect_timeout: Duration::from_secs(10),
        op_timeout: Duration::from_secs(30),
        ..Default::default()
    }
}

/// A storage on the shared server in a fresh folder of `share`.
pub async fn storage(share: &str, tag: &str, opts: SmbOptions) -> (SmbStorage, String) {
    storage_min(share, tag, opts, ibs_smb::location::DEFAULT_MIN_DIALECT).await
}

/// Like [`storage`], with the location's lowest dialect set to `min` (`Smb210`: the 2.1 opt-in).
pub async fn storage_min(
    share: &str,
    tag: &str,
    opts: SmbOptions,
    min: Dialect,
) -> (SmbStorage, String) {
    shared_server();
    let folder = unique(tag);
    let mut loc = location(SHARED_PORT, share, &["ibs-tests", &folder]);
    loc.min_dialect = min;
    let s = SmbStorage::connect(&loc, creds(), opts)
        .await
        .unwrap_or_else(|e| panic!("connect to {share}: {e}"));
    (s, folder)
}
