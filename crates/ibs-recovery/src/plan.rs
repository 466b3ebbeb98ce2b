//! The recovery plan: which component goes where.
//!
//! ```toml
//! [[component]]
//! name = "etc"                 # the component (engine source NAME, or NAME-1, NAME-2, …)
//! target = "/srv/restore/etc"  # a folder
//!
//! [[component]]
//! name = "pg"
//! target = "postgresql://postgres@db.example.com:5432/app"   # kind inferred from the scheme
//! password_env = "PGPASSWORD_RESTORE"                        # or password_file = "/root/pg.pw"
//! priority = 10                                              # lower restores first
//! ```
//!
//! `kind` is inferred from the target: `postgresql://`/`postgres://` → `postgres`, `mysql://`/
//! `mariadb://` → `mariadb`, `redis://` → `redis`, a path → `files`; `kind = "sqlite"` (a file path
//! target) and `kind = "command"` (its stored stream goes into the folder) must be said. Entries are
//! restored by `priority`, then in plan order.

use crate::{RecoveryError, Result};
use ibs_sources::component::{self, Component, ComponentKind, DEFAULT_PRIORITY};
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    #[serde(default)]
    component: Vec<PlanEntry>,
}

/// One `[[component]]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanEntry {
    pub name: String,
    pub target: String,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub priority: Option<i32>,
    #[serde(default)]
    pub password_file: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub tool_dir: Option<String>,
}

/// A validated plan entry.
#[derive(Debug, Clone)]
pub struct Planned {
    pub name: String,
    /// `files`, `command`, `postgres`, `mariadb`, `redis` or `sqlite`.
    pub kind: String,
    pub target: String,
    pub priority: i32,
    /// For service kinds: the component rebuilt from the entry (its URL or path is the target).
    pub service: Option<Component>,
}

impl Planned {
    pub fn is_service(&self) -> bool {
        self.service.is_some()
    }
}

/// A validated plan, in restore order.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub components: Vec<Planned>,
}

/// The kind a target implies.
pub fn infer_kind(target: &str) -> &'static str {
    let scheme = target
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("postgresql" | "postgres") => "postgres",
        Some("mysql" | "mariadb") => "mariadb",
        Some("redis") => "redis",
        _ => "files",
    }
}

