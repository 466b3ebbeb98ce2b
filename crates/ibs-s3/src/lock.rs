//! Object lock on S3 (ADR 0035): detecting a bucket with object lock, locked puts
//! (`x-amz-object-lock-mode` / `-retain-until-date`), extending a lock with `PutObjectRetention`
//! (never shortening it), reading a lock, deleting *versions*, and reading the first version of
//! write-once keys.
//!
//! A bucket with object lock is always versioned. There a plain `DeleteObject` succeeds even on a
//! locked object: it only adds a delete marker, frees nothing and hides the object. So this
//! backend deletes every version of a key by its version id, which the store refuses while a
//! version is locked; that refusal is [`ErrorKind::Locked`]. And a `PutObject` on an existing key
//! only adds a new version on top: for keys under [`crate::S3Config::write_once`] reads take the
//! key's first (oldest) version, which is the one ibs wrote, [`S3Storage::rewritten_keys`]
//! names every key with versions of different ETags or a delete marker, and
//! [`S3Storage::key_history`] reads every version of one key.

use crate::error::classify;
use crate::storage::S3Storage;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::DateTime;
use aws_sdk_s3::types::{
    ObjectLockEnabled, ObjectLockLegalHoldStatus, ObjectLockMode, ObjectLockRetention,
    ObjectLockRetentionMode,
};
use ibs_storage::{ErrorKind, LockMode, ObjectKey, Result, Retention, StorageError};
use std::collections::{BTreeMap, BTreeSet};

pub(crate) fn mode(m: LockMode) -> ObjectLockMode {
    match m {
        LockMode::Compliance => ObjectLockMode::Compliance,
        LockMode::Governance => ObjectLockMode::Governance,
    }
}

fn retention_mode(m: LockMode) -> ObjectLockRetentionMode {
    match m {
        LockMode::Compliance => ObjectLockRetentionMode::Compliance,
        LockMode::Governance => ObjectLockRetentionMode::Governance,
    }
}

pub(crate) fn date(secs: i64) -> DateTime {
    DateTime::from_secs(secs)
}

/// One version (or delete marker) of a key, newest first per key as S3 lists them.
struct Version {
    /// Relative to the storage's root.
    key: String,
    id: String,
    marker: bool,
    /// The content's ETag (none for a delete marker).
    etag: Option<String>,
}

impl S3Storage {
    /// Whether the bucket has object lock enabled; asked once (`GetObjectLockConfiguration`).
    pub(crate) async fn lock_enabled(&self) -> Result<bool> {
        if let Some(on) = self.lock.get() {
            return Ok(*on);
        }
        let on = match self
            .client
            .get_object_lock_configuration()
            .bucket(&self.config.bucket)
            .send()
            .await
        {
            Ok(out) => out
                .object_lock_configuration()
                .and_then(|c| c.object_lock_enabled())
                .is_some_and(|e| *e == ObjectLockEnabled::Enabled),
            Err(e) => match e.as_service_error().and_then(|s| s.code()) {
                Some(
                    "ObjectLockConfigurationNotFoundError"
                    | "NoSuchObjectLockConfiguration"
                    | "NotImplemented",
                ) => false,
                _ => return Err(classify("object_lock_enabled", None, e)),
            },
        };
        let _ = self.lock.set(on);
        Ok(on)
    }

    /// `Unsupported` unless the bucket has object lock.
    pub(crate) async fn require_lock(&self, op: &'static str, key: &ObjectKey) -> Result<()> {
        if self.lock_enabled().await? {
            Ok(())
        } else {
            Err(StorageError::unsupported(op, Some(key.as_str())))
        }
    }

    fn is_write_once(&self, rel: &str) -> bool {
        self.config.write_once.iter().any(|p| rel.starts_with(p))
    }

