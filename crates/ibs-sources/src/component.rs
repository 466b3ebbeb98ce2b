//! Components, the unit of backup. A component has a name, a kind with its settings, whether it is
//! essential for recovery, a priority (lower runs first, for backup and restore), and optional
//! pre/post hook commands with a timeout (the post hook always runs, even after a failure).
//!
//! Kinds shipped here:
//! - `files`: `paths` (folders or files) and `exclude`. Each path becomes one engine source: the
//!   source is named after the component when there is one path, `NAME-1`, `NAME-2`, … otherwise.
//!   `exclude` patterns (glob; without `/` they match names at any depth, with `/` paths relative to
//!   the source) leave entries out; an excluded folder is skipped whole.
//! - `command`: `backup` is run with `sh -c`; its stdout is stored as one file (`NAME.out`) of a
//!   stream source. A nonzero exit marks the component Failed. `restore` is run with `sh -c` and reads
//!   the stored bytes on stdin.
//! - `postgres`, `mariadb`, `redis` (`url`, `password_file` or `password_env`, `tool_dir`) and
//!   `sqlite` (`path`): service exports streamed into the repository; see [`crate::kinds`].
//!
//! Everything that runs a command or reads a host file or environment variable (hooks, `command`
//! backup/restore, `files` paths, `sqlite` path, `tool_dir`, `password_file`, `password_env`) comes
//! only from the host: the configuration file, first start, or the library API. What the HTTP API
//! may say about components is in the controller's `component_api`.
//!
//! This module depends on [`crate::kinds`] (service specs, URL schemes), never the other way round;
//! what runs a component lives in [`crate::mapping`].

use crate::kinds::{self, ConnUrl, PasswordSource, Secret, ServiceSpec};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Why a component configuration was refused. Messages never contain a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A field is invalid; `field` names it as `component[N].field`.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// A password given through the API could not be opened (the sealing key changed).
    #[error("{0}")]
    Sealed(String),
}

impl ConfigError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// Opens the passwords the HTTP API stored sealed (the controller's secret box implements it).
pub trait SealedSecrets {
    /// The plaintext of `sealed`, sealed for `purpose`; the error text names no secret.
    fn open_sealed(&self, purpose: &str, sealed: &str) -> std::result::Result<String, String>;
}

pub const DEFAULT_HOOK_TIMEOUT_SECS: u64 = 600;
pub const DEFAULT_PRIORITY: i32 = 100;

/// A component as written in the config file or sent to `PUT /api/v1/components`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentConfig {
    pub name: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<String>,
    /// Connection URL of a `postgres`, `mariadb` or `redis` component (never with a password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A file holding the password of a service component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    /// An environment variable holding the password of a service component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// A password given through the API, sealed by the controller (never in the config file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_sealed: Option<String>,
    /// The database file of a `sqlite` component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A folder holding the client tools (searched instead of `PATH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_dir: Option<String>,
    #[serde(default = "yes")]
    pub essential_for_recovery: bool,
    #[serde(default = "default_priority")]
    pub priority: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_hook: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_hook: Option<String>,
    #[serde(default = "default_timeout")]
    pub hook_timeout_seconds: u64,
}

fn yes() -> bool {
    true
}
fn default_priority() -> i32 {
    DEFAULT_PRIORITY
}
fn default_timeout() -> u64 {
    DEFAULT_HOOK_TIMEOUT_SECS
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentKind {
    Files {
        paths: Vec<String>,
        exclude: Vec<String>,
    },
    Command {
        backup: String,
        restore: Option<String>,
    },
    Postgres(ServiceSpec),
    Mariadb(ServiceSpec),
    Redis(ServiceSpec),
    Sqlite {
        path: PathBuf,
    },
}

impl ComponentKind {
    pub fn name(&self) -> &'static str {
        match self {
            ComponentKind::Files { .. } => "files",
            ComponentKind::Command { .. } => "command",
            ComponentKind::Postgres(_) => "postgres",
            ComponentKind::Mariadb(_) => "mariadb",
            ComponentKind::Redis(_) => "redis",
            ComponentKind::Sqlite { .. } => "sqlite",
        }
    }

    /// Whether this kind is a service export (restored into a URL or path target, then verified).
    pub fn is_service(&self) -> bool {
        !matches!(
            self,
            ComponentKind::Files { .. } | ComponentKind::Command { .. }
        )
    }
}

