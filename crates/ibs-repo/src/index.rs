//! The chunk index: which pack holds each chunk, where, and under which data key. On storage it is a
//! set of sealed *segments* (`index/<blake3 of object>`); in memory it is a sorted array of fixed-size
//! entries with a bucket table (`crate::idset`), about 57 bytes per chunk (a hash map took 110–130).
//!
//! Segment layout (format v1):
//! ```text
//! "IBSIDX" u16 version=1 ‖ sealed( zstd( body ) )   metadata key, aad "ibs.index.v1"
//! body: u16 version=1, u32 pack_count, pack_count × {
//!         pack_id[32] pack_length:u64 u32 entry_count, entry_count × pack entry (61 bytes, see pack.rs) }
//! ```
//! Damaged packs (see `damaged.rs`): an index built [`Index::with_damaged`] prefers, for each
//! chunk, a location in a healthy pack over one in a damaged pack, whatever order segments load
//! in; among healthy (or among damaged) locations the first seen wins. Restore and check thus read
//! the healthy copy a self-healing backup wrote, and [`Index::forget_damaged`] lets a backup treat
//! a chunk whose only copies are damaged as absent, so it is stored again.
//!
//! Data keys: after a certificate change the same chunk can be stored twice, under a data key
//! wrapped only for the old certificate and under one wrapped for the new. An index built
//! [`Index::with_preference`] prefers, after health, a location whose key is in the preferred set
//! (the keys a writer may depend on, or the keys a reader can open), so a backup written after the
//! change never needs the old certificate's .pfx. [`Index::mixed_keys`] tells whether any chunk has
//! locations under different keys (only then is a preference worth computing).
//!
//! Decoding never allocates more than the decompressed body can hold: every count is checked against
//! the bytes that remain before anything is reserved.

use crate::crypto::SymKey;
use crate::error::{RepoError, Result};
use crate::ids::{ChunkId, KeyId, PackId};
use crate::idset::ChunkIdMap;
use crate::pack::{PackEntry, ENTRY_LEN};
use crate::slots::Slots;
use std::collections::{HashMap, HashSet};

pub const INDEX_MAGIC: &[u8; 6] = b"IBSIDX";
pub const INDEX_VERSION: u16 = 1;
/// Associated data of a sealed index body (public so fuzz targets can seal crafted bodies).
pub const INDEX_AAD: &[u8] = b"ibs.index.v1";

/// One pack and its entries, as listed by a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackRecord {
    pub id: PackId,
    pub length: u64,
    pub entries: Vec<PackEntry>,
}

pub fn encode_segment(packs: &[PackRecord], metadata_key: &SymKey) -> (String, Vec<u8>) {
    let mut body = Vec::new();
    body.extend_from_slice(&INDEX_VERSION.to_le_bytes());
    body.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for p in packs {
        body.extend_from_slice(&p.id.0);
        body.extend_from_slice(&p.length.to_le_bytes());
        body.extend_from_slice(&(p.entries.len() as u32).to_le_bytes());
        for e in &p.entries {
            e.encode(&mut body);
        }
    }
    let compressed =
        zstd::bulk::compress(&body, 3).expect("zstd compression of an in-memory buffer");
    let mut obj = Vec::with_capacity(8 + compressed.len() + 64);
    obj.extend_from_slice(INDEX_MAGIC);
    obj.extend_from_slice(&INDEX_VERSION.to_le_bytes());
    obj.extend_from_slice(&metadata_key.seal(INDEX_AAD, &compressed));
    let name = blake3::hash(&obj).to_hex().to_string();
    (name, obj)
}

pub fn decode_segment(name: &str, obj: &[u8], metadata_key: &SymKey) -> Result<Vec<PackRecord>> {
    let what = format!("index/{name}");
    if blake3::hash(obj).to_hex().as_str() != name {
        return Err(RepoError::corrupt(
            what,
            "content hash does not match the segment's name",
        ));
    }
    if obj.len() < 8 || &obj[..6] != INDEX_MAGIC {
        return Err(RepoError::corrupt(what, "missing index magic"));
    }
    let version = u16::from_le_bytes([obj[6], obj[7]]);
    if version != INDEX_VERSION {
        return Err(RepoError::UnsupportedVersion {
            object: what,
            found: version as u32,
            supported: INDEX_VERSION as u32,
        });
    }
    let compressed = metadata_key
        .open(INDEX_AAD, &obj[8..])
        .ok_or_else(|| RepoError::corrupt(&what, "authentication failed"))?;
    // A decompression bomb stops at the metadata cap (crate::inflate owns it).
    let body = crate::inflate::decompress_metadata(&compressed)
        .map_err(|e| RepoError::corrupt(&what, e.to_string()))?;
    parse_body(&body).map_err(|d| RepoError::corrupt(what, d))
}

