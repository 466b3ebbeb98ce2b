//! Compatibility: a format-1 manifest, committed as the code before manifest version 2 wrote it
//! (`fixtures/manifest-v1.bin`, sealed with the fixed keys below), still reads in full.

use ibs_repo::crypto::SymKey;
use ibs_repo::ids::ChunkId;
use ibs_repo::manifest::{BackupStatus, Manifest, MANIFEST_V1};

const ID: &str = "20261203T094500Z-0a1b2c3d";
const FIXTURE: &[u8] = include_bytes!("fixtures/manifest-v1.bin");

#[test]
fn a_format_1_manifest_still_reads() {
    let dk = SymKey::from_bytes(&[0x11; 32]).unwrap();
    let mk = SymKey::from_bytes(&[0x22; 32]).unwrap();
    let m = Manifest::from_bytes(ID, FIXTURE).unwrap();
    assert_eq!(m.version(), MANIFEST_V1);
    assert!(!m.catalog_authenticated());
    let c = &m.catalog;
    assert_eq!(c.format_version, 1);
    assert_eq!(c.backup_id, ID);
    assert_eq!(
        (c.started.as_str(), c.finished.as_str()),
        ("2026-12-03T09:45:00Z", "2026-12-03T09:46:40Z")
    );
    assert_eq!(c.hostname, "host-a");
    assert_eq!(c.status, BackupStatus::Succeeded);
    assert_eq!(c.sources[0].files, 3);
    let refs = m.open_refs_detailed(&mk).unwrap();
    assert_eq!(refs.all, vec![ChunkId([8; 32]), ChunkId([9; 32])]);
    let s = refs.sources.unwrap();
    assert_eq!(s[0].name, "etc");
    let tree = m.open_tree(&dk).unwrap();
    assert_eq!(tree.sources[0].origin, "/etc");
    // The catalog is read exactly as stored: writing the object back gives the same bytes.
    assert_eq!(m.to_bytes(), FIXTURE);
    // Its catalog is not authenticated (format 1): an edit goes unnoticed, as documented.
    let mut edited = FIXTURE.to_vec();
    let at = edited.windows(6).position(|w| w == b"host-a").unwrap();
    edited[at..at + 6].copy_from_slice(b"host-b");
    let e = Manifest::from_bytes(ID, &edited).unwrap();
    assert!(e.open_refs(&mk).is_ok());
}
