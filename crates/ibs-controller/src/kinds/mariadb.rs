//! The `mariadb` kind (MariaDB and MySQL): `mariadb-dump --single-transaction --routines --events
//! --triggers`, consistent for InnoDB tables while writers go on (one consistent-read snapshot; no
//! global lock is held for the dump's duration).
//!
//! With a database in the URL the dump is made *without* `--databases`, so it holds no
//! `CREATE DATABASE`/`USE` lines and restores into any database name; without one, `--all-databases`.
//! One source named after the component, file `DB.sql` (or `all-databases.sql`). `--skip-dump-date`
//! and `--order-by-primary` keep the output stable from one day to the next, for deduplication.
//! Row counts come from the dump's INSERT lines while it streams.
//!
//! Restore (`--target mysql://…/DB`): creates the database if missing; a database with tables is
//! refused unless `force`, which drops and recreates it; the `mariadb` client replays the dump and
//! each table's row count is compared with the backup's. An all-databases backup restores to a
//! server URL without a database and always needs `force` (it replaces databases of the same names).

use super::scan::MysqlInsertScanner;
use super::{
    compare_counts, BackupPlan, Cause, ComponentError, ConnUrl, ExportInfo, ExportReader,
    PlannedExport, RestoreTarget, Secret, ServiceSpec, SharedLog, Tool,
};
use std::collections::BTreeMap;
use std::path::Path;

pub const SCHEMES: &[&str] = &["mysql", "mariadb"];

fn tool(comp: &str, spec: &ServiceSpec, url: &ConnUrl, secret: &Secret, program: &str) -> Tool {
    let mut t = Tool::new(comp, spec.tool_dir.as_deref(), program)
        .secret("MYSQL_PWD", secret)
        // The client's option files could point elsewhere; the URL decides.
        .arg("--no-defaults")
        .args(["-h", &url.host]);
    if program == "mariadb" {
        t = t.arg("--connect-timeout=10");
    }
    if let Some(p) = url.port {
        t = t.arg(format!("--port={p}")).arg("--protocol=tcp");
    }
    if let Some(u) = &url.user {
        t = t.arg(format!("--user={u}"));
    }
    t
}

fn client(comp: &str, spec: &ServiceSpec, url: &ConnUrl, secret: &Secret) -> Tool {
    tool(comp, spec, url, secret, "mariadb").args(["-N", "-B"])
}

/// `'text'` as an SQL string literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `` `name` `` as an identifier.
fn ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

