//! Executes a restore job: a whole backup or one component, into a target folder. The .pfx files
//! and their passwords arrive in the request (several after a certificate rotation: a backup from
//! before it needs the old certificate's), are parsed into private identities in memory, and are
//! dropped when the job ends: they are never stored, logged or put in the job record.
//!
//! Where things go: with `component`, a `files` component with one path is restored directly into
//! the target (several paths: `TARGET/NAME-n`); without it, each `files` component goes to
//! `TARGET/NAME`. A `command` component's stored stream is restored to a temporary folder under
//! `DATA/tmp` and piped into its `restore` command (`sh -c`, with `IBS_RESTORE_TARGET` set to the
//! target); the temporary copy is removed afterwards.
//!
//! A service component (`postgres`, `mariadb`, `redis`, `sqlite`) restored on its own
//! (`component` given) goes into the target its kind names — a database URL, a Redis data folder,
//! a SQLite file path — never into other components: its exports are restored under `DATA/tmp`,
//! fed to the server's client, and verified (row or key counts against those recorded at backup
//! time); see [`crate::kinds`]. A non-empty target is refused unless `force`. In a whole-backup
//! restore, service components are restored as their export files under `TARGET/NAME`.

use crate::component::ComponentKind;
use crate::context::{Failure, JobContext};
use crate::model::{
    ComponentResult, Job, JobErrorCode, JobKind, JobOutcome, JobProgress, JobStatus, Trigger,
};
use crate::stop::{settle, JobStop};
use crate::{ControllerError, Result};
use ibs_engine::{CancelToken, Progress, RestoreOptions};
use ibs_keys::PrivateIdentity;
use ibs_repo::keyring::Unlock;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A further .pfx and its password. `Debug` shows neither.
pub struct PfxKey {
    pub pfx: Vec<u8>,
    pub password: String,
}

impl std::fmt::Debug for PfxKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PfxKey(..)")
    }
}

/// A restore request. `Debug` never shows a .pfx or its password.
pub struct RestoreRequest {
    pub component: Option<String>,
    /// A folder; for one service component: a database URL (postgres, mariadb), a Redis data
    /// folder or a SQLite file path.
    pub target: PathBuf,
    /// Replace a non-empty service target (drop and recreate the database, overwrite the file).
    pub force: bool,
    pub pfx: Vec<u8>,
    pub pfx_password: String,
    /// Further .pfx files, each with its own password: every data key a backup needs is opened
    /// with whichever of them it is wrapped for.
    pub more_keys: Vec<PfxKey>,
    /// Restore a backup written by a newer ibs version or format revision (refused otherwise;
    /// see [`ibs_engine::provenance`]).
    pub allow_newer: bool,
}

impl std::fmt::Debug for RestoreRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreRequest")
            .field("component", &self.component)
            .field("target", &self.target)
            .field("force", &self.force)
            .field("allow_newer", &self.allow_newer)
            .field("pfx_count", &(1 + self.more_keys.len()))
            .finish_non_exhaustive()
    }
}

/// A validated restore, ready to run: what [`prepare`] accepted.
pub(crate) struct Prepared {
    /// The components to restore (as the backup recorded them).
    components: Vec<ComponentResult>,
    identities: Vec<PrivateIdentity>,
    target: PathBuf,
    /// One component, restored into the target itself.
    single: bool,
    force: bool,
    allow_newer: bool,
    /// Warnings given before the job starts ([`preflight`]), kept on the job record.
    warnings: Vec<String>,
}

impl Prepared {
    /// The target, as the audit log names it.
    pub fn target(&self) -> &Path {
        &self.target
    }
}

