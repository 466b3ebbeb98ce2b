//! What a writer needs of the chunk index, in about 23 bytes per chunk instead of the index's 57:
//! whether a chunk is stored (so a backup does not store it again) and whether it is stored whole
//! (so a tree delta may use it as its base). Where it is stored is never asked by a backup, so no
//! location is held: per chunk, the leading 128 bits of its id and a 32-bit word (the slot of its
//! data key and a delta flag).
//!
//! Why 128 bits are enough: chunk ids are keyed BLAKE3 hashes, so two ids of one repository share
//! their leading 128 bits by accident with probability about n² / 2^129 (2^-69 at a billion chunks),
//! and without the repository's id key nobody can choose chunks that do. Should it happen, the
//! backup takes the new chunk for stored and references it by its full id, which the index does not
//! hold: `check` reports the chunk missing and names the backup (a fault that is found, not a wrong
//! restore). Kopia's content ids are 128-bit hashes for the same reason.
//!
//! Which chunks count as stored follows `Index`'s ranking for writers (ADR 0059): a location in a
//! damaged pack or in a pack a prune plan marks never counts (the chunk is stored again, healing
//! it); among the rest, a location under a preferred data key wins over one under another key, else
//! the first seen; and [`DedupSet::forget_keys_except`] then drops the chunks whose chosen location
//! is under a key the writer may not depend on. A chunk counts as whole unless some counted location
//! holds it as a delta recipe (conservative: such a chunk is only refused as a base).

use crate::ids::{ChunkId, KeyId, PackId};
use crate::idset::{IdMap, SortKey};
use crate::index::PackRecord;
use crate::pack::encoding;
use crate::slots::Slots;
use std::collections::HashSet;

/// The leading 128 bits of a chunk id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct IdPrefix([u8; 16]);

impl IdPrefix {
    pub fn of(id: &ChunkId) -> Self {
        IdPrefix(id.0[..16].try_into().expect("16 bytes"))
    }
}

impl SortKey for IdPrefix {
    fn lead(&self) -> u64 {
        u64::from_be_bytes(self.0[..8].try_into().expect("8 bytes"))
    }
}

/// Set in an entry's word when some counted location holds the chunk as a delta recipe.
const DELTA: u32 = 1 << 31;

/// The chunks a writer deduplicates against (see the module docs).
pub struct DedupSet {
    chunks: IdMap<IdPrefix, u32>,
    keys: Slots<KeyId>,
    /// Packs whose locations never count: damaged ones and those a prune plan marks.
    skip: HashSet<PackId>,
    preferred: Option<HashSet<KeyId>>,
    mixed_keys: bool,
}

impl DedupSet {
    /// An empty set that ignores every location in `skip` and, where a chunk has locations under
    /// several keys, keeps one under a key in `preferred` (if given).
    pub fn new(skip: HashSet<PackId>, preferred: Option<HashSet<KeyId>>) -> Self {
        DedupSet {
            chunks: IdMap::default(),
            keys: Slots::default(),
            skip,
            preferred,
            mixed_keys: false,
        }
    }

    pub fn add_pack(&mut self, rec: &PackRecord) {
        if self.skip.contains(&rec.id) {
            return;
        }
        for e in &rec.entries {
            let key = self.keys.intern(e.key_id).0;
            assert!(key < DELTA, "fewer than 2^31 data keys");
            let delta = if e.encoding == encoding::DELTA {
                DELTA
            } else {
                0
            };
            let p = IdPrefix::of(&e.id);
            match self.chunks.get(&p).copied() {
                None => self.chunks.insert_new(p, key | delta),
                Some(old) => {
                    let old_key = old & !DELTA;
                    if old_key != key {
                        self.mixed_keys = true;
                    }
                    let prefer = |k: u32| {
                        self.preferred
                            .as_ref()
                            .is_some_and(|p| p.contains(&self.keys.get(k)))
                    };
                    let key = if prefer(key) && !prefer(old_key) {
                        key
                    } else {
                        old_key
                    };
                    *self.chunks.get_mut(&p).expect("just found") = key | (old & DELTA) | delta;
                }
            }
        }
    }

    /// True if some chunk has counted locations under two different data keys.
    pub fn mixed_keys(&self) -> bool {
        self.mixed_keys
    }

    /// Every data key that some counted location is sealed under.
    pub fn key_ids(&self) -> &[KeyId] {
        self.keys.values()
    }

    /// Drops every chunk whose chosen location is not under one of `keep`: to the writer such a
    /// chunk is absent. Returns how many were dropped.
    pub fn forget_keys_except(&mut self, keep: &HashSet<KeyId>) -> usize {
        let before = self.chunks.len();
        let keys = &self.keys;
        self.chunks.retain(|w| keep.contains(&keys.get(w & !DELTA)));
        before - self.chunks.len()
    }

