//! The writer's side of delta chunks (`ibs_repo::delta`, format spec §7.1): for each stream source
//! (a database export, stdin) and for the tree stream of each folder source, a local *signature
//! store* in the writer state, and the diff that turns a changed chunk into a recipe against a
//! chunk the repository already holds in full.
//!
//! Tree streams (ADR 0049): a day's scattered edits change a line here and there in every ~1 MiB
//! chunk of a folder source's tree stream, so whole-chunk deduplication would store the whole tree
//! again; as recipes only the changed lines are stored. A tree recipe is kept only while it inserts
//! at most 1/[`TREE_LIMIT`] of its chunk (a stream recipe: 1/[`STREAM_LIMIT`]); past that the chunk
//! is stored whole and becomes the base of the next days' recipes, so the recipes of a slowly
//! drifting tree stay small without chains.
//!
//! The store (`STATE/delta/<source>.sig` for a stream, `STATE/delta/tree/<source>.sig` for a
//! folder source's tree) lists, for every chunk the source's last backup held in
//! full (read this time, or the base of one of its recipes), the length of each block
//! (`ibs_repo::delta::split_blocks`) and one keyed signature per *window* of [`WINDOW`] consecutive
//! blocks. The writer cannot read old chunks (they are sealed under older data keys), so these
//! signatures are all it knows of them.
//!
//! Why windows: a signature of one block lets whoever holds the writer state (the signature key
//! derives from its dedup key) test guesses of that one line offline. A window signature confirms
//! a guess only of [`WINDOW`] adjacent blocks (at least `WINDOW × BLOCK_MIN` bytes, several lines)
//! at once. The diff loses nothing for isolated changes: a block is copied when any window holding
//! it matches, so only the changed block itself is inserted (ADR 0007). The store is written beside the
//! old one while a backup runs and replaces it only after the manifest is committed; a store that is
//! missing or unreadable only costs deduplication, never correctness, because every recipe is
//! verified end to end by the target's keyed hash when it is applied.
//!
//! The signature key is derived per source from the dedup key, so equal lines of two sources do
//! not show as equal signatures.
//!
//! File format (local, not part of the repository; little-endian):
//! ```text
//! "IBSSIG" u16 version=3
//! records: chunk_id[32] u32 blocks u32 windows, blocks × u32 length, windows × u128 signature,
//!          u128 mac   (windows = blocks - WINDOW + 1, or 0 for a chunk of fewer blocks: it is
//!                      never a base; mac = a keyed hash of the record's bytes before it)
//! ```
//! The mac makes a damaged record (a flipped length would turn every later copy of a recipe into
//! the wrong bytes, found only at restore) unusable instead of misleading: a record whose mac does
//! not match is never a base and never carried. It does not stop whoever holds the writer state's
//! keys, who can write bad backups anyway (threat model). Version 1 and 2 stores are not read: the
//! first backup after an upgrade stores changed chunks whole and writes a version 3 store.
//!
//! Choosing a base: one window in 32 (by signature) is an *anchor*; a new chunk's anchors vote for
//! the stored chunks that hold them, and the chunk with most votes (at least two) is the base. A
//! recipe is kept only if it inserts at most its limit (half of the chunk for streams, an eighth for
//! trees); otherwise the chunk is stored in full and becomes a base itself. Bases are always full chunks, so a restore never follows chains.

use ibs_repo::dedup::DedupSet;
use ibs_repo::delta::{split_blocks, RecipeBuilder, RecipeHeader, SigKey};
use ibs_repo::ids::ChunkId;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 6] = b"IBSSIG";
const VERSION: u16 = 3;
const SIG_LEN: usize = 16;
/// The most blocks a chunk can have (a block is at least `BLOCK_MIN` bytes, but the last).
const MAX_BLOCKS: usize = ibs_repo::chunk::MAX_CHUNK as usize / ibs_repo::delta::BLOCK_MIN + 1;
/// Blocks per signature window (see the module doc).
pub const WINDOW: usize = 4;
/// One block in this many is an anchor.
const ANCHOR_EVERY: u64 = 32;
/// A stream source's recipe is kept while it inserts at most 1/`STREAM_LIMIT` of its chunk.
pub const STREAM_LIMIT: usize = 2;
/// A tree stream's recipe is kept while it inserts at most 1/`TREE_LIMIT` of its chunk.
pub const TREE_LIMIT: usize = 8;

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
    /// Checks each record's mac (the session's record key).
    mac: SigKey,
    /// Per record: chunk id, file offset of its lengths, block count, window count.
    records: Vec<(ChunkId, u64, u32, u32)>,
    anchors: SigMap<u32>,
    /// Record index by chunk id, to carry a known chunk's record without hashing it again.
    by_id: HashMap<ChunkId, u32>,
}

