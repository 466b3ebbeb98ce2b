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

use crate::chunkread::KeyCache;
use crate::progress::Progress;
use crate::state::WriterState;
use crate::EngineError;
use futures::StreamExt;
use ibs_repo::chunk::ChunkOpener;
use ibs_repo::config::Encryption;
use ibs_repo::crypto::SymKey;
use ibs_repo::ids::{ChunkId, KeyId, PackId};
use ibs_repo::index::{ChunkLocation, Index};
use ibs_repo::keyring::{RepoKeys, Unlock};
use ibs_repo::lock::LockKind;
use ibs_repo::pack::verify_pack;
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

async fn run(repo: &Arc<Repository>, opts: &CheckOptions) -> Result<CheckReport, EngineError> {
    let mut r = CheckReport::default();
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

    // Manifests.
    let mut refs: BTreeMap<String, Vec<ChunkId>> = BTreeMap::new();
    let mut manifests = Vec::new();
    for id in repo.list_backup_ids().await? {
        r.backups += 1;
        match repo.read_manifest(&id).await {
            Ok(m) => {
                if let Some(k) = &keys {
                    match m.open_refs(&k.metadata) {
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

    // Index: it knows the damaged packs, so every chunk resolves to a healthy copy if one exists.
    let damaged = repo.damaged_packs().await?;
    if !damaged.is_empty() {
        r.notes.push(format!(
            "{} packs carry a damage marker (damaged/); chunks with a healthy copy elsewhere are read from it",
            damaged.len()
        ));
    }
    let mut index = Index::with_damaged(damaged);
    if let Some(k) = &keys {
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
        for (id, chunks) in &refs {
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

    // Packs on storage against the index.
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
                affected(&refs, &chunks),
            ),
            Some(&size) if size != len => r.problem(
                layout::pack(&pack).to_string(),
                format!("pack is {size} bytes, the index says {len}"),
                affected(&refs, &chunks),
            ),
            _ => {}
        }
    }
    let unindexed = listed
        .keys()
        .filter(|p| keys.is_some() && !index.packs().any(|(q, _)| q == **p))
        .count();
    if unindexed > 0 {
        r.notes.push(format!("{unindexed} packs are not in the index (left by an interrupted backup or prune); `prune` removes them"));
    }

    // Certificates and repository key envelopes: every certificate the config names must be
    // stored, intact and under its own thumbprint, and the current one must have its envelope.
    if let Encryption::Certificate {
        current,
        certificates,
    } = &repo.config().encryption
    {
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
    }

    // Data-key envelopes.
    if matches!(repo.config().encryption, Encryption::Certificate { .. }) {
        let envelopes: HashSet<KeyId> = repo
            .storage()
            .list(layout::DATA_KEYS)
            .await?
            .iter()
            .filter_map(|o| layout::parse_data_key(&o.key))
            .collect();
        let mut needed: HashMap<KeyId, Vec<String>> = HashMap::new();
        for m in &manifests {
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
                let mut b = affected(&refs, &chunks);
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
    }

    // Tree parts (needs the .pfx).
    if let Some(kc) = &key_cache {
        for m in &manifests {
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

    if opts.read_data || key_cache.is_some() {
        read_packs(
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

/// A delta chunk's recipe must be well formed and name a base the index holds in full, and its
/// copies must lie inside that base (the content's hash is checked when a restore applies it).
fn check_recipe(plain: &[u8], index: &Index) -> Result<(), String> {
    let h = ibs_repo::delta::header(plain).map_err(|e| e.to_string())?;
    match index.get(&h.base) {
        Some(b) if b.encoding != ibs_repo::pack::encoding::DELTA => {
            ibs_repo::delta::validate(plain, b.raw_length as usize)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Some(_) => Err(format!("delta base {} is itself a delta chunk", h.base)),
        None => Err(format!("delta base {} is missing from the index", h.base)),
    }
}

/// What reading one pack found.
struct PackOutcome {
    problem: Option<(String, HashSet<ChunkId>)>,
    verified: u64,
    /// The recipes of the pack's delta chunks (checked against the index by the caller).
    recipes: Vec<(ChunkId, Vec<u8>)>,
}

/// Verifies one pack's bytes: its hash, its header against the index (with the metadata key) and
/// every chunk (with the data keys). Pure CPU work, run on the blocking pool so packs verify in
/// parallel.
fn verify_one(
    id: PackId,
    bytes: &[u8],
    chunks: &[(ChunkId, ChunkLocation)],
    keys: Option<&RepoKeys>,
    data_keys: Option<&HashMap<KeyId, Result<SymKey, String>>>,
) -> PackOutcome {
    let all = || chunks.iter().map(|(c, _)| *c).collect::<HashSet<_>>();
    let header = match verify_pack(&id, bytes, keys.map(|k| &k.metadata)) {
        Ok(h) => h,
        Err(e) => {
            return PackOutcome {
                problem: Some((e.to_string(), all())),
                verified: 0,
                recipes: Vec::new(),
            }
        }
    };
    if let Some(entries) = header {
        let by_id: HashMap<ChunkId, _> = entries.iter().map(|e| (e.id, *e)).collect();
        let bad: HashSet<ChunkId> = chunks
            .iter()
            .filter(|(c, loc)| {
                !by_id.get(c).is_some_and(|e| {
                    e.offset == loc.offset && e.length == loc.length && e.key_id == loc.key_id
                })
            })
            .map(|(c, _)| *c)
            .collect();
        if !bad.is_empty() {
            return PackOutcome {
                problem: Some((
                    format!("{} index entries do not match the pack header", bad.len()),
                    bad,
                )),
                verified: 0,
                recipes: Vec::new(),
            };
        }
    }
    let (Some(k), Some(data_keys)) = (keys, data_keys) else {
        return PackOutcome {
            problem: None,
            verified: 0,
            recipes: Vec::new(),
        };
    };
    let mut opener = ChunkOpener::default();
    let mut bad = HashSet::new();
    let mut first_err = None;
    let mut verified = 0;
    let mut recipes = Vec::new();
    for (c, loc) in chunks {
        let sealed = &bytes[loc.offset as usize..(loc.offset + loc.length) as usize];
        let res = match data_keys.get(&loc.key_id) {
            Some(Ok(dk)) => opener
                .open(c, loc.encoding, loc.raw_length, sealed, dk, &k.dedup)
                .map(|plain| {
                    if loc.encoding == ibs_repo::pack::encoding::DELTA {
                        recipes.push((*c, plain));
                    }
                })
                .map_err(|e| e.to_string()),
            Some(Err(e)) => Err(e.clone()),
            None => Err(format!("data key {} is unknown", loc.key_id)),
        };
        match res {
            Ok(()) => verified += 1,
            Err(e) => {
                first_err.get_or_insert(e);
                bad.insert(*c);
            }
        }
    }
    let problem = first_err.map(|e| {
        (
            format!(
                "{} chunks fail to decrypt or verify (first: {e})",
                bad.len()
            ),
            bad,
        )
    });
    PackOutcome {
        problem,
        verified,
        recipes,
    }
}

/// The verdict on one pack read by [`verify_packs`].
#[derive(Debug, Clone)]
pub struct PackVerdict {
    pub pack: PackId,
    /// Bytes read (0 when the pack could not be read).
    pub bytes_read: u64,
    /// Chunks decrypted and re-hashed (only with the data keys).
    pub chunks_verified: u64,
    /// What is wrong, and which chunks it touches; `None` for a sound pack.
    pub problem: Option<PackProblem>,
}

#[derive(Debug, Clone)]
pub struct PackProblem {
    pub kind: PackProblemKind,
    pub detail: String,
    pub chunks: HashSet<ChunkId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackProblemKind {
    /// Storage has no such pack.
    Missing,
    /// Storage failed to return it with a permanent error about the object itself.
    Unreadable,
    /// The storage could not be reached (connectivity, path, credentials): says nothing about
    /// the pack, so it is never recorded as damage.
    Unavailable,
    /// Its bytes do not hash to its name, or its header or chunks do not verify.
    Corrupt,
}

/// Reads and verifies `packs`, two at a time: each is re-hashed against its name (no key
/// needed); with `keys` its header must match `index`; with `data_keys` every chunk is
/// decrypted. Used by `check --read-data` (every pack) and by scheduled verification (a sample).
pub async fn verify_packs(
    repo: &Arc<Repository>,
    packs: Vec<PackId>,
    index: &Index,
    keys: Option<&RepoKeys>,
    data_keys: Option<Arc<HashMap<KeyId, Result<SymKey, String>>>>,
    progress: &Progress,
) -> Vec<PackVerdict> {
    let wanted: HashSet<PackId> = packs.iter().copied().collect();
    let mut pack_chunks: HashMap<PackId, Vec<(ChunkId, ChunkLocation)>> = HashMap::new();
    for c in index.chunk_ids() {
        if let Some(loc) = index.get(c).filter(|l| wanted.contains(&l.pack)) {
            pack_chunks.entry(loc.pack).or_default().push((*c, loc));
        }
    }
    let keys = keys.cloned().map(Arc::new);
    let mut outcomes = futures::stream::iter(packs)
        .map(|id| {
            let chunks = pack_chunks.remove(&id).unwrap_or_default();
            let (keys, data_keys) = (keys.clone(), data_keys.clone());
            async move {
                let all = || chunks.iter().map(|(c, _)| *c).collect::<HashSet<_>>();
                let bytes = match repo.storage().get(&layout::pack(&id)).await {
                    Ok(b) => b,
                    Err(e) => {
                        use ibs_storage::ErrorKind as K;
                        let kind = match e.kind {
                            K::NotFound => PackProblemKind::Missing,
                            K::Connectivity | K::Path | K::Authentication | K::Capacity => {
                                PackProblemKind::Unavailable
                            }
                            _ => PackProblemKind::Unreadable,
                        };
                        let detail = if e.is_not_found() {
                            "pack is missing".to_string()
                        } else {
                            e.to_string()
                        };
                        return PackVerdict {
                            pack: id,
                            bytes_read: 0,
                            chunks_verified: 0,
                            problem: Some(PackProblem {
                                kind,
                                detail,
                                chunks: all(),
                            }),
                        };
                    }
                };
                let len = bytes.len() as u64;
                let chunks2 = chunks.clone();
                let out = tokio::task::spawn_blocking(move || {
                    verify_one(id, &bytes, &chunks2, keys.as_deref(), data_keys.as_deref())
                })
                .await;
                let (problem, verified) = match out {
                    Ok(mut o) => {
                        let bad: Vec<(ChunkId, String)> = o
                            .recipes
                            .iter()
                            .filter_map(|(c, r)| check_recipe(r, index).err().map(|e| (*c, e)))
                            .collect();
                        if let Some((_, first)) = bad.first() {
                            let (detail, chunks) = o.problem.get_or_insert_with(|| {
                                (
                                    format!(
                                        "{} delta chunks do not check (first: {first})",
                                        bad.len()
                                    ),
                                    HashSet::new(),
                                )
                            });
                            let _ = detail;
                            chunks.extend(bad.iter().map(|(c, _)| *c));
                            o.verified -= bad.len() as u64;
                        }
                        (
                            o.problem.map(|(detail, chunks)| PackProblem {
                                kind: PackProblemKind::Corrupt,
                                detail,
                                chunks,
                            }),
                            o.verified,
                        )
                    }
                    Err(e) => (
                        Some(PackProblem {
                            kind: PackProblemKind::Unreadable,
                            detail: format!("verification task: {e}"),
                            chunks: all(),
                        }),
                        0,
                    ),
                };
                PackVerdict {
                    pack: id,
                    bytes_read: len,
                    chunks_verified: verified,
                    problem,
                }
            }
        })
        .buffer_unordered(2);
    let mut out = Vec::new();
    while let Some(v) = outcomes.next().await {
        if v.bytes_read > 0 {
            progress.add_bytes(v.bytes_read);
        }
        progress.add_file();
        out.push(v);
    }
    out.sort_by_key(|a| a.pack);
    out
}

#[allow(clippy::too_many_arguments)]
async fn read_packs(
    repo: &Arc<Repository>,
    r: &mut CheckReport,
    listed: &HashMap<PackId, u64>,
    index: &Index,
    refs: &BTreeMap<String, Vec<ChunkId>>,
    keys: Option<&RepoKeys>,
    key_cache: Option<&KeyCache>,
    progress: &Progress,
) -> Result<(), EngineError> {
    progress.add_total(listed.values().sum(), listed.len() as u64);
    // Every data key is opened once, up front; a key that does not open fails its chunks below.
    let data_keys = match key_cache {
        Some(kc) => {
            let mut m = HashMap::new();
            for k in index.key_ids() {
                m.insert(*k, kc.data_key(k, None).await.map_err(|e| e.to_string()));
            }
            Some(Arc::new(m))
        }
        None => None,
    };
    let mut packs: Vec<PackId> = listed.keys().copied().collect();
    packs.sort();
    for v in verify_packs(repo, packs, index, keys, data_keys, progress).await {
        let obj = layout::pack(&v.pack).to_string();
        if v.problem
            .as_ref()
            .is_none_or(|p| p.kind == PackProblemKind::Corrupt)
        {
            r.packs_read += 1;
            r.bytes_read += v.bytes_read;
            r.chunks_verified += v.chunks_verified;
        }
        if let Some(p) = v.problem {
            r.problem(obj, p.detail, affected(refs, &p.chunks));
        }
    }
    Ok(())
}

/// The state argument, if any, must belong to the repository; helper for callers.
pub fn state_if_present(state_root: &std::path::Path, repo: &Repository) -> Option<WriterState> {
    WriterState::load(state_root, &repo.config().id).ok()
}
