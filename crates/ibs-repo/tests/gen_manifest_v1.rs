//! Writes the format-1 manifest fixture with the code of this commit (run once, by hand).
use ibs_repo::crypto::SymKey;
use ibs_repo::ids::ChunkId;
use ibs_repo::manifest::*;

#[test]
#[ignore]
fn write_manifest_v1_fixture() {
    let dk = SymKey::from_bytes(&[0x11; 32]).unwrap();
    let mk = SymKey::from_bytes(&[0x22; 32]).unwrap();
    let id = "20261203T094500Z-0a1b2c3d";
    let catalog = Catalog {
        format_version: 1,
        backup_id: id.into(),
        repository_id: "ab".repeat(16),
        started: "2026-12-03T09:45:00Z".into(),
        finished: "2026-12-03T09:46:40Z".into(),
        duration_ms: 100_000,
        status: BackupStatus::Succeeded,
        sources: vec![SourceSummary {
            name: "etc".into(),
            kind: "dir".into(),
            status: BackupStatus::Succeeded,
            files: 3,
            dirs: 1,
            bytes: 1234,
            errors: 0,
            changed_while_read: 0,
            essential: true,
        }],
        encryption_mode: "certificate".into(),
        certificate_thumbprint: Some("AB".repeat(20)),
        data_key_id: "cd".repeat(16),
        bytes_read: 1234,
        bytes_new: 1234,
        bytes_stored: 2000,
        hostname: "host-a".into(),
        ibs_version: "0.1.0".into(),
        recovery_ready: Some(true),
    };
    let tree = TreePart {
        sources: vec![SourceTree {
            name: "etc".into(),
            kind: "dir".into(),
            origin: "/etc".into(),
            tree: vec![hex::encode([9u8; 32])],
        }],
        errors: vec![],
    };
    let m = Manifest::seal_with_sources(
        catalog,
        &tree,
        &[("etc".into(), vec![ChunkId([9; 32]), ChunkId([8; 32])])],
        &dk,
        &mk,
    );
    std::fs::write(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/manifest-v1.bin"),
        m.to_bytes(),
    )
    .unwrap();
}
