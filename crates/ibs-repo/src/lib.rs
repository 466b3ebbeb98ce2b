//! The ibs repository format, version 1 (normative spec: `docs/design/repository-format.md`).
//!
//! This crate owns every persisted byte of a repository: ids, sealing, chunk encoding, packs, index
//! segments, manifests, tree streams, key envelopes and lock objects, plus [`Repository`], which maps
//! each object kind onto a [`ibs_storage::Storage`]. Operations built from these (backup, restore,
//! check, prune) live in `ibs-engine`.

pub mod chunk;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod damaged;
pub mod dedup;
pub mod delta;
mod error;
pub mod ids;
pub mod idset;
pub mod index;
pub mod inflate;
pub mod keyring;
pub mod layout;
pub mod lock;
pub mod manifest;
pub mod pack;
pub mod plan;
pub mod refseg;
mod repository;
pub mod slots;
pub mod tree;

pub use error::{MissingKey, RepoError, Result};
pub use repository::{
    delta_bound, span_ok, Delta, InitKeys, PendingInit, RefsWritten, Repository, DELTA_DIVISOR,
    DELTA_MAX_IDS, DELTA_MIN_IDS,
};