/// Checks a restore request against backup job `backup` (found by `id`): the backup is
/// restorable, the component exists in it, the target suits the component, the .pfx files open.
/// Bad input fails here, before a job is created.
pub(crate) fn prepare(
    ctx: &JobContext,
    id: &str,
    backup: &Job,
    req: RestoreRequest,
) -> Result<Prepared> {
    if !matches!(
        backup.status,
        JobStatus::Succeeded | JobStatus::PartialSucceeded
    ) || backup.backup_id.is_none()
    {
        return Err(ControllerError::conflict(format!(
            "backup {id} is {} and cannot be restored",
            backup.status.as_str()
        )));
    }
    if backup.deleted_at.is_some() {
        return Err(ControllerError::conflict(format!(
            "backup {id} was deleted by retention"
        )));
    }
    let comps: Vec<ComponentResult> = backup
        .components
        .iter()
        .filter(|c| matches!(c.status, JobStatus::Succeeded | JobStatus::PartialSucceeded))
        .filter(|c| req.component.as_deref().is_none_or(|n| n == c.name))
        .cloned()
        .collect();
    if let Some(n) = &req.component {
        if comps.is_empty() {
            let names: Vec<_> = backup.components.iter().map(|c| c.name.as_str()).collect();
            return Err(ControllerError::invalid(
                "component",
                format!(
                    "backup {id} has no restorable component {n:?} (it has: {})",
                    names.join(", ")
                ),
            ));
        }
    }
    let service = match &req.component {
        Some(n) => ctx
            .components()?
            .into_iter()
            .find(|c| &c.name == n && c.kind.is_service()),
        None => None,
    };
    let url_target = match &service {
        Some(c) => match &c.kind {
            ComponentKind::Postgres(_) => Some(crate::kinds::postgres::SCHEMES),
            ComponentKind::Mariadb(_) => Some(crate::kinds::mariadb::SCHEMES),
            _ => None,
        },
        None => None,
    };
    match url_target {
        Some(schemes) => {
            let t = req.target.to_str().unwrap_or("");
            let target = crate::kinds::ConnUrl::parse(t, schemes)
                .map_err(|e| ControllerError::invalid("target", e))?;
            if let Some(c) = &service {
                crate::component_api::check_restore_target(c, &target)?;
            }
        }
        None if !req.target.is_absolute() => {
            return Err(ControllerError::invalid(
                "target",
                if service.is_some() {
                    "must be an absolute path"
                } else {
                    "must be an absolute folder path"
                },
            ));
        }
        None => crate::restore_roots::check(&ctx.restore_roots, &req.target)?,
    }
    let mut identities = vec![super::open_pfx(
        &req.pfx,
        &req.pfx_password,
        "pfx",
        "pfx_password",
    )?];
    for (i, k) in req.more_keys.iter().enumerate() {
        identities.push(PrivateIdentity::from_pfx(&k.pfx, &k.password).map_err(|e| {
            ControllerError::invalid("more_pfx", format!(".pfx {} of more_pfx: {e}", i + 1))
        })?);
    }
    Ok(Prepared {
        components: comps,
        identities,
        single: req.component.is_some(),
        force: req.force,
        allow_newer: req.allow_newer,
        target: req.target,
        warnings: Vec::new(),
    })
}

/// The checks that need the repository, before a job is created: the version-mismatch rule on
/// the backup's catalog ([`ibs_engine::provenance::check_not_newer`]: a backup from a newer build
/// is refused with 409 unless `allow_newer`), and, for one database component restored into a
/// server, whether that server's major version is older than the one backed up (a warning). The
/// warnings are logged here and kept on the job. A repository that cannot be opened is left to
/// the job, which fails with the storage alert class as before. The catalog read here is not
/// authenticated: an edited one can only cause a refusal (overridable); the restore itself opens
/// the backup's tree part, which authenticates the catalog, and fails if it was changed.
pub(crate) async fn preflight(ctx: &JobContext, backup: &Job, p: &mut Prepared) -> Result<()> {
    let Some(backup_id) = backup.backup_id.as_deref() else {
        return Ok(());
    };
    let repo = match ctx.open_repository_read().await {
        Ok(r) => r,
        Err(f) => {
            tracing::debug!(
                "restore preflight: repository not opened ({}); the job will report it",
                f.message
            );
            return Ok(());
        }
    };
    let catalog = match repo.read_catalog(backup_id).await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(
                "restore preflight: catalog of {backup_id}: {e}; the job will report it"
            );
            return Ok(());
        }
    };
    match ibs_engine::provenance::check_not_newer(&catalog, p.allow_newer) {
        Ok(Some(w)) => p.warnings.push(w),
        Ok(None) => {}
        Err(e) => {
            return Err(ControllerError::Conflict {
                message: e.to_string(),
                details: Some(serde_json::json!({
                    "backup": backup.id,
                    "written_by": e.written,
                    "this_build": e.running,
                    "override": "allow_newer",
                })),
            })
        }
    }
    if p.single {
        let older = older_server_warning(ctx, &catalog, p).await;
        p.warnings.extend(older);
    }
    for w in &p.warnings {
        tracing::warn!("restore of backup {}: {w}", backup.id);
    }
    Ok(())
}

