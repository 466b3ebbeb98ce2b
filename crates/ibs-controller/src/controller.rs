//! [`Controller`]: the one object the API and the daemon talk to. It owns the job gate (one backup
//! or restore or retention cleanup at a time), the live progress of running jobs, the location
//! settings and components, and the periodic [`Controller::tick`] that drives the scheduler, the
//! condition alerts and the hourly retention cleanup.
//!
//! Locking table (controller level; the repository has its own locks, see `ibs_repo::lock`):
//!
//! See the locking table in `docs/design/controller.md` ("The gate"): one job at a time; who
//! waits, who is deferred to the next tick, who gets 409 or a Skipped record.

use crate::alerts::{AlertSink, Alerts};
use crate::component::{self, Component, ComponentConfig};
use crate::component_api::{self, ComponentRequest, ComponentView};
use crate::db::Db;
use crate::model::{Job, JobKind, JobProgress, JobStatus, Maintenance, Trigger};
use crate::scheduler::{self, ScheduleState};
use crate::secretbox::SecretBox;
use crate::settings::{self, LocationUpdate, LocationView, StoredLocation};
use crate::storage::{StorageOpener, StorageTarget};
use crate::{ControllerError, Result};
use ibs_engine::Progress;
use ibs_repo::clock::{rfc3339, Clock};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) const META_COMPONENTS: &str = "components";
/// The host catalog: components defined on the host (config file, first start, library API), the
/// only ones that may run commands or read host files; see [`crate::component_api`].
pub(crate) const META_HOST_COMPONENTS: &str = "host_components";
pub(crate) const META_MAINTENANCE: &str = "maintenance";
pub(crate) const META_CAPACITY: &str = "capacity";

pub struct ControllerOptions {
    /// The data directory: writer state goes to `DATA/state`, temporary restore files to `DATA/tmp`.
    pub data_dir: PathBuf,
    pub db: Arc<Db>,
    pub secrets: SecretBox,
    pub clock: Arc<dyn Clock>,
    pub opener: Arc<dyn StorageOpener>,
    pub alert_sink: Option<Arc<dyn AlertSink>>,
    /// Components from the config file; when given they replace the stored set.
    pub components: Option<Vec<ComponentConfig>>,
    /// How long engine operations wait for a repository lock.
    pub lock_wait: Duration,
    /// Prune's grace period (`ibs_engine::retention::DEFAULT_GRACE` unless configured).
    pub prune_grace: Duration,
    /// Closed alerts are purged this many days after closing
    /// ([`crate::alert_purge::DEFAULT_CLOSED_ALERT_RETENTION_DAYS`] unless configured).
    pub closed_alert_retention_days: u32,
}

/// Free and total bytes of the share, as last measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    pub available: u64,
    pub total: u64,
    pub at: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct Busy {
    pub id: String,
    pub what: &'static str,
}

pub(crate) struct Live {
    pub progress: Arc<Progress>,
    pub started: i64,
}

pub(crate) struct Inner {
    pub data_dir: PathBuf,
    pub db: Arc<Db>,
    pub secrets: SecretBox,
    pub clock: Arc<dyn Clock>,
    pub opener: Arc<dyn StorageOpener>,
    pub alerts: Alerts,
    pub lock_wait: Duration,
    pub prune_grace: Duration,
    pub closed_alert_retention_days: u32,
    pub gate: Mutex<Option<Busy>>,
    pub live: Mutex<HashMap<String, Live>>,
}

/// Whether update tooling may proceed (`GET /api/v1/readiness`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Readiness {
    pub backup_running: bool,
    pub running_job: Option<String>,
    pub running_kind: Option<String>,
    pub maintenance: Option<Maintenance>,
}

#[derive(Clone)]
pub struct Controller {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("data_dir", &self.inner.data_dir)
            .finish()
    }
}

/// Releases the gate when a job's task ends, however it ends.
pub(crate) struct GateGuard {
    pub inner: Arc<Inner>,
    pub id: String,
}

