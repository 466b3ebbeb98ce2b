//! Test support (feature `testing`): an in-memory [`StorageOpener`] whose locations can be made to
//! vanish or fail with a given alert class, and a controller on a `ManualClock` with a temporary
//! data directory.

use crate::component::ComponentConfig;
use crate::db::Db;
use crate::secretbox::SecretBox;
use crate::storage::{OpenError, StorageOpener, StorageTarget};
use crate::{Controller, ControllerOptions};
use async_trait::async_trait;
use ibs_repo::clock::ManualClock;
use ibs_storage::memory::MemoryStorage;
use ibs_storage::{AlertClass, DynStorage};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Memory storage per path; `fail(path, class)` makes opening that path fail.
#[derive(Debug, Default)]
pub struct MemOpener {
    stores: Mutex<HashMap<String, DynStorage>>,
    failing: Mutex<HashMap<String, AlertClass>>,
}

impl MemOpener {
    pub fn fail(&self, path: &str, class: Option<AlertClass>) {
        let mut f = self.failing.lock().unwrap();
        match class {
            Some(c) => f.insert(path.into(), c),
            None => f.remove(path),
        };
    }
    pub fn storage(&self, path: &str) -> Option<DynStorage> {
        self.stores.lock().unwrap().get(path).cloned()
    }
    /// Puts `storage` at `path` (e.g. a fault-injecting decorator over the path's memory storage).
    pub fn insert(&self, path: &str, storage: DynStorage) {
        self.stores.lock().unwrap().insert(path.into(), storage);
    }
}

#[async_trait]
impl StorageOpener for MemOpener {
    async fn open(&self, t: &StorageTarget, _create: bool) -> Result<DynStorage, OpenError> {
        if let Some(c) = self.failing.lock().unwrap().get(&t.path) {
            return Err(OpenError::new(
                *c,
                format!("{}: injected {} failure", t.path, c.as_str()),
            ));
        }
        Ok(self
            .stores
            .lock()
            .unwrap()
            .entry(t.path.clone())
            .or_insert_with(|| Arc::new(MemoryStorage::new()))
            .clone())
    }
}

/// Local folders, as the binary maps them: `<path>/MASBackup` on the local disk (the folder
/// itself must exist). For tests that need a real on-disk repository (flipping a pack's byte).
#[derive(Debug, Default)]
pub struct LocalOpener;

#[async_trait]
impl StorageOpener for LocalOpener {
    async fn open(&self, t: &StorageTarget, create: bool) -> Result<DynStorage, OpenError> {
        let err = |e: ibs_storage::StorageError| OpenError::new(e.class(), e.to_string());
        ibs_storage::LocalStorage::open(&t.path).map_err(err)?;
        let root = std::path::Path::new(&t.path).join(ibs_repo::layout::ROOT_FOLDER);
        let s = if create {
            ibs_storage::LocalStorage::create(root).map_err(err)?
        } else {
            ibs_storage::LocalStorage::open(root).map_err(|e| OpenError {
                not_a_repository: true,
                ..err(e)
            })?
        };
        Ok(Arc::new(s))
    }
}

/// One 2048-bit identity per test process (key generation is slow).
pub fn identity() -> &'static ibs_keys::PrivateIdentity {
    static ID: OnceLock<ibs_keys::PrivateIdentity> = OnceLock::new();
    ID.get_or_init(|| {
        ibs_keys::generate_self_signed("ibs test", 2048, 3650, 1_799_000_000).expect("keygen")
    })
}

pub struct TestController {
    pub ctl: Controller,
    pub clock: Arc<ManualClock>,
    pub opener: Arc<MemOpener>,
    pub dir: tempfile::TempDir,
}

/// A controller at `now` with the given components, no location configured.
pub fn controller(now: i64, components: Vec<ComponentConfig>) -> TestController {
    controller_with(now, components, None)
}

/// Like [`controller`], opening locations with `local` instead of memory when given.
pub fn controller_with(
    now: i64,
    components: Vec<ComponentConfig>,
    local: Option<Arc<LocalOpener>>,
) -> TestController {
    let opener = Arc::new(MemOpener::default());
    let chosen: Arc<dyn StorageOpener> = match local {
        Some(l) => l,
        None => opener.clone(),
    };
    build(now, components, opener, chosen)
}

/// Like [`controller`], opening locations with `chosen` (e.g. the daemon's
/// [`crate::storage::LocationOpener`] for a real S3 gateway).
pub fn controller_opening(
    now: i64,
    components: Vec<ComponentConfig>,
    chosen: Arc<dyn StorageOpener>,
) -> TestController {
    build(now, components, Arc::new(MemOpener::default()), chosen)
}

fn build(
    now: i64,
    components: Vec<ComponentConfig>,
    opener: Arc<MemOpener>,
    chosen: Arc<dyn StorageOpener>,
) -> TestController {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(now));
    let db = Arc::new(Db::open(&dir.path().join("state.sqlite")).expect("db"));
    let ctl = Controller::open(ControllerOptions {
        data_dir: dir.path().to_path_buf(),
        db,
        secrets: SecretBox::ephemeral(),
        clock: clock.clone(),
        opener: chosen,
        alert_sink: None,
        components: Some(components),
        lock_wait: Duration::from_secs(5),
        // The fake clock and the storage's real modification times do not agree: no grace period.
        prune_grace: Duration::ZERO,
        prune_max_unused_percent: ibs_engine::retention::DEFAULT_MAX_UNUSED_PERCENT,
        delete_delay: ibs_engine::trash::DEFAULT_DELETE_DELAY,
        closed_alert_retention_days: crate::alert_purge::DEFAULT_CLOSED_ALERT_RETENTION_DAYS,
        // Tests restore into their own temporary folders.
        restore_roots: vec![std::env::temp_dir()],
        job_timeout: crate::stop::DEFAULT_JOB_TIMEOUT,
    })
    .expect("controller");
    TestController {
        ctl,
        clock,
        opener,
        dir,
    }
}

/// A `files` component.
pub fn files(name: &str, paths: &[&std::path::Path]) -> ComponentConfig {
    serde_json::from_value(serde_json::json!({
        "name": name, "kind": "files",
        "paths": paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
    }))
    .expect("component")
}

/// A `command` component.
pub fn command(
    name: &str,
    backup: &str,
    restore: Option<&str>,
    essential: bool,
) -> ComponentConfig {
    serde_json::from_value(serde_json::json!({
        "name": name, "kind": "command", "backup": backup, "restore": restore,
        "essential_for_recovery": essential,
    }))
    .expect("component")
}
