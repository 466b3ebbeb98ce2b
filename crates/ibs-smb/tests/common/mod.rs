//! Test helpers: the private Samba server of `ibs_testing::samba` (started through
//! `scripts/samba-test-server.sh` once per process, serialized across test binaries with `flock`),
//! and storages in unique folders.
#![allow(dead_code)]

pub mod proxy;

use ibs_smb::{Dialect, SmbCredentials, SmbLocation, SmbOptions, SmbStorage};
use std::time::Duration;

#[allow(unused_imports)] // each test binary uses a part
pub use ibs_testing::samba::{
    password, run_script, shared_server, DIR as SHARED_DIR, PORT as SHARED_PORT,
};

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
