//! Operations over an ibs repository: backup, restore, check, forget, prune, key rotation and adopt.
//! The CLI and the controller compose these; they never touch repository objects directly.
//!
//! Concurrency model (ADR 0003): storage is async on tokio; CPU stages (chunking, hashing,
//! compression, sealing, restore writes) run on dedicated threads fed by bounded channels.

pub mod backup;
pub mod cache;
pub mod check;
pub mod chunker;
mod chunkread;
pub mod damage;
pub mod delta;
pub mod exclude;
pub mod fileio;
pub mod folders;
pub mod keyops;
pub mod keysel;
pub mod ledger;
mod packing;
pub mod progress;
pub mod prune;
pub mod restore;
pub mod retention;
mod special;
pub mod state;
pub mod status;
pub mod target;
pub mod walk;
mod walker;
pub mod xattrs;

pub use backup::{
    backup, backup_with, BackupExtras, BackupOptions, BackupReport, SourceOrigin, SourceSpec,
};
pub use progress::{Progress, ProgressSnapshot};
pub use restore::{restore, RestoreOptions, RestoreReport};
pub use state::WriterState;

use ibs_repo::RepoError;
use ibs_storage::{AlertClass, StorageError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("{0}")]
    Source(String),
    #[error("writer state: {0}")]
    State(String),
    #[error("{0}")]
    Restore(String),
    #[error("the operation was cancelled")]
    Cancelled,
    /// Prune refused: the storage listing lacks backups the caller's records say exist.
    #[error(
        "prune refused, nothing was deleted: the storage lists {listed} backups but not {} that this writer's records say exist ({}). The listing is incomplete (a store that lags, or a server or network path that hides objects), or the backups were removed outside this writer; see the operator guide, \"prune refused\"",
        missing.len(),
        missing.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
    )]
    ListingIncomplete { missing: Vec<String>, listed: usize },
    /// Prune refused: a listed manifest does not open.
    #[error("prune stopped: backup {backup} cannot be read ({cause}); nothing was deleted. Run `ibs repo check`")]
    ManifestUnreadable { backup: String, cause: String },
    /// Prune refused: backups reference chunks no listed index segment knows.
    #[error("prune refused, nothing was deleted: {backups} backups (first: {first}) reference chunks that no listed index segment knows; the index listing is incomplete or segments were lost. Run `ibs repo check`")]
    IndexIncomplete { backups: usize, first: String },
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StorageError> for EngineError {
    fn from(e: StorageError) -> Self {
        EngineError::Repo(RepoError::Storage(e))
    }
}

impl From<ibs_keys::KeyError> for EngineError {
    fn from(e: ibs_keys::KeyError) -> Self {
        EngineError::Repo(RepoError::Key(e))
    }
}

impl EngineError {
    /// The operator alert class, if this is a storage failure.
    pub fn storage_class(&self) -> Option<AlertClass> {
        match self {
            EngineError::Repo(RepoError::Storage(e)) => Some(e.class()),
            _ => None,
        }
    }
}
