//! Compact in-memory sets and maps keyed by [`ChunkId`] (or by another uniformly distributed key,
//! [`SortKey`]): one sorted array of fixed-size entries,
//! found through a bucket table on the ids' leading bits, plus a small hash table of recent
//! insertions that is merged into the array whenever it is full at about an eighth of it.
//!
//! Why: a `HashMap<ChunkId, _>` of a million entries costs about twice its payload (buckets are
//! powers of two, at most 7/8 full, and a growing table briefly holds the old one too), so the
//! index and the backup's reference set of a million-file tree cost hundreds of MiB. Here an entry
//! costs its own size plus about a byte of bucket table; the recent table stays below an eighth.
//!
//! Invariants: `sorted` is strictly increasing by id; no id is in both `sorted` and `recent`;
//! `starts[b]..starts[b + 1]` is the range of `sorted` whose ids' leading `bits` bits equal `b`.
//! Chunk ids are keyed BLAKE3 hashes, so their leading bits are uniform and a bucket holds about
//! four entries; a skewed set only makes the binary search inside a bucket longer, never wrong.

use crate::ids::ChunkId;
use std::collections::{HashMap, HashSet};
use std::hash::Hash;

/// A key of the sorted arrays: ordered, hashable, and uniform in its leading 64 bits (keyed
/// hashes or prefixes of them), which address the bucket table.
pub trait SortKey: Copy + Ord + Hash {
    /// The key's leading 64 bits, big-endian.
    fn lead(&self) -> u64;
}

impl SortKey for ChunkId {
    fn lead(&self) -> u64 {
        u64::from_be_bytes(self.0[..8].try_into().expect("8 bytes"))
    }
}

/// The recent table is merged once it holds about this many entries or an eighth of the sorted
/// array ([`merge_at`]).
const MERGE_MIN: usize = 1 << 16;

/// How many entries the recent table holds when it is merged into a sorted array of `sorted`
/// entries: the largest full hash table (7/8 of a power of two buckets, the most `std`'s tables
/// hold before they double) not above `MERGE_MIN` or an eighth of the array. A threshold just
/// past a full table would double it to hold a few more entries: at 65,536 entries the table had
/// 131,072 buckets, half of them never used (7.5 MB for the index's, 4.3 MB for the references').
fn merge_at(sorted: usize) -> usize {
    let want = MERGE_MIN.max(sorted / 8);
    let buckets = (want * 8 / 7 + 1).next_power_of_two() / 2;
    buckets / 8 * 7
}

/// The bucket table over a sorted slice of ids.
#[derive(Default, Clone)]
pub(crate) struct Buckets {
    bits: u32,
    starts: Vec<u32>,
}

impl Buckets {
    /// Builds the table for `n` sorted ids, `key(i)` being the i-th.
    pub(crate) fn build<'a, K: SortKey + 'a>(n: usize, key: impl Fn(usize) -> &'a K) -> Self {
        // About four entries per bucket: 2^bits ≈ n / 4.
        let bits = (usize::BITS - (n / 4).leading_zeros())
            .saturating_sub(1)
            .min(24);
        let buckets = 1usize << bits;
        let mut starts = Vec::with_capacity(buckets + 1);
        let mut i = 0usize;
        for b in 0..buckets as u64 {
            while i < n && Self::bucket_of(bits, key(i)) < b {
                i += 1;
            }
            starts.push(i as u32);
        }
        starts.push(n as u32);
        Buckets { bits, starts }
    }

    fn bucket_of<K: SortKey>(bits: u32, id: &K) -> u64 {
        id.lead().checked_shr(64 - bits).unwrap_or(0)
    }

    /// The range of the sorted array where `id` can be.
    pub(crate) fn range<K: SortKey>(&self, id: &K) -> std::ops::Range<usize> {
        if self.starts.is_empty() {
            return 0..0;
        }
        let b = Self::bucket_of(self.bits, id) as usize;
        self.starts[b] as usize..self.starts[b + 1] as usize
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.starts.capacity() * 4
    }
}

