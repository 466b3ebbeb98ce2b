//! Reference deltas (manifest version 4, ADR 0046) end to end: a backup with scattered changes
//! lists its parent's segments plus a delta stored as a few segments, and restores exactly; a
//! no-change backup after it lists the same delta segments and stores none; check --read-data
//! passes; prune after forgetting the parent keeps the base and delta segments the child lists
//! and the chunks it adds, and drops the chunks only its removed list named.

mod common;

use common::*;
use ibs_engine::retention::{forget_backups, prune, Expected, PruneOptions, PrunePlan};
use ibs_engine::trash::DEFAULT_DELETE_DELAY;
use ibs_repo::ids::SegmentId;
use ibs_repo::manifest::{RefsPart, SourceSegments};
use ibs_repo::Delta;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `files` small files of distinct contents in 100 folders.
fn tree(env: &Env, files: usize) -> PathBuf {
    let src = env.path("src");
    for d in 0..100 {
        let dir = src.join(format!("d{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..files / 100 {
            std::fs::write(
                dir.join(format!("f{f:03}.conf")),
                format!("key = {d}-{f}\n"),
            )
            .unwrap();
        }
    }
    src
}

/// Rewrites every `step`-th file of every folder: changes scattered over the whole id space.
fn change_scattered(src: &Path, files: usize, step: usize) -> usize {
    let mut n = 0;
    for d in 0..100 {
        for f in (0..files / 100).step_by(step) {
            let p = src.join(format!("d{d:03}/f{f:03}.conf"));
            std::fs::write(p, format!("key = changed {d}-{f}\n")).unwrap();
            n += 1;
        }
    }
    n
}

/// Bytes under `MASBackup/<prefix>`.
fn bytes_under(env: &Env, prefix: &str) -> u64 {
    let mut total = 0;
    let mut stack = vec![env.repo_dir().join(prefix)];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let e = e.unwrap();
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                total += e.metadata().unwrap().len();
            }
        }
    }
    total
}

async fn segments(env: &Env) -> BTreeSet<SegmentId> {
    env.repo
        .list_ref_segments()
        .await
        .unwrap()
        .into_iter()
        .collect()
}

async fn sources_of(env: &Env, id: &str) -> Vec<SourceSegments> {
    let m = env.repo.read_manifest(id).await.unwrap();
    assert_eq!(m.version(), 4);
    match m.open_refs_part(&env.state.keys.metadata).unwrap() {
        RefsPart::Segmented(s) => s,
        RefsPart::Inline(_) => panic!("backups write manifest version 4"),
    }
}

/// The delta a backup's source carries, read from its segments.
async fn delta_of(env: &Env, id: &str, s: &SourceSegments) -> Delta {
    env.repo
        .read_delta(id, s, &env.state.keys.metadata)
        .await
        .unwrap()
}

/// Size of a backup's manifest object.
fn manifest_bytes(env: &Env, id: &str) -> u64 {
    std::fs::metadata(env.repo_dir().join("backups").join(id))
        .unwrap()
        .len()
}

async fn problems(env: &Env) -> Vec<(String, String, Vec<String>)> {
    check_problems(env, true).await
}

