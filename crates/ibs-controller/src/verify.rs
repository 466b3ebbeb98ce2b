//! Scheduled verification of the packs on the share, without the .pfx.
//!
//! - Schedule: every `verify_every_hours` (setting), as its own [`ScheduleState`] (meta key
//!   `verify_schedule`) driven by the same pure [`scheduler::tick`] as backups: missed slots
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

use crate::alerts::AlertKind;
use crate::controller::{spawn_job, Controller};
use crate::db_verify::PackCheck;
use crate::model::{Corruption, Job, JobKind, JobStatus, Maintenance, Trigger, VerifySummary};
use crate::runner::Failure;
use crate::scheduler::{self, Conditions, Decision, ScheduleState};
use crate::{ControllerError, Result};
use ibs_engine::check::{verify_packs, PackProblemKind};
use ibs_engine::damage::{assess, record_verdicts, Assessment};
use ibs_engine::Progress;
use ibs_repo::crypto::SymKey;
use ibs_repo::ids::PackId;
use ibs_repo::lock::LockKind;
use ibs_repo::Repository;
use ibs_storage::AlertClass;
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

pub const META_VERIFY_SCHEDULE: &str = "verify_schedule";
const GATE_WHAT: &str = "verification";

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

impl Controller {
    /// The verification part of a tick: consume a due slot, run or record a Skipped job.
    pub(crate) fn verification_tick(
        &self,
        maintenance: Option<&Maintenance>,
    ) -> Result<(Option<Job>, Option<tokio::task::JoinHandle<()>>)> {
        let now = self.now();
        let s = self.stored_location()?;
        let period = scheduler::period(s.verify_every_hours);
        let Some(mut state) = self.db().get_meta::<ScheduleState>(META_VERIFY_SCHEDULE)? else {
            // First sight: the first verification is one period from now, not at once (the first
            // backup is due now and would make it skip).
            self.db().set_meta(
                META_VERIFY_SCHEDULE,
                &ScheduleState::starting_now(now + period),
            )?;
            return Ok((None, None));
        };
        let cond = Conditions {
            scheduler_enabled: true,
            maintenance: maintenance.map(Maintenance::skip_reason),
            running: self.busy(),
            configured: s.path.is_some(),
        };
        let decision = scheduler::tick(&mut state, now, s.verify_every_hours, &cond);
        if decision != Decision::NotDue {
            self.db().set_meta(META_VERIFY_SCHEDULE, &state)?;
        }
        match decision {
            Decision::NotDue => Ok((None, None)),
            Decision::Run => match self.launch_verification(Trigger::Scheduled) {
                Ok((j, h)) => Ok((Some(j), Some(h))),
                Err(ControllerError::Conflict { message, .. }) => {
                    Ok((Some(self.record_verify_skip(&message)?), None))
                }
                Err(e) => Err(e),
            },
            Decision::Skip(reason) => Ok((Some(self.record_verify_skip(&reason)?), None)),
        }
    }

    fn record_verify_skip(&self, reason: &str) -> Result<Job> {
        self.record_skipped_job(verify_job_id(self.now()), JobKind::Verify, reason)
    }

    /// Starts a verification now; 409 during maintenance or while another job runs.
    pub fn start_verification(&self) -> Result<(Job, tokio::task::JoinHandle<()>)> {
        if let Some(m) = self.maintenance()?.filter(|m| m.state == "active") {
            return Err(ControllerError::conflict(m.skip_reason()));
        }
        if self.stored_location()?.path.is_none() {
            return Err(ControllerError::conflict(
                "no backup location is configured",
            ));
        }
        self.launch_verification(Trigger::OnDemand)
    }

    fn launch_verification(&self, trigger: Trigger) -> Result<(Job, tokio::task::JoinHandle<()>)> {
        let now = self.now();
        let id = verify_job_id(now);
        let guard = self.take_gate(&id, GATE_WHAT)?;
        let mut job = Job::new(
            id.clone(),
            JobKind::Verify,
            trigger,
            JobStatus::Running,
            now,
        );
        job.started_at = Some(now);
        self.db().put_job(&job)?;
        let progress = self.track_live(id, now);
        let ctl = self.clone();
        let job2 = job.clone();
        let handle = spawn_job(move || async move {
            let _guard = guard;
            run_verification(&ctl, job2, progress).await;
        });
        Ok((job, handle))
    }

