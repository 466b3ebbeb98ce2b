//! Regenerates the committed seed corpus (`fuzz/corpus/<target>/`) and the fixed test identity
//! (`fuzz/fixtures/identity.pfx`, password `fuzz`) with the real encoders:
//! `cargo run --manifest-path fuzz/Cargo.toml --example gen_corpus`.
//! Each target gets a few valid objects and a few damaged ones (truncated, flipped, empty).
use ibs_keys::{generate_self_signed, seal_envelope, PrivateIdentity};
use ibs_repo::config::{Encryption, RepoConfig};
use ibs_repo::crypto::SymKey;
use ibs_repo::ids::{ChunkId, KeyId, PackId};
use ibs_repo::index::{encode_segment, PackRecord};
use ibs_repo::manifest::{BackupStatus, Catalog, Manifest, SourceTree, TreePart};
use ibs_repo::pack::{encoding, PackBuilder};
use ibs_repo::tree::{header_line, EntryKind, TreeEntry};
use std::path::Path;

fn put(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// The valid object plus truncated, bit-flipped and empty variants.
fn put_variants(target: &str, name: &str, bytes: &[u8]) {
    put(target, &format!("{name}-valid"), bytes);
    put(
        target,
        &format!("{name}-truncated"),
        &bytes[..bytes.len() / 2],
    );
    let mut flipped = bytes.to_vec();
    let mid = flipped.len() / 3;
    flipped[mid] ^= 0x40;
    put(target, &format!("{name}-flipped"), &flipped);
}

fn main() {
    let key = SymKey::from_bytes(&[7u8; 32]).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    std::fs::create_dir_all(&fixtures).unwrap();
    let pfx_path = fixtures.join("identity.pfx");
    let identity = match std::fs::read(&pfx_path) {
        Ok(b) => PrivateIdentity::from_pfx(&b, "fuzz").unwrap(),
        Err(_) => {
            let id = generate_self_signed("ibs fuzz identity", 2048, 36500, 1_800_000_000).unwrap();
            std::fs::write(&pfx_path, id.to_pfx("fuzz").unwrap()).unwrap();
            id
        }
    };

    // pack: a whole pack; and header plaintexts (4-byte header offset + plaintext).
    let mut b = PackBuilder::new(0);
    b.add(
        ChunkId([1; 32]),
        encoding::RAW,
        6,
        KeyId([9; 16]),
        b"abcdef",
    );
    b.add(ChunkId([2; 32]), encoding::ZSTD, 10, KeyId([9; 16]), b"xyz");
    let (_, pack, entries) = b.finish(&key);
    put_variants("pack", "pack", &pack);
    let mut hdr = 4096u32.to_le_bytes().to_vec();
    hdr.extend_from_slice(&1u16.to_le_bytes());
    hdr.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in &entries {
        e.encode(&mut hdr);
    }
    put("pack", "header-plaintext", &hdr);
    let mut huge = 4096u32.to_le_bytes().to_vec();
    huge.extend_from_slice(&1u16.to_le_bytes());
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    put("pack", "header-huge-count", &huge);
    put("pack", "empty", b"");

    // index: a segment; and a body plaintext (sealed compressed by the target).
    let rec = PackRecord {
        id: PackId([3; 32]),
        length: pack.len() as u64,
        entries: entries.clone(),
    };
    let (_, seg) = encode_segment(std::slice::from_ref(&rec), &key);
    put_variants("index", "segment", &seg);
    let mut body = 1u16.to_le_bytes().to_vec();
    body.extend_from_slice(&1u32.to_le_bytes());
    body.extend_from_slice(&rec.id.0);
    body.extend_from_slice(&rec.length.to_le_bytes());
    body.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in &entries {
        e.encode(&mut body);
    }
    put("index", "body-plaintext", &body);
    let mut bomb = 1u16.to_le_bytes().to_vec();
    bomb.extend_from_slice(&u32::MAX.to_le_bytes());
    put("index", "body-huge-count", &bomb);

    // manifest: a sealed manifest (id as in the target) and a tree-part JSON.
    let id = "20260101T000000Z-fuzz";
    let catalog = Catalog {
        format_version: 1,
        backup_id: id.into(),
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
        recovery_ready: Some(true),
        deployment_id: None,
        format_revision: None,
    };
    let tree = TreePart {
        sources: vec![SourceTree {
            name: "etc".into(),
            kind: "folder".into(),
            origin: "/etc".into(),
            tree: vec![ChunkId([5; 32]).to_hex()],
        }],
        errors: vec!["x: permission denied".into()],
    };
    let mut refs = vec![ChunkId([5; 32]), ChunkId([1; 32])];
    let m = Manifest::seal(catalog, &tree, &mut refs, &key, &key);
    put_variants("manifest", "manifest", &m.to_bytes());
    put(
        "manifest",
        "tree-part-json",
        &serde_json::to_vec(&tree).unwrap(),
    );

    // tree: a header and one entry of each kind.
    let mut t = header_line();
    for (path, kind, target) in [
        (&b"dir"[..], EntryKind::Dir, None),
        (&b"dir/f\xff"[..], EntryKind::File, None),
        (&b"dir/l"[..], EntryKind::Symlink, Some(b"../f".to_vec())),
        (&b"dir/h"[..], EntryKind::HardLink, Some(b"dir/f\xff".to_vec())),
        (&b"dir/p"[..], EntryKind::Fifo, None),
        (&b"dir/c"[..], EntryKind::CharDevice, None),
    ] {
        t.extend(
            TreeEntry {
                path: path.to_vec(),
                kind,
                mode: 0o644,
                mtime_ns: 1,
                size: 3,
                chunks: vec![ChunkId([1; 32])],
                target,
                rdev: if kind == EntryKind::CharDevice { 0x103 } else { 0 },
                link_leader: kind == EntryKind::File,
                xattrs: vec![ibs_repo::tree::Xattr {
                    name: b"user.note".to_vec(),
                    value: b"hello".to_vec(),
                }],
                ..Default::default()
            }
            .to_line(),
        );
    }
    put_variants("tree", "stream", &t);

    // repo_config
    let c = RepoConfig::new(
        "2026-01-01T00:00:00Z".into(),
        Encryption::Certificate {
            current: "AB".repeat(20),
            certificates: vec!["AB".repeat(20)],
        },
        key.check_value("metadata"),
    );
    put_variants("repo_config", "config", &c.to_bytes());
    put(
        "repo_config",
        "legacy",
        &RepoConfig::new("x".into(), Encryption::LegacyKey, "00".into()).to_bytes(),
    );
    put(
        "repo_config",
        "version-9",
        br#"{"format":"ibs-repository","version":9}"#,
    );

    // envelope: one for the fixed identity, one for another certificate.
    let env = seal_envelope(&[identity.certificate()], &[0x42; 32]).unwrap();
    put_variants("envelope", "for-identity", &env);
    let other = generate_self_signed("someone else", 2048, 1, 1_800_000_000).unwrap();
    let env2 = seal_envelope(&[other.certificate(), identity.certificate()], &[1; 48]).unwrap();
    put("envelope", "two-recipients", &env2);

    // pfx
    put_variants("pfx", "identity", &std::fs::read(&pfx_path).unwrap());

    // controller_config
    put(
        "controller_config",
        "example",
        include_bytes!("../docs/examples/ibs.toml"),
    );
    put(
        "controller_config",
        "minimal",
        b"listen = \"127.0.0.1:9440\"\ntick_seconds = 5\n[[component]]\nname = \"etc\"\nkind = \"folder\"\npaths = [\"/etc\"]\n",
    );
    put("controller_config", "bad-listen", b"listen = \"nowhere\"\n");
    put("controller_config", "unknown-key", b"oracle = 1\n");

    // api_bodies
    for (name, body) in [
        (
            "location",
            r#"{"path":"/srv/backup","username":"u","password":"p","frequency_hours":24,"retention_days":30,"scheduler_enabled":true}"#,
        ),
        (
            "location-smb",
            r#"{"path":"smb://10.0.0.1/share/x","username":"DOM\\u","password":"s"}"#,
        ),
        (
            "components",
            r#"[{"name":"etc","kind":"folder","paths":["/etc"]},{"name":"db","kind":"command","backup":"pg_dump x","password_file":"/etc/pw"}]"#,
        ),
        ("begin", r#"{"operation":"update"}"#),
        ("end", r#"{"outcome":"success"}"#),
        ("prune", r#"{"dry_run":true}"#),
        ("token", r#"{"role":"reader","label":"ci"}"#),
        (
            "restore",
            r#"{"component":"etc","target":"/tmp/r","force":false,"pfx":"AAAA","pfx_password":"x"}"#,
        ),
        ("broken", r#"{"path":"#),
    ] {
        put("api_bodies", name, body.as_bytes());
    }

    // delta: u16le base length ‖ base ‖ recipe, a recipe that applies and damaged variants.
    let base = b"1\t1\t0\tfiller\n2\t1\t0\tfiller\n3\t1\t0\tfiller\n".repeat(4);
    let mut target = base.clone();
    target[5] = b'9';
    let mut b = ibs_repo::delta::RecipeBuilder::new(ibs_repo::delta::RecipeHeader {
        base: key.chunk_id(&base),
        target: key.chunk_id(&target),
        target_length: target.len() as u32,
    });
    b.copy(0, 5);
    b.insert(b"9");
    b.copy(6, (base.len() - 6) as u64);
    let mut input = (base.len() as u16).to_le_bytes().to_vec();
    input.extend_from_slice(&base);
    input.extend_from_slice(&b.finish());
    put_variants("delta", "recipe", &input);
}