/// The sealing purpose of a component's API-given password (binds it to the component's name).
pub fn password_purpose(name: &str) -> String {
    format!("component-password:{name}")
}

/// Validates the settings of a service kind; `field` names a config field for errors. A sealed
/// password is opened with `secrets`; without it (validation only) it stays unopened (empty).
fn service_kind(
    c: &ComponentConfig,
    field: &dyn Fn(&str) -> String,
    secrets: Option<&dyn SealedSecrets>,
) -> Result<ComponentKind> {
    let invalid = |f: &str, m: String| Err(ConfigError::invalid(field(f), m));
    if !c.paths.is_empty() || c.backup.is_some() || c.restore.is_some() {
        return invalid(
            "kind",
            format!("paths/backup/restore do not apply to the {} kind", c.kind),
        );
    }
    let tool_dir = c.tool_dir.as_ref().map(PathBuf::from);
    if c.kind == "sqlite" {
        let Some(p) = c.path.as_deref().filter(|p| p.starts_with('/')) else {
            return invalid("path", "a sqlite component needs an absolute path".into());
        };
        if c.url.is_some()
            || c.password_file.is_some()
            || c.password_env.is_some()
            || c.password_sealed.is_some()
        {
            return invalid("url", "a sqlite component takes only a path".into());
        }
        return Ok(ComponentKind::Sqlite { path: p.into() });
    }
    if c.path.is_some() {
        return invalid(
            "path",
            format!("the {} kind takes a url, not a path", c.kind),
        );
    }
    let schemes = match c.kind.as_str() {
        "postgres" => kinds::postgres::SCHEMES,
        "mariadb" => kinds::mariadb::SCHEMES,
        _ => kinds::redis::SCHEMES,
    };
    let Some(u) = c.url.as_deref() else {
        return invalid("url", format!("a {} component needs a url", c.kind));
    };
    let url = ConnUrl::parse(u, schemes).map_err(|e| ConfigError::invalid(field("url"), e))?;
    if c.kind == "redis" {
        kinds::redis::db_number(&url).map_err(|e| ConfigError::invalid(field("url"), e))?;
    }
    let sources = [
        c.password_file.is_some(),
        c.password_env.is_some(),
        c.password_sealed.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() > 1 {
        return invalid(
            "password_env",
            "give one of password_file, password_env or an API password, not several".into(),
        );
    }
    if let Some(sealed) = &c.password_sealed {
        let value = match secrets {
            Some(b) => b
                .open_sealed(&password_purpose(&c.name), sealed)
                .map_err(ConfigError::Sealed)?,
            None => String::new(),
        };
        let spec = ServiceSpec {
            url,
            password: PasswordSource::Value(Secret::new(value)),
            tool_dir,
        };
        return Ok(match c.kind.as_str() {
            "postgres" => ComponentKind::Postgres(spec),
            "mariadb" => ComponentKind::Mariadb(spec),
            _ => ComponentKind::Redis(spec),
        });
    }
    let password = match (&c.password_file, &c.password_env) {
        (Some(_), Some(_)) => {
            return invalid(
                "password_env",
                "give password_file or password_env, not both".into(),
            )
        }
        (Some(f), None) if !f.starts_with('/') => {
            return invalid("password_file", format!("{f:?} is not an absolute path"))
        }
        (Some(f), None) => PasswordSource::File(f.into()),
        (None, Some(v)) if v.is_empty() => {
            return invalid("password_env", "names no variable".into())
        }
        (None, Some(v)) => PasswordSource::Env(v.clone()),
        (None, None) => PasswordSource::None,
    };
    let spec = ServiceSpec {
        url,
        password,
        tool_dir,
    };
    Ok(match c.kind.as_str() {
        "postgres" => ComponentKind::Postgres(spec),
        "mariadb" => ComponentKind::Mariadb(spec),
        _ => ComponentKind::Redis(spec),
    })
}

/// A validated component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    pub name: String,
    pub kind: ComponentKind,
    pub essential_for_recovery: bool,
    pub priority: i32,
    pub pre_hook: Option<String>,
    pub post_hook: Option<String>,
    pub hook_timeout: Duration,
}