/// The older-server warning of the one database component `p` restores, if its target server's
/// major version is older than the one the backup recorded. A target that cannot be asked is
/// left to the restore, which reports it.
async fn older_server_warning(
    ctx: &JobContext,
    catalog: &ibs_repo::manifest::Catalog,
    p: &Prepared,
) -> Option<String> {
    let c = p.components.first()?;
    let recorded = ibs_engine::provenance::Provenance::of(catalog);
    let backed_up = c
        .sources
        .iter()
        .find_map(|s| recorded.server_version(s))?
        .to_string();
    let comp = ctx
        .components()
        .ok()?
        .into_iter()
        .find(|x| x.name == c.name && x.kind.name() == c.kind)?;
    let target = p.target.to_string_lossy().into_owned();
    let asked = tokio::task::spawn_blocking(move || {
        ibs_sources::mapping::target_server_version(&comp, &target)
    })
    .await
    .ok()??;
    match asked {
        Ok(v) => {
            ibs_sources::kinds::version::older_server_warning(&c.name, &c.kind, &backed_up, &v)
        }
        Err(e) => {
            tracing::debug!("restore preflight: server version of the target: {e}");
            None
        }
    }
}

/// The Running record of restore job `job_id` for backup job `backup`.
pub(crate) fn new_job(job_id: String, backup: &Job, p: &Prepared, now: i64) -> Job {
    let mut job = Job::new(
        job_id,
        JobKind::Restore,
        Trigger::OnDemand,
        JobStatus::Running,
        now,
    );
    job.started_at = Some(now);
    job.source_job = Some(backup.id.clone());
    job.warnings = p.warnings.clone();
    job.backup_id = backup.backup_id.clone();
    job.components = p
        .components
        .iter()
        .map(|c| ComponentResult {
            status: JobStatus::Running,
            message: None,
            ..c.clone()
        })
        .collect();
    job
}

/// Runs restore job `job` (recorded as Running by the caller) and records how it ended. The
/// private identities are dropped when it returns.
/// A cancel or the job timeout ([`JobStop`]) stops it at the next file or component; the whole
/// files already restored stay, which the job's error says.
pub(crate) async fn run(
    ctx: &JobContext,
    mut job: Job,
    mut p: Prepared,
    progress: Arc<Progress>,
    stop: Arc<JobStop>,
) {
    let began = std::time::Instant::now();
    let unlock = Arc::new(Unlock::Identities(std::mem::take(&mut p.identities)));
    let outcome = execute(ctx, &mut job, unlock, &p, progress.clone(), stop.token()).await;
    // For a restore, `bytes_read` is what it read back out of the repository: the bytes restored.
    // The final counts stay on the record, so a client can say how many files it restored.
    let done = progress.snapshot();
    job.bytes_read = done.bytes_done;
    job.progress = Some(JobProgress {
        bytes_done: done.bytes_done,
        bytes_total: done.bytes_total,
        files_done: done.files_done,
        files_total: done.files_total,
        percent: done.percent(),
        eta_seconds: None,
    });
    job.finished_at = Some(ctx.now());
    job.duration_ms = Some(crate::model::elapsed_ms(began));
    match outcome {
        Err(f) => {
            job.status = JobStatus::Failed;
            // A refusal (`error_code` set by `execute`) is no storage fault: no alert class.
            if job.error_code.is_none() {
                job.alert_class = Some(f.class.as_str().into());
            }
            job.error = Some(f.message);
            for c in &mut job.components {
                if !c.status.is_final() {
                    c.status = JobStatus::Failed;
                }
            }
        }
        Ok(()) => job.status = JobStatus::roll_up(job.components.iter().map(|c| c.status)),
    }
    settle(
        &stop,
        &mut job,
        "; files restored before the stop remain in the target (each whole), later ones were not \
         written",
    );
    if let Err(e) = ctx.db.put_job(&job) {
        tracing::error!("recording restore job {}: {e}", job.id);
    }
    tracing::debug!("restore job {} ended {}", job.id, job.status.as_str());
}

