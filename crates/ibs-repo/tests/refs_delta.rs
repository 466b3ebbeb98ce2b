//! Reference deltas (manifest version 4, ADR 0046): a writer given its parent's segments writes a
//! source that changed little as those segments plus a delta stored as a few segments, and a
//! reader gets back exactly the new list; the same delta again stores nothing; a delta segment a
//! prune plan marks is cut further; past the bound, or with a base segment missing or marked, the
//! source is cut afresh; a delta that does not fit its base is corrupt, naming the backup.

use ibs_keys::LegacyKey;
use ibs_repo::clock::SystemClock;
use ibs_repo::crypto::SymKey;
use ibs_repo::ids::{ChunkId, SegmentId};
use ibs_repo::manifest::{
    encode_refs_v4, BackupStatus, Catalog, Manifest, SourceSegments, TreePart,
};
use ibs_repo::{delta_bound, layout, refseg, InitKeys, Repository, DELTA_MAX_IDS};
use ibs_storage::faulty::{FaultyStorage, Op};
use ibs_storage::memory::MemoryStorage;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

fn ids(seed: u64, n: usize) -> Vec<ChunkId> {
    let mut v: Vec<ChunkId> = (0..n as u64)
        .map(|i| ChunkId(*blake3::hash(&[seed.to_le_bytes(), i.to_le_bytes()].concat()).as_bytes()))
        .collect();
    v.sort_unstable();
    v
}

