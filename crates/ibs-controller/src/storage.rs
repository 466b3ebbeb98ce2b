//! How the controller reaches a backup location: through an injected [`StorageOpener`]. The daemon
//! injects [`LocationOpener`], which maps a location path (local folder or UNC) to a [`DynStorage`]
//! rooted at `<path>/MASBackup` through [`ibs_location`]; tests inject memory or faulty storage.
//!
//! Also the accessibility test of the brief: write a probe object, read it back, delete it.

use async_trait::async_trait;
use ibs_location::LocationError;
use ibs_storage::{AlertClass, DynStorage, ObjectKey};
use std::fmt;

/// Where to open storage: a path and optional share credentials. `Debug` never shows the password,
/// and the password's memory is zeroed when the target is dropped.
#[derive(Clone, Default)]
pub struct StorageTarget {
    pub path: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl Drop for StorageTarget {
    fn drop(&mut self) {
        if let Some(p) = &mut self.password {
            zeroize::Zeroize::zeroize(p);
        }
    }
}

impl fmt::Debug for StorageTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageTarget")
            .field("path", &self.path)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A failure to open a location, classified for alerts.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct OpenError {
    pub class: AlertClass,
    /// True when the location is reachable but holds no repository yet.
    pub not_a_repository: bool,
    pub message: String,
}

impl OpenError {
    pub fn new(class: AlertClass, message: impl Into<String>) -> Self {
        OpenError {
            class,
            not_a_repository: false,
            message: message.into(),
        }
    }
}

impl From<LocationError> for OpenError {
    fn from(e: LocationError) -> Self {
        OpenError {
            class: e.class(),
            not_a_repository: e.is_not_a_repository(),
            message: e.to_string(),
        }
    }
}

#[async_trait]
pub trait StorageOpener: Send + Sync + fmt::Debug {
    /// Opens the storage of `target`. With `create`, creates `MASBackup` under an existing folder;
    /// without it, a location without `MASBackup` is an error with `not_a_repository` set.
    async fn open(&self, target: &StorageTarget, create: bool) -> Result<DynStorage, OpenError>;
}

/// Opens real locations (local folders, SMB shares) through [`ibs_location`]. The stored
/// (decrypted) share password is handed over in memory, never through the environment or argv.
/// Every storage operation is bounded by `timeouts` (the config file's `storage_timeout_seconds`,
/// else the per-kind defaults of [`ibs_location::OpTimeouts`]); object data moves within
/// `limits` (the config file's `limit_upload_kib_per_second` / `limit_download_kib_per_second`).
#[derive(Debug, Default)]
pub struct LocationOpener {
    pub timeouts: ibs_location::OpTimeouts,
    pub limits: ibs_storage::Limits,
}

#[async_trait]
impl StorageOpener for LocationOpener {
    async fn open(&self, target: &StorageTarget, create: bool) -> Result<DynStorage, OpenError> {
        let password = ibs_location::is_remote(&target.path)
            .then(|| target.password.clone().unwrap_or_default());
        // Each warning is logged once per path and daemon, not on every opening (which is every
        // job); `ibs location show` and `location set` show it to the operator as well.
        static WARNED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
        for w in ibs_location::warnings(&target.path) {
            let key = format!("{}\n{w}", target.path);
            let mut seen = WARNED.lock().unwrap_or_else(|p| p.into_inner());
            if !seen.contains(&key) {
                tracing::warn!("location {}: {w}", target.path);
                seen.push(key);
            }
        }
        let user = target.username.as_deref();
        let storage =
            ibs_location::open_with(&target.path, user, password, create, self.timeouts).await?;
        Ok(ibs_storage::ThrottleStorage::wrap(storage, self.limits))
    }
}

/// The accessibility test: write a probe object, read it back, delete it.
pub async fn probe(storage: &DynStorage) -> Result<(), OpenError> {
    let mut r = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut r);
    let key = ObjectKey::new(format!("ibs-probe-{}", hex::encode(r)))
        .map_err(|e| OpenError::new(AlertClass::General, e.to_string()))?;
    let data = bytes_of(&r);
    let fail = |what: &str, e: ibs_storage::StorageError| {
        OpenError::new(
            e.class(),
            format!("share accessibility test failed ({what}): {e}; the change was not saved"),
        )
    };
    storage
        .put(&key, data.clone().into())
        .await
        .map_err(|e| fail("write", e))?;
    let back = storage.get(&key).await.map_err(|e| fail("read", e));
    // An append-only writer key on an object-lock bucket may not delete (ADR 0035): there the
    // probe object stays behind (it is small and unlocked; a maintenance prune of foreign files
    // or a lifecycle rule removes it).
    let deleted = match storage.delete(&key).await {
        Err(e)
            if storage.lock_policy().is_some()
                && e.kind == ibs_storage::ErrorKind::Authentication =>
        {
            tracing::info!("accessibility probe: the key may not delete on this object-lock bucket (append-only writer); probe object {key} left in place");
            Ok(())
        }
        other => other.map_err(|e| fail("delete", e)),
    };
    if back?.as_ref() != data.as_slice() {
        return Err(OpenError::new(
            AlertClass::General,
            "share accessibility test failed: the probe read back differs from what was written",
        ));
    }
    deleted
}

fn bytes_of(r: &[u8; 8]) -> Vec<u8> {
    let mut v = b"ibs accessibility probe ".to_vec();
    v.extend_from_slice(r);
    v
}
