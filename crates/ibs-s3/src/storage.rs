//! [`S3Storage`]: the storage contract on a bucket and prefix. Object keys map one to one to S3
//! keys under the prefix (`PREFIX/packs/ab/…`); listing walks `ListObjectsV2` pages; `delete`
//! checks existence first because S3 deletes of missing keys succeed and the contract says
//! `NotFound`.
//!
//! On a bucket with object lock (see [`crate::lock`]) deletes remove object *versions* (a plain
//! delete would only add a delete marker and free nothing), and reads of write-once keys take the
//! key's first version.

use crate::error::classify;
use crate::{Addressing, S3Config, S3Credentials};
use async_trait::async_trait;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, StalledStreamProtectionConfig,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use ibs_storage::{
    check_deletable_foreign, Capabilities, ErrorKind, ForeignFile, ObjectInfo, ObjectKey, Result,
    Retention, SpaceInfo, Storage, StorageError, TEMP_PREFIX,
};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// S3 refuses parts below 5 MiB (except the last one).
const MIN_PART: u64 = 5 << 20;
/// S3 allows at most this many parts in one upload.
const MAX_PARTS: u64 = 10_000;

/// A bucket and prefix on an S3-compatible store.
pub struct S3Storage {
    pub(crate) client: Client,
    pub(crate) config: S3Config,
    /// `prefix/`, or empty at the bucket's root.
    pub(crate) root: String,
    /// Whether the bucket has object lock, once asked.
    pub(crate) lock: OnceLock<bool>,
    /// First version id of write-once keys already looked up (relative key → version id).
    pub(crate) first: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Storage({})", self.config.display())
    }
}

/// The most bytes a read reserves up front from the length a response announces (a larger
/// body still arrives whole; the buffer grows): a lying server cannot make a read reserve more.
const READ_PREALLOC_MAX: i64 = 64 << 20;

