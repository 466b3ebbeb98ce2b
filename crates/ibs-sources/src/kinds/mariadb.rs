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
//! refused unless `force`, which drops and recreates it; the `mariadb` client replays the dump, and
//! the tables listed from `information_schema` are counted (names sent as hex and quoted by the
//! server, never taken from the dump) and compared with the backup's counts both ways. The client
//! runs in `--binary-mode`, so its own commands (`\!` and the like) are off while it reads a dump
//! or a script. An all-databases backup restores to a server URL without a database and always
//! needs `force` (it replaces databases of the same names).

use super::scan::MysqlInsertScanner;
use super::{
    compare_counts, compare_exact, BackupPlan, Cause, ComponentError, ConnUrl, ExportInfo,
    ExportReader, PlannedExport, RestoreTarget, Secret, ServiceSpec, SharedLog, Tool,
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

/// The `mariadb` client in batch mode. `--binary-mode` turns its own commands (`\!` runs a shell
/// command, `source`, `tee`, `connect`) off for everything it reads, dumps included.
fn client(comp: &str, spec: &ServiceSpec, url: &ConnUrl, secret: &Secret) -> Tool {
    tool(comp, spec, url, secret, "mariadb").args(["-N", "-B", "--binary-mode"])
}

/// `` `name` `` as an identifier: the key of a table in row-count maps (as mariadb-dump writes
/// names), never put into SQL.
fn ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// `text` as an SQL expression that holds no quote at all: hex digits, converted by the server.
fn hex_str(s: &str) -> String {
    format!("CONVERT(X'{}' USING utf8mb4)", hex::encode(s))
}

/// An SQL expression for `name` quoted as an identifier by the server (backticks doubled).
fn ident_expr(name: &str) -> String {
    format!("CONCAT('`', REPLACE({}, '`', '``'), '`')", hex_str(name))
}

/// Runs `statement` with `name` quoted by the server in place of `{}`: no name ever passes through
/// a client-side quoting rule.
fn with_ident(statement: &str, name: &str) -> String {
    let (a, b) = statement.split_once("{}").expect("placeholder");
    format!(
        "EXECUTE IMMEDIATE CONCAT('{a}', {}, '{b}');\n",
        ident_expr(name)
    )
}

/// The server's version as it reports it (`SELECT VERSION()`, e.g. `10.11.6-MariaDB-0+deb12u1`).
pub fn server_version(
    comp: &str,
    spec: &ServiceSpec,
    url: &ConnUrl,
) -> Result<String, ComponentError> {
    let secret = spec.secret(comp)?;
    let out = client(comp, spec, url, &secret)
        .args(["-e", "SELECT VERSION()"])
        .run(None)?;
    super::version::reported(comp, &out)
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
        client(comp, spec, &turl, &secret).run_script(&format!("SET NAMES utf8mb4;\n{script}"))
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
            let found = count_rows(comp, spec, &turl, &secret, None)?;
            compare_counts("all databases", &expect, &found).map_err(&other)?;
            return Ok(format!(
                "all databases: {} tables, {} rows verified",
                expect.len(),
                expect.values().sum::<u64>()
            ));
        }
    };
    let exists = sql(&format!(
        "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {};",
        hex_str(&db)
    ))?;
    if exists.trim() != "0" {
        let n = sql(&format!(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {};",
            hex_str(&db)
        ))?;
        if n.trim() != "0" {
            if !target.force {
                return Err(other(format!(
                    "target database {db} is not empty ({} tables); use --force to replace it",
                    n.trim()
                )));
            }
            sql(&(with_ident("DROP DATABASE {}", &db) + &with_ident("CREATE DATABASE {}", &db)))?;
        }
    } else {
        sql(&with_ident("CREATE DATABASE {}", &db))?;
    }
    client(comp, spec, &turl, &secret)
        .args(["--", &db])
        .run(Some(input()?))?;
    let found = count_rows(comp, spec, &turl, &secret, Some(&db))?;
    compare_exact(&format!("database {db}"), &e.rows, &found).map_err(&other)?;
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

/// Lists the base tables of `db` (or of every user database, keyed `` `db`.`table` ``) from
/// `information_schema` and counts each one's rows. Names travel as hex and are quoted by the server
/// (`EXECUTE IMMEDIATE`), so no SQL is ever made from a name, and a name holding a newline, a quote
/// or a backtick is counted like any other.
fn count_rows(
    comp: &str,
    spec: &ServiceSpec,
    url: &ConnUrl,
    secret: &Secret,
    db: Option<&str>,
) -> Result<BTreeMap<String, u64>, ComponentError> {
    let err = |d: String| ComponentError::new(comp, Cause::Other, format!("counting rows: {d}"));
    let scope = match db {
        Some(d) => format!("TABLE_SCHEMA = {}", hex_str(d)),
        None => "TABLE_SCHEMA NOT IN ('information_schema', 'performance_schema', 'sys')".into(),
    };
    let mut c = client(comp, spec, url, secret);
    if let Some(db) = db {
        c = c.args(["--", db]);
    }
    let list = c.clone().run_script(&format!(
        "SELECT HEX(TABLE_SCHEMA), HEX(TABLE_NAME) FROM information_schema.TABLES \
         WHERE TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') AND {scope} ORDER BY 1, 2;\n"
    ))?;
    let text = |h: &str| {
        hex::decode(h)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| err(format!("unexpected name {h:?}")))
    };
    let mut tables = Vec::new();
    for line in list.lines().filter(|l| !l.is_empty()) {
        let (s, t) = line
            .split_once('\t')
            .ok_or_else(|| err(format!("unexpected line {line:?}")))?;
        tables.push((text(s)?, text(t)?));
    }
    if tables.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut script = String::from("SET NAMES utf8mb4;\n");
    for (s, t) in &tables {
        script.push_str(&format!(
            "EXECUTE IMMEDIATE CONCAT('SELECT COUNT(*) FROM ', {}, '.', {});\n",
            ident_expr(s),
            ident_expr(t)
        ));
    }
    let out = c.run_script(&script)?;
    let counts: Vec<u64> = out
        .lines()
        .map(|l| l.trim().parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|e| err(format!("unexpected output ({e})")))?;
    if counts.len() != tables.len() {
        return Err(err(format!(
            "{} counts for {} tables",
            counts.len(),
            tables.len()
        )));
    }
    Ok(tables
        .into_iter()
        .zip(counts)
        .map(|((s, t), n)| match db {
            Some(_) => (ident(&t), n),
            None => (format!("{}.{}", ident(&s), ident(&t)), n),
        })
        .collect())
}
