//! Compatibility: a format-1 manifest, committed as the code before manifest version 2 wrote it
//! (`fixtures/manifest-v1.bin`, sealed with the fixed keys below), still reads in full.

use ibs_repo::crypto::SymKey;
use ibs_repo::ids::ChunkId;
use ibs_repo::manifest::{BackupStatus, Manifest, RefsPart, MANIFEST_V1};

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
    let RefsPart::Inline(refs) = m.open_refs_part(&mk).unwrap() else {
        panic!("a v1 manifest has inline refs")
    };
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
    assert!(e.open_refs_part(&mk).is_ok());
}

/// The version-3 fixture (`fixtures/manifest-v3/`): a manifest and the reference segments it
/// lists, sealed with the fixed keys above by the build that introduced version 3.
mod v3 {
    use super::*;
    use ibs_repo::ids::SegmentId;
    use ibs_repo::manifest::{Catalog, SourceSummary, SourceTree, TreePart};
    use ibs_repo::refseg;
    use std::path::PathBuf;

    const ID3: &str = "20261205T001500Z-0b1c2d3e";

    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/manifest-v3")
    }

    pub(super) fn keys() -> (SymKey, SymKey) {
        (
            SymKey::from_bytes(&[0x11; 32]).unwrap(),
            SymKey::from_bytes(&[0x22; 32]).unwrap(),
        )
    }

    /// The references the fixture holds: source "etc" 1500 ids (two segments or more),
    /// source "db" 3 ids, source "empty" none.
    pub(super) fn lists() -> Vec<(String, Vec<ChunkId>)> {
        let make = |seed: u8, n: u32| {
            let mut v: Vec<ChunkId> = (0..n)
                .map(|i| {
                    ChunkId(*blake3::hash(&[&[seed][..], &i.to_le_bytes()].concat()).as_bytes())
                })
                .collect();
            v.sort_unstable();
            v
        };
        vec![
            ("etc".into(), make(1, 1500)),
            ("db".into(), make(2, 3)),
            ("empty".into(), vec![]),
        ]
    }

    #[test]
    fn a_format_3_manifest_and_its_segments_still_read() {
        let (dk, mk) = keys();
        let bytes = std::fs::read(dir().join("manifest.bin")).unwrap();
        let m = Manifest::from_bytes(ID3, &bytes).unwrap();
        assert_eq!(m.version(), 3);
        assert!(m.catalog_authenticated());
        assert_eq!(m.catalog.hostname, "host-c");
        assert_eq!(m.catalog.format_revision, Some(2));
        assert_eq!(m.open_tree(&dk).unwrap().sources[0].origin, "/etc");
        let RefsPart::Segmented(sources) = m.open_refs_part(&mk).unwrap() else {
            panic!("version 3 lists segments")
        };
        let want = lists();
        assert_eq!(sources.len(), want.len());
        for (s, (name, ids)) in sources.iter().zip(&want) {
            assert_eq!((&s.name, s.chunks), (name, ids.len() as u64));
            let mut got = Vec::new();
            for seg in &s.segments {
                let obj = std::fs::read(dir().join(seg.to_hex())).unwrap();
                got.extend(refseg::decode(seg, &obj, &mk).unwrap());
            }
            assert_eq!(&got, ids, "{name}");
            // The cutting rule of this build gives the segments the fixture's writer gave.
            let now: Vec<SegmentId> = refseg::split(ids)
                .into_iter()
                .map(|p| refseg::id_of(p, &mk))
                .collect();
            assert_eq!(now, s.segments, "{name}");
        }
        assert!(sources[0].segments.len() >= 2);
        assert_eq!(m.to_bytes(), bytes);
    }

    /// Writes the fixture (once: it refuses to overwrite). `cargo test -p ibs-repo --test
    /// manifest_compat -- --ignored generate`
    #[test]
    #[ignore]
    fn generate() {
        let d = dir();
        assert!(!d.exists(), "a fixture is never regenerated");
        std::fs::create_dir_all(&d).unwrap();
        let (dk, mk) = keys();
        let mut segs = Vec::new();
        for (name, ids) in lists() {
            let mut ss = Vec::new();
            for part in refseg::split(&ids) {
                let (id, obj) = refseg::encode(part, &mk);
                std::fs::write(d.join(id.to_hex()), obj).unwrap();
                ss.push(id);
            }
            segs.push(ibs_repo::manifest::SourceSegments {
                name,
                chunks: ids.len() as u64,
                segments: ss,
                ..Default::default()
            });
        }
        let catalog = Catalog {
            format_version: 3,
            backup_id: ID3.into(),
            repository_id: "00112233445566778899aabbccddeeff".into(),
            started: "2026-12-05T00:15:00Z".into(),
            finished: "2026-12-05T00:16:40Z".into(),
            duration_ms: 100_000,
            status: BackupStatus::Succeeded,
            sources: vec![SourceSummary {
                name: "etc".into(),
                kind: "dir".into(),
                status: BackupStatus::Succeeded,
                files: 1500,
                dirs: 1,
                bytes: 150_000,
                errors: 0,
                changed_while_read: 0,
                essential: true,
                skipped: 0,
                server_version: None,
            }],
            encryption_mode: "certificate".into(),
            certificate_thumbprint: Some("AB".repeat(20)),
            data_key_id: "0123456789abcdef0123456789abcdef".into(),
            bytes_read: 150_000,
            bytes_new: 150_000,
            bytes_stored: 200_000,
            hostname: "host-c".into(),
            ibs_version: "0.1.0".into(),
            recovery_ready: Some(true),
            deployment_id: Some("9f".repeat(16)),
            format_revision: Some(2),
        };
        let tree = TreePart {
            sources: vec![SourceTree {
                name: "etc".into(),
                kind: "dir".into(),
                origin: "/etc".into(),
                tree: vec![ChunkId([7; 32]).to_hex()],
            }],
            errors: vec![],
        };
        let m = Manifest::seal_with_segments_v3(catalog, &tree, &segs, &dk, &mk);
        std::fs::write(d.join("manifest.bin"), m.to_bytes()).unwrap();
    }
}

