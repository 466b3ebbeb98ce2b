//! Operations over an ibs repository: backup, restore, check, forget, prune, key rotation and adopt.
//! The CLI and the controller compose these; they never touch repository objects directly.
//!
//! Concurrency model (ADR 0003): storage is async on tokio; CPU stages (chunking, hashing,
//! compression, sealing, restore writes) run on dedicated threads fed by bounded channels.

pub mod backup;
mod blocks;
pub mod browse;
pub mod cache;
pub mod cancel;
pub mod check;
pub mod chunker;
mod chunkread;
pub mod damage;
pub mod delta;
mod error;
pub mod exclude;
pub mod fileio;
pub mod folders;
pub mod history;
mod inflight;
pub mod keyops;
pub mod keysel;
pub mod ledger;
pub mod mark_sweep;
mod openers;
mod packing;
mod preflight;
mod produce;
pub mod progress;
pub mod provenance;
pub mod prune;
pub mod refs;
pub mod repack;
pub mod restore;
pub mod retention;
mod special;
mod statahead;
pub mod state;
pub mod status;
mod summary;
pub mod target;
pub mod trash;
pub mod walk;
mod walker;
pub mod worm;
pub mod xattrs;

pub use backup::{
    backup, backup_with, BackupExtras, BackupOptions, BackupReport, SourceOrigin, SourceSpec,
};
pub use cancel::CancelToken;
pub use progress::{Progress, ProgressSnapshot};
pub use restore::{restore, RestoreOptions, RestoreReport};
pub use state::WriterState;

pub use error::{EngineError, RestoreError, SourceError, StateError};