impl Drop for GateGuard {
    fn drop(&mut self) {
        let mut g = self.inner.gate.lock().unwrap_or_else(|p| p.into_inner());
        if g.as_ref().is_some_and(|b| b.id == self.id) {
            *g = None;
        }
        self.inner
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// Runs a job's future to completion on a blocking-pool thread. Job futures borrow across awaits
/// in ways rustc cannot prove `Send` for (higher-ranked lifetimes through the engine), and a job
/// is long-running anyway, so it gets its own thread driving it with `Handle::block_on`.
/// The future is created on that thread, so it never has to be `Send`.
pub(crate) fn spawn_job<M, F>(make: M) -> tokio::task::JoinHandle<()>
where
    M: FnOnce() -> F + Send + 'static,
    F: std::future::Future<Output = ()>,
{
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || rt.block_on(make()))
}

/// Makes the data folder private to the daemon's user: the folder and its `state` (the writer
/// state), `certs`, `tmp` and `reports` folders 0700 with everything in them 0600, and every file directly in
/// it (database, secret key, tokens) 0600. What an older ibs created wider is tightened here.
/// Other folders (the embedded sample source, the embedded location `backups`) are left as they
/// are: they hold the operator's data, not the controller's.
pub fn secure_data_dir(data: &std::path::Path) -> Result<()> {
    let private = |p: &std::path::Path| {
        ibs_engine::state::private_dir(p)
            .map_err(|e| ControllerError::Internal(format!("creating {}: {e}", p.display())))
    };
    private(data)?;
    private(&data.join("state"))?;
    private(&data.join("tmp"))?;
    for sub in ["state", "certs", "tmp", "reports"] {
        ibs_engine::state::tighten_tree(&data.join(sub));
    }
    if let Ok(entries) = std::fs::read_dir(data) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_file()) {
                ibs_engine::state::tighten(&e.path());
            }
        }
    }
    Ok(())
}