    /// Verification status, coverage and the damaged packs.
    pub fn verification_status(&self) -> Result<VerificationStatus> {
        let s = self.stored_location()?;
        let records = self.db().pack_checks()?;
        let last_run = self
            .db()
            .jobs(Some(JobKind::Verify), 200)?
            .into_iter()
            .find(|j| j.status != JobStatus::Skipped);
        let summary = last_run.as_ref().and_then(|j| j.verification.clone());
        let times: Vec<i64> = records.values().map(|r| r.verified_at).collect();
        let mut damaged: Vec<PackCheck> = records.values().filter(|r| !r.ok).cloned().collect();
        damaged.sort_by(|a, b| a.pack.cmp(&b.pack));
        let corrupted_backups = self
            .db()
            .jobs(Some(JobKind::Backup), 10_000)?
            .into_iter()
            .filter(|j| j.corrupted.is_some() && j.deleted_at.is_none())
            .map(|j| j.id)
            .collect();
        let next = self
            .db()
            .get_meta::<ScheduleState>(META_VERIFY_SCHEDULE)?
            .filter(|_| s.path.is_some())
            .map(|st| ibs_repo::clock::rfc3339(st.next_due));
        Ok(VerificationStatus {
            verify_every_hours: s.verify_every_hours,
            verify_sample_percent: s.verify_sample_percent,
            next_verification_time: next,
            packs_recorded: records.len() as u64,
            packs_total: summary.as_ref().map(|v| v.packs_total).unwrap_or(0),
            coverage_ever: summary.as_ref().map(|v| v.coverage_ever).unwrap_or(0.0),
            coverage_window: summary.as_ref().map(|v| v.coverage_window).unwrap_or(0.0),
            oldest_verified_at: times.iter().min().map(|t| ibs_repo::clock::rfc3339(*t)),
            newest_verified_at: times.iter().max().map(|t| ibs_repo::clock::rfc3339(*t)),
            last_run,
            damaged,
            corrupted_backups,
        })
    }
}

fn verify_job_id(now: i64) -> String {
    format!("verify-{}", ibs_repo::clock::new_backup_id(now))
}

async fn run_verification(ctl: &Controller, mut job: Job, progress: Arc<Progress>) {
    let began = std::time::Instant::now();
    let outcome = execute(ctl, &job, &progress).await;
    job.finished_at = Some(ctl.now());
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
    if let Err(e) = ctl.db().put_job(&job) {
        tracing::error!("recording verification job {}: {e}", job.id);
    }
    tracing::info!("verification job {} ended {}", job.id, job.status.as_str());
}

async fn execute(
    ctl: &Controller,
    job: &Job,
    progress: &Progress,
) -> std::result::Result<VerifySummary, Failure> {
    let percent = ctl
        .stored_location()
        .map_err(|e| Failure::general(e.to_string()))?
        .verify_sample_percent;
    let (repo, state) = crate::runner::open_repository(ctl, false).await?;
    let guard = repo
        .lock(LockKind::Shared, "verify", ctl.inner.lock_wait)
        .await
        .map_err(|e| Failure::from_engine(&e.into()))?;
    let result = verify_locked(ctl, job, &repo, &state.keys, percent, progress).await;
    let released = guard.release().await;
    if let Err(e @ ibs_repo::RepoError::LockLost { .. }) = released {
        return Err(Failure::from_engine(&e.into()));
    }
    let summary = result?;
    released.map_err(|e| Failure::from_engine(&e.into()))?;
    Ok(summary)
}

