//! The component kinds, one module each: [`files`] and [`command`] (host folders and a command's
//! output), and the service kinds [`postgres`], [`mariadb`], [`redis`] and [`sqlite`]. Each service
//! kind exports its data with the service's own online mechanism and streams it straight into the
//! repository (an engine `SourceOrigin::Stream` reading the tool's stdout); nothing is staged
//! locally, except SQLite (see [`sqlite`]). [`recovered`] rebuilds export records from the stored
//! exports alone.
//!
//! The kinds know nothing of [`crate::component`]: they take the settings they need (a
//! [`ServiceSpec`], a path). Dispatch from a component to its kind is [`crate::mapping`].
//!
//! Shared machinery here:
//! - [`ServiceSpec`]: a validated connection (URL without a password, where the password comes from,
//!   where the client tools are).
//! - [`Secret`]: a password that never prints; it reaches tools only through their environment
//!   (`PGPASSWORD`, `MYSQL_PWD`, `REDISCLI_AUTH`), never argv, and is redacted from every message.
//! - [`Cause`] and [`ComponentError`]: the failure classes (authentication, unreachable server,
//!   missing client tool, incompatible client/server version, other), classified from the tool's
//!   stderr; the message always names the component.
//! - [`Tool`] runs a client tool (one-shot queries, or an export wrapped by [`ExportReader`], which
//!   starts the tool lazily on the engine's first read, so exports run one after the other, and turns
//!   a failed exit into a read error: the manifest records that source as Failed).
//!
//! Restore staging: the engine restores files, not streams, so a restore writes the stored export to
//! `DATA/tmp/<job>` first and feeds it to the client from there; the copy is removed afterwards.

pub mod command;
pub mod files;
pub mod mariadb;
mod pgscan;
pub mod postgres;
pub mod recovered;
pub mod redis;
mod scan;
pub mod sqlite;
mod tool;
mod url;
pub mod version;

pub use tool::{ExportReader, Tool};
pub use url::ConnUrl;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Where a service component's password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    None,
    /// A file whose content (without a trailing newline) is the password.
    File(PathBuf),
    /// An environment variable of the controller process.
    Env(String),
    /// A value given through the API (stored sealed, opened by the controller at job time).
    Value(Secret),
}

/// A password. `Debug`/`Display` never show it; its memory is zeroed when dropped.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Option<String>);

impl Drop for Secret {
    fn drop(&mut self) {
        if let Some(s) = &mut self.0 {
            zeroize::Zeroize::zeroize(s);
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Secret(***)"
        } else {
            "Secret(none)"
        })
    }
}

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(Some(value))
    }
    pub fn get(&self) -> Option<&str> {
        self.0.as_deref()
    }
    /// `text` with every occurrence of the secret replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        match self.0.as_deref() {
            Some(s) if !s.is_empty() => text.replace(s, "***"),
            _ => text.to_string(),
        }
    }
}

/// A validated connection of a `postgres`, `mariadb` or `redis` component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub url: ConnUrl,
    pub password: PasswordSource,
    /// A folder searched for the client tools before `PATH`.
    pub tool_dir: Option<PathBuf>,
}

impl ServiceSpec {
    /// Reads the password now (at job time, so a rotated file is picked up).
    pub fn secret(&self, component: &str) -> Result<Secret, ComponentError> {
        let err = |d: String| ComponentError::new(component, Cause::Authentication, d);
        match &self.password {
            PasswordSource::None => Ok(Secret(None)),
            PasswordSource::File(p) => std::fs::read_to_string(p)
                .map(|s| Secret(Some(s.trim_end_matches(['\r', '\n']).to_string())))
                .map_err(|e| err(format!("cannot read password_file {}: {e}", p.display()))),
            PasswordSource::Env(v) => std::env::var(v)
                .map(|s| Secret(Some(s)))
                .map_err(|_| err(format!("password_env names {v}, which is not set"))),
            PasswordSource::Value(s) => Ok(s.clone()),
        }
    }
}

pub use ibs_types::component::Cause;

/// A service component's failure: names the component and the cause; never holds a secret.
#[derive(Debug, Clone, thiserror::Error)]
#[error("component {component}: {cause}: {detail}")]
pub struct ComponentError {
    pub component: String,
    pub cause: Cause,
    pub detail: String,
}

impl ComponentError {
    pub fn new(component: &str, cause: Cause, detail: impl Into<String>) -> Self {
        ComponentError {
            component: component.into(),
            cause,
            detail: detail.into(),
        }
    }
}

pub use ibs_types::component::ExportInfo;

/// Collected by the exports while the engine reads them; read by the runner afterwards.
#[derive(Debug, Default)]
pub struct ExportLog {
    pub done: Vec<ExportInfo>,
    pub failures: Vec<ComponentError>,
    /// The backup's stop signal: at its cancel, every export tool of the plan that is still
    /// running is killed (a tool blocked on a database lock produces no output, so the engine
    /// could not otherwise notice the cancel).
    pub cancel: Option<ibs_engine::CancelToken>,
}

