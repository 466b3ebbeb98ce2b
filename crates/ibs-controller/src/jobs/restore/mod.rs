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
use crate::model::{Job, JobErrorCode, JobOutcome, JobProgress, JobStatus};
use crate::stop::{settle, JobStop};
use crate::Result;
use ibs_engine::{CancelToken, Progress, RestoreOptions};
use ibs_repo::keyring::Unlock;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod prepare;
use prepare::Prepared;
pub(crate) use prepare::{new_job, preflight, prepare};
pub use prepare::{PfxKey, RestoreRequest};

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
