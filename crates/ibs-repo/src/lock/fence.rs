//! What a holder knows about its own lock, and the fence that stops its writes once the lock may
//! be lost.
//!
//! A lock is *valid* for its holder while no refresh has failed and the last successful refresh
//! began less than the validity window ago (on the holder's monotonic clock). The window is shorter
//! than the stale timeout other processes wait for, so by the time anyone may judge the lock stale,
//! its holder has stopped writing. [`FencedStorage`] checks validity before every write and delete
//! of a repository opened through it; reads pass.

use crate::error::RepoError;
use async_trait::async_trait;
use bytes::Bytes;
use ibs_storage::{
    Capabilities, DynStorage, ErrorKind, ForeignFile, ObjectInfo, ObjectKey, SpaceInfo, Storage,
    StorageError,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Shared between a [`super::LockGuard`], its refresher, and the fence of its repository.
#[derive(Debug)]
pub struct LockState {
    operation: String,
    valid_for: Duration,
    inner: Mutex<StateInner>,
}

#[derive(Debug)]
struct StateInner {
    /// When the last successful refresh (or the acquisition) began.
    refreshed_at: Instant,
    lost: Option<String>,
}

impl LockState {
    pub(super) fn new(operation: &str, valid_for: Duration, since: Instant) -> Arc<Self> {
        Arc::new(LockState {
            operation: operation.into(),
            valid_for,
            inner: Mutex::new(StateInner {
                refreshed_at: since,
                lost: None,
            }),
        })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, StateInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn refreshed(&self, began: Instant) {
        let mut i = self.inner();
        if i.lost.is_none() {
            i.refreshed_at = began;
        }
    }

    pub(super) fn lose(&self, why: String) {
        let mut i = self.inner();
        if i.lost.is_none() {
            tracing::error!("the {} lock is lost: {why}", self.operation);
            i.lost = Some(why);
        }
    }

    /// Ok while the lock is valid; once it is not, [`RepoError::LockLost`] for ever after.
    pub fn check(&self) -> Result<(), RepoError> {
        let mut i = self.inner();
        if i.lost.is_none() {
            let age = Instant::now().saturating_duration_since(i.refreshed_at);
            if age >= self.valid_for {
                i.lost = Some(format!(
                    "it was last refreshed {} s ago (valid for {} s)",
                    age.as_secs(),
                    self.valid_for.as_secs()
                ));
            }
        }
        match &i.lost {
            None => Ok(()),
            Some(why) => Err(RepoError::LockLost {
                operation: self.operation.clone(),
                reason: why.clone(),
            }),
        }
    }
}

/// The locks currently held through one repository handle. Empty: writes pass.
#[derive(Debug, Default)]
pub struct FenceSlot {
    next: AtomicU64,
    held: Mutex<Vec<(u64, Arc<LockState>)>>,
}

impl FenceSlot {
    fn held(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Arc<LockState>)>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn arm(&self, state: Arc<LockState>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.held().push((id, state));
        id
    }

    pub(super) fn disarm(&self, id: u64) {
        self.held().retain(|(i, _)| *i != id);
    }

    /// Fails if any lock held through this handle is no longer valid.
    pub fn check(&self) -> Result<(), RepoError> {
        self.held().iter().try_for_each(|(_, s)| s.check())
    }
}

/// A storage whose writes and deletes are refused once a lock held through it is lost.
#[derive(Debug)]
pub struct FencedStorage {
    inner: DynStorage,
    slot: Arc<FenceSlot>,
}

impl FencedStorage {
    pub fn new(inner: DynStorage, slot: Arc<FenceSlot>) -> Self {
        FencedStorage { inner, slot }
    }

    fn gate(&self, op: &'static str, key: Option<&str>) -> ibs_storage::Result<()> {
        self.slot
            .check()
            .map_err(|e| StorageError::new(ErrorKind::Other, op, key, e.to_string()))
    }
}

#[async_trait]
impl Storage for FencedStorage {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn put(&self, key: &ObjectKey, data: Bytes) -> ibs_storage::Result<()> {
        self.gate("put", Some(key.as_str()))?;
        self.inner.put(key, data).await
    }
    async fn get(&self, key: &ObjectKey) -> ibs_storage::Result<Bytes> {
        self.inner.get(key).await
    }
    async fn get_reusable(&self, key: &ObjectKey) -> ibs_storage::Result<Bytes> {
        self.inner.get_reusable(key).await
    }
    async fn get_range(
        &self,
        key: &ObjectKey,
        offset: u64,
        len: u64,
    ) -> ibs_storage::Result<Bytes> {
        self.inner.get_range(key, offset, len).await
    }
    fn get_range_blocking(
        &self,
        key: &ObjectKey,
        offset: u64,
        len: u64,
    ) -> Option<ibs_storage::Result<Bytes>> {
        self.inner.get_range_blocking(key, offset, len)
    }
    async fn stat(&self, key: &ObjectKey) -> ibs_storage::Result<ObjectInfo> {
        self.inner.stat(key).await
    }
    async fn list(&self, prefix: &str) -> ibs_storage::Result<Vec<ObjectInfo>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &ObjectKey) -> ibs_storage::Result<()> {
        self.gate("delete", Some(key.as_str()))?;
        self.inner.delete(key).await
    }
    async fn rename(&self, from: &ObjectKey, to: &ObjectKey) -> ibs_storage::Result<()> {
        self.gate("rename", Some(from.as_str()))?;
        self.inner.rename(from, to).await
    }
    async fn space(&self) -> ibs_storage::Result<Option<SpaceInfo>> {
        self.inner.space().await
    }
    async fn remove_stale_temporaries(&self, older_than: Duration) -> ibs_storage::Result<usize> {
        self.gate("remove_stale_temporaries", None)?;
        self.inner.remove_stale_temporaries(older_than).await
    }
    async fn list_foreign(&self) -> ibs_storage::Result<Vec<ForeignFile>> {
        self.inner.list_foreign().await
    }
    async fn delete_foreign(&self, path: &str) -> ibs_storage::Result<()> {
        self.gate("delete_foreign", Some(path))?;
        self.inner.delete_foreign(path).await
    }

    async fn object_lock_enabled(&self) -> ibs_storage::Result<bool> {
        self.inner.object_lock_enabled().await
    }

    fn lock_policy(&self) -> Option<ibs_storage::LockPolicy> {
        self.inner.lock_policy()
    }

    async fn put_locked(
        &self,
        key: &ObjectKey,
        data: Bytes,
        r: ibs_storage::Retention,
    ) -> ibs_storage::Result<()> {
        self.gate("put", Some(key.as_str()))?;
        self.inner.put_locked(key, data, r).await
    }

    async fn extend_lock(
        &self,
        key: &ObjectKey,
        r: ibs_storage::Retention,
    ) -> ibs_storage::Result<()> {
        self.gate("extend_lock", Some(key.as_str()))?;
        self.inner.extend_lock(key, r).await
    }

    async fn lock_until(&self, key: &ObjectKey) -> ibs_storage::Result<Option<i64>> {
        self.inner.lock_until(key).await
    }

    async fn rewritten(&self, prefix: &str) -> ibs_storage::Result<Vec<ObjectKey>> {
        self.inner.rewritten(prefix).await
    }

    async fn history(&self, key: &ObjectKey) -> ibs_storage::Result<Vec<Option<Bytes>>> {
        self.inner.history(key).await
    }
}
