//! Reference segments (`refs/<segment id>`, repository format §10.1): the pieces a manifest of
//! version 3 lists instead of carrying every chunk id itself.
//!
//! Each source's sorted, distinct chunk-id list is cut into *content-defined* runs: a run ends
//! after an id whose last two bytes, read as a little-endian u16, are 0 modulo
//! [`SEGMENT_DIVISOR`] (chunk ids are keyed hashes, so about one id in [`SEGMENT_DIVISOR`]), or
//! when it reaches [`MAX_SEGMENT_IDS`]. Whether an id ends a run depends on that id alone, so
//! inserting or removing ids changes only the runs that contain them (and, inside a stretch of
//! forced cuts at the hard maximum, the runs up to the next natural boundary). Successive backups
//! of a tree that changed little therefore list mostly the same segments, and a writer stores only
//! the segments that are not on storage yet.
//!
//! Object: `"IBSREF" ‖ u16 version=1 ‖ sealed(metadata key, aad, body)` with
//! body `u32 n ‖ n × chunk id` (strictly ascending, 1 ≤ n ≤ MAX_SEGMENT_IDS) and
//! aad `"ibs.refs.segment.v1\0" ‖ segment id`. The id is the keyed BLAKE3 of the body under
//! `BLAKE3-derive_key("ibs refs segment id v1", metadata key)`.
//!
//! Invariants: a segment that decodes has the name its content hashes to under the key (a
//! swapped, replayed or edited object is refused, whatever its bytes); two sealings of the same
//! list differ (random nonce) but both open to the same body, so either copy of a segment that
//! two writers stored at once is valid.

use crate::crypto::SymKey;
use crate::error::{RepoError, Result};
use crate::ids::{ChunkId, SegmentId};

pub const SEGMENT_MAGIC: &[u8; 6] = b"IBSREF";
pub const SEGMENT_VERSION: u16 = 1;
/// One id in this many ends a segment (expected segment: 1024 ids, 32 KiB of ids).
pub const SEGMENT_DIVISOR: u16 = 1024;
/// The hard maximum of ids in one segment (128 KiB of ids).
pub const MAX_SEGMENT_IDS: usize = 4096;
const ID_CONTEXT: &str = "ibs refs segment id v1";

/// True when a segment ends after `id`.
pub fn is_boundary(id: &ChunkId) -> bool {
    u16::from_le_bytes([id.0[30], id.0[31]]).is_multiple_of(SEGMENT_DIVISOR)
}

/// Cuts a sorted, distinct list into segments (see the module doc). Empty input, no segments.
pub fn split(sorted: &[ChunkId]) -> Vec<&[ChunkId]> {
    let mut out = Vec::with_capacity(sorted.len() / SEGMENT_DIVISOR as usize + 1);
    let mut start = 0;
    for (i, id) in sorted.iter().enumerate() {
        if is_boundary(id) || i + 1 - start == MAX_SEGMENT_IDS {
            out.push(&sorted[start..=i]);
            start = i + 1;
        }
    }
    if start < sorted.len() {
        out.push(&sorted[start..]);
    }
    out
}

/// The key segment ids are computed under (derived from the metadata key).
fn id_key(metadata_key: &SymKey) -> [u8; 32] {
    blake3::derive_key(ID_CONTEXT, metadata_key.bytes())
}

fn body(ids: &[ChunkId]) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + 32 * ids.len());
    b.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    ids.iter().for_each(|c| b.extend_from_slice(&c.0));
    b
}

fn segment_id(metadata_key: &SymKey, body: &[u8]) -> SegmentId {
    SegmentId(*blake3::keyed_hash(&id_key(metadata_key), body).as_bytes())
}

/// Associated data of a segment's sealed body.
pub fn segment_aad(id: &SegmentId) -> Vec<u8> {
    [b"ibs.refs.segment.v1\0".as_slice(), &id.0].concat()
}

/// The id a segment of `ids` has, without sealing it (a writer that finds the name on storage
/// skips the object).
pub fn id_of(ids: &[ChunkId], metadata_key: &SymKey) -> SegmentId {
    segment_id(metadata_key, &body(ids))
}

/// Seals one segment; returns its id and object bytes. `ids` must be sorted and distinct.
pub fn encode(ids: &[ChunkId], metadata_key: &SymKey) -> (SegmentId, Vec<u8>) {
    debug_assert!(ids.windows(2).all(|w| w[0] < w[1]), "sorted and distinct");
    let body = body(ids);
    let id = segment_id(metadata_key, &body);
    let mut obj = Vec::with_capacity(8 + body.len() + crate::crypto::SEAL_OVERHEAD);
    obj.extend_from_slice(SEGMENT_MAGIC);
    obj.extend_from_slice(&SEGMENT_VERSION.to_le_bytes());
    obj.extend_from_slice(&metadata_key.seal(&segment_aad(&id), &body));
    (id, obj)
}

