//! Executes one backup job: open (or on first use, initialise) the repository, rotate to a newly
//! uploaded certificate, run pre-hooks, build one engine source per component path or command,
//! run the engine, collect command exit codes, run post-hooks (always), then record the job and
//! update alerts. The job becomes Succeeded or PartialSucceeded only here, after the engine has
//! returned, i.e. after the manifest was committed.

use crate::alerts::AlertKind;
use crate::controller::Controller;
use crate::model::{ComponentResult, Job, JobStatus};
use crate::settings::StoredLocation;
use crate::storage::StorageTarget;
use ibs_engine::state::WriterState;
use ibs_engine::{keyops, BackupOptions, EngineError, Progress};
use ibs_keys::LegacyKey;
use ibs_repo::manifest::BackupStatus;
use ibs_repo::{InitKeys, RepoError, Repository};
use ibs_sources::component::{run_hook, Component};
use ibs_storage::{AlertClass, DynStorage};
use std::sync::Arc;

/// A failure with its alert class.
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
    fn from_repo(e: RepoError) -> Self {
        Failure::from_engine(&EngineError::Repo(e))
    }
}

/// Opens the configured location's storage (with `create`, a location that holds no repository
/// yet is opened for one) and records its capacity.
async fn open_location(
    ctl: &Controller,
    create: bool,
) -> Result<(StoredLocation, StorageTarget, DynStorage), Failure> {
    let s = ctl
        .stored_location()
        .map_err(|e| Failure::general(e.to_string()))?;
    let target = ctl
        .target(&s)
        .map_err(|e| Failure::general(e.to_string()))?
        .ok_or_else(|| Failure::general("no backup location is configured"))?;
    let opener = &ctl.inner.opener;
    let storage = match opener.open(&target, false).await {
        Ok(s) => s,
        Err(e) if e.not_a_repository && create => {
            opener.open(&target, true).await.map_err(|e| Failure {
                class: e.class,
                message: e.message,
            })?
        }
        Err(e) => {
            return Err(Failure {
                class: e.class,
                message: e.message,
            })
        }
    };
    ctl.record_capacity(&storage).await;
    Ok((s, target, storage))
}

/// Opens the configured repository to read it only: no writer state is loaded, nothing is
/// initialised (validation).
pub(crate) async fn open_repository_read(ctl: &Controller) -> Result<Arc<Repository>, Failure> {
    let (_, _, storage) = open_location(ctl, false).await?;
    Repository::open(storage, ctl.inner.clock.clone())
        .await
        .map(Arc::new)
        .map_err(Failure::from_repo)
}