/// Merges `add` (sorted, no id in common with `base`) into the sorted `base`, in place from the
/// back: `base` grows by `add.len()` and no second copy of it is made.
pub(crate) fn merge_into<T: Copy, K: Ord>(
    base: &mut Vec<T>,
    mut add: Vec<T>,
    id: impl Fn(&T) -> &K,
) {
    if add.is_empty() {
        return;
    }
    let (n, k) = (base.len(), add.len());
    base.reserve_exact(k);
    // Fill the tail with copies so the vector is initialised; they are all overwritten below.
    let filler = add[0];
    base.resize(n + k, filler);
    let (mut i, mut out) = (n, n + k);
    while let Some(last) = add.last() {
        out -= 1;
        if i > 0 && id(&base[i - 1]) > id(last) {
            base[out] = base[i - 1];
            i -= 1;
        } else {
            base[out] = *last;
            add.pop();
        }
    }
}

/// A set of chunk ids in about 33 bytes per id.
#[derive(Default)]
pub struct ChunkIdSet {
    sorted: Vec<ChunkId>,
    buckets: Buckets,
    recent: HashSet<ChunkId>,
}

impl ChunkIdSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// A set of the ids of a strictly increasing list (checked; an unsorted list is sorted).
    pub fn from_sorted(mut ids: Vec<ChunkId>) -> Self {
        if !ids.windows(2).all(|w| w[0] < w[1]) {
            ids.sort_unstable();
            ids.dedup();
        }
        let buckets = Buckets::build(ids.len(), |i| &ids[i]);
        ChunkIdSet {
            sorted: ids,
            buckets,
            recent: HashSet::new(),
        }
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        self.in_sorted(id) || self.recent.contains(id)
    }

    fn in_sorted(&self, id: &ChunkId) -> bool {
        self.sorted[self.buckets.range(id)]
            .binary_search(id)
            .is_ok()
    }

    /// Adds `id`; true if it was not in the set.
    pub fn insert(&mut self, id: ChunkId) -> bool {
        if self.in_sorted(&id) || !self.recent.insert(id) {
            return false;
        }
        if self.recent.len() >= merge_at(self.sorted.len()) {
            self.merge();
        }
        true
    }

    fn merge(&mut self) {
        let mut add: Vec<ChunkId> = self.recent.drain().collect();
        self.recent.shrink_to(merge_at(self.sorted.len()));
        add.sort_unstable();
        merge_into(&mut self.sorted, add, |c| c);
        self.buckets = Buckets::build(self.sorted.len(), |i| &self.sorted[i]);
    }

    pub fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids in increasing order.
    pub fn into_sorted_vec(mut self) -> Vec<ChunkId> {
        self.merge();
        self.recent = HashSet::new();
        self.sorted.shrink_to_fit();
        self.sorted
    }

    /// Heap bytes held (for memory accounting in tests and benches).
    pub fn heap_bytes(&self) -> usize {
        self.sorted.capacity() * 32 + self.buckets.heap_bytes() + self.recent.capacity() * 33
    }
}

/// A map from keys to fixed-size values, built the same way; `V: Copy`.
pub(crate) struct IdMap<K: SortKey, V: Copy> {
    pub(crate) sorted: Vec<(K, V)>,
    buckets: Buckets,
    pub(crate) recent: HashMap<K, V>,
}

/// The map the chunk index is made of.
pub(crate) type ChunkIdMap<V> = IdMap<ChunkId, V>;

impl<K: SortKey, V: Copy> Default for IdMap<K, V> {
    fn default() -> Self {
        IdMap {
            sorted: Vec::new(),
            buckets: Buckets::default(),
            recent: HashMap::new(),
        }
    }
}

impl<K: SortKey, V: Copy> IdMap<K, V> {
    pub(crate) fn get(&self, id: &K) -> Option<&V> {
        let r = self.buckets.range(id);
        match self.sorted[r.clone()].binary_search_by(|e| e.0.cmp(id)) {
            Ok(i) => Some(&self.sorted[r.start + i].1),
            Err(_) => self.recent.get(id),
        }
    }

    pub(crate) fn get_mut(&mut self, id: &K) -> Option<&mut V> {
        let r = self.buckets.range(id);
        match self.sorted[r.clone()].binary_search_by(|e| e.0.cmp(id)) {
            Ok(i) => Some(&mut self.sorted[r.start + i].1),
            Err(_) => self.recent.get_mut(id),
        }
    }

    /// Inserts an id that is not in the map (the caller checked with [`Self::get`]).
    pub(crate) fn insert_new(&mut self, id: K, v: V) {
        self.recent.insert(id, v);
        if self.recent.len() >= merge_at(self.sorted.len()) {
            self.merge();
        }
    }

