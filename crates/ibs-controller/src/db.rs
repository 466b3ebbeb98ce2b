//! The state database (SQLite via rusqlite, bundled): one file `DATA/state.sqlite` in WAL mode.
//!
//! Tables: `meta` (key/value JSON: location settings, scheduler state, maintenance state, cached
//! capacity), `jobs` (see `db_jobs`), `alerts`, `tokens` (hashes only), `audit`, `pack_checks`
//! (see `db_verify`), `operations` (see `db_ops`). The schema version
//! is in `PRAGMA user_version`; migrations are additive.
//!
//! A single connection behind a mutex: every statement is short, and jobs write progress at most
//! once a second, so contention is negligible. `ibs token create` opens the same file from another
//! process; the busy timeout makes that safe while the daemon runs.

use crate::paging::{Page, PageKey, PageRequest};
use crate::Result;
use rusqlite::{params, Connection, OptionalExtension};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

const SCHEMA_VERSION: i64 = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    trigger TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    category TEXT NOT NULL,
    severity TEXT NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    remediation TEXT NOT NULL,
    details TEXT NOT NULL,
    state TEXT NOT NULL,
    raised_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    closed_at INTEGER,
    closed_by TEXT
);
CREATE TABLE IF NOT EXISTS tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    hash TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    label TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    fields TEXT NOT NULL
);
";

pub use ibs_types::admin::AuditRecord;

#[derive(Debug)]
pub struct Db {
    conn: Mutex<Connection>,
}

impl Db {
    /// Opens (or creates) the database. The file and its WAL companions are owner-only (0600):
    /// a new file is created so before SQLite opens it (SQLite gives `-wal` and `-shm` the
    /// database file's mode), and an existing one is tightened.
    pub fn open(path: &Path) -> Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        if let Err(e) = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(crate::ControllerError::Internal(format!(
                    "{}: {e}",
                    path.display()
                )));
            }
        }
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            ibs_engine::state::tighten(Path::new(&p));
        }
        let conn = Connection::open(path)?;
        Self::setup(conn)
    }

    pub fn open_in_memory() -> Result<Self> {
        Self::setup(Connection::open_in_memory()?)
    }

    fn setup(conn: Connection) -> Result<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let _: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        conn.execute_batch(SCHEMA)?;
        // Version 3: per-pack verification records.
        conn.execute_batch(crate::db_verify::TABLE)?;
        // Version 4: operations outside the job records.
        conn.execute_batch(crate::db_ops::TABLE)?;
        // Version 2: optional token expiry.
        let has_expiry: bool = conn.query_row(
            "SELECT COUNT(*) FROM pragma_table_info('tokens') WHERE name = 'expires_at'",
            [],
            |r| r.get::<_, i64>(0).map(|n| n > 0),
        )?;
        if !has_expiry {
            conn.execute_batch("ALTER TABLE tokens ADD COLUMN expires_at INTEGER")?;
        }
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(Db {
            conn: Mutex::new(conn),
        })
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let text: Option<String> = self
            .conn()
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    pub fn set_meta<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        let text = serde_json::to_string(value).expect("meta serializes");
        self.conn().execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, text],
        )?;
        Ok(())
    }

    pub fn delete_meta(&self, key: &str) -> Result<()> {
        self.conn()
            .execute("DELETE FROM meta WHERE key = ?1", [key])?;
        Ok(())
    }

    /// Rewrites the database file without free space and truncates the WAL, so that content
    /// overwritten or deleted before (a cleared secret) no longer lies anywhere on disk.
    pub fn scrub(&self) -> Result<()> {
        let conn = self.conn();
        conn.execute_batch("VACUUM")?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    pub fn audit(&self, at: i64, actor: &str, action: &str, fields: &[String]) -> Result<()> {
        self.conn().execute(
            "INSERT INTO audit (at, actor, action, fields) VALUES (?1, ?2, ?3, ?4)",
            params![
                at,
                actor,
                action,
                serde_json::to_string(fields).expect("fields")
            ],
        )?;
        Ok(())
    }

    pub fn audit_log(&self, limit: u32) -> Result<Vec<AuditRecord>> {
        Ok(self.audit_page(&PageRequest::first(limit))?.items)
    }

    /// One page of the audit log, newest first. Key: `id`.
    pub fn audit_page(&self, req: &PageRequest) -> Result<Page<AuditRecord>> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT id, at, actor, action, fields FROM audit WHERE (?1 IS NULL OR id < ?1)
             ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = st.query_map(params![req.after.as_ref().map(|k| k.a), req.fetch()], |r| {
            let fields: String = r.get(4)?;
            let id: i64 = r.get(0)?;
            Ok((
                PageKey::nums(id, 0),
                AuditRecord {
                    id,
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    fields: serde_json::from_str(&fields).unwrap_or_default(),
                },
            ))
        })?;
        Ok(Page::from_rows(rows.collect::<Result<_, _>>()?, req.limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_and_audit() {
        let db = Db::open_in_memory().unwrap();
        assert_eq!(db.get_meta::<u32>("x").unwrap(), None);
        db.set_meta("x", &5u32).unwrap();
        db.set_meta("x", &6u32).unwrap();
        assert_eq!(db.get_meta::<u32>("x").unwrap(), Some(6));
        db.audit(10, "admin#1", "location.update", &["path".into()])
            .unwrap();
        let log = db.audit_log(10).unwrap();
        assert_eq!(log[0].fields, vec!["path".to_string()]);
    }
}