/// One stored chunk's record: its block lengths and window signatures.
struct Record {
    lengths: Vec<u32>,
    windows: Vec<u128>,
}

impl Record {
    fn parse(raw: &[u8], blocks: usize) -> Self {
        let (l, w) = raw.split_at(blocks * 4);
        Record {
            lengths: l
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect(),
            windows: w
                .chunks_exact(SIG_LEN)
                .map(|b| u128::from_le_bytes(b.try_into().expect("16 bytes")))
                .collect(),
        }
    }
}

fn windows_of(blocks: usize) -> usize {
    if blocks >= WINDOW {
        blocks - WINDOW + 1
    } else {
        0
    }
}

impl OldStore {
    fn open(path: &Path, mac: SigKey) -> std::io::Result<Option<Self>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut r = BufReader::with_capacity(1 << 20, file.try_clone()?);
        let mut head = [0u8; 8];
        r.read_exact(&mut head)?;
        if &head[..6] != MAGIC || u16::from_le_bytes([head[6], head[7]]) != VERSION {
            return Err(std::io::Error::other("not a version 3 signature store"));
        }
        let mut s = OldStore {
            file,
            mac,
            records: Vec::new(),
            anchors: SigMap::default(),
            by_id: HashMap::new(),
        };
        let mut pos = 8u64;
        let mut buf = Vec::new();
        let mut bad = 0u64;
        loop {
            buf.resize(40, 0);
            match r.read_exact(&mut buf) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            }
            let id = ChunkId::from_slice(&buf[..32]).expect("32 bytes");
            let blocks = u32::from_le_bytes(buf[32..36].try_into().expect("4 bytes"));
            let windows = u32::from_le_bytes(buf[36..40].try_into().expect("4 bytes"));
            if windows as usize != windows_of(blocks as usize) || blocks as usize > MAX_BLOCKS {
                return Err(std::io::Error::other(
                    "a record's block or window count is wrong",
                ));
            }
            let body = blocks as usize * 4 + windows as usize * SIG_LEN;
            buf.resize(40 + body + SIG_LEN, 0);
            r.read_exact(&mut buf[40..])?;
            let (record, tag) = buf.split_at(40 + body);
            let here = pos + 40;
            pos += (40 + body + SIG_LEN) as u64;
            if s.mac.block(record).to_le_bytes() != tag {
                bad += 1;
                continue;
            }
            let idx = s.records.len() as u32;
            for w in record[40 + blocks as usize * 4..].chunks_exact(SIG_LEN) {
                let h = u128::from_le_bytes(w.try_into().expect("16 bytes"));
                if is_anchor(h) {
                    s.anchors.entry(h).or_insert(idx);
                }
            }
            s.by_id.entry(id).or_insert(idx);
            s.records.push((id, here, blocks, windows));
        }
        if bad > 0 {
            tracing::warn!(
                "{}: {bad} damaged records skipped (their chunks are not used as delta bases)",
                path.display()
            );
        }
        Ok(Some(s))
    }

    /// The raw lengths and signatures of record `idx`, as stored, checked against its mac again
    /// (the file may have changed since it was opened).
    fn read(&self, idx: u32) -> std::io::Result<Vec<u8>> {
        let (id, off, blocks, windows) = self.records[idx as usize];
        let body = blocks as usize * 4 + windows as usize * SIG_LEN;
        let mut buf = vec![0u8; 40 + body + SIG_LEN];
        self.file.read_exact_at(&mut buf, off - 40)?;
        let mut head = [0u8; 40];
        head[..32].copy_from_slice(&id.0);
        head[32..36].copy_from_slice(&blocks.to_le_bytes());
        head[36..40].copy_from_slice(&windows.to_le_bytes());
        let (record, tag) = buf.split_at(40 + body);
        if record[..40] != head || self.mac.block(record).to_le_bytes() != tag {
            return Err(std::io::Error::other(
                "a signature record changed since the store was opened",
            ));
        }
        buf.truncate(40 + body);
        buf.drain(..40);
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
    /// Keys the records' macs (see the module doc).
    mac: SigKey,
    old: Option<OldStore>,
    new: BufWriter<File>,
    pending: PendingStore,
    written: HashSet<ChunkId>,
    /// Blocks of the chunk being emitted: (block hash, start, length). Block hashes are never
    /// stored; only window signatures are.
    cur: Vec<(u128, u32, u32)>,
    /// Window signatures of the chunk being emitted (window `i` covers blocks `i..i + WINDOW`).
    win: Vec<u128>,
    /// A recipe is kept while it inserts at most 1/`limit` of its chunk.
    limit: usize,
    pub stats: DeltaStats,
}

