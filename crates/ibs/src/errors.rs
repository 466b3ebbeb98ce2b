//! How a failed command ends: the exit code (the one table in [`crate::output::exit`]), a stable
//! error kind, a next step (hint), and the report on stderr — `error: …` lines for people, or with
//! `--json` one JSON object `{"error": {"code", "exit_code", "message", "hint"}}` (ADR 0027).
//! The same mistake maps to the same code whichever command made it: typed causes from the
//! libraries (`ibs repo`, `recover`, `validate`) and the controller's HTTP answers
//! ([`crate::api_client::HttpError`]) are classified here and nowhere else.

use crate::api_client::HttpError;
use crate::output::exit;
use ibs_engine::EngineError;
use ibs_keys::KeyError;
use ibs_location::LocationError;
use ibs_repo::RepoError;
use ibs_storage::{AlertClass, StorageError};

/// An error the binary itself raises with a chosen exit code and kind (e.g. a usage mistake
/// found after parsing, or a restore target in the way).
#[derive(Debug)]
pub struct Coded {
    pub code: i32,
    pub message: String,
    pub hint: Option<String>,
}

impl std::fmt::Display for Coded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
impl std::error::Error for Coded {}

/// A usage mistake clap cannot see (exit 2).
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    Coded {
        code: exit::USAGE,
        message: message.into(),
        hint: None,
    }
    .into()
}

/// A refusal with a chosen code and a next step.
pub fn coded(code: i32, message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    Coded {
        code,
        message: message.into(),
        hint: Some(hint.into()),
    }
    .into()
}

/// The stable name of an exit code: the `code` of a JSON error.
pub fn kind(code: i32) -> &'static str {
    match code {
        exit::USAGE => "usage",
        exit::PARTIAL => "partial",
        exit::CHECK_PROBLEMS => "check-problems",
        exit::KEY => "key",
        exit::LOCKED => "conflict",
        exit::NOT_A_REPOSITORY => "not-a-repository",
        exit::NOT_FOUND => "not-found",
        exit::ACCESS_DENIED => "access-denied",
        exit::CAPACITY => "capacity",
        exit::CONNECTIVITY => "connectivity",
        exit::PATH => "path",
        exit::AUTHENTICATION => "authentication",
        exit::GENERAL => "general",
        _ => "failure",
    }
}

pub fn storage_class_code(c: AlertClass) -> i32 {
    match c {
        AlertClass::Capacity => exit::CAPACITY,
        AlertClass::Connectivity => exit::CONNECTIVITY,
        AlertClass::Path => exit::PATH,
        AlertClass::Authentication => exit::AUTHENTICATION,
        AlertClass::General => exit::GENERAL,
    }
}

/// The code of an alert class by its wire name (`capacity`, `path`, …), as jobs and the API report it.
pub fn alert_class_code(name: &str) -> Option<i32> {
    [
        AlertClass::Capacity,
        AlertClass::Connectivity,
        AlertClass::Path,
        AlertClass::Authentication,
        AlertClass::General,
    ]
    .into_iter()
    .find(|c| c.as_str() == name)
    .map(storage_class_code)
}

fn repo_code(e: &RepoError) -> i32 {
    match e {
        RepoError::Storage(s) => storage_class_code(s.class()),
        RepoError::Key(_)
        | RepoError::WrongCertificate { .. }
        | RepoError::MissingKey(_)
        | RepoError::WrongKeyFile => exit::KEY,
        RepoError::Locked { .. } | RepoError::LockLost { .. } => exit::LOCKED,
        RepoError::NotARepository { .. } | RepoError::UnsupportedVersion { .. } => {
            exit::NOT_A_REPOSITORY
        }
        RepoError::NoSuchBackup { .. } => exit::NOT_FOUND,
        RepoError::NotABackupId { .. } => exit::USAGE,
        _ => exit::FAILURE,
    }
}

/// Request fields that carry key material: a 400 about one of them is a key problem (exit 5).
const KEY_FIELDS: [&str; 4] = ["pfx", "pfx_password", "more_pfx", "certificate"];

fn http_code(e: &HttpError) -> i32 {
    match e.status {
        400 if e.field.as_deref().is_some_and(|f| KEY_FIELDS.contains(&f)) => exit::KEY,
        400 => match e.alert_class.as_deref().and_then(alert_class_code) {
            Some(c) => c,
            None => exit::USAGE,
        },
        401 | 403 => exit::ACCESS_DENIED,
        404 => exit::NOT_FOUND,
        409 if e.override_flag.as_deref() == Some("allow_newer") => exit::NEWER_BACKUP,
        409 => exit::LOCKED,
        _ => exit::FAILURE,
    }
}

