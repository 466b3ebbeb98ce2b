//! Operations outside the job records (table `operations`): retention cleanups, maintenance
//! windows, location clears and store prunes, each with its kind, status, start and end, who
//! started it and a short detail. Together with the jobs they make `GET /api/v1/operations`
//! ([`Db::operations_page`]): one list of everything the controller ran or runs, newest first,
//! paged in SQL over both tables.
//!
//! Key of the combined list: `(start time, sort id)` where the sort id is the job's id, or
//! `op-` and the row id zero-padded to 12 digits (so that operations started in the same second
//! keep their insertion order); the served id of an operation is `op-N`.

use crate::db::Db;
use crate::model::{Job, JobStatus};
use crate::paging::{Page, PageKey, PageRequest};
use crate::Result;
use ibs_types::{Operation, OperationKind};
use rusqlite::params;

pub(crate) const TABLE: &str = "
CREATE TABLE IF NOT EXISTS operations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at INTEGER,
    actor TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS operations_started ON operations (started_at);
";

/// One row of the combined list: a job (its detail is the job record) or another operation.
#[derive(Debug, Clone)]
pub enum OperationRow {
    Job(Box<Job>),
    Other(Operation),
}

/// Filters of the combined list.
#[derive(Debug, Clone, Copy, Default)]
pub struct OperationFilter {
    /// Only Queued or Running ones.
    pub running: bool,
    pub kind: Option<OperationKind>,
}

/// The id an operation row is served under.
pub fn op_id(row: i64) -> String {
    format!("op-{row}")
}

impl Db {
    /// Records an operation that began now; returns its row id.
    pub fn op_begin(
        &self,
        kind: OperationKind,
        at: i64,
        actor: &str,
        detail: Option<&str>,
    ) -> Result<i64> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO operations (kind, status, started_at, actor, detail) VALUES (?1, 'Running', ?2, ?3, ?4)",
            params![kind.as_str(), at, actor, detail],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Records how operation `id` ended (`detail`, when given, replaces the recorded one).
    pub fn op_end(&self, id: i64, status: JobStatus, at: i64, detail: Option<&str>) -> Result<()> {
        self.conn().execute(
            "UPDATE operations SET status = ?1, ended_at = ?2, detail = COALESCE(?3, detail) WHERE id = ?4",
            params![status.as_str(), at, detail, id],
        )?;
        Ok(())
    }

    /// Ends the latest running operation of `kind` (the maintenance window, which the API ends by
    /// kind, not by id). False when none runs.
    pub fn op_end_running(
        &self,
        kind: OperationKind,
        status: JobStatus,
        at: i64,
        detail: Option<&str>,
    ) -> Result<bool> {
        Ok(self.conn().execute(
            "UPDATE operations SET status = ?1, ended_at = ?2, detail = COALESCE(?3, detail)
             WHERE id = (SELECT MAX(id) FROM operations WHERE kind = ?4 AND status = 'Running')",
            params![status.as_str(), at, detail, kind.as_str()],
        )? > 0)
    }

    /// Marks operations left Running by a crash or shutdown as Interrupted, except maintenance
    /// windows, which outlive a restart of the daemon.
    pub fn interrupt_unfinished_ops(&self, now: i64) -> Result<usize> {
        Ok(self.conn().execute(
            "UPDATE operations SET status = 'Interrupted', ended_at = ?1,
               detail = COALESCE(detail, 'the controller stopped while this operation was running')
             WHERE status = 'Running' AND kind != 'maintenance'",
            [now],
        )?)
    }

