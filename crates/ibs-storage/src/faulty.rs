//! A fault-injecting decorator for tests, usable over any backend: an error on the k-th operation,
//! torn writes (a prefix lands, then the call fails), silently short writes (a broken share that
//! acknowledges what it did not store), latency, listings that lag behind writes, listings that
//! hide every key under a prefix (a lying server or a man in the middle), reads of the keys under a
//! prefix that arrive with a flipped byte (a transport fault), deletes under a prefix that a lock
//! or a policy refuses, and a full disk.

use crate::{
    Capabilities, ErrorKind, ObjectInfo, ObjectKey, Result, SpaceInfo, Storage, StorageError,
};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Which operations a rule applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Put,
    Get,
    List,
    Delete,
    Stat,
}

/// What happens when a rule fires.
#[derive(Clone, Debug)]
pub enum Fault {
    /// The operation fails with this kind (and transient flag) without touching the backend.
    Error { kind: ErrorKind, transient: bool },
    /// A put stores only the first half of the data, then fails as a transient connectivity error.
    TornWrite,
    /// A put stores only the first half of the data and reports success.
    ShortWrite,
}

#[derive(Debug, Default)]
struct Plan {
    /// (op, n) → fault, where n counts operations of that kind from 1.
    nth: HashMap<(Op, u64), Fault>,
    /// Every operation of this kind from the n-th on fails.
    from_nth: HashMap<Op, (u64, Fault)>,
    latency: Option<Duration>,
    /// The most recent `list_lag` written keys are hidden from `list`.
    list_lag: usize,
    recent_puts: VecDeque<ObjectKey>,
    /// `list` omits every key under these prefixes (the objects stay readable).
    hidden: Vec<String>,
    /// Bytes that puts may add before they fail with `Capacity`.
    capacity_left: Option<u64>,
    /// `get` of a key under one of these prefixes returns its bytes with the last one flipped.
    corrupted: Vec<String>,
    /// `delete` of a key under the prefix fails with the kind, leaving the object.
    undeletable: Vec<(String, ErrorKind)>,
}

#[derive(Debug)]
pub struct FaultyStorage {
    inner: Arc<dyn Storage>,
    plan: Mutex<Plan>,
    counters: Mutex<HashMap<Op, u64>>,
    injected: AtomicU64,
}

impl FaultyStorage {
    pub fn new(inner: Arc<dyn Storage>) -> Self {
        FaultyStorage {
            inner,
            plan: Mutex::default(),
            counters: Mutex::default(),
            injected: AtomicU64::new(0),
        }
    }

    fn plan(&self) -> std::sync::MutexGuard<'_, Plan> {
        self.plan.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `n`-th operation of kind `op` (counting from 1) gets `fault`.
    pub fn fail_nth(&self, op: Op, n: u64, fault: Fault) {
        self.plan().nth.insert((op, n), fault);
    }

    /// Every operation of kind `op` from the `n`-th on gets `fault`.
    pub fn fail_from(&self, op: Op, n: u64, fault: Fault) {
        self.plan().from_nth.insert(op, (n, fault));
    }

    pub fn clear(&self) {
        let mut p = self.plan();
        p.nth.clear();
        p.from_nth.clear();
        p.capacity_left = None;
        p.latency = None;
        p.list_lag = 0;
        p.hidden.clear();
        p.corrupted.clear();
        p.undeletable.clear();
    }

    /// From now on every `get` of a key under `prefix` returns the object with its last byte
    /// flipped (a transport fault; the object itself is intact).
    pub fn corrupt_reads_under(&self, prefix: &str) {
        self.plan().corrupted.push(prefix.to_owned());
    }

    /// From now on every `delete` of a key under `prefix` fails with `kind` (e.g. `Locked`: an
    /// object lock) and leaves the object.
    pub fn refuse_deletes_under(&self, prefix: &str, kind: ErrorKind) {
        self.plan().undeletable.push((prefix.to_owned(), kind));
    }

    /// From now on `list` omits every key under `prefix`, as a lying server would; the objects
    /// themselves stay readable and deletable.
    pub fn hide_prefix(&self, prefix: &str) {
        self.plan().hidden.push(prefix.to_owned());
    }

    pub fn set_latency(&self, latency: Option<Duration>) {
        self.plan().latency = latency;
    }

    pub fn set_list_lag(&self, n: usize) {
        self.plan().list_lag = n;
    }

    /// Puts may add `bytes` more before they fail with a `Capacity` error (a full disk).
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.plan().capacity_left = bytes;
    }

    /// How many faults have fired so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    pub fn count(&self, op: Op) -> u64 {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&op)
            .copied()
            .unwrap_or(0)
    }

    async fn before(&self, op: Op) -> Option<Fault> {
        let n = {
            let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
            let n = c.entry(op).or_default();
            *n += 1;
            *n
        };
        let (latency, fault) = {
            let p = self.plan();
            let fault = p.nth.get(&(op, n)).cloned().or_else(|| {
                p.from_nth
                    .get(&op)
                    .filter(|(from, _)| n >= *from)
                    .map(|(_, f)| f.clone())
            });
            (p.latency, fault)
        };
        if let Some(l) = latency {
            tokio::time::sleep(l).await;
        }
        if fault.is_some() {
            self.injected.fetch_add(1, Ordering::Relaxed);
        }
        fault
    }
}

fn injected_error(
    kind: ErrorKind,
    transient: bool,
    op: &'static str,
    key: Option<&str>,
) -> StorageError {
    let mut e = StorageError::new(kind, op, key, "injected fault");
    e.transient = transient;
    e
}

