//! Components as the API sees them: the `PUT /api/v1/components` entry ([`ComponentRequest`]), the
//! view every response shows ([`ComponentView`], never a hook, a command, a password or where one
//! comes from), and what a service component's backup recorded ([`ExportInfo`]) or why it failed
//! ([`Cause`]).

use crate::location::SecretText;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// Why a service component failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    Authentication,
    Unreachable,
    MissingTool,
    IncompatibleVersion,
    Other,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Authentication => "authentication failed",
            Cause::Unreachable => "server unreachable",
            Cause::MissingTool => "missing client tool",
            Cause::IncompatibleVersion => "incompatible client/server version",
            Cause::Other => "failed",
        }
    }

    /// Classifies a client tool's stderr.
    pub fn classify(stderr: &str) -> Cause {
        let s = stderr.to_ascii_lowercase();
        let any = |pats: &[&str]| pats.iter().any(|p| s.contains(p));
        if any(&[
            "version mismatch",
            "unsupported version",
            "server version",
            "unsupported frontend protocol",
            "can't handle rdb format",
        ]) {
            Cause::IncompatibleVersion
        } else if any(&[
            "password authentication failed",
            "authentication failed",
            "no password supplied",
            "access denied",
            "noauth",
            "wrongpass",
            "invalid username-password",
            "fe_sendauth",
        ]) || (s.contains("role \"") && s.contains("does not exist"))
        {
            Cause::Authentication
        } else if any(&[
            "connection refused",
            "could not connect",
            "can't connect",
            "could not translate host name",
            "name or service not known",
            "no route to host",
            "timeout expired",
            "timed out",
            "unknown server host",
            "network is unreachable",
            "lost connection",
            "connection reset",
        ]) {
            Cause::Unreachable
        } else {
            Cause::Other
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one export recorded at backup time, kept in the job's component result and used to verify
/// a restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, ToSchema)]
pub struct ExportInfo {
    /// The engine source holding the export.
    pub source: String,
    /// The stored file name inside that source.
    pub file: String,
    /// What the export holds: `database`, `globals`, `all-databases`, `rdb`, `sqlite`.
    pub content: String,
    /// The database it holds, when one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Rows per table, counted in the export itself (same snapshot as the data).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rows: BTreeMap<String, u64>,
    /// Redis: keys of the component's database at backup time (`DBSIZE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
}

/// One entry of `PUT /api/v1/components`. Without `kind`: a reference to a component of the host's
/// configuration file (only `priority` and `essential_for_recovery` may change). With kind
/// `postgres`, `mariadb` or `redis`: a service component by `url`; the password is stored sealed and
/// never returned. Hooks, commands, host paths, `tool_dir`, `password_file` and `password_env` are
/// refused (400): they come only from the host's configuration file.
// `Debug` never shows the password: it is a `SecretText`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ComponentRequest {
    pub name: String,
    /// Absent: a reference to the host catalog component of that name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(postgres|mariadb|redis)$")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Write-only; omitted on a later PUT with the same kind and url, the stored one is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, write_only)]
    pub password: Option<SecretText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub essential_for_recovery: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
}

/// A component as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ComponentView {
    pub name: String,
    pub kind: String,
    /// `config` (defined on the host) or `api`.
    pub source: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub essential_for_recovery: bool,
    pub priority: i32,
    pub pre_hook_set: bool,
    pub post_hook_set: bool,
    pub commands_set: bool,
    pub password_set: bool,
}
