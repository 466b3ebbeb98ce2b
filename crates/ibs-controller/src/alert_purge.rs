//! Purging closed alerts. A closed alert stays in the alert table (and `GET /alerts?state=all`) for
//! `closed_alert_retention_days` after it closed (host configuration, default
//! [`DEFAULT_CLOSED_ALERT_RETENTION_DAYS`]), then it is deleted. Open alerts are never purged.
//!
//! Raising and closing an alert are not audited (only an operator's close is), so the purge writes
//! the audit record: one `alert.purge` record per purged alert, by actor [`AUDIT_ACTOR`], naming its
//! id, kind, severity, title, details, raise and close times and who closed it. The record and the
//! delete are one transaction: the trail keeps every alert the table drops.
//!
//! The controller's tick runs the purge at most once per [`PURGE_INTERVAL_SECS`] (by the injected
//! clock); `Controller::purge_closed_alerts` runs it now.

use crate::alerts::{self, Alert};
use crate::db::Db;
use crate::Result;
use ibs_repo::clock::rfc3339;
use rusqlite::params;

pub const DEFAULT_CLOSED_ALERT_RETENTION_DAYS: u32 = 7;
/// The tick purges at most this often.
pub const PURGE_INTERVAL_SECS: i64 = 3600;
pub const AUDIT_ACTION: &str = "alert.purge";
/// The actor of the purge's audit records (the controller itself, not a token).
pub const AUDIT_ACTOR: &str = "controller";
/// When the last purge ran (meta key).
pub(crate) const META_PURGE_LAST: &str = "alert_purge_last_run";

/// The audit fields of a purged alert (`name:value`; alert texts hold no secret).
fn audit_fields(a: &Alert) -> Vec<String> {
    vec![
        format!("alert:{}", a.id),
        format!("kind:{}", a.kind),
        format!("severity:{}", a.severity),
        format!("title:{}", a.title),
        format!("details:{}", a.details),
        format!("raised_at:{}", rfc3339(a.raised_at)),
        format!("closed_at:{}", a.closed_at.map(rfc3339).unwrap_or_default()),
        format!("closed_by:{}", a.closed_by.as_deref().unwrap_or("")),
    ]
}

/// Deletes the alerts closed at or before `cutoff`, each audited at `now`; returns them.
pub fn purge_closed(db: &Db, cutoff: i64, now: i64) -> Result<Vec<Alert>> {
    let mut conn = db.conn();
    let tx = conn.transaction()?;
    let purged: Vec<Alert> = {
        let mut st = tx.prepare(&format!(
            "SELECT {} FROM alerts WHERE state = 'closed' AND closed_at IS NOT NULL AND closed_at <= ?1 ORDER BY id",
            alerts::COLS
        ))?;
        let rows = st.query_map([cutoff], alerts::row)?;
        rows.collect::<Result<_, _>>()?
    };
    for a in &purged {
        let fields = serde_json::to_string(&audit_fields(a)).expect("fields serialize");
        tx.execute(
            "INSERT INTO audit (at, actor, action, fields) VALUES (?1, ?2, ?3, ?4)",
            params![now, AUDIT_ACTOR, AUDIT_ACTION, fields],
        )?;
        tx.execute(
            "DELETE FROM alerts WHERE id = ?1 AND state = 'closed'",
            [a.id],
        )?;
    }
    tx.commit()?;
    Ok(purged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::{AlertKind, Alerts};
    use std::sync::Arc;

    #[test]
    fn only_alerts_closed_before_the_cutoff_go_and_each_is_audited() {
        let db = Arc::new(Db::open_in_memory().unwrap());
        let a = Alerts::new(db.clone(), None);
        let old = a.raise(AlertKind::SchedulerDisabled, "old", 10).unwrap();
        a.close(old.id, "admin", 100).unwrap();
        let young = a.raise(AlertKind::ShareAlmostFull, "young", 10).unwrap();
        a.close(young.id, "admin", 101).unwrap();
        let open = a.raise(AlertKind::LegacyKeyInUse, "open", 0).unwrap();
        let purged = purge_closed(&db, 100, 500).unwrap();
        assert_eq!(purged.iter().map(|x| x.id).collect::<Vec<_>>(), [old.id]);
        let left: Vec<i64> = a.list(false).unwrap().iter().map(|x| x.id).collect();
        assert_eq!(left, [open.id, young.id]);
        let log = db.audit_log(10).unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].action, AUDIT_ACTION);
        assert_eq!(log[0].at, 500);
        assert!(log[0].fields.contains(&format!("alert:{}", old.id)));
        assert!(log[0]
            .fields
            .contains(&"kind:automatic-backups-disabled".to_string()));
        assert!(log[0].fields.contains(&"closed_by:admin".to_string()));
        assert!(
            purge_closed(&db, i64::MAX, 600).unwrap().len() == 1,
            "the young one"
        );
        assert!(
            a.get(open.id).unwrap().is_some(),
            "open alerts are never purged"
        );
    }
}