    /// True if the chunk is stored (as far as the writer may rely on).
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.chunks.get(&IdPrefix::of(id)).is_some()
    }

    /// True if the chunk is stored and no counted location holds it as a delta recipe.
    pub fn is_whole(&self, id: &ChunkId) -> bool {
        self.chunks
            .get(&IdPrefix::of(id))
            .is_some_and(|w| w & DELTA == 0)
    }

    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.len() == 0
    }

    /// Heap bytes held per chunk (for memory accounting in tests and benches).
    pub fn heap_bytes(&self) -> usize {
        self.chunks.heap_bytes() + self.keys.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Index;
    use crate::pack::PackEntry;

    fn entry(id: u8, key: u8, enc: u8) -> PackEntry {
        PackEntry {
            id: ChunkId(*blake3::hash(&[id]).as_bytes()),
            offset: 8,
            length: 50,
            raw_length: 70,
            encoding: enc,
            key_id: KeyId([key; 16]),
        }
    }

    fn pack(p: u8, entries: Vec<PackEntry>) -> PackRecord {
        PackRecord {
            id: PackId([p; 32]),
            length: 1 << 20,
            entries,
        }
    }

    /// The writer's view through the full index, as a backup built it before this set existed.
    fn through_index(
        packs: &[&PackRecord],
        skip: &HashSet<PackId>,
        keep: Option<&HashSet<KeyId>>,
    ) -> Index {
        let mut index = match keep {
            Some(k) => Index::with_preference(skip.clone(), k.clone()),
            None => Index::with_damaged(skip.clone()),
        };
        packs.iter().for_each(|r| index.add_pack(r));
        index.forget_damaged();
        if let Some(k) = keep {
            index.forget_keys_except(k);
        }
        index
    }

    #[test]
    fn agrees_with_the_index_on_damage_keys_and_order() {
        let plain = encoding::ZSTD;
        let a = pack(
            1,
            vec![entry(1, 1, plain), entry(2, 1, plain), entry(3, 2, plain)],
        );
        let b = pack(
            2,
            vec![entry(1, 2, plain), entry(3, 1, plain), entry(4, 2, plain)],
        );
        let damaged = pack(3, vec![entry(5, 2, plain), entry(2, 2, plain)]);
        let keep: HashSet<KeyId> = [KeyId([2; 16])].into();
        let skip: HashSet<PackId> = [damaged.id].into();
        for order in [[&a, &b, &damaged], [&damaged, &b, &a], [&b, &damaged, &a]] {
            for keep in [None, Some(&keep)] {
                let index = through_index(&order, &skip, keep);
                let mut set = DedupSet::new(skip.clone(), keep.cloned());
                order.iter().for_each(|r| set.add_pack(r));
                assert!(set.mixed_keys());
                if let Some(k) = keep {
                    set.forget_keys_except(k);
                }
                for n in 0..8u8 {
                    let id = entry(n, 0, 0).id;
                    assert_eq!(set.contains(&id), index.contains(&id), "{n} {keep:?}");
                }
                assert_eq!(set.len(), index.len());
            }
        }
    }

    #[test]
    fn a_delta_copy_is_never_a_base_and_skipped_packs_never_count() {
        let a = pack(
            1,
            vec![entry(1, 1, encoding::DELTA), entry(2, 1, encoding::ZSTD)],
        );
        let b = pack(
            2,
            vec![entry(1, 1, encoding::ZSTD), entry(3, 1, encoding::ZSTD)],
        );
        let mut set = DedupSet::new([b.id].into(), None);
        set.add_pack(&b);
        set.add_pack(&a);
        assert!(set.contains(&entry(1, 0, 0).id) && !set.is_whole(&entry(1, 0, 0).id));
        assert!(set.is_whole(&entry(2, 0, 0).id));
        assert!(!set.contains(&entry(3, 0, 0).id), "only in a skipped pack");
        let mut set = DedupSet::new(HashSet::new(), None);
        set.add_pack(&b);
        set.add_pack(&a);
        assert!(
            !set.is_whole(&entry(1, 0, 0).id),
            "a delta copy seen later still counts"
        );
        assert!(!set.mixed_keys());
    }

    #[test]
    fn holds_300_000_chunks_across_merges_in_about_21_bytes_each() {
        let mut set = DedupSet::new(HashSet::new(), None);
        let entries: Vec<PackEntry> = (0..300_000u32)
            .map(|n| PackEntry {
                id: ChunkId(*blake3::hash(&n.to_le_bytes()).as_bytes()),
                ..entry(0, 1, encoding::ZSTD)
            })
            .collect();
        for (i, part) in entries.chunks(1000).enumerate() {
            set.add_pack(&pack(i as u8, part.to_vec()));
        }
        assert_eq!(set.len(), 300_000);
        assert!(entries.iter().all(|e| set.is_whole(&e.id)));
        // 20-byte entries, a bucket table of ~1 byte each and a recent-insert table of at most
        // 65,536 buckets; the full index took ~57 bytes per chunk, a set of whole ids ~33.
        let per_chunk = set.heap_bytes() as f64 / set.len() as f64;
        assert!(per_chunk < 26.0, "{per_chunk:.1} bytes per chunk");
        let mut other = entries[7].id;
        other.0[31] ^= 1;
        assert!(
            set.contains(&other),
            "ids are told apart by their leading 128 bits"
        );
        other.0[15] ^= 1;
        assert!(!set.contains(&other));
    }
}
