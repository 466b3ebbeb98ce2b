//! Alerts: the catalogue (kind, severity, title, description, remediation) and the lifecycle.
//!
//! The five storage failure alerts use the brief's exact texts from [`ibs_storage::AlertClass`].
//! Lifecycle rules (`docs/design/controller.md` §Alerts):
//! - At most one "backup failed" alert is open: raising one closes the open ones of other classes,
//!   and the partial-success alert.
//! - A successful backup closes every backup-failed alert and the partial-success alert; a partial
//!   success closes the failed ones and opens the partial-success alert.
//! - Raising a kind that is already open updates its details instead of opening a second one.
//! - An operator may close any alert. Condition alerts (scheduler disabled, certificate expiry,
//!   share almost full, legacy key, maintenance failed) are re-evaluated on every controller tick,
//!   so one closed while its cause persists comes back; a backup-failed alert comes back at the next
//!   failure. Closed alerts are kept as history for `closed_alert_retention_days` (default 7), then
//!   purged by [`crate::alert_purge`], each into the audit trail.
//! - With a webhook configured, each raise and close is POSTed as JSON (best effort, never blocking):
//!   one worker thread drains a queue of at most [`WEBHOOK_QUEUE`] events; when the queue is full
//!   the new event is dropped, counted and logged. Each POST has connect and overall timeouts. The
//!   URL is never printed whole: logs show it through [`crate::redact::url`].

use crate::db::Db;
use crate::paging::{Page, PageKey, PageRequest};
use crate::{ControllerError, Result};
use ibs_storage::AlertClass;
use rusqlite::{params, OptionalExtension};
use std::sync::Arc;

mod webhook;
pub use webhook::{Webhook, WEBHOOK_CONNECT_TIMEOUT, WEBHOOK_QUEUE, WEBHOOK_TIMEOUT};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertKind {
    BackupFailed(AlertClass),
    PartialSucceeded,
    SchedulerDisabled,
    ShareAlmostFull,
    CertificateExpiring,
    CertificateExpired,
    RetentionFailed,
    LegacyKeyInUse,
    SkippedMaintenanceFailed,
    /// Verification found damaged packs that some backups need (closed when healed or pruned).
    BackupsCorrupted,
    /// A scheduled backup was due with no location (share and encryption) configured; closed when
    /// one is configured or automatic backups are turned off.
    ShareNotConfigured,
    /// On object-lock storage: evidence that someone with write access tampered with what ibs
    /// wrote (overwritten or hidden write-once objects, unlocked objects, deletes refused to the
    /// maintenance credential); closed when a later verification finds none (ADR 0040).
    RepositoryTampered,
}

pub const CATEGORY_BACKUP_FAILED: &str = "backup-failed";

const ALL_CLASSES: [AlertClass; 5] = [
    AlertClass::Capacity,
    AlertClass::Connectivity,
    AlertClass::Path,
    AlertClass::Authentication,
    AlertClass::General,
];

impl AlertKind {
    pub fn as_str(self) -> String {
        match self {
            AlertKind::BackupFailed(c) => format!("backup-failed-{}", c.as_str()),
            AlertKind::PartialSucceeded => "backup-partially-succeeded".into(),
            AlertKind::SchedulerDisabled => "automatic-backups-disabled".into(),
            AlertKind::ShareAlmostFull => "share-almost-full".into(),
            AlertKind::CertificateExpiring => "certificate-expiring".into(),
            AlertKind::CertificateExpired => "certificate-expired".into(),
            AlertKind::RetentionFailed => "retention-deletion-failed".into(),
            AlertKind::LegacyKeyInUse => "legacy-key-in-use".into(),
            AlertKind::SkippedMaintenanceFailed => "backup-skipped-maintenance-failed".into(),
            AlertKind::BackupsCorrupted => "backups-corrupted".into(),
            AlertKind::ShareNotConfigured => "share-not-configured".into(),
            AlertKind::RepositoryTampered => "repository-tampered".into(),
        }
    }

