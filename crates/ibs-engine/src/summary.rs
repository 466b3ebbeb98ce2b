//! From what the producer read to what the manifest records: each source's summary and tree, and
//! the backup's catalog with its status figures and recovery readiness.

use crate::backup::BackupExtras;
use crate::produce::SourceOutcome;
use ibs_repo::clock::{new_backup_id, rfc3339};
use ibs_repo::crypto::SymKey;
use ibs_repo::ids::{ChunkId, KeyId};
use ibs_repo::lock;
use ibs_repo::manifest::{BackupStatus, Catalog, SourceSummary, SourceTree, TreePart};
use ibs_repo::Repository;
use std::time::Instant;

/// When a backup started, and the id that follows from it.
pub(crate) struct Start {
    pub backup_id: String,
    pub unix: i64,
    pub instant: Instant,
}

impl Start {
    /// A start now under the caller's id, refused when it is not a backup id or already names a
    /// backup.
    pub async fn with_id(repo: &Repository, id: &str) -> Result<Start, crate::EngineError> {
        let unusable = || crate::EngineError::BackupIdUnusable { id: id.to_owned() };
        if !ibs_repo::layout::is_backup_id(id) {
            return Err(unusable());
        }
        match repo.storage().stat(&ibs_repo::layout::backup(id)).await {
            Ok(_) => return Err(unusable()),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Start {
            backup_id: id.to_owned(),
            ..Start::now(repo)
        })
    }

    pub fn now(repo: &Repository) -> Start {
        let unix = repo.clock().now_unix();
        Start {
            backup_id: new_backup_id(unix),
            unix,
            instant: Instant::now(),
        }
    }
}

/// The backup's data key: its id, the key, and the certificate it is wrapped for (none with a
/// legacy key).
pub(crate) struct DataKey {
    pub id: KeyId,
    pub key: SymKey,
    pub thumbprint: Option<String>,
}

/// The byte counts a catalog records.
pub(crate) struct Figures {
    pub bytes_read: u64,
    pub bytes_new: u64,
    pub bytes_stored: u64,
}

/// The catalog of a backup that ends now with `status`, recording who wrote it (this build's
/// version and format revision, the deployment in `extras`). It is recovery-ready when it did not fail
/// and every essential source succeeded.
pub(crate) fn build_catalog(
    repo: &Repository,
    start: &Start,
    key: &DataKey,
    status: BackupStatus,
    sources: Vec<SourceSummary>,
    figures: Figures,
    extras: &BackupExtras,
) -> Catalog {
    let finished_unix = repo.clock().now_unix();
    let mut catalog = Catalog {
        format_version: ibs_repo::manifest::MANIFEST_VERSION as u32,
        backup_id: start.backup_id.clone(),
        repository_id: repo.config().id.clone(),
        started: rfc3339(start.unix),
        finished: rfc3339(finished_unix),
        duration_ms: start.instant.elapsed().as_millis() as u64,
        status,
        sources,
        encryption_mode: if key.thumbprint.is_some() {
            "certificate"
        } else {
            "legacy-key"
        }
        .into(),
        certificate_thumbprint: key.thumbprint.clone(),
        data_key_id: key.id.to_hex(),
        bytes_read: figures.bytes_read,
        bytes_new: figures.bytes_new,
        bytes_stored: figures.bytes_stored,
        hostname: lock::hostname(),
        ibs_version: env!("CARGO_PKG_VERSION").into(),
        recovery_ready: None,
        deployment_id: extras.deployment_id.clone(),
        format_revision: Some(ibs_repo::manifest::FORMAT_REVISION),
    };
    catalog.recovery_ready = Some(
        catalog.status != BackupStatus::Failed
            && catalog
                .sources
                .iter()
                .filter(|s| s.essential)
                .all(|s| s.status == BackupStatus::Succeeded),
    );
    catalog
}

/// The catalog's per-source summaries and the manifest's trees, from the producer's outcomes.
pub(crate) struct Summary {
    pub summaries: Vec<SourceSummary>,
    /// At most 1000.
    pub warnings: Vec<String>,
    pub trees: TreePart,
    pub bytes_read: u64,
}

/// Summarises each source: its status (a failed source keeps its error, one with unreadable
/// entries is partial), figures, and tree; errors and warnings are capped at 1000 each.
pub(crate) fn summarise(outcomes: Vec<SourceOutcome>, extras: &BackupExtras) -> Summary {
    let mut summaries = Vec::new();
    let mut warnings = Vec::new();
    let mut trees = TreePart::default();
    let mut bytes_read = 0;
    for SourceOutcome {
        name,
        kind,
        origin,
        tree,
        stats,
    } in outcomes
    {
        bytes_read += stats.bytes;
        let (status, tree_ids) = match tree {
            Ok(ids) if stats.errors == 0 => (BackupStatus::Succeeded, ids),
            Ok(ids) => (BackupStatus::PartialSucceeded, ids),
            Err(e) => {
                trees.errors.push(format!("{name}: {e}"));
                (BackupStatus::Failed, Vec::new())
            }
        };
        trees.errors.extend(
            stats
                .error_messages
                .iter()
                .take(1000usize.saturating_sub(trees.errors.len()))
                .cloned(),
        );
        summaries.push(SourceSummary {
            name: name.clone(),
            kind: kind.into(),
            status,
            files: stats.entries.files,
            dirs: stats.entries.dirs,
            bytes: stats.bytes,
            errors: stats.errors,
            changed_while_read: stats.changed,
            essential: extras.essential.as_ref().is_none_or(|e| e.contains(&name)),
            skipped: stats.skipped,
            server_version: extras.server_versions.get(&name).cloned(),
        });
        warnings.extend(
            stats
                .warnings
                .iter()
                .take(1000usize.saturating_sub(warnings.len()))
                .cloned(),
        );
        trees.sources.push(SourceTree {
            name,
            kind: kind.into(),
            origin,
            tree: tree_ids.iter().map(ChunkId::to_hex).collect(),
        });
    }
    Summary {
        summaries,
        warnings,
        trees,
        bytes_read,
    }
}
