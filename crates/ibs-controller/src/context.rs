//! [`JobContext`]: what a job may use, and nothing more — the state database, the clock, the
//! storage opener, the alerts, the secrets that open the stored share password and legacy key,
//! and the data folder's paths. Jobs ([`crate::jobs`]) are written against it, never against the
//! [`crate::Controller`] facade, so they cannot reach the gate or the scheduler.
//!
//! It also owns the reads every job shares: the stored location and components, opening the
//! location's storage and repository, recording the share's capacity, and [`Failure`] (a job's
//! failure with its alert class).

use crate::alerts::Alerts;
use crate::component::{self, Component, ComponentConfig};
use crate::db::Db;
use crate::model::Maintenance;
use crate::secretbox::SecretBox;
use crate::settings::{self, StoredLocation};
use crate::storage::{StorageOpener, StorageTarget};
use crate::Result;
use ibs_engine::state::WriterState;
use ibs_engine::{keyops, EngineError};
use ibs_keys::LegacyKey;
use ibs_repo::clock::Clock;
use ibs_repo::{InitKeys, RepoError, Repository};
use ibs_storage::{AlertClass, DynStorage};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// State-database keys (the `meta` table) shared by the facade and the jobs.
pub(crate) const META_COMPONENTS: &str = "components";
/// The host catalog: components defined on the host (config file, first start, library API), the
/// only ones that may run commands or read host files; see [`crate::component_api`].
pub(crate) const META_HOST_COMPONENTS: &str = "host_components";
pub(crate) const META_MAINTENANCE: &str = "maintenance";
pub(crate) const META_CAPACITY: &str = "capacity";

pub use ibs_types::admin::Capacity;

/// A job failure with its alert class.
#[derive(Debug, Clone)]
pub struct Failure {
    pub class: AlertClass,
    pub message: String,
}

impl Failure {
    pub fn general(m: impl Into<String>) -> Self {
        Failure {
            class: AlertClass::General,
            message: m.into(),
        }
    }
    pub fn from_engine(e: &EngineError) -> Self {
        Failure {
            class: e.storage_class().unwrap_or(AlertClass::General),
            message: e.to_string(),
        }
    }
    pub(crate) fn from_repo(e: RepoError) -> Self {
        Failure::from_engine(&EngineError::Repo(e))
    }
}

/// Which of the location's credentials opens it: backups, restores and verification use the
/// writer's; retention and prune the maintenance credential when one is stored (ADR 0040).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Writer,
    Maintenance,
}

/// What a job may use; see the module doc.
pub struct JobContext {
    /// The data directory: writer state in `DATA/state`, temporary files in `DATA/tmp`, reports
    /// in `DATA/reports`.
    pub data_dir: PathBuf,
    pub db: Arc<Db>,
    pub secrets: SecretBox,
    pub clock: Arc<dyn Clock>,
    pub opener: Arc<dyn StorageOpener>,
    pub alerts: Alerts,
    /// How long engine operations wait for a repository lock.
    pub lock_wait: Duration,
    /// Prune's grace period.
    pub prune_grace: Duration,
    /// How long what retention removes stays in the grace area (`ibs repo undelete`).
    pub delete_delay: Duration,
    /// Folders an API restore may write beneath ([`crate::restore_roots`]).
    pub restore_roots: Vec<std::path::PathBuf>,
}