    pub fn category(self) -> &'static str {
        match self {
            AlertKind::BackupFailed(_) => CATEGORY_BACKUP_FAILED,
            _ => "condition",
        }
    }

    pub fn severity(self) -> &'static str {
        match self {
            AlertKind::BackupFailed(_)
            | AlertKind::CertificateExpired
            | AlertKind::RetentionFailed
            | AlertKind::SkippedMaintenanceFailed
            | AlertKind::BackupsCorrupted
            | AlertKind::ShareNotConfigured
            | AlertKind::RepositoryTampered => "Critical",
            _ => "Warning",
        }
    }

    /// Title, description and remediation.
    pub fn texts(self) -> (&'static str, &'static str, &'static str) {
        match self {
            AlertKind::BackupFailed(c) => (c.title(), c.description(), c.remediation()),
            AlertKind::PartialSucceeded => (
                "Backup partially succeeded.",
                "One or more components failed; the others were backed up and are restorable.",
                "See the job's per-component status for the cause, fix it and back up again.",
            ),
            AlertKind::SchedulerDisabled => (
                "Automatic backups are disabled.",
                "The backup scheduler is turned off: no scheduled backup will run until it is enabled again.",
                "Enable automatic backups (`ibs location set --scheduler on`) unless an external scheduler takes backups.",
            ),
            AlertKind::ShareAlmostFull => (
                "The backup share is almost full.",
                "Less than 30% of the share is free, and the free space is below what the next backups are projected to need.",
                "Add capacity to the share, lower the retention period, or delete old backups.",
            ),
            AlertKind::CertificateExpiring => (
                "The backup encryption certificate expires soon.",
                "The encryption certificate expires within 30 days.",
                "Create a new certificate, upload its .cer (`ibs location set --cert FILE`) and keep its .pfx off this host.",
            ),
            AlertKind::CertificateExpired => (
                "The backup encryption certificate has expired.",
                "The encryption certificate is past its expiry date. Backups still run, but policy may require a valid certificate.",
                "Create a new certificate, upload its .cer (`ibs location set --cert FILE`) and keep its .pfx off this host.",
            ),
            AlertKind::RetentionFailed => (
                "Deleting expired backups failed.",
                "The hourly retention cleanup could not delete backups older than the retention period.",
                "Check the share's accessibility and free space; the cleanup retries every hour.",
            ),
            AlertKind::LegacyKeyInUse => (
                "Backups use a deprecated legacy encryption key.",
                "Backups are encrypted with a symmetric key instead of a certificate.",
                "Upload an encryption certificate (`ibs location set --cert FILE`); the switch is one-way.",
            ),
            AlertKind::SkippedMaintenanceFailed => (
                "Scheduled backups are skipped because a maintenance operation failed.",
                "A maintenance operation (update, FRU or secret rotation) ended as failed; scheduled backups stay skipped.",
                "Complete the maintenance operation successfully, or have an admin clear it (`ibs maintenance clear`).",
            ),
            AlertKind::BackupsCorrupted => (
                "Backups are corrupted: data on the share failed verification.",
                "Scheduled verification re-read packs on the backup share and found some damaged, missing or unreadable. The backups and components named in the details reference data that exists only in those packs and cannot be fully restored; they are marked Corrupted.",
                "Check the share's disks and file server for errors. Keep the sources online: the next backup stores again every damaged chunk the sources still have, and backups whose data is then whole are no longer Corrupted. Backups whose damaged data is no longer at the source stay Corrupted; restore from another backup, or let retention remove them.",
            ),
            AlertKind::ShareNotConfigured => (
                "Backup skipped because the backup share is not configured.",
                "A scheduled backup was due, but no file share path or no encryption certificate is configured, so the backup controller can't export backup files.",
                "Configure the backup location with the share's path and an encryption certificate (`ibs location set --path PATH --cert FILE`), or turn automatic backups off if backups are not wanted.",
            ),
            AlertKind::RepositoryTampered => (
                "The backup repository was tampered with.",
                "On the object-lock bucket, objects that ibs writes once were overwritten or hidden by a delete marker after ibs wrote them, objects are not locked, deletes the maintenance credential may make were refused, or objects under plans/ that do not open under the metadata key were put there (backups and prune ignore them). The details name the objects. Reads keep using the versions ibs wrote, so backups stay restorable, but someone with write access to the bucket (the writer key, or this host) tried to destroy or alter backups.",
                "Treat the controller host and its writer key as compromised: rotate the writer key and check the host. Run `ibs repo check --read-data` with the .pfx on a trusted host to confirm every backup restores. Review the bucket policy and object-lock configuration with the bucket owner. The alert closes when a later verification finds no tampering; the extra object versions stay until their locks expire.",
            ),
        }
    }

    pub fn parse(s: &str) -> Option<AlertKind> {
        let mut all: Vec<AlertKind> = ALL_CLASSES
            .iter()
            .map(|c| AlertKind::BackupFailed(*c))
            .collect();
        all.extend([
            AlertKind::PartialSucceeded,
            AlertKind::SchedulerDisabled,
            AlertKind::ShareAlmostFull,
            AlertKind::CertificateExpiring,
            AlertKind::CertificateExpired,
            AlertKind::RetentionFailed,
            AlertKind::LegacyKeyInUse,
            AlertKind::SkippedMaintenanceFailed,
            AlertKind::BackupsCorrupted,
            AlertKind::ShareNotConfigured,
            AlertKind::RepositoryTampered,
        ]);
        all.into_iter().find(|k| k.as_str() == s)
    }
}