impl Component {
    /// The engine source names of this component, in order.
    pub fn source_names(&self) -> Vec<String> {
        match &self.kind {
            ComponentKind::Files { paths, .. } if paths.len() > 1 => (1..=paths.len())
                .map(|i| format!("{}-{i}", self.name))
                .collect(),
            _ => vec![self.name.clone()],
        }
    }

    /// The stored file name of a `command` component's stream.
    pub fn stream_file_name(&self) -> String {
        format!("{}.out", self.name)
    }
}

/// Validates a list of component configs: names unique and valid, known kinds, required settings.
/// Errors name the field as `component[N].field`. API-given passwords are not opened: use
/// [`validate_with`] to get components that can run.
pub fn validate(configs: &[ComponentConfig]) -> Result<Vec<Component>> {
    validate_with(configs, None)
}

/// [`validate`], opening API-given passwords with `secrets`.
pub fn validate_with(
    configs: &[ComponentConfig],
    secrets: Option<&dyn SealedSecrets>,
) -> Result<Vec<Component>> {
    let mut out: Vec<Component> = Vec::new();
    for (i, c) in configs.iter().enumerate() {
        let field = |f: &str| format!("component[{i}].{f}");
        ibs_engine::backup::validate_name(&c.name)
            .map_err(|e| ConfigError::invalid(field("name"), e.to_string()))?;
        if out.iter().any(|o| o.name == c.name) {
            return Err(ConfigError::invalid(
                field("name"),
                format!("component name {:?} is used twice", c.name),
            ));
        }
        let kind = match c.kind.as_str() {
            "files" => {
                if c.paths.is_empty() {
                    return Err(ConfigError::invalid(field("paths"), "a files component needs at least one path"));
                }
                if let Some(p) = c.paths.iter().find(|p| !p.starts_with('/')) {
                    return Err(ConfigError::invalid(field("paths"), format!("{p:?} is not an absolute path")));
                }
                if c.backup.is_some() || c.restore.is_some() {
                    return Err(ConfigError::invalid(field("backup"), "backup/restore commands belong to the command kind"));
                }
                ibs_engine::exclude::Excludes::new(&c.exclude)
                    .map_err(|e| ConfigError::invalid(field("exclude"), e.to_string()))?;
                ComponentKind::Files {
                    paths: c.paths.clone(),
                    exclude: c.exclude.clone(),
                }
            }
            "command" => {
                let backup = c.backup.clone().filter(|b| !b.trim().is_empty()).ok_or_else(|| {
                    ConfigError::invalid(field("backup"), "a command component needs a backup command")
                })?;
                if !c.paths.is_empty() {
                    return Err(ConfigError::invalid(field("paths"), "paths belong to the files kind"));
                }
                ComponentKind::Command {
                    backup,
                    restore: c.restore.clone().filter(|r| !r.trim().is_empty()),
                }
            }
            "postgres" | "mariadb" | "redis" | "sqlite" => service_kind(c, &field, secrets)?,
            other => {
                return Err(ConfigError::invalid(
                    field("kind"),
                    format!("unknown component kind {other:?}: this build supports files, command, postgres, mariadb, redis and sqlite"),
                ))
            }
        };
        if c.hook_timeout_seconds == 0 {
            return Err(ConfigError::invalid(
                field("hook_timeout_seconds"),
                "must be at least 1",
            ));
        }
        out.push(Component {
            name: c.name.clone(),
            kind,
            essential_for_recovery: c.essential_for_recovery,
            priority: c.priority,
            pre_hook: c.pre_hook.clone().filter(|h| !h.trim().is_empty()),
            post_hook: c.post_hook.clone().filter(|h| !h.trim().is_empty()),
            hook_timeout: Duration::from_secs(c.hook_timeout_seconds),
        });
    }
    out.sort_by_key(|c| c.priority);
    Ok(out)
}

