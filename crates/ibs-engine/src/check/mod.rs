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
use std::collections::{HashMap, HashSet};
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

/// Problems whose affected backups are found at the end, by one more pass over the references of
/// every backup whose references opened ([`Affected::resolve`]). References are streamed, never
/// held: a million-file backup lists a million chunk ids (32 MB), and a check held every backup's.
#[derive(Default)]
pub(super) struct Affected(Vec<(usize, HashSet<ChunkId>)>);

impl Affected {
    /// Records a problem whose affected backups are those referencing any of `chunks` (plus
    /// `backups`, already known).
    pub(super) fn problem(
        &mut self,
        r: &mut CheckReport,
        object: impl Into<String>,
        detail: impl Into<String>,
        backups: Vec<String>,
        chunks: HashSet<ChunkId>,
    ) {
        if !chunks.is_empty() {
            self.0.push((r.problems.len(), chunks));
        }
        r.problem(object, detail, backups);
    }

    /// Names, in every pending problem, the backups (of `opened`) that reference its chunks.
    async fn resolve(
        self,
        repo: &Repository,
        keys: Option<&RepoKeys>,
        opened: &[&Manifest],
        r: &mut CheckReport,
    ) -> Result<(), EngineError> {
        let Some(k) = keys.filter(|_| !self.0.is_empty()) else {
            return Ok(());
        };
        for m in opened {
            let mut hit = vec![false; self.0.len()];
            repo.for_each_ref(m, &k.metadata, |_, ids| {
                for (h, (_, chunks)) in hit.iter_mut().zip(&self.0) {
                    *h = *h || ids.iter().any(|c| chunks.contains(c));
                }
            })
            .await?;
            for (h, (i, _)) in hit.iter().zip(&self.0) {
                if *h {
                    r.problems[*i].backups.push(m.catalog.backup_id.clone());
                }
            }
        }
        for (i, _) in &self.0 {
            let b = &mut r.problems[*i].backups;
            b.sort();
            b.dedup();
        }
        Ok(())
    }
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
    let mut aff = Affected::default();
    let index = load_index(repo, keys.as_ref(), &mut r).await?;
    let (manifests, opened) = check_manifests(repo, keys.as_ref(), &index, &mut r).await?;
    let opened: Vec<&Manifest> = opened.iter().map(|&i| &manifests[i]).collect();
    let listed = check_packs_listed(repo, &index, keys.is_some(), &mut r, &mut aff).await?;
    check_certificates(repo, &mut r).await?;
    check_rewritten(repo, keys.as_ref(), &opened, &mut r).await?;
    check_data_key_envelopes(repo, &manifests, &index, &mut r, &mut aff).await?;
    if let Some(kc) = &key_cache {
        check_trees(kc, &manifests, &mut r).await;
    }
    if opts.read_data || key_cache.is_some() {
        let baseless = packs::read_packs(
            repo,
            (&mut r, &mut aff),
            &listed,
            &index,
            keys.as_ref(),
            key_cache.as_ref(),
            &opts.progress,
        )
        .await?;
        judge_baseless(repo, keys.as_ref(), &opened, baseless, &mut r, &mut aff).await?;
    }
    aff.resolve(repo, keys.as_ref(), &opened, &mut r).await?;
    r.problems.sort_by(|a, b| a.object.cmp(&b.object));
    Ok(r)
}

/// Delta chunks whose base is not in the index. One a backup references is a problem of its pack
/// (that backup would not restore; its references also name the base, which `check_manifests`
/// reports missing). One no backup references is garbage: a prune keeps a pack whole with its
/// index entries (young, or not marked by the plan it sweeps) but cannot read recipes, so it may
/// remove their bases with other packs. Such chunks are noted, and a later prune removes them.
async fn judge_baseless(
    repo: &Repository,
    keys: Option<&RepoKeys>,
    opened: &[&Manifest],
    baseless: Vec<packs::Baseless>,
    r: &mut CheckReport,
    aff: &mut Affected,
) -> Result<(), EngineError> {
    if baseless.is_empty() {
        return Ok(());
    }
    let wanted: HashSet<ChunkId> = baseless.iter().map(|b| b.chunk).collect();
    let referenced: HashSet<ChunkId> = match keys {
        Some(k) => {
            let mut found = HashSet::new();
            for m in opened {
                repo.for_each_ref(m, &k.metadata, |_, ids| {
                    found.extend(ids.iter().filter(|c| wanted.contains(c)).copied())
                })
                .await?;
            }
            found
        }
        // Without the metadata key the references cannot be read: every one counts.
        None => wanted,
    };
    let mut by_pack: std::collections::BTreeMap<PackId, Vec<&packs::Baseless>> = Default::default();
    let mut garbage = 0usize;
    for b in &baseless {
        if referenced.contains(&b.chunk) {
            by_pack.entry(b.pack).or_default().push(b);
        } else {
            garbage += 1;
        }
    }
    for (pack, list) in by_pack {
        r.chunks_verified = r.chunks_verified.saturating_sub(list.len() as u64);
        aff.problem(
            r,
            layout::pack(&pack).to_string(),
            format!(
                "{} delta chunks do not check (first: delta base {} is missing from the index)",
                list.len(),
                list[0].base
            ),
            Vec::new(),
            list.iter().map(|b| b.chunk).collect(),
        );
    }
    if garbage > 0 {
        r.notes.push(format!(
            "{garbage} delta chunks no backup references name a base that is not in the index: left by a prune that kept their packs whole; a later prune removes them"
        ));
    }
    Ok(())
}

