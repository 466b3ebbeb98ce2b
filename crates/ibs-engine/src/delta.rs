//! The writer's side of delta chunks (`ibs_repo::delta`, format spec §7.1): for each stream source
//! (a database export, stdin), a local *signature store* in the writer state, and the diff that
//! turns a changed chunk into a recipe against a chunk the repository already holds in full.
//!
//! The store (`STATE/delta/<source>.sig`) lists, for every chunk the source's last backup held in
//! full (read this time, or the base of one of its recipes), the keyed signature and length of each
//! block (`ibs_repo::delta::split_blocks`). The writer cannot read old chunks (they are sealed under
//! older data keys), so these signatures are all it knows of them. The store is written beside the
//! old one while a backup runs and replaces it only after the manifest is committed; a store that is
//! missing or unreadable only costs deduplication, never correctness, because every recipe is
//! verified end to end by the target's keyed hash when it is applied.
//!
//! File format (local, not part of the repository; little-endian):
//! ```text
//! "IBSSIG" u16 version=1
//! records: chunk_id[32] u32 count, count × (u128 signature, u32 length)
//! ```
//!
//! Choosing a base: one block in 32 (by signature) is an *anchor*; a new chunk's anchors vote for
//! the stored chunks that hold them, and the chunk with most votes (at least two) is the base. A
//! recipe is kept only if it inserts at most half of the chunk; otherwise the chunk is stored in
//! full and becomes a base itself. Bases are always full chunks, so a restore never follows chains.

use ibs_repo::delta::{split_blocks, RecipeBuilder, RecipeHeader, SigKey};
use ibs_repo::ids::ChunkId;
use ibs_repo::index::Index;
use ibs_repo::pack::encoding;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 6] = b"IBSSIG";
const VERSION: u16 = 1;
const SIG_LEN: usize = 20;
/// One block in this many is an anchor.
const ANCHOR_EVERY: u64 = 32;

/// Hashes a signature for a `HashMap` by taking its high 64 bits: signatures are already keyed
/// BLAKE3 output, uniformly distributed, so rehashing them (SipHash by default) is wasted work.
/// (The low bits decide which blocks are anchors, so they are not uniform among anchors.)
#[derive(Default, Clone, Copy)]
struct SigHasher(u64);

impl std::hash::Hasher for SigHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = (v >> 64) as u64;
    }
}

type SigMap<V> = HashMap<u128, V, std::hash::BuildHasherDefault<SigHasher>>;

fn is_anchor(sig: u128) -> bool {
    (sig as u64).is_multiple_of(ANCHOR_EVERY)
}

/// The signatures of the previous backup of one source.
struct OldStore {
    file: File,
    /// Per record: chunk id, file offset of its signatures, block count.
    records: Vec<(ChunkId, u64, u32)>,
    anchors: SigMap<u32>,
}

impl OldStore {
    fn open(path: &Path) -> std::io::Result<Option<Self>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut r = BufReader::with_capacity(1 << 20, file.try_clone()?);
        let mut head = [0u8; 8];
        r.read_exact(&mut head)?;
        if &head[..6] != MAGIC || u16::from_le_bytes([head[6], head[7]]) != VERSION {
            return Err(std::io::Error::other("not a version 1 signature store"));
        }
        let mut s = OldStore {
            file,
            records: Vec::new(),
            anchors: SigMap::default(),
        };
        let mut pos = 8u64;
        let mut rec = [0u8; 36];
        let mut sig = [0u8; SIG_LEN];
        loop {
            match r.read_exact(&mut rec) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            }
            let id = ChunkId::from_slice(&rec[..32]).expect("32 bytes");
            let count = u32::from_le_bytes(rec[32..36].try_into().expect("4 bytes"));
            let idx = s.records.len() as u32;
            pos += 36;
            for _ in 0..count {
                r.read_exact(&mut sig)?;
                let h = u128::from_le_bytes(sig[..16].try_into().expect("16 bytes"));
                if is_anchor(h) {
                    s.anchors.entry(h).or_insert(idx);
                }
            }
            s.records.push((id, pos, count));
            pos += count as u64 * SIG_LEN as u64;
        }
        Ok(Some(s))
    }

    /// The block signatures and lengths of record `idx`.
    fn read(&self, idx: u32) -> std::io::Result<Vec<u8>> {
        let (_, off, count) = self.records[idx as usize];
        let mut buf = vec![0u8; count as usize * SIG_LEN];
        self.file.read_exact_at(&mut buf, off)?;
        Ok(buf)
    }
}

/// What became of the signature store of one source, applied after the manifest is committed.
pub struct PendingStore {
    tmp: PathBuf,
    path: PathBuf,
}

impl PendingStore {
    /// Puts the new store in place of the old one.
    pub fn commit(self) -> std::io::Result<()> {
        std::fs::rename(&self.tmp, &self.path)
    }

