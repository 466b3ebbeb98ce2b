//! Backup then restore gives back the same tree; deduplication works across backups and inside
//! edited files.

mod common;
use common::*;
use proptest::prelude::*;
use std::fs;
use std::os::unix::fs::{symlink, FileExt, PermissionsExt};
use std::path::Path;

const NAMES: &[&str] = &[
    "a",
    "b.txt",
    "é-accent",
    "日本語",
    "with space",
    "z_last",
    "UPPER",
    "dot.d",
    "Ω",
    "x-1",
];

/// Builds a random tree from a seed: nested directories, empty/small/large/sparse files, unicode
/// names, relative and dangling symlinks, empty directories, odd modes and old mtimes.
fn random_tree(root: &Path, seed: u64, entries: usize) {
    fs::create_dir_all(root).unwrap();
    let r = bytes(seed, entries * 8);
    let mut dirs = vec![root.to_path_buf()];
    for i in 0..entries {
        let pick = |k: usize| r[i * 8 + k] as usize;
        let parent = dirs[pick(0) % dirs.len()].clone();
        let name = format!("{}{}", NAMES[pick(1) % NAMES.len()], i);
        let path = parent.join(&name);
        match pick(2) % 10 {
            0 | 1 if parent.components().count() < root.components().count() + 8 => {
                fs::create_dir(&path).unwrap();
                dirs.push(path.clone());
            }
            2 => fs::write(&path, b"").unwrap(),
            3 => symlink(
                if pick(3) % 2 == 0 {
                    "../a0".to_string()
                } else {
                    format!("target-{i}")
                },
                &path,
            )
            .unwrap(),
            4 => {
                // Sparse: holes around two small islands of data.
                let f = fs::File::create(&path).unwrap();
                f.set_len(3 << 20).unwrap();
                f.write_all_at(&bytes(seed + i as u64, 5000), 1 << 20)
                    .unwrap();
                f.write_all_at(b"tail", (3 << 20) - 4).unwrap();
            }
            5 => fs::write(&path, bytes(seed ^ i as u64, 1 + pick(4) * 9000)).unwrap(),
            _ => fs::write(&path, format!("config line {i}\n").repeat(1 + pick(5) * 20)).unwrap(),
        }
        if !path.is_symlink() {
            if path.is_file() && pick(6) % 3 == 0 {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
            }
            let t = filetime::FileTime::from_unix_time(1_500_000_000 + (pick(7) as i64) * 1000, 0);
            filetime::set_file_mtime(&path, t).unwrap();
        }
    }
    // Directory mtimes last (creating children changed them).
    for d in dirs.iter().rev() {
        filetime::set_file_mtime(d, filetime::FileTime::from_unix_time(1_600_000_000, 0)).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn backup_then_restore_is_identity(seed in any::<u64>(), entries in 0usize..60) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let env = env().await;
            let src = env.path("src");
            random_tree(&src, seed, entries);
            let report = backup(&env, &[("tree", &src)]).await;
            prop_assert_eq!(report.catalog.status, ibs_repo::manifest::BackupStatus::Succeeded);
            prop_assert!(report.catalog.is_recovery_ready());
            let out = env.path("out");
            let r = restore(&env, &report.catalog.backup_id, &out, None).await.unwrap();
            prop_assert!(r.errors.is_empty(), "{:?}", r.errors);
            assert_same_tree(&src, &out.join("tree"));
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn deep_tree_and_large_file_round_trip_with_sparse_holes() {
    let env = env().await;
    let src = env.path("src");
    let mut deep = src.clone();
    for i in 0..40 {
        deep.push(format!("level-{i}"));
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("leaf"), b"deep").unwrap();
    fs::write(src.join("large.bin"), bytes(7, 20 << 20)).unwrap();
    let sparse = src.join("disk.img");
    let f = fs::File::create(&sparse).unwrap();
    f.set_len(256 << 20).unwrap();
    f.write_all_at(&bytes(8, 1 << 20), 100 << 20).unwrap();
    drop(f);
    let report = backup(&env, &[("s", &src)]).await;
    assert!(
        report.catalog.bytes_stored < 25 << 20,
        "zero runs deduplicate: stored {}",
        report.catalog.bytes_stored
    );
    let out = env.path("out");
    let r = restore(&env, &report.catalog.backup_id, &out, Some("s"))
        .await
        .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_same_tree(&src, &out);
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(out.join("disk.img")).unwrap();
    assert_eq!(m.len(), 256 << 20);
    assert!(
        m.blocks() * 512 < 8 << 20,
        "restored image stays sparse: {} bytes allocated",
        m.blocks() * 512
    );
}

#[tokio::test]
async fn unchanged_second_backup_adds_less_than_one_percent() {
    let env = env().await;
    let src = env.path("src");
    random_tree(&src, 42, 200);
    fs::write(src.join("big"), bytes(1, 16 << 20)).unwrap();
    let first = backup(&env, &[("s", &src)]).await;
    let second = backup(&env, &[("s", &src)]).await;
    let ratio = second.catalog.bytes_stored as f64 / first.catalog.bytes_stored as f64;
    assert!(
        ratio < 0.01,
        "second backup stored {} of {} ({ratio:.4})",
        second.catalog.bytes_stored,
        first.catalog.bytes_stored
    );
    // And without the files cache (a fresh writer re-reads everything), chunks still deduplicate.
    fs::remove_file(env.state.files_cache_path()).unwrap();
    let third = backup(&env, &[("s", &src)]).await;
    assert!((third.catalog.bytes_stored as f64) < 0.01 * first.catalog.bytes_stored as f64);
    assert_eq!(third.catalog.bytes_new, 0);
}

#[tokio::test]
async fn inserting_bytes_mid_file_stores_only_the_chunks_around_the_change() {
    let env = env().await;
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let data = bytes(99, 64 << 20);
    fs::write(src.join("big"), &data).unwrap();
    let first = backup(&env, &[("s", &src)]).await;
    let mut edited = data[..32 << 20].to_vec();
    edited.extend_from_slice(b"inserted in the middle of a large file");
    edited.extend_from_slice(&data[32 << 20..]);
    fs::write(src.join("big"), &edited).unwrap();
    let second = backup(&env, &[("s", &src)]).await;
    // Max chunk is 4 MiB: the change touches at most two chunks (plus the small tree chunk).
    assert!(
        second.catalog.bytes_new <= (8 << 20) + (1 << 16),
        "new bytes {} (first backup {})",
        second.catalog.bytes_new,
        first.catalog.bytes_new
    );
    assert!(second.chunks_new <= 4, "new chunks: {}", second.chunks_new);
    let out = env.path("out");
    restore(&env, &second.catalog.backup_id, &out, Some("s"))
        .await
        .unwrap();
    assert!(fs::read(out.join("big")).unwrap() == edited);
}

#[tokio::test]
async fn unreadable_file_gives_partial_success_and_the_rest_is_stored() {
    let env = env().await;
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("ok"), b"fine").unwrap();
    // /proc/self/mem is a regular file that fails with EIO when read at offset 0, even for root.
    let report = backup(&env, &[("s", &src), ("mem", Path::new("/proc/self/mem"))]).await;
    assert_eq!(
        report.catalog.status,
        ibs_repo::manifest::BackupStatus::PartialSucceeded
    );
    let mem = report
        .catalog
        .sources
        .iter()
        .find(|s| s.name == "mem")
        .unwrap();
    assert_eq!(
        (mem.errors, mem.status),
        (1, ibs_repo::manifest::BackupStatus::PartialSucceeded)
    );
    assert!(
        report.errors.iter().any(|e| e.starts_with("mem/mem")),
        "{:?}",
        report.errors
    );
    let s = report
        .catalog
        .sources
        .iter()
        .find(|s| s.name == "s")
        .unwrap();
    assert_eq!(s.status, ibs_repo::manifest::BackupStatus::Succeeded);
    let out = env.path("out");
    let r = restore(&env, &report.catalog.backup_id, &out, None)
        .await
        .unwrap();
    assert_eq!(fs::read(out.join("s/ok")).unwrap(), b"fine");
    assert_eq!(
        r.skipped.len(),
        1,
        "the unreadable file is reported, not restored: {:?}",
        r.skipped
    );
}

#[tokio::test]
async fn excluded_entries_are_not_stored_and_the_rest_is() {
    let env = env().await;
    let src = env.path("src");
    fs::create_dir_all(src.join("var/log")).unwrap();
    fs::create_dir_all(src.join("app/cache/deep")).unwrap();
    fs::write(src.join("keep.conf"), b"keep").unwrap();
    fs::write(src.join("scratch.tmp"), b"drop").unwrap();
    fs::write(src.join("var/log/old.gz"), b"drop").unwrap();
    fs::write(src.join("var/log/now.log"), b"keep").unwrap();
    fs::write(src.join("app/cache/deep/blob"), b"drop").unwrap();
    let spec = ibs_engine::SourceSpec {
        name: "s".into(),
        origin: ibs_engine::SourceOrigin::Tree {
            root: src.clone(),
            exclude: vec!["*.tmp".into(), "var/log/*.gz".into(), "cache".into()],
        },
    };
    let report = ibs_engine::backup(
        env.repo.clone(),
        &env.state,
        ibs_engine::BackupOptions {
            sources: vec![spec],
            threads: 1,
            lock_wait: Default::default(),
            progress: Default::default(),
        },
    )
    .await
    .unwrap();
    let out = env.path("out");
    restore(&env, &report.catalog.backup_id, &out, Some("s"))
        .await
        .unwrap();
    assert!(
        out.join("keep.conf").exists()
            && out.join("var/log/now.log").exists()
            && out.join("app").is_dir()
    );
    for gone in ["scratch.tmp", "var/log/old.gz", "app/cache"] {
        assert!(!out.join(gone).exists(), "{gone} was excluded");
    }
    let bad = ibs_engine::SourceSpec {
        name: "s".into(),
        origin: ibs_engine::SourceOrigin::Tree {
            root: src,
            exclude: vec!["a[".into()],
        },
    };
    let err = ibs_engine::backup(
        env.repo.clone(),
        &env.state,
        ibs_engine::BackupOptions {
            sources: vec![bad],
            threads: 1,
            lock_wait: Default::default(),
            progress: Default::default(),
        },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("exclude pattern"), "{err}");
}

#[tokio::test]
async fn a_failed_non_essential_source_keeps_the_backup_recovery_ready() {
    let env = env().await;
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("ok"), b"fine").unwrap();
    let sources = vec![
        ibs_engine::SourceSpec {
            name: "s".into(),
            origin: ibs_engine::SourceOrigin::Path(src),
        },
        ibs_engine::SourceSpec {
            name: "mem".into(),
            origin: ibs_engine::SourceOrigin::Path("/proc/self/mem".into()),
        },
    ];
    let extras = ibs_engine::BackupExtras {
        essential: Some(["s".to_string()].into_iter().collect()),
        ..Default::default()
    };
    let opts = ibs_engine::BackupOptions {
        sources,
        threads: 1,
        lock_wait: Default::default(),
        progress: Default::default(),
    };
    let r = ibs_engine::backup_with(env.repo.clone(), &env.state, opts, extras)
        .await
        .unwrap();
    assert_eq!(
        r.catalog.status,
        ibs_repo::manifest::BackupStatus::PartialSucceeded
    );
    assert!(r.catalog.is_recovery_ready());
    assert!(
        !r.catalog
            .sources
            .iter()
            .find(|s| s.name == "mem")
            .unwrap()
            .essential
    );
}

