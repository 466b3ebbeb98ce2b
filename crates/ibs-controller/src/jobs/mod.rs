//! The jobs, one module each. A job is written against the [`JobContext`](crate::context::JobContext)
//! (state database, clock, storage opener, alerts, paths), never against the
//! [`Controller`](crate::Controller) facade: the facade takes the gate, records the job as Running
//! and spawns it; the job does the work and records how it ended.
//!
//! Dependencies point one way: facade → jobs → context. Among the jobs, `backup` uses
//! `verify::corruption` (Corrupted marks are recomputed after a backup); `verify` and `retention`
//! use `tamper` (tamper evidence on object-lock storage); nothing uses `backup`.

pub mod backup;
pub mod restore;
pub mod retention;
pub mod tamper;
pub mod validate;
pub mod verify;

use crate::ControllerError;
use ibs_keys::{KeyError, PrivateIdentity};

/// Opens a .pfx given in a request; a failure is a 400 naming the field at fault, the same for
/// restore and validation: `pfx_password` for a wrong password, `pfx` for anything else (not a
/// .pfx, no RSA key). `pfx_field` and `password_field` are the request's names for the two.
pub(crate) fn open_pfx(
    pfx: &[u8],
    password: &str,
    pfx_field: &str,
    password_field: &str,
) -> Result<PrivateIdentity, ControllerError> {
    PrivateIdentity::from_pfx(pfx, password).map_err(|e| {
        let field = match e {
            KeyError::WrongPfxPassword | KeyError::PfxDecrypt { .. } => password_field,
            _ => pfx_field,
        };
        ControllerError::invalid(field, e.to_string())
    })
}
