//! Executes one backup job, in stages:
//! 1. `prepare`: read the components, open (or on first use, initialise) the repository, rotate
//!    to a newly uploaded certificate, record one Running result per component.
//! 2. `sources::build`: run each component's pre-hook and turn it into engine sources (paths,
//!    a command's stdout, a service kind's streamed exports).
//! 3. `run_engine`: run the engine over the sources (the manifest is committed here).
//! 4. `post_hooks`: post-hooks always run, whatever the engine did.
//! 5. `report::apply` and `report::summarise`: fold the engine's per-source outcome into the
//!    component results and roll them up into the job's status.
//!
//! The job becomes Succeeded or PartialSucceeded only after the engine has returned, i.e. after
//! the manifest was committed. `run_backup` then records the job and updates the alerts.
//!
//! A job stopped ([`JobStop`]: an operator's cancel or the job timeout) before its manifest was
//! committed ends Canceled (no alert) or Failed "timed out after …" (the general alert). The stop
//! is checked between the stages and by the engine; a `command` component's process group is
//! killed at once, a service export's tool when the engine drops its reader.

mod report;
mod sources;

use crate::alerts::AlertKind;
use crate::component::{run_hook, Component};
use crate::context::{Failure, JobContext};
use crate::model::{Job, JobStatus};
use crate::stop::{JobStop, StopReason};
use ibs_engine::state::WriterState;
use ibs_engine::{keyops, BackupOptions, BackupReport, Progress, SourceSpec};
use ibs_repo::Repository;
use std::collections::HashSet;
use std::sync::Arc;

