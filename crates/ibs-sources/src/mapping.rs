//! From a component to its kind: the one place that dispatches on [`ComponentKind`]. It maps a
//! component to the engine sources of one backup ([`engine_sources`]), restores and verifies a
//! service component ([`restore`]), and rebuilds a service component's export records from its
//! staged exports ([`exports_from_staged`]). It depends on [`crate::component`] and
//! [`crate::kinds`]; neither depends on it.

use crate::component::{Component, ComponentKind};
use crate::kinds::recovered::{self, StagedKind};
use crate::kinds::{self, BackupPlan, Cause, ComponentError, ExportInfo, RestoreTarget, SharedLog};
use ibs_engine::{SourceOrigin, SourceSpec};
use std::path::Path;

/// The engine sources of one component for one backup.
pub struct EngineSources {
    pub sources: Vec<SourceSpec>,
    /// A service component's export log, filled while the engine reads the exports (`None` for
    /// the `files` and `command` kinds).
    pub exports: Option<SharedLog>,
}

/// Why a component contributes no source to a backup. The message never holds a secret.
#[derive(Debug, Clone)]
pub struct MapFailure {
    pub message: String,
    /// The failure class of a service component.
    pub cause: Option<Cause>,
}

/// Maps component `c` of backup job `job_id` to its engine sources. A service export that has to
/// stage a copy (SQLite) stages it under `tmp_dir`, which the caller removes after the backup.
/// A `command`'s process group is killed when `cancel` is cancelled, and so is a service export's
/// running tool (even one blocked on a database lock, which produces nothing to read).
pub fn engine_sources(
    c: &Component,
    job_id: &str,
    tmp_dir: &Path,
    cancel: Option<&ibs_engine::CancelToken>,
) -> Result<EngineSources, MapFailure> {
    let plain = |message: String| MapFailure {
        message,
        cause: None,
    };
    let sources = match &c.kind {
        ComponentKind::Files { paths, exclude } => {
            kinds::files::sources(c.source_names(), paths, exclude).map_err(plain)?
        }
        ComponentKind::Command { backup, .. } => vec![kinds::command::source(
            &c.name,
            job_id,
            backup,
            c.name.clone(),
            c.stream_file_name(),
            cancel,
        )
        .map_err(plain)?],
        _ => {
            let plan = match plan(c, tmp_dir) {
                Some(Ok(plan)) => plan,
                Some(Err(e)) => {
                    return Err(MapFailure {
                        message: e.to_string(),
                        cause: Some(e.cause),
                    })
                }
                None => return Err(plain("unsupported component kind".into())),
            };
            plan.log.lock().unwrap_or_else(|p| p.into_inner()).cancel = cancel.cloned();
            let sources = plan
                .exports
                .into_iter()
                .map(|e| SourceSpec {
                    name: e.source,
                    origin: SourceOrigin::Stream {
                        reader: e.reader,
                        file_name: e.file,
                    },
                })
                .collect();
            return Ok(EngineSources {
                sources,
                exports: Some(plan.log),
            });
        }
    };
    Ok(EngineSources {
        sources,
        exports: None,
    })
}

/// Plans one backup of a service component (`None` for the `files` and `command` kinds).
pub fn plan(c: &Component, tmp_dir: &Path) -> Option<Result<BackupPlan, ComponentError>> {
    let log = SharedLog::default();
    Some(match &c.kind {
        ComponentKind::Postgres(s) => kinds::postgres::plan(&c.name, s, log),
        ComponentKind::Mariadb(s) => kinds::mariadb::plan(&c.name, s, log),
        ComponentKind::Redis(s) => kinds::redis::plan(&c.name, s, log),
        ComponentKind::Sqlite { path } => Ok(kinds::sqlite::plan(&c.name, path, tmp_dir, log)),
        _ => return None,
    })
}

