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
use crate::model::{Job, JobKind, Maintenance};
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
    /// Prune's unused-space budget, in percent.
    pub prune_max_unused_percent: u8,
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
        let (s, _, storage) = self.open_location(false, Credential::Writer).await?;
        let repo = Repository::open(storage, self.clock.clone())
            .await
            .map_err(Failure::from_repo)?;
        self.note_repository(&s, &repo);
        Ok(Arc::new(repo))
    }

    /// Records which repository the location `s` holds (best effort), for
    /// [`CurrentLocation::is_previous`].
    fn note_repository(&self, s: &StoredLocation, repo: &Repository) {
        self.note_location(s.path.clone(), Some(repo.config().id.to_string()));
    }

    fn note_location(&self, path: Option<String>, repository_id: Option<String>) {
        let here = CurrentLocation {
            path,
            repository_id,
        };
        if let Err(e) = self.db.set_meta(META_LOCATION_REPOSITORY, &here) {
            tracing::warn!("recording the location's repository id: {e}");
        }
    }

    /// After a location passed its accessibility test: records which repository `storage` holds
    /// (none yet, for an empty location), so backups elsewhere are marked at once and a path
    /// spelled anew (other S3 lock options, say) over the same repository is not.
    pub async fn learn_location(&self, path: Option<String>, storage: &DynStorage) {
        match Repository::open(storage.clone(), self.clock.clone()).await {
            Ok(repo) => self.note_location(path, Some(repo.config().id.to_string())),
            Err(RepoError::NotARepository { .. }) => self.note_location(path, None),
            // Unknown (unreadable now): the next job that opens it records it.
            Err(_) => {}
        }
    }

    /// The current location and, when known, the id of the repository it holds.
    pub fn current_location(&self) -> Result<CurrentLocation> {
        let path = self.stored_location()?.path;
        let seen: Option<CurrentLocation> = self.db.get_meta(META_LOCATION_REPOSITORY)?;
        Ok(CurrentLocation {
            repository_id: seen
                .filter(|c| c.path == path)
                .and_then(|c| c.repository_id),
            path,
        })
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
                self.note_repository(&s, &repo);
                return Ok((Arc::new(repo), state));
            }
            Err(e) => return Err(Failure::from_repo(e)),
        };
        let state = WriterState::load(&state_root, &repo.config().id)
            .map_err(|e| Failure::from_engine(&e))?;
        self.note_repository(&s, &repo);
        Ok((Arc::new(repo), state))
    }
}

/// Meta key of the last repository seen at the configured location ([`CurrentLocation`]).
const META_LOCATION_REPOSITORY: &str = "location_repository";

/// Where backups go now: the configured location's path, and the id of the repository last
/// opened there (unknown until a job opens it after the location was set).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CurrentLocation {
    pub path: Option<String>,
    pub repository_id: Option<String>,
}

impl CurrentLocation {
    /// True when backup `j` is at another location than this one. The repository decides when
    /// both ids are known (the same repository under a path spelled anew is here; another
    /// repository under the same path, a re-initialised share, is not); otherwise the path. A
    /// record that names neither (older than both fields) is taken to be here.
    pub fn is_previous(&self, j: &Job) -> bool {
        if j.kind != JobKind::Backup {
            return false;
        }
        match (&j.repository_id, &self.repository_id) {
            (Some(theirs), Some(ours)) => theirs != ours,
            _ => j
                .location
                .as_deref()
                .is_some_and(|l| self.path.as_deref() != Some(l)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{JobStatus, Trigger};

    fn backup(location: Option<&str>, repo: Option<&str>) -> Job {
        let mut j = Job::new(
            "b".into(),
            JobKind::Backup,
            Trigger::Scheduled,
            JobStatus::Succeeded,
            0,
        );
        j.location = location.map(String::from);
        j.repository_id = repo.map(String::from);
        j
    }

    #[test]
    fn a_backup_is_previous_when_its_path_or_its_repository_is_not_the_current_one() {
        let here = CurrentLocation {
            path: Some("/new".into()),
            repository_id: Some("r2".into()),
        };
        assert!(!here.is_previous(&backup(Some("/new"), Some("r2"))));
        assert!(here.is_previous(&backup(Some("/old"), Some("r1"))));
        // The same repository under a path spelled anew (S3 lock options changed, say).
        assert!(!here.is_previous(&backup(Some("/new/"), Some("r2"))));
        // Same path, but the share now holds another repository (re-initialised).
        assert!(here.is_previous(&backup(Some("/new"), Some("r1"))));
        // Records older than `location`: told by the repository id alone.
        assert!(here.is_previous(&backup(None, Some("r1"))));
        assert!(!here.is_previous(&backup(None, Some("r2"))));
        // Records older than both: taken to be here.
        assert!(!here.is_previous(&backup(None, None)));
        // The current repository not yet known (no job opened the new path): the path decides.
        let unknown = CurrentLocation {
            path: Some("/new".into()),
            repository_id: None,
        };
        assert!(unknown.is_previous(&backup(Some("/old"), Some("r1"))));
        assert!(!unknown.is_previous(&backup(Some("/new"), Some("r9"))));
        assert!(!unknown.is_previous(&backup(None, Some("r1"))));
        // No location at all (cleared): every backup with a known location is elsewhere.
        let cleared = CurrentLocation {
            path: None,
            repository_id: None,
        };
        assert!(cleared.is_previous(&backup(Some("/old"), None)));
        // Other job kinds are never marked.
        let mut restore = backup(Some("/old"), Some("r1"));
        restore.kind = JobKind::Restore;
        assert!(!here.is_previous(&restore));
    }
}
