//! Damage: turning pack verdicts into damage markers, and working out which backups (and which of
//! their sources) a set of damaged packs makes unrestorable.
//!
//! A chunk is *lost* when every indexed copy of it is in a damaged pack (the index prefers a
//! healthy copy, see `ibs_repo::index`). A backup is *affected* when it references a lost chunk;
//! once a later backup stored the chunk again (self-heal) the backup is whole again. Needs only
//! the metadata key (writer state), never the .pfx.

use crate::check::{PackProblemKind, PackVerdict};
use crate::EngineError;
use ibs_repo::clock::rfc3339;
use ibs_repo::crypto::SymKey;
use ibs_repo::damaged::{DamageMarker, DamageReason};
use ibs_repo::ids::{ChunkId, PackId};
use ibs_repo::Repository;
use serde::Serialize;
use std::collections::{BTreeSet, HashSet};

/// One backup that cannot be fully restored because of damaged packs.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AffectedBackup {
    pub backup_id: String,
    /// The sources (engine source names) that reference a lost chunk.
    pub sources: Vec<String>,
    /// True when the manifest predates per-source references (refs v1): every source of the
    /// backup is listed because the affected ones cannot be told apart.
    pub all_sources: bool,
    /// Lost chunks the backup references.
    pub lost_chunks: usize,
    /// The damaged packs that hold them.
    pub packs: Vec<PackId>,
}

/// What the damaged packs of a repository affect.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Assessment {
    pub damaged_packs: Vec<PackId>,
    pub backups: Vec<AffectedBackup>,
    /// Backups whose manifest or refs could not be read (id, error): their state is unknown.
    pub unreadable: Vec<(String, String)>,
}

/// Records verdicts as damage markers: a damaged, missing or unreadable pack gets a marker (an
/// existing marker keeps its first detection time); a marked pack that verified sound loses its
/// marker. Verdicts on unavailable storage change nothing. Returns the packs newly marked.
pub async fn record_verdicts(
    repo: &Repository,
    verdicts: &[PackVerdict],
) -> Result<Vec<PackId>, EngineError> {
    let marked = repo.damaged_packs().await?;
    let now = rfc3339(repo.clock().now_unix());
    let mut new = Vec::new();
    for v in verdicts {
        let reason = match v.problem.as_ref().map(|p| p.kind) {
            None => {
                if marked.contains(&v.pack) {
                    repo.delete_damage_marker(&v.pack).await?;
                }
                continue;
            }
            Some(PackProblemKind::Unavailable) => continue,
            Some(PackProblemKind::Missing) => DamageReason::Missing,
            Some(PackProblemKind::Unreadable) => DamageReason::Unreadable,
            Some(PackProblemKind::Corrupt) => DamageReason::HashMismatch,
        };
        if marked.contains(&v.pack) {
            continue;
        }
        let detail = v
            .problem
            .as_ref()
            .map(|p| p.detail.clone())
            .unwrap_or_default();
        let m = DamageMarker {
            pack: v.pack.to_hex(),
            detected: now.clone(),
            reason,
            detail,
        };
        repo.put_damage_marker(&v.pack, &m).await?;
        new.push(v.pack);
    }
    Ok(new)
}

/// Which backups the repository's damaged packs affect, and through which sources.
pub async fn assess(repo: &Repository, metadata_key: &SymKey) -> Result<Assessment, EngineError> {
    let damaged = repo.damaged_packs().await?;
    let mut out = Assessment {
        damaged_packs: damaged.iter().copied().collect(),
        ..Default::default()
    };
    out.damaged_packs.sort();
    if damaged.is_empty() {
        return Ok(out);
    }
    let (index, _) = repo.load_index(metadata_key).await?;
    for id in repo.list_backup_ids().await? {
        let opened = match repo.read_manifest(&id).await {
            Ok(m) => repo
                .open_refs_detailed(&m, metadata_key)
                .await
                .map(|r| (r, m.catalog)),
            Err(e) => Err(e),
        };
        let refs = match opened {
            Ok(r) => r,
            Err(e) => {
                out.unreadable.push((id, e.to_string()));
                continue;
            }
        };
        let (refs, catalog) = refs;
        let lost: HashSet<ChunkId> = refs
            .all
            .iter()
            .filter(|c| index.only_damaged(c))
            .copied()
            .collect();
        if lost.is_empty() {
            continue;
        }
        let packs: BTreeSet<PackId> = lost
            .iter()
            .filter_map(|c| index.get(c).map(|l| l.pack))
            .collect();
        let (sources, all_sources) = match &refs.sources {
            Some(per) => (
                per.iter()
                    .filter(|s| s.chunks.iter().any(|c| lost.contains(c)))
                    .map(|s| s.name.clone())
                    .collect(),
                false,
            ),
            None => (
                catalog.sources.iter().map(|s| s.name.clone()).collect(),
                true,
            ),
        };
        out.backups.push(AffectedBackup {
            backup_id: id,
            sources,
            all_sources,
            lost_chunks: lost.len(),
            packs: packs.into_iter().collect(),
        });
    }
    Ok(out)
}
