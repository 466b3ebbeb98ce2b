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
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(now));
    let opener = Arc::new(MemOpener::default());
    let db = Arc::new(Db::open(&dir.path().join("state.sqlite")).expect("db"));
    let ctl = Controller::open(ControllerOptions {
        data_dir: dir.path().to_path_buf(),
        db,
        secrets: SecretBox::ephemeral(),
        clock: clock.clone(),
        opener: opener.clone(),
        alert_sink: None,
        components: Some(components),
        lock_wait: Duration::from_secs(5),
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
