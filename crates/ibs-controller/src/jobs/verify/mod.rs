//! Scheduled verification of the packs on the share, without the .pfx.
//!
//! - Schedule: every `verify_every_hours` (setting), as its own [`ScheduleState`] (meta key
//!   `verify_schedule`) driven by the same pure [`crate::scheduler::tick`] as backups: missed slots
//!   collapse into one run, and a due slot that cannot run (maintenance, another job holding the
//!   gate, no location) is recorded as a Skipped `verify` job with its reason.
//! - A run takes the job gate, a shared repository lock, and reads `ceil(sample% × packs)` packs:
//!   never verified first, then least recently verified (ties by pack id), so
//!   `ceil(100 / sample%)` runs cover every pack. Each pack is re-hashed against its name (no key)
//!   and its header checked against the index (metadata key from the writer state). Per-pack
//!   results go to `pack_checks`.
//! - Damage (hash mismatch, truncation, missing while indexed, unreadable) becomes a repository
//!   damage marker (`damaged/<pack>`); a marked pack that verifies sound again loses its marker.
//!   Unreachable storage fails the job and marks nothing.
//! - Corruption: the backups referencing chunks whose only copies are damaged are marked
//!   Corrupted in their job records (the original status is kept) and named, with their
//!   components, in the `backups-corrupted` alert. This is recomputed after every verification
//!   and after every backup while markers exist, so self-healed backups lose the mark and the
//!   alert closes once nothing is affected.
//! - Tampering (object-lock storage only, ADR 0040): every write-once object overwritten or hidden
//!   after ibs wrote it, every sampled pack without a lock or with a lock shorter than ibs set,
//!   raise `repository-tampered` ([`super::tamper`]); a run that finds none closes it.

use crate::context::{Failure, JobContext};
use crate::db_verify::PackCheck;
use crate::model::{Job, JobKind, JobStatus, VerifySummary};
use crate::scheduler::ScheduleState;
use crate::stop::{settle, JobStop};
use crate::{ControllerError, Result};
use ibs_engine::check::{verify_packs, PackProblemKind};
use ibs_engine::damage::record_verdicts;
use ibs_engine::{CancelToken, Progress};
use ibs_repo::ids::PackId;
use ibs_repo::lock::LockKind;
use ibs_repo::Repository;
use ibs_storage::AlertClass;
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

pub mod corruption;

/// The verification schedule's state-database key (a [`ScheduleState`] of its own).
pub const META_VERIFY_SCHEDULE: &str = "verify_schedule";

pub use ibs_types::requests::VerificationStatus;

/// The packs a run verifies: never verified first, then least recently verified, ties by id.
pub fn pick_sample(
    packs: &BTreeSet<PackId>,
    records: &std::collections::HashMap<String, PackCheck>,
    percent: u32,
) -> Vec<PackId> {
    let n = (packs.len() * percent.clamp(1, 100) as usize).div_ceil(100);
    let mut order: Vec<(Option<i64>, PackId)> = packs
        .iter()
        .map(|p| (records.get(&p.to_hex()).map(|r| r.verified_at), *p))
        .collect();
    order.sort();
    order.into_iter().take(n).map(|(_, p)| p).collect()
}

/// Verification status, coverage and the damaged packs.
pub fn status(ctx: &JobContext) -> Result<VerificationStatus> {
    let s = ctx.stored_location()?;
    let records = ctx.db.pack_checks()?;
    let last_run = ctx
        .db
        .jobs(Some(JobKind::Verify), 200)?
        .into_iter()
        .find(|j| j.status != JobStatus::Skipped);
    let summary = last_run.as_ref().and_then(|j| j.verification.clone());
    let times: Vec<i64> = records.values().map(|r| r.verified_at).collect();
    let mut damaged: Vec<PackCheck> = records.values().filter(|r| !r.ok).cloned().collect();
    damaged.sort_by(|a, b| a.pack.cmp(&b.pack));
    let corrupted_backups = ctx
        .db
        .jobs(Some(JobKind::Backup), 10_000)?
        .into_iter()
        .filter(|j| j.corrupted.is_some() && j.deleted_at.is_none())
        .map(|j| j.id)
        .collect();
    let next = ctx
        .db
        .get_meta::<ScheduleState>(META_VERIFY_SCHEDULE)?
        .filter(|_| s.path.is_some())
        .map(|st| st.next_due);
    Ok(VerificationStatus {
        verify_every_hours: s.verify_every_hours,
        verify_sample_percent: s.verify_sample_percent,
        next_verification_time: next,
        packs_recorded: records.len() as u64,
        packs_total: summary.as_ref().map(|v| v.packs_total).unwrap_or(0),
        coverage_ever: summary.as_ref().map(|v| v.coverage_ever).unwrap_or(0.0),
        coverage_window: summary.as_ref().map(|v| v.coverage_window).unwrap_or(0.0),
        oldest_verified_at: times.iter().min().copied(),
        newest_verified_at: times.iter().max().copied(),
        last_run,
        damaged,
        corrupted_backups,
    })
}

