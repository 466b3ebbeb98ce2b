//! A held lock ([`LockGuard`]): what its holder may ask of it (its name, whether it is still
//! valid, the plans it noted, a sweep announcement) and how it ends (release, or drop).

use super::{trace, FenceSlot, LockState, Own};
use crate::error::{RepoError, Result};
use crate::plan::PlanReading;
use ibs_storage::{DynStorage, ObjectKey};
use std::sync::Arc;

/// A held lock. Dropping it without [`LockGuard::release`] stops its refreshes and leaves the
/// object behind: this host's next acquirer removes it once this process is gone, another host's
/// once it has seen it unchanged for the stale timeout.
pub struct LockGuard {
    pub(super) storage: DynStorage,
    pub(super) key: ObjectKey,
    pub(super) state: Arc<LockState>,
    pub(super) refresher: tokio::task::JoinHandle<()>,
    pub(super) armed: Option<(Arc<FenceSlot>, u64)>,
    pub(super) reading: PlanReading,
    /// Shared with the refresher, which rewrites it.
    pub(super) own: Arc<tokio::sync::Mutex<Own>>,
}

impl LockGuard {
    /// The prune plans recorded in this lock ([`acquire_noting`]): those that opened.
    pub fn plans(&self) -> &[String] {
        &self.reading.marks.names
    }

    /// What the holder read of the prune plans ([`acquire_noting`]): the marks of those that
    /// opened (and are named in the lock) and those it skipped.
    pub fn plan_reading(&self) -> &PlanReading {
        &self.reading
    }

    /// A prune lock: records that its holder sweeps, or waits to sweep, the plans `plans`, by a
    /// write of the lock that completes before this returns. Call it before reading the locks for
    /// the sweep condition (§19): a backup that becomes held later and cannot open one of them
    /// then sees it and stops.
    pub async fn announce_sweep(&self, plans: &[String]) -> Result<()> {
        self.state.check()?;
        let mut own = self.own.lock().await;
        let mut all = own.info.sweeping.clone().unwrap_or_default();
        for p in plans {
            if !all.contains(p) {
                all.push(p.clone());
            }
        }
        own.info.sweeping = Some(all);
        own.write().await
    }

    /// This lock's object name (`locks/<name>`).
    pub fn name(&self) -> &str {
        self.key.name()
    }

    /// Ok while the lock is valid; [`RepoError::LockLost`] once it may not be.
    pub fn check(&self) -> Result<()> {
        self.state.check()
    }

    /// From now on, writes through the repository behind `slot` are refused once this lock is lost.
    pub fn arm(&mut self, slot: Arc<FenceSlot>) {
        let id = slot.arm(self.state.clone());
        self.armed = Some((slot, id));
    }

    /// Removes the lock. If it was lost while held, fails with [`RepoError::LockLost`] (after
    /// removing it all the same).
    pub async fn release(mut self) -> Result<()> {
        self.refresher.abort();
        if let Some((slot, id)) = self.armed.take() {
            slot.disarm(id);
        }
        let lost = self.state.check();
        trace("exit", "-", self.key.name());
        let removed = match self.storage.delete(&self.key).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        };
        lost.and(removed)
    }

    /// Releases the lock and returns `result`, unless the lock was lost meanwhile: then
    /// [`RepoError::LockLost`], whatever the operation itself returned.
    pub async fn finish<T, E: From<RepoError>>(
        self,
        result: std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        match self.release().await {
            Ok(()) => result,
            Err(e @ RepoError::LockLost { .. }) => Err(e.into()),
            Err(e) => result.and_then(|_| Err(e.into())),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.refresher.abort();
        if let Some((slot, id)) = self.armed.take() {
            slot.disarm(id);
        }
    }
}