fn parse_body(b: &[u8]) -> std::result::Result<Vec<PackRecord>, String> {
    let mut r = Reader { b, pos: 0 };
    if r.u16()? != INDEX_VERSION {
        return Err("unknown body version".into());
    }
    let packs = r.u32()? as usize;
    if packs > r.remaining() / 44 {
        return Err("pack count exceeds the body".into());
    }
    let mut out = Vec::with_capacity(packs);
    for _ in 0..packs {
        let id = PackId::from_slice(r.take(32)?).expect("32 bytes");
        let length = r.u64()?;
        let n = r.u32()? as usize;
        if n > r.remaining() / ENTRY_LEN {
            return Err("entry count exceeds the body".into());
        }
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let e = PackEntry::decode(r.take(ENTRY_LEN)?).map_err(|e| e.to_string())?;
            if e.offset as u64 + e.length as u64 > length {
                return Err(format!("entry of pack {id} lies past the pack's end"));
            }
            entries.push(e);
        }
        out.push(PackRecord {
            id,
            length,
            entries,
        });
    }
    if r.remaining() != 0 {
        return Err("trailing bytes".into());
    }
    Ok(out)
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        if self.remaining() < n {
            return Err("truncated".into());
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u16(&mut self) -> std::result::Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
}

/// Where one chunk is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkLocation {
    pub pack: PackId,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
    pub encoding: u8,
    pub key_id: KeyId,
}

#[derive(Clone, Copy)]
struct Slot {
    pack: u32,
    key: u32,
    offset: u32,
    length: u32,
    raw_length: u32,
    encoding: u8,
    /// Set by [`Index::mark`] (prune: referenced by a kept backup); fits in the slot's padding.
    marked: bool,
}

/// The in-memory index: about 57 bytes per chunk (32-byte id, 24-byte slot, bucket table).
#[derive(Default)]
pub struct Index {
    chunks: ChunkIdMap<Slot>,
    packs: Slots<PackId>,
    /// The recorded length of each pack, by pack slot.
    pack_len: Vec<u64>,
    keys: Slots<KeyId>,
    damaged: HashSet<PackId>,
    /// Data keys whose locations win over others of the same health; `None`: no preference.
    preferred: Option<HashSet<KeyId>>,
    mixed_keys: bool,
}

impl Index {
    /// An empty index that knows which packs are damaged (before any pack is added).
    pub fn with_damaged(damaged: HashSet<PackId>) -> Self {
        Index {
            damaged,
            ..Default::default()
        }
    }

    /// An empty index that knows the damaged packs and prefers locations under `preferred` keys.
    pub fn with_preference(damaged: HashSet<PackId>, preferred: HashSet<KeyId>) -> Self {
        Index {
            damaged,
            preferred: Some(preferred),
            ..Default::default()
        }
    }

    /// True if some chunk has locations under two different data keys.
    pub fn mixed_keys(&self) -> bool {
        self.mixed_keys
    }

    /// Drops every chunk whose location is not under one of `keep`: to a writer, such a chunk is
    /// absent (it is sealed again under the backup's own key). Returns how many were dropped.
    pub fn forget_keys_except(&mut self, keep: &HashSet<KeyId>) -> usize {
        let before = self.chunks.len();
        let keys = &self.keys;
        self.chunks.retain(|s| keep.contains(&keys.get(s.key)));
        before - self.chunks.len()
    }

    fn rank(&self, pack: u32, key: u32) -> (bool, bool) {
        (
            !self.damaged.contains(&self.packs.get(pack)),
            self.preferred
                .as_ref()
                .is_some_and(|p| p.contains(&self.keys.get(key))),
        )
    }

    pub fn is_damaged(&self, pack: &PackId) -> bool {
        self.damaged.contains(pack)
    }

    /// The damaged packs this index was built with.
    pub fn damaged_packs(&self) -> &HashSet<PackId> {
        &self.damaged
    }

    /// True if the chunk is indexed only in damaged packs.
    pub fn only_damaged(&self, id: &ChunkId) -> bool {
        self.chunks
            .get(id)
            .is_some_and(|s| self.damaged.contains(&self.packs.get(s.pack)))
    }

    /// Drops every chunk whose only indexed locations are in damaged packs: to a backup, such a
    /// chunk is absent and is sealed and stored again if a source still has it.
    pub fn forget_damaged(&mut self) -> usize {
        let before = self.chunks.len();
        let (packs, damaged) = (&self.packs, &self.damaged);
        self.chunks
            .retain(|s| !damaged.contains(&packs.get(s.pack)));
        before - self.chunks.len()
    }

