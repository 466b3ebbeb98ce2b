//! Corrupted backups: which backups reference chunks whose only copies are in damaged packs
//! (from the repository's damage markers), their job records' Corrupted marks, and the
//! `backups-corrupted` alert. Recomputed after every verification and after every backup while
//! markers exist, so self-healed backups lose the mark and the alert closes once nothing is
//! affected.

use crate::alerts::AlertKind;
use crate::context::JobContext;
use crate::model::{Corruption, JobKind};
use crate::ControllerError;
use ibs_engine::damage::{assess, Assessment};
use ibs_repo::crypto::SymKey;
use ibs_repo::ids::PackId;
use ibs_repo::Repository;

/// Recomputes which backups are Corrupted from the repository's damage markers, updates their
/// job records and the `backups-corrupted` alert. Returns the corrupted backups' job ids (or
/// repository backup ids for backups this controller has no job for).
pub(crate) async fn refresh(
    ctx: &JobContext,
    repo: &Repository,
    metadata_key: &SymKey,
) -> std::result::Result<Vec<String>, ibs_engine::EngineError> {
    let a = assess(repo, metadata_key).await?;
    let now = ctx.now();
    let internal = |e: ControllerError| ibs_engine::EngineError::Internal(e.to_string());
    let jobs = ctx
        .db
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
            ctx.db.put_job(&j).map_err(internal)?;
        }
    }
    let alerts = &ctx.alerts;
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
pub(crate) async fn refresh_after_backup(ctx: &JobContext) {
    let Ok((repo, state)) = ctx.open_repository(false).await else {
        return;
    };
    let marked = ctx
        .db
        .jobs(Some(JobKind::Backup), 100_000)
        .map(|js| js.iter().any(|j| j.corrupted.is_some()));
    match repo.damaged_packs().await {
        Ok(d) if d.is_empty() && !matches!(marked, Ok(true)) => {}
        Ok(_) => {
            if let Err(e) = refresh(ctx, &repo, &state.keys.metadata).await {
                tracing::warn!("recomputing Corrupted backups after a backup: {e}");
            }
        }
        Err(e) => tracing::warn!("listing damage markers after a backup: {e}"),
    }
}