async fn prune_keeping(env: &Env, keep: &[&str]) -> PrunePlan {
    prune(
        &env.repo,
        &env.state,
        PruneOptions {
            dry_run: false,
            lock_wait: Duration::from_secs(60),
            expected: Expected::Backups(keep.iter().map(|s| s.to_string()).collect()),
            grace: Duration::ZERO,
            delete_delay: DEFAULT_DELETE_DELAY,
            max_unused_percent: ibs_engine::retention::DEFAULT_MAX_UNUSED_PERCENT,
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_with_scattered_changes_stores_only_a_few_delta_segments_and_restores_exactly() {
    let env = env().await;
    const FILES: usize = 20_000;
    let src = tree(&env, FILES);
    let first = backup(&env, &[("etc", &src)]).await.catalog.backup_id;
    let segs = segments(&env).await;
    let refs_bytes = bytes_under(&env, "refs");
    assert!(segs.len() >= 10, "{} segments", segs.len());
    // 200 files in every folder's every 100th place: their old and new chunks fall in nearly
    // every segment (ids are keyed hashes), which a re-cut would rewrite.
    let changed = change_scattered(&src, FILES, 100);
    assert_eq!(changed, 200);
    let second = backup(&env, &[("etc", &src)]).await.catalog.backup_id;
    let parent = sources_of(&env, &first).await;
    let child = sources_of(&env, &second).await;
    assert_eq!(
        child[0].segments, parent[0].segments,
        "the parent's segments are the base"
    );
    assert!(!parent[0].has_delta());
    // The only new segments are the delta's (about 1,024 ids per segment: one or two per list).
    let delta_segs: BTreeSet<SegmentId> = child[0]
        .added_segments
        .iter()
        .chain(&child[0].removed_segments)
        .copied()
        .collect();
    let now = segments(&env).await;
    assert_eq!(
        now.difference(&segs).copied().collect::<BTreeSet<_>>(),
        delta_segs,
        "new segments"
    );
    assert!(
        (2..=4).contains(&delta_segs.len()),
        "{} delta segments",
        delta_segs.len()
    );
    // Each changed file: its old chunk removed, its new one added (plus a few tree chunks).
    let d2 = delta_of(&env, &second, &child[0]).await;
    let (a, r) = (d2.added.len(), d2.removed.len());
    assert!(
        (200..260).contains(&a) && (200..260).contains(&r),
        "{a} added, {r} removed"
    );
    let manifest = manifest_bytes(&env, &second);
    eprintln!("refs of the full backup: {refs_bytes} bytes; the changed backup's manifest: {manifest} bytes");
    assert!(
        manifest * 20 < refs_bytes,
        "manifest {manifest} bytes, segments {refs_bytes}"
    );

    // A third backup deltas against the second's base (chains of length one): still the first's
    // segments, its delta against them.
    let saw = env.path("as-second-seen");
    assert!(std::process::Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(&saw)
        .status()
        .unwrap()
        .success());
    std::fs::write(src.join("d050/f050.conf"), "key = third\n").unwrap();
    let third = backup(&env, &[("etc", &src)]).await.catalog.backup_id;
    let t3 = sources_of(&env, &third).await;
    assert_eq!(t3[0].segments, parent[0].segments);
    assert!(
        delta_of(&env, &third, &t3[0]).await.added.len() > a,
        "the delta is against the base, not the second's list"
    );

    assert_eq!(problems(&env).await, vec![]);
    for (id, want) in [(&second, &saw), (&third, &src)] {
        let t = env.path(&format!("t-{id}"));
        restore(&env, id, &t, None).await.unwrap();
        assert_same_tree(want, &t.join("etc"));
    }
    // The reference listing equals the set the tree gives, as a re-cut would list it.
    let m = env.repo.read_manifest(&third).await.unwrap();
    let refs = env
        .repo
        .open_refs(&m, &env.state.keys.metadata)
        .await
        .unwrap();
    assert_eq!(refs.len() as u64, t3[0].chunks);
    assert!(refs.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_after_forgetting_the_parent_keeps_the_base_and_drops_only_removed_chunks() {
    let env = env().await;
    // A third of the files change: the old contents are past prune's repack ratio, so prune
    // really drops them; 2 × 1,000 ids stay under the delta bound.
    const FILES: usize = 3_000;
    let src = tree(&env, FILES);
    let first = backup(&env, &[("etc", &src)]).await.catalog.backup_id;
    change_scattered(&src, FILES, 3);
    let second = backup(&env, &[("etc", &src)]).await.catalog.backup_id;
    let child = sources_of(&env, &second).await.remove(0);
    let delta = delta_of(&env, &second, &child).await;
    assert!(
        delta.removed.len() >= 1000 && delta.added.len() >= 1000,
        "a delta: {child:?}"
    );
    // Kept while the child lists them: its base and its delta segments.
    let listed: BTreeSet<SegmentId> = child.listed().copied().collect();
    assert!(listed.len() > child.segments.len());

    let plan = prune_keeping(&env, &[&first, &second]).await;
    assert!(plan.delete_segments.is_empty(), "{plan:?}");
    assert_eq!(plan.chunks_unused, 0);
    forget_backups(
        &env.repo,
        std::slice::from_ref(&first),
        DEFAULT_DELETE_DELAY,
    )
    .await
    .unwrap();
    let plan = prune_keeping(&env, &[&second]).await;
    // The base and delta segments the child lists stay; its removed ids are no kept backup's
    // references.
    assert!(plan.delete_segments.is_empty(), "{plan:?}");
    assert_eq!(plan.segments_kept, listed.len());
    assert_eq!(segments(&env).await, listed);
    assert_eq!(plan.chunks_used as u64, child.chunks);
    assert_eq!(plan.chunks_unused, delta.removed.len());
    assert!(
        !plan.repack.is_empty() || !plan.delete.is_empty(),
        "{plan:?}"
    );
    let index = ibs_engine::backup::load_index(&env.repo, &env.state)
        .await
        .unwrap();
    assert!(
        delta.removed.iter().all(|c| index.get(c).is_none()),
        "removed chunks are gone"
    );
    assert!(
        delta.added.iter().all(|c| index.get(c).is_some()),
        "added chunks stay"
    );
    assert_eq!(problems(&env).await, vec![]);
    let t = env.path("t-second");
    restore(&env, &second, &t, None).await.unwrap();
    assert_same_tree(&src, &t.join("etc"));
    // Nothing more to drop.
    let plan = prune_keeping(&env, &[&second]).await;
    assert_eq!((plan.chunks_unused, plan.delete_segments.len()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_change_backup_after_a_changed_one_stores_no_segment_and_a_small_manifest() {
    let env = env().await;
    const FILES: usize = 10_000;
    let src = tree(&env, FILES);
    backup(&env, &[("etc", &src)]).await;
    change_scattered(&src, FILES, 50);
    let changed = backup(&env, &[("etc", &src)]).await.catalog.backup_id;
    let c = sources_of(&env, &changed).await.remove(0);
    let d = delta_of(&env, &changed, &c).await;
    assert!(
        c.has_delta() && d.added.len() >= 200 && d.removed.len() >= 200,
        "the changed backup carries a delta: {} added, {} removed",
        d.added.len(),
        d.removed.len()
    );
    let before = segments(&env).await;
    let refs_before = bytes_under(&env, "refs");

    let same = backup(&env, &[("etc", &src)]).await.catalog.backup_id;
    assert_eq!(segments(&env).await, before, "no new segment");
    assert_eq!(bytes_under(&env, "refs"), refs_before);
    let n = sources_of(&env, &same).await.remove(0);
    assert_eq!(
        (&n.segments, &n.added_segments, &n.removed_segments),
        (&c.segments, &c.added_segments, &c.removed_segments),
        "the no-change backup lists the changed one's base and delta segments"
    );
    let manifest = manifest_bytes(&env, &same);
    eprintln!(
        "no-change backup after a changed one: 0 new segments, manifest {manifest} bytes \
         (delta {} ids in {} segments)",
        d.len(),
        c.added_segments.len() + c.removed_segments.len()
    );
    assert!(manifest < 16 * 1024, "manifest {manifest} bytes");
    assert_eq!(problems(&env).await, vec![]);

    // A delta segment is a listed segment like any other: check reads it, and a missing one is a
    // problem of both backups that list it, naming it.
    let gone = c.removed_segments[0];
    let file = env
        .repo_dir()
        .join(ibs_repo::layout::refs_segment(&gone).as_str());
    let kept = std::fs::read(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    let p = problems(&env).await;
    let named: BTreeSet<String> = p.iter().flat_map(|p| p.2.clone()).collect();
    assert_eq!(named, [changed.clone(), same.clone()].into(), "{p:?}");
    assert!(
        p.iter()
            .all(|p| p.1.contains(&format!("refs/{gone}")) && p.1.contains("missing")),
        "{p:?}"
    );
    std::fs::write(&file, kept).unwrap();
    assert_eq!(problems(&env).await, vec![]);
}