impl std::fmt::Debug for JobContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobContext")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl JobContext {
    pub fn now(&self) -> i64 {
        self.clock.now_unix()
    }

    /// A job's scratch folder, `DATA/tmp/<job id>`.
    pub fn tmp_dir(&self, job_id: &str) -> PathBuf {
        self.data_dir.join("tmp").join(job_id)
    }

    /// Where a job's report with extension `ext` goes, `DATA/reports/<job id>.<ext>`.
    pub fn report_path(&self, job_id: &str, ext: &str) -> PathBuf {
        self.data_dir
            .join("reports")
            .join(format!("{job_id}.{ext}"))
    }

    pub fn stored_location(&self) -> Result<StoredLocation> {
        Ok(self.db.get_meta(settings::META_KEY)?.unwrap_or_default())
    }

    pub fn maintenance(&self) -> Result<Option<Maintenance>> {
        self.db.get_meta(META_MAINTENANCE)
    }

    pub fn capacity(&self) -> Result<Option<Capacity>> {
        self.db.get_meta(META_CAPACITY)
    }

    /// Where the stored location is, with its share password opened (`None`: no location).
    pub fn target(&self, s: &StoredLocation) -> Result<Option<StorageTarget>> {
        let Some(path) = &s.path else { return Ok(None) };
        let password = match &s.password_sealed {
            Some(p) => Some(self.secrets.open("share-password", p)?),
            None => None,
        };
        Ok(Some(StorageTarget {
            path: path.clone(),
            username: s.username.clone(),
            password,
        }))
    }

    /// Where the stored location is, reached with its maintenance credential (ADR 0040; `None`:
    /// no location, or no maintenance credential stored).
    pub fn maintenance_target(&self, s: &StoredLocation) -> Result<Option<StorageTarget>> {
        let (Some(path), Some(user), Some(sealed)) = (
            &s.path,
            &s.maintenance_username,
            &s.maintenance_password_sealed,
        ) else {
            return Ok(None);
        };
        Ok(Some(StorageTarget {
            path: path.clone(),
            username: Some(user.clone()),
            password: Some(self.secrets.open(settings::MAINTENANCE_PURPOSE, sealed)?),
        }))
    }

    pub fn components_config(&self) -> Result<Vec<ComponentConfig>> {
        Ok(self.db.get_meta(META_COMPONENTS)?.unwrap_or_default())
    }

    /// The components, ready to run (API-given passwords opened).
    pub fn components(&self) -> Result<Vec<Component>> {
        let cs = self.components_config()?;
        Ok(component::validate_with(&cs, Some(&self.secrets))?)
    }

    /// Records the share's free and total bytes (best effort).
    pub async fn record_capacity(&self, storage: &DynStorage) {
        if let Ok(Some(s)) = storage.space().await {
            let _ = self.db.set_meta(
                META_CAPACITY,
                &Capacity {
                    available: s.available,
                    total: s.total,
                    at: self.now(),
                },
            );
        }
    }

    /// Opens the configured location's storage (with `create`, a location that holds no
    /// repository yet is opened for one) and records its capacity.
    /// With `role` [`Credential::Maintenance`], the maintenance credential is used when one is
    /// stored (else the writer's).
    async fn open_location(
        &self,
        create: bool,
        role: Credential,
    ) -> Result<(StoredLocation, StorageTarget, DynStorage), Failure> {
        let general = |e: crate::ControllerError| Failure::general(e.to_string());
        let s = self.stored_location().map_err(general)?;
        let maintenance = match role {
            Credential::Maintenance => self.maintenance_target(&s).map_err(general)?,
            Credential::Writer => None,
        };
        let target = match maintenance {
            Some(t) => t,
            None => self
                .target(&s)
                .map_err(general)?
                .ok_or_else(|| Failure::general("no backup location is configured"))?,
        };
        let opened = match self.opener.open(&target, false).await {
            Err(e) if e.not_a_repository && create => self.opener.open(&target, true).await,
            other => other,
        };
        let storage = opened.map_err(|e| Failure {
            class: e.class,
            message: e.message,
        })?;
        self.record_capacity(&storage).await;
        Ok((s, target, storage))
    }

    /// This controller's writer-state root, `DATA/state`.
    pub fn state_root(&self) -> std::path::PathBuf {
        self.data_dir.join("state")
    }

    /// This controller's deployment id (created once in `DATA/state`, see
    /// [`ibs_engine::state::deployment_id`]).
    pub fn deployment_id(&self) -> Result<String, Failure> {
        ibs_engine::state::deployment_id(&self.state_root()).map_err(|e| Failure::from_engine(&e))
    }

    /// Opens the configured repository to read it only: no writer state is loaded, nothing is
    /// initialised (validation).
    pub async fn open_repository_read(&self) -> Result<Arc<Repository>, Failure> {
        let (_, _, storage) = self.open_location(false, Credential::Writer).await?;
        Repository::open(storage, self.clock.clone())
            .await
            .map(Arc::new)
            .map_err(Failure::from_repo)
    }

    /// Opens the configured repository and this controller's writer state. With `init`, a
    /// location without a repository gets one (certificate or legacy key from the settings).
    pub async fn open_repository(
        &self,
        init: bool,
    ) -> Result<(Arc<Repository>, WriterState), Failure> {
        self.open_repository_as(init, Credential::Writer).await
    }

    /// [`JobContext::open_repository`] for retention and prune: with the maintenance credential
    /// when one is stored (ADR 0040), else with the writer's.
    pub async fn open_repository_for_maintenance(
        &self,
    ) -> Result<(Arc<Repository>, WriterState), Failure> {
        self.open_repository_as(false, Credential::Maintenance)
            .await
    }

    async fn open_repository_as(
        &self,
        init: bool,
        role: Credential,
    ) -> Result<(Arc<Repository>, WriterState), Failure> {
        let (s, target, storage) = self.open_location(init, role).await?;
        let state_root = self.state_root();
        let clock = self.clock.clone();
        let repo = match Repository::open(storage.clone(), clock.clone()).await {
            Ok(r) => r,
            Err(RepoError::NotARepository { .. }) if init => {
                let general = |e: String| Failure::general(e);
                let cert = s.certificate();
                let legacy = match &s.legacy_key_sealed {
                    Some(k) => Some(
                        LegacyKey::from_file_text(
                            &self
                                .secrets
                                .open("legacy-key", k)
                                .map_err(|e| general(e.to_string()))?,
                        )
                        .map_err(|e| general(e.to_string()))?,
                    ),
                    None => None,
                };
                let keys = match (&cert, &legacy) {
                    (Some(c), _) => InitKeys::Certificate(c),
                    (None, Some(k)) => InitKeys::Legacy(k),
                    (None, None) => {
                        return Err(Failure::general("no encryption certificate is configured"))
                    }
                };
                let (repo, state) = keyops::init(storage, clock, &state_root, keys)
                    .await
                    .map_err(|e| Failure::from_engine(&e))?;
                tracing::info!(
                    "initialised repository {} at {}",
                    repo.config().id,
                    target.path
                );
                return Ok((Arc::new(repo), state));
            }
            Err(e) => return Err(Failure::from_repo(e)),
        };
        let state = WriterState::load(&state_root, &repo.config().id)
            .map_err(|e| Failure::from_engine(&e))?;
        Ok((Arc::new(repo), state))
    }
}
