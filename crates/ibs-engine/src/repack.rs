//! Prune's view of the index segments, pack by pack: which entries of a pack are live, what becomes
//! of the pack ([`Fate`]), the plan built from the segments as they stream by ([`Planner`]), and
//! the execute pass that reads the same segments again, copies the live chunks of partly used
//! packs into new packs and writes the new index segments ([`rewrite`]).
//!
//! Memory (issue 18): no list of every index entry is held. The planner keeps a few facts per pack
//! ([`PackFacts`], and 56 bytes per repack candidate); the rewrite holds one segment's records,
//! two segments' worth of new records (the copier's and the writer's `packing::SegmentBuffer`),
//! the pack being filled, one full pack waiting for the writer and the one being stored, the pack
//! being copied and two read ahead (`rewrite::READ_AHEAD`).
//!
//! Invariants:
//! - The index passed in holds only referenced chunks ([`ibs_repo::index::Index::retain_marked`]),
//!   each at the location prune keeps. An entry of a pack is live iff the index locates its chunk in
//!   that very pack; every other copy of a chunk is dead.
//! - A pack's first record, in the order of the segment names, is the one that counts (a pack
//!   listed again after a crashed prune, or by a segment a lock kept, is the same pack); planner
//!   and rewrite read the same named segments in the same order, so they see the same records.
//! - Young packs (unsettled or unlisted, and with something dead) are listed again whole, every
//!   entry; a damaged pack is never repacked; a repacked pack whose bytes fail their hash check is
//!   kept as it is (its live entries are listed) and reported damaged.

mod rewrite;

pub(crate) use rewrite::rewrite;

use crate::prune::{Listed, PrunePlan};
use crate::EngineError;
use ibs_repo::crypto::SymKey;
use ibs_repo::ids::{KeyId, PackId};
use ibs_repo::index::{decode_segment, Index, PackRecord};
use ibs_repo::pack::PackEntry;
use ibs_repo::{layout, Repository};
use std::collections::{HashMap, HashSet};

/// What prune does with one indexed pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Something in it is dead (or its record lists nothing), but it is younger than the grace
    /// period (or not listed, or not marked in a sweep): kept whole, every entry indexed.
    Young,
    /// Nothing in it is live.
    Delete,
    /// Some of its entries' bytes are dead: its live chunks are copied. The planner first marks
    /// every such pack, then keeps those the unused-space budget allows ([`Planner::finish`]).
    Repack,
    /// Kept, with its live entries indexed.
    Keep,
}

/// What the planner learnt of one pack.
#[derive(Debug, Clone)]
pub struct PackFacts {
    pub fate: Fate,
    /// The data keys of every entry of every record of the pack.
    pub keys: Vec<KeyId>,
    /// The data keys of the entries that stay indexed (all of them for a young pack).
    pub live_keys: Vec<KeyId>,
}

/// The live entries of `rec`: those whose chunk `index` (referenced chunks only) locates in it.
pub fn live_entries(rec: &PackRecord, index: &Index) -> Vec<PackEntry> {
    rec.entries
        .iter()
        .filter(|e| index.get(&e.id).is_some_and(|l| l.pack == rec.id))
        .copied()
        .collect()
}

/// The fate of a pack given its record and its live entries.
pub fn fate(
    rec: &PackRecord,
    live: &[PackEntry],
    index: &Index,
    listed: &HashMap<PackId, Listed>,
) -> Fate {
    // Only settled packs are deleted or repacked (module doc of prune): a young one is kept whole,
    // or as it is when all of it is live.
    if !listed.get(&rec.id).is_some_and(|l| l.settled) {
        return if live.is_empty() || live.len() < rec.entries.len() {
            Fate::Young
        } else {
            Fate::Keep
        };
    }
    if live.is_empty() {
        return Fate::Delete;
    }
    // Only the entries' bytes decide: the pack's header (its entry table, a large share of a pack
    // of small chunks) shrinks with the entries a repack copies, so counting it as dead would
    // repack a wholly live pack of small chunks at every prune.
    let (_, dead) = live_and_dead(rec, live);
    if dead > 0 && !index.is_damaged(&rec.id) {
        Fate::Repack
    } else {
        Fate::Keep
    }
}

