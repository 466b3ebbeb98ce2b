//! `check`: verifies a repository at three depths.
//!
//! 1. Structure (always): config, every manifest parses and names itself; with the metadata key (the
//!    writer state or a .pfx): every manifest's refs part opens, which authenticates its catalog
//!    (format 2: an edited time, hostname or status is a problem naming the backup), every index
//!    segment opens, every chunk a backup references is indexed, every indexed pack exists with
//!    its recorded size, every needed data-key envelope exists. Without a key a catalog cannot be
//!    authenticated, and format-1 catalogs cannot be with any key; the report notes both.
//! 2. `--read-data` (no key needed): every pack is read and re-hashed against its name; with the
//!    metadata key its header must also match the index.
//! 3. With a .pfx: every indexed chunk is decrypted and re-hashed, and every manifest's tree opens.
//!
//! Every problem names the object and, where the metadata key allows, the backups it affects.

mod packs;

pub use packs::{verify_packs, PackProblem, PackProblemKind, PackVerdict};

use crate::chunkread::KeyCache;
use crate::progress::Progress;
use crate::state::WriterState;
use crate::EngineError;
use ibs_repo::config::Encryption;
use ibs_repo::ids::{ChunkId, KeyId, PackId};
use ibs_repo::index::Index;
use ibs_repo::keyring::{RepoKeys, Unlock};
use ibs_repo::lock::LockKind;
use ibs_repo::manifest::Manifest;
use ibs_repo::{layout, Repository};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

