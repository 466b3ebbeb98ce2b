//! Per-operation timeouts, as a decorator: every operation of the wrapped backend must finish
//! within the bound for its kind, or it fails with [`ErrorKind::TimedOut`] (transient, alert class
//! Connectivity). It turns a server or mount that accepts a request and never answers into an
//! error the job can report, instead of a job that hangs until its own timeout.
//!
//! Assembled by `ibs-location` beneath the retry decorator (`Retry(Timeout(backend))`), so each
//! attempt is bounded and a timed-out attempt is retried like any transient failure. A timed-out
//! operation is abandoned, not undone: every operation is idempotent and `put` is atomic
//! (`docs/design/storage-contract.md`), so a put that lands after its timeout is harmless.
//! `get_range_blocking` is passed through unbounded (a synchronous call cannot be abandoned).

use crate::{
    Capabilities, ErrorKind, ObjectInfo, ObjectKey, Result, SpaceInfo, Storage, StorageError,
};
use async_trait::async_trait;
use bytes::Bytes;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The bound for each kind of operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpTimeouts {
    /// Moving object data: `put`, `get`, `get_range` (a pack is tens of MB; slow links need time).
    pub data: Duration,
    /// Listings: `list`, `list_foreign`, `remove_stale_temporaries` (large folders).
    pub listing: Duration,
    /// Small requests: `stat`, `delete`, `delete_foreign`, `space`.
    pub metadata: Duration,
}

impl Default for OpTimeouts {
    fn default() -> Self {
        OpTimeouts {
            data: Duration::from_secs(600),
            listing: Duration::from_secs(600),
            metadata: Duration::from_secs(120),
        }
    }
}

impl OpTimeouts {
    /// The same bound for every kind (the controller's `storage_timeout_seconds`).
    pub fn uniform(d: Duration) -> Self {
        OpTimeouts {
            data: d,
            listing: d,
            metadata: d,
        }
    }
}

/// Wraps a backend and bounds each of its operations.
#[derive(Debug)]
pub struct TimeoutStorage {
    inner: Arc<dyn Storage>,
    limits: OpTimeouts,
}

impl TimeoutStorage {
    pub fn new(inner: Arc<dyn Storage>, limits: OpTimeouts) -> Self {
        TimeoutStorage { inner, limits }
    }

    async fn run<T>(
        &self,
        op: &'static str,
        key: Option<&str>,
        limit: Duration,
        f: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(limit, f).await {
            Ok(r) => r,
            Err(_) => Err(StorageError::new(
                ErrorKind::TimedOut,
                op,
                key,
                format!(
                    "no answer from {} within {} s",
                    self.inner.location(),
                    limit.as_secs_f64()
                ),
            )
            .transient()),
        }
    }
}

#[async_trait]
impl Storage for TimeoutStorage {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn put(&self, key: &ObjectKey, data: Bytes) -> Result<()> {
        let k = Some(key.as_str());
        self.run("put", k, self.limits.data, self.inner.put(key, data))
            .await
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        let k = Some(key.as_str());
        self.run("get", k, self.limits.data, self.inner.get(key))
            .await
    }

    async fn get_reusable(&self, key: &ObjectKey) -> Result<Bytes> {
        let k = Some(key.as_str());
        self.run("get", k, self.limits.data, self.inner.get_reusable(key))
            .await
    }

    async fn get_range(&self, key: &ObjectKey, offset: u64, len: u64) -> Result<Bytes> {
        let k = Some(key.as_str());
        let f = self.inner.get_range(key, offset, len);
        self.run("get_range", k, self.limits.data, f).await
    }

    fn get_range_blocking(&self, key: &ObjectKey, offset: u64, len: u64) -> Option<Result<Bytes>> {
        self.inner.get_range_blocking(key, offset, len)
    }

    async fn stat(&self, key: &ObjectKey) -> Result<ObjectInfo> {
        let k = Some(key.as_str());
        self.run("stat", k, self.limits.metadata, self.inner.stat(key))
            .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let f = self.inner.list(prefix);
        self.run("list", Some(prefix), self.limits.listing, f).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        let k = Some(key.as_str());
        self.run("delete", k, self.limits.metadata, self.inner.delete(key))
            .await
    }

    async fn rename(&self, from: &ObjectKey, to: &ObjectKey) -> Result<()> {
        let k = Some(from.as_str());
        self.run(
            "rename",
            k,
            self.limits.metadata,
            self.inner.rename(from, to),
        )
        .await
    }

    async fn space(&self) -> Result<Option<SpaceInfo>> {
        self.run("space", None, self.limits.metadata, self.inner.space())
            .await
    }

    async fn remove_stale_temporaries(&self, older_than: Duration) -> Result<usize> {
        let f = self.inner.remove_stale_temporaries(older_than);
        self.run("remove_stale_temporaries", None, self.limits.listing, f)
            .await
    }

    async fn list_foreign(&self) -> Result<Vec<crate::ForeignFile>> {
        let f = self.inner.list_foreign();
        self.run("list_foreign", None, self.limits.listing, f).await
    }

    async fn delete_foreign(&self, path: &str) -> Result<()> {
        let f = self.inner.delete_foreign(path);
        self.run("delete_foreign", Some(path), self.limits.metadata, f)
            .await
    }

    async fn object_lock_enabled(&self) -> Result<bool> {
        let f = self.inner.object_lock_enabled();
        self.run("object_lock_enabled", None, self.limits.metadata, f)
            .await
    }

    fn lock_policy(&self) -> Option<crate::LockPolicy> {
        self.inner.lock_policy()
    }

    async fn put_locked(&self, key: &ObjectKey, data: Bytes, r: crate::Retention) -> Result<()> {
        let k = Some(key.as_str());
        let f = self.inner.put_locked(key, data, r);
        self.run("put_locked", k, self.limits.data, f).await
    }

    async fn extend_lock(&self, key: &ObjectKey, r: crate::Retention) -> Result<()> {
        let k = Some(key.as_str());
        let f = self.inner.extend_lock(key, r);
        self.run("extend_lock", k, self.limits.metadata, f).await
    }

    async fn lock_until(&self, key: &ObjectKey) -> Result<Option<i64>> {
        let k = Some(key.as_str());
        let f = self.inner.lock_until(key);
        self.run("lock_until", k, self.limits.metadata, f).await
    }

    async fn rewritten(&self, prefix: &str) -> Result<Vec<ObjectKey>> {
        let f = self.inner.rewritten(prefix);
        self.run("rewritten", None, self.limits.listing, f).await
    }

    async fn history(&self, key: &ObjectKey) -> Result<Vec<Option<Bytes>>> {
        let f = self.inner.history(key);
        self.run("history", Some(key.as_str()), self.limits.data, f)
            .await
    }
}
