//! [`Controller`]: the facade the API and the daemon talk to. It holds the job gate, starts jobs
//! through it, runs the periodic [`Controller::tick`] (scheduler, condition alerts, hourly
//! retention cleanup) and owns the settings (location, components). The work of each job lives in
//! [`crate::jobs`], written against the [`JobContext`]; the facade depends on the jobs, never the
//! reverse.
//!
//! Files: this one (opening, the gate and starting jobs, job queries, the state the API reads),
//! `location` (location and component settings), `tick` (the scheduler tick), `lists` (the paged lists), `admin`
//! (maintenance, alerts, tokens, audit, store prune) and [`bootstrap`] (first start).
//!
//! Locking: see the locking table in `docs/design/controller.md` ("The gate"): one job at a time;
//! who waits, who is deferred to the next tick, who gets 409 or a Skipped record.

mod admin;
pub mod bootstrap;
mod lists;
mod location;
mod queries;
mod tick;

pub use admin::PruneReport;
pub use tick::{TickOutcome, RETENTION_INTERVAL_SECS};

use crate::alerts::{AlertSink, Alerts};
use crate::component::{self, ComponentConfig};
use crate::context::{JobContext, META_COMPONENTS, META_HOST_COMPONENTS};
use crate::db::Db;
use crate::gate::{spawn_job, Gate, GateGuard};
use crate::jobs;
use crate::model::{GateKind, Job, JobKind, JobProgress, JobStatus, Maintenance, Trigger};
use crate::scheduler::{self, ScheduleState};
use crate::secretbox::SecretBox;
use crate::stop::{JobStop, StopReason};
use crate::storage::StorageOpener;
use crate::{ControllerError, Result};
use ibs_engine::Progress;
use ibs_repo::clock::Clock;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use crate::context::Capacity;

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
    /// Prune's unused-space budget, in percent
    /// (`ibs_engine::retention::DEFAULT_MAX_UNUSED_PERCENT` unless configured).
    pub prune_max_unused_percent: u8,
    /// How long what retention removes stays in the grace area
    /// (`ibs_engine::trash::DEFAULT_DELETE_DELAY` unless configured).
    pub delete_delay: Duration,
    /// Closed alerts are purged this many days after closing
    /// ([`crate::alert_purge::DEFAULT_CLOSED_ALERT_RETENTION_DAYS`] unless configured).
    pub closed_alert_retention_days: u32,
    /// Folders an API restore may write beneath ([`crate::restore_roots`]).
    pub restore_roots: Vec<PathBuf>,
    /// A backup job running longer than this is stopped and recorded Failed
    /// ([`crate::stop::DEFAULT_JOB_TIMEOUT`] unless configured).
    pub job_timeout: Duration,
}

pub use ibs_types::admin::Readiness;