async fn verify_locked(
    ctl: &Controller,
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
    ctl.db().retain_pack_checks(&present).map_err(db)?;
    let records = ctl.db().pack_checks().map_err(db)?;
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
    let now = ctl.now();
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
        ctl.db()
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
    let corrupted = refresh_corruption(ctl, repo, &keys.metadata)
        .await
        .map_err(engine)?;

    // Coverage: of the current packs, those verified ever, and within the window of runs one
    // full pass takes (this run included).
    let records = ctl.db().pack_checks().map_err(db)?;
    let window_runs = 100u32.div_ceil(percent.clamp(1, 100));
    let window_start = ctl
        .db()
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

/// Recomputes which backups are Corrupted from the repository's damage markers, updates their
/// job records and the `backups-corrupted` alert. Returns the corrupted backups' job ids (or
/// repository backup ids for backups this controller has no job for).
pub(crate) async fn refresh_corruption(
    ctl: &Controller,
    repo: &Repository,
    metadata_key: &SymKey,
) -> std::result::Result<Vec<String>, ibs_engine::EngineError> {
    let a = assess(repo, metadata_key).await?;
    let now = ctl.now();
    let internal = |e: ControllerError| ibs_engine::EngineError::Internal(e.to_string());
    let jobs = ctl
        .db()
        .jobs(Some(JobKind::Backup), 100_000)
        .map_err(internal)?;
    let mut lines = Vec::new();
    let mut ids = Vec::new();
    for ab in &a.backups {
        let job = jobs
            .iter()
            .find(|j| j.backup_id.as_deref() == Some(ab.backup_id.as_str()));
        let components = match job {
            Some(j) if ab.all_sources => j.components.iter().map(|c| c.name.clone()).collect(),
            Some(j) => j
                .components
                .iter()
                .filter(|c| {
                    c.sources.iter().any(|s| ab.sources.contains(s)) || ab.sources.contains(&c.name)
                })
                .map(|c| c.name.clone())
                .collect(),
            None => ab.sources.clone(),
        };
        let name = job.map(|j| j.id.clone()).unwrap_or(ab.backup_id.clone());
        lines.push(format!(
            "backup {name} (repository backup {}): components {}{}",
            ab.backup_id,
            components.join(", "),
            if ab.all_sources {
                " (all components: this backup predates per-component references, so the affected ones cannot be told apart)"
            } else {
                ""
            }
        ));
        ids.push(name);
    }
    for mut j in jobs {
        let Some(bid) = j.backup_id.clone() else {
            continue;
        };
        let next = a.backups.iter().find(|b| b.backup_id == bid).map(|ab| {
            let components = if ab.all_sources {
                j.components.iter().map(|c| c.name.clone()).collect()
            } else {
                j.components
                    .iter()
                    .filter(|c| {
                        c.sources.iter().any(|s| ab.sources.contains(s))
                            || ab.sources.contains(&c.name)
                    })
                    .map(|c| c.name.clone())
                    .collect()
            };
            Corruption {
                since: j.corrupted.as_ref().map(|c| c.since).unwrap_or(now),
                components,
                sources: ab.sources.clone(),
                all_components: ab.all_sources,
                packs: ab.packs.iter().map(PackId::to_hex).collect(),
                lost_chunks: ab.lost_chunks,
            }
        });
        if next != j.corrupted {
            if next.is_some() && j.corrupted.is_none() {
                tracing::warn!("backup {} is marked Corrupted", j.id);
            } else if next.is_none() {
                tracing::info!("backup {} is whole again: Corrupted mark cleared", j.id);
            }
            j.corrupted = next;
            ctl.db().put_job(&j).map_err(internal)?;
        }
    }
    let alerts = ctl.alerts();
    if a.backups.is_empty() {
        alerts
            .close_kind(
                AlertKind::BackupsCorrupted,
                "no backup is affected any more",
                now,
            )
            .map_err(internal)?;
    } else {
        alerts
            .raise(AlertKind::BackupsCorrupted, &details(&a, &lines), now)
            .map_err(internal)?;
    }
    Ok(ids)
}

fn details(a: &Assessment, lines: &[String]) -> String {
    format!(
        "{} backup(s) affected: {}. Damaged packs: {}.",
        lines.len(),
        lines.join("; "),
        a.damaged_packs
            .iter()
            .map(PackId::to_hex)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// After a backup: while damage markers exist, recompute Corrupted marks (a backup may have
/// healed older ones). Best effort: a failure is logged, the next verification retries.
pub(crate) async fn refresh_after_backup(ctl: &Controller) {
    let Ok((repo, state)) = crate::runner::open_repository(ctl, false).await else {
        return;
    };
    let marked = ctl
        .db()
        .jobs(Some(JobKind::Backup), 100_000)
        .map(|js| js.iter().any(|j| j.corrupted.is_some()));
    match repo.damaged_packs().await {
        Ok(d) if d.is_empty() && !matches!(marked, Ok(true)) => {}
        Ok(_) => {
            if let Err(e) = refresh_corruption(ctl, &repo, &state.keys.metadata).await {
                tracing::warn!("recomputing Corrupted backups after a backup: {e}");
            }
        }
        Err(e) => tracing::warn!("listing damage markers after a backup: {e}"),
    }
}
