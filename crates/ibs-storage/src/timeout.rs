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
//!
//! An operation that moves a known number of bytes (`put`, `put_locked`, `get_range`) is bounded
//! by the small-request bound plus the time its bytes take at [`OpTimeouts::min_rate`], capped at
//! the data bound: a stalled write of a 16 MiB pack fails after about three minutes, not ten. A
//! full Ceph cluster does not refuse writes, it holds them; this bound, the retry decorator's
//! cap on timed-out attempts and the message below are what turn that into a reported error.
//! An operation still unanswered after [`OpTimeouts::warn_after`] is logged once at warn, so a
//! stalled job is visible while it waits.

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
    /// Small requests: `stat`, `delete`, `delete_foreign`, `space`; also the base of a sized
    /// operation's bound.
    pub metadata: Duration,
    /// Bytes per second a sized operation must at least sustain beyond the `metadata` bound.
    pub min_rate: u64,
    /// After this long without an answer an operation is logged once at warn.
    pub warn_after: Duration,
}

impl Default for OpTimeouts {
    fn default() -> Self {
        OpTimeouts {
            data: Duration::from_secs(600),
            listing: Duration::from_secs(600),
            metadata: Duration::from_secs(120),
            min_rate: 256 << 10,
            warn_after: Duration::from_secs(60),
        }
    }
}

impl OpTimeouts {
    /// The same bound for every kind (the controller's `storage_timeout_seconds`).
    /// A sized operation's bound is then `d` too.
    pub fn uniform(d: Duration) -> Self {
        OpTimeouts {
            data: d,
            listing: d,
            metadata: d,
            warn_after: Duration::from_secs(60).min(d / 2),
            ..OpTimeouts::default()
        }
    }

    /// The bound for an operation that moves `bytes`: the small-request bound plus the time the
    /// bytes take at `min_rate`, never more than the data bound.
    pub fn sized(&self, bytes: u64) -> Duration {
        let moving = Duration::from_secs_f64(bytes as f64 / self.min_rate.max(1) as f64);
        (self.metadata + moving).min(self.data.max(self.metadata))
    }
}

/// Seconds to a tenth, without a trailing `.0`.
fn secs(d: Duration) -> String {
    let s = format!("{:.1}", d.as_secs_f64());
    s.strip_suffix(".0").map(str::to_owned).unwrap_or(s)
}

/// Whether an operation writes: a stalled write has its own explanation.
fn writes(op: &str) -> bool {
    matches!(op, "put" | "put_locked")
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
        let bounded = tokio::time::timeout(limit, f);
        tokio::pin!(bounded);
        if self.limits.warn_after < limit {
            tokio::select! {
                r = &mut bounded => return r.unwrap_or_else(|_| Err(self.timed_out(op, key, limit))),
                _ = tokio::time::sleep(self.limits.warn_after) => {
                    tracing::warn!(
                        op,
                        key,
                        location = %self.inner.location(),
                        "no answer for {} s; waiting up to {} s",
                        secs(self.limits.warn_after),
                        secs(limit)
                    );
                }
            }
        }
        bounded
            .await
            .unwrap_or_else(|_| Err(self.timed_out(op, key, limit)))
    }

    fn timed_out(&self, op: &'static str, key: Option<&str>, limit: Duration) -> StorageError {
        let why = if writes(op) {
            ": the storage is unreachable, or full and holding writes instead of refusing them \
             (a full Ceph cluster does); check its free space and health"
        } else {
            ""
        };
        StorageError::new(
            ErrorKind::TimedOut,
            op,
            key,
            format!(
                "no answer from {} within {} s{why}",
                self.inner.location(),
                secs(limit)
            ),
        )
        .transient()
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
        let limit = self.limits.sized(data.len() as u64);
        self.run("put", k, limit, self.inner.put(key, data)).await
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
        self.run("get_range", k, self.limits.sized(len), f).await
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
        let limit = self.limits.sized(data.len() as u64);
        let f = self.inner.put_locked(key, data, r);
        self.run("put_locked", k, limit, f).await
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
