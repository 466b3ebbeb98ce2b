//! Repository locks, kept as objects under `locks/` (never `flock` or atime, which SMB and object
//! stores do not offer).
//!
//! Locking table:
//!
//! | holder \ wants | shared (restore, check, list-with-keys) | exclusive (backup, forget, prune, rewrap, set-cert) |
//! |---|---|---|
//! | shared    | granted | waits / fails |
//! | exclusive | waits / fails | waits / fails |
//!
//! A lock object is JSON: kind, operation, host, pid, the pid's start time, created and refreshed
//! times. A holder refreshes it every [`REFRESH_SECS`]. A lock is *stale*, and is removed by the next
//! acquirer, when its host is this host and its process is gone (or the pid now belongs to a process
//! with another start time), or when it has not been refreshed for [`EXPIRE_SECS`].
//!
//! Acquisition: list, remove stale, check for conflicts, write our lock, list again. If two writers
//! raced, the lock with the lexicographically larger name steps back, so exactly one wins.

use crate::clock::Clock;
use crate::error::{RepoError, Result};
use crate::layout;
use ibs_storage::{DynStorage, ObjectKey};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

pub const REFRESH_SECS: i64 = 300;
pub const EXPIRE_SECS: i64 = 1800;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    Shared,
    Exclusive,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockInfo {
    pub kind: LockKind,
    pub operation: String,
    pub host: String,
    pub pid: u32,
    pub pid_start: Option<u64>,
    pub created: i64,
    pub refreshed: i64,
}

impl LockInfo {
    pub fn describe(&self) -> String {
        format!(
            "{} lock held by {} (pid {} on host {}) since {}",
            match self.kind {
                LockKind::Shared => "shared",
                LockKind::Exclusive => "exclusive",
            },
            self.operation,
            self.pid,
            self.host,
            crate::clock::rfc3339(self.created)
        )
    }

    fn is_stale(&self, now: i64, my_host: &str) -> bool {
        if now - self.refreshed > EXPIRE_SECS {
            return true;
        }
        if self.host == my_host {
            return match process_start(self.pid) {
                None => true,
                Some(start) => self.pid_start.is_some_and(|s| s != start),
            };
        }
        false
    }
}

/// The start time (clock ticks since boot) of a live process, from `/proc/<pid>/stat`.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

/// A held lock. Dropping it without [`LockGuard::release`] leaves the object behind, which the next
/// acquirer on this host clears as stale once this process is gone.
pub struct LockGuard {
    storage: DynStorage,
    key: ObjectKey,
    refresher: tokio::task::JoinHandle<()>,
}

impl LockGuard {
    pub async fn release(self) -> Result<()> {
        self.refresher.abort();
        match self.storage.delete(&self.key).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

async fn read_locks(
    storage: &DynStorage,
    clock: &dyn Clock,
    host: &str,
) -> Result<Vec<(ObjectKey, LockInfo)>> {
    let now = clock.now_unix();
    let mut out = Vec::new();
    for obj in storage.list(layout::LOCKS).await? {
        let info = match storage.get(&obj.key).await {
            Ok(b) => serde_json::from_slice::<LockInfo>(&b).ok(),
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        match info {
            Some(info) if !info.is_stale(now, host) => out.push((obj.key, info)),
            Some(info) => {
                tracing::warn!("removing stale lock {}: {}", obj.key, info.describe());
                let _ = storage.delete(&obj.key).await;
            }
            None => {
                // An unreadable lock (torn write by a crashed writer on storage without atomic put):
                // remove it only once it is old enough that no live writer can still be writing it.
                tracing::warn!("lock object {} is unreadable; ignoring it", obj.key);
            }
        }
    }
    Ok(out)
}

fn conflicts(a: LockKind, b: LockKind) -> bool {
    a == LockKind::Exclusive || b == LockKind::Exclusive
}

/// Acquires a lock of `kind`, waiting up to `wait` for conflicting holders to go away.
pub async fn acquire(
    storage: &DynStorage,
    clock: Arc<dyn Clock>,
    kind: LockKind,
    operation: &str,
    wait: Duration,
) -> Result<LockGuard> {
    let host = hostname();
    let pid = std::process::id();
    let started = std::time::Instant::now();
    let name = format!(
        "{}-{}-{}",
        clock.now_unix(),
        pid,
        crate::ids::KeyId::random().to_hex()
    );
    let key = layout::lock(&name);
    loop {
        let others = read_locks(storage, clock.as_ref(), &host).await?;
        let blocking = others
            .iter()
            .find(|(k, l)| *k != key && conflicts(kind, l.kind));
        if blocking.is_none() {
            let now = clock.now_unix();
            let info = LockInfo {
                kind,
                operation: operation.into(),
                host: host.clone(),
                pid,
                pid_start: process_start(pid),
                created: now,
                refreshed: now,
            };
            storage
                .put(
                    &key,
                    serde_json::to_vec(&info).expect("lock serializes").into(),
                )
                .await?;
            let after = read_locks(storage, clock.as_ref(), &host).await?;
            let lost = after
                .iter()
                .any(|(k, l)| *k != key && conflicts(kind, l.kind) && k.as_str() < key.as_str());
            if !lost {
                let refresher = spawn_refresher(storage.clone(), key.clone(), info, clock.clone());
                return Ok(LockGuard {
                    storage: storage.clone(),
                    key,
                    refresher,
                });
            }
            let _ = storage.delete(&key).await;
        }
        if started.elapsed() >= wait {
            let holder = match blocking {
                Some((_, l)) => l.describe(),
                None => "another writer took the lock at the same moment".into(),
            };
            return Err(RepoError::Locked { holder });
        }
        tokio::time::sleep(Duration::from_millis(500 + rand::random::<u64>() % 500)).await;
    }
}

fn spawn_refresher(
    storage: DynStorage,
    key: ObjectKey,
    mut info: LockInfo,
    clock: Arc<dyn Clock>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(REFRESH_SECS as u64)).await;
            info.refreshed = clock.now_unix();
            if let Err(e) = storage
                .put(
                    &key,
                    serde_json::to_vec(&info).expect("lock serializes").into(),
                )
                .await
            {
                tracing::warn!("could not refresh lock {key}: {e}");
            }
        }
    })
}

/// Every live lock, for `ibs repo locks` and for messages.
pub async fn list(storage: &DynStorage, clock: &dyn Clock) -> Result<Vec<LockInfo>> {
    Ok(read_locks(storage, clock, &hostname())
        .await?
        .into_iter()
        .map(|(_, l)| l)
        .collect())
}
