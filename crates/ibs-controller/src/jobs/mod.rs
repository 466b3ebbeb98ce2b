//! The jobs, one module each. A job is written against the [`JobContext`](crate::context::JobContext)
//! (state database, clock, storage opener, alerts, paths), never against the
//! [`Controller`](crate::Controller) facade: the facade takes the gate, records the job as Running
//! and spawns it; the job does the work and records how it ended.
//!
//! Dependencies point one way: facade → jobs → context. Among the jobs, `backup` uses
//! `verify::corruption` (Corrupted marks are recomputed after a backup); nothing uses `backup`.

pub mod backup;
pub mod restore;
pub mod retention;
pub mod validate;
pub mod verify;