/// Opens the configured repository and this controller's writer state. With `init`, a location
/// without a repository gets one (certificate or legacy key from the settings).
pub(crate) async fn open_repository(
    ctl: &Controller,
    init: bool,
) -> Result<(Arc<Repository>, WriterState), Failure> {
    let (s, target, storage) = open_location(ctl, init).await?;
    let state_root = ctl.inner.data_dir.join("state");
    let clock = ctl.inner.clock.clone();
    let repo = match Repository::open(storage.clone(), clock.clone()).await {
        Ok(r) => r,
        Err(RepoError::NotARepository { .. }) if init => {
            let cert = s.certificate();
            let legacy = match &s.legacy_key_sealed {
                Some(k) => Some(
                    LegacyKey::from_file_text(
                        &ctl.inner
                            .secrets
                            .open("legacy-key", k)
                            .map_err(|e| Failure::general(e.to_string()))?,
                    )
                    .map_err(|e| Failure::general(e.to_string()))?,
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
    let state =
        WriterState::load(&state_root, &repo.config().id).map_err(|e| Failure::from_engine(&e))?;
    Ok((Arc::new(repo), state))
}

/// Makes the repository use the certificate in the settings, if it changed.
async fn rotate_certificate(
    ctl: &Controller,
    repo: Arc<Repository>,
    mut state: WriterState,
) -> Result<(Arc<Repository>, WriterState), Failure> {
    let Some(cert) = ctl
        .stored_location()
        .map_err(|e| Failure::general(e.to_string()))?
        .certificate()
    else {
        return Ok((repo, state));
    };
    if state.certificate.as_ref().map(|c| c.thumbprint()) == Some(cert.thumbprint()) {
        return Ok((repo, state));
    }
    let mut repo = Arc::try_unwrap(repo).map_err(|_| Failure::general("repository in use"))?;
    keyops::set_cert(&mut repo, &mut state, &cert, ctl.inner.lock_wait)
        .await
        .map_err(|e| Failure::from_engine(&e))?;
    tracing::info!("new backups use certificate {}", cert.thumbprint());
    Ok((Arc::new(repo), state))
}

fn hook_env(component: &str, job: &str) -> Vec<(String, String)> {
    vec![
        ("IBS_COMPONENT".into(), component.into()),
        ("IBS_JOB_ID".into(), job.into()),
    ]
}

fn result_of(c: &Component) -> ComponentResult {
    ComponentResult {
        name: c.name.clone(),
        kind: c.kind.name().into(),
        status: JobStatus::Running,
        essential_for_recovery: c.essential_for_recovery,
        sources: c.source_names(),
        bytes: 0,
        files: 0,
        message: None,
        cause: None,
        exports: Vec::new(),
    }
}

fn fail(r: &mut ComponentResult, m: String) {
    r.status = JobStatus::Failed;
    r.message = Some(match r.message.take() {
        Some(prev) => format!("{prev}; {m}"),
        None => m,
    });
}

pub(crate) async fn run_backup(ctl: &Controller, mut job: Job, progress: Arc<Progress>) {
    let began = std::time::Instant::now();
    let outcome = execute(ctl, &mut job, progress).await;
    let now = ctl.now();
    job.finished_at = Some(now);
    job.duration_ms = Some(crate::model::elapsed_ms(began));
    job.progress = None;
    let alerts = ctl.alerts();
    let res = match outcome {
        Err(f) => {
            job.status = JobStatus::Failed;
            job.alert_class = Some(f.class.as_str().into());
            job.error = Some(f.message.clone());
            alerts
                .raise(
                    AlertKind::BackupFailed(f.class),
                    &format!("backup {}: {}", job.id, f.message),
                    now,
                )
                .map(|_| ())
        }
        Ok(()) => match job.status {
            JobStatus::Succeeded => alerts.backup_succeeded(now),
            _ => {
                let failed: Vec<_> = job
                    .components
                    .iter()
                    .filter(|c| c.status != JobStatus::Succeeded)
                    .map(|c| c.name.as_str())
                    .collect();
                alerts.backup_partial(
                    &format!(
                        "backup {}: components not fully backed up: {}",
                        job.id,
                        failed.join(", ")
                    ),
                    now,
                )
            }
        },
    };
    if let Err(e) = res {
        tracing::error!("recording alerts for job {}: {e}", job.id);
    }
    if let Err(e) = ctl.db().put_job(&job) {
        tracing::error!("recording job {}: {e}", job.id);
    }
    let _ = ctl.evaluate_conditions();
    if job.backup_id.is_some() {
        crate::verify::refresh_after_backup(ctl).await;
    }
    tracing::info!("backup job {} ended {}", job.id, job.status.as_str());
}

async fn execute(ctl: &Controller, job: &mut Job, progress: Arc<Progress>) -> Result<(), Failure> {
    let components = ctl
        .components()
        .map_err(|e| Failure::general(e.to_string()))?;
    if components.is_empty() {
        return Err(Failure::general("no components are configured"));
    }
    let (repo, state) = open_repository(ctl, true).await?;
    let (repo, state) = rotate_certificate(ctl, repo, state).await?;
    job.components = components.iter().map(result_of).collect();
    ctl.db()
        .put_job(job)
        .map_err(|e| Failure::general(e.to_string()))?;

    let env_job = job.id.clone();
    let mut sources = Vec::new();
    let mut hooked = Vec::new();
    let mut logs: Vec<(usize, ibs_sources::kinds::SharedLog)> = Vec::new();
    let tmp_dir = ctl.inner.data_dir.join("tmp").join(&job.id);
    for (i, c) in components.iter().enumerate() {
        let r = &mut job.components[i];
        if let Some(h) = &c.pre_hook {
            if let Err(e) =
                run_hook("pre hook", h, c.hook_timeout, hook_env(&c.name, &env_job)).await
            {
                fail(r, e);
                hooked.push(i);
                continue;
            }
        }
        hooked.push(i);
        match ibs_sources::mapping::engine_sources(c, &env_job, &tmp_dir) {
            Ok(m) => {
                if let Some(log) = m.exports {
                    r.sources = m.sources.iter().map(|s| s.name.clone()).collect();
                    logs.push((i, log));
                }
                sources.extend(m.sources);
            }
            Err(f) => {
                if f.cause.is_some() {
                    r.cause = f.cause;
                }
                fail(r, f.message);
            }
        }
    }

    let result = if sources.is_empty() {
        Err(Failure::general("no component could be backed up"))
    } else {
        // Sources of components not essential for recovery do not affect readiness. A component's
        // sources are named NAME, NAME-<n> or NAME.<part>.
        let essential: std::collections::HashSet<String> = sources
            .iter()
            .map(|s| s.name.clone())
            .filter(|name| {
                components.iter().any(|c| {
                    c.essential_for_recovery
                        && (name == &c.name
                            || name
                                .strip_prefix(c.name.as_str())
                                .is_some_and(|rest| rest.starts_with('-') || rest.starts_with('.')))
                })
            })
            .collect();
        let opts = BackupOptions {
            sources,
            threads: 0,
            lock_wait: ctl.inner.lock_wait,
            progress,
        };
        let extras = ibs_engine::BackupExtras {
            essential: Some(essential),
        };
        ibs_engine::backup_with(repo.clone(), &state, opts, extras)
            .await
            .map_err(|e| Failure::from_engine(&e))
    };
    let _ = std::fs::remove_dir_all(&tmp_dir);
    for (i, log) in logs {
        let log = log.lock().unwrap_or_else(|p| p.into_inner());
        let r = &mut job.components[i];
        r.exports = log.done.clone();
        if let Some(f) = log.failures.first() {
            r.cause = Some(f.cause);
        }
    }

    // Post hooks always run.
    for i in hooked {
        let c = &components[i];
        if let Some(h) = &c.post_hook {
            if let Err(e) =
                run_hook("post hook", h, c.hook_timeout, hook_env(&c.name, &env_job)).await
            {
                let r = &mut job.components[i];
                r.message = Some(e);
                if r.status == JobStatus::Succeeded || r.status == JobStatus::Running {
                    r.status = JobStatus::PartialSucceeded;
                }
            }
        }
    }
    let report = match result {
        Ok(r) => r,
        Err(f) => {
            for r in &mut job.components {
                if !r.status.is_final() {
                    r.status = JobStatus::Failed;
                }
            }
            return Err(f);
        }
    };

    let cat = &report.catalog;
    for r in job.components.iter_mut() {
        for name in r.sources.clone() {
            if let Some(s) = cat.sources.iter().find(|s| s.name == name) {
                r.bytes += s.bytes;
                r.files += s.files;
                match s.status {
                    BackupStatus::Succeeded => {}
                    BackupStatus::PartialSucceeded if r.status != JobStatus::Failed => {
                        r.status = JobStatus::PartialSucceeded;
                        r.message
                            .get_or_insert_with(|| format!("{} unreadable entries", s.errors));
                    }
                    _ => {
                        let prefix = format!("{name}: ");
                        let why = report
                            .errors
                            .iter()
                            .find(|e| e.starts_with(&prefix))
                            .cloned()
                            .unwrap_or_else(|| format!("source {name} failed"));
                        fail(r, why)
                    }
                }
                if s.skipped > 0 {
                    let prefix = format!("{name}/");
                    let first = report
                        .warnings
                        .iter()
                        .find(|w| w.starts_with(&prefix))
                        .cloned()
                        .unwrap_or_default();
                    r.message.get_or_insert_with(|| {
                        format!(
                            "{} entries skipped (sockets cannot be backed up): {first}",
                            s.skipped
                        )
                    });
                }
            }
        }
        if r.status == JobStatus::Running {
            r.status = JobStatus::Succeeded;
        }
    }
    job.backup_id = Some(cat.backup_id.clone());
    job.repository_id = Some(cat.repository_id.clone());
    job.bytes_read = cat.bytes_read;
    job.bytes_stored = cat.bytes_stored;
    job.certificate_thumbprint = cat.certificate_thumbprint.clone();
    job.is_cloud_recovery_ready = job
        .components
        .iter()
        .filter(|c| c.essential_for_recovery)
        .all(|c| c.status == JobStatus::Succeeded);
    job.status = if job
        .components
        .iter()
        .all(|c| c.status == JobStatus::Succeeded)
    {
        JobStatus::Succeeded
    } else if job.components.iter().all(|c| c.status == JobStatus::Failed) {
        JobStatus::Failed
    } else {
        JobStatus::PartialSucceeded
    };
    if job.status == JobStatus::Failed {
        return Err(Failure::general("every component failed"));
    }
    ctl.record_capacity(repo.storage()).await;
    Ok(())
}
