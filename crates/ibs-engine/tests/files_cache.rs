//! The files cache across real backups: an unchanged file is taken from the cache without being
//! read, a changed one is read again.
//!
//! To tell the two apart the test points cache rows at another file's chunks (same size, other
//! bytes): only a backup that takes a file from the cache restores those bytes for it.

mod common;
use common::*;
use std::fs;
use std::os::unix::fs::MetadataExt;

#[tokio::test]
async fn the_next_backup_takes_unchanged_files_from_the_cache_and_reads_changed_ones() {
    let env = env().await;
    let src = env.path("src");
    fs::create_dir_all(src.join("etc/sub")).unwrap();
    let files = [
        ("etc/kept", b"kept1"),
        ("etc/sub/deep", b"deep2"),
        ("etc/zz-after-sub", b"after"),
        ("etc/touched", b"touch"),
    ];
    for (p, bytes) in files {
        fs::write(src.join(p), bytes).unwrap();
    }
    fs::write(src.join("decoy"), b"decoy").unwrap();
    backup(&env, &[("s", &src)]).await;

    // The cache names no file: find each row by its inode.
    let ino = |p: &str| fs::metadata(src.join(p)).unwrap().ino() as i64;
    let db = rusqlite::Connection::open(env.state.files_cache_path()).unwrap();
    for (p, _) in files {
        let rows = db
            .execute(
                "UPDATE files SET chunks = (SELECT chunks FROM files WHERE ino = ?1) WHERE ino = ?2",
                [ino("decoy"), ino(p)],
            )
            .unwrap();
        assert_eq!(rows, 1, "{p} has its row");
    }
    drop(db);
    // Same bytes, another mtime: the cache must not be trusted for it.
    filetime::set_file_mtime(
        src.join("etc/touched"),
        filetime::FileTime::from_unix_time(1_000_000, 0),
    )
    .unwrap();

    let second = backup(&env, &[("s", &src)]).await;
    let out = env.path("out");
    let r = restore(&env, &second.catalog.backup_id, &out, Some("s"))
        .await
        .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    // Taken from the cache, a folder's file met after its subfolder's included:
    for p in ["etc/kept", "etc/sub/deep", "etc/zz-after-sub"] {
        assert_eq!(fs::read(out.join(p)).unwrap(), b"decoy", "{p}");
    }
    // Read again:
    assert_eq!(fs::read(out.join("etc/touched")).unwrap(), b"touch");
}

/// A cache row whose chunks the repository no longer holds (pruned since) sends the reader back
/// to the file: it is opened again by its path (and read only if it is still the file the walk
/// stat'ed, by device and inode; that refusal needs a swap between the walk and the read, which
/// `walk_race.rs` races but cannot aim at this path), and its bytes are stored again.
#[tokio::test]
async fn a_cached_file_whose_chunks_are_gone_is_read_again_from_the_file_the_walk_met() {
    let env = env().await;
    let src = env.path("src");
    fs::create_dir_all(src.join("etc")).unwrap();
    fs::write(src.join("etc/app.conf"), b"workers = 4\n").unwrap();
    backup(&env, &[("s", &src)]).await;

    let db = rusqlite::Connection::open(env.state.files_cache_path()).unwrap();
    let ino = fs::metadata(src.join("etc/app.conf")).unwrap().ino() as i64;
    let rows = db
        .execute(
            "UPDATE files SET chunks = ?1 WHERE ino = ?2",
            rusqlite::params![vec![0xABu8; 32], ino],
        )
        .unwrap();
    assert_eq!(rows, 1);
    drop(db);

    let second = backup(&env, &[("s", &src)]).await;
    assert!(second.errors.is_empty(), "{:?}", second.errors);
    let out = env.path("out");
    let r = restore(&env, &second.catalog.backup_id, &out, Some("s"))
        .await
        .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        fs::read(out.join("etc/app.conf")).unwrap(),
        b"workers = 4\n"
    );
}