pub fn plan(comp: &str, spec: &ServiceSpec, log: SharedLog) -> Result<BackupPlan, ComponentError> {
    let secret = spec.secret(comp)?;
    let url = &spec.url;
    let mut t = tool(comp, spec, url, &secret, "mariadb-dump").args([
        "--single-transaction",
        "--routines",
        "--events",
        "--triggers",
        "--skip-dump-date",
        "--order-by-primary",
        "--hex-blob",
    ]);
    let (file, content) = match &url.name {
        Some(db) => {
            t = t.arg("--").arg(db);
            (
                format!("{}.sql", super::postgres::safe_part(db)),
                "database",
            )
        }
        None => {
            // The `mysql` schema (accounts, grants) is replayed as table data: FLUSH PRIVILEGES
            // after it makes the restored accounts take effect without a server restart.
            t = t.args(["--all-databases", "--flush-privileges"]);
            ("all-databases.sql".to_string(), "all-databases")
        }
    };
    let info = ExportInfo {
        source: comp.into(),
        file: file.clone(),
        content: content.into(),
        database: url.name.clone(),
        ..Default::default()
    };
    let reader = ExportReader::new(
        t,
        info,
        Some(Box::<MysqlInsertScanner>::default()),
        log.clone(),
    );
    Ok(BackupPlan {
        exports: vec![PlannedExport {
            source: comp.into(),
            file,
            reader: Box::new(reader),
        }],
        log,
    })
}

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
    let e = exports
        .first()
        .ok_or_else(|| other("the backup recorded no export".into()))?;
    let file = super::staged_file(staged, e).map_err(&other)?;
    let input =
        || std::fs::File::open(&file).map_err(|x| other(format!("{}: {x}", file.display())));
    let sql = |script: &str| {
        client(comp, spec, &turl, &secret)
            .args(["-e", script])
            .run(None)
    };
    let db = match (e.content.as_str(), &turl.name) {
        ("database", Some(db)) => db.clone(),
        ("database", None) => return Err(other("the target URL must name a database".into())),
        (_, Some(_)) => {
            return Err(other(
                "this backup holds all databases: give a server URL without a database name".into(),
            ))
        }
        (_, None) => {
            if !target.force {
                return Err(other(
                    "restoring all databases replaces the databases of the same names on the target server; use --force".into(),
                ));
            }
            client(comp, spec, &turl, &secret).run(Some(input()?))?;
            let expect: BTreeMap<String, u64> = e
                .rows
                .iter()
                .filter(|(t, _)| !SERVER_MAINTAINED.contains(&t.as_str()))
                .map(|(t, n)| (t.clone(), *n))
                .collect();
            let found = count_rows(comp, spec, &turl, &secret, None, expect.keys())?;
            compare_counts("all databases", &expect, &found).map_err(&other)?;
            return Ok(format!(
                "all databases: {} tables, {} rows verified",
                expect.len(),
                expect.values().sum::<u64>()
            ));
        }
    };
    let exists = sql(&format!(
        "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {}",
        lit(&db)
    ))?;
    if exists.trim() != "0" {
        let n = sql(&format!(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {}",
            lit(&db)
        ))?;
        if n.trim() != "0" {
            if !target.force {
                return Err(other(format!(
                    "target database {db} is not empty ({} tables); use --force to replace it",
                    n.trim()
                )));
            }
            sql(&format!("DROP DATABASE {}", ident(&db)))?;
            sql(&format!("CREATE DATABASE {}", ident(&db)))?;
        }
    } else {
        sql(&format!("CREATE DATABASE {}", ident(&db)))?;
    }
    client(comp, spec, &turl, &secret)
        .args(["--", &db])
        .run(Some(input()?))?;
    let found = count_rows(comp, spec, &turl, &secret, Some(&db), e.rows.keys())?;
    compare_counts(&format!("database {db}"), &e.rows, &found).map_err(&other)?;
    Ok(format!(
        "{db}: {} tables, {} rows verified",
        e.rows.len(),
        e.rows.values().sum::<u64>()
    ))
}

/// Tables of the `mysql` schema that the server itself fills (statistics, logs, replication
/// state): their row counts after a restore say nothing about the restore, so verification skips
/// them.
const SERVER_MAINTAINED: &[&str] = &[
    "`mysql`.`innodb_index_stats`",
    "`mysql`.`innodb_table_stats`",
    "`mysql`.`column_stats`",
    "`mysql`.`index_stats`",
    "`mysql`.`table_stats`",
    "`mysql`.`general_log`",
    "`mysql`.`slow_log`",
    "`mysql`.`gtid_slave_pos`",
    "`mysql`.`transaction_registry`",
];

fn count_rows<'a>(
    comp: &str,
    spec: &ServiceSpec,
    url: &ConnUrl,
    secret: &Secret,
    db: Option<&str>,
    tables: impl Iterator<Item = &'a String>,
) -> Result<BTreeMap<String, u64>, ComponentError> {
    let tables: Vec<&String> = tables.collect();
    if tables.is_empty() {
        return Ok(BTreeMap::new());
    }
    let script: String = tables
        .iter()
        .map(|t| format!("SELECT COUNT(*) FROM {t};\n"))
        .collect();
    let mut c = client(comp, spec, url, secret);
    if let Some(db) = db {
        c = c.args(["--", db]);
    }
    let out = c.run_script(&script)?;
    Ok(tables
        .into_iter()
        .cloned()
        .zip(out.lines().filter_map(|l| l.trim().parse::<u64>().ok()))
        .collect())
}
