//! Unit tests of the manifest encoding (versions, AAD binding, refs).
use super::*;
use crate::repository::DELTA_MAX_IDS;

fn catalog(id: &str) -> Catalog {
    Catalog {
        format_version: 1,
        backup_id: id.into(),
        repository_id: String::new(),
        started: String::new(),
        finished: String::new(),
        duration_ms: 0,
        status: BackupStatus::Succeeded,
        sources: vec![],
        encryption_mode: "certificate".into(),
        certificate_thumbprint: None,
        data_key_id: String::new(),
        bytes_read: 0,
        bytes_new: 0,
        bytes_stored: 0,
        hostname: String::new(),
        ibs_version: String::new(),
        recovery_ready: None,
        deployment_id: None,
        format_revision: None,
    }
}

/// The inline references of a v1 or v2 manifest.
fn inline(m: &Manifest, mk: &SymKey) -> Result<Refs> {
    match m.open_refs_part(mk)? {
        RefsPart::Inline(r) => Ok(r),
        RefsPart::Segmented(_) => panic!("segmented refs"),
    }
}

#[test]
fn refs_v1_and_v2_both_open() {
    let (dk, mk) = (SymKey::random(), SymKey::random());
    let id = "20270101T000000Z-0a1b2c3d";
    let (a, b, c) = (ChunkId([1; 32]), ChunkId([2; 32]), ChunkId([3; 32]));
    let m = Manifest::seal_with_sources(
        catalog(id),
        &TreePart::default(),
        &[("docs".into(), vec![c, a]), ("logs".into(), vec![a, b, b])],
        &dk,
        &mk,
    );
    let back = Manifest::from_bytes(id, &m.to_bytes()).unwrap();
    let r = inline(&back, &mk).unwrap();
    assert_eq!(r.all, vec![a, b, c]);
    let s = r.sources.unwrap();
    assert_eq!(
        (s[0].name.as_str(), s[0].chunks.clone()),
        ("docs", vec![a, c])
    );
    assert_eq!(
        (s[1].name.as_str(), s[1].chunks.clone()),
        ("logs", vec![a, b])
    );

    // A v1 manifest (written before per-source refs) still opens, without attribution.
    let old = Manifest::seal(catalog(id), &TreePart::default(), &mut vec![b, a], &dk, &mk);
    let r = inline(&old, &mk).unwrap();
    assert_eq!((r.all, r.sources), (vec![a, b], None));
    assert!(old.open_refs_part(&SymKey::random()).is_err());
    // Hostile v2 bodies are refused without large allocations.
    assert!(decode_refs_v2(&[2, 0, 255, 255, 255, 255]).is_err());
    let mut body = encode_refs_v2(&[("x".into(), vec![a])]);
    let n = body.len();
    body[n - 4..].copy_from_slice(&9u32.to_le_bytes());
    assert!(decode_refs_v2(&body).is_err());
}

#[test]
fn a_v2_catalog_is_authenticated_by_both_sealed_parts() {
    let (dk, mk) = (SymKey::random(), SymKey::random());
    let id = "20270101T000000Z-0a1b2c3d";
    let mut c = catalog(id);
    c.hostname = "host-a".into();
    c.started = "2027-01-01T00:00:00Z".into();
    let sources = [("docs".to_string(), vec![ChunkId([1; 32])])];
    let m = Manifest::seal_with_sources(c, &TreePart::default(), &sources, &dk, &mk);
    let bytes = m.to_bytes();
    assert_eq!(u16::from_le_bytes([bytes[6], bytes[7]]), MANIFEST_V2);
    let back = Manifest::from_bytes(id, &bytes).unwrap();
    assert!(back.catalog_authenticated());
    assert_eq!(back.catalog.format_version, 2);
    back.open_refs_part(&mk).unwrap();
    back.open_tree(&dk).unwrap();
    let edit = |from: &str, to: &str| {
        let (from, to) = (from.as_bytes(), to.as_bytes());
        let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
        let mut b = bytes.clone();
        b[at..at + to.len()].copy_from_slice(to);
        b
    };
    for forged in [
        edit("host-a", "host-b"),
        edit("2027-01-01T00:00:00Z", "2020-01-01T00:00:00Z"),
    ] {
        let f = Manifest::from_bytes(id, &forged).unwrap();
        let e = f.open_refs_part(&mk).unwrap_err().to_string();
        assert!(e.contains("changed after the backup was written"), "{e}");
        assert!(f.open_tree(&dk).is_err());
    }
    // Claiming version 1 (header and catalog) does not shed the binding.
    let mut down = edit("\"format_version\":2", "\"format_version\":1");
    down[6..8].copy_from_slice(&MANIFEST_V1.to_le_bytes());
    let d = Manifest::from_bytes(id, &down).unwrap();
    assert!(!d.catalog_authenticated());
    assert!(d.open_refs_part(&mk).is_err() && d.open_tree(&dk).is_err());
}

