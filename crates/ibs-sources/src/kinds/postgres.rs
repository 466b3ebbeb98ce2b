//! The `postgres` kind: `pg_dump --format=plain` per database (transactionally consistent: one
//! REPEATABLE READ snapshot per database, taken while writers go on), and `pg_dumpall
//! --globals-only` for roles and tablespaces when the URL names no database.
//!
//! Sources: with a database in the URL, one source named after the component (file `DB.sql`);
//! without, `NAME.globals` (`globals.sql`) and `NAME.db-DB` (`DB.sql`) for every database that
//! accepts connections (templates excluded). Plain SQL, uncompressed, in pg_dump's stable order
//! deduplicates well from one day to the next; the repository compresses.
//!
//! Row counts are taken from the dump's `COPY` blocks while it streams (same snapshot), by a scanner
//! that lexes the dump as psql does (`pgscan.rs`). Database names reach the tools only through
//! `PGDATABASE`, never as `-d NAME` (see [`tool`]).
//!
//! Restore (`--target postgresql://…/DB`): creates the database if missing; a target with user
//! relations is refused unless `force`, which drops and recreates it; then `psql -1 -v
//! ON_ERROR_STOP=1` replays the dump in one transaction, and the tables listed from the restored
//! database's catalog are counted (names quoted by the server, never taken from the dump) and
//! compared with the backup's counts both ways: every table of the dump holds its rows, and no
//! other table holds any. A component holding all databases restores, to a server URL without a database,
//! the globals (errors such as "role already exists" are tolerated) and then every database under
//! its own name; to a URL with a database, only if it holds exactly one database.

use super::pgscan::{self, PgCopyScanner};
use super::{
    compare_exact, BackupPlan, Cause, ComponentError, ConnUrl, ExportInfo, ExportReader,
    PlannedExport, RestoreTarget, Secret, ServiceSpec, SharedLog, Tool,
};
use std::collections::BTreeMap;
use std::path::Path;

pub const SCHEMES: &[&str] = &["postgresql", "postgres"];

/// A libpq client tool connected to `db`. The database name goes in `PGDATABASE`, which libpq takes
/// literally: given as `-d NAME`, a name holding `=` or starting with `postgresql://` would be read
/// as a connection string and could point the tool, and the password, at another server.
fn tool(
    comp: &str,
    spec: &ServiceSpec,
    url: &ConnUrl,
    secret: &Secret,
    program: &str,
    db: &str,
) -> Tool {
    let mut t = Tool::new(comp, spec.tool_dir.as_deref(), program)
        .secret("PGPASSWORD", secret)
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGDATABASE", db)
        .args(["-w", "-h", &url.host]);
    if let Some(p) = url.port {
        t = t.args(["-p".to_string(), p.to_string()]);
    }
    if let Some(u) = &url.user {
        t = t.args(["-U", u]);
    }
    t
}

fn psql(comp: &str, spec: &ServiceSpec, url: &ConnUrl, secret: &Secret, db: &str) -> Tool {
    tool(comp, spec, url, secret, "psql", db).args(["-X", "-q", "-A", "-t"])
}

/// A database name as a file/source name part.
pub(crate) fn safe_part(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    s.trim_start_matches('.').to_string()
}

/// The server's version as it reports it (`SHOW server_version`, e.g. `16.4 (Debian 16.4-1)`), on
/// the server `url` names (database `postgres` when the URL names none).
pub fn server_version(
    comp: &str,
    spec: &ServiceSpec,
    url: &ConnUrl,
) -> Result<String, ComponentError> {
    let secret = spec.secret(comp)?;
    let db = url.name.as_deref().unwrap_or("postgres");
    let out = psql(comp, spec, url, &secret, db)
        .args(["-c", "SHOW server_version"])
        .run(None)?;
    super::version::reported(comp, &out)
}