/// The tamper scan of a verification (object-lock storage only): every write-once prefix's
/// history, and the lock of each sampled pack that is there. Raises the alert on evidence, closes
/// it on none; a scan that cannot finish is logged and changes nothing.
async fn scan_tampering(
    ctx: &JobContext,
    repo: &Arc<Repository>,
    metadata_key: &ibs_repo::crypto::SymKey,
    verdicts: &[ibs_engine::check::PackVerdict],
) {
    let storage = repo.storage();
    let Some(policy) = storage.lock_policy() else {
        return;
    };
    let sampled: Vec<ibs_storage::ObjectKey> = verdicts
        .iter()
        .filter(|v| {
            !v.problem
                .as_ref()
                .is_some_and(|p| p.kind == PackProblemKind::Missing)
        })
        .map(|v| ibs_repo::layout::pack(&v.pack))
        .collect();
    let scan = async {
        let (unlocked, shortened) = super::tamper::locks(storage, policy, &sampled)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(super::tamper::Findings {
            rewritten: super::tamper::rewritten(repo, metadata_key)
                .await
                .map_err(|e| e.to_string())?,
            unlocked,
            shortened,
            refused: Vec::new(),
            rejected_plans: super::tamper::rejected_plans(repo, metadata_key)
                .await
                .map_err(|e| e.to_string())?,
        })
    };
    match scan.await {
        Ok(f) => super::tamper::record(ctx, &f, "verification", true),
        Err(e) => tracing::warn!("verification: the tamper scan could not finish: {e}"),
    }
}

/// A verification job's id.
pub(crate) fn job_id(now: i64) -> String {
    format!("verify-{}", ibs_repo::clock::new_backup_id(now))
}

/// Runs verification job `job` (recorded as Running by the caller) and records how it ended.
/// A cancel or the job timeout ([`JobStop`]) stops it before its verdicts are recorded.
pub(crate) async fn run(
    ctx: &JobContext,
    mut job: Job,
    progress: Arc<Progress>,
    stop: Arc<JobStop>,
) {
    let began = std::time::Instant::now();
    let outcome = execute(ctx, &job, &progress, stop.token()).await;
    job.finished_at = Some(ctx.now());
    job.duration_ms = Some(crate::model::elapsed_ms(began));
    match outcome {
        Ok(summary) => {
            job.status = JobStatus::Succeeded;
            job.bytes_read = summary.bytes_read;
            job.verification = Some(summary);
        }
        Err(f) => {
            job.status = JobStatus::Failed;
            job.alert_class = Some(f.class.as_str().into());
            job.error = Some(f.message);
        }
    }
    settle(&stop, &mut job, "; no verdicts were recorded");
    if let Err(e) = ctx.db.put_job(&job) {
        tracing::error!("recording verification job {}: {e}", job.id);
    }
    tracing::debug!("verification job {} ended {}", job.id, job.status.as_str());
}

async fn execute(
    ctx: &JobContext,
    job: &Job,
    progress: &Progress,
    cancel: &CancelToken,
) -> std::result::Result<VerifySummary, Failure> {
    let percent = ctx
        .stored_location()
        .map_err(|e| Failure::general(e.to_string()))?
        .verify_sample_percent;
    let (repo, state) = ctx.open_repository(false).await?;
    let guard = repo
        .lock(LockKind::Shared, "verify", ctx.lock_wait)
        .await
        .map_err(|e| Failure::from_engine(&e.into()))?;
    let result = tokio::select! {
        r = verify_locked(ctx, job, &repo, &state.keys, percent, progress) => r,
        // Dropping the verification reads nothing further and records nothing.
        () = cancel.cancelled() => Err(Failure::general("the verification was stopped")),
    };
    let released = guard.release().await;
    if let Err(e @ ibs_repo::RepoError::LockLost { .. }) = released {
        return Err(Failure::from_engine(&e.into()));
    }
    let summary = result?;
    released.map_err(|e| Failure::from_engine(&e.into()))?;
    Ok(summary)
}