    fn merge(&mut self) {
        let mut add: Vec<(K, V)> = self.recent.drain().collect();
        self.recent.shrink_to(merge_at(self.sorted.len()));
        add.sort_unstable_by_key(|a| a.0);
        merge_into(&mut self.sorted, add, |e| &e.0);
        self.rebuild();
    }

    fn rebuild(&mut self) {
        self.buckets = Buckets::build(self.sorted.len(), |i| &self.sorted[i].0);
    }

    pub(crate) fn retain(&mut self, keep: impl Fn(&V) -> bool) {
        self.sorted.retain(|e| keep(&e.1));
        self.recent.retain(|_, v| keep(v));
        self.rebuild();
    }

    /// [`Self::retain`], giving the freed capacity back.
    pub(crate) fn retain_shrink(&mut self, keep: impl Fn(&V) -> bool) {
        self.retain(keep);
        self.sorted.shrink_to_fit();
        self.recent.shrink_to_fit();
    }

    pub(crate) fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &K> + '_ {
        self.sorted.iter().map(|e| &e.0).chain(self.recent.keys())
    }

    /// Heap bytes held (hash table buckets counted by capacity, control bytes included).
    pub(crate) fn heap_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(K, V)>();
        self.sorted.capacity() * entry
            + self.buckets.heap_bytes()
            + self.recent.capacity() * (entry + 1)
    }

    /// Every entry, in no particular order (a linear pass: no lookups).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.sorted
            .iter()
            .map(|(k, v)| (k, v))
            .chain(self.recent.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> ChunkId {
        ChunkId(*blake3::hash(&n.to_le_bytes()).as_bytes())
    }

    #[test]
    fn the_recent_table_is_merged_when_full_never_doubled() {
        for n in [0, 1000, 1 << 19, 1 << 20, 650_000, 10_000_000] {
            let at = merge_at(n);
            assert!(
                at <= MERGE_MIN.max(n / 8) && at > MERGE_MIN.max(n / 8) / 2,
                "{n}: {at}"
            );
            // A table of `at` entries is full, not half empty.
            let t: HashSet<u64> = (0..at as u64).collect();
            assert_eq!(t.capacity(), at, "{n}");
        }
        let mut set = ChunkIdSet::new();
        let mut most = 0;
        for n in 0..300_000u64 {
            set.insert(id(n));
            most = most.max(set.recent.capacity());
        }
        assert_eq!(most, merge_at(0));
    }

    #[test]
    fn set_agrees_with_a_hash_set_across_merges() {
        let mut set = ChunkIdSet::new();
        let mut reference = HashSet::new();
        // Enough inserts for several merges, with repeats.
        for n in 0..300_000u64 {
            let c = id(n % 200_000);
            assert_eq!(set.insert(c), reference.insert(c), "insert {n}");
        }
        assert_eq!(set.len(), reference.len());
        for n in (0..400_000u64).step_by(7) {
            assert_eq!(
                set.contains(&id(n)),
                reference.contains(&id(n)),
                "contains {n}"
            );
        }
        let v = set.into_sorted_vec();
        assert!(v.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(v.len(), reference.len());
    }

    #[test]
    fn map_finds_every_entry_and_retains() {
        let mut m: ChunkIdMap<u32> = ChunkIdMap::default();
        for n in 0..150_000u64 {
            if m.get(&id(n)).is_none() {
                m.insert_new(id(n), n as u32);
            }
        }
        assert_eq!(m.len(), 150_000);
        assert!(m.sorted.len() > 100_000, "merged at least once");
        for n in 0..150_000u64 {
            assert_eq!(m.get(&id(n)), Some(&(n as u32)));
        }
        *m.get_mut(&id(5)).unwrap() = 7;
        m.retain(|v| v % 2 == 1);
        assert_eq!(m.get(&id(5)), Some(&7));
        assert_eq!(m.get(&id(4)), None);
        assert_eq!(m.len(), 75_000);
        assert_eq!(m.keys().count(), 75_000);
    }

    #[test]
    fn skewed_ids_are_still_found() {
        // All ids share their leading bytes: one bucket holds everything.
        let mut ids: Vec<ChunkId> = (0..5000u32)
            .map(|n| {
                let mut c = [0u8; 32];
                c[28..].copy_from_slice(&n.to_be_bytes());
                ChunkId(c)
            })
            .collect();
        ids.reverse();
        let set = ChunkIdSet::from_sorted(ids.clone());
        assert!(ids.iter().all(|c| set.contains(c)));
        assert!(!set.contains(&ChunkId([1; 32])));
    }
}
