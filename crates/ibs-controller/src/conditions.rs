//! Condition alerts: scheduler disabled, certificate expiry, legacy key in use, maintenance
//! failed, share almost full, share not configured (raised by a due slot, closed here). Each is re-evaluated from the stored state (after a settings change,
//! after a backup, on every tick): a condition that holds keeps its alert open, one that no longer
//! holds closes it.

use crate::alerts::AlertKind;
use crate::context::JobContext;
use crate::model::JobStatus;
use crate::Result;

/// Certificates expiring within this many days raise an alert.
pub const CERT_EXPIRY_DAYS: i64 = 30;
/// The share is "almost full" below this free fraction (and below the projected need).
pub const ALMOST_FULL_FREE_RATIO: f64 = 0.30;

/// Re-evaluates every condition alert.
pub fn evaluate(ctx: &JobContext) -> Result<()> {
    let now = ctx.now();
    let s = ctx.stored_location()?;
    let a = &ctx.alerts;
    let configured = s.path.is_some();
    a.set_condition(
        AlertKind::SchedulerDisabled,
        configured && !s.scheduler_enabled,
        "automatic backups are turned off",
        now,
    )?;
    let cert = s.certificate();
    let (expired, expiring) = match &cert {
        Some(c) if c.not_after() <= now => (true, false),
        Some(c) if c.not_after() - now <= CERT_EXPIRY_DAYS * 86_400 => (false, true),
        _ => (false, false),
    };
    let detail = cert
        .as_ref()
        .map(|c| {
            format!(
                "certificate {} ({}) expires {}",
                c.thumbprint(),
                c.subject(),
                ibs_repo::clock::rfc3339(c.not_after())
            )
        })
        .unwrap_or_default();
    a.set_condition(AlertKind::CertificateExpired, expired, &detail, now)?;
    a.set_condition(AlertKind::CertificateExpiring, expiring, &detail, now)?;
    a.set_condition(
        AlertKind::LegacyKeyInUse,
        cert.is_none() && s.legacy_key_sealed.is_some(),
        "backups are encrypted with a legacy key",
        now,
    )?;
    if !ctx.maintenance()?.is_some_and(|m| m.is_failed()) {
        a.close_kind(
            AlertKind::SkippedMaintenanceFailed,
            "maintenance cleared",
            now,
        )?;
    }
    let (full, detail) = almost_full(ctx)?;
    a.set_condition(AlertKind::ShareAlmostFull, full, &detail, now)?;
    if s.is_configured() || !s.scheduler_enabled {
        a.close_kind(AlertKind::ShareNotConfigured, "condition cleared", now)?;
    }
    Ok(())
}

/// A due scheduled slot found no location (share path and certificate or legacy key): raises
/// `share-not-configured` (or refreshes its details). It is closed by [`evaluate`] once a location
/// is configured or automatic backups are off; an operator's close lasts until the next due slot.
pub fn share_not_configured(ctx: &JobContext, next_due: i64) -> Result<()> {
    let s = ctx.stored_location()?;
    let missing = match (&s.path, s.is_configured()) {
        (None, _) => "no share path is set",
        (Some(_), false) => "no encryption certificate (or legacy key) is set",
        (Some(_), true) => return Ok(()),
    };
    ctx.alerts.raise(
        AlertKind::ShareNotConfigured,
        &format!(
            "scheduled backup skipped: {missing}; next backup time {}",
            ibs_repo::clock::rfc3339(next_due)
        ),
        ctx.now(),
    )?;
    Ok(())
}

/// Less than 30 % free and less free than the projected need: the mean stored size of recent
/// backups times the number of backups in one retention period.
fn almost_full(ctx: &JobContext) -> Result<(bool, String)> {
    let Some(cap) = ctx.capacity()? else {
        return Ok((false, String::new()));
    };
    if cap.total == 0 {
        return Ok((false, String::new()));
    }
    let recent: Vec<u64> = ctx
        .db
        .backups(10)?
        .iter()
        .filter(|j| matches!(j.status, JobStatus::Succeeded | JobStatus::PartialSucceeded))
        .map(|j| j.bytes_stored)
        .collect();
    let s = ctx.stored_location()?;
    let per_period = (24 / s.frequency_hours.max(1)).max(1) as u64 * s.retention_days as u64;
    let mean = if recent.is_empty() {
        0
    } else {
        recent.iter().sum::<u64>() / recent.len() as u64
    };
    let need = mean.saturating_mul(per_period);
    let free_ratio = cap.available as f64 / cap.total as f64;
    let full = free_ratio < ALMOST_FULL_FREE_RATIO && cap.available < need;
    Ok((
        full,
        format!(
            "{:.0}% free ({} of {} bytes); projected need {} bytes",
            free_ratio * 100.0,
            cap.available,
            cap.total,
            need
        ),
    ))
}