/// The version-4 fixture (`fixtures/manifest-v4/`): a manifest whose source "etc" lists base
/// segments (the v3 fixture's cut of its list) and a delta stored as added and removed
/// segments, "db" segments without a delta, "empty" nothing, and the segments it lists, sealed with the fixed keys above by the
/// build that introduced version 4 (ADR 0046).
mod v4 {
    use super::v3::{keys, lists};
    use super::*;
    use ibs_repo::ids::SegmentId;
    use ibs_repo::manifest::{Catalog, SourceSegments, SourceSummary, SourceTree, TreePart};
    use ibs_repo::refseg;
    use std::path::PathBuf;

    const ID4: &str = "20261206T010000Z-0c1d2e3f";

    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/manifest-v4")
    }

    /// The references of "etc" in the fixture: its base (the v3 list) without every 100th id,
    /// with 20 new ids.
    fn etc_now() -> (Vec<ChunkId>, Vec<ChunkId>, Vec<ChunkId>) {
        let base = lists().remove(0).1;
        let removed: Vec<ChunkId> = base.iter().step_by(100).copied().collect();
        let mut added: Vec<ChunkId> = (0..20u32)
            .map(|i| ChunkId(*blake3::hash(&[&[3u8][..], &i.to_le_bytes()].concat()).as_bytes()))
            .collect();
        added.sort_unstable();
        let mut now: Vec<ChunkId> = base
            .iter()
            .filter(|c| removed.binary_search(c).is_err())
            .chain(&added)
            .copied()
            .collect();
        now.sort_unstable();
        (now, added, removed)
    }

    fn read_list(segs: &[SegmentId], mk: &SymKey) -> Vec<ChunkId> {
        let mut out = Vec::new();
        for seg in segs {
            let obj = std::fs::read(dir().join(seg.to_hex())).unwrap();
            out.extend(refseg::decode(seg, &obj, mk).unwrap());
        }
        out
    }

    fn read_source(s: &SourceSegments, mk: &SymKey) -> Vec<ChunkId> {
        let mut base = read_list(&s.segments, mk);
        for r in &read_list(&s.removed_segments, mk) {
            let at = base.binary_search(r).expect("a removed id is in the base");
            base.remove(at);
        }
        for a in &read_list(&s.added_segments, mk) {
            let at = base
                .binary_search(a)
                .expect_err("an added id is not in the base");
            base.insert(at, *a);
        }
        base
    }

    #[test]
    fn a_format_4_manifest_its_delta_and_its_segments_still_read() {
        let (dk, mk) = keys();
        let bytes = std::fs::read(dir().join("manifest.bin")).unwrap();
        let m = Manifest::from_bytes(ID4, &bytes).unwrap();
        assert_eq!(m.version(), 4);
        assert!(m.catalog_authenticated());
        assert_eq!(m.catalog.hostname, "host-d");
        assert_eq!(m.catalog.format_revision, Some(3));
        assert_eq!(m.open_tree(&dk).unwrap().sources[0].origin, "/etc");
        let RefsPart::Segmented(sources) = m.open_refs_part(&mk).unwrap() else {
            panic!("version 4 lists segments")
        };
        let (etc, added, removed) = etc_now();
        let mut want = lists();
        want[0].1 = etc;
        assert_eq!(sources.len(), want.len());
        assert_eq!(
            (
                read_list(&sources[0].added_segments, &mk),
                read_list(&sources[0].removed_segments, &mk)
            ),
            (added, removed)
        );
        assert!(sources[1..].iter().all(|s| !s.has_delta()));
        for (s, (name, ids)) in sources.iter().zip(&want) {
            assert_eq!((&s.name, s.chunks), (name, ids.len() as u64));
            assert_eq!(&read_source(s, &mk), ids, "{name}");
        }
        // The base of "etc" is the cut of its old list by this build's rule.
        let base = lists().remove(0).1;
        let cut: Vec<SegmentId> = refseg::split(&base)
            .into_iter()
            .map(|p| refseg::id_of(p, &mk))
            .collect();
        assert_eq!(cut, sources[0].segments);
        assert_eq!(m.to_bytes(), bytes);
    }

    /// Writes the fixture (once: it refuses to overwrite). `cargo test -p ibs-repo --test
    /// manifest_compat -- --ignored generate`
    #[test]
    #[ignore]
    fn generate() {
        let d = dir();
        assert!(!d.exists(), "a fixture is never regenerated");
        std::fs::create_dir_all(&d).unwrap();
        let (dk, mk) = keys();
        let mut segs = Vec::new();
        for (name, ids) in lists() {
            let mut ss = Vec::new();
            for part in refseg::split(&ids) {
                let (id, obj) = refseg::encode(part, &mk);
                std::fs::write(d.join(id.to_hex()), obj).unwrap();
                ss.push(id);
            }
            segs.push(SourceSegments {
                name,
                chunks: ids.len() as u64,
                segments: ss,
                ..Default::default()
            });
        }
        let (etc, added, removed) = etc_now();
        segs[0].chunks = etc.len() as u64;
        let etc = &mut segs[0];
        for (list, out) in [
            (added, &mut etc.added_segments),
            (removed, &mut etc.removed_segments),
        ] {
            for part in refseg::split(&list) {
                let (id, obj) = refseg::encode(part, &mk);
                std::fs::write(d.join(id.to_hex()), obj).unwrap();
                out.push(id);
            }
        }
        let catalog = Catalog {
            format_version: 4,
            backup_id: ID4.into(),
            repository_id: "00112233445566778899aabbccddeeff".into(),
            started: "2026-12-06T01:00:00Z".into(),
            finished: "2026-12-06T01:01:40Z".into(),
            duration_ms: 100_000,
            status: BackupStatus::Succeeded,
            sources: vec![SourceSummary {
                name: "etc".into(),
                kind: "dir".into(),
                status: BackupStatus::Succeeded,
                files: 1505,
                dirs: 1,
                bytes: 150_500,
                errors: 0,
                changed_while_read: 0,
                essential: true,
                skipped: 0,
                server_version: None,
            }],
            encryption_mode: "certificate".into(),
            certificate_thumbprint: Some("AB".repeat(20)),
            data_key_id: "0123456789abcdef0123456789abcdef".into(),
            bytes_read: 150_500,
            bytes_new: 2_000,
            bytes_stored: 3_000,
            hostname: "host-d".into(),
            ibs_version: "0.1.0".into(),
            recovery_ready: Some(true),
            deployment_id: Some("9f".repeat(16)),
            format_revision: Some(3),
        };
        let tree = TreePart {
            sources: vec![SourceTree {
                name: "etc".into(),
                kind: "dir".into(),
                origin: "/etc".into(),
                tree: vec![ChunkId([7; 32]).to_hex()],
            }],
            errors: vec![],
        };
        let m = Manifest::seal_with_segments(catalog, &tree, &segs, &dk, &mk);
        std::fs::write(d.join("manifest.bin"), m.to_bytes()).unwrap();
    }
}
