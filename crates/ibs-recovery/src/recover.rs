//! `recover`: rebuild every planned component from one backup, verify it, then adopt the repository.
//!
//! Order of work: the version rule first (a backup from a newer build is refused unless
//! `allow_newer`, [`crate::preflight`]); then the keys are opened (a wrong .pfx fails before anything is written, naming
//! the certificate the backup needs and the one given); the plan is matched against the backup's
//! sources (a planned component the backup lacks is an error naming it; a backup component the plan
//! does not name is skipped with a note); then components restore in priority order:
//!
//! - `files`/`command`: each source through the engine into the target folder (one source directly
//!   into it, several into `TARGET/SOURCE`). The engine verifies every chunk it writes (hash and
//!   AEAD) and renames a file into place only when all its bytes verified; on top, the restored
//!   entry counts (files, folders: [`EntryCounts`], the one definition the backup counted with)
//!   and byte counts must equal the backup catalog's.
//! - database kinds: the stored export is restored to a scratch folder, its row counts are taken from
//!   the dump itself ([`ibs_sources::kinds::recovered`]: the controller's job records with the
//!   backup-time counts are gone), then the kind's own restore replays it into the target and
//!   compares the restored tables' row counts with the dump's.
//!
//! A component that fails (damaged pack, refused target) does not stop the others; a storage failure
//! (share unreachable, authentication) stops the run. Finally `keyops::adopt` writes the writer state,
//! so the next backup on this machine continues the deduplicated chain.

use crate::plan::{sources_of, Plan, Planned};
use crate::{RecoveryError, Result};
use ibs_engine::{keyops, EngineError, Progress, RestoreOptions};
use ibs_repo::ids::KeyId;
use ibs_repo::keyring::Unlock;
use ibs_repo::manifest::Catalog;
use ibs_repo::tree::EntryCounts;
use ibs_repo::Repository;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct RecoverOptions {
    pub catalog: Catalog,
    pub plan: Plan,
    /// The writer state root to adopt into.
    pub state_root: PathBuf,
    pub lock_wait: Duration,
    pub progress: Arc<Progress>,
    /// Recover a backup written by a newer ibs version or format revision (refused otherwise,
    /// see [`crate::preflight`]).
    pub allow_newer: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Restored,
    Failed,
}

/// What happened to one component.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentReport {
    pub name: String,
    pub kind: String,
    pub target: String,
    pub sources: Vec<String>,
    pub outcome: Outcome,
    /// What was restored (files and folders, or the databases and tables).
    pub restored: String,
    pub files: u64,
    pub bytes: u64,
    pub duration_ms: u64,
    pub verified: bool,
    /// How it was verified, or why it failed.
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecoverReport {
    pub repository_id: String,
    pub backup_id: String,
    pub backup_finished: String,
    pub components: Vec<ComponentReport>,
    /// Components in the backup that the plan does not name (not restored).
    pub skipped: Vec<String>,
    pub adopted_state: Option<String>,
    pub duration_ms: u64,
}

impl RecoverReport {
    pub fn all_restored(&self) -> bool {
        self.components
            .iter()
            .all(|c| c.outcome == Outcome::Restored)
    }
}

/// Opens the keys a restore of `catalog` needs: the repository keys and the backup's data key.
pub async fn open_keys(repo: &Repository, unlock: &Unlock, catalog: &Catalog) -> Result<()> {
    repo.open_repo_keys(unlock).await?;
    repo.open_data_key(
        &KeyId::from_hex(&catalog.data_key_id)?,
        unlock,
        catalog.certificate_thumbprint.as_deref(),
    )
    .await?;
    Ok(())
}

/// Planned components with their sources, in restore order.
pub type Matched<'a> = Vec<(&'a Planned, Vec<String>)>;

/// Matches the plan with the backup's sources: `(planned, its sources)` in restore order, and the
/// names of components in the backup that the plan leaves out.
pub fn match_plan<'a>(plan: &'a Plan, catalog: &Catalog) -> Result<(Matched<'a>, Vec<String>)> {
    let all: Vec<String> = catalog.sources.iter().map(|s| s.name.clone()).collect();
    let names: Vec<&str> = plan.components.iter().map(|p| p.name.as_str()).collect();
    let mut matched = Vec::new();
    let mut missing = Vec::new();
    for p in &plan.components {
        let s = sources_of(&p.name, &all, &names);
        if s.is_empty() {
            missing.push(p.name.clone());
        }
        matched.push((p, s));
    }
    if !missing.is_empty() {
        return Err(RecoveryError::MissingComponent {
            backup: catalog.backup_id.clone(),
            missing: missing.join(", "),
            holds: all.join(", "),
        });
    }
    let mut skipped: Vec<String> = Vec::new();
    for s in &all {
        if !matched.iter().any(|(_, m)| m.contains(s)) {
            let base = crate::plan::base_name(s).to_string();
            if !skipped.contains(&base) {
                skipped.push(base);
            }
        }
    }
    Ok((matched, skipped))
}

