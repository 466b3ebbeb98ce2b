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
        ..Default::default()
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
async fn special_entries_in_a_format_1_tree_are_refused() {
    let env = env().await;
    std::fs::create_dir_all(env.path("outside")).unwrap();
    std::fs::write(env.path("outside/keep"), b"k").unwrap();
    // A character device, a block device, a FIFO and a hard link, as a crafted format-1 manifest
    // might list them: format 1 has no such kinds.
    for kind in ["c", "b", "p", "h"] {
        let line = format!(
            r#"{{"p":"dev-{kind}","t":"{kind}","m":8630,"mt":0,"u":0,"g":0,"s":0,"l":"x"}}"#
        );
        let id = crafted_backup_in(
            &env,
            b"{\"tree_format\":1}\n",
            &[entry(b"", EntryKind::Dir)],
            &[],
            &[line.as_bytes()],
        )
        .await;
        let target = env.path(&format!("target-{kind}"));
        let err = restore(&env, &id, &target, Some("evil"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("tree format 1"), "{kind}: {err}");
        assert!(
            !target.join(format!("dev-{kind}")).exists(),
            "no special file is created"
        );
    }
    outside_untouched(&env.path("outside"));
}

/// A real backup of a small tree under source `data`: `a/b/c.txt`, `f.txt` (0600), `g.txt`, and
/// the symlink `l -> f.txt`.
async fn data_backup(env: &Env) -> String {
    let src = env.path("src");
    std::fs::create_dir_all(src.join("a/b")).unwrap();
    std::fs::write(src.join("a/b/c.txt"), b"deep").unwrap();
    std::fs::write(src.join("f.txt"), b"restored f").unwrap();
    std::fs::set_permissions(
        src.join("f.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(src.join("g.txt"), b"restored g").unwrap();
    std::os::unix::fs::symlink("f.txt", src.join("l")).unwrap();
    backup(env, &[("data", &src)]).await.catalog.backup_id
}

fn outside_with_keep(env: &Env) -> std::path::PathBuf {
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("keep"), b"k").unwrap();
    outside
}

#[tokio::test]
async fn a_symlink_planted_at_target_source_is_not_followed() {
    // A whole-backup restore puts source `data` in `TARGET/data`; someone planted `data -> outside`.
    let env = env().await;
    let id = data_backup(&env).await;
    let outside = outside_with_keep(&env);
    let target = env.path("target");
    std::fs::create_dir_all(&target).unwrap();
    std::os::unix::fs::symlink(&outside, target.join("data")).unwrap();
    let r = restore(&env, &id, &target, None).await;
    outside_untouched(&outside);
    let err = r.unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "{}: exists and is not a directory",
            target.join("data").display()
        )),
        "{err}"
    );
    assert!(std::fs::symlink_metadata(target.join("data"))
        .unwrap()
        .is_symlink());
}

#[tokio::test]
async fn a_symlink_planted_at_a_deeper_folder_is_not_followed() {
    let env = env().await;
    let id = data_backup(&env).await;
    let outside = outside_with_keep(&env);
    let target = env.path("target");
    std::fs::create_dir_all(target.join("data/a")).unwrap();
    std::os::unix::fs::symlink(&outside, target.join("data/a/b")).unwrap();
    let r = restore(&env, &id, &target, None).await;
    outside_untouched(&outside);
    let err = r.unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "{}: exists and is not a directory (it is a symlink)",
            target.join("data/a/b").display()
        )),
        "{err}"
    );
}

#[tokio::test]
async fn links_planted_where_files_go_are_replaced_not_followed() {
    // `f.txt -> outside/keep`, `g.txt` a hard link to `outside/keep`, `l -> outside`: each name is
    // replaced by the restored entry; `outside/keep` keeps its bytes and its mode.
    use std::os::unix::fs::PermissionsExt;
    let env = env().await;
    let id = data_backup(&env).await;
    let outside = outside_with_keep(&env);
    let keep = outside.join("keep");
    std::fs::set_permissions(&keep, std::fs::Permissions::from_mode(0o644)).unwrap();
    let data = env.path("target/data");
    std::fs::create_dir_all(&data).unwrap();
    std::os::unix::fs::symlink(&keep, data.join("f.txt")).unwrap();
    std::fs::hard_link(&keep, data.join("g.txt")).unwrap();
    std::os::unix::fs::symlink(&outside, data.join("l")).unwrap();
    let r = restore(&env, &id, &env.path("target"), None).await.unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    outside_untouched(&outside);
    assert_eq!(std::fs::read(&keep).unwrap(), b"k");
    assert_eq!(
        std::fs::metadata(&keep).unwrap().permissions().mode() & 0o7777,
        0o644
    );
    let f = std::fs::symlink_metadata(data.join("f.txt")).unwrap();
    assert!(f.is_file());
    assert_eq!(f.permissions().mode() & 0o7777, 0o600);
    assert_eq!(std::fs::read(data.join("f.txt")).unwrap(), b"restored f");
    assert_eq!(std::fs::read(data.join("g.txt")).unwrap(), b"restored g");
    assert_eq!(
        std::fs::read_link(data.join("l")).unwrap(),
        std::path::Path::new("f.txt")
    );
}