/// Plans the exports of one backup. Without a database in the URL, lists the databases first
/// (a connection or authentication failure shows here).
pub fn plan(comp: &str, spec: &ServiceSpec, log: SharedLog) -> Result<BackupPlan, ComponentError> {
    let secret = spec.secret(comp)?;
    let url = &spec.url;
    let dump = |db: &str, source: String, file: String, content: &str| {
        let t = tool(comp, spec, url, &secret, "pg_dump", db).arg("--format=plain");
        let info = ExportInfo {
            source: source.clone(),
            file: file.clone(),
            content: content.into(),
            database: Some(db.into()),
            ..Default::default()
        };
        PlannedExport {
            source,
            file,
            reader: Box::new(ExportReader::new(
                t,
                info,
                Some(Box::<PgCopyScanner>::default()),
                log.clone(),
            )),
        }
    };
    let mut exports = Vec::new();
    match &url.name {
        Some(db) => exports.push(dump(
            db,
            comp.into(),
            format!("{}.sql", safe_part(db)),
            "database",
        )),
        None => {
            // As JSON: a name may hold a newline.
            let list = psql(comp, spec, url, &secret, "postgres")
                .args([
                    "-c",
                    "SELECT COALESCE(pg_catalog.json_agg(datname ORDER BY datname), '[]') \
                     FROM pg_catalog.pg_database WHERE datallowconn AND NOT datistemplate",
                ])
                .run(None)?;
            let list: Vec<String> = serde_json::from_str(list.trim()).map_err(|e| {
                ComponentError::new(comp, Cause::Other, format!("listing databases: {e}"))
            })?;
            let globals = tool(comp, spec, url, &secret, "pg_dumpall", "postgres").args([
                "--globals-only",
                "-l",
                "postgres",
            ]);
            let source = format!("{comp}.globals");
            exports.push(PlannedExport {
                source: source.clone(),
                file: "globals.sql".into(),
                reader: Box::new(ExportReader::new(
                    globals,
                    ExportInfo {
                        source,
                        file: "globals.sql".into(),
                        content: "globals".into(),
                        ..Default::default()
                    },
                    None,
                    log.clone(),
                )),
            });
            let mut used = std::collections::HashSet::new();
            for db in &list {
                let mut part = safe_part(db);
                while !used.insert(part.clone()) {
                    part.push('_');
                }
                exports.push(dump(
                    db,
                    format!("{comp}.db-{part}"),
                    format!("{part}.sql"),
                    "database",
                ));
            }
        }
    }
    Ok(BackupPlan { exports, log })
}

fn one_value(out: &str) -> String {
    out.lines().next().unwrap_or("").trim().to_string()
}