    /// Every version and delete marker under `rel_prefix`.
    async fn versions(&self, op: &'static str, rel_prefix: &str) -> Result<Vec<Version>> {
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.config.bucket)
                .prefix(self.full(rel_prefix))
                .set_key_marker(key_marker.clone())
                .set_version_id_marker(id_marker.clone())
                .send()
                .await
                .map_err(|e| classify(op, Some(rel_prefix), e))?;
            let rel = |k: Option<&str>| {
                k.and_then(|k| k.strip_prefix(&self.root))
                    .map(str::to_owned)
            };
            for v in page.versions() {
                if let (Some(key), Some(id)) = (rel(v.key()), v.version_id()) {
                    out.push(Version {
                        key,
                        id: id.to_owned(),
                        marker: false,
                        etag: v.e_tag().map(str::to_owned),
                    });
                }
            }
            for m in page.delete_markers() {
                if let (Some(key), Some(id)) = (rel(m.key()), m.version_id()) {
                    out.push(Version {
                        key,
                        id: id.to_owned(),
                        marker: true,
                        etag: None,
                    });
                }
            }
            if page.is_truncated() != Some(true) {
                return Ok(out);
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            id_marker = page.next_version_id_marker().map(str::to_owned);
            if key_marker.is_none() && id_marker.is_none() {
                return Ok(out);
            }
        }
    }

    /// The version a read of `rel` must take: the first version of a write-once key on a bucket
    /// with object lock, else the current one (`None`).
    pub(crate) async fn read_version(&self, op: &'static str, rel: &str) -> Result<Option<String>> {
        if !self.is_write_once(rel) || !self.lock_enabled().await? {
            return Ok(None);
        }
        if let Some(v) = self.first_cache().get(rel) {
            return Ok(Some(v.clone()));
        }
        // S3 lists the versions of a key newest first: the last one is the first written.
        let first = self
            .versions(op, rel)
            .await?
            .into_iter()
            .rev()
            .find(|v| v.key == rel && !v.marker)
            .ok_or_else(|| StorageError::not_found(op, rel))?;
        self.first_cache().insert(rel.to_owned(), first.id.clone());
        Ok(Some(first.id))
    }

    fn first_cache(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, String>> {
        self.first.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Deletes every version and delete marker of `rel`. Versions still locked stay, and the
    /// result is then `Locked`; a key without versions is `NotFound`.
    pub(crate) async fn delete_versions(&self, op: &'static str, rel: &str) -> Result<()> {
        let versions: Vec<Version> = self
            .versions(op, rel)
            .await?
            .into_iter()
            .filter(|v| v.key == rel)
            .collect();
        if !versions.iter().any(|v| !v.marker) {
            return Err(StorageError::not_found(op, rel));
        }
        let mut locked = None;
        for v in versions {
            let done = self
                .client
                .delete_object()
                .bucket(&self.config.bucket)
                .key(self.full(rel))
                .version_id(&v.id)
                .send()
                .await;
            match done.map_err(|e| classify(op, Some(rel), e)) {
                Ok(_) => {}
                Err(e) if e.kind == ErrorKind::Locked => locked = Some(e),
                Err(e) => return Err(e),
            }
        }
        self.first_cache().remove(rel);
        match locked {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The lock on the version reads of `rel` take: (mode, until), `i64::MAX` for a legal hold.
    async fn current_lock(
        &self,
        op: &'static str,
        rel: &str,
    ) -> Result<(Option<String>, Option<(LockMode, i64)>)> {
        let version = self.read_version(op, rel).await?;
        let out = self
            .client
            .head_object()
            .bucket(&self.config.bucket)
            .key(self.full(rel))
            .set_version_id(version.clone())
            .send()
            .await
            .map_err(|e| classify(op, Some(rel), e))?;
        let mode = match out.object_lock_mode() {
            Some(ObjectLockMode::Governance) => LockMode::Governance,
            _ => LockMode::Compliance,
        };
        let hold = out.object_lock_legal_hold_status() == Some(&ObjectLockLegalHoldStatus::On);
        let until = out.object_lock_retain_until_date().map(|d| d.secs());
        let lock = match (hold, until) {
            (true, _) => Some((mode, i64::MAX)),
            (false, Some(u)) => Some((mode, u)),
            (false, None) => None,
        };
        Ok((version.or(out.version_id().map(str::to_owned)), lock))
    }

    pub(crate) async fn locked_until(&self, op: &'static str, rel: &str) -> Result<Option<i64>> {
        Ok(self.current_lock(op, rel).await?.1.map(|(_, u)| u))
    }

    /// Extends the lock of `rel` to `r.until` unless it already lasts that long. A COMPLIANCE
    /// lock stays COMPLIANCE (S3 refuses to weaken it).
    pub(crate) async fn extend(&self, rel: &str, r: Retention) -> Result<()> {
        let (version, lock) = self.current_lock("extend_lock", rel).await?;
        let mode = match lock {
            Some((_, until)) if until >= r.until => return Ok(()),
            Some((LockMode::Compliance, _)) => LockMode::Compliance,
            _ => r.mode,
        };
        self.client
            .put_object_retention()
            .bucket(&self.config.bucket)
            .key(self.full(rel))
            .set_version_id(version)
            .retention(
                ObjectLockRetention::builder()
                    .mode(retention_mode(mode))
                    .retain_until_date(date(r.until))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| classify("extend_lock", Some(rel), e))?;
        Ok(())
    }

    /// Every version of `rel`, oldest first: its bytes, `None` for a delete marker.
    pub(crate) async fn key_history(&self, rel: &str) -> Result<Vec<Option<bytes::Bytes>>> {
        let mut versions: Vec<Version> = self
            .versions("history", rel)
            .await?
            .into_iter()
            .filter(|v| v.key == rel)
            .collect();
        if versions.is_empty() {
            return Err(StorageError::not_found("history", rel));
        }
        // S3 lists the versions of a key newest first.
        versions.reverse();
        let mut out = Vec::with_capacity(versions.len());
        for v in versions {
            if v.marker {
                out.push(None);
                continue;
            }
            let got = self
                .client
                .get_object()
                .bucket(&self.config.bucket)
                .key(self.full(rel))
                .version_id(&v.id)
                .send()
                .await
                .map_err(|e| classify("history", Some(rel), e))?;
            let body = got.body.collect().await.map_err(|e| {
                StorageError::new(
                    ErrorKind::Connectivity,
                    "history",
                    Some(rel),
                    format!("S3 response body of version {} was cut: {e}", v.id),
                )
                .transient()
            })?;
            out.push(Some(body.into_bytes()));
        }
        Ok(out)
    }

    /// Keys under `prefix` with versions of different content, or with a delete marker. (Two
    /// versions with the same ETag are a retried put of the same bytes, not a rewrite.)
    pub(crate) async fn rewritten_keys(&self, prefix: &str) -> Result<Vec<ObjectKey>> {
        if !self.lock_enabled().await? {
            return Ok(Vec::new());
        }
        let mut per_key: BTreeMap<String, (BTreeSet<Option<String>>, bool)> = BTreeMap::new();
        for v in self.versions("rewritten", prefix).await? {
            let e = per_key.entry(v.key).or_default();
            if v.marker {
                e.1 = true;
            } else {
                e.0.insert(v.etag);
            }
        }
        Ok(per_key
            .into_iter()
            .filter(|(_, (etags, marker))| etags.len() > 1 || *marker)
            .filter_map(|(k, _)| ObjectKey::new(k).ok())
            .collect())
    }
}
