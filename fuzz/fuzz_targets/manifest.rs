//! Manifests: `parse_catalog` and `Manifest::from_bytes` on the raw object, then `open_tree` /
//! `open_refs_part` (and reference segments' `refseg::decode`) with the fixed key, both on the parsed object and on parts made of the input sealed
//! with the key (tree JSON parser, refs zstd and length checks).
#![no_main]
use ibs_repo::crypto::SymKey;
use ibs_repo::manifest::{refs_aad, tree_aad, BackupStatus, Catalog, Manifest};
use libfuzzer_sys::fuzz_target;

const ID: &str = "20260101T000000Z-fuzz";

fn catalog() -> Catalog {
    Catalog {
        format_version: 1,
        backup_id: ID.into(),
        repository_id: "00".repeat(16),
        started: "2026-01-01T00:00:00Z".into(),
        finished: "2026-01-01T00:00:01Z".into(),
        duration_ms: 1000,
        status: BackupStatus::Succeeded,
        sources: vec![],
        encryption_mode: "legacy-key".into(),
        certificate_thumbprint: None,
        data_key_id: "00".repeat(16),
        bytes_read: 0,
        bytes_new: 0,
        bytes_stored: 0,
        hostname: "fuzz".into(),
        ibs_version: "0".into(),
        recovery_ready: None,
        deployment_id: None,
        format_revision: None,
    }
}

fuzz_target!(|data: &[u8]| {
    let key = SymKey::from_bytes(&[7u8; 32]).expect("32 bytes");
    let _ = Manifest::parse_catalog(ID, data);
    if let Ok(m) = Manifest::from_bytes(ID, data) {
        let _ = m.open_tree(&key);
        let _ = m.open_refs_part(&key);
    }
    let compressed = zstd::bulk::compress(data, 1).expect("zstd");
    let m = Manifest::from_sealed_v1(
        catalog(),
        key.seal(&tree_aad(ID), data),
        key.seal(&refs_aad(ID), data),
    );
    let _ = m.open_tree(&key);
    let _ = m.open_refs_part(&key);
    let m = Manifest::from_sealed_v1(
        catalog(),
        key.seal(&tree_aad(ID), data),
        key.seal(&refs_aad(ID), &compressed),
    );
    let _ = m.open_refs_part(&key);
    let _ = Manifest::from_bytes(ID, &m.to_bytes());
    // A reference segment (manifest version 3) made of the input, and one sealed around it.
    let seg = ibs_repo::ids::SegmentId([9u8; 32]);
    let _ = ibs_repo::refseg::decode(&seg, data, &key);
    let sealed = [
        ibs_repo::refseg::SEGMENT_MAGIC.as_slice(),
        &ibs_repo::refseg::SEGMENT_VERSION.to_le_bytes(),
        &key.seal(&ibs_repo::refseg::segment_aad(&seg), data),
    ]
    .concat();
    let _ = ibs_repo::refseg::decode(&seg, &sealed, &key);
    // A version-4 refs body (base segments and delta segments) made of the input, and a
    // version-4 manifest sealed around it.
    let _ = ibs_repo::manifest::decode_refs_v4(data);
    let m = Manifest::seal_with_refs_body_v4(catalog(), &Default::default(), data, &key, &key);
    let _ = m.open_refs_part(&key);
});