#[derive(Clone)]
pub struct Controller {
    ctx: Arc<JobContext>,
    gate: Arc<Gate>,
    closed_alert_retention_days: u32,
    job_timeout: Duration,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("data_dir", &self.ctx.data_dir)
            .finish()
    }
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
        opts.db.interrupt_unfinished_ops(now)?;
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
            ctx: Arc::new(JobContext {
                data_dir: opts.data_dir,
                db: opts.db,
                secrets: opts.secrets,
                clock: opts.clock,
                opener: opts.opener,
                alerts,
                lock_wait: opts.lock_wait,
                prune_grace: opts.prune_grace,
                prune_max_unused_percent: opts.prune_max_unused_percent,
                delete_delay: opts.delete_delay,
                restore_roots: opts.restore_roots,
            }),
            gate: Arc::new(Gate::default()),
            closed_alert_retention_days: opts.closed_alert_retention_days,
            job_timeout: opts.job_timeout,
        })
    }

    pub fn now(&self) -> i64 {
        self.ctx.now()
    }

    /// Test support: the state database, alerts and clock behind the facade.
    #[cfg(feature = "testing")]
    pub fn db(&self) -> &Arc<Db> {
        &self.ctx.db
    }
    #[cfg(feature = "testing")]
    pub fn alerts(&self) -> &Alerts {
        &self.ctx.alerts
    }
    #[cfg(feature = "testing")]
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.ctx.clock
    }

    // ---- the gate and starting jobs ---------------------------------------------------------

    /// Records `job` as Running and runs `work` on it with the gate `guard` already taken (checks
    /// that must hold it came first). Every job gets a [`JobStop`]: it can be cancelled
    /// ([`Controller::cancel_job`]) and is stopped after the job timeout.
    pub(crate) fn launch_held<W, F>(
        &self,
        guard: GateGuard,
        job: Job,
        work: W,
    ) -> Result<(Job, tokio::task::JoinHandle<()>)>
    where
        W: FnOnce(Arc<JobContext>, Job, Arc<Progress>, Arc<JobStop>) -> F + Send + 'static,
        F: Future<Output = ()>,
    {
        self.ctx.db.put_job(&job)?;
        let stop = JobStop::new();
        let progress = self.gate.track_live(
            &job.id,
            job.started_at.unwrap_or(job.created_at),
            stop.clone(),
        );
        stop.arm_timeout(self.job_timeout);
        let ctx = self.ctx.clone();
        let record = job.clone();
        // One log line when a job starts and one when it ends (the operator's view of the daemon
        // at the default level; ADR 0027).
        tracing::info!(
            job = %job.id,
            kind = %job_kind(&job),
            trigger = %wire(&job.trigger),
            "job started"
        );
        let handle = spawn_job(move || async move {
            let _guard = guard;
            let id = record.id.clone();
            work(ctx.clone(), record, progress, stop).await;
            log_end(&ctx, &id);
        });
        Ok((job, handle))
    }

    /// Takes the gate for work that is not a recorded job (store prune).
    pub(crate) fn take_gate(&self, id: &str, kind: GateKind) -> Result<GateGuard> {
        self.gate.take(id, kind)
    }

    /// The id and kind of the job holding the gate.
    pub(crate) fn busy(&self) -> Option<(String, GateKind)> {
        self.gate.holder()
    }

    /// Refuses (409) to `action` a backup at a previous location, naming the location it needs
    /// and the two ways to reach it.
    fn refuse_previous_location(&self, backup: &Job, action: &str) -> Result<()> {
        if !backup.previous_location {
            return Ok(());
        }
        let here = self.ctx.current_location()?;
        let current = here
            .path
            .as_deref()
            .unwrap_or("none (the location was cleared)");
        let repo_id = backup.repository_id.as_deref().unwrap_or("unknown");
        let message = match &backup.location {
            Some(at) => format!(
                "cannot {action} backup {id}: it is at a previous location, {at} (repository \
                 {repo_id}), not at the current location, {current}; set the location back to \
                 restore it from this controller (ibs location set --path '{at}'), or restore it \
                 on any host with ibs repo restore --repo '{at}' --backup {bid} and the .pfx",
                id = backup.id,
                bid = backup.backup_id.as_deref().unwrap_or(&backup.id),
            ),
            None => format!(
                "cannot {action} backup {id}: it is in repository {repo_id}, which the current \
                 location, {current}, does not hold (the location was changed since the backup); \
                 set the location back to the one that holds that repository",
                id = backup.id,
            ),
        };
        Err(ControllerError::Conflict {
            message,
            details: Some(serde_json::json!({
                "location": backup.location,
                "repository_id": backup.repository_id,
                "current_location": here.path,
            })),
        })
    }

    fn refuse_during_maintenance(&self) -> Result<()> {
        match self.maintenance()?.filter(Maintenance::is_active) {
            Some(m) => Err(ControllerError::conflict(m.skip_reason())),
            None => Ok(()),
        }
    }

    fn running_job(id: String, kind: JobKind, trigger: Trigger, now: i64) -> Job {
        let mut job = Job::new(id, kind, trigger, JobStatus::Running, now);
        job.started_at = Some(now);
        job
    }

    /// Starts an on-demand backup; 409 (Conflict) during maintenance or while a job runs.
    pub fn start_backup(&self) -> Result<(Job, tokio::task::JoinHandle<()>)> {
        self.refuse_during_maintenance()?;
        self.launch_backup(Trigger::OnDemand)
    }

    pub(crate) fn launch_backup(
        &self,
        trigger: Trigger,
    ) -> Result<(Job, tokio::task::JoinHandle<()>)> {
        let now = self.now();
        let id = ibs_repo::clock::new_backup_id(now);
        let job = Self::running_job(id, JobKind::Backup, trigger, now);
        let guard = self.gate.take(&job.id, GateKind::Backup)?;
        self.launch_held(guard, job, |ctx, job, progress, stop| async move {
            jobs::backup::run_backup(&ctx, job, progress, stop).await
        })
    }

    /// Starts restoring backup `id`. Bad input (unknown backup or component, unusable .pfx) and a
    /// backup written by a newer build (without `allow_newer`) fail before a job is created; an
    /// older target server major version is a warning kept on the job.
    pub async fn start_restore(
        &self,
        id: &str,
        req: jobs::restore::RestoreRequest,
        actor: &str,
    ) -> Result<(Job, tokio::task::JoinHandle<()>)> {
        let backup = self.backup(id)?;
        self.refuse_previous_location(&backup, "restore")?;
        let mut prepared = jobs::restore::prepare(&self.ctx, id, &backup, req)?;
        jobs::restore::preflight(&self.ctx, &backup, &mut prepared).await?;
        let now = self.now();
        let job_id = format!("restore-{}", ibs_repo::clock::new_backup_id(now));
        let guard = self.gate.take(&job_id, GateKind::Restore)?;
        let job = jobs::restore::new_job(job_id, &backup, &prepared, now);
        self.ctx.db.audit(
            now,
            actor,
            "backup.restore",
            &[
                format!("backup:{}", backup.id),
                format!("target:{}", prepared.target().display()),
            ],
        )?;
        self.launch_held(guard, job, |ctx, job, progress, stop| async move {
            jobs::restore::run(&ctx, job, prepared, progress, stop).await
        })
    }

    /// Starts validating backup `id` (a job id or a repository backup id); see
    /// [`jobs::validate`]. Bad input (unknown backup, unusable .pfx) fails before a job is created;
    /// 409 during active maintenance (naming it) or while another job runs.
    pub fn start_validation(
        &self,
        id: &str,
        req: jobs::validate::ValidateRequest,
        actor: &str,
    ) -> Result<(Job, tokio::task::JoinHandle<()>)> {
        let backup = self.backup(id)?;
        self.refuse_previous_location(&backup, "validate")?;
        let prepared = jobs::validate::prepare(&self.ctx, id, &backup, req)?;
        if let Some(m) = self.maintenance()?.filter(Maintenance::is_active) {
            return Err(ControllerError::Conflict {
                message: format!("{}; try again when it has ended", m.skip_reason()),
                details: Some(serde_json::json!({ "maintenance": m })),
            });
        }
        let now = self.now();
        let job_id = format!("validate-{}", ibs_repo::clock::new_backup_id(now));
        let guard = self.gate.take(&job_id, GateKind::Validation)?;
        let job = jobs::validate::new_job(job_id.clone(), &backup, now);
        self.ctx.db.audit(
            now,
            actor,
            "backup.validate",
            &[format!("backup:{}", backup.id), format!("job:{job_id}")],
        )?;
        self.launch_held(guard, job, |ctx, job, progress, stop| async move {
            jobs::validate::run(&ctx, job, prepared, progress, stop).await
        })
    }

    /// The report (`json` or `html`) validation job `id` left; see [`jobs::validate`].
    pub fn report(&self, id: &str, ext: &str) -> Result<Vec<u8>> {
        jobs::validate::report(&self.ctx, id, &self.job(id)?, ext)
    }

    /// The folders an API restore may write beneath ([`crate::restore_roots`]).
    pub fn restore_roots(&self) -> &[PathBuf] {
        &self.ctx.restore_roots
    }

    /// Starts a verification now; 409 during maintenance or while another job runs.
    pub fn start_verification(&self) -> Result<(Job, tokio::task::JoinHandle<()>)> {
        self.refuse_during_maintenance()?;
        if self.stored_location()?.path.is_none() {
            return Err(ControllerError::conflict(
                "no backup location is configured",
            ));
        }
        self.launch_verification(Trigger::OnDemand)
    }

    pub(crate) fn launch_verification(
        &self,
        trigger: Trigger,
    ) -> Result<(Job, tokio::task::JoinHandle<()>)> {
        let now = self.now();
        let job = Self::running_job(jobs::verify::job_id(now), JobKind::Verify, trigger, now);
        let guard = self.gate.take(&job.id, GateKind::Verification)?;
        self.launch_held(guard, job, |ctx, job, progress, stop| async move {
            jobs::verify::run(&ctx, job, progress, stop).await
        })
    }

    /// Starts the retention cleanup now (forget + prune) unless a job runs.
    pub fn start_retention(&self) -> Result<tokio::task::JoinHandle<()>> {
        let id = format!("retention-{}", self.now());
        let guard = self.gate.take(&id, GateKind::RetentionCleanup)?;
        let op = self.ctx.db.op_begin(
            ibs_types::OperationKind::RetentionCleanup,
            self.now(),
            "scheduler",
            None,
        )?;
        let ctx = self.ctx.clone();
        Ok(spawn_job(move || async move {
            let _guard = guard;
            let (status, detail) = match jobs::retention::cleanup(&ctx).await {
                Ok(n) => (JobStatus::Succeeded, n.to_string()),
                Err(m) => (JobStatus::Failed, m),
            };
            if let Err(e) = ctx.db.op_end(op, status, ctx.now(), Some(&detail)) {
                tracing::error!("recording the retention cleanup's end: {e}");
            }
        }))
    }

    /// Cancels running job `id` (a backup, restore, verification or validation) on behalf of
    /// `actor` (recorded in the audit trail). Returns the job as it is now (still Running: it ends
    /// Canceled within seconds, unless it had already completed, e.g. committed its backup). 404
    /// for an unknown job, 409 naming the status of a job that already ended.
    pub fn cancel_job(&self, id: &str, actor: &str) -> Result<Job> {
        let job = self.job(id)?;
        let ended = |j: &Job| ControllerError::Conflict {
            message: format!(
                "job {} has already ended ({}); only a running job can be canceled",
                j.id,
                j.status.as_str()
            ),
            details: Some(serde_json::json!({ "status": j.status })),
        };
        if job.status.is_final() {
            return Err(ended(&job));
        }
        match self.gate.stop_of(id) {
            Some(stop) => {
                if stop.stop(StopReason::Canceled {
                    by: actor.to_string(),
                }) {
                    self.ctx
                        .db
                        .audit(self.now(), actor, "job.cancel", &[format!("job:{id}")])?;
                    tracing::info!("job {id}: cancel requested by {actor}");
                }
                self.job(id)
            }
            None => {
                // It ended between the two reads, or it is a record left by another process.
                let now = self.job(id)?;
                if now.status.is_final() {
                    Err(ended(&now))
                } else {
                    Err(ControllerError::conflict(format!(
                        "job {id} is not running in this controller"
                    )))
                }
            }
        }
    }

    // ---- queries ----------------------------------------------------------------------------

    /// A job record as served: live progress while it runs, and whether a backup is at a
    /// previous location (`here` is [`crate::context::JobContext::current_location`]).
    fn served(&self, here: &crate::context::CurrentLocation, mut j: Job) -> Job {
        j.previous_location = here.is_previous(&j);
        if j.status == JobStatus::Running {
            if let Some((s, started)) = self.gate.live(&j.id) {
                let elapsed = (self.now() - started).max(0) as u64;
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
        self.ctx.db.interrupt_unfinished(self.now())
    }
}

/// A serde unit enum as its wire text.
fn wire<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn job_kind(job: &Job) -> String {
    wire(&job.kind)
}

/// The end-of-job log line: id, kind, status, duration and bytes, as recorded.
fn log_end(ctx: &JobContext, id: &str) {
    match ctx.db.job(id) {
        Ok(Some(j)) => {
            if matches!(
                j.status,
                JobStatus::Succeeded | JobStatus::PartialSucceeded | JobStatus::Skipped
            ) {
                tracing::info!(
                    job = %j.id,
                    kind = %job_kind(&j),
                    status = j.status.as_str(),
                    duration_ms = j.duration_ms.unwrap_or(0),
                    bytes_read = j.bytes_read,
                    bytes_stored = j.bytes_stored,
                    "job ended"
                );
            } else {
                tracing::warn!(
                    job = %j.id,
                    kind = %job_kind(&j),
                    status = j.status.as_str(),
                    duration_ms = j.duration_ms.unwrap_or(0),
                    bytes_read = j.bytes_read,
                    bytes_stored = j.bytes_stored,
                    error = j.error.as_deref().unwrap_or(""),
                    "job ended"
                );
            }
        }
        Ok(None) => tracing::warn!(job = %id, "job ended without a record"),
        Err(e) => tracing::warn!(job = %id, "job ended; reading its record failed: {e}"),
    }
}
