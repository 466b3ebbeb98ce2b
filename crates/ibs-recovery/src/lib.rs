//! Cloud recovery and backup validation.
//!
//! On the worst day the controller, its state and its host are gone; what remains is the share, its
//! credentials, the .pfx and its password. This crate rebuilds a system from those alone and proves,
//! before that day, that a backup will restore:
//!
//! - [`plan`]: the recovery plan file (TOML `[[component]]` tables mapping each component to a
//!   target folder or database URL), and which engine sources belong to which component.
//! - [`preflight`]: the version-mismatch rule and older-server warnings, before anything is written.
//! - [`recover`]: lists the backups (no key needed), picks one, restores every planned component in
//!   priority order, verifies each, and adopts the repository so the next backup continues the
//!   deduplicated chain.
//! - [`validate`]: restores a backup into a scratch area and temporary databases, checks every chunk,
//!   and writes a JSON and a self-contained HTML report ([`html`]); everything temporary is removed
//!   by RAII guards, even on failure.
//!
//! The component kinds (validation, restore, verification) come from `ibs-sources`. The controller
//! depends on this crate and runs [`validate`] as a job (`POST /api/v1/backups/{id}/validate`), its
//! database targets taken from its configured components ([`plan::Plan::from_components`]).
//!
//! The library takes an opened [`Repository`] and an [`Unlock`](ibs_repo::keyring::Unlock):
//! opening a location (local folder or SMB share) and reading secrets stay in the binary.

pub mod html;
pub mod plan;
pub mod preflight;
pub mod recover;
pub mod validate;

use ibs_engine::EngineError;
use ibs_repo::manifest::Catalog;
use ibs_repo::{RepoError, Repository};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("recovery plan {path}: {detail}")]
    Plan { path: String, detail: String },
    #[error("backup {id} is not in the repository; nearby backups: {nearby}")]
    NoSuchBackup { id: String, nearby: String },
    #[error("no backup in the repository is recovery-ready ({count} backups); pass --backup ID to recover a backup that is not")]
    NoReadyBackup { count: usize },
    #[error("the plan names component(s) that backup {backup} does not hold: {missing} (it holds sources: {holds})")]
    MissingComponent {
        backup: String,
        missing: String,
        holds: String,
    },
    /// The backup was written by a newer ibs version or format revision, and the override was
    /// not given.
    #[error(transparent)]
    NewerBackup(ibs_engine::provenance::NewerBackup),
    #[error("backup {id} is damaged: its manifest cannot be read")]
    Damaged { id: String },
    /// A local file or folder (scratch space, state, reports) could not be made or written.
    #[error("{context}: {cause}")]
    Io {
        context: String,
        cause: std::io::Error,
    },
    #[error("{0}")]
    Report(serde_json::Error),
    /// A worker task failed (panicked or was aborted).
    #[error("{task}: {cause}")]
    Task {
        task: &'static str,
        cause: tokio::task::JoinError,
    },
}

impl RecoveryError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RecoveryError {
        let context = context.into();
        move |cause| RecoveryError::Io { context, cause }
    }

    pub(crate) fn task(task: &'static str) -> impl FnOnce(tokio::task::JoinError) -> RecoveryError {
        move |cause| RecoveryError::Task { task, cause }
    }
}

impl From<RepoError> for RecoveryError {
    fn from(e: RepoError) -> Self {
        RecoveryError::Engine(EngineError::Repo(e))
    }
}

impl From<ibs_storage::StorageError> for RecoveryError {
    fn from(e: ibs_storage::StorageError) -> Self {
        RecoveryError::Engine(e.into())
    }
}

pub type Result<T, E = RecoveryError> = std::result::Result<T, E>;

/// One backup as listed with no key: from its cleartext catalog.
#[derive(Debug, Clone, Serialize)]
pub struct BackupRow {
    pub backup_id: String,
    pub finished: String,
    /// `Succeeded`, `PartialSucceeded`, `Failed`, or `Damaged` when the catalog cannot be read.
    pub status: String,
    pub sources: Vec<String>,
    pub recovery_ready: bool,
    pub certificate: Option<String>,
    #[serde(skip)]
    pub catalog: Option<Catalog>,
}

