//! The S3 storage backend: [`S3Storage`] implements the storage contract
//! (`docs/design/storage-contract.md`) on a bucket and a key prefix of any S3-compatible object
//! store, through the official `aws-sdk-s3` over rustls on ring (ADR 0025). It is the only crate that
//! sees the SDK; the rest of ibs sees [`ibs_storage::Storage`].
//!
//! - `put` is one `PutObject` (atomic by S3's semantics) up to [`S3Config::multipart_threshold`],
//!   above it a multipart upload, which S3 also publishes atomically on completion; a failed upload
//!   is aborted, and [`ibs_storage::Storage::remove_stale_temporaries`] aborts those a killed writer
//!   left behind.
//! - The SDK's own retries are off: [`ibs_storage::RetryStorage`] is the one retry layer, acting
//!   on the `transient` flag that [`error::classify`] sets (network failures, 5xx, `SlowDown`).
//! - Request checksums are sent only when an operation requires them: Ceph RGW 16.2 rejects the
//!   SDK's aws-chunked trailing checksums. Payloads are still signed with their SHA-256
//!   (`x-amz-content-sha256`), which the server verifies.
//!
//! This crate takes typed options and credentials in memory; it reads no files and no environment.

pub mod error;
mod lock;
mod storage;

pub use storage::S3Storage;

use std::fmt;
use zeroize::Zeroizing;

/// How the bucket is addressed in requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Addressing {
    /// `https://host/bucket/key` (works with any endpoint, IP addresses and loopback included).
    #[default]
    Path,
    /// `https://bucket.host/key`.
    Virtual,
}

/// Where the objects live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Config {
    /// `https://host[:port]` or `http://host[:port]`, without a path.
    pub endpoint: String,
    /// The signing region (`us-east-1` unless the store says otherwise).
    pub region: String,
    pub bucket: String,
    /// Key prefix without leading or trailing `/` (empty: the bucket's root).
    pub prefix: String,
    pub addressing: Addressing,
    /// Objects larger than this are sent as a multipart upload.
    pub multipart_threshold: u64,
    /// Size of each part of a multipart upload (S3 needs at least 5 MiB, except the last part).
    pub part_size: u64,
    /// Parts of one upload sent at a time.
    pub part_concurrency: usize,
    /// Key prefixes (relative to `prefix`) whose objects the caller writes exactly once. On a
    /// bucket with object lock (hence versioning) reads of these keys take the key's *first*
    /// version, so an overwrite (a new version put by someone holding write access) is never read;
    /// [`ibs_storage::Storage::rewritten`] reports it.
    pub write_once: Vec<String>,
}

/// The default signing region.
pub const DEFAULT_REGION: &str = "us-east-1";

impl S3Config {
    /// A configuration with the default region, path-style addressing, a 64 MiB multipart
    /// threshold (above a pack: 16 MiB plus its last chunk of up to 16 MiB, so a pack is one
    /// `PutObject`) and 16 MiB parts.
    pub fn new(
        endpoint: impl Into<String>,
        bucket: impl Into<String>,
        prefix: impl Into<String>,
    ) -> Self {
        S3Config {
            endpoint: endpoint.into(),
            region: DEFAULT_REGION.to_owned(),
            bucket: bucket.into(),
            prefix: prefix.into(),
            addressing: Addressing::Path,
            multipart_threshold: 64 << 20,
            part_size: 16 << 20,
            part_concurrency: 4,
            write_once: Vec::new(),
        }
    }

    /// This configuration with `prefix/child` (or `child` at the root) as its prefix.
    pub fn join(&self, child: &str) -> Self {
        let prefix = if self.prefix.is_empty() {
            child.to_owned()
        } else {
            format!("{}/{child}", self.prefix)
        };
        S3Config {
            prefix,
            ..self.clone()
        }
    }

    /// `s3://host/bucket/prefix` (or `s3+http://…`), safe to log.
    pub fn display(&self) -> String {
        let (scheme, host) = match self.endpoint.split_once("://") {
            Some(("http", h)) => ("s3+http", h),
            Some((_, h)) => ("s3", h),
            None => ("s3", self.endpoint.as_str()),
        };
        let mut out = format!("{scheme}://{host}/{}", self.bucket);
        if !self.prefix.is_empty() {
            out.push('/');
            out.push_str(&self.prefix);
        }
        out
    }
}

/// An access key and its secret. The secret is wiped from memory on drop and never printed.
#[derive(Clone)]
pub struct S3Credentials {
    pub access_key: String,
    secret_key: Zeroizing<String>,
}

impl S3Credentials {
    pub fn new(access_key: impl Into<String>, secret_key: impl Into<String>) -> Self {
        S3Credentials {
            access_key: access_key.into(),
            secret_key: Zeroizing::new(secret_key.into()),
        }
    }

    pub(crate) fn secret(&self) -> &str {
        &self.secret_key
    }
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S3Credentials({}, <secret>)", self.access_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_scheme_and_never_the_secret() {
        let c = S3Config::new("http://127.0.0.1:7480", "b", "region/x");
        assert_eq!(c.display(), "s3+http://127.0.0.1:7480/b/region/x");
        assert_eq!(
            c.join("MASBackup").display(),
            "s3+http://127.0.0.1:7480/b/region/x/MASBackup"
        );
        let c = S3Config::new("https://s3.example.com", "b", "");
        assert_eq!(c.display(), "s3://s3.example.com/b");
        assert_eq!(c.join("MASBackup").prefix, "MASBackup");
        let creds = S3Credentials::new("AKID", "very-secret");
        assert!(!format!("{creds:?}").contains("very-secret"));
    }
}
