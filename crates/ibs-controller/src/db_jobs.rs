//! Job records in the state database. A job is stored as JSON (`body`) with its id, kind, trigger,
//! status and creation time also in columns for filtering. Every update rewrites the whole record:
//! records are small and there is one writer per job.

use crate::db::Db;
use crate::model::{Job, JobKind, JobStatus};
use crate::paging::{Page, PageKey, PageRequest};
use crate::Result;
use rusqlite::{params, OptionalExtension};

pub(crate) fn kind_str(k: JobKind) -> &'static str {
    match k {
        JobKind::Backup => "backup",
        JobKind::Restore => "restore",
        JobKind::Verify => "verify",
        JobKind::Validate => "validate",
    }
}

/// Aggregates over every backup job (skipped ones excepted), computed in SQL so their cost does not
/// grow with what is loaded into memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackupStats {
    pub attempts: u64,
    pub succeeded: u64,
    pub partial: u64,
    /// Failed or Interrupted.
    pub failed: u64,
    /// Finished backups with a recorded duration, and for each bound of `buckets_secs` how many
    /// took at most that long.
    pub durations: u64,
    pub duration_sum_secs: f64,
    pub bucket_counts: Vec<u64>,
    /// Unix time of the last successful backup (0: none).
    pub last_success: i64,
}