/// The live and the dead bytes of a pack's entries (its header not counted).
fn live_and_dead(rec: &PackRecord, live: &[PackEntry]) -> (u64, u64) {
    let entry_bytes: u64 = rec.entries.iter().map(|e| e.length as u64).sum();
    let live_bytes: u64 = live.iter().map(|e| e.length as u64).sum();
    (live_bytes, entry_bytes.saturating_sub(live_bytes))
}

/// A pack that could be repacked: settled, undamaged, partly live.
struct Candidate {
    id: PackId,
    length: u64,
    live: u64,
    dead: u64,
}

/// Whether `unused` dead bytes beside `used` live ones are within `max_unused_percent` of the
/// two together.
fn within(unused: u64, used: u64, max_unused_percent: u8) -> bool {
    unused as u128 * 100 <= max_unused_percent as u128 * (used as u128 + unused as u128)
}

fn add_keys(keys: &mut Vec<KeyId>, entries: &[PackEntry]) {
    for e in entries {
        if !keys.contains(&e.key_id) {
            keys.push(e.key_id);
        }
    }
}

/// Builds the plan from the index's records as they stream by (see the module's invariants).
/// `listed` is what storage holds; only listed, settled packs are deleted or repacked.
pub struct Planner<'a> {
    index: &'a Index,
    listed: &'a HashMap<PackId, Listed>,
    plan: PrunePlan,
    facts: HashMap<PackId, PackFacts>,
    live_keys: HashSet<KeyId>,
    /// Packs with dead bytes that may be repacked, in the order met.
    candidates: Vec<Candidate>,
    /// Live and dead entry bytes of the packs that stay (kept, young, or candidates).
    used: u64,
    unused: u64,
}

impl<'a> Planner<'a> {
    /// `manifest_keys`: the data keys the kept manifests name (never deleted).
    pub fn new(
        index: &'a Index,
        listed: &'a HashMap<PackId, Listed>,
        manifest_keys: &HashSet<KeyId>,
    ) -> Self {
        Planner {
            index,
            listed,
            plan: PrunePlan {
                packs_total: listed.len(),
                ..Default::default()
            },
            facts: HashMap::new(),
            live_keys: manifest_keys.clone(),
            candidates: Vec::new(),
            used: 0,
            unused: 0,
        }
    }

    /// Takes one record as a segment lists it.
    pub fn add(&mut self, rec: &PackRecord) {
        if let Some(f) = self.facts.get_mut(&rec.id) {
            add_keys(&mut f.keys, &rec.entries);
            return;
        }
        let live = live_entries(rec, self.index);
        let fate = fate(rec, &live, self.index, self.listed);
        let plan = &mut self.plan;
        plan.chunks_used += live.len();
        plan.chunks_unused += rec.entries.len() - live.len();
        let mut keys = Vec::new();
        add_keys(&mut keys, &rec.entries);
        let mut live_keys = Vec::new();
        match fate {
            Fate::Young => {
                plan.young_packs.push(rec.id);
                plan.keep += 1;
                live_keys.clone_from(&keys);
                // It stays, with what it holds: counted, so that a sweep (where every pack the
                // mark did not name is young) weighs the budget as the mark did.
                let (live_bytes, dead) = live_and_dead(rec, &live);
                self.used += live_bytes;
                self.unused += dead;
            }
            Fate::Delete => {
                plan.delete.push(rec.id);
                plan.bytes_freed_estimate += rec.length;
            }
            Fate::Repack => {
                let (live_bytes, dead) = live_and_dead(rec, &live);
                self.candidates.push(Candidate {
                    id: rec.id,
                    length: rec.length,
                    live: live_bytes,
                    dead,
                });
                self.used += live_bytes;
                self.unused += dead;
                add_keys(&mut live_keys, &live);
            }
            Fate::Keep => {
                plan.keep += 1;
                let (live_bytes, dead) = live_and_dead(rec, &live);
                self.used += live_bytes;
                self.unused += dead;
                add_keys(&mut live_keys, &live);
            }
        }
        self.live_keys.extend(live_keys.iter().copied());
        let facts = PackFacts {
            fate,
            keys,
            live_keys,
        };
        self.facts.insert(rec.id, facts);
    }