/// On versioned (object-lock) storage: every write-once object that was overwritten or hidden by
/// a delete marker after ibs wrote it (a second put of the same content is none, see
/// [`crate::history`]). Reads take the first version, so backups still restore; the problem names
/// the tampering (ADR 0035).
async fn check_rewritten(
    repo: &Arc<Repository>,
    keys: Option<&RepoKeys>,
    opened: &[&Manifest],
    r: &mut CheckReport,
) -> Result<(), EngineError> {
    for key in crate::history::rewritten(repo, keys.map(|k| &k.metadata)).await? {
        let backups = match key.as_str().strip_prefix(layout::BACKUPS) {
            Some(id) if opened.iter().any(|m| m.catalog.backup_id == id) => vec![id.to_owned()],
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

/// Loads the index (with the metadata key): every segment must open. The index knows the damaged
/// packs, so every chunk resolves to a healthy copy if one exists.
async fn load_index(
    repo: &Repository,
    keys: Option<&RepoKeys>,
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
    }
    Ok(index)
}

/// Every manifest parses; with the metadata key its references stream by, which opens its refs
/// part and authenticates its catalog, and every chunk they name must be in `index`. Returns the
/// manifests that parse and which of them opened (positions), holding no references.
async fn check_manifests(
    repo: &Repository,
    keys: Option<&RepoKeys>,
    index: &Index,
    r: &mut CheckReport,
) -> Result<(Vec<Manifest>, Vec<usize>), EngineError> {
    let mut manifests = Vec::new();
    let mut opened = Vec::new();
    for id in repo.list_backup_ids().await? {
        r.backups += 1;
        let m = match repo.read_manifest(&id).await {
            Ok(m) => m,
            Err(e) => {
                r.problem(format!("backups/{id}"), e.to_string(), vec![id.clone()]);
                continue;
            }
        };
        if let Some(k) = keys {
            let mut missing: HashSet<ChunkId> = HashSet::new();
            let streamed = repo
                .for_each_ref(&m, &k.metadata, |_, ids| {
                    missing.extend(ids.iter().filter(|c| !index.contains(c)))
                })
                .await;
            match streamed {
                Ok(()) => opened.push(manifests.len()),
                Err(e) => r.problem(format!("backups/{id}"), e.to_string(), vec![id.clone()]),
            }
            if let Some(first) = missing.iter().min() {
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
        manifests.push(m);
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
    Ok((manifests, opened))
}

/// Every indexed pack is on storage with its recorded size; packs the index does not know are
/// noted (with a key only). Returns the listed packs and their sizes.
async fn check_packs_listed(
    repo: &Repository,
    index: &Index,
    keyed: bool,
    r: &mut CheckReport,
    aff: &mut Affected,
) -> Result<HashMap<PackId, u64>, EngineError> {
    let listed: HashMap<PackId, u64> = repo.list_packs().await?;
    r.packs = listed.len() as u64;
    let mut bad: HashMap<PackId, String> = HashMap::new();
    for (pack, len) in index.packs() {
        match listed.get(&pack) {
            None => bad.insert(pack, "pack is missing".to_string()),
            Some(&size) if size != len => {
                bad.insert(pack, format!("pack is {size} bytes, the index says {len}"))
            }
            _ => None,
        };
    }
    // The chunks of the packs found wanting only (one pass over the index).
    let mut chunks: HashMap<PackId, HashSet<ChunkId>> = HashMap::new();
    if !bad.is_empty() {
        for (c, loc) in index.locations().filter(|(_, l)| bad.contains_key(&l.pack)) {
            chunks.entry(loc.pack).or_default().insert(c);
        }
    }
    let mut bad: Vec<(PackId, String)> = bad.into_iter().collect();
    bad.sort();
    for (pack, detail) in bad {
        let c = chunks.remove(&pack).unwrap_or_default();
        aff.problem(r, layout::pack(&pack).to_string(), detail, Vec::new(), c);
    }
    let indexed: HashSet<PackId> = index.packs().map(|(p, _)| p).collect();
    let unindexed = listed
        .keys()
        .filter(|p| keyed && !indexed.contains(p))
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
    r: &mut CheckReport,
    aff: &mut Affected,
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
    let mut needed: Vec<(KeyId, Vec<String>)> = needed.into_iter().collect();
    needed.sort();
    for (k, mut backups) in needed {
        if !envelopes.contains(&k) {
            let chunks: HashSet<ChunkId> = index
                .locations()
                .filter(|(_, l)| l.key_id == k)
                .map(|(c, _)| c)
                .collect();
            backups.sort();
            backups.dedup();
            let object = layout::data_key(&k).to_string();
            aff.problem(r, object, "data key envelope is missing", backups, chunks);
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