async fn verify_locked(
    ctx: &JobContext,
    job: &Job,
    repo: &Arc<Repository>,
    keys: &ibs_repo::keyring::RepoKeys,
    percent: u32,
    progress: &Progress,
) -> std::result::Result<VerifySummary, Failure> {
    let engine = |e: ibs_engine::EngineError| Failure::from_engine(&e);
    let db = |e: ControllerError| Failure::general(e.to_string());
    let (index, _) = repo
        .load_index(&keys.metadata)
        .await
        .map_err(|e| engine(e.into()))?;
    let listed = repo.list_packs().await.map_err(|e| engine(e.into()))?;
    let packs: BTreeSet<PackId> = index
        .packs()
        .map(|(p, _)| p)
        .chain(listed.keys().copied())
        .collect();
    let present: HashSet<String> = packs.iter().map(PackId::to_hex).collect();
    ctx.db.retain_pack_checks(&present).map_err(db)?;
    let records = ctx.db.pack_checks().map_err(db)?;
    let sample = pick_sample(&packs, &records, percent);
    progress.add_total(
        sample.iter().filter_map(|p| listed.get(p)).sum(),
        sample.len() as u64,
    );
    let verdicts = verify_packs(repo, sample, &index, Some(keys), None, progress).await;
    if let Some(p) = verdicts
        .iter()
        .filter_map(|v| v.problem.as_ref())
        .find(|p| p.kind == PackProblemKind::Unavailable)
    {
        return Err(Failure {
            class: AlertClass::Connectivity,
            message: format!(
                "the share could not be read; nothing was recorded: {}",
                p.detail
            ),
        });
    }
    let now = ctx.now();
    let mut damaged_found = 0;
    let mut bytes_read = 0;
    for v in &verdicts {
        bytes_read += v.bytes_read;
        let reason = v.problem.as_ref().map(|p| {
            let kind = match p.kind {
                PackProblemKind::Missing => "missing",
                PackProblemKind::Unreadable => "unreadable",
                _ => "hash-mismatch",
            };
            format!("{kind}: {}", p.detail)
        });
        damaged_found += reason.is_some() as u64;
        ctx.db
            .record_pack_check(
                &v.pack.to_hex(),
                now,
                reason.is_none(),
                reason.as_deref(),
                v.bytes_read,
            )
            .map_err(db)?;
    }
    record_verdicts(repo, &verdicts).await.map_err(engine)?;
    scan_tampering(ctx, repo, &keys.metadata, &verdicts).await;
    let corrupted = corruption::refresh(ctx, repo, &keys.metadata)
        .await
        .map_err(engine)?;

    // Coverage: of the current packs, those verified ever, and within the window of runs one
    // full pass takes (this run included).
    let records = ctx.db.pack_checks().map_err(db)?;
    let window_runs = 100u32.div_ceil(percent.clamp(1, 100));
    let window_start = ctx
        .db
        .jobs(Some(JobKind::Verify), 1000)
        .map_err(db)?
        .into_iter()
        .filter(|j| j.id == job.id || j.status == JobStatus::Succeeded)
        .take(window_runs as usize)
        .filter_map(|j| j.started_at)
        .min()
        .unwrap_or(now);
    let total = packs.len().max(1) as f64;
    let ever = packs
        .iter()
        .filter(|p| records.contains_key(&p.to_hex()))
        .count() as f64;
    let recent = packs
        .iter()
        .filter(|p| {
            records
                .get(&p.to_hex())
                .is_some_and(|r| r.verified_at >= window_start)
        })
        .count() as f64;
    Ok(VerifySummary {
        sample_percent: percent,
        packs_total: packs.len() as u64,
        packs_checked: verdicts.len() as u64,
        bytes_read,
        damaged_found,
        coverage_ever: ever / total,
        coverage_window: recent / total,
        coverage_window_runs: window_runs,
        corrupted_backups: corrupted,
    })
}
