//! Object lock (WORM retention) as a vendor-free capability: the [`LockMode`]s and [`Retention`]
//! a backend may put on an object, the [`LockPolicy`] of a location, and [`LockedWrites`], the
//! decorator that turns every `put` into a locked put. ADR 0035 records why the policy lives in a
//! decorator: every object ibs writes is locked without any writer having to know it.
//!
//! Invariant: through a [`LockedWrites`] handle, every object whose key is not exempt (repository
//! locks, which must be deletable when an operation ends) is written with a retention until at
//! least `now + policy.horizon()`, by the writing host's clock.

use crate::{Capabilities, ForeignFile, ObjectInfo, ObjectKey, Result, SpaceInfo, Storage};
use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The safety margin added to the backup retention when nothing else is configured: a week, so
/// that a clock that is days off or a retention run that is late does not leave a retained
/// backup's objects unlocked.
pub const DEFAULT_LOCK_MARGIN: Duration = Duration::from_secs(7 * 86_400);

/// How a lock may be lifted before it expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LockMode {
    /// Nobody can delete the object or shorten its lock before it expires (S3 COMPLIANCE).
    #[default]
    Compliance,
    /// A principal with the bypass permission can (S3 GOVERNANCE).
    Governance,
}

impl LockMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Compliance => "compliance",
            LockMode::Governance => "governance",
        }
    }
}

/// A lock on one object: its mode and until when it holds, in Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub mode: LockMode,
    pub until: i64,
}

/// How long a location keeps what ibs writes locked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockPolicy {
    pub mode: LockMode,
    /// How long a backup is retained after it finished (the retention in days of the repository
    /// or controller).
    pub retention: Duration,
    /// Added to `retention` ([`DEFAULT_LOCK_MARGIN`]).
    pub margin: Duration,
}

impl LockPolicy {
    /// How long an object stays locked after the newest backup that needs it finished.
    pub fn horizon(&self) -> Duration {
        self.retention.saturating_add(self.margin)
    }

    /// The retention for an object last needed by a backup that finished at `from`.
    pub fn retention_from(&self, from: i64) -> Retention {
        let h = i64::try_from(self.horizon().as_secs()).unwrap_or(i64::MAX);
        Retention {
            mode: self.mode,
            until: from.saturating_add(h),
        }
    }
}

/// Unix seconds by this host's clock.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Locks every object written through it with [`LockPolicy::retention_from`] now, except keys
/// starting with one of `exempt` (prefixes of objects ibs deletes itself soon after writing).
#[derive(Debug)]
pub struct LockedWrites {
    inner: Arc<dyn Storage>,
    policy: LockPolicy,
    exempt: Vec<String>,
}

impl LockedWrites {
    pub fn new(inner: Arc<dyn Storage>, policy: LockPolicy, exempt: Vec<String>) -> Self {
        LockedWrites {
            inner,
            policy,
            exempt,
        }
    }
}

#[async_trait]
impl Storage for LockedWrites {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn put(&self, key: &ObjectKey, data: Bytes) -> Result<()> {
        if self.exempt.iter().any(|p| key.as_str().starts_with(p)) {
            return self.inner.put(key, data).await;
        }
        let r = self.policy.retention_from(now_unix());
        self.inner.put_locked(key, data, r).await
    }
    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        self.inner.get(key).await
    }
    async fn get_reusable(&self, key: &ObjectKey) -> Result<Bytes> {
        self.inner.get_reusable(key).await
    }
    async fn get_range(&self, key: &ObjectKey, offset: u64, len: u64) -> Result<Bytes> {
        self.inner.get_range(key, offset, len).await
    }
    fn get_range_blocking(&self, key: &ObjectKey, offset: u64, len: u64) -> Option<Result<Bytes>> {
        self.inner.get_range_blocking(key, offset, len)
    }
    async fn stat(&self, key: &ObjectKey) -> Result<ObjectInfo> {
        self.inner.stat(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.inner.delete(key).await
    }
    async fn space(&self) -> Result<Option<SpaceInfo>> {
        self.inner.space().await
    }
    async fn remove_stale_temporaries(&self, older_than: Duration) -> Result<usize> {
        self.inner.remove_stale_temporaries(older_than).await
    }
    async fn list_foreign(&self) -> Result<Vec<ForeignFile>> {
        self.inner.list_foreign().await
    }
    async fn delete_foreign(&self, path: &str) -> Result<()> {
        self.inner.delete_foreign(path).await
    }
    async fn object_lock_enabled(&self) -> Result<bool> {
        self.inner.object_lock_enabled().await
    }
    fn lock_policy(&self) -> Option<LockPolicy> {
        Some(self.policy)
    }
    async fn put_locked(&self, key: &ObjectKey, data: Bytes, retention: Retention) -> Result<()> {
        self.inner.put_locked(key, data, retention).await
    }
    async fn extend_lock(&self, key: &ObjectKey, retention: Retention) -> Result<()> {
        self.inner.extend_lock(key, retention).await
    }
    async fn lock_until(&self, key: &ObjectKey) -> Result<Option<i64>> {
        self.inner.lock_until(key).await
    }
    async fn rewritten(&self, prefix: &str) -> Result<Vec<ObjectKey>> {
        self.inner.rewritten(prefix).await
    }

    async fn history(&self, key: &ObjectKey) -> Result<Vec<Option<Bytes>>> {
        self.inner.history(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_horizon_is_retention_plus_margin_and_saturates() {
        let p = LockPolicy {
            mode: LockMode::Compliance,
            retention: Duration::from_secs(30 * 86_400),
            margin: DEFAULT_LOCK_MARGIN,
        };
        assert_eq!(p.horizon(), Duration::from_secs(37 * 86_400));
        assert_eq!(p.retention_from(100).until, 100 + 37 * 86_400);
        let huge = LockPolicy {
            retention: Duration::MAX,
            ..p
        };
        assert_eq!(huge.retention_from(100).until, i64::MAX);
    }
}
