//! Export descriptions rebuilt from the stored exports alone, for restores that run without the
//! controller's job records (cloud recovery on a bare machine, backup validation).
//!
//! A backup job records, per export, its source, file name, content and the row counts the export
//! held ([`super::ExportInfo`]). Those records live in the controller's SQLite database, which is gone after
//! a catastrophic loss. The same figures are in the stored export itself: this module restores
//! nothing, it reads the export files staged under `STAGED/SOURCE/` and counts their rows with the
//! very scanners the backup used (pg `COPY` blocks, MariaDB `INSERT` tuples, SQLite `count(*)`), so
//! [`crate::mapping::restore`] then verifies the restored database against the dump's own counts.

use super::pgscan::PgCopyScanner;
use super::scan::{MysqlInsertScanner, Scanner};
use super::{Cause, ComponentError, ExportInfo};
use std::io::Read;
use std::path::{Path, PathBuf};

/// What an export file holds, recognised from its first bytes.
pub fn sniff(file: &Path) -> Option<&'static str> {
    let mut head = [0u8; 512];
    let n = std::fs::File::open(file)
        .and_then(|mut f| f.read(&mut head))
        .ok()?;
    let head = &head[..n];
    let text = String::from_utf8_lossy(head);
    if head.starts_with(b"SQLite format 3\0") {
        Some("sqlite")
    } else if head.starts_with(b"REDIS") {
        Some("redis")
    } else if text.contains("PostgreSQL database dump")
        || text.contains("PostgreSQL database cluster dump")
    {
        Some("postgres")
    } else if text.contains("MariaDB dump") || text.contains("MySQL dump") {
        Some("mariadb")
    } else {
        None
    }
}

/// The one export file restored under `dir` (a stream source holds exactly one file).
pub fn staged_export(dir: &Path) -> Result<PathBuf, String> {
    if dir.is_file() {
        return Ok(dir.to_path_buf());
    }
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let e = e.map_err(|e| e.to_string())?;
        if e.file_type().map(|t| t.is_file()).unwrap_or(false) {
            files.push(e.path());
        }
    }
    match files.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!("no export file under {}", dir.display())),
        _ => Err(format!(
            "{} files under {}: an export source holds exactly one",
            files.len(),
            dir.display()
        )),
    }
}

fn scan_file(
    file: &Path,
    mut s: Box<dyn Scanner>,
) -> Result<std::collections::BTreeMap<String, u64>, String> {
    let mut f = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("{}: {e}", file.display()))?;
        if n == 0 {
            break;
        }
        s.feed(&buf[..n]);
    }
    Ok(s.finish())
}

/// The service kind a staged export belongs to (what [`export_info`] reads it as).
#[derive(Debug, Clone, Copy)]
pub enum StagedKind<'a> {
    Postgres,
    Mariadb,
    Sqlite,
    /// Redis, with the database number its URL names.
    Redis {
        database: Option<&'a str>,
    },
}

/// Rebuilds the export record of `source` of service component `component`, from the source staged
/// under `staged/SOURCE` (one folder per source, as `ibs_engine::restore` writes them).
pub fn export_info(
    component: &str,
    kind: StagedKind<'_>,
    source: &str,
    staged: &Path,
) -> Result<ExportInfo, ComponentError> {
    let other = |d: String| ComponentError::new(component, Cause::Other, d);
    let file = staged_export(&staged.join(source)).map_err(&other)?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".sql").unwrap_or(&name).to_string();
    let mut info = ExportInfo {
        source: source.to_string(),
        file: name.clone(),
        ..Default::default()
    };
    match kind {
        StagedKind::Postgres => {
            if source.ends_with(".globals") {
                info.content = "globals".into();
            } else {
                info.content = "database".into();
                info.database = Some(stem);
                info.rows = scan_file(&file, Box::<PgCopyScanner>::default()).map_err(&other)?;
            }
        }
        StagedKind::Mariadb => {
            let all = name == "all-databases.sql";
            info.content = if all { "all-databases" } else { "database" }.into();
            info.database = (!all).then_some(stem);
            info.rows = scan_file(&file, Box::<MysqlInsertScanner>::default()).map_err(&other)?;
        }
        StagedKind::Sqlite => {
            info.content = "sqlite".into();
            let conn = rusqlite::Connection::open_with_flags(
                &file,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .map_err(|e| other(format!("opening the stored sqlite export: {e}")))?;
            info.rows = super::sqlite::row_counts(&conn)
                .map_err(|e| other(format!("counting rows of the stored export: {e}")))?;
        }
        StagedKind::Redis { database } => {
            info.content = "rdb".into();
            info.database = database.map(str::to_string);
        }
    }
    Ok(info)
}