impl Db {
    /// [`BackupStats`] with a duration histogram over `buckets_secs`.
    pub fn backup_stats(&self, buckets_secs: &[f64]) -> Result<BackupStats> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT status, COUNT(*) FROM jobs WHERE kind = 'backup' AND status != 'Skipped' GROUP BY status",
        )?;
        let mut out = BackupStats::default();
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (status, n) = row?;
            let n = n.max(0) as u64;
            out.attempts += n;
            match JobStatus::parse(&status) {
                Some(JobStatus::Succeeded) => out.succeeded += n,
                Some(JobStatus::PartialSucceeded) => out.partial += n,
                Some(JobStatus::Failed | JobStatus::Interrupted) => out.failed += n,
                _ => {}
            }
        }
        const FINISHED: &str = "kind = 'backup' AND status IN ('Succeeded', 'PartialSucceeded', 'Failed', 'Interrupted')";
        let (count, sum): (i64, f64) = conn.query_row(
            &format!(
                "SELECT COUNT(d), COALESCE(SUM(d), 0) / 1000.0 FROM \
                 (SELECT json_extract(body, '$.duration_ms') AS d FROM jobs WHERE {FINISHED}) \
                 WHERE d IS NOT NULL"
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        out.durations = count.max(0) as u64;
        out.duration_sum_secs = sum;
        for b in buckets_secs {
            let n: i64 = conn.query_row(
                &format!(
                    "SELECT COUNT(*) FROM jobs WHERE {FINISHED} \
                     AND json_extract(body, '$.duration_ms') <= ?1"
                ),
                [b * 1000.0],
                |r| r.get(0),
            )?;
            out.bucket_counts.push(n.max(0) as u64);
        }
        out.last_success = conn.query_row(
            "SELECT COALESCE(MAX(json_extract(body, '$.finished_at')), 0) FROM jobs \
             WHERE kind = 'backup' AND status = 'Succeeded'",
            [],
            |r| r.get(0),
        )?;
        Ok(out)
    }

    pub fn put_job(&self, job: &Job) -> Result<()> {
        let body = serde_json::to_string(job).expect("job serializes");
        let trigger = serde_json::to_value(job.trigger).expect("trigger");
        self.conn().execute(
            "INSERT INTO jobs (id, kind, trigger, status, created_at, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(id) DO UPDATE SET status = excluded.status, body = excluded.body",
            params![
                job.id,
                kind_str(job.kind),
                trigger.as_str().unwrap_or(""),
                job.status.as_str(),
                job.created_at,
                body
            ],
        )?;
        Ok(())
    }

    pub fn job(&self, id: &str) -> Result<Option<Job>> {
        let body: Option<String> = self
            .conn()
            .query_row("SELECT body FROM jobs WHERE id = ?1", [id], |r| r.get(0))
            .optional()?;
        Ok(body.and_then(|b| serde_json::from_str(&b).ok()))
    }

    /// Jobs newest first, optionally of one kind, at most `limit`.
    pub fn jobs(&self, kind: Option<JobKind>, limit: u32) -> Result<Vec<Job>> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT body FROM jobs WHERE (?1 IS NULL OR kind = ?1) ORDER BY created_at DESC, rowid DESC LIMIT ?2",
        )?;
        let rows = st.query_map(params![kind.map(kind_str), limit], |r| {
            r.get::<_, String>(0)
        })?;
        let mut out = Vec::new();
        for b in rows {
            if let Ok(j) = serde_json::from_str(&b?) {
                out.push(j);
            }
        }
        Ok(out)
    }

    /// Backups: backup jobs that were not skipped, newest first.
    pub fn backups(&self, limit: u32) -> Result<Vec<Job>> {
        Ok(self.backups_page(&PageRequest::first(limit))?.items)
    }

    /// One page of the jobs, newest first, optionally of one kind. Key: `(created_at, rowid)`.
    pub fn jobs_page(&self, kind: Option<JobKind>, req: &PageRequest) -> Result<Page<Job>> {
        self.jobs_page_where(kind, false, req)
    }

    /// One page of the backups (backup jobs not skipped), newest first. Key as [`Db::jobs_page`].
    pub fn backups_page(&self, req: &PageRequest) -> Result<Page<Job>> {
        self.jobs_page_where(Some(JobKind::Backup), true, req)
    }

    fn jobs_page_where(
        &self,
        kind: Option<JobKind>,
        no_skipped: bool,
        req: &PageRequest,
    ) -> Result<Page<Job>> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT created_at, rowid, body FROM jobs
             WHERE (?1 IS NULL OR kind = ?1) AND (?2 = 0 OR status != 'Skipped')
               AND (?3 IS NULL OR (created_at, rowid) < (?3, ?4))
             ORDER BY created_at DESC, rowid DESC LIMIT ?5",
        )?;
        let after = req.after.as_ref();
        let rows = st.query_map(
            params![
                kind.map(kind_str),
                no_skipped as i64,
                after.map(|k| k.a),
                after.map(|k| k.b),
                req.fetch()
            ],
            |r| Ok((PageKey::nums(r.get(0)?, r.get(1)?), r.get::<_, String>(2)?)),
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (k, b) = row?;
            // A record this build cannot read is left out; its key still advances the page.
            match serde_json::from_str::<Job>(&b) {
                Ok(j) => out.push((k, Some(j))),
                Err(_) => out.push((k, None)),
            }
        }
        let page = Page::from_rows(out, req.limit);
        Ok(Page {
            items: page.items.into_iter().flatten().collect(),
            next: page.next,
        })
    }

    /// Finds a backup job by its job id or its repository backup id.
    pub fn find_backup(&self, id: &str) -> Result<Option<Job>> {
        if let Some(j) = self.job(id)? {
            return Ok(Some(j));
        }
        Ok(self
            .jobs(Some(JobKind::Backup), 10_000)?
            .into_iter()
            .find(|j| j.backup_id.as_deref() == Some(id)))
    }

    /// Marks every job left Queued or Running (by a crash or a shutdown) as Interrupted.
    /// Returns the ids changed.
    pub fn interrupt_unfinished(&self, now: i64) -> Result<Vec<String>> {
        let ids: Vec<String> = {
            let conn = self.conn();
            let mut st =
                conn.prepare("SELECT id FROM jobs WHERE status IN ('Queued', 'Running')")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for id in &ids {
            if let Some(mut j) = self.job(id)? {
                j.status = JobStatus::Interrupted;
                j.finished_at = Some(now);
                j.progress = None;
                if j.error.is_none() {
                    j.error = Some("the controller stopped while this job was running".into());
                }
                for c in &mut j.components {
                    if !c.status.is_final() {
                        c.status = JobStatus::Interrupted;
                    }
                }
                self.put_job(&j)?;
            }
        }
        Ok(ids)
    }

    /// Counts of finished backup jobs by status (for metrics).
    pub fn backup_counts(&self) -> Result<Vec<(String, u64)>> {
        let conn = self.conn();
        let mut st = conn
            .prepare("SELECT status, COUNT(*) FROM jobs WHERE kind = 'backup' GROUP BY status")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Trigger;

    #[test]
    fn jobs_round_trip_and_interrupt() {
        let db = Db::open_in_memory().unwrap();
        let mut j = Job::new(
            "a".into(),
            JobKind::Backup,
            Trigger::Scheduled,
            JobStatus::Running,
            5,
        );
        db.put_job(&j).unwrap();
        j.backup_id = Some("repo-id".into());
        db.put_job(&j).unwrap();
        assert_eq!(db.find_backup("repo-id").unwrap().unwrap().id, "a");
        let skipped = Job::new(
            "b".into(),
            JobKind::Backup,
            Trigger::Scheduled,
            JobStatus::Skipped,
            6,
        );
        db.put_job(&skipped).unwrap();
        assert_eq!(db.jobs(None, 10).unwrap().len(), 2);
        assert_eq!(db.backups(10).unwrap().len(), 1);
        assert_eq!(db.interrupt_unfinished(9).unwrap(), vec!["a".to_string()]);
        assert_eq!(db.job("a").unwrap().unwrap().status, JobStatus::Interrupted);
    }
}