/// A caller's own id (the controller's job id) names the backup; a malformed id or one that
/// already names a backup is refused before anything is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_backup_id_names_the_backup_and_a_bad_one_is_refused() {
    let env = env().await;
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"one id").unwrap();
    let run = |id: &str| {
        let opts = ibs_engine::BackupOptions {
            sources: vec![ibs_engine::SourceSpec {
                name: "s".into(),
                origin: ibs_engine::SourceOrigin::Path(src.clone()),
            }],
            threads: 1,
            lock_wait: Default::default(),
            progress: Default::default(),
        };
        let extras = ibs_engine::BackupExtras {
            backup_id: Some(id.to_owned()),
            ..Default::default()
        };
        ibs_engine::backup_with(env.repo.clone(), &env.state, opts, extras)
    };
    let id = "20261204T220000Z-0a1b2c3d";
    assert_eq!(run(id).await.unwrap().catalog.backup_id, id);
    for bad in [id, "../../etc/passwd", "20261204T220000Z-0A1B2C3D"] {
        let e = run(bad).await.unwrap_err();
        assert!(
            matches!(e, ibs_engine::EngineError::BackupIdUnusable { .. }),
            "{bad}: {e}"
        );
    }
    assert_eq!(
        env.repo.list_backup_ids().await.unwrap(),
        vec![id.to_owned()]
    );
}