#[async_trait]
impl Storage for FaultyStorage {
    fn location(&self) -> String {
        format!("faulty({})", self.inner.location())
    }

    fn capabilities(&self) -> Capabilities {
        let mut c = self.inner.capabilities();
        if self.plan().list_lag > 0 {
            c.list_after_write = false;
        }
        c
    }

    async fn put(&self, key: &ObjectKey, data: Bytes) -> Result<()> {
        match self.before(Op::Put).await {
            Some(Fault::Error { kind, transient }) => {
                return Err(injected_error(kind, transient, "put", Some(key.as_str())))
            }
            Some(Fault::TornWrite) => {
                self.inner.put(key, data.slice(..data.len() / 2)).await?;
                return Err(injected_error(
                    ErrorKind::Connectivity,
                    true,
                    "put",
                    Some(key.as_str()),
                ));
            }
            Some(Fault::ShortWrite) => {
                return self.inner.put(key, data.slice(..data.len() / 2)).await
            }
            None => {}
        }
        {
            let mut p = self.plan();
            if let Some(left) = p.capacity_left {
                if (data.len() as u64) > left {
                    drop(p);
                    self.injected.fetch_add(1, Ordering::Relaxed);
                    return Err(StorageError::new(
                        ErrorKind::Capacity,
                        "put",
                        Some(key.as_str()),
                        "injected: disk full",
                    ));
                }
                p.capacity_left = Some(left - data.len() as u64);
            }
        }
        self.inner.put(key, data).await?;
        let mut p = self.plan();
        if p.list_lag > 0 {
            p.recent_puts.push_back(key.clone());
            while p.recent_puts.len() > p.list_lag {
                p.recent_puts.pop_front();
            }
        }
        Ok(())
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        if let Some(Fault::Error { kind, transient }) = self.before(Op::Get).await {
            return Err(injected_error(kind, transient, "get", Some(key.as_str())));
        }
        let bytes = self.inner.get(key).await?;
        let corrupt = self
            .plan()
            .corrupted
            .iter()
            .any(|p| key.as_str().starts_with(p.as_str()));
        if corrupt && !bytes.is_empty() {
            self.injected.fetch_add(1, Ordering::Relaxed);
            let mut b = bytes.to_vec();
            *b.last_mut().expect("not empty") ^= 1;
            return Ok(b.into());
        }
        Ok(bytes)
    }

    async fn get_range(&self, key: &ObjectKey, offset: u64, len: u64) -> Result<Bytes> {
        if let Some(Fault::Error { kind, transient }) = self.before(Op::Get).await {
            return Err(injected_error(
                kind,
                transient,
                "get_range",
                Some(key.as_str()),
            ));
        }
        self.inner.get_range(key, offset, len).await
    }

    async fn stat(&self, key: &ObjectKey) -> Result<ObjectInfo> {
        if let Some(Fault::Error { kind, transient }) = self.before(Op::Stat).await {
            return Err(injected_error(kind, transient, "stat", Some(key.as_str())));
        }
        self.inner.stat(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        if let Some(Fault::Error { kind, transient }) = self.before(Op::List).await {
            return Err(injected_error(kind, transient, "list", Some(prefix)));
        }
        let mut all = self.inner.list(prefix).await?;
        let p = self.plan();
        if p.list_lag > 0 {
            all.retain(|o| !p.recent_puts.contains(&o.key));
        }
        all.retain(|o| {
            !p.hidden
                .iter()
                .any(|h| o.key.as_str().starts_with(h.as_str()))
        });
        Ok(all)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        let refused = self
            .plan()
            .undeletable
            .iter()
            .find(|(p, _)| key.as_str().starts_with(p.as_str()))
            .map(|(_, k)| *k);
        if let Some(kind) = refused {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Err(injected_error(kind, false, "delete", Some(key.as_str())));
        }
        if let Some(Fault::Error { kind, transient }) = self.before(Op::Delete).await {
            return Err(injected_error(
                kind,
                transient,
                "delete",
                Some(key.as_str()),
            ));
        }
        self.inner.delete(key).await
    }

    /// Faults as a delete: the move removes `from`.
    async fn rename(&self, from: &ObjectKey, to: &ObjectKey) -> Result<()> {
        if let Some(Fault::Error { kind, transient }) = self.before(Op::Delete).await {
            return Err(injected_error(
                kind,
                transient,
                "rename",
                Some(from.as_str()),
            ));
        }
        self.inner.rename(from, to).await
    }

    async fn space(&self) -> Result<Option<SpaceInfo>> {
        self.inner.space().await
    }

    async fn remove_stale_temporaries(&self, older_than: Duration) -> Result<usize> {
        self.inner.remove_stale_temporaries(older_than).await
    }

    async fn list_foreign(&self) -> Result<Vec<crate::ForeignFile>> {
        self.inner.list_foreign().await
    }

    async fn delete_foreign(&self, path: &str) -> Result<()> {
        self.inner.delete_foreign(path).await
    }

    async fn object_lock_enabled(&self) -> Result<bool> {
        self.inner.object_lock_enabled().await
    }

    fn lock_policy(&self) -> Option<crate::LockPolicy> {
        self.inner.lock_policy()
    }

    async fn put_locked(&self, key: &ObjectKey, data: Bytes, r: crate::Retention) -> Result<()> {
        self.inner.put_locked(key, data, r).await
    }

    async fn extend_lock(&self, key: &ObjectKey, r: crate::Retention) -> Result<()> {
        self.inner.extend_lock(key, r).await
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