    /// One page of the jobs and operations together, newest first (see the module doc for the key).
    pub fn operations_page(
        &self,
        filter: OperationFilter,
        req: &PageRequest,
    ) -> Result<Page<OperationRow>> {
        let conn = self.conn();
        // Each arm is ordered and limited on its own, so the merge sorts at most twice a page.
        let sql = "
            SELECT t, k, src, body, kind, status, ended_at, actor, detail, rid FROM (
              SELECT * FROM (
                SELECT created_at AS t, id AS k, 0 AS src, body, kind, status, NULL AS ended_at,
                       NULL AS actor, NULL AS detail, 0 AS rid
                FROM jobs
                WHERE (?1 = 0 OR status IN ('Queued', 'Running')) AND (?2 IS NULL OR kind = ?2)
                  AND (?3 IS NULL OR (created_at, id) < (?3, ?4))
                ORDER BY created_at DESC, id DESC LIMIT ?5)
              UNION ALL
              SELECT * FROM (
                SELECT started_at AS t, printf('op-%012d', id) AS k, 1 AS src, NULL AS body, kind,
                       status, ended_at, actor, detail, id AS rid
                FROM operations
                WHERE (?1 = 0 OR status IN ('Queued', 'Running')) AND (?2 IS NULL OR kind = ?2)
                  AND (?3 IS NULL OR (started_at, printf('op-%012d', id)) < (?3, ?4))
                ORDER BY started_at DESC, id DESC LIMIT ?5)
            ) ORDER BY t DESC, k DESC LIMIT ?5";
        let mut st = conn.prepare(sql)?;
        let after = req.after.as_ref();
        let rows = st.query_map(
            params![
                filter.running as i64,
                filter.kind.map(OperationKind::as_str),
                after.map(|k| k.a),
                after.map(|k| k.s.clone()),
                req.fetch()
            ],
            |r| {
                let key = PageKey {
                    a: r.get(0)?,
                    b: 0,
                    s: r.get(1)?,
                };
                let row = if r.get::<_, i64>(2)? == 0 {
                    let body: String = r.get(3)?;
                    serde_json::from_str::<Job>(&body)
                        .ok()
                        .map(|j| OperationRow::Job(Box::new(j)))
                } else {
                    let kind: String = r.get(4)?;
                    let status: String = r.get(5)?;
                    match (OperationKind::parse(&kind), JobStatus::parse(&status)) {
                        (Some(kind), Some(status)) => Some(OperationRow::Other(Operation {
                            id: op_id(r.get(9)?),
                            kind,
                            status,
                            started_at: key.a,
                            ended_at: r.get(6)?,
                            trigger: r.get(7)?,
                            progress: None,
                            detail: r.get(8)?,
                            link: None,
                        })),
                        _ => None,
                    }
                };
                Ok((key, row))
            },
        )?;
        let page = Page::from_rows(rows.collect::<Result<Vec<_>, _>>()?, req.limit);
        Ok(Page {
            items: page.items.into_iter().flatten().collect(),
            next: page.next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{JobKind, Trigger};

    #[test]
    fn jobs_and_operations_merge_newest_first() {
        let db = Db::open_in_memory().unwrap();
        db.put_job(&Job::new(
            "b1".into(),
            JobKind::Backup,
            Trigger::Scheduled,
            JobStatus::Succeeded,
            10,
        ))
        .unwrap();
        let m = db
            .op_begin(OperationKind::Maintenance, 20, "admin#1", Some("update"))
            .unwrap();
        let r = db
            .op_begin(OperationKind::RetentionCleanup, 30, "scheduler", None)
            .unwrap();
        db.op_end(r, JobStatus::Succeeded, 31, Some("removed 0 backups"))
            .unwrap();
        let all = db
            .operations_page(OperationFilter::default(), &PageRequest::first(10))
            .unwrap();
        let ids: Vec<String> = all
            .items
            .iter()
            .map(|o| match o {
                OperationRow::Job(j) => j.id.clone(),
                OperationRow::Other(o) => o.id.clone(),
            })
            .collect();
        assert_eq!(ids, vec![op_id(r), op_id(m), "b1".to_string()]);
        let running = db
            .operations_page(
                OperationFilter {
                    running: true,
                    kind: None,
                },
                &PageRequest::first(10),
            )
            .unwrap();
        assert_eq!(running.items.len(), 1);
        assert_eq!(db.interrupt_unfinished_ops(40).unwrap(), 0);
        assert!(db
            .op_end_running(OperationKind::Maintenance, JobStatus::Succeeded, 50, None)
            .unwrap());
    }
}
