//! Reference segments on storage (format §10.1): a writer stores only what is missing, treats a
//! refused put of a name that exists as stored (an append-only key, or another writer first), and
//! a reader gets back exactly the lists it stored, with per-source attribution.

use ibs_keys::LegacyKey;
use ibs_repo::clock::SystemClock;
use ibs_repo::crypto::SymKey;
use ibs_repo::ids::{ChunkId, SegmentId};
use ibs_repo::manifest::{BackupStatus, Catalog, Manifest, TreePart};
use ibs_repo::{layout, InitKeys, Repository};
use ibs_storage::faulty::{Fault, FaultyStorage, Op};
use ibs_storage::memory::MemoryStorage;
use ibs_storage::ErrorKind;
use std::collections::HashSet;
use std::sync::Arc;

fn ids(seed: u64, n: usize) -> Vec<ChunkId> {
    let mut v: Vec<ChunkId> = (0..n as u64)
        .map(|i| ChunkId(*blake3::hash(&[seed.to_le_bytes(), i.to_le_bytes()].concat()).as_bytes()))
        .collect();
    v.sort_unstable();
    v
}

/// No prune plan marks a segment.
fn none() -> HashSet<SegmentId> {
    HashSet::new()
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

async fn repo() -> (Repository, Arc<FaultyStorage>, SymKey) {
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

#[tokio::test]
async fn a_second_backup_of_the_same_lists_stores_nothing_and_reads_back_exactly() {
    let (repo, _, mk) = repo().await;
    let a = ids(1, 20_000);
    let b = ids(2, 3_000);
    let sources = vec![
        ("etc".to_string(), a.clone()),
        ("db".to_string(), b.clone()),
    ];
    let (segs, first) = repo.put_refs(&sources, &mk, &none()).await.unwrap();
    assert_eq!(first.new, first.segments);
    assert!(first.segments >= 10, "{first:?}");
    assert_eq!(repo.list_ref_segments().await.unwrap().len(), first.new);
    let (again, second) = repo.put_refs(&sources, &mk, &none()).await.unwrap();
    assert_eq!(
        (again.clone(), second.new, second.bytes),
        (segs.clone(), 0, 0)
    );

    let id = "20270101T000000Z-0a1b2c3d";
    let dk = SymKey::random();
    let m = Manifest::seal_with_segments(catalog(id), &TreePart::default(), &segs, &dk, &mk);
    repo.put_manifest(&m).await.unwrap();
    let m = repo.read_manifest(id).await.unwrap();
    let refs = repo.open_refs_detailed(&m, &mk).await.unwrap();
    let s = refs.sources.unwrap();
    assert_eq!((s[0].name.as_str(), &s[0].chunks), ("etc", &a));
    assert_eq!((s[1].name.as_str(), &s[1].chunks), ("db", &b));
    let mut all = [a.clone(), b.clone()].concat();
    all.sort_unstable();
    assert_eq!(refs.all, all);

    // One id more and one fewer: at most two new segments.
    let mut a2 = a.clone();
    a2.remove(12_345);
    a2.push(ids(3, 1)[0]);
    a2.sort_unstable();
    let (_, third) = repo
        .put_refs(
            &[("etc".to_string(), a2), ("db".to_string(), b)],
            &mk,
            &none(),
        )
        .await
        .unwrap();
    assert!(third.new <= 2, "{third:?}");

    // A manifest whose count disagrees with its segments, or whose segment is gone, is refused
    // naming the backup (and the segment).
    let mut wrong = segs.clone();
    wrong[0].chunks += 1;
    let bad = Manifest::seal_with_segments(catalog(id), &TreePart::default(), &wrong, &dk, &mk);
    let e = repo.open_refs(&bad, &mk).await.unwrap_err().to_string();
    assert!(e.contains(id) && e.contains("the manifest says"), "{e}");
    let gone = layout::refs_segment(&segs[1].segments[0]);
    repo.storage().delete(&gone).await.unwrap();
    let e = repo.open_refs(&m, &mk).await.unwrap_err().to_string();
    assert!(
        e.contains(gone.as_str()) && e.contains(id) && e.contains("missing"),
        "{e}"
    );
}

#[tokio::test]
async fn a_refused_put_of_a_segment_that_exists_counts_as_stored() {
    let (repo, faulty, mk) = repo().await;
    let sources = vec![("etc".to_string(), ids(4, 5_000))];
    let (segs, _) = repo.put_refs(&sources, &mk, &none()).await.unwrap();
    // The listing hides refs/ (lagging, or lying) and every put is refused, as for an
    // append-only key that may not overwrite: the writer tries each, finds it there, goes on.
    faulty.hide_prefix(layout::REFS);
    faulty.fail_from(
        Op::Put,
        1,
        Fault::Error {
            kind: ErrorKind::Authentication,
            transient: false,
        },
    );
    let puts = faulty.count(Op::Put);
    let (again, w) = repo.put_refs(&sources, &mk, &none()).await.unwrap();
    assert_eq!(again, segs);
    assert_eq!(w.new, segs[0].segments.len());
    assert_eq!(faulty.count(Op::Put) - puts, w.new as u64, "each was tried");
    // A segment that is not there is still an error.
    let e = repo
        .put_refs(&[("new".to_string(), ids(5, 10))], &mk, &none())
        .await
        .unwrap_err();
    assert!(!e.to_string().is_empty());
}

/// A backup that honours a prune plan never lists a segment the plan marks (a sweep may retire it
/// before the backup commits): the run is cut again and stored under other names, and the
/// references read back are exactly the same.
#[tokio::test]
async fn a_segment_a_prune_plan_marks_is_cut_again_and_never_listed() {
    let (repo, _, mk) = repo().await;
    let a = ids(7, 12_000);
    let sources = vec![("etc".to_string(), a.clone())];
    let (segs, _) = repo.put_refs(&sources, &mk, &none()).await.unwrap();
    let marked: HashSet<SegmentId> = segs[0].segments.iter().take(2).copied().collect();
    let (again, w) = repo.put_refs(&sources, &mk, &marked).await.unwrap();
    assert!(
        again[0].segments.iter().all(|s| !marked.contains(s)),
        "a marked segment is listed"
    );
    assert!(
        w.new >= 4,
        "each marked run is stored again in pieces: {w:?}"
    );
    assert_eq!(again[0].segments.len(), segs[0].segments.len() + w.new / 2);
    let id = "20270101T000000Z-0a1b2c3e";
    let m = Manifest::seal_with_segments(
        catalog(id),
        &TreePart::default(),
        &again,
        &SymKey::random(),
        &mk,
    );
    repo.put_manifest(&m).await.unwrap();
    // Even with the marked segments gone (a sweep retired them), the references read back whole.
    for s in &marked {
        repo.storage()
            .delete(&layout::refs_segment(s))
            .await
            .unwrap();
    }
    let m = repo.read_manifest(id).await.unwrap();
    let refs = repo.open_refs_detailed(&m, &mk).await.unwrap();
    assert_eq!(refs.all, a);
}