impl Controller {
    /// Opens the controller: marks jobs left Running by a crash as Interrupted, stores config-file
    /// components, and starts the schedule if there is none.
    pub fn open(opts: ControllerOptions) -> Result<Controller> {
        let now = opts.clock.now_unix();
        let interrupted = opts.db.interrupt_unfinished(now)?;
        for id in &interrupted {
            tracing::warn!("job {id} was running when the controller stopped: marked Interrupted");
        }
        if let Some(cs) = &opts.components {
            component::validate(cs)?;
            if let Some(c) = cs.iter().find(|c| c.password_sealed.is_some()) {
                return Err(ControllerError::invalid(
                    format!("component {}", c.name),
                    "password_sealed is set only through the API",
                ));
            }
            opts.db.set_meta(META_COMPONENTS, cs)?;
            opts.db.set_meta(META_HOST_COMPONENTS, cs)?;
        } else if opts
            .db
            .get_meta::<Vec<ComponentConfig>>(META_HOST_COMPONENTS)?
            .is_none()
        {
            // A state database from before the host catalog: what it stores was accepted as
            // trusted then, so it becomes the catalog (API-declared components excepted).
            let stored: Vec<ComponentConfig> =
                opts.db.get_meta(META_COMPONENTS)?.unwrap_or_default();
            let host: Vec<ComponentConfig> = stored
                .into_iter()
                .filter(|c| c.password_sealed.is_none())
                .collect();
            opts.db.set_meta(META_HOST_COMPONENTS, &host)?;
        }
        if opts
            .db
            .get_meta::<ScheduleState>(scheduler::META_KEY)?
            .is_none()
        {
            opts.db
                .set_meta(scheduler::META_KEY, &ScheduleState::starting_now(now))?;
        }
        secure_data_dir(&opts.data_dir)?;
        let alerts = Alerts::new(opts.db.clone(), opts.alert_sink.clone());
        Ok(Controller {
            inner: Arc::new(Inner {
                data_dir: opts.data_dir,
                db: opts.db,
                secrets: opts.secrets,
                clock: opts.clock,
                opener: opts.opener,
                alerts,
                lock_wait: opts.lock_wait,
                prune_grace: opts.prune_grace,
                closed_alert_retention_days: opts.closed_alert_retention_days,
                gate: Mutex::new(None),
                live: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Registers a job's live progress (shown by the API while the job runs).
    pub(crate) fn track_live(&self, job_id: impl Into<String>, started: i64) -> Arc<Progress> {
        let progress = Arc::new(Progress::default());
        self.inner
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                job_id.into(),
                Live {
                    progress: progress.clone(),
                    started,
                },
            );
        progress
    }

    pub fn db(&self) -> &Arc<Db> {
        &self.inner.db
    }
    pub fn alerts(&self) -> &Alerts {
        &self.inner.alerts
    }
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }
    pub fn now(&self) -> i64 {
        self.inner.clock.now_unix()
    }

    // ---- settings -------------------------------------------------------------------------

    pub fn stored_location(&self) -> Result<StoredLocation> {
        Ok(self
            .inner
            .db
            .get_meta(settings::META_KEY)?
            .unwrap_or_default())
    }

    pub(crate) fn target(&self, s: &StoredLocation) -> Result<Option<StorageTarget>> {
        let Some(path) = &s.path else { return Ok(None) };
        let password = match &s.password_sealed {
            Some(p) => Some(self.inner.secrets.open("share-password", p)?),
            None => None,
        };
        Ok(Some(StorageTarget {
            path: path.clone(),
            username: s.username.clone(),
            password,
        }))
    }

    pub fn schedule(&self) -> Result<ScheduleState> {
        Ok(self
            .inner
            .db
            .get_meta(scheduler::META_KEY)?
            .unwrap_or_else(|| ScheduleState::starting_now(self.now())))
    }

    pub fn capacity(&self) -> Result<Option<Capacity>> {
        self.inner.db.get_meta(META_CAPACITY)
    }

    pub fn location(&self) -> Result<LocationView> {
        let s = self.stored_location()?;
        let cap = self.capacity()?;
        let last = self
            .inner
            .db
            .backups(50)?
            .into_iter()
            .find(|j| matches!(j.status, JobStatus::Succeeded | JobStatus::PartialSucceeded))
            .and_then(|j| j.finished_at);
        let cert = s.certificate();
        Ok(LocationView {
            path: s.path.clone(),
            username: s.username.clone(),
            password_set: s.password_sealed.is_some(),
            certificate: cert.as_ref().map(settings::CertificateInfo::of),
            legacy_key_set: s.legacy_key_sealed.is_some(),
            encryption_mode: if cert.is_some() {
                Some("certificate".into())
            } else if s.legacy_key_sealed.is_some() {
                Some("legacy-key".into())
            } else {
                None
            },
            frequency_hours: s.frequency_hours,
            retention_days: s.retention_days,
            scheduler_enabled: s.scheduler_enabled,
            available_bytes: cap.map(|c| c.available),
            total_bytes: cap.map(|c| c.total),
            next_backup_time: (s.scheduler_enabled && s.path.is_some())
                .then(|| self.schedule().ok().map(|x| rfc3339(x.next_due)))
                .flatten(),
            last_backup_time: last.map(rfc3339),
            updated_at: (s.updated_at > 0).then(|| rfc3339(s.updated_at)),
            warnings: Vec::new(),
            verify_every_hours: s.verify_every_hours,
            verify_sample_percent: s.verify_sample_percent,
        })
    }

    /// Applies a location update: validate, run the accessibility test when the share changes,
    /// require confirmation when lowering retention deletes backups, store, audit.
    pub async fn update_location(&self, u: LocationUpdate, actor: &str) -> Result<LocationView> {
        let now = self.now();
        let cur = self.stored_location()?;
        let v = settings::validate(&u, &cur, now)?;
        let mut next = cur.clone();
        if let Some(p) = &v.path {
            next.path = Some(p.clone());
        }
        if let Some(n) = &v.username {
            next.username = Some(n.clone());
        }
        if let Some(p) = &v.password {
            next.password_sealed = Some(self.inner.secrets.seal("share-password", p.expose()));
        }
        if v.touches_share() {
            let target = self.target(&next)?.ok_or_else(|| {
                ControllerError::invalid("path", "a path is required with credentials")
            })?;
            let storage = self.inner.opener.open(&target, true).await.map_err(|e| {
                ControllerError::Storage {
                    class: e.class,
                    message: format!(
                        "share accessibility test failed: {e}; the change was not saved"
                    ),
                }
            })?;
            crate::storage::probe(&storage)
                .await
                .map_err(|e| ControllerError::Storage {
                    class: e.class,
                    message: e.message,
                })?;
            self.record_capacity(&storage).await;
        }
        if let Some(r) = v.retention_days {
            if r < cur.retention_days {
                let gone = crate::retention::would_delete(&self.inner.db.backups(10_000)?, r, now);
                if !gone.is_empty() && !v.confirm {
                    return Err(ControllerError::Conflict {
                        message: format!(
                            "lowering retention to {r} days deletes {} existing backup(s); repeat with confirm=true to apply",
                            gone.len()
                        ),
                        details: Some(serde_json::json!({ "would_delete": gone })),
                    });
                }
            }
            next.retention_days = r;
        }
        if let Some(c) = &v.certificate {
            next.certificate_der = Some(base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                c.der(),
            ));
        }
        if let Some(k) = &v.legacy_key {
            next.legacy_key_sealed = Some(self.inner.secrets.seal("legacy-key", k.expose()));
        }
        if let Some(f) = v.frequency_hours {
            let mut s = self.schedule()?;
            scheduler::reschedule(&mut s, cur.frequency_hours, f, now);
            self.inner.db.set_meta(scheduler::META_KEY, &s)?;
            next.frequency_hours = f;
        }
        if let Some(e) = v.scheduler_enabled {
            next.scheduler_enabled = e;
        }
        if let Some(h) = v.verify_every_hours {
            next.verify_every_hours = h;
        }
        if let Some(p) = v.verify_sample_percent {
            next.verify_sample_percent = p;
        }
        if !v.fields.is_empty() {
            next.updated_at = now;
            self.inner.db.set_meta(settings::META_KEY, &next)?;
            self.inner
                .db
                .audit(now, actor, "location.update", &v.fields)?;
        }
        self.evaluate_conditions()?;
        let mut view = self.location()?;
        view.warnings = v.warnings;
        Ok(view)
    }

    pub fn components_config(&self) -> Result<Vec<ComponentConfig>> {
        Ok(self.inner.db.get_meta(META_COMPONENTS)?.unwrap_or_default())
    }

    /// The components, ready to run (API-given passwords opened).
    pub fn components(&self) -> Result<Vec<Component>> {
        component::validate_with(&self.components_config()?, Some(&self.inner.secrets))
    }

    /// The host catalog (see [`crate::component_api`]).
    pub fn host_components(&self) -> Result<Vec<ComponentConfig>> {
        Ok(self
            .inner
            .db
            .get_meta(META_HOST_COMPONENTS)?
            .unwrap_or_default())
    }

    /// The components as the API shows them: no hook, command or secret, only whether each is set.
    pub fn components_view(&self) -> Result<Vec<ComponentView>> {
        let catalog = self.host_components()?;
        Ok(self
            .components_config()?
            .iter()
            .map(|c| ComponentView::of(c, &catalog))
            .collect())
    }

    /// Replaces the components and the host catalog with `cs`. Host-trusted: hooks, commands and
    /// host paths are accepted. The HTTP API uses [`Controller::set_components_from_api`].
    pub fn set_components(
        &self,
        cs: Vec<ComponentConfig>,
        actor: &str,
    ) -> Result<Vec<ComponentConfig>> {
        component::validate(&cs)?;
        self.inner.db.set_meta(META_COMPONENTS, &cs)?;
        self.inner.db.set_meta(META_HOST_COMPONENTS, &cs)?;
        self.audit_components(&cs, actor)?;
        Ok(cs)
    }

    /// Replaces the components from an API request: references to the host catalog and declared
    /// service components only (see [`crate::component_api`]).
    pub fn set_components_from_api(
        &self,
        requests: Vec<ComponentRequest>,
        actor: &str,
    ) -> Result<Vec<ComponentView>> {
        let catalog = self.host_components()?;
        let cs = component_api::resolve(
            requests,
            &catalog,
            &self.components_config()?,
            &self.inner.secrets,
        )?;
        component::validate(&cs)?;
        self.inner.db.set_meta(META_COMPONENTS, &cs)?;
        self.audit_components(&cs, actor)?;
        self.components_view()
    }

    fn audit_components(&self, cs: &[ComponentConfig], actor: &str) -> Result<()> {
        let names: Vec<String> = cs.iter().map(|c| format!("component:{}", c.name)).collect();
        self.inner
            .db
            .audit(self.now(), actor, "components.update", &names)
    }

    pub(crate) async fn record_capacity(&self, storage: &ibs_storage::DynStorage) {
        if let Ok(Some(s)) = storage.space().await {
            let _ = self.inner.db.set_meta(
                META_CAPACITY,
                &Capacity {
                    available: s.available,
                    total: s.total,
                    at: self.now(),
                },
            );
        }
    }

    // ---- jobs ------------------------------------------------------------------------------

    /// Takes the gate for a new job, or says who holds it.
    pub(crate) fn take_gate(&self, id: &str, what: &'static str) -> Result<GateGuard> {
        let mut g = self.inner.gate.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = g.as_ref() {
            return Err(ControllerError::Conflict {
                message: format!("{} {} is running", b.what, b.id),
                details: Some(serde_json::json!({ "running_job": b.id, "running_kind": b.what })),
            });
        }
        *g = Some(Busy {
            id: id.into(),
            what,
        });
        Ok(GateGuard {
            inner: self.inner.clone(),
            id: id.into(),
        })
    }

    pub(crate) fn busy(&self) -> Option<(String, String)> {
        self.inner
            .gate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|b| (b.id.clone(), b.what.to_string()))
    }

    pub fn maintenance(&self) -> Result<Option<Maintenance>> {
        self.inner.db.get_meta(META_MAINTENANCE)
    }

    /// Starts an on-demand backup; 409 (Conflict) during maintenance or while a job runs.
    pub fn start_backup(&self) -> Result<(Job, tokio::task::JoinHandle<()>)> {
        if let Some(m) = self.maintenance()?.filter(|m| m.state == "active") {
            return Err(ControllerError::conflict(m.skip_reason()));
        }
        self.launch_backup(Trigger::OnDemand)
    }

    pub(crate) fn launch_backup(
        &self,
        trigger: Trigger,
    ) -> Result<(Job, tokio::task::JoinHandle<()>)> {
        let now = self.now();
        let id = ibs_repo::clock::new_backup_id(now);
        let guard = self.take_gate(&id, "backup")?;
        let mut job = Job::new(
            id.clone(),
            JobKind::Backup,
            trigger,
            JobStatus::Running,
            now,
        );
        job.started_at = Some(now);
        self.inner.db.put_job(&job)?;
        let progress = self.track_live(id, now);
        let ctl = self.clone();
        let job2 = job.clone();
        let handle = spawn_job(move || async move {
            let _guard = guard;
            crate::runner::run_backup(&ctl, job2, progress).await;
        });
        Ok((job, handle))
    }

    fn with_progress(&self, mut j: Job) -> Job {
        if j.status == JobStatus::Running {
            if let Some(l) = self
                .inner
                .live
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&j.id)
            {
                let s = l.progress.snapshot();
                let elapsed = (self.now() - l.started).max(0) as u64;
                let eta = (s.bytes_done > 0 && s.bytes_total > s.bytes_done)
                    .then(|| elapsed * (s.bytes_total - s.bytes_done) / s.bytes_done);
                j.progress = Some(JobProgress {
                    bytes_done: s.bytes_done,
                    bytes_total: s.bytes_total,
                    files_done: s.files_done,
                    files_total: s.files_total,
                    percent: s.percent(),
                    eta_seconds: eta,
                });
            }
        }
        j
    }