/// Backs up the folder `src` as source `name`, counting progress into `progress`.
async fn backup_reporting_to(
    env: &Env,
    name: &str,
    src: &std::path::Path,
    progress: std::sync::Arc<ibs_engine::progress::Progress>,
) -> Result<ibs_engine::BackupReport, ibs_engine::EngineError> {
    let spec = ibs_engine::SourceSpec {
        name: name.into(),
        origin: ibs_engine::SourceOrigin::Path(src.to_path_buf()),
    };
    let opts = ibs_engine::BackupOptions {
        sources: vec![spec],
        threads: 1,
        lock_wait: Default::default(),
        progress,
    };
    ibs_engine::backup(env.repo.clone(), &env.state, opts).await
}

#[tokio::test]
async fn a_source_the_parent_backup_had_takes_its_progress_totals_from_that_backup() {
    let env = env().await;
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..5 {
        fs::write(src.join(format!("d/f{i}")), vec![i as u8; 1000]).unwrap();
    }
    let run = |progress| backup_reporting_to(&env, "s", &src, progress);
    let first = run(Default::default()).await.unwrap();
    let parent = &first.catalog.sources[0];
    assert_eq!(parent.files, 5);
    // The tree grows; the next backup's totals are the parent's (no second walk of the tree beside
    // the backup's own), set before it reads anything, while its done counts are what it read.
    fs::write(src.join("d/new"), vec![9u8; 50_000]).unwrap();
    let progress: std::sync::Arc<ibs_engine::progress::Progress> = Default::default();
    let second = run(progress.clone()).await.unwrap();
    let p = progress.snapshot();
    assert_eq!((p.files_total, p.bytes_total), (parent.files, parent.bytes));
    assert_eq!(second.catalog.sources[0].files, 6);
    assert_eq!(p.files_done, 6);
}

#[tokio::test]
async fn a_new_source_is_walked_for_its_totals_only_when_someone_watches_the_progress() {
    let env = env().await;
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..5 {
        fs::write(src.join(format!("d/f{i}")), vec![i as u8; 1000]).unwrap();
    }
    let run = |progress, name| backup_reporting_to(&env, name, &src, progress);
    // Nobody watches: no estimate walk runs, so the totals stay unknown; the done counts are kept.
    let unwatched = std::sync::Arc::new(ibs_engine::progress::Progress::unwatched());
    run(unwatched.clone(), "a").await.unwrap();
    let p = unwatched.snapshot();
    assert_eq!((p.files_total, p.bytes_total, p.files_done), (0, 0, 5));
    // Watched, a source new to the writer (no parent has it) is walked on a thread of its own.
    let watched: std::sync::Arc<ibs_engine::progress::Progress> = Default::default();
    run(watched.clone(), "b").await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while watched.snapshot().files_total == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let p = watched.snapshot();
    assert_eq!((p.files_total, p.bytes_total), (5, 5000));
}