/// The version of the server component `c` reads from, as the server reports it (for `sqlite`,
/// the SQLite library of this build); `None` for the `files` and `command` kinds.
pub fn server_version(c: &Component) -> Option<Result<String, ComponentError>> {
    Some(match &c.kind {
        ComponentKind::Postgres(s) => kinds::postgres::server_version(&c.name, s, &s.url),
        ComponentKind::Mariadb(s) => kinds::mariadb::server_version(&c.name, s, &s.url),
        ComponentKind::Redis(s) => kinds::redis::server_version(&c.name, s, &s.url),
        ComponentKind::Sqlite { .. } => Ok(kinds::sqlite::library_version()),
        _ => return None,
    })
}

/// The version of the server a restore of component `c` into `target` writes to: the database
/// kinds' target URL (with the component's credentials); `None` for kinds whose target is a
/// file or folder (`redis` data folder, `sqlite` file) or not a server.
pub fn target_server_version(
    c: &Component,
    target: &str,
) -> Option<Result<String, ComponentError>> {
    let other = |e: String| ComponentError::new(&c.name, Cause::Other, format!("target: {e}"));
    Some(match &c.kind {
        ComponentKind::Postgres(s) => kinds::ConnUrl::parse(target, kinds::postgres::SCHEMES)
            .map_err(other)
            .and_then(|mut u| {
                // The target database may not exist yet: ask the server's `postgres` database.
                u.name = None;
                kinds::postgres::server_version(&c.name, s, &u)
            }),
        ComponentKind::Mariadb(s) => kinds::ConnUrl::parse(target, kinds::mariadb::SCHEMES)
            .map_err(other)
            .and_then(|u| kinds::mariadb::server_version(&c.name, s, &u)),
        _ => return None,
    })
}

/// Restores a service component from its exports staged under `staged`, then verifies it.
/// Returns a one-line summary of what was verified.
pub fn restore(
    c: &Component,
    exports: &[ExportInfo],
    staged: &Path,
    target: &RestoreTarget,
) -> Result<String, ComponentError> {
    match &c.kind {
        ComponentKind::Postgres(s) => kinds::postgres::restore(&c.name, s, exports, staged, target),
        ComponentKind::Mariadb(s) => kinds::mariadb::restore(&c.name, s, exports, staged, target),
        ComponentKind::Redis(s) => kinds::redis::restore(&c.name, s, exports, staged, target),
        ComponentKind::Sqlite { .. } => kinds::sqlite::restore(&c.name, exports, staged, target),
        _ => Err(ComponentError::new(
            &c.name,
            Cause::Other,
            "not a service component",
        )),
    }
}

/// Rebuilds the export records of service component `c` from its sources staged under `staged`
/// (one folder per source, as `ibs_engine::restore` writes them); see [`recovered`].
pub fn exports_from_staged(
    c: &Component,
    sources: &[String],
    staged: &Path,
) -> Result<Vec<ExportInfo>, ComponentError> {
    let kind = match &c.kind {
        ComponentKind::Postgres(_) => StagedKind::Postgres,
        ComponentKind::Mariadb(_) => StagedKind::Mariadb,
        ComponentKind::Sqlite { .. } => StagedKind::Sqlite,
        ComponentKind::Redis(spec) => StagedKind::Redis {
            database: spec.url.name.as_deref(),
        },
        _ => {
            return Err(ComponentError::new(
                &c.name,
                Cause::Other,
                "not a service component",
            ))
        }
    };
    sources
        .iter()
        .map(|s| recovered::export_info(&c.name, kind, s, staged))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_and_counts_a_pg_dump() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("pg");
        std::fs::create_dir_all(&src).unwrap();
        let dump =
            "--\n-- PostgreSQL database dump\n--\nCOPY public.a (id) FROM stdin;\n1\n2\n\\.\n";
        std::fs::write(src.join("app.sql"), dump).unwrap();
        assert_eq!(recovered::sniff(&src.join("app.sql")), Some("postgres"));
        let c = crate::component::validate(&[serde_json::from_value(serde_json::json!(
            {"name":"pg","kind":"postgres","url":"postgresql://u@h/x"}
        ))
        .unwrap()])
        .unwrap()
        .remove(0);
        let e = exports_from_staged(&c, &["pg".into()], d.path()).unwrap();
        assert_eq!(e[0].rows.get("public.a"), Some(&2));
        assert_eq!(e[0].database.as_deref(), Some("app"));
    }
}