pub type SharedLog = Arc<Mutex<ExportLog>>;

/// One planned export: an engine source and its lazily started reader.
pub struct PlannedExport {
    pub source: String,
    pub file: String,
    pub reader: Box<dyn std::io::Read + Send>,
}

/// The exports of one component for one backup.
pub struct BackupPlan {
    pub exports: Vec<PlannedExport>,
    pub log: SharedLog,
}

/// Restore parameters of one service component.
#[derive(Debug, Clone)]
pub struct RestoreTarget {
    /// A URL (database kinds) or a path (sqlite file, redis data folder).
    pub target: String,
    pub force: bool,
}

/// Compares counts recorded at backup time with those found after a restore.
pub fn compare_counts(
    what: &str,
    expected: &BTreeMap<String, u64>,
    found: &BTreeMap<String, u64>,
) -> Result<(), String> {
    let mut diffs = Vec::new();
    for (k, v) in expected {
        match found.get(k) {
            Some(f) if f == v => {}
            Some(f) => diffs.push(format!("{k}: {v} at backup, {f} restored")),
            None => diffs.push(format!("{k}: {v} at backup, missing after restore")),
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "verification failed ({what}): {}",
            diffs.into_iter().take(10).collect::<Vec<_>>().join("; ")
        ))
    }
}

/// Like [`compare_counts`], and also fails when a table absent from `expected` holds rows after
/// the restore (a dump whose blocks were not all recognised cannot pass by omission).
pub fn compare_exact(
    what: &str,
    expected: &BTreeMap<String, u64>,
    found: &BTreeMap<String, u64>,
) -> Result<(), String> {
    let extra: Vec<String> = found
        .iter()
        .filter(|(k, n)| **n > 0 && !expected.contains_key(*k))
        .map(|(k, n)| format!("{k}: not in the backup's counts, {n} rows restored"))
        .collect();
    match (compare_counts(what, expected, found), extra.is_empty()) {
        (r, true) => r,
        (Ok(()), false) => Err(format!(
            "verification failed ({what}): {}",
            extra.into_iter().take(10).collect::<Vec<_>>().join("; ")
        )),
        (Err(e), false) => Err(format!(
            "{e}; {}",
            extra.into_iter().take(10).collect::<Vec<_>>().join("; ")
        )),
    }
}

/// A short excerpt of a tool's stderr for an error message: the last non-empty lines, redacted.
pub fn excerpt(stderr: &str, secret: &Secret) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = lines[lines.len().saturating_sub(2)..].join(" / ");
    let tail: String = tail.chars().take(400).collect();
    secret.redact(&tail)
}

/// The stored file of `e` as restored under `staged/SOURCE`.
pub(crate) fn staged_file(staged: &Path, e: &ExportInfo) -> Result<PathBuf, String> {
    let dir = staged.join(&e.source);
    [dir.join(&e.file), dir.clone()]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| format!("restored export {} not found", e.file))
}

/// Copies `from` to `to` through a temporary name in the same folder, then renames it into place.
pub(crate) fn copy_into_place(from: &Path, to: &Path) -> Result<(), String> {
    let mut tmp = to.to_path_buf().into_os_string();
    tmp.push(format!(".ibs-tmp-{}", rand::random::<u32>()));
    let tmp = PathBuf::from(tmp);
    std::fs::copy(from, &tmp)
        .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|_| std::fs::rename(&tmp, to))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("writing {}: {e}", to.display())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        for (text, cause) in [
            ("pg_dump: error: connection to server at \"127.0.0.1\", port 1 failed: Connection refused", Cause::Unreachable),
            ("FATAL:  password authentication failed for user \"x\"", Cause::Authentication),
            ("FATAL:  role \"nobody\" does not exist", Cause::Authentication),
            ("mariadb-dump: Got error: 1045: \"Access denied for user 'x'@'localhost' (using password: YES)\"", Cause::Authentication),
            ("mariadb-dump: Got error: 2002: \"Can't connect to server on '127.0.0.1' (115)\"", Cause::Unreachable),
            ("pg_dump: error: aborting because of server version mismatch", Cause::IncompatibleVersion),
            ("AUTH failed: WRONGPASS invalid username-password pair", Cause::Authentication),
            ("Could not connect to Redis at 127.0.0.1:1: Connection refused", Cause::Unreachable),
            ("ERROR: relation does not exist", Cause::Other),
        ] {
            assert_eq!(Cause::classify(text), cause, "{text}");
        }
        let s = Secret(Some("hunter2".into()));
        assert_eq!(excerpt("a\n\nbad hunter2 here\n", &s), "a / bad *** here");
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }
}
