//! The ibs backup controller: everything `ibs serve` does besides speaking HTTP.
//!
//! Module map (each module's own doc says what it owns). Dependencies point one way; no module
//! below the facade imports `controller`:
//!
//! ```text
//! controller (facade) ──> jobs::{backup, restore, verify, retention, validate} ──> conditions ──> context
//!      │                    (backup ──> verify::corruption)                   └───────────────> context
//!      ├──> gate ──> model
//!      ├──> conditions, context
//!      └──> scheduler, settings, component_api, tokens, db
//! context ──> db, alerts, settings, storage, secretbox, component, model
//! ```
//!
//! Below the crate: `ibs-recovery` (validation, for [`jobs::validate`]) and `ibs-sources` (the
//! component model and kinds, re-exported here as [`component`] and [`kinds`]).
//!
//! - [`model`]: jobs, their states, the status roll-up over components, gate kinds, maintenance.
//! - [`config`]: the TOML configuration (`ibs.toml`) and its validation.
//! - [`component`], [`kinds`]: the component model and kinds, from `ibs-sources` (re-exported).
//! - [`component_api`]: what the HTTP API may say about components (references to host components,
//!   service components with a sealed password) and the view it gets (no hook, command or secret).
//! - [`settings`]: the backup-location resource: validation, secrets, audit.
//! - [`db`]: the SQLite state database (jobs, settings, alerts, tokens, audit, scheduler state).
//! - [`paging`]: keyset pages of the lists; [`db_ops`]: operations outside the job records and the
//!   combined operations list.
//! - [`secretbox`]: encryption at rest of secrets kept in the state database.
//! - [`tokens`]: API bearer tokens with roles, stored hashed, compared in constant time.
//! - [`scheduler`]: the pure scheduling decision for a tick (interval, missed runs, skips).
//! - [`alerts`]: the alert catalogue and lifecycle, and the webhook sink; [`alert_purge`]: closed
//!   alerts purged after `closed_alert_retention_days`, each into the audit trail.
//! - [`redact`]: URLs made safe to print (no userinfo, query or path).
//! - [`restore_roots`]: the host-configured folders an API restore may write beneath.
//! - [`storage`]: the injected storage opener and the share accessibility test.
//! - [`context`]: [`context::JobContext`], what a job may use (database, clock, storage opener,
//!   alerts, paths), and [`Failure`].
//! - [`conditions`]: the condition alerts (scheduler off, certificate expiry, share almost full, …).
//! - `gate`: one job at a time, and the running jobs' live progress.
//! - [`jobs`]: one module per job kind: [`jobs::backup`], [`jobs::restore`], [`jobs::verify`]
//!   (scheduled pack verification, Corrupted backups), [`jobs::retention`] (hourly forget + prune),
//!   [`jobs::validate`] (backup validation, `ibs-recovery`'s, with its reports).
//! - [`controller`]: [`Controller`], the facade the API and the daemon talk to: it takes the gate
//!   and starts jobs, runs the scheduler tick, owns the settings; [`bootstrap`] is its first start
//!   on embedded defaults (certificate, sample folder, location, admin token).
//!
//! Time comes only from the injected [`ibs_repo::clock::Clock`], so every rule here is testable with
//! `ManualClock`.

pub mod alert_purge;
pub mod alerts;
pub mod component_api;
pub mod conditions;
pub mod config;
pub mod context;
pub mod controller;
pub mod db;
mod db_jobs;
pub mod db_ops;
pub mod db_verify;
mod gate;
pub mod jobs;
pub mod maintenance_key;
pub mod model;
pub mod paging;
pub mod redact;
pub mod restore_roots;
pub mod scheduler;
pub mod secretbox;
pub mod settings;
pub mod stop;
pub mod storage;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tokens;

/// The component model, re-exported for the controller's API consumers.
pub use ibs_sources::component;

/// The component kinds and their dispatch, re-exported for the controller's API consumers.
pub mod kinds {
    pub use ibs_sources::kinds::*;
    pub use ibs_sources::mapping::{plan, restore};
}

pub use context::{Capacity, Failure};
pub use controller::{
    bootstrap, Controller, ControllerOptions, PruneReport, Readiness, TickOutcome,
};
pub use db_jobs::BackupStats;
pub use jobs::restore::{PfxKey, RestoreRequest};
pub use jobs::verify::VerificationStatus;
pub use model::{
    ComponentResult, GateKind, Job, JobKind, JobStatus, MaintenanceState, Role, Trigger,
    DEFAULT_FREQUENCY_HOURS, DEFAULT_RETENTION_DAYS,
};
pub use paging::{Page, PageKey, PageRequest};
pub use storage::{LocationOpener, OpenError, StorageOpener, StorageTarget};

use ibs_storage::AlertClass;

/// Errors of the controller. Each maps to one HTTP status in `ibs-api`; messages never contain a
/// secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControllerError {
    /// A request field is invalid; `field` names it (`path`, `frequency_hours`, …).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The request conflicts with the current state (a running job, a maintenance operation,
    /// a retention change that needs confirmation).
    #[error("{message}")]
    Conflict {
        message: String,
        details: Option<serde_json::Value>,
    },
    #[error("{0} not found")]
    NotFound(String),
    /// The backup location failed its accessibility test or could not be opened.
    #[error("{message}")]
    Storage { class: AlertClass, message: String },
    /// The SQLite error is shown in the message, not exposed as a source, so an error chain
    /// (`{:#}`) prints it once.
    #[error("state database: {0}")]
    Db(rusqlite::Error),
    #[error("{0}")]
    Internal(String),
}

impl From<rusqlite::Error> for ControllerError {
    fn from(e: rusqlite::Error) -> Self {
        ControllerError::Db(e)
    }
}

impl ControllerError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ControllerError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        ControllerError::Conflict {
            message: message.into(),
            details: None,
        }
    }
}

impl From<ibs_sources::component::ConfigError> for ControllerError {
    fn from(e: ibs_sources::component::ConfigError) -> Self {
        use ibs_sources::component::ConfigError;
        match e {
            ConfigError::Invalid { field, message } => ControllerError::Invalid { field, message },
            ConfigError::Sealed(message) => ControllerError::Internal(message),
            other => ControllerError::Internal(other.to_string()),
        }
    }
}

pub type Result<T, E = ControllerError> = std::result::Result<T, E>;
