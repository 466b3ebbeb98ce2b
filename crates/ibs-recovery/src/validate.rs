//! `validate`: prove a backup restorable before it is needed.
//!
//! 1. The repository check at decrypt depth (`ibs_engine::check::check` with the .pfx): every
//!    indexed chunk is decrypted and re-hashed, every manifest's tree opens. Problems that affect
//!    this backup fail it; others are listed.
//! 2. Every source of the backup is restored into a scratch folder (a [`tempfile::TempDir`], removed
//!    when validation ends, however it ends); restored file and byte counts must match the catalog.
//! 3. Each database component is restored into a TEMPORARY database `ibs_validate_<random>` on the
//!    server its plan entry names (SQLite and Redis: a file or folder inside the scratch area), where
//!    the kind's verification runs the sanity queries (every table's row count against the dump's
//!    own counts); a [`TempDatabase`] guard drops it afterwards, also on failure or panic. A database
//!    component without a plan target is reported "not validated: no database target in the plan",
//!    never silently passed.
//!
//! A source that failed when the backup was taken is reported "not validated" (nothing was stored).
//!
//! The verdict is `PASS` (everything checked passed), `FAIL` (something failed) or `INCOMPLETE`
//! (nothing failed, but some component could not be validated).

use crate::plan::{base_name, sources_of, Plan};
use crate::recover::{open_keys, restore_source, verify_counts, RestoreRun};
use crate::{RecoveryError, Result};
use ibs_engine::check::CheckOptions;
use ibs_engine::Progress;
use ibs_repo::keyring::Unlock;
use ibs_repo::manifest::{BackupStatus, Catalog};
use ibs_repo::Repository;
use ibs_sources::component::{Component, ComponentKind};
use ibs_sources::kinds::{self, Tool};
use ibs_sources::mapping;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct ValidateOptions {
    pub catalog: Catalog,
    pub plan: Option<Plan>,
    pub lock_wait: Duration,
    pub progress: Arc<Progress>,
    /// Where the scratch area is made (default: the system's temporary folder).
    pub scratch_in: Option<PathBuf>,
    /// Stops the validation at the next file or component with [`ibs_engine::EngineError::Cancelled`]
    /// (the controller's cancel and job timeout); nothing is reported for a stopped run.
    pub cancel: Option<ibs_engine::CancelToken>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub enum Status {
    #[serde(rename = "PASS")]
    Pass,
    #[serde(rename = "FAIL")]
    Fail,
    #[serde(rename = "NOT VALIDATED")]
    NotValidated,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::NotValidated => "NOT VALIDATED",
        }
    }
}