pub use ibs_types::admin::Alert;

/// Where raise and close events go besides the database.
pub trait AlertSink: Send + Sync + std::fmt::Debug {
    fn notify(&self, event: &str, alert: &Alert);
}

/// The alert store with its lifecycle rules.
#[derive(Debug, Clone)]
pub struct Alerts {
    db: Arc<Db>,
    sink: Option<Arc<dyn AlertSink>>,
}

pub(crate) fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Alert> {
    Ok(Alert {
        id: r.get(0)?,
        kind: r.get(1)?,
        category: r.get(2)?,
        severity: r.get(3)?,
        title: r.get(4)?,
        description: r.get(5)?,
        remediation: r.get(6)?,
        details: r.get(7)?,
        state: r.get(8)?,
        raised_at: r.get(9)?,
        updated_at: r.get(10)?,
        closed_at: r.get(11)?,
        closed_by: r.get(12)?,
    })
}

pub(crate) const COLS: &str = "id, kind, category, severity, title, description, remediation, details, state, raised_at, updated_at, closed_at, closed_by";

impl Alerts {
    pub fn new(db: Arc<Db>, sink: Option<Arc<dyn AlertSink>>) -> Self {
        Alerts { db, sink }
    }

    fn notify(&self, event: &str, a: &Alert) {
        tracing::info!("alert {event}: {} ({})", a.title, a.kind);
        if let Some(s) = &self.sink {
            s.notify(event, a);
        }
    }

    pub fn get(&self, id: i64) -> Result<Option<Alert>> {
        Ok(self
            .db
            .conn()
            .query_row(
                &format!("SELECT {COLS} FROM alerts WHERE id = ?1"),
                [id],
                row,
            )
            .optional()?)
    }

    fn open_of(&self, kind: &str) -> Result<Option<Alert>> {
        Ok(self
            .db
            .conn()
            .query_row(
                &format!("SELECT {COLS} FROM alerts WHERE kind = ?1 AND state = 'open'"),
                [kind],
                row,
            )
            .optional()?)
    }