/// Runs backup job `job` (recorded as Running by the caller) and records how it ended.
pub(crate) async fn run_backup(
    ctx: &JobContext,
    mut job: Job,
    progress: Arc<Progress>,
    stop: Arc<JobStop>,
) {
    let began = std::time::Instant::now();
    let outcome = execute(ctx, &mut job, progress, &stop).await;
    // Stopped before the commit: the reason decides the outcome (a committed backup keeps its own).
    let outcome = match (outcome, stop.reason()) {
        (Err(_), Some(StopReason::Canceled { by })) => {
            tracing::info!("backup job {} canceled by {by}", job.id);
            Err(None)
        }
        (Err(_), Some(r @ StopReason::TimedOut { .. })) => Err(Some(Failure::general(r.message()))),
        (Err(f), None) => Err(Some(f)),
        (Ok(()), _) => Ok(()),
    };
    let now = ctx.now();
    job.finished_at = Some(now);
    job.duration_ms = Some(crate::model::elapsed_ms(began));
    job.progress = None;
    let alerts = &ctx.alerts;
    let res = match outcome {
        Err(None) => {
            job.status = JobStatus::Canceled;
            job.error = stop.reason().map(|r| r.message());
            Ok(())
        }
        Err(Some(f)) => {
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
    if let Err(e) = ctx.db.put_job(&job) {
        tracing::error!("recording job {}: {e}", job.id);
    }
    let _ = crate::conditions::evaluate(ctx);
    if job.backup_id.is_some() {
        super::verify::corruption::refresh_after_backup(ctx).await;
    }
    tracing::debug!("backup job {} ended {}", job.id, job.status.as_str());
}

async fn execute(
    ctx: &JobContext,
    job: &mut Job,
    progress: Arc<Progress>,
    stop: &JobStop,
) -> Result<(), Failure> {
    let stopped = || stop.token().check().map_err(|e| Failure::from_engine(&e));
    stopped()?;
    let (components, repo, state) = prepare(ctx, job).await?;
    // Before any hook runs: a failure here must not leave a pre-hook without its post-hook.
    let deployment_id = ctx.deployment_id()?;
    let tmp_dir = ctx.tmp_dir(&job.id);
    stopped()?;
    let staged = sources::build(job, &components, &tmp_dir, stop.token()).await;
    let extras = ibs_engine::BackupExtras {
        essential: None,
        cancel: Some(stop.token().clone()),
        deployment_id: Some(deployment_id),
        server_versions: staged.server_versions,
        // One backup, one id: the manifest is committed under the job's id.
        backup_id: Some(job.id.clone()),
        ..Default::default()
    };
    let result = match stopped() {
        // Dropping the staged sources kills the exports they started.
        Err(f) => Err(f),
        Ok(()) => {
            run_engine(
                ctx,
                &repo,
                &state,
                staged.sources,
                &components,
                extras,
                progress,
            )
            .await
        }
    };
    let _ = std::fs::remove_dir_all(&tmp_dir);
    report::collect_exports(job, staged.logs);
    post_hooks(job, &components, &staged.hooked).await;
    let report = match result {
        Ok(r) => r,
        Err(f) => {
            let end = match stop.reason() {
                Some(StopReason::Canceled { .. }) => JobStatus::Canceled,
                _ => JobStatus::Failed,
            };
            for r in &mut job.components {
                if !r.status.is_final() {
                    r.status = end;
                }
            }
            return Err(f);
        }
    };
    report::apply(job, &report);
    report::summarise(job, &report);
    if job.status == JobStatus::Failed {
        return Err(Failure::general("every component failed"));
    }
    ctx.record_capacity(repo.storage()).await;
    Ok(())
}

/// Stage 1: the components, the repository and writer state (rotated to the configured
/// certificate), and one Running result per component, recorded.
async fn prepare(
    ctx: &JobContext,
    job: &mut Job,
) -> Result<(Vec<Component>, Arc<Repository>, WriterState), Failure> {
    let components = ctx
        .components()
        .map_err(|e| Failure::general(e.to_string()))?;
    if components.is_empty() {
        return Err(Failure::general("no components are configured"));
    }
    job.location = ctx
        .stored_location()
        .map_err(|e| Failure::general(e.to_string()))?
        .path;
    let (repo, state) = ctx.open_repository(true).await?;
    let (repo, state) = rotate_certificate(ctx, repo, state).await?;
    job.components = components.iter().map(report::result_of).collect();
    ctx.db
        .put_job(job)
        .map_err(|e| Failure::general(e.to_string()))?;
    Ok((components, repo, state))
}

/// Makes the repository use the certificate in the settings, if it changed.
async fn rotate_certificate(
    ctx: &JobContext,
    repo: Arc<Repository>,
    mut state: WriterState,
) -> Result<(Arc<Repository>, WriterState), Failure> {
    let Some(cert) = ctx
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
    keyops::set_cert(&mut repo, &mut state, &cert, ctx.lock_wait)
        .await
        .map_err(|e| Failure::from_engine(&e))?;
    tracing::info!("new backups use certificate {}", cert.thumbprint());
    Ok((Arc::new(repo), state))
}

/// Stage 3: the engine over the sources, recording the deployment and server versions in
/// `extras`. Sources of components not essential for recovery do
/// not affect readiness.
async fn run_engine(
    ctx: &JobContext,
    repo: &Arc<Repository>,
    state: &WriterState,
    sources: Vec<SourceSpec>,
    components: &[Component],
    mut extras: ibs_engine::BackupExtras,
    progress: Arc<Progress>,
) -> Result<BackupReport, Failure> {
    if sources.is_empty() {
        return Err(Failure::general("no component could be backed up"));
    }
    let essential: HashSet<String> = sources
        .iter()
        .map(|s| s.name.clone())
        .filter(|name| {
            components
                .iter()
                .any(|c| c.essential_for_recovery && sources::is_source_of(name, &c.name))
        })
        .collect();
    let opts = BackupOptions {
        sources,
        threads: 0,
        lock_wait: ctx.lock_wait,
        progress,
    };
    extras.essential = Some(essential);
    ibs_engine::backup_with(repo.clone(), state, opts, extras)
        .await
        .map_err(|e| Failure::from_engine(&e))
}

/// Stage 4: post-hooks of every component whose pre-hook ran; a failing one makes a succeeded
/// component partial.
async fn post_hooks(job: &mut Job, components: &[Component], hooked: &[usize]) {
    for &i in hooked {
        let c = &components[i];
        if let Some(h) = &c.post_hook {
            if let Err(e) = run_hook(
                "post hook",
                h,
                c.hook_timeout,
                sources::hook_env(&c.name, &job.id),
            )
            .await
            {
                let r = &mut job.components[i];
                r.message = Some(e);
                if r.status == JobStatus::Succeeded || r.status == JobStatus::Running {
                    r.status = JobStatus::PartialSucceeded;
                }
            }
        }
    }
}