/// The exit code for an error, by the most specific typed cause found.
pub fn code_for(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if let Some(c) = cause.downcast_ref::<Coded>() {
            return c.code;
        }
        if let Some(h) = cause.downcast_ref::<HttpError>() {
            return http_code(h);
        }
        if cause
            .downcast_ref::<crate::api_client::Unreachable>()
            .is_some()
        {
            return exit::CONNECTIVITY;
        }
        if let Some(e) = cause.downcast_ref::<ibs_recovery::RecoveryError>() {
            use ibs_recovery::RecoveryError as R;
            return match e {
                R::Engine(EngineError::Repo(r)) => repo_code(r),
                R::NoSuchBackup { .. } | R::NoReadyBackup { .. } | R::MissingComponent { .. } => {
                    exit::NOT_FOUND
                }
                R::NewerBackup(_) => exit::NEWER_BACKUP,
                _ => exit::FAILURE,
            };
        }
        if let Some(e) = cause.downcast_ref::<EngineError>() {
            return match e {
                EngineError::Repo(r) => repo_code(r),
                EngineError::Restore(ibs_engine::RestoreError::NoSuchSource { .. }) => {
                    exit::NOT_FOUND
                }
                _ => exit::FAILURE,
            };
        }
        if let Some(e) = cause.downcast_ref::<RepoError>() {
            return repo_code(e);
        }
        if let Some(e) = cause.downcast_ref::<LocationError>() {
            return match e {
                LocationError::Storage(s) => storage_class_code(s.class()),
                LocationError::NotARepository { .. } => exit::NOT_A_REPOSITORY,
                _ => exit::FAILURE,
            };
        }
        if let Some(e) = cause.downcast_ref::<StorageError>() {
            return storage_class_code(e.class());
        }
        if cause.downcast_ref::<KeyError>().is_some() {
            return exit::KEY;
        }
    }
    exit::FAILURE
}

/// The storage failure behind an error, if one is.
fn storage_cause(err: &anyhow::Error) -> Option<&StorageError> {
    err.chain().find_map(|cause| {
        cause
            .downcast_ref::<StorageError>()
            .or_else(|| {
                cause
                    .downcast_ref::<RepoError>()
                    .and_then(RepoError::storage)
            })
            .or_else(|| {
                cause
                    .downcast_ref::<LocationError>()
                    .and_then(LocationError::storage)
            })
            .or_else(|| match cause.downcast_ref::<EngineError>() {
                Some(EngineError::Repo(r)) => r.storage(),
                _ => None,
            })
            .or_else(
                || match cause.downcast_ref::<ibs_recovery::RecoveryError>() {
                    Some(ibs_recovery::RecoveryError::Engine(EngineError::Repo(r))) => r.storage(),
                    _ => None,
                },
            )
    })
}

/// A next step for the error, when one is known: the storage alert's remediation, or the hint a
/// [`Coded`] error carries.
pub fn hint(err: &anyhow::Error) -> Option<String> {
    if let Some(c) = err.chain().find_map(|c| c.downcast_ref::<Coded>()) {
        return c.hint.clone();
    }
    if let Some(s) = storage_cause(err) {
        let c = s.class();
        // Not the alert's title: that speaks of a failed backup, and this may be `repo init`.
        return Some(format!(
            "{} ({}) Remediation: {}",
            c.description(),
            c.as_str(),
            c.remediation()
        ));
    }
    None
}

/// The JSON form of an error: `{"error": {"code", "exit_code", "message", "hint"}}`.
pub fn json(code: i32, message: &str, hint: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "error": {
            "code": kind(code),
            "exit_code": code,
            "message": message,
            "hint": hint,
        }
    })
}

/// Reports a failed command on stderr and returns its exit code.
pub fn report(err: &anyhow::Error, as_json: bool) -> i32 {
    let code = code_for(err);
    let hint = hint(err);
    if as_json {
        crate::output::err_line(&json(code, &format!("{err:#}"), hint.as_deref()).to_string());
    } else {
        crate::output::err_line(&format!("error: {err:#}"));
        if let Some(h) = hint {
            crate::output::err_line(&h);
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_own_kind() {
        let codes = [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14];
        let kinds: std::collections::BTreeSet<_> = codes.iter().map(|c| kind(*c)).collect();
        assert_eq!(kinds.len(), codes.len());
        assert_eq!(kind(1), "failure");
    }
}
