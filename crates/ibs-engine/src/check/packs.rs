//! `check` at depths 2 and 3: every pack is read and re-hashed against its name; with the metadata
//! key its header must match the index, with the .pfx every chunk is decrypted and re-hashed and
//! every delta recipe must name a base the index holds in full. Packs are verified in parallel on
//! the blocking pool; each problem names the pack and the chunks it loses.

use super::{Affected, CheckReport};
use crate::chunkread::KeyCache;
use crate::openers::OpenerPool;
use crate::progress::Progress;
use crate::EngineError;
use futures::StreamExt;
use ibs_repo::chunk::ChunkOpener;
use ibs_repo::crypto::SymKey;
use ibs_repo::ids::{ChunkId, KeyId, PackId};
use ibs_repo::index::{ChunkLocation, Index};
use ibs_repo::keyring::RepoKeys;
use ibs_repo::pack::verify_pack;
use ibs_repo::{layout, Repository};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Why a delta chunk's recipe does not check.
enum RecipeFault {
    /// Its base is not in the index: a problem only if a backup references the recipe (a prune
    /// that keeps a pack whole keeps its unreferenced recipes indexed, and may remove their bases).
    BaseMissing(ChunkId),
    Other(String),
}

/// A delta chunk's recipe must be well formed and name a base the index holds in full, and its
/// copies must lie inside that base (the content's hash is checked when a restore applies it).
fn check_recipe(plain: &[u8], index: &Index) -> Result<(), RecipeFault> {
    let h = ibs_repo::delta::header(plain).map_err(|e| RecipeFault::Other(e.to_string()))?;
    match index.get(&h.base) {
        Some(b) if b.encoding != ibs_repo::pack::encoding::DELTA => {
            ibs_repo::delta::validate(plain, b.raw_length as usize)
                .map(|_| ())
                .map_err(|e| RecipeFault::Other(e.to_string()))
        }
        Some(_) => Err(RecipeFault::Other(format!(
            "delta base {} is itself a delta chunk",
            h.base
        ))),
        None => Err(RecipeFault::BaseMissing(h.base)),
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
    openers: &OpenerPool,
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
    open_all(&mut openers.lease(), bytes, chunks, k, data_keys)
}

/// What every pack of one [`verify_packs`] call is verified with.
struct Verifier {
    keys: Option<Arc<RepoKeys>>,
    data_keys: Option<Arc<HashMap<KeyId, Result<SymKey, String>>>>,
    /// Reusing openers shared by the packs being verified: one per pack verified at once (their
    /// number is bounded by the batches), so their buffers stay faulted in from pack to pack. A
    /// fresh buffer per chunk cost a quarter of `check --read-data`'s CPU at the 60 k bench point.
    openers: OpenerPool,
}

/// Decrypts and re-hashes every chunk of a pack whose header matched (the second half of
/// [`verify_one`]).
fn open_all(
    opener: &mut ChunkOpener,
    bytes: &[u8],
    chunks: &[(ChunkId, ChunkLocation)],
    k: &RepoKeys,
    data_keys: &HashMap<KeyId, Result<SymKey, String>>,
) -> PackOutcome {
    let mut bad = HashSet::new();
    let mut first_err = None;
    let mut verified = 0;
    let mut recipes = Vec::new();
    for (c, loc) in chunks {
        let sealed = &bytes[loc.offset as usize..(loc.offset + loc.length) as usize];
        let res = match data_keys.get(&loc.key_id) {
            Some(Ok(dk)) => opener
                .open_buf(c, loc.encoding, loc.raw_length, sealed, dk, &k.dedup)
                .map(|plain| {
                    if loc.encoding == ibs_repo::pack::encoding::DELTA {
                        recipes.push((*c, plain.to_vec()));
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
    /// Delta chunks of the pack (each with the base it names) whose base is not in the index. They
    /// are a problem only for a backup that references them; the caller decides.
    pub baseless: Vec<(ChunkId, ChunkId)>,
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

/// Reads and verifies `packs`, [`packs_at_once`] at a time: each is re-hashed against its name (no key
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
    let verifier = Arc::new(Verifier {
        keys: keys.cloned().map(Arc::new),
        data_keys,
        openers: OpenerPool::new(None),
    });
    let mut out = Vec::with_capacity(packs.len());
    for batch in batches(packs, &index.chunks_per_pack()) {
        let verdicts = verify_batch(repo, batch, index, &verifier, progress).await;
        out.extend(verdicts);
    }
    out.sort_by_key(|a| a.pack);
    out
}

/// At most about this many chunk locations are held at once (some 112 bytes each): packs are
/// verified in batches whose chunks one pass over the index gathers. A pack holding more is a
/// batch of its own. Holding every location at once cost 112 MB at a million chunks.
const BATCH_CHUNKS: usize = 1 << 16;

/// Splits `packs` into runs whose indexed chunks add up to at most [`BATCH_CHUNKS`] (a run
/// has at least one pack), in order.
fn batches(packs: Vec<PackId>, per_pack: &HashMap<PackId, usize>) -> Vec<Vec<PackId>> {
    let mut out: Vec<Vec<PackId>> = Vec::new();
    let mut held = 0usize;
    for p in packs {
        let n = per_pack.get(&p).copied().unwrap_or(0);
        match out.last_mut() {
            Some(run) if held + n <= BATCH_CHUNKS => run.push(p),
            _ => {
                out.push(vec![p]);
                held = 0;
            }
        }
        held += n;
    }
    out
}

/// Packs read and verified at once: one per core, at most [`MAX_AT_ONCE`] (each holds a pack of
/// up to 16 MiB in memory). One more than the cores, to read while every core verifies, was no
/// faster at the 60 k bench point on 2 cores and cost 24 MiB more peak RSS.
fn packs_at_once() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.clamp(2, MAX_AT_ONCE)
}

const MAX_AT_ONCE: usize = 4;

async fn verify_batch(
    repo: &Arc<Repository>,
    packs: Vec<PackId>,
    index: &Index,
    verifier: &Arc<Verifier>,
    progress: &Progress,
) -> Vec<PackVerdict> {
    let wanted: HashSet<PackId> = packs.iter().copied().collect();
    let mut pack_chunks: HashMap<PackId, Vec<(ChunkId, ChunkLocation)>> = HashMap::new();
    for (c, loc) in index.locations().filter(|(_, l)| wanted.contains(&l.pack)) {
        pack_chunks.entry(loc.pack).or_default().push((c, loc));
    }
    let mut outcomes = futures::stream::iter(packs)
        .map(|id| {
            let chunks = pack_chunks.remove(&id).unwrap_or_default();
            let verifier = verifier.clone();
            async move {
                let all = || chunks.iter().map(|(c, _)| *c).collect::<HashSet<_>>();
                let bytes = match repo.storage().get_reusable(&layout::pack(&id)).await {
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
                            baseless: Vec::new(),
                        };
                    }
                };
                let len = bytes.len() as u64;
                let chunks2 = chunks.clone();
                let out = tokio::task::spawn_blocking(move || {
                    let v = &*verifier;
                    let (keys, data_keys) = (v.keys.as_deref(), v.data_keys.as_deref());
                    verify_one(id, &bytes, &chunks2, keys, data_keys, &v.openers)
                })
                .await;
                let mut baseless = Vec::new();
                let (problem, verified) = match out {
                    Ok(mut o) => {
                        let mut bad: Vec<(ChunkId, String)> = Vec::new();
                        for (c, r) in &o.recipes {
                            match check_recipe(r, index) {
                                Ok(()) => {}
                                Err(RecipeFault::BaseMissing(base)) => baseless.push((*c, base)),
                                Err(RecipeFault::Other(e)) => bad.push((*c, e)),
                            }
                        }
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
                    baseless,
                }
            }
        })
        .buffer_unordered(packs_at_once());
    let mut out = Vec::new();
    while let Some(v) = outcomes.next().await {
        if v.bytes_read > 0 {
            progress.add_bytes(v.bytes_read);
        }
        progress.add_file();
        out.push(v);
    }
    out
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn read_packs(
    repo: &Arc<Repository>,
    (r, aff): (&mut CheckReport, &mut Affected),
    listed: &HashMap<PackId, u64>,
    index: &Index,
    keys: Option<&RepoKeys>,
    key_cache: Option<&KeyCache>,
    progress: &Progress,
) -> Result<Vec<Baseless>, EngineError> {
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
    let mut baseless = Vec::new();
    for v in verify_packs(repo, packs, index, keys, data_keys, progress).await {
        baseless.extend(v.baseless.iter().map(|&(chunk, base)| Baseless {
            pack: v.pack,
            chunk,
            base,
        }));
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
            aff.problem(r, obj, p.detail, Vec::new(), p.chunks);
        }
    }
    Ok(baseless)
}

/// A delta chunk whose base is not in the index ([`PackVerdict::baseless`]).
pub(super) struct Baseless {
    pub pack: PackId,
    pub chunk: ChunkId,
    pub base: ChunkId,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(n: u8) -> PackId {
        PackId::from_slice(&[n; 32]).expect("32 bytes")
    }

    #[test]
    fn batches_hold_at_most_the_bound_and_a_larger_pack_alone_in_order() {
        let packs: Vec<PackId> = (1..=6).map(pack).collect();
        let per_pack: HashMap<PackId, usize> = [
            (pack(1), BATCH_CHUNKS / 2),
            (pack(2), BATCH_CHUNKS / 2),
            (pack(3), 1),
            (pack(4), BATCH_CHUNKS * 3),
            (pack(5), 10),
            // pack 6 has no indexed chunks (an unindexed pack is still read).
        ]
        .into_iter()
        .collect();
        let b = batches(packs.clone(), &per_pack);
        assert_eq!(
            b,
            vec![
                vec![pack(1), pack(2)],
                vec![pack(3)],
                vec![pack(4)],
                vec![pack(5), pack(6)],
            ]
        );
        assert_eq!(b.concat(), packs, "every pack once, in order");
        for run in &b {
            let held: usize = run
                .iter()
                .map(|p| per_pack.get(p).copied().unwrap_or(0))
                .sum();
            assert!(
                run.len() == 1 || held <= BATCH_CHUNKS,
                "{held} chunks in {run:?}"
            );
        }
    }
}