fn catalog(id: &str) -> Catalog {
    Catalog {
        format_version: 0,
        backup_id: id.into(),
        repository_id: String::new(),
        started: String::new(),
        finished: String::new(),
        duration_ms: 0,
        status: BackupStatus::Succeeded,
        sources: vec![],
        encryption_mode: "legacy-key".into(),
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

async fn repo() -> (Repository, SymKey) {
    let (repo, _, mk) = counted_repo().await;
    (repo, mk)
}

async fn counted_repo() -> (Repository, Arc<FaultyStorage>, SymKey) {
    let faulty = Arc::new(FaultyStorage::new(Arc::new(MemoryStorage::new())));
    let (repo, keys) = Repository::init(
        faulty.clone(),
        Arc::new(SystemClock),
        InitKeys::Legacy(&LegacyKey::generate()),
    )
    .await
    .unwrap();
    (repo, faulty, keys.metadata)
}

/// `base` without every `step`-th id, with `n` new ids: a scattered change.
fn scattered(base: &[ChunkId], step: usize, seed: u64, n: usize) -> Vec<ChunkId> {
    let mut v: Vec<ChunkId> = base
        .iter()
        .enumerate()
        .filter(|(i, _)| i % step != 0)
        .map(|(_, c)| *c)
        .chain(ids(seed, n))
        .collect();
    v.sort_unstable();
    v
}

fn bases(name: &str, segs: &[SourceSegments]) -> HashMap<String, Vec<SegmentId>> {
    HashMap::from([(name.to_string(), segs[0].segments.clone())])
}

const ID: &str = "20270101T000000Z-0a1b2c3d";

async fn commit_and_read(repo: &Repository, mk: &SymKey, segs: &[SourceSegments]) -> Vec<ChunkId> {
    let m = Manifest::seal_with_segments(
        catalog(ID),
        &TreePart::default(),
        segs,
        &SymKey::random(),
        mk,
    );
    repo.put_manifest(&m).await.unwrap();
    let m = repo.read_manifest(ID).await.unwrap();
    assert_eq!(m.version(), 4);
    repo.open_refs(&m, mk).await.unwrap()
}

#[tokio::test]
async fn a_scattered_change_is_a_delta_of_a_few_segments_that_reads_back_whole() {
    let (repo, faulty, mk) = counted_repo().await;
    let old = ids(1, 50_000);
    let (first, w1) = repo
        .put_refs(&[("etc".into(), old.clone())], &mk, &HashSet::new())
        .await
        .unwrap();
    assert!(w1.segments >= 40, "{w1:?}");
    // 500 removed and 500 added ids, spread over the whole id space.
    let new = scattered(&old, 100, 2, 500);
    // Cut afresh, nearly every segment would be new.
    let recut = repo
        .put_refs(&[("x".into(), new.clone())], &mk, &HashSet::new())
        .await
        .unwrap()
        .1;
    assert!(recut.new * 10 >= recut.segments * 9, "{recut:?}");
    let (segs, w) = repo
        .put_refs_with_bases(
            &[("etc".into(), new.clone())],
            &mk,
            &HashSet::new(),
            &bases("etc", &first),
        )
        .await
        .unwrap();
    assert_eq!((w.delta_sources, w.delta_ids), (1, 1000));
    assert_eq!(segs[0].segments, first[0].segments);
    // 500 ids per list, about 1,024 per segment: one or two segments each, all new.
    let k = segs[0].added_segments.len() + segs[0].removed_segments.len();
    assert!((2..=4).contains(&k), "{segs:?}");
    assert_eq!((w.new, w.delta_segments), (k, k));
    assert_eq!(w.segments, first[0].segments.len() + k);
    let d = repo.read_delta(ID, &segs[0], &mk).await.unwrap();
    assert_eq!((d.added.len(), d.removed.len()), (500, 500));
    // ~32 KiB of delta segments and a manifest of ids of segments, where a re-cut stored
    // ~1.6 MB of segments.
    let m = Manifest::seal_with_segments(
        catalog(ID),
        &TreePart::default(),
        &segs,
        &SymKey::random(),
        &mk,
    );
    let size = m.to_bytes().len() as u64;
    assert!(size < 4_000, "manifest {size} bytes");
    assert!(w.bytes * 20 < recut.bytes, "{} vs {}", w.bytes, recut.bytes);
    assert_eq!(commit_and_read(&repo, &mk, &segs).await, new);
    // The same list again (a no-change backup after the changed one): the same delta segments,
    // none stored.
    let (again, w) = repo
        .put_refs_with_bases(
            &[("etc".into(), new.clone())],
            &mk,
            &HashSet::new(),
            &bases("etc", &segs),
        )
        .await
        .unwrap();
    assert_eq!(again, segs);
    assert_eq!((w.new, w.bytes, w.delta_segments), (0, 0, k));
    // Unchanged against its base: no delta at all, and no base segment read (the fresh cut
    // reproduces every one of them).
    let gets = faulty.count(Op::Get);
    let (same, w) = repo
        .put_refs_with_bases(
            &[("etc".into(), old.clone())],
            &mk,
            &HashSet::new(),
            &bases("etc", &first),
        )
        .await
        .unwrap();
    assert_eq!((w.new, w.delta_ids, w.delta_segments), (0, 0, 0));
    assert!(!same[0].has_delta());
    assert_eq!(faulty.count(Op::Get), gets);
}

#[tokio::test]
async fn a_delta_segment_a_prune_plan_marks_is_not_listed_again() {
    let (repo, mk) = repo().await;
    let old = ids(11, 30_000);
    let (first, _) = repo
        .put_refs(&[("etc".into(), old.clone())], &mk, &HashSet::new())
        .await
        .unwrap();
    let b = bases("etc", &first);
    let new = scattered(&old, 100, 12, 300);
    let (segs, _) = repo
        .put_refs_with_bases(&[("etc".into(), new.clone())], &mk, &HashSet::new(), &b)
        .await
        .unwrap();
    // A plan marks every delta segment (say, the backup that listed them was forgotten): the
    // next backup with the same delta lists none of them and stores its runs cut further.
    let marked: HashSet<SegmentId> = segs[0]
        .added_segments
        .iter()
        .chain(&segs[0].removed_segments)
        .copied()
        .collect();
    let (again, w) = repo
        .put_refs_with_bases(&[("etc".into(), new.clone())], &mk, &marked, &b)
        .await
        .unwrap();
    assert_eq!(again[0].segments, first[0].segments);
    assert!(again[0].has_delta());
    assert!(again[0].listed().all(|g| !marked.contains(g)), "{again:?}");
    assert!(w.new > marked.len(), "{w:?}");
    assert_eq!(commit_and_read(&repo, &mk, &again).await, new);
}

#[tokio::test]
async fn past_the_bound_or_without_a_usable_base_the_source_is_cut_afresh() {
    let (repo, mk) = repo().await;
    let old = ids(3, 20_000);
    let (first, _) = repo
        .put_refs(&[("etc".into(), old.clone())], &mk, &HashSet::new())
        .await
        .unwrap();
    let b = bases("etc", &first);
    assert_eq!(delta_bound(old.len()), 4096);
    // 2 × 2,500 changed ids: past the bound of 4,096.
    let big = scattered(&old, 8, 4, 2_500);
    let (segs, w) = repo
        .put_refs_with_bases(&[("etc".into(), big.clone())], &mk, &HashSet::new(), &b)
        .await
        .unwrap();
    assert_eq!(w.delta_sources, 0);
    assert!(!segs[0].has_delta() && w.new > 0);
    assert_eq!(commit_and_read(&repo, &mk, &segs).await, big);
    // A small change, but a base segment is marked by a prune plan, or missing.
    let small = scattered(&old, 1000, 5, 20);
    let marked: HashSet<SegmentId> = [first[0].segments[3]].into();
    let (segs, w) = repo
        .put_refs_with_bases(&[("etc".into(), small.clone())], &mk, &marked, &b)
        .await
        .unwrap();
    assert_eq!(w.delta_sources, 0);
    assert!(!segs[0].segments.contains(&first[0].segments[3]));
    repo.storage()
        .delete(&layout::refs_segment(&first[0].segments[5]))
        .await
        .unwrap();
    let (segs, w) = repo
        .put_refs_with_bases(&[("etc".into(), small.clone())], &mk, &HashSet::new(), &b)
        .await
        .unwrap();
    assert_eq!(w.delta_sources, 0);
    assert_eq!(commit_and_read(&repo, &mk, &segs).await, small);
    // A source the parent does not have is cut as before.
    let (segs, w) = repo
        .put_refs_with_bases(&[("db".into(), small.clone())], &mk, &HashSet::new(), &b)
        .await
        .unwrap();
    assert_eq!((w.delta_sources, segs[0].has_delta()), (0, false));
}

/// Stores `list` as one reference segment (a writer would cut it; readers accept any cut).
async fn store(repo: &Repository, mk: &SymKey, list: &[ChunkId]) -> SegmentId {
    let (id, obj) = refseg::encode(list, mk);
    repo.storage()
        .put(&layout::refs_segment(&id), obj.into())
        .await
        .unwrap();
    id
}

/// Deltas a genuine writer never makes, sealed with the real key (only a key holder could): each
/// is refused as corruption naming the backup.
#[tokio::test]
async fn a_forged_delta_is_corrupt_and_names_the_backup() {
    let (repo, mk) = repo().await;
    let old = ids(6, 5_000);
    let (first, _) = repo
        .put_refs(&[("etc".into(), old.clone())], &mk, &HashSet::new())
        .await
        .unwrap();
    let genuine = SourceSegments {
        name: "etc".into(),
        chunks: old.len() as u64,
        segments: first[0].segments.clone(),
        ..Default::default()
    };
    let outside = ids(7, 2);
    let o0 = store(&repo, &mk, &outside[..1]).await;
    let o1 = store(&repo, &mk, &outside[1..]).await;
    let in_base = store(&repo, &mk, &old[10..11]).await;
    // Past the bound: 32,769 ids in segments of 4,096.
    let mut huge = Vec::new();
    for part in ids(8, DELTA_MAX_IDS + 1).chunks(4096) {
        huge.push(store(&repo, &mk, part).await);
    }
    let missing = SegmentId([9; 32]);
    let cases: Vec<(String, SourceSegments)> = vec![
        (
            "removed id".into(),
            SourceSegments {
                removed_segments: vec![o0],
                chunks: old.len() as u64 - 1,
                ..genuine.clone()
            },
        ),
        (
            "added id".into(),
            SourceSegments {
                added_segments: vec![in_base],
                chunks: old.len() as u64 + 1,
                ..genuine.clone()
            },
        ),
        (
            "added ids are not strictly ascending".into(),
            SourceSegments {
                added_segments: vec![o1, o0],
                chunks: old.len() as u64 + 2,
                ..genuine.clone()
            },
        ),
        (
            "the manifest says".into(),
            SourceSegments {
                added_segments: vec![o0],
                chunks: old.len() as u64 + 2,
                ..genuine.clone()
            },
        ),
        (
            format!("more than {DELTA_MAX_IDS} ids"),
            SourceSegments {
                added_segments: huge,
                chunks: old.len() as u64 + DELTA_MAX_IDS as u64 + 1,
                ..genuine.clone()
            },
        ),
        (
            format!("refs/{missing}"),
            SourceSegments {
                removed_segments: vec![missing],
                chunks: old.len() as u64 - 1,
                ..genuine.clone()
            },
        ),
    ];
    for (why, src) in cases {
        let body = encode_refs_v4(&[src]);
        let m = Manifest::seal_with_refs_body_v4(
            catalog(ID),
            &TreePart::default(),
            &body,
            &SymKey::random(),
            &mk,
        );
        repo.put_manifest(&m).await.unwrap();
        let m = repo.read_manifest(ID).await.unwrap();
        let e = repo.open_refs(&m, &mk).await.unwrap_err().to_string();
        assert!(e.contains(ID) && e.contains(&why), "{why}: {e}");
    }
    // The genuine one reads.
    let m = Manifest::seal_with_segments(
        catalog(ID),
        &TreePart::default(),
        &[genuine],
        &SymKey::random(),
        &mk,
    );
    repo.put_manifest(&m).await.unwrap();
    assert_eq!(repo.open_refs(&m, &mk).await.unwrap(), old);
}
