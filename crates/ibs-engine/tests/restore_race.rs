//! A local user who can write into the restore target swaps restored folders for symlinks to an
//! outside folder while the restore runs: nothing may land outside, whatever the restore reports.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Every entry below `dir`, recursively, without following symlinks.
fn everything_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// Folders below `dir` (not `dir` itself) at depth `min_depth` or more, recursively, not through
/// symlinks; folders the racer moved aside (named `*~N`) are searched but not returned.
fn folders_below(dir: &Path, min_depth: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                stack.push((p.clone(), depth + 1));
                if depth + 1 >= min_depth && !e.file_name().to_string_lossy().contains('~') {
                    out.push(p);
                }
            }
        }
    }
    out
}

/// Until `stop`: renames every `every`-th folder found below `target` (at depth `min_depth` or
/// more) aside (`name~N`, still inside the target) and puts a symlink to `outside` in its place.
/// Returns how many folders it swapped.
fn racer(
    target: PathBuf,
    outside: PathBuf,
    stop: Arc<AtomicBool>,
    every: usize,
    min_depth: usize,
) -> u64 {
    let mut swaps = 0u64;
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        // Deepest first, so a swapped folder's children were already considered.
        let mut dirs = folders_below(&target, min_depth);
        dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for d in dirs {
            n += 1;
            if !n.is_multiple_of(every) {
                continue;
            }
            let aside = PathBuf::from(format!("{}~{n}", d.display()));
            if std::fs::rename(&d, &aside).is_ok()
                && std::os::unix::fs::symlink(&outside, &d).is_ok()
            {
                swaps += 1;
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    swaps
}

/// A tree of many folders and files, two of them large enough to be restored in pieces.
fn source_tree(root: &Path) {
    for a in 0..8 {
        for b in 0..4 {
            let d = root.join(format!("d{a}/e{b}"));
            std::fs::create_dir_all(&d).unwrap();
            for f in 0..6 {
                std::fs::write(d.join(format!("f{f}")), bytes(a * 100 + b * 10 + f, 3000)).unwrap();
            }
        }
        std::fs::write(root.join(format!("d{a}/top")), b"top").unwrap();
    }
    // Restored in pieces (16 MiB and more), early in tree order, so the racer meets them mid-way.
    std::fs::create_dir_all(root.join("big/inner")).unwrap();
    std::fs::write(root.join("big/inner/large1"), bytes(7, 17 << 20)).unwrap();
    std::fs::write(root.join("big/large2"), bytes(8, 17 << 20)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_racer_swapping_folders_for_symlinks_never_redirects_a_write() {
    let env = env().await;
    let src = env.path("src");
    source_tree(&src);
    let id = backup(&env, &[("data", &src)]).await.catalog.backup_id;
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut swaps, mut rounds) = (0, 0);
    // Rounds of different eagerness (every folder, every 2nd, ...), swapping `TARGET/data` itself
    // too (depth 1) or only the folders below it (depth 2).
    let rounds_of = [(1, 1), (1, 2), (2, 2), (3, 2), (7, 2), (2, 1)];
    for (round, (every, min_depth)) in rounds_of.into_iter().enumerate() {
        if Instant::now() > deadline {
            break;
        }
        let target = env.path(&format!("target-{round}"));
        std::fs::create_dir_all(&target).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let r = {
            let (t, o, s) = (target.clone(), outside.clone(), stop.clone());
            std::thread::spawn(move || racer(t, o, s, every, min_depth))
        };
        let result =
            tokio::time::timeout(Duration::from_secs(60), restore(&env, &id, &target, None))
                .await
                .expect("the restore ends while the racer runs");
        stop.store(true, Ordering::Relaxed);
        let swapped = r.join().unwrap();
        swaps += swapped;
        rounds += 1;
        let summary = match &result {
            Ok(r) => format!(
                "{} files, {} errors {:?}",
                r.files,
                r.errors.len(),
                r.errors.first()
            ),
            Err(e) => format!("error: {e}"),
        };
        eprintln!("round {round} (every {every}, depth {min_depth}+): {swapped} folders swapped; restore: {summary}");
        let leaked = everything_below(&outside);
        assert!(
            leaked.is_empty(),
            "round {round}: the restore wrote outside its target ({} entries, e.g. {:?})\nrestore: {summary}",
            leaked.len(),
            &leaked[..leaked.len().min(8)]
        );
    }
    assert!(rounds >= 3, "only {rounds} rounds ran");
    assert!(swaps > 0, "the racer never swapped a folder");
}
