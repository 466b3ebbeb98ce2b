//! Before a restore job exists: the request ([`RestoreRequest`], whose `Debug` shows no secret),
//! its checks against the backup and the target ([`prepare`], bad input fails here), the
//! preflight against the live server of a service component ([`preflight`]), and the job record
//! it starts as ([`new_job`]).

use crate::component::ComponentKind;
use crate::context::JobContext;
use crate::model::{ComponentResult, Job, JobKind, JobStatus, Trigger};
use crate::{ControllerError, Result};
use ibs_keys::PrivateIdentity;
use std::path::{Path, PathBuf};

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
    pub(super) components: Vec<ComponentResult>,
    pub(super) identities: Vec<PrivateIdentity>,
    pub(super) target: PathBuf,
    /// One component, restored into the target itself.
    pub(super) single: bool,
    pub(super) force: bool,
    pub(super) allow_newer: bool,
    /// Warnings given before the job starts ([`preflight`]), kept on the job record.
    pub(super) warnings: Vec<String>,
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
    let mut identities = vec![crate::jobs::open_pfx(
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
