//! Retry with exponential backoff, as a decorator. This is the only place in ibs that retries storage
//! operations: backends classify errors as transient or not, and this layer acts on that flag. Every
//! operation of the contract is idempotent (a `put` replaces, a `delete` of a missing object is
//! `NotFound`, which callers that retry a delete treat as success), so retrying is always safe.
//!
//! Timed-out attempts ([`ErrorKind::TimedOut`]) have their own, smaller allowance: a server
//! that held one request for its whole bound is not a dropped packet, and retrying it six times
//! would turn a stalled (e.g. full) storage into an hour-long silent job. At most
//! [`RetryPolicy::timed_out_attempts`] attempts may time out before the error is returned.

use crate::{Capabilities, ErrorKind, ObjectInfo, ObjectKey, Result, SpaceInfo, Storage};
use async_trait::async_trait;
use bytes::Bytes;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How many times and how patiently to retry transient failures.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Total attempts, including the first.
    pub attempts: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
    /// Attempts that may end in a timeout before that timeout is returned (at least 1).
    pub timed_out_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            timed_out_attempts: 2,
        }
    }
}

/// Wraps a backend and retries its transient failures.
#[derive(Debug)]
pub struct RetryStorage {
    inner: Arc<dyn Storage>,
    policy: RetryPolicy,
}

impl RetryStorage {
    pub fn new(inner: Arc<dyn Storage>, policy: RetryPolicy) -> Self {
        RetryStorage { inner, policy }
    }

    async fn run<T, F, Fut>(&self, op: &'static str, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut delay = self.policy.initial_delay;
        let mut attempt = 1;
        let mut timed_out = 0;
        loop {
            let r = f().await;
            if matches!(&r, Err(e) if e.kind == ErrorKind::TimedOut) {
                timed_out += 1;
            }
            match r {
                Err(e)
                    if e.transient
                        && attempt < self.policy.attempts
                        && timed_out < self.policy.timed_out_attempts =>
                {
                    tracing::warn!(op, attempt, error = %e, "transient storage error; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.policy.max_delay);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

#[async_trait]
impl Storage for RetryStorage {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn put(&self, key: &ObjectKey, data: Bytes) -> Result<()> {
        self.run("put", || self.inner.put(key, data.clone())).await
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        self.run("get", || self.inner.get(key)).await
    }

    async fn get_reusable(&self, key: &ObjectKey) -> Result<Bytes> {
        self.run("get", || self.inner.get_reusable(key)).await
    }

    async fn get_range(&self, key: &ObjectKey, offset: u64, len: u64) -> Result<Bytes> {
        self.run("get_range", || self.inner.get_range(key, offset, len))
            .await
    }

    /// Not retried: the backends that have a blocking read (a local folder) have no transient errors.
    fn get_range_blocking(&self, key: &ObjectKey, offset: u64, len: u64) -> Option<Result<Bytes>> {
        self.inner.get_range_blocking(key, offset, len)
    }

    async fn stat(&self, key: &ObjectKey) -> Result<ObjectInfo> {
        self.run("stat", || self.inner.stat(key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.run("list", || self.inner.list(prefix)).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.run("delete", || self.inner.delete(key)).await
    }

    async fn rename(&self, from: &ObjectKey, to: &ObjectKey) -> Result<()> {
        self.run("rename", || self.inner.rename(from, to)).await
    }

    async fn space(&self) -> Result<Option<SpaceInfo>> {
        self.run("space", || self.inner.space()).await
    }

    async fn remove_stale_temporaries(&self, older_than: Duration) -> Result<usize> {
        self.run("remove_stale_temporaries", || {
            self.inner.remove_stale_temporaries(older_than)
        })
        .await
    }

    async fn list_foreign(&self) -> Result<Vec<crate::ForeignFile>> {
        self.run("list_foreign", || self.inner.list_foreign()).await
    }

    async fn delete_foreign(&self, path: &str) -> Result<()> {
        self.run("delete_foreign", || self.inner.delete_foreign(path))
            .await
    }

    async fn object_lock_enabled(&self) -> Result<bool> {
        self.run("object_lock_enabled", || self.inner.object_lock_enabled())
            .await
    }

    fn lock_policy(&self) -> Option<crate::LockPolicy> {
        self.inner.lock_policy()
    }

    async fn put_locked(&self, key: &ObjectKey, data: Bytes, r: crate::Retention) -> Result<()> {
        self.run("put_locked", || self.inner.put_locked(key, data.clone(), r))
            .await
    }

    async fn extend_lock(&self, key: &ObjectKey, r: crate::Retention) -> Result<()> {
        self.run("extend_lock", || self.inner.extend_lock(key, r))
            .await
    }

    async fn lock_until(&self, key: &ObjectKey) -> Result<Option<i64>> {
        self.run("lock_until", || self.inner.lock_until(key)).await
    }

    async fn rewritten(&self, prefix: &str) -> Result<Vec<ObjectKey>> {
        self.run("rewritten", || self.inner.rewritten(prefix)).await
    }

    async fn history(&self, key: &ObjectKey) -> Result<Vec<Option<Bytes>>> {
        self.run("history", || self.inner.history(key)).await
    }
}