    /// Marks chunk `id` (prune: referenced by a kept backup) and returns the pack it is located in;
    /// `None` if it is not indexed. Marks cost no memory (the slot's padding) and are never
    /// cleared.
    pub fn mark(&mut self, id: &ChunkId) -> Option<PackId> {
        let slot = self.chunks.get_mut(id)?;
        slot.marked = true;
        Some(self.packs.get(slot.pack))
    }

    /// Drops every chunk that is not marked, returning its memory; the packs and keys stay known.
    /// Returns how many were dropped.
    pub fn retain_marked(&mut self) -> usize {
        let before = self.chunks.len();
        self.chunks.retain_shrink(|s| s.marked);
        before - self.chunks.len()
    }

    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.len() == 0
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        self.chunks.get(id).is_some()
    }

    pub fn add_pack(&mut self, rec: &PackRecord) {
        let (pack, new) = self.packs.intern(rec.id);
        if new {
            self.pack_len.push(rec.length);
        }
        for e in &rec.entries {
            let key = self.keys.intern(e.key_id).0;
            let slot = Slot {
                pack,
                key,
                offset: e.offset,
                length: e.length,
                raw_length: e.raw_length,
                encoding: e.encoding,
                marked: false,
            };
            // The first location seen wins (duplicates after a crash, a repack or a heal are
            // harmless), except that a better-ranked one replaces it: healthy over damaged, then
            // a preferred key over another.
            let rank = self.rank(pack, key);
            match self.chunks.get(&e.id).copied() {
                None => self.chunks.insert_new(e.id, slot),
                Some(old) => {
                    if old.key != key {
                        self.mixed_keys = true;
                    }
                    if rank > self.rank(old.pack, old.key) {
                        *self.chunks.get_mut(&e.id).expect("just found") = slot;
                    }
                }
            }
        }
    }

    /// The length pack `id` was indexed with; `None` for a pack this index does not know.
    pub fn pack_length(&self, id: &PackId) -> Option<u64> {
        self.packs
            .slot_of(id)
            .map(|slot| self.pack_len[slot as usize])
    }

    pub fn get(&self, id: &ChunkId) -> Option<ChunkLocation> {
        self.chunks.get(id).map(|s| self.location(s))
    }

    fn location(&self, s: &Slot) -> ChunkLocation {
        ChunkLocation {
            pack: self.packs.get(s.pack),
            offset: s.offset,
            length: s.length,
            raw_length: s.raw_length,
            encoding: s.encoding,
            key_id: self.keys.get(s.key),
        }
    }

    /// Every chunk with its location, in no particular order: one linear pass, no lookups.
    pub fn locations(&self) -> impl Iterator<Item = (ChunkId, ChunkLocation)> + '_ {
        self.chunks.iter().map(|(id, s)| (*id, self.location(s)))
    }

    /// How many indexed chunks each pack holds.
    pub fn chunks_per_pack(&self) -> HashMap<PackId, usize> {
        let mut n = vec![0usize; self.packs.len()];
        self.chunks
            .iter()
            .for_each(|(_, s)| n[s.pack as usize] += 1);
        self.packs.values().iter().copied().zip(n).collect()
    }

    /// Every pack the index knows, with its recorded length.
    pub fn packs(&self) -> impl Iterator<Item = (PackId, u64)> + '_ {
        (self.packs.values().iter().copied()).zip(self.pack_len.iter().copied())
    }

    pub fn chunk_ids(&self) -> impl Iterator<Item = &ChunkId> + '_ {
        self.chunks.keys()
    }

    /// Every data key id that some indexed chunk is sealed under.
    pub fn key_ids(&self) -> &[KeyId] {
        self.keys.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_round_trip_and_hostile_counts() {
        let mk = SymKey::random();
        let rec = PackRecord {
            id: PackId([3; 32]),
            length: 1000,
            entries: vec![PackEntry {
                id: ChunkId([1; 32]),
                offset: 8,
                length: 50,
                raw_length: 70,
                encoding: 1,
                key_id: KeyId([2; 16]),
            }],
        };
        let (name, obj) = encode_segment(std::slice::from_ref(&rec), &mk);
        assert_eq!(decode_segment(&name, &obj, &mk).unwrap(), vec![rec.clone()]);
        assert!(decode_segment(&name, &obj, &SymKey::random()).is_err());
        // A body claiming four billion packs is refused before any allocation.
        let mut body = INDEX_VERSION.to_le_bytes().to_vec();
        body.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_body(&body).is_err());
        let mut idx = Index::default();
        idx.add_pack(&rec);
        let loc = idx.get(&ChunkId([1; 32])).unwrap();
        assert_eq!(
            (loc.pack, loc.offset, loc.key_id),
            (PackId([3; 32]), 8, KeyId([2; 16]))
        );
    }

    #[test]
    fn marking_keeps_only_the_marked_chunks_at_their_locations() {
        let entry = |n: u8| PackEntry {
            id: ChunkId([n; 32]),
            offset: 8 + n as u32,
            length: 50,
            raw_length: 70,
            encoding: 1,
            key_id: KeyId([2; 16]),
        };
        let rec = PackRecord {
            id: PackId([3; 32]),
            length: 1 << 20,
            entries: (0..=255).map(entry).collect(),
        };
        let mut idx = Index::default();
        idx.add_pack(&rec);
        for n in (0..=255u8).step_by(3) {
            assert_eq!(idx.mark(&ChunkId([n; 32])), Some(rec.id));
        }
        assert_eq!(idx.mark(&ChunkId([9; 32])), Some(rec.id), "twice is once");
        let mut other = [0u8; 32];
        other[31] = 1;
        assert_eq!(idx.mark(&ChunkId(other)), None);
        assert_eq!(idx.retain_marked(), 256 - 86);
        assert_eq!(idx.len(), 86);
        for n in 0..=255u8 {
            let loc = idx.get(&ChunkId([n; 32]));
            assert_eq!(loc.is_some(), n % 3 == 0, "{n}");
            if let Some(l) = loc {
                assert_eq!((l.pack, l.offset), (rec.id, 8 + n as u32));
            }
        }
        assert_eq!(idx.packs().count(), 1, "the pack stays known");
    }

    #[test]
    fn a_healthy_location_replaces_a_damaged_one_in_any_order() {
        let entry = |offset| PackEntry {
            id: ChunkId([1; 32]),
            offset,
            length: 50,
            raw_length: 70,
            encoding: 1,
            key_id: KeyId([2; 16]),
        };
        let bad = PackRecord {
            id: PackId([3; 32]),
            length: 1000,
            entries: vec![entry(8)],
        };
        let good = PackRecord {
            id: PackId([4; 32]),
            length: 1000,
            entries: vec![entry(16)],
        };
        for order in [[&bad, &good], [&good, &bad]] {
            let mut idx = Index::with_damaged([bad.id].into());
            order.iter().for_each(|r| idx.add_pack(r));
            assert_eq!(idx.get(&ChunkId([1; 32])).unwrap().pack, good.id);
            assert!(!idx.only_damaged(&ChunkId([1; 32])));
            assert_eq!(idx.forget_damaged(), 0);
        }
        let mut idx = Index::with_damaged([bad.id].into());
        idx.add_pack(&bad);
        assert!(idx.only_damaged(&ChunkId([1; 32])));
        assert_eq!(idx.forget_damaged(), 1);
        assert!(!idx.contains(&ChunkId([1; 32])));
    }

    #[test]
    fn a_preferred_key_wins_over_another_in_any_order_but_health_comes_first() {
        let entry = |key: u8| PackEntry {
            id: ChunkId([1; 32]),
            offset: 8,
            length: 50,
            raw_length: 70,
            encoding: 1,
            key_id: KeyId([key; 16]),
        };
        let pack = |p: u8, key: u8| PackRecord {
            id: PackId([p; 32]),
            length: 1000,
            entries: vec![entry(key)],
        };
        let (old, new) = (pack(3, 1), pack(4, 2));
        for order in [[&old, &new], [&new, &old]] {
            let mut idx = Index::with_preference(HashSet::new(), [KeyId([2; 16])].into());
            order.iter().for_each(|r| idx.add_pack(r));
            assert!(idx.mixed_keys());
            assert_eq!(idx.get(&ChunkId([1; 32])).unwrap().key_id, KeyId([2; 16]));
            assert_eq!(idx.forget_keys_except(&[KeyId([2; 16])].into()), 0);
            assert_eq!(idx.forget_keys_except(&[KeyId([9; 16])].into()), 1);
        }
        // A damaged copy under the preferred key loses to a healthy one under another.
        let mut idx = Index::with_preference([new.id].into(), [KeyId([2; 16])].into());
        idx.add_pack(&new);
        idx.add_pack(&old);
        assert_eq!(idx.get(&ChunkId([1; 32])).unwrap().pack, old.id);
        let mut plain = Index::default();
        plain.add_pack(&old);
        plain.add_pack(&pack(5, 1));
        assert!(!plain.mixed_keys(), "copies under one key are not mixed");
    }
}
