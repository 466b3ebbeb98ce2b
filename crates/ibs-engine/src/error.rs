//! The engine's errors. Each failure is a variant a caller can match on, carrying the typed error of
//! the layer below (repository, key, I/O, task) where there is one.
//!
//! Messages are what operators read, through the CLI's one-line `{:#}` and the controller's job
//! and alert texts (`to_string`). So a variant's message already states its cause, and the cause
//! is kept as a typed field rather than as the `source()` of the error: printing the chain would
//! otherwise repeat it. Only [`EngineError::Repo`] is transparent, so storage and repository
//! errors stay reachable through the chain for exit codes and alert classes.

use ibs_repo::RepoError;
use ibs_storage::{AlertClass, StorageError};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// A backup source is wrongly specified or cannot be read.
    #[error(transparent)]
    Source(SourceError),
    /// The writer state (keys, certificate, files cache, ledger) is missing, unreadable or does
    /// not fit the repository.
    #[error("writer state: {0}")]
    State(StateError),
    /// A restore cannot go on.
    #[error(transparent)]
    Restore(RestoreError),
    #[error("{id} cannot be this backup's id: not a backup id, or a backup of that id exists")]
    BackupIdUnusable { id: String },

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
    ManifestUnreadable { backup: String, cause: RepoError },
    /// Prune refused: backups reference chunks no listed index segment knows.
    #[error("prune refused, nothing was deleted: {backups} backups (first: {first}) reference chunks that no listed index segment knows; the index listing is incomplete or segments were lost. Run `ibs repo check`")]
    IndexIncomplete { backups: usize, first: String },
    /// A worker task or thread of the engine failed (panicked or was aborted).
    #[error("internal error: {task}: {cause}")]
    Task {
        task: &'static str,
        cause: tokio::task::JoinError,
    },
    /// The thread walking a source tree panicked.
    #[error("internal error: the tree walker panicked")]
    WalkerPanicked,
    /// A certificate change (set-cert, rewrap) on object-lock storage: the config is a write-once
    /// object there (reads take its first version, ADR 0035), so a new version would be ignored.
    #[error("{op} refused: the repository is on object-lock storage, where the config is written once and a changed config would be ignored (ADR 0035); nothing was changed")]
    ConfigIsWriteOnce { op: &'static str },
    /// A failure of the calling layer surfacing through an engine callback (its message).
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

impl From<SourceError> for EngineError {
    fn from(e: SourceError) -> Self {
        EngineError::Source(e)
    }
}

impl From<StateError> for EngineError {
    fn from(e: StateError) -> Self {
        EngineError::State(e)
    }
}

impl From<RestoreError> for EngineError {
    fn from(e: RestoreError) -> Self {
        EngineError::Restore(e)
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

/// A backup source that is wrongly specified or cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    #[error("no source given")]
    NoSource,
    #[error("source name {name:?} is invalid: use 1-64 letters, digits, '.', '_' or '-', not starting with '.'")]
    InvalidName { name: String },
    #[error("source name {name:?} is given twice")]
    DuplicateName { name: String },
    #[error("exclude pattern {pattern:?}: {cause}")]
    BadExclude {
        pattern: String,
        cause: globset::Error,
    },
    #[error("exclude patterns: {0}")]
    Excludes(globset::Error),
    /// The source's path cannot be read before the backup starts.
    #[error("source {name}: {} cannot be read: {cause}", path.display())]
    Unreadable {
        name: String,
        path: PathBuf,
        cause: std::io::Error,
    },
    /// The source's root cannot be inspected during the backup.
    #[error("source {name}: {}: {cause}", path.display())]
    Root {
        name: String,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("source {name}: cannot list {}: {cause}", path.display())]
    List {
        name: String,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("source {name}: reading the stream failed: {cause}")]
    Stream { name: String, cause: std::io::Error },
}

/// The writer state is missing, unreadable, or does not fit the repository.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error(
        "no writer state for repository {repo_id} in {} — run `ibs repo adopt --pfx FILE` (or pass the right --state)",
        state_root.display()
    )]
    Missing {
        repo_id: String,
        state_root: PathBuf,
    },
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}: {cause}", path.display())]
    Parse {
        path: PathBuf,
        cause: serde_json::Error,
    },
    #[error("{} is not a version {version} state of repository {repo_id}", path.display())]
    WrongVersion {
        path: PathBuf,
        version: u32,
        repo_id: String,
    },
    #[error("{}: bad key", path.display())]
    BadKey { path: PathBuf },
    #[error("{0}")]
    CertificateEncoding(base64::DecodeError),
    /// The stored certificate or legacy key does not parse.
    #[error("{0}")]
    Key(ibs_keys::KeyError),
    #[error("files cache: {0}")]
    FilesCache(rusqlite::Error),
    #[error("files cache: {0}")]
    FilesCacheIo(std::io::Error),
    #[error("the repository's current certificate is {current}, but this writer holds {held}; run `ibs repo set-cert` or `ibs repo adopt`")]
    CertificateNotCurrent { current: String, held: String },
    #[error("the writer state does not match the repository's encryption mode")]
    EncryptionMismatch,
    #[error("writer state holds neither a certificate nor a key")]
    NoKey,
    #[error("this repository uses a legacy key: adopt it with --key-file")]
    LegacyNeedsKeyFile,
    #[error("legacy key missing")]
    LegacyKeyMissing,
    #[error("a legacy-key repository has no envelopes; use `ibs repo set-cert` to switch to a certificate")]
    NoEnvelopes,
}

impl StateError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StateError {
        let path = path.into();
        move |cause| StateError::Io { path, cause }
    }
}

/// A restore that cannot go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    #[error("backup {backup} has no source {source_name:?} (it has: {})", has.join(", "))]
    NoSuchSource {
        backup: String,
        source_name: String,
        has: Vec<String>,
    },
    /// The manifest names a source the engine would not have written.
    #[error("manifest: {0}")]
    BadSourceName(SourceError),
    /// The restore target cannot be opened or written through.
    #[error("{0}")]
    Target(crate::target::TargetError),
    /// The backup's tree cannot be read (a chunk missing, unreadable or failing verification).
    #[error("reading the backup's tree failed: {detail}")]
    TreeUnreadable { detail: String },
    #[error("the backup's tree ends in the middle of an entry")]
    TreeTruncated,
    /// A file of the backup cannot be read back (not a file, unreadable at backup time, or a chunk
    /// missing, unreadable or failing verification).
    #[error("{path}: {detail}")]
    FileUnreadable { path: String, detail: String },
}