#[test]
fn a_refs_decompression_bomb_is_refused_at_the_metadata_cap() {
    use std::io::Write;
    let (dk, mk) = (SymKey::random(), SymKey::random());
    let id = "20270101T000000Z-0a1b2c3d";
    // A v1 refs body one chunk id past the cap: a multiple of 32, so a reader that stopped
    // at the cap instead of refusing would take the cut list for a valid one.
    let mut z = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    let block = vec![0u8; 1 << 20];
    let total = crate::inflate::MAX_METADATA_BODY + 32;
    let mut left = total;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        z.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    let bomb = z.finish().unwrap();
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
    let m = Manifest::from_sealed_v1(
        catalog(id),
        dk.seal(&tree_aad(id), b"{}"),
        mk.seal(&refs_aad(id), &bomb),
    );
    let e = m.open_refs_part(&mk).unwrap_err().to_string();
    assert!(e.contains("more than 1073741824 bytes"), "{e}");
}

#[test]
fn a_v3_manifest_names_its_segments_and_binds_its_catalog() {
    let (dk, mk) = (SymKey::random(), SymKey::random());
    let id = "20270101T000000Z-0a1b2c3d";
    let mut c = catalog(id);
    c.hostname = "host-a".into();
    let sources = vec![
        SourceSegments {
            name: "docs".into(),
            chunks: 5000,
            segments: vec![SegmentId([1; 32]), SegmentId([2; 32])],
            ..SourceSegments::default()
        },
        SourceSegments {
            name: "empty".into(),
            chunks: 0,
            segments: vec![],
            ..SourceSegments::default()
        },
    ];
    let m = Manifest::seal_with_segments_v3(c, &TreePart::default(), &sources, &dk, &mk);
    let bytes = m.to_bytes();
    assert_eq!(u16::from_le_bytes([bytes[6], bytes[7]]), MANIFEST_V3);
    let back = Manifest::from_bytes(id, &bytes).unwrap();
    assert_eq!((back.version(), back.catalog.format_version), (3, 3));
    assert!(back.catalog_authenticated());
    assert_eq!(
        back.open_refs_part(&mk).unwrap(),
        RefsPart::Segmented(sources.clone())
    );
    back.open_tree(&dk).unwrap();
    // An edited catalog, or the manifest passed off as version 2, does not open.
    let at = bytes.windows(6).position(|w| w == b"host-a").unwrap();
    let mut forged = bytes.clone();
    forged[at..at + 6].copy_from_slice(b"host-b");
    let f = Manifest::from_bytes(id, &forged).unwrap();
    assert!(f.open_refs_part(&mk).is_err() && f.open_tree(&dk).is_err());
    let at = bytes
        .windows(18)
        .position(|w| w == b"\"format_version\":3")
        .unwrap();
    let mut down = bytes.clone();
    down[at + 17] = b'2';
    down[6..8].copy_from_slice(&MANIFEST_V2.to_le_bytes());
    let d = Manifest::from_bytes(id, &down).unwrap();
    assert!(d.open_refs_part(&mk).is_err() && d.open_tree(&dk).is_err());
    // Hostile v3 bodies are refused without large allocations.
    assert!(decode_refs_v3(&[3, 0, 255, 255, 255, 255]).is_err());
    let mut body = encode_refs_v3(&sources[..1]);
    body.truncate(body.len() - 1);
    assert!(decode_refs_v3(&body).is_err());
}