/// One check: what was checked, its figures, and the result.
#[derive(Debug, Clone, Serialize)]
pub struct CheckItem {
    pub what: String,
    pub figures: String,
    pub status: Status,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ComponentValidation {
    pub name: String,
    pub kind: String,
    pub sources: Vec<String>,
    pub status: Status,
    pub checks: Vec<CheckItem>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ValidationReport {
    pub repository_id: String,
    pub backup_id: String,
    pub backup_finished: String,
    pub backup_status: String,
    pub validated_at_unix: u64,
    pub duration_ms: u64,
    /// `PASS`, `FAIL` or `INCOMPLETE`.
    pub verdict: String,
    pub repository: CheckItem,
    pub components: Vec<ComponentValidation>,
}

/// A temporary database on a server, dropped when the guard goes.
pub struct TempDatabase {
    component: Component,
    name: String,
    dropped: bool,
}

impl TempDatabase {
    /// Drops the database now, reporting the outcome (the guard then does nothing more).
    fn finish(mut self) -> std::result::Result<String, String> {
        self.dropped = true;
        self.drop_now()
    }

    fn drop_now(&self) -> std::result::Result<String, String> {
        let (spec, program) = match &self.component.kind {
            ComponentKind::Postgres(s) => (s, "psql"),
            ComponentKind::Mariadb(s) => (s, "mariadb"),
            _ => return Ok(String::new()),
        };
        let secret = spec
            .secret(&self.component.name)
            .map_err(|e| e.to_string())?;
        let u = &spec.url;
        let mut t = Tool::new(&self.component.name, spec.tool_dir.as_deref(), program);
        if program == "psql" {
            t = t
                .secret("PGPASSWORD", &secret)
                .args(["-X", "-q", "-w", "-h", &u.host]);
            if let Some(p) = u.port {
                t = t.args(["-p".to_string(), p.to_string()]);
            }
            if let Some(user) = &u.user {
                t = t.args(["-U", user]);
            }
            t = t.args([
                "-d".to_string(),
                "postgres".into(),
                "-c".into(),
                format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name),
            ]);
        } else {
            t = t.secret("MYSQL_PWD", &secret).args([
                "--no-defaults",
                "--protocol=tcp",
                "-h",
                &u.host,
            ]);
            if let Some(p) = u.port {
                t = t.arg(format!("--port={p}"));
            }
            if let Some(user) = &u.user {
                t = t.arg(format!("--user={user}"));
            }
            t = t.args([
                "-e".to_string(),
                format!("DROP DATABASE IF EXISTS `{}`", self.name),
            ]);
        }
        t.run(None).map_err(|e| e.to_string())
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        if let Err(e) = self.drop_now() {
            tracing::error!("could not drop the temporary database {}: {e}", self.name);
        }
    }
}

fn item(what: &str, figures: String, r: std::result::Result<String, String>) -> CheckItem {
    match r {
        Ok(detail) => CheckItem {
            what: what.into(),
            figures,
            status: Status::Pass,
            detail,
        },
        Err(detail) => CheckItem {
            what: what.into(),
            figures,
            status: Status::Fail,
            detail,
        },
    }
}

pub async fn validate(
    repo: Arc<Repository>,
    unlock: Arc<Unlock>,
    opts: ValidateOptions,
) -> Result<ValidationReport> {
    let started = Instant::now();
    let cat = &opts.catalog;
    open_keys(&repo, &unlock, cat).await?;

    // 1. Every chunk decrypts and verifies.
    let check = ibs_engine::check::check(
        repo.clone(),
        CheckOptions {
            read_data: true,
            unlock: Some(unlock.clone()),
            state: None,
            progress: opts.progress.clone(),
            lock_wait: opts.lock_wait,
        },
    )
    .await?;
    let ours: Vec<_> = check
        .problems
        .iter()
        .filter(|p| p.backups.is_empty() || p.backups.contains(&cat.backup_id))
        .collect();
    let figures = format!(
        "{} packs ({} read, {} bytes), {} chunks decrypted and verified, {} index segments, {} backups",
        check.packs, check.packs_read, check.bytes_read, check.chunks_verified, check.index_segments, check.backups
    );
    let repository = item(
        "repository check (decrypt depth: every chunk decrypted and re-hashed)",
        figures,
        if ours.is_empty() {
            Ok(format!(
                "no problems affecting this backup ({} elsewhere)",
                check.problems.len()
            ))
        } else {
            Err(ours
                .iter()
                .take(10)
                .map(|p| format!("{}: {}", p.object, p.detail))
                .collect::<Vec<_>>()
                .join("; "))
        },
    );

    // 2. Restore every source into the scratch area.
    let mut scratch = tempfile::Builder::new();
    scratch.prefix("ibs-validate-");
    let scratch = match &opts.scratch_in {
        Some(dir) => scratch.tempdir_in(dir),
        None => scratch.tempdir(),
    }
    .map_err(RecoveryError::io("scratch folder"))?;
    let plan = opts.plan.clone().unwrap_or_default();
    let all: Vec<String> = cat.sources.iter().map(|s| s.name.clone()).collect();
    let names: Vec<&str> = plan.components.iter().map(|p| p.name.as_str()).collect();
    // Components: planned ones first (in plan order), then the rest grouped by base name.
    let mut groups: Vec<(String, Vec<String>)> = plan
        .components
        .iter()
        .map(|p| (p.name.clone(), sources_of(&p.name, &all, &names)))
        .filter(|(_, s)| !s.is_empty())
        .collect();
    for s in &all {
        if groups.iter().any(|(_, g)| g.contains(s)) {
            continue;
        }
        let b = base_name(s).to_string();
        match groups.iter_mut().find(|(n, _)| *n == b) {
            Some((_, g)) => g.push(s.clone()),
            None => groups.push((b, vec![s.clone()])),
        }
    }
    let mut components = Vec::new();
    for (name, sources) in groups {
        ibs_engine::cancel::check(opts.cancel.as_ref())?;
        let planned = plan.get(&name);
        let mut checks = Vec::new();
        let mut sniffed: Option<&'static str> = None;
        // A source that failed when the backup was taken holds nothing to restore: it is reported
        // not validated (the backup's own status already says it failed), never passed or failed.
        let failed_at_backup = |s: &str| {
            cat.sources
                .iter()
                .any(|x| x.name == s && x.status == BackupStatus::Failed)
        };
        for s in &sources {
            if failed_at_backup(s) {
                checks.push(CheckItem {
                    what: format!("restore of source {s} into a scratch folder"),
                    figures: String::new(),
                    status: Status::NotValidated,
                    detail: "not validated: the source failed when the backup was taken; nothing was stored".into(),
                });
                continue;
            }
            let dest = scratch.path().join("sources").join(s);
            let r = restore_source(
                &repo,
                &unlock,
                &cat.backup_id,
                Some(s),
                &dest,
                &RestoreRun {
                    lock_wait: opts.lock_wait,
                    progress: &opts.progress,
                    cancel: opts.cancel.as_ref(),
                },
            )
            .await?;
            let (figures, r) = match r {
                Err(e) => (String::new(), Err(e)),
                Ok(r) => (
                    format!(
                        "{} files, {} folders, {} bytes",
                        r.entries.files, r.entries.dirs, r.bytes
                    ),
                    verify_counts(cat, s, &r).map(|()| {
                        "every chunk hash-verified; counts match the catalog".to_string()
                    }),
                ),
            };
            if r.is_ok() && sniffed.is_none() {
                sniffed = kinds::recovered::staged_export(&dest)
                    .ok()
                    .and_then(|f| kinds::recovered::sniff(&f));
            }
            checks.push(item(
                &format!("restore of source {s} into a scratch folder"),
                figures,
                r,
            ));
        }
        let restored_ok = !checks.is_empty() && checks.iter().all(|c| c.status == Status::Pass);
        let service = planned.and_then(|p| p.service.clone());
        let kind = planned
            .map(|p| p.kind.clone())
            .or_else(|| sniffed.map(String::from))
            .unwrap_or_else(|| "files".into());
        if let Some(c) = service {
            if restored_ok {
                checks.extend(
                    validate_database(&c, &sources, &scratch.path().join("sources")).await?,
                );
            }
        } else if kind != "files" && kind != "command" {
            checks.push(CheckItem {
                what: format!("{kind} restore into a temporary database"),
                figures: String::new(),
                status: Status::NotValidated,
                detail: "not validated: no database target in the plan".into(),
            });
        }
        let status = if checks.iter().any(|c| c.status == Status::Fail) {
            Status::Fail
        } else if checks.iter().any(|c| c.status == Status::NotValidated) {
            Status::NotValidated
        } else {
            Status::Pass
        };
        components.push(ComponentValidation {
            name,
            kind,
            sources,
            status,
            checks,
        });
    }
    drop(scratch);
    let verdict = if repository.status == Status::Fail
        || components.iter().any(|c| c.status == Status::Fail)
    {
        "FAIL"
    } else if components.iter().any(|c| c.status == Status::NotValidated) {
        "INCOMPLETE"
    } else {
        "PASS"
    };
    Ok(ValidationReport {
        repository_id: repo.config().id.to_string(),
        backup_id: cat.backup_id.clone(),
        backup_finished: cat.finished.clone(),
        backup_status: format!("{:?}", cat.status),
        validated_at_unix: repo.clock().now_unix().max(0) as u64,
        duration_ms: started.elapsed().as_millis() as u64,
        verdict: verdict.into(),
        repository,
        components,
    })
}

/// Writes the report as JSON to `json` and as one self-contained HTML page to `html` (the CLI's
/// `--report` pair, the controller's `DATA/reports/<job>.{json,html}`).
pub fn write_reports(report: &ValidationReport, json: &Path, html: &Path) -> Result<()> {
    let io = |p: &Path, e: std::io::Error| RecoveryError::io(format!("writing {}", p.display()))(e);
    if let Some(dir) = json.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    }
    let body = serde_json::to_vec_pretty(report).map_err(RecoveryError::Report)?;
    std::fs::write(json, body).map_err(|e| io(json, e))?;
    std::fs::write(html, crate::html::render(report)).map_err(|e| io(html, e))
}