/// Opens segment `id` from its object bytes: the sorted ids it lists.
pub fn decode(id: &SegmentId, obj: &[u8], metadata_key: &SymKey) -> Result<Vec<ChunkId>> {
    let what = crate::layout::refs_segment(id).to_string();
    if obj.len() < 8 || &obj[..6] != SEGMENT_MAGIC {
        return Err(RepoError::corrupt(what, "missing reference segment magic"));
    }
    let version = u16::from_le_bytes([obj[6], obj[7]]);
    if version != SEGMENT_VERSION {
        return Err(RepoError::UnsupportedVersion {
            object: what,
            found: version as u32,
            supported: SEGMENT_VERSION as u32,
        });
    }
    let body = metadata_key
        .open(&segment_aad(id), &obj[8..])
        .ok_or_else(|| RepoError::corrupt(&what, "does not open with the metadata key"))?;
    if segment_id(metadata_key, &body) != *id {
        return Err(RepoError::corrupt(
            &what,
            "content does not match the segment's name",
        ));
    }
    let n = body
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or_else(|| RepoError::corrupt(&what, "truncated"))?;
    if n == 0 || n > MAX_SEGMENT_IDS || body.len() != 4 + 32 * n {
        return Err(RepoError::corrupt(
            &what,
            "id count does not match the body",
        ));
    }
    let ids: Vec<ChunkId> = body[4..]
        .chunks_exact(32)
        .map(|c| ChunkId::from_slice(c).expect("32 bytes"))
        .collect();
    if !ids.windows(2).all(|w| w[0] < w[1]) {
        return Err(RepoError::corrupt(what, "ids are not sorted and distinct"));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` pseudo-random ids (BLAKE3 of a counter: uniform like keyed chunk ids), sorted.
    fn ids(seed: u64, n: usize) -> Vec<ChunkId> {
        let mut v: Vec<ChunkId> = (0..n as u64)
            .map(|i| {
                ChunkId(*blake3::hash(&[seed.to_le_bytes(), i.to_le_bytes()].concat()).as_bytes())
            })
            .collect();
        v.sort_unstable();
        v
    }

    fn names(list: &[ChunkId], mk: &SymKey) -> Vec<SegmentId> {
        split(list).into_iter().map(|s| id_of(s, mk)).collect()
    }

    #[test]
    fn segments_cover_the_list_in_order_within_the_maximum() {
        let list = ids(1, 50_000);
        let segs = split(&list);
        assert_eq!(segs.concat(), list);
        assert!(segs
            .iter()
            .all(|s| !s.is_empty() && s.len() <= MAX_SEGMENT_IDS));
        // Expected about 50_000 / 1024 ≈ 49 segments.
        assert!((25..100).contains(&segs.len()), "{} segments", segs.len());
        assert!(split(&[]).is_empty());
    }

    #[test]
    fn a_run_without_natural_boundaries_is_cut_at_the_maximum() {
        let mut list: Vec<ChunkId> = ids(2, 20_000)
            .into_iter()
            .filter(|c| !is_boundary(c))
            .collect();
        list.truncate(3 * MAX_SEGMENT_IDS + 5);
        let lens: Vec<usize> = split(&list).iter().map(|s| s.len()).collect();
        assert_eq!(
            lens,
            vec![MAX_SEGMENT_IDS, MAX_SEGMENT_IDS, MAX_SEGMENT_IDS, 5]
        );
    }

    #[test]
    fn inserting_or_removing_ids_changes_only_the_segments_that_hold_them() {
        let mk = SymKey::random();
        let list = ids(3, 100_000);
        let before = names(&list, &mk);
        // Insert one id and remove another, far apart.
        let mut changed = list.clone();
        changed.remove(70_000);
        let extra = ids(4, 1)[0];
        let at = changed.binary_search(&extra).unwrap_err();
        changed.insert(at, extra);
        let after = names(&changed, &mk);
        let old: std::collections::HashSet<_> = before.iter().collect();
        let new_ones = after.iter().filter(|s| !old.contains(s)).count();
        assert!(new_ones <= 2, "{new_ones} new segments");
        assert!(after.len().abs_diff(before.len()) <= 1);
        // The same list gives the same names (under the same key only).
        assert_eq!(names(&list, &mk), before);
        assert_ne!(names(&list, &SymKey::random()), before);
    }

    #[test]
    fn a_segment_opens_only_as_itself() {
        let mk = SymKey::random();
        let list = ids(5, 10);
        let (id, obj) = encode(&list, &mk);
        assert_eq!(id, id_of(&list, &mk));
        assert_eq!(decode(&id, &obj, &mk).unwrap(), list);
        // A second sealing differs in bytes but opens the same.
        let (id2, obj2) = encode(&list, &mk);
        assert_eq!(id2, id);
        assert_ne!(obj2, obj);
        assert_eq!(decode(&id, &obj2, &mk).unwrap(), list);
        // Another segment's object under this name, a flipped byte, a wrong key: refused.
        let (other, other_obj) = encode(&ids(6, 3), &mk);
        assert!(decode(&id, &other_obj, &mk).is_err());
        assert!(decode(&other, &obj, &mk).is_err());
        let mut bad = obj.clone();
        let n = bad.len();
        bad[n - 20] ^= 1;
        let e = decode(&id, &bad, &mk).unwrap_err().to_string();
        assert!(e.contains(&format!("refs/{id}")), "{e}");
        assert!(decode(&id, &obj, &SymKey::random()).is_err());
        // A body that hashes right but is not sorted, or claims more ids than it holds.
        for body in [
            body(&[list[1], list[0]]),
            [5u32.to_le_bytes().to_vec(), list[0].0.to_vec()].concat(),
            0u32.to_le_bytes().to_vec(),
        ] {
            let sid = segment_id(&mk, &body);
            let obj = [
                SEGMENT_MAGIC.as_slice(),
                &SEGMENT_VERSION.to_le_bytes(),
                &mk.seal(&segment_aad(&sid), &body),
            ]
            .concat();
            assert!(decode(&sid, &obj, &mk).is_err());
        }
    }
}