    pub fn job(&self, id: &str) -> Result<Job> {
        self.inner
            .db
            .job(id)?
            .map(|j| self.with_progress(j))
            .ok_or_else(|| ControllerError::NotFound(format!("job {id}")))
    }

    pub fn jobs(&self, limit: u32) -> Result<Vec<Job>> {
        Ok(self
            .inner
            .db
            .jobs(None, limit)?
            .into_iter()
            .map(|j| self.with_progress(j))
            .collect())
    }

    pub fn backups(&self, limit: u32) -> Result<Vec<Job>> {
        Ok(self
            .inner
            .db
            .backups(limit)?
            .into_iter()
            .map(|j| self.with_progress(j))
            .collect())
    }

    pub fn backup(&self, id: &str) -> Result<Job> {
        self.inner
            .db
            .find_backup(id)?
            .filter(|j| j.kind == JobKind::Backup)
            .map(|j| self.with_progress(j))
            .ok_or_else(|| ControllerError::NotFound(format!("backup {id}")))
    }

    pub fn readiness(&self) -> Result<Readiness> {
        let busy = self.busy();
        Ok(Readiness {
            backup_running: busy.is_some(),
            running_job: busy.as_ref().map(|b| b.0.clone()),
            running_kind: busy.map(|b| b.1),
            maintenance: self.maintenance()?,
        })
    }

    /// Waits until no job holds the gate (tests, shutdown).
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let end = std::time::Instant::now() + timeout;
        while self.busy().is_some() {
            if std::time::Instant::now() > end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Graceful shutdown: a job still running is recorded as Interrupted now.
    pub fn shutdown(&self) -> Result<Vec<String>> {
        self.inner.db.interrupt_unfinished(self.now())
    }
}