async fn execute(
    ctx: &JobContext,
    job: &mut Job,
    unlock: Arc<Unlock>,
    p: &Prepared,
    progress: Arc<Progress>,
    cancel: &CancelToken,
) -> Result<(), Failure> {
    let (target, single, force) = (p.target.as_path(), p.single, p.force);
    let (repo, _state) = ctx.open_repository(false).await?;
    let backup_id = job.backup_id.clone().unwrap_or_default();
    let configured = ctx.components().unwrap_or_default();
    let tmp_root = ctx.tmp_dir(&job.id);
    // Restored as files into the target: (component index, source, destination).
    let file_dests: Vec<(usize, String, PathBuf)> = job
        .components
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            let service = configured
                .iter()
                .any(|x| x.name == c.name && x.kind.is_service() && x.kind.name() == c.kind);
            // As the loop below decides: not a command, and not one service component alone.
            c.kind != "command" && !(single && (service || c.kind != "files"))
        })
        .flat_map(|(i, c)| {
            let base = if single {
                target.to_path_buf()
            } else {
                target.join(&c.name)
            };
            let one = c.sources.len() == 1;
            c.sources.iter().map(move |s| {
                let dest = if one { base.clone() } else { base.join(s) };
                (i, s.clone(), dest)
            })
        })
        .collect();
    // Without `force`, nothing is written when a file at the target differs from the backup's.
    if !force {
        for (_, s, dest) in &file_dests {
            let opts = RestoreOptions {
                backup_id: backup_id.clone(),
                target: dest.clone(),
                source: Some(s.clone()),
                threads: 0,
                progress: progress.clone(),
                lock_wait: ctx.lock_wait,
                cancel: Some(cancel.clone()),
            };
            let found = ibs_engine::restore::conflicts(repo.clone(), unlock.clone(), &opts, 1)
                .await
                .map_err(|e| Failure::from_engine(&e))?;
            if let Some(p) = found.first() {
                job.error_code = Some(JobErrorCode::Conflict);
                return Err(Failure::general(format!(
                    "{} exists and differs from the backup's; nothing was restored (restore with \
                     --overwrite to replace such files, or into an empty folder)",
                    p.display()
                )));
            }
        }
    }
    for i in 0..job.components.len() {
        if cancel.is_cancelled() {
            break;
        }
        let c = job.components[i].clone();
        let base = if single {
            target.to_path_buf()
        } else {
            target.join(&c.name)
        };
        let restore_one = |source: &str, dest: PathBuf| RestoreOptions {
            backup_id: backup_id.clone(),
            target: dest,
            source: Some(source.to_string()),
            threads: 0,
            progress: progress.clone(),
            lock_wait: ctx.lock_wait,
            cancel: Some(cancel.clone()),
        };
        let service = configured
            .iter()
            .find(|x| x.name == c.name && x.kind.is_service() && x.kind.name() == c.kind);
        let result: Result<(), String> = if let (true, Some(comp)) = (single, service) {
            let staged = tmp_root.join(&c.name);
            let mut r = Ok(());
            for s in &c.sources {
                match ibs_engine::restore(
                    repo.clone(),
                    unlock.clone(),
                    restore_one(s, staged.join(s)),
                )
                .await
                {
                    Err(e) => {
                        if let Some(class) = e.storage_class() {
                            let _ = std::fs::remove_dir_all(&tmp_root);
                            return Err(Failure {
                                class,
                                message: e.to_string(),
                            });
                        }
                        r = Err(e.to_string());
                        break;
                    }
                    Ok(rep) if !rep.errors.is_empty() => {
                        r = Err(rep.errors.join("; "));
                        break;
                    }
                    Ok(_) => {}
                }
            }
            let t = crate::kinds::RestoreTarget {
                target: target.to_string_lossy().into_owned(),
                force,
            };
            let r = r.and_then(|()| {
                crate::kinds::restore(comp, &c.exports, &staged, &t).map_err(|e| {
                    job.components[i].cause = Some(e.cause);
                    e.to_string()
                })
            });
            let _ = std::fs::remove_dir_all(&staged);
            match r {
                Ok(summary) => {
                    job.components[i].message = Some(summary);
                    Ok(())
                }
                Err(e) => Err(e),
            }
        } else if single && c.kind != "files" && c.kind != "command" {
            Err(format!(
                "component {} ({}) is no longer configured: its settings are needed to restore it",
                c.name, c.kind
            ))
        } else if c.kind == "command" {
            let cmd = configured
                .iter()
                .find(|x| x.name == c.name)
                .and_then(|x| match &x.kind {
                    ComponentKind::Command { restore, .. } => restore.clone(),
                    _ => None,
                });
            match cmd {
                None => Err(format!(
                    "component {} has no restore command configured",
                    c.name
                )),
                Some(cmd) => {
                    let dir = tmp_root.join(&c.name);
                    let r = ibs_engine::restore(
                        repo.clone(),
                        unlock.clone(),
                        restore_one(&c.name, dir.clone()),
                    )
                    .await;
                    let r = match r {
                        Err(e) => Err(e.to_string()),
                        Ok(rep) if !rep.errors.is_empty() => Err(rep.errors.join("; ")),
                        Ok(_) => pipe_into(&dir, &format!("{}.out", c.name), &cmd, target).await,
                    };
                    let _ = std::fs::remove_dir_all(&dir);
                    r
                }
            }
        } else {
            let mut r = Ok(());
            for s in &c.sources {
                let dest = if c.sources.len() == 1 {
                    base.clone()
                } else {
                    base.join(s)
                };
                match ibs_engine::restore(repo.clone(), unlock.clone(), restore_one(s, dest)).await
                {
                    Err(e) => {
                        if let Some(class) = e.storage_class() {
                            return Err(Failure {
                                class,
                                message: e.to_string(),
                            });
                        }
                        r = Err(e.to_string());
                        break;
                    }
                    Ok(rep) if !rep.errors.is_empty() => {
                        r = Err(format!(
                            "{} file(s) failed: {}",
                            rep.errors.len(),
                            rep.errors.join("; ")
                        ))
                    }
                    Ok(rep) if !rep.warnings.is_empty() => {
                        // Restored, but some metadata was refused by the target: say which.
                        job.components[i].message = Some(format!(
                            "{} metadata warning(s): {}",
                            rep.warnings.len(),
                            rep.warnings
                                .iter()
                                .take(20)
                                .cloned()
                                .collect::<Vec<_>>()
                                .join("; ")
                        ))
                    }
                    Ok(_) => {}
                }
            }
            r
        };
        let rc = &mut job.components[i];
        match result {
            Ok(()) => rc.status = JobStatus::Succeeded,
            Err(m) => {
                rc.status = JobStatus::Failed;
                rc.message = Some(m);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&tmp_root);
    Ok(())
}

/// Finds the restored stream file under `dir` and pipes it into `sh -c cmd`.
async fn pipe_into(dir: &Path, file_name: &str, cmd: &str, target: &Path) -> Result<(), String> {
    let candidates = [dir.join(file_name), dir.to_path_buf()];
    let file = candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| format!("restored stream {file_name} not found"))?;
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("IBS_RESTORE_TARGET", target)
        .stdin(std::fs::File::open(&file).map_err(|e| e.to_string())?)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .map_err(|e| format!("cannot start the restore command: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("restore command exited with {status}"))
    }
}