/// What every source restore of one recover or validate run shares.
pub(crate) struct RestoreRun<'a> {
    pub lock_wait: Duration,
    pub progress: &'a Arc<Progress>,
    /// Stops the run at the next file (validation jobs; `ibs recover` runs to the end).
    pub cancel: Option<&'a ibs_engine::CancelToken>,
}

impl<'a> RestoreRun<'a> {
    fn of(opts: &'a RecoverOptions) -> Self {
        Self {
            lock_wait: opts.lock_wait,
            progress: &opts.progress,
            cancel: None,
        }
    }
}

/// Restores one source of a backup into `dest`. A storage failure or a cancel is returned as
/// `Err`; anything else (damaged data, unwritable target) as `Ok(Err(message))`.
pub(crate) async fn restore_source(
    repo: &Arc<Repository>,
    unlock: &Arc<Unlock>,
    backup_id: &str,
    source: Option<&str>,
    dest: &Path,
    run: &RestoreRun<'_>,
) -> Result<std::result::Result<ibs_engine::RestoreReport, String>> {
    let opts = RestoreOptions {
        backup_id: backup_id.into(),
        target: dest.to_path_buf(),
        source: source.map(String::from),
        threads: 0,
        progress: run.progress.clone(),
        lock_wait: run.lock_wait,
        cancel: run.cancel.cloned(),
    };
    match ibs_engine::restore(repo.clone(), unlock.clone(), opts).await {
        Ok(r) => Ok(Ok(r)),
        Err(e) if e.storage_class().is_some() => Err(e.into()),
        Err(e @ EngineError::Cancelled) => Err(e.into()),
        Err(e @ EngineError::Repo(ibs_repo::RepoError::Locked { .. })) => Err(e.into()),
        Err(e) => Ok(Err(e.to_string())),
    }
}

