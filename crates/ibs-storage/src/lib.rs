//! The storage layer of ibs: one small async trait that every backend (local folder, SMB share, later S3)
//! implements, the typed error kinds that are part of its API, decorators that add cross-cutting
//! behaviour (retry with backoff; per-operation timeouts; bandwidth limits; fault injection for tests), and the
//! conformance suite every backend
//! must pass.
//!
//! The normative contract is `docs/design/storage-contract.md`. In short:
//! - Keys are relative, `/`-separated paths of safe components (see [`ObjectKey`]).
//! - `put` is atomic: a reader sees the whole object or no object, never a prefix, even if the
//!   writer is killed. Backends without an atomic put write a temporary name, flush, then rename.
//! - `put` never silently truncates: if it returns `Ok`, `get` returns exactly those bytes.
//! - `list` returns only published objects, never temporaries.
//! - Errors carry an [`ErrorKind`] and a `transient` flag. Only the retry decorator retries.

pub mod direct;
mod error;
mod key;
mod local;
mod local_reads;
mod lock;
mod recycle;
mod retry;
mod throttle;
mod timeout;

#[cfg(feature = "testing")]
pub mod conformance;
#[cfg(feature = "testing")]
pub mod faulty;
#[cfg(feature = "testing")]
pub mod memory;

pub use error::{AlertClass, ErrorKind, StorageError};
pub use key::{ObjectKey, TEMP_PREFIX};
pub use local::LocalStorage;
pub use lock::{now_unix, LockMode, LockPolicy, LockedWrites, Retention, DEFAULT_LOCK_MARGIN};
pub use retry::{RetryPolicy, RetryStorage};
pub use throttle::{Bucket, Limits, PaceClock, ThrottleStorage, TokioPaceClock, BURST_SECONDS};
pub use timeout::{OpTimeouts, TimeoutStorage};

use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;

/// Result alias used by every storage operation.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// What a backend guarantees beyond the minimum contract. Callers adapt to these instead of the trait
/// growing methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// A `list` issued after a `put` returned sees the object (true for local disks and SMB; false for
    /// some object stores, where the engine must tolerate listings that lag behind writes).
    pub list_after_write: bool,
    /// Writes are verified by reading them back inside `put` (SMB, where a server may acknowledge
    /// cached writes that it later loses).
    pub verifies_writes: bool,
    /// Largest object the backend accepts in one `put`.
    pub max_object_size: u64,
    /// A cheap ranged read is available (all current backends).
    pub ranged_reads: bool,
    /// Every operation is a local system call, not a network round trip (a local folder, memory):
    /// overlapping requests gains little, so a writer keeps fewer of them, and less memory, in flight.
    pub local: bool,
    /// A request costs the server far more than the bytes it moves: an object store's gateway
    /// authenticates, looks up and opens the object for every request, where an SMB server answers
    /// a read on a handle it holds open at little more than its bytes' cost. A reader that wants
    /// scattered stretches of one object then reads larger blocks of it with fewer requests (a
    /// restore's shared pack blocks, ADR 0056).
    pub prefers_large_reads: bool,
    /// The size a writer should keep the objects it composes (packs) under, when it is smaller than
    /// its own target: set by the upload throttle to a fraction of a second of the limit, because
    /// `put` moves a whole object at once and a larger one leaves as one burst. `None`: no
    /// preference.
    pub put_size_hint: Option<u64>,
}

/// One object as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: ObjectKey,
    pub size: u64,
    /// When the object was last written, in Unix seconds by the backend's clock (a file's
    /// modification time, a server's last-write time); `None` when the backend cannot tell.
    /// Prune reads an object's age from it (storage contract, "Object age").
    pub modified: Option<i64>,
}

/// Free and total space of the volume behind a backend, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpaceInfo {
    pub available: u64,
    pub total: u64,
}

/// A file under a backend's root whose name is not an object key (see [`Storage::list_foreign`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignFile {
    /// Path relative to the root, `/`-separated.
    pub path: String,
    pub size: u64,
}

/// Whether `path` may be passed to [`Storage::delete_foreign`]: relative, `/`-separated, no empty,
/// `.` or `..` component, no backslash or NUL, and not an object key or a temporary (those belong to
/// the repository and go through `delete` / `remove_stale_temporaries`).
pub fn is_deletable_foreign(path: &str) -> bool {
    !path.is_empty()
        && !ObjectKey::is_valid(path)
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains(['\\', '\0']))
        && !path
            .rsplit('/')
            .next()
            .is_some_and(|n| n.starts_with(TEMP_PREFIX))
}

/// [`is_deletable_foreign`] as a `Result`, with the `Invalid` error backends return.
pub fn check_deletable_foreign(path: &str) -> Result<()> {
    if is_deletable_foreign(path) {
        Ok(())
    } else {
        Err(StorageError::new(
            ErrorKind::Invalid,
            "delete_foreign",
            None,
            format!("refusing to delete {path:?}: not a foreign file name"),
        ))
    }
}