    /// The plan: listed packs no record names are unindexed (deleted once settled), and listed
    /// envelopes no kept chunk and no manifest uses are deleted once settled (including those of
    /// backups that died before committing anything).
    ///
    /// Repacking costs a read of the whole pack and a write of its live part, so only as many
    /// candidates are repacked as it takes to bring the dead bytes left in the packs that stay to
    /// at most `max_unused_percent` of their entry bytes, the most wasteful first (the largest
    /// share of dead bytes; then the pack id, so the choice is the same for the same records).
    /// The rest are kept.
    pub fn finish(
        mut self,
        envelopes: &HashMap<KeyId, Listed>,
        max_unused_percent: u8,
    ) -> (PrunePlan, HashMap<PackId, PackFacts>) {
        let plan = &mut self.plan;
        // Most wasteful first: a/(a+b) > c/(c+d) iff a*d > c*b (no division, no rounding).
        self.candidates.sort_by(|x, y| {
            let wx = x.dead as u128 * y.live as u128;
            let wy = y.dead as u128 * x.live as u128;
            wy.cmp(&wx).then(x.id.cmp(&y.id))
        });
        let mut unused = self.unused;
        for c in &self.candidates {
            if within(unused, self.used, max_unused_percent) {
                self.facts.get_mut(&c.id).expect("added").fate = Fate::Keep;
                plan.keep += 1;
                continue;
            }
            unused -= c.dead;
            plan.repack.push(c.id);
            plan.repack_bytes += c.live;
            plan.bytes_freed_estimate += c.length - c.live;
        }
        plan.used_bytes = self.used;
        plan.unused_bytes_after = unused;
        for (id, l) in self.listed {
            if !self.facts.contains_key(id) {
                if l.settled {
                    plan.unindexed.push(*id);
                    plan.bytes_freed_estimate += l.size;
                } else {
                    plan.young_packs.push(*id);
                }
            }
        }
        for (k, l) in envelopes {
            if !self.live_keys.contains(k) {
                if l.settled {
                    plan.delete_keys.push(*k);
                } else {
                    plan.young_keys.push(*k);
                }
            }
        }
        for v in [
            &mut plan.delete,
            &mut plan.repack,
            &mut plan.unindexed,
            &mut plan.young_packs,
        ] {
            v.sort();
        }
        plan.delete_keys.sort();
        plan.young_keys.sort();
        (self.plan, self.facts)
    }
}