pub struct CheckOptions {
    pub read_data: bool,
    pub unlock: Option<Arc<Unlock>>,
    pub state: Option<WriterState>,
    pub progress: Arc<Progress>,
    pub lock_wait: Duration,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    pub object: String,
    pub detail: String,
    /// Backups that can no longer be fully restored because of this problem (empty when unknown
    /// or none).
    pub backups: Vec<String>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct CheckReport {
    pub level: String,
    pub backups: u64,
    pub index_segments: u64,
    pub packs: u64,
    pub packs_read: u64,
    pub chunks_verified: u64,
    pub bytes_read: u64,
    pub problems: Vec<Problem>,
    pub notes: Vec<String>,
}

impl CheckReport {
    fn problem(
        &mut self,
        object: impl Into<String>,
        detail: impl Into<String>,
        backups: Vec<String>,
    ) {
        self.problems.push(Problem {
            object: object.into(),
            detail: detail.into(),
            backups,
        });
    }
}

/// Backups whose references intersect `chunks`.
fn affected(refs: &BTreeMap<String, Vec<ChunkId>>, chunks: &HashSet<ChunkId>) -> Vec<String> {
    refs.iter()
        .filter(|(_, r)| r.iter().any(|c| chunks.contains(c)))
        .map(|(id, _)| id.clone())
        .collect()
}

pub async fn check(repo: Arc<Repository>, opts: CheckOptions) -> Result<CheckReport, EngineError> {
    let lock = repo.lock(LockKind::Shared, "check", opts.lock_wait).await?;
    let result = run(&repo, &opts).await;
    lock.finish(result).await
}

/// Runs every check the options and keys allow, in order: manifests, index, packs against the
/// index, certificates, data-key envelopes, trees, then the packs' bytes.
async fn run(repo: &Arc<Repository>, opts: &CheckOptions) -> Result<CheckReport, EngineError> {
    let mut r = CheckReport::default();
    let (key_cache, keys) = open_keys(repo, opts, &mut r).await?;
    let (refs, manifests) = check_manifests(repo, keys.as_ref(), &mut r).await?;
    let index = check_index(repo, keys.as_ref(), &refs, &mut r).await?;
    let listed = check_packs_listed(repo, &index, &refs, keys.is_some(), &mut r).await?;
    check_certificates(repo, &mut r).await?;
    check_rewritten(repo, keys.as_ref(), &refs, &mut r).await?;
    check_data_key_envelopes(repo, &manifests, &index, &refs, &mut r).await?;
    if let Some(kc) = &key_cache {
        check_trees(kc, &manifests, &mut r).await;
    }
    if opts.read_data || key_cache.is_some() {
        packs::read_packs(
            repo,
            &mut r,
            &listed,
            &index,
            &refs,
            keys.as_ref(),
            key_cache.as_ref(),
            &opts.progress,
        )
        .await?;
    }
    r.problems.sort_by(|a, b| a.object.cmp(&b.object));
    Ok(r)
}

/// On versioned (object-lock) storage: every write-once object that was overwritten or hidden by
/// a delete marker after ibs wrote it (a second put of the same content is none, see
/// [`crate::history`]). Reads take the first version, so backups still restore; the problem names
/// the tampering (ADR 0035).
async fn check_rewritten(
    repo: &Arc<Repository>,
    keys: Option<&RepoKeys>,
    refs: &BTreeMap<String, Vec<ChunkId>>,
    r: &mut CheckReport,
) -> Result<(), EngineError> {
    for key in crate::history::rewritten(repo, keys.map(|k| &k.metadata)).await? {
        let backups = match key.as_str().strip_prefix(layout::BACKUPS) {
            Some(id) if refs.contains_key(id) => vec![id.to_owned()],
            _ => Vec::new(),
        };
        r.problem(
            key.as_str(),
            "overwritten or deleted on storage after ibs wrote it: someone with write access to the bucket tampered with it (reads keep using the version ibs wrote)",
            backups,
        );
    }
    Ok(())
}

/// Opens what the options give: the .pfx's keys (which also read data keys) or the writer
/// state's metadata key. Sets the report's level and notes what cannot be checked without a key.
async fn open_keys(
    repo: &Arc<Repository>,
    opts: &CheckOptions,
    r: &mut CheckReport,
) -> Result<(Option<KeyCache>, Option<RepoKeys>), EngineError> {
    let key_cache = match &opts.unlock {
        Some(u) => Some(KeyCache::open(repo.clone(), u.clone()).await?),
        None => None,
    };
    let keys: Option<RepoKeys> = match (&key_cache, &opts.state) {
        (Some(kc), _) => Some(kc.repo_keys.clone()),
        (None, Some(st)) => {
            repo.check_keys(&st.keys)?;
            Some(st.keys.clone())
        }
        (None, None) => None,
    };
    r.level = match (&key_cache, opts.read_data) {
        (Some(_), _) => "decrypt",
        (None, true) => "read-data",
        (None, false) => "structure",
    }
    .into();
    if keys.is_none() {
        r.notes.push(
            "no writer state and no .pfx: index, pack headers and references were not checked, and catalogs (times, hostname, status) were not authenticated"
                .into(),
        );
    }
    Ok((key_cache, keys))
}

/// Every manifest parses; with the metadata key its refs part opens (which authenticates its
/// catalog). Returns each backup's references and the manifests that parse.
async fn check_manifests(
    repo: &Repository,
    keys: Option<&RepoKeys>,
    r: &mut CheckReport,
) -> Result<(BTreeMap<String, Vec<ChunkId>>, Vec<Manifest>), EngineError> {
    let mut refs: BTreeMap<String, Vec<ChunkId>> = BTreeMap::new();
    let mut manifests = Vec::new();
    for id in repo.list_backup_ids().await? {
        r.backups += 1;
        match repo.read_manifest(&id).await {
            Ok(m) => {
                if let Some(k) = keys {
                    match repo.open_refs(&m, &k.metadata).await {
                        Ok(c) => {
                            refs.insert(id.clone(), c);
                        }
                        Err(e) => {
                            r.problem(format!("backups/{id}"), e.to_string(), vec![id.clone()])
                        }
                    }
                }
                manifests.push(m);
            }
            Err(e) => r.problem(format!("backups/{id}"), e.to_string(), vec![id.clone()]),
        }
    }
    let unauthenticated = manifests
        .iter()
        .filter(|m| !m.catalog_authenticated())
        .count();
    if unauthenticated > 0 {
        r.notes.push(format!(
            "{unauthenticated} backups use manifest format 1, whose catalog (times, hostname, status) is not authenticated"
        ));
    }
    Ok((refs, manifests))
}

/// Loads the index (with the metadata key): every segment opens, and every chunk a backup
/// references is indexed. The index knows the damaged packs, so every chunk resolves to a
/// healthy copy if one exists.
async fn check_index(
    repo: &Repository,
    keys: Option<&RepoKeys>,
    refs: &BTreeMap<String, Vec<ChunkId>>,
    r: &mut CheckReport,
) -> Result<Index, EngineError> {
    let damaged = repo.damaged_packs().await?;
    if !damaged.is_empty() {
        r.notes.push(format!(
            "{} packs carry a damage marker (damaged/); chunks with a healthy copy elsewhere are read from it",
            damaged.len()
        ));
    }
    let mut index = Index::with_damaged(damaged);
    if let Some(k) = keys {
        for obj in repo.storage().list(layout::INDEX).await? {
            r.index_segments += 1;
            let name = obj.key.name().to_owned();
            let decoded = match repo.storage().get(&obj.key).await {
                Ok(b) => ibs_repo::index::decode_segment(&name, &b, &k.metadata),
                Err(e) => Err(e.into()),
            };
            match decoded {
                Ok(recs) => recs.iter().for_each(|rec| index.add_pack(rec)),
                Err(e) => r.problem(obj.key.to_string(), e.to_string(), Vec::new()),
            }
        }
        for (id, chunks) in refs {
            let missing: Vec<&ChunkId> = chunks.iter().filter(|c| !index.contains(c)).collect();
            if let Some(first) = missing.first() {
                r.problem(
                    format!("backups/{id}"),
                    format!(
                        "{} referenced chunks are not in the index (first: {first})",
                        missing.len()
                    ),
                    vec![id.clone()],
                );
            }
        }
    }
    Ok(index)
}

/// Every indexed pack is on storage with its recorded size; packs the index does not know are
/// noted (with a key only). Returns the listed packs and their sizes.
async fn check_packs_listed(
    repo: &Repository,
    index: &Index,
    refs: &BTreeMap<String, Vec<ChunkId>>,
    keyed: bool,
    r: &mut CheckReport,
) -> Result<HashMap<PackId, u64>, EngineError> {
    let listed: HashMap<PackId, u64> = repo.list_packs().await?;
    r.packs = listed.len() as u64;
    let mut pack_chunks: HashMap<PackId, HashSet<ChunkId>> = HashMap::new();
    for id in index.chunk_ids() {
        if let Some(loc) = index.get(id) {
            pack_chunks.entry(loc.pack).or_default().insert(*id);
        }
    }
    for (pack, len) in index.packs() {
        let chunks = pack_chunks.get(&pack).cloned().unwrap_or_default();
        match listed.get(&pack) {
            None => r.problem(
                layout::pack(&pack).to_string(),
                "pack is missing",
                affected(refs, &chunks),
            ),
            Some(&size) if size != len => r.problem(
                layout::pack(&pack).to_string(),
                format!("pack is {size} bytes, the index says {len}"),
                affected(refs, &chunks),
            ),
            _ => {}
        }
    }
    let unindexed = listed
        .keys()
        .filter(|p| keyed && !index.packs().any(|(q, _)| q == **p))
        .count();
    if unindexed > 0 {
        r.notes.push(format!("{unindexed} packs are not in the index (left by an interrupted backup or prune); `prune` removes them"));
    }
    Ok(listed)
}

/// Certificates and repository key envelopes: every certificate the config names must be stored,
/// intact and under its own thumbprint, and the current one must have its envelope.
async fn check_certificates(repo: &Repository, r: &mut CheckReport) -> Result<(), EngineError> {
    let Encryption::Certificate {
        current,
        certificates,
    } = &repo.config().encryption
    else {
        return Ok(());
    };
    for t in certificates {
        if let Err(e) = repo.certificate(t).await {
            r.problem(layout::cert(t).to_string(), e.to_string(), Vec::new());
        }
    }
    let key = layout::repo_key(current);
    match repo.storage().stat(&key).await {
        Ok(_) => {}
        Err(e) if e.is_not_found() => r.problem(
            key.to_string(),
            "the repository key envelope of the current certificate is missing; adopt and recovery need it",
            Vec::new(),
        ),
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Every data key a manifest or the index names has its envelope (certificate repositories).
async fn check_data_key_envelopes(
    repo: &Repository,
    manifests: &[Manifest],
    index: &Index,
    refs: &BTreeMap<String, Vec<ChunkId>>,
    r: &mut CheckReport,
) -> Result<(), EngineError> {
    if !matches!(repo.config().encryption, Encryption::Certificate { .. }) {
        return Ok(());
    }
    let envelopes: HashSet<KeyId> = repo
        .storage()
        .list(layout::DATA_KEYS)
        .await?
        .iter()
        .filter_map(|o| layout::parse_data_key(&o.key))
        .collect();
    let mut needed: HashMap<KeyId, Vec<String>> = HashMap::new();
    for m in manifests {
        if let Ok(k) = KeyId::from_hex(&m.catalog.data_key_id) {
            needed
                .entry(k)
                .or_default()
                .push(m.catalog.backup_id.clone());
        }
    }
    for k in index.key_ids() {
        needed.entry(*k).or_default();
    }
    for (k, backups) in needed {
        if !envelopes.contains(&k) {
            let chunks: HashSet<ChunkId> = index
                .chunk_ids()
                .filter(|c| index.get(c).is_some_and(|l| l.key_id == k))
                .copied()
                .collect();
            let mut b = affected(refs, &chunks);
            b.extend(backups);
            b.sort();
            b.dedup();
            r.problem(
                layout::data_key(&k).to_string(),
                "data key envelope is missing",
                b,
            );
        }
    }
    Ok(())
}

/// Every manifest's tree part opens with its data key (needs the .pfx).
async fn check_trees(kc: &KeyCache, manifests: &[Manifest], r: &mut CheckReport) {
    for m in manifests {
        let c = &m.catalog;
        let opened = match KeyId::from_hex(&c.data_key_id) {
            Ok(k) => kc
                .data_key(&k, c.certificate_thumbprint.as_deref())
                .await
                .and_then(|dk| Ok(m.open_tree(&dk)?)),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = opened {
            r.problem(
                format!("backups/{}", c.backup_id),
                e.to_string(),
                vec![c.backup_id.clone()],
            );
        }
    }
}

/// The state argument, if any, must belong to the repository; helper for callers.
pub fn state_if_present(state_root: &std::path::Path, repo: &Repository) -> Option<WriterState> {
    WriterState::load(state_root, &repo.config().id).ok()
}