    /// All alerts (open first, newest first), or only open ones.
    pub fn list(&self, open_only: bool) -> Result<Vec<Alert>> {
        let conn = self.db.conn();
        let mut st = conn.prepare(&format!(
            "SELECT {COLS} FROM alerts WHERE (?1 = 0 OR state = 'open') ORDER BY state DESC, id DESC LIMIT 1000"
        ))?;
        let rows = st.query_map([open_only as i64], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One page of the alerts (open first, newest first), or of the open ones. Key:
    /// `(open ? 1 : 0, id)`. An alert closed between two page fetches moves behind the open
    /// ones (its key changed), so a walk of `all` may serve it once more there.
    pub fn list_page(&self, open_only: bool, req: &PageRequest) -> Result<Page<Alert>> {
        let conn = self.db.conn();
        let mut st = conn.prepare(&format!(
            "SELECT {COLS}, (state = 'open') AS o FROM alerts
             WHERE (?1 = 0 OR state = 'open') AND (?2 IS NULL OR ((state = 'open'), id) < (?2, ?3))
             ORDER BY o DESC, id DESC LIMIT ?4"
        ))?;
        let after = req.after.as_ref();
        let rows = st.query_map(
            rusqlite::params![
                open_only as i64,
                after.map(|k| k.a),
                after.map(|k| k.b),
                req.fetch()
            ],
            |r| {
                let a = row(r)?;
                Ok((PageKey::nums(i64::from(a.state == "open"), a.id), a))
            },
        )?;
        Ok(Page::from_rows(rows.collect::<Result<_, _>>()?, req.limit))
    }

    pub fn is_open(&self, kind: AlertKind) -> Result<bool> {
        Ok(self.open_of(&kind.as_str())?.is_some())
    }

    /// Raises `kind` (or refreshes its details if it is already open).
    pub fn raise(&self, kind: AlertKind, details: &str, now: i64) -> Result<Alert> {
        if let AlertKind::BackupFailed(c) = kind {
            for other in ALL_CLASSES.iter().filter(|o| **o != c) {
                self.close_kind(
                    AlertKind::BackupFailed(*other),
                    "superseded by a new failure category",
                    now,
                )?;
            }
            self.close_kind(AlertKind::PartialSucceeded, "superseded by a failure", now)?;
        }
        let k = kind.as_str();
        if let Some(open) = self.open_of(&k)? {
            self.db.conn().execute(
                "UPDATE alerts SET details = ?1, updated_at = ?2 WHERE id = ?3",
                params![details, now, open.id],
            )?;
            return Ok(self.get(open.id)?.unwrap_or(open));
        }
        let (title, description, remediation) = kind.texts();
        let id = {
            let conn = self.db.conn();
            conn.execute(
                "INSERT INTO alerts (kind, category, severity, title, description, remediation, details, state, raised_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'open', ?8, ?8)",
                params![k, kind.category(), kind.severity(), title, description, remediation, details, now],
            )?;
            conn.last_insert_rowid()
        };
        let a = self
            .get(id)?
            .ok_or_else(|| ControllerError::Internal("alert vanished".into()))?;
        self.notify("raised", &a);
        Ok(a)
    }

    /// Closes the open alert of `kind`, if any.
    pub fn close_kind(&self, kind: AlertKind, by: &str, now: i64) -> Result<()> {
        if let Some(a) = self.open_of(&kind.as_str())? {
            self.close_row(a.id, by, now)?;
        }
        Ok(())
    }

    fn close_row(&self, id: i64, by: &str, now: i64) -> Result<Alert> {
        self.db.conn().execute(
            "UPDATE alerts SET state = 'closed', closed_at = ?1, closed_by = ?2, updated_at = ?1 WHERE id = ?3 AND state = 'open'",
            params![now, by, id],
        )?;
        let a = self
            .get(id)?
            .ok_or_else(|| ControllerError::NotFound(format!("alert {id}")))?;
        self.notify("closed", &a);
        Ok(a)
    }

    /// An operator closes an alert. It comes back if its cause persists.
    pub fn close(&self, id: i64, by: &str, now: i64) -> Result<Alert> {
        let a = self
            .get(id)?
            .ok_or_else(|| ControllerError::NotFound(format!("alert {id}")))?;
        if a.state == "closed" {
            return Ok(a);
        }
        self.close_row(id, by, now)
    }

    /// An admin reopens a closed alert (closed by mistake): it is open again with its details,
    /// and is notified as raised. Keeps the lifecycle's one-open rules: refused (Conflict) while
    /// another alert of its kind is open, and for a backup-failed or partial-success alert while
    /// any backup-failed or partial-success alert is open. A condition alert whose cause has gone
    /// is closed again by the next tick's evaluation, as when it was first raised.
    pub fn reopen(&self, id: i64, now: i64) -> Result<Alert> {
        let a = self
            .get(id)?
            .ok_or_else(|| ControllerError::NotFound(format!("alert {id}")))?;
        if a.state == "open" {
            return Ok(a);
        }
        let backup_kinds: Vec<String> = ALL_CLASSES
            .iter()
            .map(|c| AlertKind::BackupFailed(*c).as_str())
            .chain([AlertKind::PartialSucceeded.as_str()])
            .collect();
        let blockers: Vec<String> = if backup_kinds.contains(&a.kind) {
            backup_kinds
        } else {
            vec![a.kind.clone()]
        };
        for k in &blockers {
            if let Some(open) = self.open_of(k)? {
                return Err(ControllerError::Conflict {
                    message: format!(
                        "alert {id} cannot be reopened: alert {} ({}) is open and takes its place",
                        open.id, open.title
                    ),
                    details: Some(serde_json::json!({ "open_alert": open.id })),
                });
            }
        }
        self.db.conn().execute(
            "UPDATE alerts SET state = 'open', closed_at = NULL, closed_by = NULL, updated_at = ?1 WHERE id = ?2 AND state = 'closed'",
            params![now, id],
        )?;
        let a = self
            .get(id)?
            .ok_or_else(|| ControllerError::NotFound(format!("alert {id}")))?;
        self.notify("raised", &a);
        Ok(a)
    }

    /// Sets a condition alert open or closed.
    pub fn set_condition(
        &self,
        kind: AlertKind,
        active: bool,
        details: &str,
        now: i64,
    ) -> Result<()> {
        if active {
            self.raise(kind, details, now)?;
        } else {
            self.close_kind(kind, "condition cleared", now)?;
        }
        Ok(())
    }

    /// A backup succeeded: close every backup-failed alert and the partial-success alert.
    pub fn backup_succeeded(&self, now: i64) -> Result<()> {
        for c in ALL_CLASSES {
            self.close_kind(AlertKind::BackupFailed(c), "a later backup succeeded", now)?;
        }
        self.close_kind(AlertKind::PartialSucceeded, "a later backup succeeded", now)
    }

    /// A backup partially succeeded: close the failed alerts, open the partial-success alert.
    pub fn backup_partial(&self, details: &str, now: i64) -> Result<()> {
        for c in ALL_CLASSES {
            self.close_kind(
                AlertKind::BackupFailed(c),
                "a later backup partially succeeded",
                now,
            )?;
        }
        self.raise(AlertKind::PartialSucceeded, details, now)
            .map(|_| ())
    }

    /// Open alerts counted by kind (metrics).
    pub fn open_counts(&self) -> Result<Vec<(String, u64)>> {
        let conn = self.db.conn();
        let mut st =
            conn.prepare("SELECT kind, COUNT(*) FROM alerts WHERE state = 'open' GROUP BY kind")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alerts() -> Alerts {
        Alerts::new(Arc::new(Db::open_in_memory().unwrap()), None)
    }

    fn threads() -> usize {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Attack: a webhook receiver that accepts connections and never answers, while alerts keep
    /// coming. The daemon must not grow a thread per event nor block the caller; the excess is
    /// dropped and counted.
    #[test]
    fn a_stalled_webhook_receiver_costs_one_thread_and_a_bounded_queue() {
        let blackhole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = blackhole.local_addr().unwrap().port();
        let held = std::thread::spawn(move || {
            let mut conns = Vec::new();
            blackhole.set_nonblocking(true).unwrap();
            let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while std::time::Instant::now() < end {
                if let Ok((c, _)) = blackhole.accept() {
                    conns.push(c);
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        });
        let hook = Webhook::new(format!("http://u:pw@127.0.0.1:{port}/hook")).unwrap();
        let alert = alerts()
            .raise(AlertKind::SchedulerDisabled, "x", 1)
            .unwrap();
        let before = threads();
        let started = std::time::Instant::now();
        let n = WEBHOOK_QUEUE + 300;
        for _ in 0..n {
            hook.notify("raised", &alert);
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "notify blocked for {:?}",
            started.elapsed()
        );
        // Other tests of this binary run in parallel and start a few threads of their own.
        let grown = threads().saturating_sub(before);
        assert!(grown < 50, "{grown} threads started for {n} events");
        assert!(
            hook.dropped() >= 299,
            "only {} of {n} events dropped",
            hook.dropped()
        );
        assert!(!format!("{hook:?}").contains("pw"), "{hook:?}");
        held.join().unwrap();
    }

    #[test]
    fn one_failed_alert_at_a_time() {
        let a = alerts();
        a.raise(AlertKind::BackupFailed(AlertClass::Path), "x", 1)
            .unwrap();
        a.raise(AlertKind::BackupFailed(AlertClass::Path), "y", 2)
            .unwrap();
        assert_eq!(a.list(true).unwrap().len(), 1);
        let auth = a
            .raise(AlertKind::BackupFailed(AlertClass::Authentication), "z", 3)
            .unwrap();
        let open = a.list(true).unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].id, auth.id);
        assert_eq!(open[0].title, AlertClass::Authentication.title());
        assert_eq!(
            open[0].remediation,
            AlertClass::Authentication.remediation()
        );
        a.backup_partial("c failed", 4).unwrap();
        assert_eq!(a.list(true).unwrap()[0].kind, "backup-partially-succeeded");
        a.backup_succeeded(5).unwrap();
        assert!(a.list(true).unwrap().is_empty());
        assert_eq!(a.list(false).unwrap().len(), 3, "history is kept");
    }

    #[test]
    fn operator_close_and_reraise() {
        let a = alerts();
        let x = a.raise(AlertKind::SchedulerDisabled, "", 1).unwrap();
        a.close(x.id, "admin", 2).unwrap();
        assert!(!a.is_open(AlertKind::SchedulerDisabled).unwrap());
        a.set_condition(AlertKind::SchedulerDisabled, true, "", 3)
            .unwrap();
        assert!(a.is_open(AlertKind::SchedulerDisabled).unwrap());
        assert!(matches!(
            a.close(999, "admin", 4),
            Err(ControllerError::NotFound(_))
        ));
        for k in [
            "backup-failed-path",
            "share-almost-full",
            "certificate-expired",
            "share-not-configured",
        ] {
            assert_eq!(AlertKind::parse(k).unwrap().as_str(), k);
        }
    }
}
