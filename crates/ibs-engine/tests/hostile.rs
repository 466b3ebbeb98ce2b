//! Restore never writes outside its target, whatever a (crafted or damaged) manifest says.

mod common;
use common::*;
use ibs_repo::tree::{EntryKind, TreeEntry};

fn entry(path: &[u8], kind: EntryKind) -> TreeEntry {
    TreeEntry {
        path: path.to_vec(),
        kind,
        mode: if kind == EntryKind::Dir {
            0o40755
        } else {
            0o100644
        },
        mtime_ns: 0,
        uid: 0,
        gid: 0,
        size: 0,
        chunks: vec![],
        target: None,
        error: None,
        changed: false,
        sparse: false,
    }
}

fn outside_untouched(outside: &std::path::Path) {
    let names: Vec<_> = std::fs::read_dir(outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("keep")],
        "nothing was written outside the target"
    );
}

async fn attempt(
    paths: Vec<TreeEntry>,
    files: &[(&[u8], &[u8])],
) -> (
    Env,
    Result<ibs_engine::RestoreReport, ibs_engine::EngineError>,
) {
    let env = env().await;
    std::fs::create_dir_all(env.path("outside")).unwrap();
    std::fs::write(env.path("outside/keep"), b"k").unwrap();
    let mut entries = vec![entry(b"", EntryKind::Dir)];
    entries.extend(paths);
    let id = crafted_backup(&env, &entries, files).await;
    let r = restore(&env, &id, &env.path("target"), Some("evil")).await;
    outside_untouched(&env.path("outside"));
    (env, r)
}

#[tokio::test]
async fn dot_dot_paths_are_refused() {
    let (_env, r) = attempt(
        vec![entry(b"../outside/pwned", EntryKind::File)],
        &[(b"../outside/pwned", b"evil")],
    )
    .await;
    let err = r.unwrap_err().to_string();
    assert!(err.contains("unsafe path"), "{err}");
}

#[tokio::test]
async fn absolute_paths_are_refused() {
    let (env, r) = attempt(
        vec![entry(b"/tmp/pwned-by-ibs-test", EntryKind::File)],
        &[(b"/tmp/pwned-by-ibs-test", b"evil")],
    )
    .await;
    assert!(r.unwrap_err().to_string().contains("unsafe path"));
    assert!(!std::path::Path::new("/tmp/pwned-by-ibs-test").exists());
    drop(env);
}

#[tokio::test]
async fn a_symlink_is_never_written_through() {
    let env = env().await;
    std::fs::create_dir_all(env.path("outside")).unwrap();
    std::fs::write(env.path("outside/keep"), b"k").unwrap();
    let mut link = entry(b"lnk", EntryKind::Symlink);
    link.target = Some(env.path("outside").to_string_lossy().as_bytes().to_vec());
    let entries = vec![
        entry(b"", EntryKind::Dir),
        link,
        entry(b"lnk/pwned", EntryKind::File),
    ];
    let id = crafted_backup(&env, &entries, &[(b"lnk/pwned", b"evil")]).await;
    let r = restore(&env, &id, &env.path("target"), Some("evil")).await;
    outside_untouched(&env.path("outside"));
    assert!(r.is_err(), "a file under a symlink entry is refused");
}

#[tokio::test]
async fn a_symlink_planted_in_the_target_is_not_followed() {
    // The target already holds `sub -> ../outside`; the backup has a directory `sub` with a file.
    let env = env().await;
    std::fs::create_dir_all(env.path("outside")).unwrap();
    std::fs::write(env.path("outside/keep"), b"k").unwrap();
    std::fs::create_dir_all(env.path("target")).unwrap();
    std::os::unix::fs::symlink(env.path("outside"), env.path("target/sub")).unwrap();
    let entries = vec![
        entry(b"", EntryKind::Dir),
        entry(b"sub", EntryKind::Dir),
        entry(b"sub/pwned", EntryKind::File),
    ];
    let id = crafted_backup(&env, &entries, &[(b"sub/pwned", b"evil")]).await;
    let r = restore(&env, &id, &env.path("target"), Some("evil")).await;
    outside_untouched(&env.path("outside"));
    let err = r.unwrap_err().to_string();
    assert!(err.contains("not a directory"), "{err}");
}

#[tokio::test]
async fn names_with_nul_or_empty_components_are_refused() {
    for bad in [&b"a//b"[..], b"a/./b", b"nul\0byte"] {
        let (_env, r) = attempt(vec![entry(bad, EntryKind::File)], &[(bad, b"x")]).await;
        assert!(r.is_err(), "{bad:?}");
    }
}

#[tokio::test]
async fn device_and_other_special_entries_are_refused() {
    let env = env().await;
    std::fs::create_dir_all(env.path("outside")).unwrap();
    std::fs::write(env.path("outside/keep"), b"k").unwrap();
    // A character device, a block device and a FIFO, as a crafted manifest might list them.
    for kind in ["c", "b", "p"] {
        let line =
            format!(r#"{{"p":"dev-{kind}","t":"{kind}","m":8630,"mt":0,"u":0,"g":0,"s":0}}"#);
        let id =
            crafted_backup_with_lines(&env, &[entry(b"", EntryKind::Dir)], &[], &[line.as_bytes()])
                .await;
        let target = env.path(&format!("target-{kind}"));
        let err = restore(&env, &id, &target, Some("evil"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("tree"), "{kind}: {err}");
        assert!(
            !target.join(format!("dev-{kind}")).exists(),
            "no special file is created"
        );
    }
    outside_untouched(&env.path("outside"));
}
