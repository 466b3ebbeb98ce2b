//! The backup's reference set as the producer builds it: every chunk each source references,
//! once. The manifest needs each source's list sorted; the producer needs to know whether a chunk
//! is already referenced by this backup (then it is not sent to be stored again).
//!
//! Memory: each reference is held once, 32 bytes plus about a byte of lookup table
//! ([`ChunkIdSet`]): the source being read in a set, finished sources as sorted lists (the very
//! lists the manifest is sealed from). A chunk referenced by two sources is in both lists, as the
//! manifest's per-source refs require.

use ibs_repo::ids::ChunkId;
use ibs_repo::idset::ChunkIdSet;

#[derive(Default)]
pub struct BackupRefs {
    current: ChunkIdSet,
    /// Finished sources: name and sorted, deduplicated references.
    finished: Vec<(String, ChunkIdSet)>,
}

impl BackupRefs {
    /// Records that the source being read references `id`. True if no source of this backup
    /// referenced it before.
    pub fn insert(&mut self, id: ChunkId) -> bool {
        self.current.insert(id) && !self.finished.iter().any(|(_, s)| s.contains(&id))
    }

    /// True if some source of this backup references `id`.
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.current.contains(id) || self.finished.iter().any(|(_, s)| s.contains(id))
    }

    /// Ends the current source under `name`.
    pub fn finish_source(&mut self, name: &str) {
        let ids = std::mem::take(&mut self.current).into_sorted_vec();
        self.finished
            .push((name.to_owned(), ChunkIdSet::from_sorted(ids)));
    }

    /// Each finished source's references, sorted.
    pub fn into_lists(self) -> Vec<(String, Vec<ChunkId>)> {
        self.finished
            .into_iter()
            .map(|(n, s)| (n, s.into_sorted_vec()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_new_once_per_backup_but_listed_per_source() {
        let (a, b, c) = (ChunkId([1; 32]), ChunkId([2; 32]), ChunkId([3; 32]));
        let mut r = BackupRefs::default();
        assert!(r.insert(b));
        assert!(r.insert(a));
        assert!(!r.insert(a));
        r.finish_source("one");
        assert!(r.contains(&a) && !r.contains(&c));
        assert!(!r.insert(a), "referenced by an earlier source");
        assert!(r.insert(c));
        r.finish_source("two");
        assert_eq!(
            r.into_lists(),
            vec![("one".into(), vec![a, b]), ("two".into(), vec![a, c])]
        );
    }
}