impl S3Storage {
    /// A client for `config` with `credentials`. Sends no request: [`S3Storage::probe`] does.
    pub fn new(config: S3Config, credentials: &S3Credentials) -> Self {
        let http = if config.endpoint.starts_with("http://") {
            aws_smithy_http_client::Builder::new().build_http()
        } else {
            use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
            aws_smithy_http_client::Builder::new()
                .tls_provider(Provider::Rustls(CryptoMode::Ring))
                .build_https()
        };
        let creds = Credentials::new(
            &credentials.access_key,
            credentials.secret(),
            None,
            None,
            "ibs",
        );
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&config.endpoint)
            .region(Region::new(config.region.clone()))
            .credentials_provider(creds)
            .force_path_style(config.addressing == Addressing::Path)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            // One retry layer in ibs (RetryStorage), one bound per operation (TimeoutStorage).
            .retry_config(RetryConfig::disabled())
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .build(),
            )
            .http_client(http)
            .build();
        let root = if config.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", config.prefix.trim_matches('/'))
        };
        S3Storage {
            client: Client::from_conf(conf),
            config,
            root,
            lock: OnceLock::new(),
            first: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &S3Config {
        &self.config
    }

    /// Checks that the bucket exists and the credentials may list it: a missing bucket is `Path`,
    /// rejected credentials `Authentication`, an unreachable endpoint `Connectivity`.
    pub async fn probe(&self) -> Result<()> {
        // ListObjectsV2 rather than HeadBucket: a HEAD answer has no body, so it cannot tell a
        // missing bucket (NoSuchBucket) from a wrong secret.
        self.client
            .list_objects_v2()
            .bucket(&self.config.bucket)
            .prefix(&self.root)
            .max_keys(1)
            .send()
            .await
            .map_err(|e| classify("probe", None, e))?;
        Ok(())
    }

    /// Whether any object exists under this storage's prefix (a repository or anything else).
    pub async fn is_empty(&self) -> Result<bool> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.config.bucket)
            .prefix(&self.root)
            .max_keys(1)
            .send()
            .await
            .map_err(|e| classify("list", None, e))?;
        Ok(out.contents().is_empty())
    }

    pub(crate) fn full(&self, key: &str) -> String {
        format!("{}{key}", self.root)
    }

    /// Every S3 key under `root + prefix`, relative to the root, with size and time.
    async fn list_raw(&self, prefix: &str) -> Result<Vec<(String, u64, Option<i64>)>> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.config.bucket)
            .prefix(self.full(prefix))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify("list", None, e))?;
            for o in page.contents() {
                let Some(rel) = o.key().and_then(|k| k.strip_prefix(&self.root)) else {
                    continue;
                };
                let size = o.size().unwrap_or(0).max(0) as u64;
                out.push((rel.to_owned(), size, o.last_modified().map(|t| t.secs())));
            }
        }
        Ok(out)
    }

    async fn put_multipart(
        &self,
        key: &ObjectKey,
        data: Bytes,
        lock: Option<Retention>,
    ) -> Result<()> {
        let full = self.full(key.as_str());
        let started = self
            .client
            .create_multipart_upload()
            .bucket(&self.config.bucket)
            .key(&full)
            .set_object_lock_mode(lock.map(|r| crate::lock::mode(r.mode)))
            .set_object_lock_retain_until_date(lock.map(|r| crate::lock::date(r.until)))
            .send()
            .await
            .map_err(|e| classify("put", Some(key.as_str()), e))?;
        let Some(upload_id) = started.upload_id().map(str::to_owned) else {
            return Err(StorageError::new(
                ErrorKind::Other,
                "put",
                Some(key.as_str()),
                "the server started a multipart upload without an upload id",
            ));
        };
        let result = self.upload_parts(key, &full, &upload_id, data).await;
        if result.is_err() {
            // Best effort: a leftover upload is also removed by remove_stale_temporaries.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.config.bucket)
                .key(&full)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    async fn upload_parts(
        &self,
        key: &ObjectKey,
        full: &str,
        upload_id: &str,
        data: Bytes,
    ) -> Result<()> {
        let len = data.len() as u64;
        let part = self
            .config
            .part_size
            .max(MIN_PART)
            .max(len.div_ceil(MAX_PARTS));
        let ranges: Vec<(i32, Bytes)> = (0..len.div_ceil(part))
            .map(|i| {
                let start = (i * part) as usize;
                let end = ((i + 1) * part).min(len) as usize;
                (i as i32 + 1, data.slice(start..end))
            })
            .collect();
        let parts: Vec<CompletedPart> = futures::stream::iter(ranges)
            .map(|(number, body)| async move {
                let out = self
                    .client
                    .upload_part()
                    .bucket(&self.config.bucket)
                    .key(full)
                    .upload_id(upload_id)
                    .part_number(number)
                    .body(ByteStream::from(body))
                    .send()
                    .await
                    .map_err(|e| classify("put", Some(key.as_str()), e))?;
                Ok::<_, StorageError>(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag().map(str::to_owned))
                        .build(),
                )
            })
            .buffered(self.config.part_concurrency.max(1))
            .try_collect()
            .await?;
        self.client
            .complete_multipart_upload()
            .bucket(&self.config.bucket)
            .key(full)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| classify("put", Some(key.as_str()), e))?;
        Ok(())
    }

    /// Writes `key`, locked by `lock` if given.
    pub(crate) async fn put_with(
        &self,
        key: &ObjectKey,
        data: Bytes,
        lock: Option<Retention>,
    ) -> Result<()> {
        if data.len() as u64 > self.config.multipart_threshold {
            return self.put_multipart(key, data, lock).await;
        }
        self.client
            .put_object()
            .bucket(&self.config.bucket)
            .key(self.full(key.as_str()))
            .set_object_lock_mode(lock.map(|r| crate::lock::mode(r.mode)))
            .set_object_lock_retain_until_date(lock.map(|r| crate::lock::date(r.until)))
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| classify("put", Some(key.as_str()), e))?;
        Ok(())
    }

    async fn read(&self, op: &'static str, key: &str, range: Option<String>) -> Result<Bytes> {
        let version = self.read_version(op, key).await?;
        let out = self
            .client
            .get_object()
            .bucket(&self.config.bucket)
            .key(self.full(key))
            .set_version_id(version)
            .set_range(range)
            .send()
            .await
            .map_err(|e| classify(op, Some(key), e))?;
        // Each frame is copied into one buffer of the announced length as it arrives and dropped:
        // collecting the frames first held a response twice over, in many small allocations.
        let announced = out
            .content_length()
            .unwrap_or(0)
            .clamp(0, READ_PREALLOC_MAX);
        let mut buf = bytes::BytesMut::with_capacity(announced as usize);
        let mut body = out.body;
        let cut = |e: aws_sdk_s3::primitives::ByteStreamError| {
            StorageError::new(
                ErrorKind::Connectivity,
                op,
                Some(key),
                format!("S3 response body was cut: {e}"),
            )
            .transient()
        };
        while let Some(frame) = body.try_next().await.map_err(cut)? {
            buf.extend_from_slice(&frame);
        }
        Ok(buf.freeze())
    }

    /// Size and time of the S3 object at `rel` (relative to the root).
    async fn head(&self, op: &'static str, rel: &str) -> Result<(u64, Option<i64>)> {
        let version = self.read_version(op, rel).await?;
        let out = self
            .client
            .head_object()
            .bucket(&self.config.bucket)
            .key(self.full(rel))
            .set_version_id(version)
            .send()
            .await
            .map_err(|e| classify(op, Some(rel), e))?;
        Ok((
            out.content_length().unwrap_or(0).max(0) as u64,
            out.last_modified().map(|t| t.secs()),
        ))
    }

    async fn delete_raw(&self, op: &'static str, rel: &str) -> Result<()> {
        if self.lock_enabled().await? {
            return self.delete_versions(op, rel).await;
        }
        // S3 answers a delete of a missing key with success; the contract wants NotFound.
        self.head(op, rel).await?;
        self.client
            .delete_object()
            .bucket(&self.config.bucket)
            .key(self.full(rel))
            .send()
            .await
            .map_err(|e| classify(op, Some(rel), e))?;
        Ok(())
    }
}

