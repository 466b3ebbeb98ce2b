//! Helpers of the end-to-end tests against the Ceph RADOS Gateway (`ibs_testing::rgw`).

use super::{ibs, Ibs};
use ibs_testing::rgw::Keys;
use std::path::Path;

/// Runs an S3 SDK future (the tests themselves are synchronous).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// `ibs repo SUB --repo LOC --state STATE` with `keys` in the AWS variables.
pub fn s3_cmd(sub: &str, loc: &str, state: &Path, keys: &Keys) -> Ibs {
    ibs(["repo", sub, "--repo", loc])
        .arg("--state")
        .arg(state)
        .env("AWS_ACCESS_KEY_ID", &keys.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &keys.secret_key)
}