impl Plan {
    pub fn load(path: &Path) -> Result<Plan> {
        let text = std::fs::read_to_string(path).map_err(|e| RecoveryError::Plan {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        Plan::parse(&text, &path.display().to_string())
    }

    /// Parses and validates plan text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Plan> {
        let err = |detail: String| RecoveryError::Plan {
            path: origin.into(),
            detail,
        };
        let file: PlanFile = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        if file.component.is_empty() {
            return Err(err("no [[component]] tables: nothing to recover".into()));
        }
        let mut out: Vec<Planned> = Vec::new();
        for (i, e) in file.component.iter().enumerate() {
            let at = |m: String| err(format!("component[{i}] ({}): {m}", e.name));
            if out.iter().any(|o| o.name == e.name) {
                return Err(at("the name is used twice".into()));
            }
            if e.target.trim().is_empty() {
                return Err(at("target is empty".into()));
            }
            let inferred = infer_kind(&e.target);
            let kind = e.kind.clone().unwrap_or_else(|| inferred.to_string());
            let service = match kind.as_str() {
                "files" | "command" => {
                    if inferred != "files" {
                        return Err(at(format!(
                            "a {kind} component restores into a folder, not a {inferred} URL"
                        )));
                    }
                    None
                }
                "postgres" | "mariadb" | "redis" | "sqlite" => {
                    let mut cfg = serde_json::json!({"name": e.name, "kind": kind});
                    if kind == "sqlite" {
                        cfg["path"] = e.target.clone().into();
                    } else {
                        cfg["url"] = e.target.clone().into();
                    }
                    for (k, v) in [
                        ("password_file", &e.password_file),
                        ("password_env", &e.password_env),
                        ("tool_dir", &e.tool_dir),
                    ] {
                        if let Some(v) = v {
                            cfg[k] = v.clone().into();
                        }
                    }
                    let cfg = serde_json::from_value(cfg).map_err(|x| at(x.to_string()))?;
                    let c = component::validate(&[cfg])
                        .map_err(|x| at(x.to_string().replace("component[0].", "")))?;
                    c.into_iter().next()
                }
                other => {
                    return Err(at(format!(
                        "unknown kind {other:?} (files, command, postgres, mariadb, redis, sqlite)"
                    )))
                }
            };
            out.push(Planned {
                name: e.name.clone(),
                kind,
                target: e.target.clone(),
                priority: e.priority.unwrap_or(DEFAULT_PRIORITY),
                service,
            });
        }
        out.sort_by_key(|p| p.priority);
        Ok(Plan { components: out })
    }

    /// The plan a controller's configured components imply, for validation: each service
    /// component validates on its own server (a temporary database there, or a scratch copy for
    /// Redis and SQLite) with its own credentials, exactly as a plan entry naming that server would.
    pub fn from_components(components: &[Component]) -> Plan {
        let mut out: Vec<Planned> = components
            .iter()
            .map(|c| {
                let target = match &c.kind {
                    ComponentKind::Postgres(s)
                    | ComponentKind::Mariadb(s)
                    | ComponentKind::Redis(s) => s.url.to_string(),
                    ComponentKind::Sqlite { path } => path.display().to_string(),
                    ComponentKind::Files { .. } | ComponentKind::Command { .. } => String::new(),
                };
                Planned {
                    name: c.name.clone(),
                    kind: c.kind.name().into(),
                    target,
                    priority: c.priority,
                    service: c.kind.is_service().then(|| c.clone()),
                }
            })
            .collect();
        out.sort_by_key(|p| p.priority);
        Plan { components: out }
    }

    pub fn get(&self, name: &str) -> Option<&Planned> {
        self.components.iter().find(|p| p.name == name)
    }
}

/// Whether engine source `source` belongs to component `name`: `NAME`, `NAME-<n>` (a `files`
/// component with several paths), `NAME.globals` or `NAME.db-<db>` (an all-databases export).
pub fn belongs(name: &str, source: &str) -> bool {
    match source.strip_prefix(name) {
        Some("") => true,
        Some(rest) => {
            rest == ".globals"
                || rest.starts_with(".db-")
                || rest
                    .strip_prefix('-')
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        }
        None => false,
    }
}

/// The sources of `sources` that belong to component `name`, except those that are themselves the
/// exact name of another component in `names`.
pub fn sources_of(name: &str, sources: &[String], names: &[&str]) -> Vec<String> {
    sources
        .iter()
        .filter(|s| belongs(name, s) && (s.as_str() == name || !names.contains(&s.as_str())))
        .cloned()
        .collect()
}

/// The component a source most likely belongs to when no plan names it.
pub fn base_name(source: &str) -> &str {
    if let Some(b) = source.strip_suffix(".globals") {
        return b;
    }
    match source.find(".db-") {
        Some(i) => &source[..i],
        None => source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_infers_and_orders() {
        let p = Plan::parse(
            r#"
[[component]]
name = "etc"
target = "/srv/etc"
[[component]]
name = "pg"
target = "postgresql://postgres@127.0.0.1:5432/app"
password_env = "X"
priority = 5
[[component]]
name = "lite"
kind = "sqlite"
target = "/srv/app.db"
"#,
            "plan.toml",
        )
        .unwrap();
        let names: Vec<_> = p
            .components
            .iter()
            .map(|c| (c.name.as_str(), c.kind.as_str()))
            .collect();
        assert_eq!(
            names,
            [("pg", "postgres"), ("etc", "files"), ("lite", "sqlite")]
        );
        assert!(p.get("pg").unwrap().is_service());
        let e = Plan::parse(
            "[[component]]\nname='x'\ntarget='postgresql://u:pw@h/db'\n",
            "p",
        )
        .unwrap_err()
        .to_string();
        assert!(!e.contains("pw@"), "{e}");
        assert!(Plan::parse("", "p").is_err());
        assert!(Plan::parse("[[component]]\nname='x'\ntarget='/a'\nkind='oracle'\n", "p").is_err());
    }

    #[test]
    fn source_membership() {
        assert!(belongs("etc", "etc") && belongs("etc", "etc-2") && belongs("pg", "pg.db-app"));
        assert!(!belongs("etc", "etcd") && !belongs("etc", "etc-x"));
        let s: Vec<String> = ["a", "a-1", "a-2"].iter().map(|x| x.to_string()).collect();
        assert_eq!(sources_of("a", &s, &["a", "a-1"]), ["a", "a-2"]);
        assert_eq!(base_name("pg.db-app"), "pg");
    }
}