/// Restores the exports found under `staged` (one folder per source) into `target`.
pub fn restore(
    comp: &str,
    spec: &ServiceSpec,
    exports: &[ExportInfo],
    staged: &Path,
    target: &RestoreTarget,
) -> Result<String, ComponentError> {
    let other = |d: String| ComponentError::new(comp, Cause::Other, d);
    let turl =
        ConnUrl::parse(&target.target, SCHEMES).map_err(|e| other(format!("target: {e}")))?;
    let secret = spec.secret(comp)?;
    let dbs: Vec<&ExportInfo> = exports.iter().filter(|e| e.content == "database").collect();
    let plan: Vec<(&ExportInfo, String)> = match (&turl.name, dbs.as_slice()) {
        (Some(t), [one]) => vec![(*one, t.clone())],
        (Some(_), _) => {
            return Err(other(format!(
                "the backup holds {} databases: give a target URL without a database name to restore them all",
                dbs.len()
            )))
        }
        (None, _) if exports.iter().any(|e| e.content == "globals") => dbs
            .iter()
            .map(|e| (*e, e.database.clone().unwrap_or_default()))
            .collect(),
        (None, _) => return Err(other("the target URL must name a database".into())),
    };
    if turl.name.is_none() {
        if let Some(g) = exports.iter().find(|e| e.content == "globals") {
            let file = super::staged_file(staged, g).map_err(&other)?;
            // Roles that already exist make psql report errors here; they are expected.
            psql(comp, spec, &turl, &secret, "postgres")
                .args(["-f".to_string(), file.display().to_string()])
                .run(None)?;
        }
    }
    let mut summary = Vec::new();
    for (e, db) in &plan {
        let file = super::staged_file(staged, e).map_err(&other)?;
        let admin = |script: &str| {
            psql(comp, spec, &turl, &secret, "postgres")
                .args(["-v", "ON_ERROR_STOP=1", "-v", &format!("d={db}")])
                .run_script(script)
        };
        let exists = one_value(&admin("SELECT 1 FROM pg_database WHERE datname = :'d';\n")?) == "1";
        if exists {
            let n = one_value(
                &psql(comp, spec, &turl, &secret, db)
                    .args(["-c", "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                        WHERE c.relkind IN ('r','p','v','m','S','f') AND n.nspname NOT IN ('pg_catalog','information_schema') \
                        AND n.nspname !~ '^pg_toast'"])
                    .run(None)?,
            );
            if n != "0" {
                if !target.force {
                    return Err(other(format!(
                        "target database {db} is not empty ({n} relations); use --force to replace it"
                    )));
                }
                admin("DROP DATABASE :\"d\" WITH (FORCE);\nCREATE DATABASE :\"d\";\n")?;
            }
        } else {
            admin("CREATE DATABASE :\"d\";\n")?;
        }
        psql(comp, spec, &turl, &secret, db)
            .args(["-1", "-v", "ON_ERROR_STOP=1", "-f"])
            .arg(file.display().to_string())
            .run(None)?;
        let found = count_rows(comp, spec, &turl, &secret, db)?;
        let expected: BTreeMap<String, u64> = e
            .rows
            .iter()
            .map(|(k, n)| (pgscan::normalize_key(k).unwrap_or_else(|| k.clone()), *n))
            .collect();
        compare_exact(&format!("database {db}"), &expected, &found).map_err(&other)?;
        summary.push(format!(
            "{db}: {} tables, {} rows verified",
            e.rows.len(),
            e.rows.values().sum::<u64>()
        ));
    }
    Ok(summary.join("; "))
}

/// Lists the user tables of `db` from its catalog and counts each one's rows; the server quotes
/// the names (`format('%I.%I')`) and builds each count query (`\gexec`), so no SQL is ever made
/// from a name. Keys are [`pgscan::pg_key`]s. Tables that belong to an extension are left out
/// (pg_dump does not dump their rows); `search_path` is emptied and row security turned off, so
/// neither a user's function nor a policy runs during the count.
fn count_rows(
    comp: &str,
    spec: &ServiceSpec,
    url: &ConnUrl,
    secret: &Secret,
    db: &str,
) -> Result<BTreeMap<String, u64>, ComponentError> {
    const SCRIPT: &str = "SELECT pg_catalog.set_config('search_path', '', false) \\g /dev/null
SET row_security = off;
SELECT pg_catalog.format('SELECT pg_catalog.json_build_array(%L::text, %L::text, pg_catalog.count(*)) FROM %I.%I',
    n.nspname, c.relname, n.nspname, c.relname)
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'
    AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
      WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid AND d.deptype = 'e')
  ORDER BY n.nspname, c.relname \\gexec
";
    let out = psql(comp, spec, url, secret, db)
        .args(["-v", "ON_ERROR_STOP=1"])
        .run_script(SCRIPT)?;
    let mut found = BTreeMap::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let (schema, table, n): (String, String, u64) =
            serde_json::from_str(line.trim()).map_err(|e| {
                ComponentError::new(
                    comp,
                    Cause::Other,
                    format!("counting rows in {db}: unexpected output ({e})"),
                )
            })?;
        found.insert(pgscan::pg_key(&schema, &table), n);
    }
    Ok(found)
}
