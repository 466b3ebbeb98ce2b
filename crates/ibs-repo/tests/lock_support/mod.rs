//! Test storage for lock tests: a decorator that runs an async hook before every operation of one
//! contender (random delays for the scheduler, gates for scripted races), over a shared backend.

#![allow(dead_code)]

use async_trait::async_trait;
use bytes::Bytes;
use ibs_storage::{
    Capabilities, DynStorage, ForeignFile, ObjectInfo, ObjectKey, Result, SpaceInfo, Storage,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Which operation a hook is called for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Put,
    Get,
    List,
    Delete,
    Stat,
}

pub type Hook =
    Arc<dyn Fn(Op, &ObjectKey) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// One contender's view of a shared backend: every operation first awaits the hook.
pub struct Hooked {
    inner: DynStorage,
    hook: Hook,
    /// Reports listings that may lag behind writes (`list_after_write: false`).
    lagging: bool,
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hooked")
    }
}

impl Hooked {
    pub fn over(inner: DynStorage, hook: Hook) -> DynStorage {
        Arc::new(Hooked {
            inner,
            hook,
            lagging: false,
        })
    }

    /// As [`Hooked::over`], claiming that listings may lag behind writes.
    pub fn lagging(inner: DynStorage, hook: Hook) -> DynStorage {
        Arc::new(Hooked {
            inner,
            hook,
            lagging: true,
        })
    }
}

fn any_key() -> ObjectKey {
    ObjectKey::new("locks/list").unwrap()
}

#[async_trait]
impl Storage for Hooked {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn capabilities(&self) -> Capabilities {
        let mut c = self.inner.capabilities();
        c.list_after_write &= !self.lagging;
        c
    }
    async fn put(&self, key: &ObjectKey, data: Bytes) -> Result<()> {
        (self.hook)(Op::Put, key).await;
        self.inner.put(key, data).await
    }
    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        (self.hook)(Op::Get, key).await;
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &ObjectKey, offset: u64, len: u64) -> Result<Bytes> {
        (self.hook)(Op::Get, key).await;
        self.inner.get_range(key, offset, len).await
    }
    async fn stat(&self, key: &ObjectKey) -> Result<ObjectInfo> {
        (self.hook)(Op::Stat, key).await;
        self.inner.stat(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        (self.hook)(Op::List, &any_key()).await;
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        (self.hook)(Op::Delete, key).await;
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
}