/// Runs a hook with `sh -c`, killing it after `timeout`. The error text names the hook and the exit
/// status, never its output (which could hold secrets); the output goes to the debug log only.
pub async fn run_hook(
    what: &str,
    command: &str,
    timeout: Duration,
    env: Vec<(String, String)>,
) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("{what}: cannot start sh: {e}"))?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => Err(format!(
            "{what} timed out after {}s and was killed",
            timeout.as_secs()
        )),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Ok(Ok(out)) => {
            tracing::debug!(
                "{what}: exit {:?}, stderr: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            );
            if out.status.success() {
                Ok(())
            } else {
                Err(format!("{what} exited with {}", out.status))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(toml_like: serde_json::Value) -> ComponentConfig {
        serde_json::from_value(toml_like).unwrap()
    }

    #[test]
    fn validation() {
        let ok = validate(&[
            cfg(serde_json::json!({"name":"db","kind":"command","backup":"echo hi","priority":5})),
            cfg(serde_json::json!({"name":"etc","kind":"files","paths":["/etc","/opt"]})),
        ])
        .unwrap();
        assert_eq!(ok[0].name, "db");
        assert_eq!(ok[1].source_names(), vec!["etc-1", "etc-2"]);
        let e = validate(&[cfg(serde_json::json!({"name":"x","kind":"oracle"}))]).unwrap_err();
        assert!(
            matches!(e, ConfigError::Invalid { ref field, .. } if field == "component[0].kind"),
            "{e}"
        );
        let e = validate(&[cfg(serde_json::json!({"name":"x","kind":"postgres"}))]).unwrap_err();
        assert!(e.to_string().contains("url"), "{e}");
        let e = validate(&[cfg(
            serde_json::json!({"name":"x","kind":"mariadb","url":"mysql://root:secret@h/db"}),
        )])
        .unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
        let ok = validate(&[
            cfg(serde_json::json!({"name":"pg","kind":"postgres","url":"postgresql://u@h:5432/app","password_env":"PGPW"})),
            cfg(serde_json::json!({"name":"r","kind":"redis","url":"redis://h:6379/2"})),
            cfg(serde_json::json!({"name":"s","kind":"sqlite","path":"/var/lib/app.db"})),
        ])
        .unwrap();
        assert!(ok.iter().all(|c| c.kind.is_service()));
        assert!(validate(&[cfg(
            serde_json::json!({"name":"r","kind":"redis","url":"redis://h/x"})
        )])
        .is_err());
        assert!(validate(&[cfg(serde_json::json!({"name":"x","kind":"files"}))]).is_err());
        assert!(validate(&[cfg(
            serde_json::json!({"name":"../x","kind":"files","paths":["/a"]})
        )])
        .is_err());
    }

    #[tokio::test]
    async fn hooks_time_out_and_report_status() {
        assert!(run_hook("pre", "true", Duration::from_secs(5), vec![])
            .await
            .is_ok());
        let e = run_hook("pre", "exit 3", Duration::from_secs(5), vec![])
            .await
            .unwrap_err();
        assert!(e.contains("exit"), "{e}");
        let e = run_hook("pre", "sleep 5", Duration::from_millis(200), vec![])
            .await
            .unwrap_err();
        assert!(e.contains("timed out"), "{e}");
    }
}
