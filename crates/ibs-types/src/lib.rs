//! The wire types of the controller's HTTP API: every request body and every response body of
//! `/api/v1`, with their OpenAPI schemas ([`utoipa::ToSchema`]). `ibs-api` serves them, the
//! controller produces and consumes them, and the CLI client (`ibs location|backup|restore|…`)
//! sends and reads them; the OpenAPI document is generated from them, so the document and the wire
//! format cannot differ.
//!
//! This crate depends only on serde, utoipa and zeroize, never on the controller, the API or the
//! engine. Besides the types it holds only pure logic about them (status names, the maintenance skip
//! reason, classifying a client tool's stderr into a [`Cause`]).
//!
//! Module map:
//! - [`job`]: jobs, their kinds, states, triggers, progress, per-component results, corruption and
//!   verification summaries.
//! - [`component`]: the API view of components and the `PUT /components` entry; service-component
//!   failure causes and export records.
//! - [`location`]: the backup-location view and update, the certificate view, [`SecretText`].
//! - [`admin`]: roles, maintenance, readiness, alerts, prune, tokens, audit.
//! - [`requests`]: the bodies and queries of the job-starting and listing operations (restore,
//!   validate, list limits, alert filter) and verification status.
//! - [`paging`]: `limit` and `cursor` of every list, and the operations list.
//! - [`error`]: the error body every non-2xx JSON response carries.

pub mod admin;
pub mod component;
pub mod error;
pub mod job;
pub mod location;
pub mod paging;
pub mod requests;

pub use admin::{
    Alert, AlertQuery, AuditRecord, BeginMaintenance, Capacity, EndMaintenance, GateKind,
    Maintenance, MaintenanceOp, MaintenanceOutcome, MaintenanceState, PruneReport, PruneRequest,
    Readiness, Role, TokenCreated, TokenInfo, TokenRequest,
};
pub use component::{Cause, ComponentRequest, ComponentView, ExportInfo};
pub use error::{ErrorBody, ErrorDetail};
pub use job::{
    BackupMetadata, ComponentResult, Corruption, Job, JobErrorCode, JobKind, JobProgress,
    JobStatus, Trigger, VerifySummary,
};
pub use location::{CertificateInfo, LocationUpdate, LocationView, SecretText};
pub use paging::{Operation, OperationKind, OperationsQuery, PageQuery};
pub use requests::{ListQuery, PackCheck, PfxBody, RestoreBody, ValidateBody, VerificationStatus};
