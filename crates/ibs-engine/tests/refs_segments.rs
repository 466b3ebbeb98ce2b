//! Reference segments (manifest versions 3 and 4, format §10.1, ADR 0038) end to end: a no-change backup
//! stores no segment and adds only its manifest; a one-file change stores a few; check names the
//! backups of a missing, corrupt or swapped segment and prune refuses past it; prune keeps shared
//! segments and retires those no kept backup lists; undelete brings them back; old and new
//! backups restore exactly.

mod common;

use common::*;
use ibs_engine::retention::{forget_backups, prune, Expected, PruneOptions, PrunePlan};
use ibs_engine::trash::{self, DEFAULT_DELETE_DELAY};
use ibs_engine::EngineError;
use ibs_repo::ids::SegmentId;
use ibs_repo::manifest::RefsPart;
use ibs_repo::{layout, Repository};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

const FILES: usize = 20_000;

/// `FILES` small files of distinct contents in 100 folders.
fn tree(env: &Env) -> PathBuf {
    let src = env.path("src");
    for d in 0..100 {
        let dir = src.join(format!("d{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..FILES / 100 {
            std::fs::write(
                dir.join(format!("f{f:03}.conf")),
                format!("key = {d}-{f}\n"),
            )
            .unwrap();
        }
    }
    src
}

/// Every object under `MASBackup` but locks, by name, with sizes.
fn objects(env: &Env) -> Vec<(String, u64)> {
    let root = env.repo_dir();
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                if !rel.starts_with("locks/") {
                    out.push((rel, e.metadata().unwrap().len()));
                }
            }
        }
    }
    out.sort();
    out
}

fn total(o: &[(String, u64)]) -> u64 {
    o.iter().map(|(_, s)| s).sum()
}