impl DeltaSession {
    /// Opens the store of stream source `source` under `dir` (created if missing). An unreadable
    /// old store is logged and ignored.
    pub fn open(
        dir: &Path,
        source: &str,
        dedup_key: &ibs_repo::crypto::SymKey,
    ) -> std::io::Result<Self> {
        Self::open_at(
            dir,
            source,
            dedup_key,
            b"ibs delta source key v2\0",
            STREAM_LIMIT,
        )
    }

    /// Opens the store of folder source `source`'s tree stream, under `dir/tree` (its own
    /// signature key, so a tree's signatures never match a stream's).
    pub fn open_tree(
        dir: &Path,
        source: &str,
        dedup_key: &ibs_repo::crypto::SymKey,
    ) -> std::io::Result<Self> {
        let dir = dir.join("tree");
        Self::open_at(
            &dir,
            source,
            dedup_key,
            b"ibs delta tree key v1\0",
            TREE_LIMIT,
        )
    }

    fn open_at(
        dir: &Path,
        source: &str,
        dedup_key: &ibs_repo::crypto::SymKey,
        label: &[u8],
        limit: usize,
    ) -> std::io::Result<Self> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let path = dir.join(format!("{source}.sig"));
        let tmp = dir.join(format!("{source}.sig.new"));
        // A key of this source's own (derived from the dedup key, the label and the source name),
        // and from it the key of the records' macs.
        let mut label = label.to_vec();
        label.extend_from_slice(source.as_bytes());
        let source_key =
            ibs_repo::crypto::SymKey::from_bytes(&dedup_key.chunk_id(&label).0).expect("32 bytes");
        let mac_key = ibs_repo::crypto::SymKey::from_bytes(
            &source_key.chunk_id(b"ibs delta record mac v1").0,
        )
        .expect("32 bytes");
        let old = match OldStore::open(&path, SigKey::derive(&mac_key)) {
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
            key: SigKey::derive(&source_key),
            mac: SigKey::derive(&mac_key),
            old,
            new,
            pending: PendingStore { tmp, path },
            written: HashSet::new(),
            cur: Vec::new(),
            win: Vec::new(),
            limit,
            stats: DeltaStats::default(),
        })
    }

    /// Records chunk `id`, which the repository holds in full, by carrying its record from the
    /// previous store (the same id under the same key has the same signatures), without hashing
    /// its blocks again. False when the previous store has no record of it: the caller prepares
    /// the chunk and records it with [`Self::record_full`].
    pub fn carry(&mut self, id: ChunkId) -> std::io::Result<bool> {
        if self.written.contains(&id) {
            return Ok(true);
        }
        let Some(old) = &self.old else {
            return Ok(false);
        };
        let Some(&idx) = old.by_id.get(&id) else {
            return Ok(false);
        };
        let (_, _, blocks, windows) = old.records[idx as usize];
        let raw = old.read(idx)?;
        self.written.insert(id);
        self.write_record(id, blocks, windows, &raw)?;
        Ok(true)
    }

    /// Writes one record and its mac to the new store.
    fn write_record(
        &mut self,
        id: ChunkId,
        blocks: u32,
        windows: u32,
        body: &[u8],
    ) -> std::io::Result<()> {
        let mut rec = Vec::with_capacity(40 + body.len());
        rec.extend_from_slice(&id.0);
        rec.extend_from_slice(&blocks.to_le_bytes());
        rec.extend_from_slice(&windows.to_le_bytes());
        rec.extend_from_slice(body);
        self.new.write_all(&rec)?;
        self.new.write_all(&self.mac.block(&rec).to_le_bytes())
    }

    /// Computes the blocks and window signatures of the chunk about to be emitted.
    pub fn prepare(&mut self, data: &[u8]) {
        self.cur.clear();
        self.win.clear();
        let (key, cur) = (&self.key, &mut self.cur);
        split_blocks(data, |s, l| {
            cur.push((key.block(&data[s..s + l]), s as u32, l as u32))
        });
        let mut buf = [0u8; WINDOW * 16];
        for w in self.cur.windows(WINDOW) {
            for (i, (h, _, _)) in w.iter().enumerate() {
                buf[i * 16..(i + 1) * 16].copy_from_slice(&h.to_le_bytes());
            }
            self.win.push(self.key.block(&buf));
        }
    }

    /// Records the prepared chunk, held in full under `id`, in the new store.
    pub fn record_full(&mut self, id: ChunkId) -> std::io::Result<()> {
        if !self.written.insert(id) {
            return Ok(());
        }
        let mut body = Vec::with_capacity(self.cur.len() * 4 + self.win.len() * SIG_LEN);
        for (_, _, len) in &self.cur {
            body.extend_from_slice(&len.to_le_bytes());
        }
        for sig in &self.win {
            body.extend_from_slice(&sig.to_le_bytes());
        }
        let (blocks, windows) = (self.cur.len() as u32, self.win.len() as u32);
        self.write_record(id, blocks, windows, &body)
    }

    /// Carries the old store's record of `base` (raw, as read) into the new store.
    fn record_base(&mut self, base: ChunkId, rec: &Record, raw: &[u8]) -> std::io::Result<()> {
        if !self.written.insert(base) {
            return Ok(());
        }
        let (blocks, windows) = (rec.lengths.len() as u32, rec.windows.len() as u32);
        self.write_record(base, blocks, windows, raw)
    }

    /// Tries to express the prepared chunk (`data`, content id `target`) as a recipe against a
    /// full chunk of the previous backup that `index` still holds. Returns the base and the recipe.
    pub fn diff(
        &mut self,
        data: &[u8],
        target: ChunkId,
        index: &DedupSet,
    ) -> std::io::Result<Option<(ChunkId, Vec<u8>)>> {
        let Some(old) = &self.old else {
            return Ok(None);
        };
        let mut votes: HashMap<u32, u32> = HashMap::new();
        for sig in &self.win {
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
        // The base must be in the (writer's) index, whole, outside damaged packs.
        if !index.is_whole(&base) {
            return Ok(None);
        }
        let raw = old.read(best)?;
        let rec = Record::parse(&raw, old.records[best as usize].2 as usize);
        let mut offsets = Vec::with_capacity(rec.lengths.len());
        let mut off = 0u64;
        for l in &rec.lengths {
            offsets.push(off);
            off += u64::from(*l);
        }
        let mut at: SigMap<u32> =
            SigMap::with_capacity_and_hasher(rec.windows.len(), Default::default());
        for (i, w) in rec.windows.iter().enumerate() {
            at.entry(*w).or_insert(i as u32);
        }
        // Each block of the new chunk that lies in a matching window maps to a base block of
        // the same length (equal windows: equal blocks, up to a 2^-128 PRF collision).
        let mut covered: Vec<Option<usize>> = vec![None; self.cur.len()];
        for (i, w) in self.win.iter().enumerate() {
            if let Some(&b) = at.get(w) {
                for t in 0..WINDOW {
                    let (bb, nb) = (b as usize + t, i + t);
                    if rec.lengths.get(bb) == Some(&self.cur[nb].2) {
                        covered[nb] = Some(bb);
                    }
                }
            }
        }
        let mut b = RecipeBuilder::new(RecipeHeader {
            base,
            target,
            target_length: data.len() as u32,
        });
        let limit = data.len() / self.limit;
        for ((_, start, len), cov) in self.cur.iter().zip(&covered) {
            match cov {
                Some(bb) => b.copy(offsets[*bb], u64::from(*len)),
                None => {
                    b.insert(&data[*start as usize..(*start + *len) as usize]);
                    if b.inserted() > limit {
                        return Ok(None);
                    }
                }
            }
        }
        let recipe = b.finish();
        self.record_base(base, &rec, &raw)?;
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

#[cfg(test)]
mod tests;