/// Compares a source's restore with the catalog's figures.
pub(crate) fn verify_counts(
    catalog: &Catalog,
    source: &str,
    r: &ibs_engine::RestoreReport,
) -> std::result::Result<(), String> {
    if !r.errors.is_empty() {
        return Err(format!(
            "{} file(s) failed: {}",
            r.errors.len(),
            r.errors
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    let Some(s) = catalog.sources.iter().find(|s| s.name == source) else {
        return Err(format!("source {source} is not in the catalog"));
    };
    // Both sides count with `EntryCounts`: the backup as it wrote the tree, the restore as it put
    // entries in place.
    let recorded = EntryCounts {
        files: s.files,
        dirs: s.dirs,
    };
    if recorded != r.entries || s.bytes != r.bytes {
        return Err(format!(
            "source {source}: the backup recorded {} files, {} folders / {} bytes; {} files, {} folders / {} bytes were restored",
            s.files, s.dirs, s.bytes, r.entries.files, r.entries.dirs, r.bytes
        ));
    }
    Ok(())
}

pub async fn recover(
    repo: Arc<Repository>,
    unlock: Arc<Unlock>,
    opts: RecoverOptions,
) -> Result<RecoverReport> {
    let started = Instant::now();
    let cat = &opts.catalog;
    crate::preflight::check_versions(cat, opts.allow_newer)?;
    open_keys(&repo, &unlock, cat).await?;
    let (matched, skipped) = match_plan(&opts.plan, cat)?;
    std::fs::create_dir_all(&opts.state_root)
        .map_err(RecoveryError::io(opts.state_root.display().to_string()))?;
    let scratch = tempfile::Builder::new()
        .prefix(".ibs-recover-")
        .tempdir_in(&opts.state_root)
        .map_err(RecoveryError::io("scratch folder"))?;
    let mut components = Vec::new();
    for (p, sources) in matched {
        let t0 = Instant::now();
        let mut rep = ComponentReport {
            name: p.name.clone(),
            kind: p.kind.clone(),
            target: p.target.clone(),
            sources: sources.clone(),
            outcome: Outcome::Failed,
            restored: String::new(),
            files: 0,
            bytes: 0,
            duration_ms: 0,
            verified: false,
            detail: String::new(),
        };
        let r = match &p.service {
            None => restore_files(&repo, &unlock, cat, p, &sources, &opts, &mut rep).await?,
            Some(c) => {
                let staged = scratch.path().join(&p.name);
                let r = restore_service(
                    &repo, &unlock, cat, c, &p.target, &sources, &staged, &opts, &mut rep,
                )
                .await?;
                let _ = std::fs::remove_dir_all(&staged);
                r
            }
        };
        match r {
            Ok(()) => {
                rep.outcome = Outcome::Restored;
                rep.verified = true;
            }
            Err(e) => rep.detail = e,
        }
        rep.duration_ms = t0.elapsed().as_millis() as u64;
        components.push(rep);
    }
    drop(scratch);
    let state = keyops::adopt(&repo, &unlock, &opts.state_root).await?;
    Ok(RecoverReport {
        repository_id: repo.config().id.to_string(),
        backup_id: cat.backup_id.clone(),
        backup_finished: cat.finished.clone(),
        components,
        skipped,
        adopted_state: Some(state.dir.display().to_string()),
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

async fn restore_files(
    repo: &Arc<Repository>,
    unlock: &Arc<Unlock>,
    cat: &Catalog,
    p: &Planned,
    sources: &[String],
    opts: &RecoverOptions,
    rep: &mut ComponentReport,
) -> Result<std::result::Result<(), String>> {
    let base = PathBuf::from(&p.target);
    let (mut dirs, mut links, mut hardlinks, mut specials) = (0, 0, 0, 0);
    let mut warnings = Vec::new();
    for s in sources {
        let dest = if sources.len() == 1 {
            base.clone()
        } else {
            base.join(s)
        };
        let r = match restore_source(
            repo,
            unlock,
            &cat.backup_id,
            Some(s),
            &dest,
            &RestoreRun::of(opts),
        )
        .await?
        {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        rep.files += r.entries.files;
        rep.bytes += r.bytes;
        dirs += r.dirs;
        links += r.symlinks;
        hardlinks += r.hardlinks;
        specials += r.specials;
        warnings.extend(r.warnings.iter().cloned());
        if let Err(e) = verify_counts(cat, s, &r) {
            return Ok(Err(e));
        }
    }
    rep.restored = format!(
        "{} files ({} symlinks, {} hard links, {} FIFOs/devices), {} folders",
        rep.files, links, hardlinks, specials, dirs
    );
    if !warnings.is_empty() {
        rep.restored.push_str(&format!(
            "; {} metadata warnings: {}",
            warnings.len(),
            warnings
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    rep.detail = "every chunk hash-verified; file and byte counts match the backup catalog".into();
    Ok(Ok(()))
}

#[allow(clippy::too_many_arguments)]
async fn restore_service(
    repo: &Arc<Repository>,
    unlock: &Arc<Unlock>,
    cat: &Catalog,
    c: &ibs_sources::component::Component,
    target: &str,
    sources: &[String],
    staged: &Path,
    opts: &RecoverOptions,
    rep: &mut ComponentReport,
) -> Result<std::result::Result<(), String>> {
    for s in sources {
        let r = match restore_source(
            repo,
            unlock,
            &cat.backup_id,
            Some(s),
            &staged.join(s),
            &RestoreRun::of(opts),
        )
        .await?
        {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        rep.files += r.entries.files;
        rep.bytes += r.bytes;
        if let Err(e) = verify_counts(cat, s, &r) {
            return Ok(Err(e));
        }
    }
    let (c, sources, staged, target) = (
        c.clone(),
        sources.to_vec(),
        staged.to_path_buf(),
        target.to_string(),
    );
    let r = tokio::task::spawn_blocking(move || service_restore(&c, &sources, &staged, &target))
        .await
        .map_err(RecoveryError::task("restore task"))?;
    Ok(r.map(|summary| {
        rep.restored = summary;
        rep.detail =
            "stored export hash-verified; restored row counts match the dump's own counts".into();
    }))
}

/// Rebuilds the export records from the staged dumps and runs the kind's restore and verification.
pub(crate) fn service_restore(
    c: &ibs_sources::component::Component,
    sources: &[String],
    staged: &Path,
    target: &str,
) -> std::result::Result<String, String> {
    use ibs_sources::{kinds, mapping};
    let exports = mapping::exports_from_staged(c, sources, staged).map_err(|e| e.to_string())?;
    mapping::restore(
        c,
        &exports,
        staged,
        &kinds::RestoreTarget {
            target: target.into(),
            force: false,
        },
    )
    .map_err(|e| e.to_string())
}