    /// Throws the new store away (the backup was not committed).
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Figures of one source's deltas.
#[derive(Default, Debug, Clone, Copy)]
pub struct DeltaStats {
    pub chunks: u64,
    /// Bytes of content stored as recipes.
    pub content_bytes: u64,
    /// Bytes of those recipes (before compression).
    pub recipe_bytes: u64,
}

/// The delta state of one stream source while it is backed up.
pub struct DeltaSession {
    key: SigKey,
    old: Option<OldStore>,
    new: BufWriter<File>,
    pending: PendingStore,
    written: HashSet<ChunkId>,
    /// Signatures of the chunk being emitted: (signature, start, length).
    cur: Vec<(u128, u32, u32)>,
    pub stats: DeltaStats,
}

impl DeltaSession {
    /// Opens the store of `source` under `dir` (created if missing). An unreadable old store is
    /// logged and ignored.
    pub fn open(
        dir: &Path,
        source: &str,
        dedup_key: &ibs_repo::crypto::SymKey,
    ) -> std::io::Result<Self> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let path = dir.join(format!("{source}.sig"));
        let tmp = dir.join(format!("{source}.sig.new"));
        let old = match OldStore::open(&path) {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(
                    "source {source}: the delta signature store {} is unreadable ({e}); this backup stores changed chunks in full",
                    path.display()
                );
                None
            }
        };
        // Signatures are as private as the writer state's keys: owner only.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        let mut new = BufWriter::with_capacity(1 << 20, file);
        new.write_all(MAGIC)?;
        new.write_all(&VERSION.to_le_bytes())?;
        Ok(DeltaSession {
            key: SigKey::derive(dedup_key),
            old,
            new,
            pending: PendingStore { tmp, path },
            written: HashSet::new(),
            cur: Vec::new(),
            stats: DeltaStats::default(),
        })
    }

    /// Computes the block signatures of the chunk about to be emitted.
    pub fn prepare(&mut self, data: &[u8]) {
        self.cur.clear();
        let (key, cur) = (&self.key, &mut self.cur);
        split_blocks(data, |s, l| {
            cur.push((key.block(&data[s..s + l]), s as u32, l as u32))
        });
    }

    /// Records the prepared chunk, held in full under `id`, in the new store.
    pub fn record_full(&mut self, id: ChunkId) -> std::io::Result<()> {
        if !self.written.insert(id) {
            return Ok(());
        }
        self.new.write_all(&id.0)?;
        self.new.write_all(&(self.cur.len() as u32).to_le_bytes())?;
        for (sig, _, len) in &self.cur {
            self.new.write_all(&sig.to_le_bytes())?;
            self.new.write_all(&len.to_le_bytes())?;
        }
        Ok(())
    }

    /// Carries the old store's record of `base` into the new store.
    fn record_base(&mut self, base: ChunkId, sigs: &[u8]) -> std::io::Result<()> {
        if !self.written.insert(base) {
            return Ok(());
        }
        self.new.write_all(&base.0)?;
        self.new
            .write_all(&((sigs.len() / SIG_LEN) as u32).to_le_bytes())?;
        self.new.write_all(sigs)
    }

    /// Tries to express the prepared chunk (`data`, content id `target`) as a recipe against a
    /// full chunk of the previous backup that `index` still holds. Returns the base and the recipe.
    pub fn diff(
        &mut self,
        data: &[u8],
        target: ChunkId,
        index: &Index,
    ) -> std::io::Result<Option<(ChunkId, Vec<u8>)>> {
        let Some(old) = &self.old else {
            return Ok(None);
        };
        let mut votes: HashMap<u32, u32> = HashMap::new();
        for (sig, _, _) in &self.cur {
            if is_anchor(*sig) {
                if let Some(&r) = old.anchors.get(sig) {
                    *votes.entry(r).or_default() += 1;
                }
            }
        }
        let Some((&best, &n)) = votes
            .iter()
            .max_by_key(|(r, n)| (**n, std::cmp::Reverse(**r)))
        else {
            return Ok(None);
        };
        let base = old.records[best as usize].0;
        if n < 2 || base == target {
            return Ok(None);
        }
        // The base must be in the repository, whole, outside damaged packs.
        match index.get(&base) {
            Some(loc) if loc.encoding != encoding::DELTA => {}
            _ => return Ok(None),
        }
        let sigs = old.read(best)?;
        let mut at: SigMap<u64> =
            SigMap::with_capacity_and_hasher(sigs.len() / SIG_LEN, Default::default());
        let mut off = 0u64;
        for s in sigs.chunks_exact(SIG_LEN) {
            let h = u128::from_le_bytes(s[..16].try_into().expect("16 bytes"));
            at.entry(h).or_insert(off);
            off += u32::from_le_bytes(s[16..].try_into().expect("4 bytes")) as u64;
        }
        let mut b = RecipeBuilder::new(RecipeHeader {
            base,
            target,
            target_length: data.len() as u32,
        });
        let limit = data.len() / 2;
        for (sig, start, len) in &self.cur {
            match at.get(sig) {
                Some(&o) => b.copy(o, *len as u64),
                None => {
                    b.insert(&data[*start as usize..(*start + *len) as usize]);
                    if b.inserted() > limit {
                        return Ok(None);
                    }
                }
            }
        }
        let recipe = b.finish();
        self.record_base(base, &sigs)?;
        self.stats.chunks += 1;
        self.stats.content_bytes += data.len() as u64;
        self.stats.recipe_bytes += recipe.len() as u64;
        Ok(Some((base, recipe)))
    }

    /// Ends the session: the new store is complete on disk, to be committed with the backup.
    pub fn finish(mut self) -> std::io::Result<PendingStore> {
        self.new.flush()?;
        self.new.get_ref().sync_all()?;
        Ok(self.pending)
    }
}