#[tokio::test]
async fn entries_through_a_symlink_entry_of_the_same_tree_are_refused() {
    let env = env().await;
    let outside = outside_with_keep(&env);
    let link = |path: &[u8]| {
        let mut l = entry(path, EntryKind::Symlink);
        l.target = Some(outside.to_string_lossy().as_bytes().to_vec());
        l
    };
    // A folder (and a file in it) below a symlink entry.
    let entries = vec![
        entry(b"", EntryKind::Dir),
        link(b"lnk"),
        entry(b"lnk/sub", EntryKind::Dir),
        entry(b"lnk/sub/pwned", EntryKind::File),
    ];
    let id = crafted_backup(&env, &entries, &[(b"lnk/sub/pwned", b"evil")]).await;
    let err = restore(&env, &id, &env.path("t1"), Some("evil"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("parent directory is not part of the restore"),
        "{err}"
    );
    // The source's own entry as a symlink.
    let entries = vec![link(b""), entry(b"pwned", EntryKind::File)];
    let id = crafted_backup(&env, &entries, &[(b"pwned", b"evil")]).await;
    let err = restore(&env, &id, &env.path("t2"), Some("evil"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the source's own entry is not a directory"),
        "{err}"
    );
    // A symlink entry with the name of a folder of the same tree, between the folder and its file:
    // the folder's subtree no longer follows it directly, and the file is refused.
    let entries = vec![
        entry(b"", EntryKind::Dir),
        entry(b"d", EntryKind::Dir),
        link(b"d"),
        entry(b"d/f", EntryKind::File),
    ];
    let id = crafted_backup(&env, &entries, &[(b"d/f", b"inside")]).await;
    let err = restore(&env, &id, &env.path("t4"), Some("evil"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("malformed manifest"), "{err}");
    // The same symlink after the folder's subtree: the folder and its file stay, the symlink is
    // reported.
    let entries = vec![
        entry(b"", EntryKind::Dir),
        entry(b"d", EntryKind::Dir),
        entry(b"d/f", EntryKind::File),
        link(b"d"),
    ];
    let id = crafted_backup(&env, &entries, &[(b"d/f", b"inside")]).await;
    let t3 = env.path("t3");
    let r = restore(&env, &id, &t3, Some("evil")).await.unwrap();
    assert!(
        r.errors
            .iter()
            .any(|e| e.contains("a directory exists where the symlink goes")),
        "{:?}",
        r.errors
    );
    assert_eq!(std::fs::read(t3.join("d/f")).unwrap(), b"inside");
    outside_untouched(&outside);
}

/// A hard-link entry may only give another name to a multiply-linked file this restore wrote: not
/// to a file outside the target, not to a file that was already in the target, not to a file of
/// the backup that had one name.
#[tokio::test]
async fn hard_links_name_only_files_this_restore_wrote() {
    let env = env().await;
    std::fs::create_dir_all(env.path("outside")).unwrap();
    std::fs::write(env.path("outside/keep"), b"k").unwrap();
    let target = env.path("target");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("already-there"), b"the operator's file").unwrap();
    let link = |name: &[u8], to: &[u8]| TreeEntry {
        target: Some(to.to_vec()),
        ..entry(name, EntryKind::HardLink)
    };
    let mut leader = entry(b"leader", EntryKind::File);
    leader.link_leader = true;
    let entries = vec![
        entry(b"", EntryKind::Dir),
        leader,
        entry(b"single", EntryKind::File),
        link(b"ok", b"leader"),
        link(b"to-outside", b"../outside/keep"),
        link(b"to-existing", b"already-there"),
        link(b"to-single", b"single"),
    ];
    let id = crafted_backup(&env, &entries, &[(b"leader", b"L"), (b"single", b"S")]).await;
    let r = restore(&env, &id, &target, Some("evil")).await.unwrap();
    outside_untouched(&env.path("outside"));
    use std::os::unix::fs::MetadataExt;
    let ino = |p: &str| std::fs::metadata(target.join(p)).unwrap().ino();
    assert_eq!(ino("ok"), ino("leader"), "the honest link is made");
    for bad in ["to-outside", "to-existing", "to-single"] {
        assert!(!target.join(bad).exists(), "{bad} must not be created");
        assert!(
            r.errors.iter().any(|e| e.contains(bad)),
            "{bad} is reported: {:?}",
            r.errors
        );
    }
    assert_eq!(
        std::fs::metadata(target.join("already-there"))
            .unwrap()
            .nlink(),
        1
    );
}