/// Restores each database export of `c` into its own temporary database (or scratch file) and runs
/// the kind's verification there.
async fn validate_database(
    c: &Component,
    sources: &[String],
    staged: &Path,
) -> Result<Vec<CheckItem>> {
    let (c, sources, staged) = (c.clone(), sources.to_vec(), staged.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let exports = match mapping::exports_from_staged(&c, &sources, &staged) {
            Ok(e) => e,
            Err(e) => {
                return vec![item(
                    "reading the stored export",
                    String::new(),
                    Err(e.to_string()),
                )]
            }
        };
        for e in exports.iter().filter(|e| e.content != "globals") {
            let figures = format!(
                "{} tables, {} rows in the dump",
                e.rows.len(),
                e.rows.values().sum::<u64>()
            );
            let (what, r) = match &c.kind {
                ComponentKind::Postgres(spec) | ComponentKind::Mariadb(spec) => {
                    let tmp = format!("ibs_validate_{:016x}", rand::random::<u64>());
                    let mut comp = c.clone();
                    let url = spec.url.with_name(Some(&tmp));
                    match &mut comp.kind {
                        ComponentKind::Postgres(s) | ComponentKind::Mariadb(s) => {
                            s.url = url.clone()
                        }
                        _ => {}
                    }
                    let guard = TempDatabase {
                        component: comp.clone(),
                        name: tmp.clone(),
                        dropped: false,
                    };
                    let mut e1 = e.clone();
                    if e1.content == "all-databases" {
                        e1.content = "database".into();
                    }
                    let r = service_restore_one(&comp, &e1, &staged, &url.to_string());
                    let dropped = guard.finish();
                    let r = match (r, dropped) {
                        (Ok(s), Ok(_)) => Ok(format!("{s}; temporary database {tmp} dropped")),
                        (Ok(s), Err(d)) => Err(format!(
                            "{s}; but dropping the temporary database {tmp} failed: {d}"
                        )),
                        (Err(x), _) => Err(x),
                    };
                    (
                        format!(
                            "restore of {} into temporary database {tmp}, table row counts",
                            e.file
                        ),
                        r,
                    )
                }
                ComponentKind::Sqlite { .. } | ComponentKind::Redis(_) => {
                    let t = staged.join(format!(".validate-{}", c.name));
                    let target = if matches!(c.kind, ComponentKind::Sqlite { .. }) {
                        t.join("db.sqlite")
                    } else {
                        t
                    };
                    (
                        format!(
                            "restore of {} into a scratch copy, table/key counts",
                            e.file
                        ),
                        service_restore_one(&c, e, &staged, &target.display().to_string()),
                    )
                }
                _ => continue,
            };
            out.push(item(&what, figures, r));
        }
        out
    })
    .await
    .map_err(RecoveryError::task("validation task"))
}

fn service_restore_one(
    c: &Component,
    e: &kinds::ExportInfo,
    staged: &Path,
    target: &str,
) -> std::result::Result<String, String> {
    mapping::restore(
        c,
        std::slice::from_ref(e),
        staged,
        &kinds::RestoreTarget {
            target: target.into(),
            force: false,
        },
    )
    .map_err(|x| x.to_string())
}
