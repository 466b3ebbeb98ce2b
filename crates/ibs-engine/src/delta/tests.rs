//! Tests of the signature store and the diff: limits per kind, carried records, damaged records.

use super::*;
use ibs_repo::crypto::SymKey;
use ibs_repo::ids::{KeyId, PackId};
use ibs_repo::index::PackRecord;
use ibs_repo::pack::{encoding, PackEntry};

/// `n` tree-like lines; line `i` carries `v` when `changed(i)`.
fn lines(n: usize, changed: impl Fn(usize) -> bool) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let v = if changed(i) { 2 } else { 1 };
        out.extend_from_slice(
            format!(
                "{{\"path\":\"hosts/h{}/etc/f{i}.conf\",\"size\":{v}{:>60}}}\n",
                i / 50,
                ""
            )
            .as_bytes(),
        );
    }
    out
}

fn key() -> SymKey {
    SymKey::from_bytes(&[7; 32]).unwrap()
}

/// An index holding `id` whole.
fn index_with(id: ChunkId) -> DedupSet {
    let mut index = DedupSet::new(Default::default(), None);
    index.add_pack(&PackRecord {
        id: PackId([1; PackId::LEN]),
        length: 1 << 20,
        entries: vec![PackEntry {
            id,
            offset: 8,
            length: 100,
            raw_length: 100,
            encoding: encoding::ZSTD,
            key_id: KeyId([0; KeyId::LEN]),
        }],
    });
    index
}

/// A session of `tree` (or stream) source "data" whose previous store holds `base` whole.
fn session_after(dir: &Path, tree: bool, base: &[u8]) -> (DeltaSession, ChunkId) {
    let open = |d: &Path| {
        if tree {
            DeltaSession::open_tree(d, "data", &key()).unwrap()
        } else {
            DeltaSession::open(d, "data", &key()).unwrap()
        }
    };
    let id = key().chunk_id(base);
    let mut s = open(dir);
    s.prepare(base);
    s.record_full(id).unwrap();
    s.finish().unwrap().commit().unwrap();
    (open(dir), id)
}

#[test]
fn a_tree_recipe_is_kept_under_an_eighth_of_its_chunk_and_a_stream_recipe_under_half() {
    let base = lines(4000, |_| false);
    let few = lines(4000, |i| i % 100 == 0);
    let many = lines(4000, |i| (i / 10) % 4 == 0);
    let tmp = tempfile::tempdir().unwrap();
    let (mut tree, bid) = session_after(tmp.path(), true, &base);
    let index = index_with(bid);
    for (data, kept) in [(&few, true), (&many, false)] {
        tree.prepare(data);
        let got = tree.diff(data, key().chunk_id(data), &index).unwrap();
        assert_eq!(
            got.is_some(),
            kept,
            "tree recipe for {} changed lines",
            data.len()
        );
        if let Some((b, recipe)) = got {
            assert_eq!(b, bid);
            assert!(recipe.len() * TREE_LIMIT <= data.len());
            let rebuilt = ibs_repo::delta::apply(&recipe, &base, &key()).unwrap();
            assert_eq!(rebuilt, *data);
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let (mut stream, _) = session_after(tmp.path(), false, &base);
    stream.prepare(&many);
    assert!(
        stream
            .diff(&many, key().chunk_id(&many), &index)
            .unwrap()
            .is_some(),
        "a quarter of the lines changed is under a stream's limit"
    );
}

#[test]
fn a_carried_record_is_byte_identical_to_one_hashed_again() {
    let base = lines(3000, |_| false);
    let tmp = tempfile::tempdir().unwrap();
    let (mut carried, id) = session_after(tmp.path(), true, &base);
    assert!(carried.carry(id).unwrap());
    assert!(!carried.carry(key().chunk_id(b"unknown")).unwrap());
    carried.finish().unwrap();
    let carried = std::fs::read(tmp.path().join("tree/data.sig.new")).unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let (s, _) = session_after(fresh.path(), true, &base);
    drop(s);
    let hashed = std::fs::read(fresh.path().join("tree/data.sig")).unwrap();
    assert_eq!(carried, hashed);
}

#[test]
fn a_damaged_record_is_never_a_base_nor_carried() {
    let base = lines(4000, |_| false);
    let few = lines(4000, |i| i % 100 == 0);
    let tmp = tempfile::tempdir().unwrap();
    let (s, bid) = session_after(tmp.path(), true, &base);
    drop(s);
    let path = tmp.path().join("tree/data.sig");
    let mut raw = std::fs::read(&path).unwrap();
    // One block length in the record's body: a copy would land at the wrong offset.
    raw[8 + 40 + 4 * 10] ^= 1;
    std::fs::write(&path, &raw).unwrap();
    let mut s = DeltaSession::open_tree(tmp.path(), "data", &key()).unwrap();
    assert!(!s.carry(bid).unwrap());
    s.prepare(&few);
    let got = s
        .diff(&few, key().chunk_id(&few), &index_with(bid))
        .unwrap();
    assert!(got.is_none(), "a damaged record was used as a base");
}

#[test]
fn tree_and_stream_signatures_of_one_source_differ() {
    let base = lines(500, |_| false);
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    drop(session_after(a.path(), true, &base));
    drop(session_after(b.path(), false, &base));
    let tree = std::fs::read(a.path().join("tree/data.sig")).unwrap();
    let stream = std::fs::read(b.path().join("data.sig")).unwrap();
    assert_eq!(tree.len(), stream.len());
    assert_eq!(
        tree[..8 + 40],
        stream[..8 + 40],
        "same header and record head"
    );
    assert_ne!(tree[8 + 40..], stream[8 + 40..]);
}