fn v4_sources() -> Vec<SourceSegments> {
    vec![
        SourceSegments {
            name: "docs".into(),
            chunks: 5001,
            segments: vec![SegmentId([1; 32]), SegmentId([2; 32])],
            added_segments: vec![SegmentId([7; 32]), SegmentId([9; 32])],
            removed_segments: vec![SegmentId([8; 32])],
        },
        SourceSegments {
            name: "empty".into(),
            ..SourceSegments::default()
        },
    ]
}

#[test]
fn a_v4_manifest_carries_its_delta_and_binds_its_catalog() {
    let (dk, mk) = (SymKey::random(), SymKey::random());
    let id = "20270101T000000Z-0a1b2c3d";
    let mut c = catalog(id);
    c.hostname = "host-a".into();
    let sources = v4_sources();
    let m = Manifest::seal_with_segments(c, &TreePart::default(), &sources, &dk, &mk);
    let bytes = m.to_bytes();
    assert_eq!(u16::from_le_bytes([bytes[6], bytes[7]]), MANIFEST_VERSION);
    let back = Manifest::from_bytes(id, &bytes).unwrap();
    assert_eq!((back.version(), back.catalog.format_version), (4, 4));
    assert_eq!(
        back.open_refs_part(&mk).unwrap(),
        RefsPart::Segmented(sources.clone())
    );
    back.open_tree(&dk).unwrap();
    // An edited catalog, or the manifest passed off as version 3, does not open.
    let at = bytes.windows(6).position(|w| w == b"host-a").unwrap();
    let mut forged = bytes.clone();
    forged[at..at + 6].copy_from_slice(b"host-b");
    let f = Manifest::from_bytes(id, &forged).unwrap();
    assert!(f.open_refs_part(&mk).is_err() && f.open_tree(&dk).is_err());
    let at = bytes
        .windows(18)
        .position(|w| w == b"\"format_version\":4")
        .unwrap();
    let mut down = bytes.clone();
    down[at + 17] = b'3';
    down[6..8].copy_from_slice(&MANIFEST_V3.to_le_bytes());
    let d = Manifest::from_bytes(id, &down).unwrap();
    assert!(d.open_refs_part(&mk).is_err() && d.open_tree(&dk).is_err());
    // A version this build does not know is refused by name.
    let mut newer = bytes.clone();
    newer[6..8].copy_from_slice(&5u16.to_le_bytes());
    assert!(matches!(
        Manifest::from_bytes(id, &newer),
        Err(RepoError::UnsupportedVersion { found: 5, .. })
    ));
}

#[test]
fn hostile_v4_bodies_are_refused_before_the_segments_are_read() {
    let good = v4_sources();
    assert_eq!(decode_refs_v4(&encode_refs_v4(&good)).unwrap(), good);
    // Huge counts, truncation.
    assert!(decode_refs_v4(&[4, 0, 255, 255, 255, 255]).is_err());
    let mut body = encode_refs_v4(&good);
    body.truncate(body.len() - 1);
    assert!(decode_refs_v4(&body).is_err());
    let refused = |f: &dyn Fn(&mut SourceSegments)| {
        let mut s = good.clone();
        f(&mut s[0]);
        decode_refs_v4(&encode_refs_v4(&s)).unwrap_err()
    };
    // A delta listing more segments than its bound has ids (each segment holds one at least).
    let e = refused(&|s| s.added_segments = vec![SegmentId([7; 32]); DELTA_MAX_IDS + 1]);
    assert!(e.contains("more than its bound"), "{e}");
    refused_not(&good, &|s| {
        s.added_segments = vec![SegmentId([7; 32]); DELTA_MAX_IDS - 1];
    });
}

/// A body the decoder accepts (what it cannot check waits for the segments).
fn refused_not(good: &[SourceSegments], f: &dyn Fn(&mut SourceSegments)) {
    let mut s = good.to_vec();
    f(&mut s[0]);
    assert_eq!(decode_refs_v4(&encode_refs_v4(&s)).unwrap(), s);
}