/// Reads one index segment by name.
pub(crate) async fn read_segment(
    repo: &Repository,
    name: &str,
    metadata_key: &SymKey,
) -> Result<Vec<PackRecord>, EngineError> {
    let bytes = repo.storage().get(&layout::index(name)).await?;
    Ok(decode_segment(name, &bytes, metadata_key)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prune::DEFAULT_MAX_UNUSED_PERCENT;
    use ibs_repo::ids::ChunkId;

    fn entry(chunk: u8, key: u8, length: u32) -> PackEntry {
        PackEntry {
            id: ChunkId([chunk; 32]),
            offset: 8,
            length,
            raw_length: length,
            encoding: 0,
            key_id: KeyId([key; 16]),
        }
    }

    fn pack(id: u8, entries: Vec<PackEntry>) -> PackRecord {
        let length = 8 + entries.iter().map(|e| e.length as u64).sum::<u64>();
        PackRecord {
            id: PackId([id; 32]),
            length,
            entries,
        }
    }

    fn settled(packs: &[&PackRecord], yes: bool) -> HashMap<PackId, Listed> {
        packs
            .iter()
            .map(|p| {
                let l = Listed {
                    size: p.length,
                    settled: yes,
                };
                (p.id, l)
            })
            .collect()
    }

    /// The index of `records` (in order) holding only the `used` chunks.
    fn index_of(records: &[&PackRecord], used: &[u8]) -> Index {
        let mut index = Index::default();
        records.iter().for_each(|r| index.add_pack(r));
        for c in used {
            index.mark(&ChunkId([*c; 32]));
        }
        index.retain_marked();
        index
    }

    fn plan_of(
        records: &[&PackRecord],
        index: &Index,
        listed: &HashMap<PackId, Listed>,
    ) -> (PrunePlan, HashMap<PackId, PackFacts>) {
        let mut planner = Planner::new(index, listed, &HashSet::new());
        records.iter().for_each(|r| planner.add(r));
        planner.finish(&HashMap::new(), DEFAULT_MAX_UNUSED_PERCENT)
    }

    #[test]
    fn a_copy_the_index_does_not_locate_is_dead() {
        let a = pack(1, vec![entry(1, 7, 100), entry(2, 7, 100)]);
        let b = pack(2, vec![entry(1, 7, 100)]);
        let index = index_of(&[&a, &b], &[1, 2]);
        let (plan, facts) = plan_of(&[&a, &b], &index, &settled(&[&a, &b], true));
        assert_eq!(facts[&a.id].fate, Fate::Keep);
        assert_eq!(facts[&b.id].fate, Fate::Delete);
        assert_eq!((plan.chunks_used, plan.chunks_unused), (2, 1));
        assert_eq!(plan.delete, vec![b.id]);
        assert_eq!(live_entries(&a, &index).len(), 2);
        assert!(live_entries(&b, &index).is_empty());
    }

    #[test]
    fn a_partly_used_pack_is_repacked_unless_young_or_damaged() {
        let a = pack(1, vec![entry(1, 7, 100), entry(2, 8, 900)]);
        let index = index_of(&[&a], &[1]);
        let (plan, facts) = plan_of(&[&a], &index, &settled(&[&a], true));
        assert_eq!(facts[&a.id].fate, Fate::Repack);
        assert_eq!(plan.repack, vec![a.id]);
        assert_eq!(plan.bytes_freed_estimate, a.length - 100);
        assert_eq!(facts[&a.id].live_keys, vec![KeyId([7; 16])]);
        assert_eq!(facts[&a.id].keys, vec![KeyId([7; 16]), KeyId([8; 16])]);
        // Young (or unlisted): kept whole, every key live.
        for listed in [settled(&[&a], false), HashMap::new()] {
            let (plan, facts) = plan_of(&[&a], &index, &listed);
            assert_eq!(facts[&a.id].fate, Fate::Young);
            assert_eq!(plan.young_packs, vec![a.id]);
            assert_eq!(facts[&a.id].live_keys, facts[&a.id].keys);
        }
        // Wholly live but young: kept as it is, whatever its header's share of its bytes.
        let mut all = Index::default();
        all.add_pack(&a);
        all.mark(&ChunkId([1; 32]));
        all.mark(&ChunkId([2; 32]));
        let (plan, facts) = plan_of(&[&a], &all, &settled(&[&a], false));
        assert_eq!(facts[&a.id].fate, Fate::Keep);
        assert!(plan.repack.is_empty() && plan.young_packs.is_empty());
        // A young pack whose record lists nothing is not deleted either.
        let empty = pack(4, vec![]);
        let (_, facts) = plan_of(&[&empty], &index, &settled(&[&empty], false));
        assert_eq!(facts[&empty.id].fate, Fate::Young);
        // Damaged: never repacked.
        let mut damaged = Index::with_damaged([a.id].into());
        damaged.add_pack(&a);
        damaged.mark(&ChunkId([1; 32]));
        damaged.retain_marked();
        let (_, facts) = plan_of(&[&a], &damaged, &settled(&[&a], true));
        assert_eq!(facts[&a.id].fate, Fate::Keep);
    }

    #[test]
    fn the_header_never_counts_as_dead_only_dead_entries_do() {
        // Ten 10-byte chunks behind a header nine times their size (a pack of small chunks).
        let small = |id: u8| {
            let entries: Vec<_> = (1..=10).map(|c| entry(c, 7, 10)).collect();
            PackRecord {
                id: PackId([id; 32]),
                length: 1_000,
                entries,
            }
        };
        let a = small(1);
        let all: Vec<u8> = (1..=10).collect();
        let (plan, facts) = plan_of(&[&a], &index_of(&[&a], &all), &settled(&[&a], true));
        assert_eq!(facts[&a.id].fate, Fate::Keep);
        assert!(plan.repack.is_empty());
        // 1 of 10 dead (10 %): kept; 3 of 10 dead (30 %): repacked.
        let (_, facts) = plan_of(&[&a], &index_of(&[&a], &all[1..]), &settled(&[&a], true));
        assert_eq!(facts[&a.id].fate, Fate::Keep);
        let (plan, facts) = plan_of(&[&a], &index_of(&[&a], &all[3..]), &settled(&[&a], true));
        assert_eq!(facts[&a.id].fate, Fate::Repack);
        assert_eq!(plan.bytes_freed_estimate, 1_000 - 70);
    }

    #[test]
    fn a_pack_listed_again_counts_once_its_first_record_decides() {
        let a = pack(1, vec![entry(1, 7, 100), entry(2, 7, 100)]);
        let trimmed = pack(1, vec![entry(1, 9, 100)]);
        let index = index_of(&[&a], &[1, 2]);
        let (plan, facts) = plan_of(&[&a, &trimmed], &index, &settled(&[&a], true));
        assert_eq!(facts[&a.id].fate, Fate::Keep);
        assert_eq!((plan.chunks_used, plan.chunks_unused), (2, 0));
        assert_eq!(plan.keep, 1);
        // The data keys of every record are known (a locked segment may keep the later one).
        assert_eq!(facts[&a.id].keys, vec![KeyId([7; 16]), KeyId([9; 16])]);
        assert_eq!(facts[&a.id].live_keys, vec![KeyId([7; 16])]);
    }

    #[test]
    fn unindexed_packs_and_unused_envelopes_are_deleted_once_settled() {
        let a = pack(1, vec![entry(1, 7, 100)]);
        let stray = pack(2, vec![]);
        let young = pack(3, vec![]);
        let index = index_of(&[&a], &[1]);
        let mut listed = settled(&[&a, &stray], true);
        listed.extend(settled(&[&young], false));
        let keys = |k: u8, s: bool| {
            (
                KeyId([k; 16]),
                Listed {
                    size: 1,
                    settled: s,
                },
            )
        };
        let envelopes: HashMap<KeyId, Listed> =
            [keys(7, true), keys(8, true), keys(9, false), keys(5, true)].into();
        let mut planner = Planner::new(&index, &listed, &[KeyId([5; 16])].into());
        planner.add(&a);
        let (plan, _) = planner.finish(&envelopes, DEFAULT_MAX_UNUSED_PERCENT);
        assert_eq!(plan.unindexed, vec![stray.id]);
        assert_eq!(plan.young_packs, vec![young.id]);
        assert_eq!(plan.delete_keys, vec![KeyId([8; 16])]);
        assert_eq!(plan.young_keys, vec![KeyId([9; 16])]);
        assert_eq!(plan.packs_total, 3);
    }

    #[test]
    fn the_most_wasteful_packs_are_repacked_until_the_rest_is_within_the_budget() {
        // Four settled packs of 1,000 entry bytes: 90 %, 40 %, 20 % and 5 % dead (the dead
        // entries each hold a chunk no backup references).
        let shape = |id: u8, dead: u32| {
            pack(
                id,
                vec![entry(id, 7, 1_000 - dead), entry(100 + id, 7, dead)],
            )
        };
        let (a, b, c, d) = (shape(1, 900), shape(2, 400), shape(3, 200), shape(4, 50));
        let all = [&d, &c, &a, &b];
        let index = index_of(&all, &[1, 2, 3, 4]);
        let listed = settled(&all, true);
        let plan_at = |percent: u8| {
            let mut planner = Planner::new(&index, &listed, &HashSet::new());
            all.iter().for_each(|r| planner.add(r));
            planner.finish(&HashMap::new(), percent)
        };
        // Dead 1,550 of 4,000 (38.75 %). Within 10 %: a (-900: 650 of 3,100, 21 %) and b (-400:
        // 250 of 2,700, 9.3 %) go; c and d stay.
        let (plan, facts) = plan_at(10);
        assert_eq!(plan.repack, vec![a.id, b.id]);
        assert_eq!(plan.keep, 2);
        assert_eq!(facts[&c.id].fate, Fate::Keep);
        assert_eq!(facts[&d.id].fate, Fate::Keep);
        assert_eq!(plan.repack_bytes, 100 + 600);
        assert_eq!((plan.used_bytes, plan.unused_bytes_after), (2_450, 250));
        assert_eq!(
            plan.bytes_freed_estimate,
            (a.length - 100) + (b.length - 600)
        );
        // 0 %: every pack with a dead byte; 100 %: none.
        let (plan, _) = plan_at(0);
        assert_eq!(plan.repack.len(), 4);
        assert_eq!(plan.unused_bytes_after, 0);
        let (plan, _) = plan_at(100);
        assert!(plan.repack.is_empty());
        assert_eq!((plan.keep, plan.unused_bytes_after), (4, 1_550));
        // 40 %: already within (38.75 %).
        assert!(plan_at(40).0.repack.is_empty());
    }

    #[test]
    fn a_sweep_over_the_marked_packs_repacks_what_the_mark_chose() {
        // a 90 %, b 50 %, c 15 % dead, k wholly live. Within 10 %: the mark repacks a and b.
        let a = pack(1, vec![entry(1, 7, 100), entry(101, 7, 900)]);
        let b = pack(2, vec![entry(2, 7, 500), entry(102, 7, 500)]);
        let c = pack(3, vec![entry(3, 7, 1_700), entry(103, 7, 300)]);
        let k = pack(4, vec![entry(4, 7, 1_000)]);
        let all = [&a, &b, &c, &k];
        let index = index_of(&all, &[1, 2, 3, 4]);
        let plan_over = |listed: &HashMap<PackId, Listed>| {
            let mut planner = Planner::new(&index, listed, &HashSet::new());
            all.iter().for_each(|r| planner.add(r));
            planner.finish(&HashMap::new(), 10).0
        };
        let mark = plan_over(&settled(&all, true));
        assert_eq!(mark.repack, vec![a.id, b.id]);
        // The sweep: only the marked packs are settled, the others young (kept whole, counted).
        let mut listed = settled(&[&a, &b], true);
        listed.extend(settled(&[&c, &k], false));
        let sweep = plan_over(&listed);
        assert_eq!(sweep.repack, mark.repack);
        assert_eq!(sweep.young_packs, vec![c.id]);
        assert_eq!(
            (sweep.used_bytes, sweep.unused_bytes_after),
            (mark.used_bytes, mark.unused_bytes_after)
        );
    }
}
