//! The `sqlite` kind: SQLite's online backup API (through rusqlite), consistent while a writer holds
//! the database.
//!
//! **The one staging exception.** SQLite's backup API writes into another database, not into a
//! stream, so the copy goes to a temporary file under `DATA/tmp` first; the file is unlinked as soon
//! as it is opened for streaming, so nothing is left behind even if the job dies. The copy is made
//! in a single `step(-1)`: one read transaction covers every page, so the copy is one committed
//! state. (Stepping page by page would let a writer's commit restart the copy over and over.)
//! In WAL mode writers go on during the copy; in rollback-journal mode a writer waits for the copy's
//! read lock (its `busy_timeout` should exceed the copy time).
//!
//! Row counts per table are taken from the copy before it is streamed. Restore writes the file to
//! the target path (refused if it exists unless `force`; then its `-wal`/`-shm`/`-journal` files are
//! removed too) and compares the row counts.

use super::{
    compare_counts, BackupPlan, Cause, ComponentError, ExportInfo, PlannedExport, RestoreTarget,
    SharedLog,
};
use rusqlite::{Connection, OpenFlags};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Rows per table of the database at `path`.
pub fn row_counts(conn: &Connection) -> rusqlite::Result<BTreeMap<String, u64>> {
    let names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out = BTreeMap::new();
    for n in names {
        let c: i64 = conn.query_row(&format!("SELECT count(*) FROM {}", quote(&n)), [], |r| {
            r.get(0)
        })?;
        out.insert(quote(&n), c as u64);
    }
    Ok(out)
}

/// Copies `src` with the online backup API into a new file at `dest` and counts its rows.
pub fn snapshot(src: &Path, dest: &Path) -> Result<BTreeMap<String, u64>, String> {
    let from = Connection::open_with_flags(
        src,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("opening {}: {e}", src.display()))?;
    from.busy_timeout(Duration::from_secs(60))
        .map_err(|e| e.to_string())?;
    let mut to = Connection::open(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    {
        let b = rusqlite::backup::Backup::new(&from, &mut to).map_err(|e| e.to_string())?;
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        loop {
            match b.step(-1).map_err(|e| format!("online backup: {e}"))? {
                rusqlite::backup::StepResult::Done => break,
                _ if std::time::Instant::now() > deadline => {
                    return Err("online backup: the database stayed locked for 300 s".into())
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    row_counts(&to).map_err(|e| e.to_string())
}

/// The copy, streamed: made on the first read, unlinked once open, recorded in the log at the end.
struct SqliteExport {
    comp: String,
    src: PathBuf,
    tmp_dir: PathBuf,
    file: Option<std::fs::File>,
    info: ExportInfo,
    log: SharedLog,
    done: bool,
}

impl SqliteExport {
    fn start(&mut self) -> Result<(), ComponentError> {
        let err = |d: String| ComponentError::new(&self.comp, Cause::Other, d);
        std::fs::create_dir_all(&self.tmp_dir)
            .map_err(|e| err(format!("{}: {e}", self.tmp_dir.display())))?;
        let tmp = self
            .tmp_dir
            .join(format!("sqlite-{}-{}.db", self.comp, rand::random::<u64>()));
        let r = snapshot(&self.src, &tmp).and_then(|rows| {
            let f = std::fs::File::open(&tmp).map_err(|e| e.to_string())?;
            Ok((rows, f))
        });
        let _ = std::fs::remove_file(&tmp);
        let (rows, f) = r.map_err(err)?;
        self.info.rows = rows;
        self.file = Some(f);
        Ok(())
    }
}

impl Read for SqliteExport {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.file.is_none() {
            if let Err(e) = self.start() {
                self.done = true;
                let m = e.to_string();
                self.log
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .failures
                    .push(e);
                return Err(std::io::Error::other(m));
            }
        }
        let n = self.file.as_mut().expect("open").read(buf)?;
        if n == 0 {
            self.done = true;
            self.file = None;
            self.log
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .done
                .push(self.info.clone());
        }
        Ok(n)
    }
}

/// The version of the SQLite library this build makes (and restores) copies with: a `sqlite`
/// component has no server, the library linked into ibs is what reads and writes the file.
pub fn library_version() -> String {
    rusqlite::version().to_string()
}

pub fn plan(comp: &str, path: &Path, tmp_dir: &Path, log: SharedLog) -> BackupPlan {
    let file = path
        .file_name()
        .map(|n| super::postgres::safe_part(&n.to_string_lossy()))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "database.sqlite".into());
    let info = ExportInfo {
        source: comp.into(),
        file: file.clone(),
        content: "sqlite".into(),
        ..Default::default()
    };
    BackupPlan {
        exports: vec![PlannedExport {
            source: comp.into(),
            file,
            reader: Box::new(SqliteExport {
                comp: comp.into(),
                src: path.to_path_buf(),
                tmp_dir: tmp_dir.to_path_buf(),
                file: None,
                info,
                log: log.clone(),
                done: false,
            }),
        }],
        log,
    }
}

pub fn restore(
    comp: &str,
    exports: &[ExportInfo],
    staged: &Path,
    target: &RestoreTarget,
) -> Result<String, ComponentError> {
    let other = |d: String| ComponentError::new(comp, Cause::Other, d);
    let e = exports
        .first()
        .ok_or_else(|| other("the backup recorded no export".into()))?;
    let dest = PathBuf::from(&target.target);
    if !dest.is_absolute() {
        return Err(other(
            "the target of a sqlite component is an absolute file path".into(),
        ));
    }
    if dest.exists() {
        if !target.force {
            return Err(other(format!(
                "{} exists; use --force to replace it",
                dest.display()
            )));
        }
        for suffix in ["-wal", "-shm", "-journal"] {
            let mut p = dest.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(p));
        }
    }
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|x| other(format!("{}: {x}", parent.display())))?;
    }
    let file = super::staged_file(staged, e).map_err(&other)?;
    super::copy_into_place(&file, &dest).map_err(&other)?;
    let conn = Connection::open_with_flags(&dest, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|x| other(format!("opening the restored database: {x}")))?;
    let found = row_counts(&conn).map_err(|x| other(format!("counting rows: {x}")))?;
    compare_counts("sqlite", &e.rows, &found).map_err(other)?;
    Ok(format!(
        "{}: {} tables, {} rows verified",
        dest.display(),
        e.rows.len(),
        e.rows.values().sum::<u64>()
    ))
}