/// An object store with the semantics in `docs/design/storage-contract.md`.
#[async_trait]
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// A human description of the location, safe to log: never contains a secret.
    fn location(&self) -> String;

    fn capabilities(&self) -> Capabilities;

    /// Atomically creates or replaces the object `key` with `data`.
    async fn put(&self, key: &ObjectKey, data: Bytes) -> Result<()>;

    /// Reads a whole object. A missing object is `ErrorKind::NotFound`.
    async fn get(&self, key: &ObjectKey) -> Result<Bytes>;

    /// [`Storage::get`] for a caller that reads many large objects in turn and drops each before
    /// long (prune's repack and `check --read-data` reading packs): a backend may land the object
    /// in a buffer it keeps and reuses once the returned `Bytes` are dropped. Same bytes and error
    /// kinds as `get`. Default: `get`.
    async fn get_reusable(&self, key: &ObjectKey) -> Result<Bytes> {
        self.get(key).await
    }

    /// Reads `len` bytes at `offset`. Reading past the end is `ErrorKind::Invalid`.
    async fn get_range(&self, key: &ObjectKey, offset: u64, len: u64) -> Result<Bytes>;

    /// The same read as [`Storage::get_range`], done on the calling (blocking, non-runtime) thread,
    /// for backends whose reads are plain local system calls; `None` when the backend has no such
    /// path (the caller then uses `get_range`). A restore reading thousands of chunks saves the hop
    /// to a blocking pool thread and back for each one.
    fn get_range_blocking(
        &self,
        _key: &ObjectKey,
        _offset: u64,
        _len: u64,
    ) -> Option<Result<Bytes>> {
        None
    }

    /// Size of one object. A missing object is `ErrorKind::NotFound`.
    async fn stat(&self, key: &ObjectKey) -> Result<ObjectInfo>;

    /// Every published object whose key starts with `prefix` (a directory prefix such as `"packs/"`,
    /// or `""` for all), in no particular order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;

    /// Removes an object. Removing a missing object is `ErrorKind::NotFound`.
    async fn delete(&self, key: &ObjectKey) -> Result<()>;

    /// Moves the object `from` to `to`, replacing `to` if it exists. A missing `from` is
    /// `ErrorKind::NotFound`. When this returns `Ok`, `to` holds exactly the bytes `from` held and
    /// `from` is gone; on an error `from` is never gone without `to` being whole (a crash may leave
    /// both). Backends that can move on the server (a file rename, a server-side copy) override
    /// this default, which reads, writes and deletes through `self`.
    async fn rename(&self, from: &ObjectKey, to: &ObjectKey) -> Result<()> {
        let data = self.get(from).await?;
        self.put(to, data).await?;
        self.delete(from).await
    }

    /// Free and total space, if the backend can tell.
    async fn space(&self) -> Result<Option<SpaceInfo>>;

    /// Removes temporaries left behind by killed writers that are older than `older_than`. Returns how
    /// many were removed. Backends with an atomic put that leaves no temporaries return 0.
    async fn remove_stale_temporaries(&self, older_than: std::time::Duration) -> Result<usize>;

    /// Files under the root whose names are NOT object keys (spaces, other characters, …), for
    /// `store prune`. Temporaries are not listed. Backends that can only hold object keys return an
    /// empty list.
    async fn list_foreign(&self) -> Result<Vec<ForeignFile>>;

    /// Deletes one file returned by [`Storage::list_foreign`]. A path that fails
    /// [`is_deletable_foreign`] is `Invalid`; a missing file is `NotFound`.
    async fn delete_foreign(&self, path: &str) -> Result<()>;

    // Object lock (WORM retention), an optional capability (ADR 0035, `docs/design/storage-
    // contract.md` "Object lock"). Backends without it keep the defaults: no lock, every lock
    // operation `Unsupported`. Decorators forward all of them.

    /// Whether the location enforces object lock (an S3 bucket created with object lock). Asked
    /// once when a location is opened.
    async fn object_lock_enabled(&self) -> Result<bool> {
        Ok(false)
    }

    /// The lock every `put` through this handle gives its object ([`LockedWrites`]); `None` when
    /// writes are not locked.
    fn lock_policy(&self) -> Option<LockPolicy> {
        None
    }

    /// [`Storage::put`], with the new object locked by `retention`.
    async fn put_locked(&self, key: &ObjectKey, _data: Bytes, _retention: Retention) -> Result<()> {
        Err(StorageError::unsupported("put_locked", Some(key.as_str())))
    }

    /// Makes the object's lock last at least until `retention.until`. Never shortens a lock: a
    /// lock that already lasts longer is left as it is. A missing object is `NotFound`.
    async fn extend_lock(&self, key: &ObjectKey, _retention: Retention) -> Result<()> {
        Err(StorageError::unsupported("extend_lock", Some(key.as_str())))
    }

    /// Until when (Unix seconds) the object is locked: `None` when it is not locked, `i64::MAX`
    /// for a legal hold. A missing object is `NotFound`.
    async fn lock_until(&self, key: &ObjectKey) -> Result<Option<i64>> {
        Err(StorageError::unsupported("lock_until", Some(key.as_str())))
    }

    /// Keys under `prefix` whose history on a versioned store shows a write after the first one
    /// (an overwrite or a delete marker). ibs writes each such key once, so any of them is
    /// tampering; readers of a versioned store read the first version (see the S3 backend).
    /// Backends without history return an empty list.
    async fn rewritten(&self, _prefix: &str) -> Result<Vec<ObjectKey>> {
        Ok(Vec::new())
    }

    /// The history of `key` on a versioned store, oldest first: each version's bytes, `None` for
    /// a delete marker (what a caller of [`Storage::rewritten`] reads to tell a rewrite from a
    /// second put of the same content). A key without versions is `NotFound`; backends without
    /// history are `Unsupported`.
    async fn history(&self, key: &ObjectKey) -> Result<Vec<Option<Bytes>>> {
        Err(StorageError::unsupported("history", Some(key.as_str())))
    }
}

/// Shared handle used across the engine.
pub type DynStorage = Arc<dyn Storage>;