/// Lists every backup in the repository, oldest first, from the catalogs (needs no key).
pub async fn list_backups(repo: &Repository) -> Result<Vec<BackupRow>> {
    let mut rows = Vec::new();
    for id in repo.list_backup_ids().await? {
        rows.push(match repo.read_catalog(&id).await {
            Ok(c) => BackupRow {
                backup_id: id,
                finished: c.finished.clone(),
                status: format!("{:?}", c.status),
                sources: c.sources.iter().map(|s| s.name.clone()).collect(),
                recovery_ready: c.is_recovery_ready(),
                certificate: c.certificate_thumbprint.clone(),
                catalog: Some(c),
            },
            // Forgotten between the listing and the read: not in the repository any more.
            Err(e) if e.is_not_found() => continue,
            Err(RepoError::Storage(e)) => return Err(e.into()),
            Err(_) => BackupRow {
                backup_id: id,
                finished: String::new(),
                status: "Damaged".into(),
                sources: Vec::new(),
                recovery_ready: false,
                certificate: None,
                catalog: None,
            },
        });
    }
    // Oldest first by finishing time (ids of the same second sort by their random suffix).
    rows.sort_by(|a, b| (&a.finished, &a.backup_id).cmp(&(&b.finished, &b.backup_id)));
    Ok(rows)
}

/// The backup to work on: `wanted`, or the newest recovery-ready one. A missing id is an error
/// naming it and the ids around where it would sort.
pub fn choose_backup(rows: &[BackupRow], wanted: Option<&str>) -> Result<Catalog> {
    match wanted {
        Some(id) => match rows.iter().find(|r| r.backup_id == id) {
            Some(BackupRow {
                catalog: Some(c), ..
            }) => Ok(c.clone()),
            Some(_) => Err(RecoveryError::Damaged { id: id.into() }),
            None => Err(RecoveryError::NoSuchBackup {
                id: id.into(),
                nearby: nearby(rows, id),
            }),
        },
        None => rows
            .iter()
            .rev()
            .filter(|r| r.recovery_ready)
            .find_map(|r| r.catalog.clone())
            .ok_or(RecoveryError::NoReadyBackup { count: rows.len() }),
    }
}

/// The catalog of backup `id`, read from the repository (no key needed): [`list_backups`] then
/// [`choose_backup`], so a missing id is [`RecoveryError::NoSuchBackup`] naming the ids nearby.
pub async fn find_backup(repo: &Repository, id: &str) -> Result<Catalog> {
    choose_backup(&list_backups(repo).await?, Some(id))
}

/// Up to three ids on each side of where `id` would sort.
fn nearby(rows: &[BackupRow], id: &str) -> String {
    if rows.is_empty() {
        return "none (the repository holds no backups)".into();
    }
    let mut ids: Vec<&str> = rows.iter().map(|r| r.backup_id.as_str()).collect();
    ids.sort_unstable();
    let at = ids.partition_point(|r| *r < id);
    let from = at.saturating_sub(3);
    let to = (at + 3).min(ids.len());
    ids[from..to].join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, ready: bool) -> BackupRow {
        BackupRow {
            backup_id: id.into(),
            finished: String::new(),
            status: "Succeeded".into(),
            sources: vec![],
            recovery_ready: ready,
            certificate: None,
            catalog: None,
        }
    }

    #[test]
    fn missing_id_lists_neighbours() {
        let rows: Vec<_> = ["a1", "a2", "a3", "b1", "b2", "b3", "b4"]
            .iter()
            .map(|i| row(i, true))
            .collect();
        let e = choose_backup(&rows, Some("b0")).unwrap_err().to_string();
        assert!(
            e.contains("b0") && e.contains("a1, a2, a3, b1, b2, b3"),
            "{e}"
        );
        assert!(nearby(&[], "x").contains("no backups"));
    }
}