#[async_trait]
impl Storage for S3Storage {
    fn location(&self) -> String {
        self.config.display()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // S3 (since 2020) and RGW list what a completed PUT wrote.
            list_after_write: true,
            verifies_writes: false,
            max_object_size: self.config.part_size.max(MIN_PART) * MAX_PARTS,
            ranged_reads: true,
            prefers_large_reads: true,
            put_size_hint: None,
            local: false,
        }
    }

    async fn put(&self, key: &ObjectKey, data: Bytes) -> Result<()> {
        self.put_with(key, data, None).await
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        self.read("get", key.as_str(), None).await
    }

    async fn get_range(&self, key: &ObjectKey, offset: u64, len: u64) -> Result<Bytes> {
        let past_end = || {
            StorageError::new(
                ErrorKind::Invalid,
                "get_range",
                Some(key.as_str()),
                format!("range {offset}+{len} reaches past the end of the object"),
            )
        };
        let Some(end) = offset.checked_add(len) else {
            return Err(past_end());
        };
        if len == 0 {
            let (size, _) = self.head("get_range", key.as_str()).await?;
            return if end <= size {
                Ok(Bytes::new())
            } else {
                Err(past_end())
            };
        }
        let got = self
            .read(
                "get_range",
                key.as_str(),
                Some(format!("bytes={offset}-{}", end - 1)),
            )
            .await?;
        // S3 shortens a range that runs past the end instead of refusing it.
        if got.len() as u64 != len {
            return Err(past_end());
        }
        Ok(got)
    }

    async fn stat(&self, key: &ObjectKey) -> Result<ObjectInfo> {
        let (size, modified) = self.head("stat", key.as_str()).await?;
        Ok(ObjectInfo {
            key: key.clone(),
            size,
            modified,
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        Ok(self
            .list_raw(prefix)
            .await?
            .into_iter()
            .filter_map(|(rel, size, modified)| {
                ObjectKey::new(rel).ok().map(|key| ObjectInfo {
                    key,
                    size,
                    modified,
                })
            })
            .collect())
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.delete_raw("delete", key.as_str()).await
    }

    /// A server-side copy, then the delete of `from`: no object bytes cross the network.
    async fn rename(&self, from: &ObjectKey, to: &ObjectKey) -> Result<()> {
        self.head("rename", from.as_str()).await?;
        let source = copy_source(&self.config.bucket, &self.full(from.as_str()));
        self.client
            .copy_object()
            .bucket(&self.config.bucket)
            .key(self.full(to.as_str()))
            .copy_source(source)
            .send()
            .await
            .map_err(|e| classify("rename", Some(to.as_str()), e))?;
        self.delete_raw("rename", from.as_str()).await
    }

    /// S3 does not tell free space (quotas surface as `Capacity` errors on write).
    async fn space(&self) -> Result<Option<SpaceInfo>> {
        Ok(None)
    }

    /// Aborts multipart uploads under the prefix that started longer ago than `older_than`: the
    /// S3 form of a killed writer's temporaries.
    async fn remove_stale_temporaries(&self, older_than: Duration) -> Result<usize> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let cutoff = now - older_than.as_secs() as i64;
        let mut removed = 0;
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.config.bucket)
                .prefix(&self.root)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
                .await
                .map_err(|e| classify("remove_stale_temporaries", None, e))?;
            for u in page.uploads() {
                let stale = u.initiated().is_some_and(|t| t.secs() <= cutoff);
                if let (true, Some(key), Some(id)) = (stale, u.key(), u.upload_id()) {
                    self.client
                        .abort_multipart_upload()
                        .bucket(&self.config.bucket)
                        .key(key)
                        .upload_id(id)
                        .send()
                        .await
                        .map_err(|e| classify("remove_stale_temporaries", Some(key), e))?;
                    removed += 1;
                }
            }
            if page.is_truncated() != Some(true) {
                return Ok(removed);
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            id_marker = page.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() && id_marker.is_none() {
                return Ok(removed);
            }
        }
    }

    async fn list_foreign(&self) -> Result<Vec<ForeignFile>> {
        Ok(self
            .list_raw("")
            .await?
            .into_iter()
            .filter(|(rel, _, _)| {
                !rel.is_empty()
                    && !rel.ends_with('/')
                    && !ObjectKey::is_valid(rel)
                    && !rel
                        .rsplit('/')
                        .next()
                        .is_some_and(|n| n.starts_with(TEMP_PREFIX))
            })
            .map(|(path, size, _)| ForeignFile { path, size })
            .collect())
    }

    async fn delete_foreign(&self, path: &str) -> Result<()> {
        check_deletable_foreign(path)?;
        self.delete_raw("delete_foreign", path).await
    }

    async fn object_lock_enabled(&self) -> Result<bool> {
        self.lock_enabled().await
    }

    async fn put_locked(&self, key: &ObjectKey, data: Bytes, retention: Retention) -> Result<()> {
        self.require_lock("put_locked", key).await?;
        self.put_with(key, data, Some(retention)).await
    }

    async fn extend_lock(&self, key: &ObjectKey, retention: Retention) -> Result<()> {
        self.require_lock("extend_lock", key).await?;
        self.extend(key.as_str(), retention).await
    }

    async fn lock_until(&self, key: &ObjectKey) -> Result<Option<i64>> {
        self.require_lock("lock_until", key).await?;
        self.locked_until("lock_until", key.as_str()).await
    }

    async fn rewritten(&self, prefix: &str) -> Result<Vec<ObjectKey>> {
        self.rewritten_keys(prefix).await
    }

    async fn history(&self, key: &ObjectKey) -> Result<Vec<Option<Bytes>>> {
        self.key_history(key.as_str()).await
    }
}

/// `x-amz-copy-source`: `bucket/key`, percent-encoded but for `/` and the unreserved characters.
fn copy_source(bucket: &str, key: &str) -> String {
    let mut out = String::with_capacity(bucket.len() + key.len() + 1);
    for b in format!("{bucket}/{key}").bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
