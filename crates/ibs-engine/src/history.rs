//! Tamper evidence in the history of write-once objects on versioned (object-lock) storage
//! (ADR 0035, ADR 0040): which objects were rewritten after ibs wrote them. `ibs repo check` and
//! the controller's verification and retention share this rule.
//!
//! The storage names every write-once key whose versions differ in ETag or that carries a delete
//! marker ([`ibs_storage::Storage::rewritten`]). Two writers may store the same content-addressed
//! object at the same moment (both saw it absent), which leaves two versions that are no rewrite:
//! - identical bytes, whose ETags may still differ (one sent as a multipart upload);
//! - for a reference segment (`refs/`), two sealings of the same id list: the seal's nonce is
//!   random, so the bytes differ, but both open under the metadata key to the list the name hashes
//!   to (`refseg.rs`); a version that does not is a rewrite.
//!
//! Invariants: a key is benign only when every later version holds the first version's content;
//! a delete marker is never benign (ibs deletes every version of a key at once); without the
//! metadata key a reference segment with different bytes stays reported. Only keys the storage
//! names are read, so an untouched repository costs one version listing per prefix.

use crate::EngineError;
use bytes::Bytes;
use ibs_repo::crypto::SymKey;
use ibs_repo::{layout, refseg, Repository};
use ibs_storage::ObjectKey;

/// Every write-once object rewritten or hidden by a delete marker after ibs wrote it, less the
/// benign second puts of the same content. `metadata_key` lets it open reference segments.
pub async fn rewritten(
    repo: &Repository,
    metadata_key: Option<&SymKey>,
) -> Result<Vec<ObjectKey>, EngineError> {
    let mut out = Vec::new();
    for prefix in layout::WRITE_ONCE {
        for key in repo.storage().rewritten(prefix).await? {
            let versions = match repo.storage().history(&key).await {
                Ok(v) => v,
                // Deleted since it was listed (prune): nothing left to judge.
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            if !same_content(&key, &versions, metadata_key) {
                out.push(key);
            }
        }
    }
    Ok(out)
}

/// True when every version after the first holds the first version's content (see the module
/// doc); false with a delete marker or without versions.
pub fn same_content(key: &ObjectKey, versions: &[Option<Bytes>], mk: Option<&SymKey>) -> bool {
    let Some(Some(first)) = versions.first() else {
        return false;
    };
    let segment = layout::parse_refs_segment(key);
    let list_of = |bytes: &[u8]| match (&segment, mk) {
        (Some(id), Some(mk)) => refseg::decode(id, bytes, mk).ok(),
        _ => None,
    };
    let first_list = || list_of(first);
    versions[1..].iter().all(|v| match v {
        None => false,
        Some(b) if b == first => true,
        Some(b) => list_of(b).is_some_and(|l| Some(l) == first_list()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ibs_repo::ids::ChunkId;

    fn ids(n: u8) -> Vec<ChunkId> {
        (1..=n).map(|i| ChunkId([i; 32])).collect()
    }

    #[test]
    fn identical_bytes_are_benign_and_a_marker_or_other_bytes_are_not() {
        let k = ObjectKey::new("index/abc").unwrap();
        let a = Bytes::from_static(b"segment");
        let b = Bytes::from_static(b"evil!!!");
        assert!(same_content(&k, &[Some(a.clone()), Some(a.clone())], None));
        assert!(!same_content(&k, &[Some(a.clone()), Some(b.clone())], None));
        assert!(!same_content(&k, &[Some(a.clone()), None], None));
        assert!(!same_content(
            &k,
            &[Some(a.clone()), Some(a.clone()), Some(b)],
            None
        ));
        assert!(!same_content(&k, &[], None));
        assert!(!same_content(&k, &[None, Some(a)], None));
    }

    #[test]
    fn two_sealings_of_one_reference_segment_are_benign_only_with_the_key() {
        let mk = SymKey::random();
        let list = ids(3);
        let (id, one) = refseg::encode(&list, &mk);
        let (id2, two) = refseg::encode(&list, &mk);
        assert_eq!(id, id2);
        assert_ne!(one, two, "random nonces");
        let k = layout::refs_segment(&id);
        let v = [Some(Bytes::from(one.clone())), Some(Bytes::from(two))];
        assert!(same_content(&k, &v, Some(&mk)));
        assert!(!same_content(&k, &v, None), "unjudged without the key");
        // Another list sealed under the same name, or another key's sealing, is a rewrite.
        let (_, other) = refseg::encode(&ids(4), &mk);
        let (_, foreign) = refseg::encode(&list, &SymKey::random());
        for bad in [other, foreign, b"garbage".to_vec()] {
            let v = [Some(Bytes::from(one.clone())), Some(Bytes::from(bad))];
            assert!(!same_content(&k, &v, Some(&mk)));
        }
    }
}