async fn segments(env: &Env) -> BTreeSet<SegmentId> {
    env.repo
        .list_ref_segments()
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// The segments backup `id`'s manifest lists.
async fn listed_by(repo: &Repository, env: &Env, id: &str) -> BTreeSet<SegmentId> {
    let m = repo.read_manifest(id).await.unwrap();
    match m.open_refs_part(&env.state.keys.metadata).unwrap() {
        RefsPart::Segmented(s) => s.into_iter().flat_map(|s| s.segments).collect(),
        RefsPart::Inline(_) => panic!("backups write manifest version 4"),
    }
}

async fn problems(env: &Env) -> Vec<(String, String, Vec<String>)> {
    check_problems(env, false).await
}

async fn try_prune(env: &Env, keep: &[&str]) -> Result<PrunePlan, EngineError> {
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
}

fn copy_tree(from: &Path, to: &Path) {
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// Three backups of one tree: full, no change, one file changed. Returns the ids, the tree and a
/// copy of the tree as the first two backups saw it.
async fn three_backups(env: &Env) -> ([String; 3], PathBuf, PathBuf) {
    let src = tree(env);
    let first = backup(env, &[("etc", &src)]).await.catalog.backup_id;
    let after_full = objects(env);
    let segs_full = segments(env).await;
    assert!(
        segs_full.len() >= 8,
        "{FILES} files make several segments: {}",
        segs_full.len()
    );

    let second = backup(env, &[("etc", &src)]).await.catalog.backup_id;
    let after_same = objects(env);
    assert_eq!(
        segments(env).await,
        segs_full,
        "a no-change backup stores no segment"
    );
    let before: BTreeSet<&String> = after_full.iter().map(|(n, _)| n).collect();
    let added: Vec<&(String, u64)> = after_same
        .iter()
        .filter(|(n, _)| !before.contains(n))
        .collect();
    let growth = total(&after_same) - total(&after_full);
    eprintln!(
        "full: {} bytes, {} segments; no-change growth {growth} bytes: {added:?}",
        total(&after_full),
        segs_full.len()
    );
    // The manifest (catalog, tree-stream ids, ~20 segment ids) and the data-key envelope.
    assert!(
        growth < 24 << 10,
        "no-change growth {growth} bytes: {added:?}"
    );
    assert!(
        added.iter().all(|(n, _)| !n.starts_with("refs/")),
        "{added:?}"
    );

    let saw = env.path("as-first-seen");
    copy_tree(&src, &saw);
    let changed = src.join("d042/f007.conf");
    std::fs::write(&changed, "key = changed\n").unwrap();
    // Without a ledger the writer knows no parent, so the third backup cuts its references
    // afresh (with one, it would list the second's segments and a delta, ADR 0046:
    // `tests/refs_delta.rs`). These tests are about segments a cut changes.
    std::fs::remove_file(env.state.dir.join("backups.ledger")).unwrap();
    let third = backup(env, &[("etc", &src)]).await.catalog.backup_id;
    let new_segs = segments(env).await.difference(&segs_full).count();
    eprintln!("one changed file: {new_segs} new segments");
    assert!(
        (1..=6).contains(&new_segs),
        "one changed file stores a few segments, not {new_segs}"
    );
    ([first, second, third], src, saw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_change_backup_adds_no_segment_and_one_changed_file_a_few() {
    let env = env().await;
    let ([first, second, third], src, saw) = three_backups(&env).await;
    assert_eq!(problems(&env).await, vec![]);
    for (id, want) in [(&first, &saw), (&second, &saw), (&third, &src)] {
        let t = env.path(&format!("t-{id}"));
        restore(&env, id, &t, None).await.unwrap();
        assert_same_tree(want, &t.join("etc"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_the_backup_of_a_missing_or_corrupt_segment_and_prune_refuses() {
    let env = env().await;
    let ([first, second, third], _, _) = three_backups(&env).await;
    let old = listed_by(&env.repo, &env, &first).await;
    let new = listed_by(&env.repo, &env, &third).await;
    assert_eq!(old, listed_by(&env.repo, &env, &second).await);
    let only_new = *new.difference(&old).next().unwrap();
    let shared = *new.intersection(&old).next().unwrap();
    let dir = env.repo_dir();
    let file = |s: &SegmentId| dir.join(layout::refs_segment(s).as_str());

    // Missing: only the backup that lists it.
    let kept = std::fs::read(file(&only_new)).unwrap();
    std::fs::remove_file(file(&only_new)).unwrap();
    let p = problems(&env).await;
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].2, vec![third.clone()]);
    assert!(
        p[0].1.contains(&format!("refs/{only_new}")) && p[0].1.contains("missing"),
        "{p:?}"
    );
    let e = try_prune(&env, &[&first, &second, &third])
        .await
        .unwrap_err();
    assert!(
        matches!(&e, EngineError::ManifestUnreadable { backup, .. } if backup == &third),
        "{e}"
    );
    std::fs::write(file(&only_new), &kept).unwrap();
    assert_eq!(problems(&env).await, vec![]);

    // Corrupt (one flipped byte), then swapped (another segment's bytes under its name): every
    // backup that lists it is named.
    let good = std::fs::read(file(&shared)).unwrap();
    let mut bad = good.clone();
    let n = bad.len();
    bad[n / 2] ^= 0x40;
    for (what, bytes) in [("corrupt", bad), ("swapped", kept.clone())] {
        std::fs::write(file(&shared), &bytes).unwrap();
        let p = problems(&env).await;
        let named: BTreeSet<String> = p.iter().flat_map(|p| p.2.clone()).collect();
        assert_eq!(
            named,
            [first.clone(), second.clone(), third.clone()].into(),
            "{what}: {p:?}"
        );
        assert!(
            p.iter().all(|p| p.1.contains(&format!("refs/{shared}"))),
            "{what}: {p:?}"
        );
        assert!(
            try_prune(&env, &[&first, &second, &third]).await.is_err(),
            "{what}"
        );
    }
    std::fs::write(file(&shared), &good).unwrap();
    assert_eq!(problems(&env).await, vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_keeps_shared_segments_retires_unshared_ones_and_undelete_brings_them_back() {
    let env = env().await;
    let ([first, second, third], src, saw) = three_backups(&env).await;
    let old = listed_by(&env.repo, &env, &first).await;
    let new = listed_by(&env.repo, &env, &third).await;
    let only_old: BTreeSet<SegmentId> = old.difference(&new).copied().collect();
    assert!(!only_old.is_empty());
    // Nothing is unlisted yet: prune retires no segment.
    let plan = try_prune(&env, &[&first, &second, &third]).await.unwrap();
    assert!(plan.delete_segments.is_empty(), "{plan:?}");
    assert_eq!(plan.segments_kept, old.union(&new).count());

    forget_backups(
        &env.repo,
        &[first.clone(), second.clone()],
        DEFAULT_DELETE_DELAY,
    )
    .await
    .unwrap();
    let plan = try_prune(&env, &[&third]).await.unwrap();
    assert_eq!(
        plan.delete_segments
            .iter()
            .copied()
            .collect::<BTreeSet<_>>(),
        only_old
    );
    assert_eq!(segments(&env).await, new, "shared and new segments stay");
    let batch = plan.grace_batch.clone().unwrap();
    for s in &only_old {
        env.repo
            .storage()
            .stat(&layout::trash(&batch, &layout::refs_segment(s)))
            .await
            .unwrap();
    }
    assert_eq!(problems(&env).await, vec![]);
    let t = env.path("t-third");
    restore(&env, &third, &t, None).await.unwrap();
    assert_same_tree(&src, &t.join("etc"));

    let done = trash::undelete(&env.repo, Duration::ZERO, false)
        .await
        .unwrap();
    // Backups started in the same second have ids in no particular order: compare as sets.
    let mut undeleted = done.backups.clone();
    undeleted.sort();
    let mut want = vec![first.clone(), second.clone()];
    want.sort();
    assert_eq!(undeleted, want);
    assert_eq!(segments(&env).await, old.union(&new).copied().collect());
    assert_eq!(problems(&env).await, vec![]);
    let t = env.path("t-first");
    restore(&env, &first, &t, None).await.unwrap();
    assert_same_tree(&saw, &t.join("etc"));
}
