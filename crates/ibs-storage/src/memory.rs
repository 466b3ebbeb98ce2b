//! An in-memory backend for tests. It follows the contract exactly, so tests of higher layers that use
//! it exercise the same semantics as the real backends (which must pass the same conformance suite).

use crate::{
    Capabilities, ErrorKind, ObjectInfo, ObjectKey, Result, SpaceInfo, Storage, StorageError,
};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug)]
pub struct MemoryStorage {
    objects: Mutex<BTreeMap<ObjectKey, Bytes>>,
    /// When each object was last put (system time, Unix seconds), as a file's mtime would say.
    written: Mutex<BTreeMap<ObjectKey, i64>>,
    /// Distinct per instance, so state kept per location (lock observations) never mixes stores.
    location: String,
}

impl Default for MemoryStorage {
    fn default() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        MemoryStorage {
            objects: Mutex::default(),
            written: Mutex::default(),
            location: format!(
                "memory:{}",
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
        }
    }
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<ObjectKey, Bytes>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn written(&self) -> std::sync::MutexGuard<'_, BTreeMap<ObjectKey, i64>> {
        self.written.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the modification time an object reports (tests of age-dependent behaviour).
    pub fn set_modified(&self, key: &ObjectKey, unix: i64) {
        self.written().insert(key.clone(), unix);
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            list_after_write: true,
            verifies_writes: false,
            max_object_size: u64::MAX,
            ranged_reads: true,
            prefers_large_reads: false,
            put_size_hint: None,
            local: true,
        }
    }

    async fn put(&self, key: &ObjectKey, data: Bytes) -> Result<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut map = self.map();
        self.written().insert(key.clone(), now);
        map.insert(key.clone(), data);
        Ok(())
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        self.map()
            .get(key)
            .cloned()
            .ok_or_else(|| StorageError::not_found("get", key.as_str()))
    }

    async fn get_range(&self, key: &ObjectKey, offset: u64, len: u64) -> Result<Bytes> {
        let data = self.get(key).await?;
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= data.len() as u64)
            .ok_or_else(|| {
                StorageError::new(
                    ErrorKind::Invalid,
                    "get_range",
                    Some(key.as_str()),
                    "range past the end",
                )
            })?;
        Ok(data.slice(offset as usize..end as usize))
    }

    async fn stat(&self, key: &ObjectKey) -> Result<ObjectInfo> {
        let size = self.map().get(key).map(|d| d.len() as u64);
        size.map(|size| ObjectInfo {
            key: key.clone(),
            size,
            modified: self.written().get(key).copied(),
        })
        .ok_or_else(|| StorageError::not_found("stat", key.as_str()))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let map = self.map();
        let written = self.written();
        Ok(map
            .iter()
            .filter(|(k, _)| k.as_str().starts_with(prefix))
            .map(|(k, v)| ObjectInfo {
                key: k.clone(),
                size: v.len() as u64,
                modified: written.get(k).copied(),
            })
            .collect())
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        let mut map = self.map();
        self.written().remove(key);
        map.remove(key)
            .map(|_| ())
            .ok_or_else(|| StorageError::not_found("delete", key.as_str()))
    }

    async fn space(&self) -> Result<Option<SpaceInfo>> {
        Ok(None)
    }

    async fn remove_stale_temporaries(&self, _older_than: Duration) -> Result<usize> {
        Ok(0)
    }

    async fn list_foreign(&self) -> Result<Vec<crate::ForeignFile>> {
        Ok(Vec::new()) // it can only hold object keys
    }

    async fn delete_foreign(&self, path: &str) -> Result<()> {
        crate::check_deletable_foreign(path)?;
        Err(crate::StorageError::new(
            crate::ErrorKind::NotFound,
            "delete_foreign",
            None,
            format!("{path} does not exist"),
        ))
    }
}
