//! Corruption of every kind of repository object is detected and named; restore of a damaged backup
//! fails loudly for the affected files only and never leaves wrong bytes.

mod common;
use common::*;
use ibs_engine::check::{check, CheckOptions, CheckReport};
use std::path::{Path, PathBuf};

async fn run_check(env: &Env, read_data: bool, with_pfx: bool) -> CheckReport {
    let repo = env.reopen().await;
    check(
        repo,
        CheckOptions {
            read_data,
            unlock: with_pfx.then(|| env.unlock()),
            state: Some(env.state.clone()),
            progress: Default::default(),
            lock_wait: Default::default(),
        },
    )
    .await
    .unwrap()
}

fn objects(env: &Env, prefix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![env.repo_dir().join(prefix)];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if p.exists() {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn flip(p: &Path, at: usize) {
    let mut b = std::fs::read(p).unwrap();
    let i = at.min(b.len() - 1);
    b[i] ^= 0x40;
    std::fs::write(p, b).unwrap();
}

/// A pack holding no tree chunk of any of `ids`, and an offset inside one of its chunks.
async fn data_chunk_outside_trees(env: &Env, ids: &[String]) -> (PathBuf, usize) {
    data_chunk(env, ids, true).await
}

/// A pack and an offset inside one of its chunks that is no tree chunk of any of `ids`; with
/// `pack_without_trees`, in a pack that holds no tree chunk at all.
async fn data_chunk(env: &Env, ids: &[String], pack_without_trees: bool) -> (PathBuf, usize) {
    let repo = env.reopen().await;
    let (index, _) = repo.load_index(&env.state.keys.metadata).await.unwrap();
    let unlock = env.unlock();
    let mut tree_packs = std::collections::HashSet::new();
    let mut tree_chunks = std::collections::HashSet::new();
    for id in ids {
        let m = repo.read_manifest(id).await.unwrap();
        let key_id = ibs_repo::ids::KeyId::from_hex(&m.catalog.data_key_id).unwrap();
        let data_key = repo.open_data_key(&key_id, &unlock, None).await.unwrap();
        for src in m.open_tree(&data_key).unwrap().sources {
            for c in &src.tree {
                let c = ibs_repo::ids::ChunkId::from_hex(c).unwrap();
                tree_packs.insert(index.get(&c).unwrap().pack);
                tree_chunks.insert(c);
            }
        }
    }
    let loc = index
        .chunk_ids()
        .filter(|c| !tree_chunks.contains(*c))
        .filter_map(|c| index.get(c))
        .find(|l| !pack_without_trees || !tree_packs.contains(&l.pack))
        .expect("a file-data chunk (in a pack with file data only, if asked)");
    let pack = loc.pack;
    let path = objects(env, "packs")
        .into_iter()
        .find(|p| p.file_name().unwrap().to_string_lossy() == pack.to_hex())
        .unwrap();
    (path, loc.offset as usize + loc.length as usize / 2)
}

async fn two_backups() -> (Env, Vec<String>) {
    let env = env().await;
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..6 {
        std::fs::write(src.join(format!("f{i}")), bytes(i, 6 << 20)).unwrap();
    }
    let a = backup(&env, &[("s", &src)]).await.catalog.backup_id;
    std::fs::write(src.join("extra"), bytes(100, 1 << 20)).unwrap();
    let b = backup(&env, &[("s", &src)]).await.catalog.backup_id;
    (env, vec![a, b])
}

/// A restore left none of its temporary files in `dir`.
fn assert_no_temporaries(dir: &Path) {
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".ibs-restore"))
        .collect();
    assert!(leftovers.is_empty(), "no temporaries left: {leftovers:?}");
}

fn rel(env: &Env, p: &Path) -> String {
    p.strip_prefix(env.repo_dir())
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[tokio::test]
async fn healthy_repository_has_no_problems_at_every_depth() {
    let (env, _) = two_backups().await;
    for (rd, pfx) in [(false, false), (true, false), (true, true)] {
        let r = run_check(&env, rd, pfx).await;
        assert!(r.problems.is_empty(), "{:?}", r.problems);
    }
    let r = run_check(&env, true, true).await;
    assert!(r.chunks_verified > 30, "{}", r.chunks_verified);
}

#[tokio::test]
async fn damaged_pack_is_named_with_affected_backups_and_restore_never_writes_wrong_bytes() {
    let (env, ids) = two_backups().await;
    let packs = objects(&env, "packs");
    assert!(packs.len() >= 3, "{} packs", packs.len());
    // Damage a file-data chunk, never a tree chunk: restore must still read the tree to name the
    // affected files. (Sealing is parallel, so which pack holds a tree chunk, and where, varies.)
    let (victim, offset) = data_chunk_outside_trees(&env, &ids).await;
    let victim = &victim;
    flip(victim, offset);
    // Without any key, --read-data still finds it.
    let repo = env.reopen().await;
    let nokey = check(
        repo,
        ibs_engine::check::CheckOptions {
            read_data: true,
            unlock: None,
            state: None,
            progress: Default::default(),
            lock_wait: Default::default(),
        },
    )
    .await
    .unwrap();
    assert!(
        nokey.problems.iter().any(|p| p.object == rel(&env, victim)),
        "{:?}",
        nokey.problems
    );
    let r = run_check(&env, true, false).await;
    let p = r
        .problems
        .iter()
        .find(|p| p.object == rel(&env, victim))
        .unwrap_or_else(|| panic!("{:?}", r.problems));
    assert!(p.detail.contains("hash"), "{p:?}");
    assert!(
        !p.backups.is_empty() && p.backups.iter().all(|b| ids.contains(b)),
        "{p:?}"
    );
    // A structure-only check does not read packs.
    assert!(run_check(&env, false, false).await.problems.is_empty());

    let out = env.path("out");
    let report = restore(&env, &ids[1], &out, Some("s")).await.unwrap();
    assert!(
        !report.errors.is_empty(),
        "some files depend on the damaged pack"
    );
    let src = env.path("src");
    let mut restored = 0;
    for i in 0..6 {
        let name = format!("f{i}");
        let failed = report
            .errors
            .iter()
            .any(|e| e.contains(&format!("/{name}:")));
        let path = out.join(&name);
        if failed {
            assert!(
                !path.exists(),
                "{name} failed and must not exist with partial bytes"
            );
        } else {
            assert!(
                std::fs::read(&path).unwrap() == std::fs::read(src.join(&name)).unwrap(),
                "{name} restored byte-identical"
            );
            restored += 1;
        }
    }
    assert!(restored > 0, "files outside the damaged pack still restore");
    assert_no_temporaries(&out);
}

#[tokio::test]
async fn truncated_and_deleted_packs_are_named() {
    let (env, _) = two_backups().await;
    let packs = objects(&env, "packs");
    let b = std::fs::read(&packs[0]).unwrap();
    std::fs::write(&packs[0], &b[..b.len() / 2]).unwrap();
    std::fs::remove_file(&packs[1]).unwrap();
    let r = run_check(&env, false, false).await;
    for (p, what) in [(&packs[0], "bytes"), (&packs[1], "missing")] {
        let hit = r
            .problems
            .iter()
            .find(|x| x.object == rel(&env, p))
            .unwrap_or_else(|| panic!("{:?}", r.problems));
        assert!(hit.detail.contains(what), "{hit:?}");
        assert!(!hit.backups.is_empty());
    }
}

#[tokio::test]
async fn damaged_index_segment_is_named() {
    let (env, _) = two_backups().await;
    let seg = &objects(&env, "index")[0];
    flip(seg, 50);
    let r = run_check(&env, false, false).await;
    assert!(
        r.problems.iter().any(|p| p.object == rel(&env, seg)),
        "{:?}",
        r.problems
    );
}

#[tokio::test]
async fn damaged_manifest_is_named_and_does_not_list_as_healthy() {
    let (env, ids) = two_backups().await;
    let m = env.repo_dir().join(format!("backups/{}", ids[0]));
    let len = std::fs::metadata(&m).unwrap().len() as usize;
    flip(&m, len - 5); // inside the sealed refs part
    let r = run_check(&env, false, false).await;
    let p = r
        .problems
        .iter()
        .find(|p| p.object == format!("backups/{}", ids[0]))
        .unwrap_or_else(|| panic!("{:?}", r.problems));
    assert_eq!(p.backups, vec![ids[0].clone()]);
    // A manifest renamed to another backup's name is caught too (replace with another valid object).
    std::fs::copy(env.repo_dir().join(format!("backups/{}", ids[1])), &m).unwrap();
    let r = run_check(&env, false, false).await;
    assert!(r.problems.iter().any(|p| p.object == format!("backups/{}", ids[0]) && p.detail.contains("names backup")), "{:?}", r.problems);
}

#[tokio::test]
async fn damaged_or_missing_data_key_envelope_is_named() {
    let (env, ids) = two_backups().await;
    let envs = objects(&env, "keys/data");
    assert_eq!(envs.len(), 2);
    std::fs::remove_file(&envs[0]).unwrap();
    let r = run_check(&env, false, false).await;
    let p = r
        .problems
        .iter()
        .find(|p| p.object == rel(&env, &envs[0]))
        .unwrap_or_else(|| panic!("{:?}", r.problems));
    assert!(
        p.detail.contains("missing") && !p.backups.is_empty(),
        "{p:?}"
    );
    // Swapping in the other backup's envelope is detected when decrypting (the payload names its key).
    std::fs::copy(&envs[1], &envs[0]).unwrap();
    let r = run_check(&env, true, true).await;
    assert!(!r.problems.is_empty(), "a swapped envelope is detected");
    let _ = ids;
}

#[tokio::test]
async fn damaged_config_is_refused_at_open() {
    let (env, _) = two_backups().await;
    let cfg = env.repo_dir().join("config");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"version\": 1", "\"version\": 7");
    std::fs::write(&cfg, text).unwrap();
    let storage: ibs_storage::DynStorage =
        std::sync::Arc::new(ibs_storage::LocalStorage::open(env.repo_dir()).unwrap());
    let err = ibs_repo::Repository::open(
        storage.clone(),
        std::sync::Arc::new(ibs_repo::clock::SystemClock),
    )
    .await
    .err()
    .unwrap();
    assert!(
        matches!(
            err,
            ibs_repo::RepoError::UnsupportedVersion { found: 7, .. }
        ),
        "{err}"
    );
    std::fs::write(&cfg, b"{not json").unwrap();
    let err =
        ibs_repo::Repository::open(storage, std::sync::Arc::new(ibs_repo::clock::SystemClock))
            .await
            .err()
            .unwrap();
    assert!(err.to_string().contains("config"), "{err}");
}

#[tokio::test]
async fn repository_key_envelope_swapped_for_another_repositorys_is_refused() {
    let (a, _) = two_backups().await;
    let b = env().await;
    let thumb = a.ident.certificate().thumbprint().to_owned();
    let name = format!("keys/repo-{thumb}.p7m");
    std::fs::copy(b.repo_dir().join(&name), a.repo_dir().join(&name)).unwrap();
    let repo = a.reopen().await;
    let err = repo.open_repo_keys(&a.unlock()).await.err().unwrap();
    assert!(err.to_string().contains("another repository"), "{err}");
}

/// The chunk ids of `data` as the backup cuts and names them.
fn chunk_ids(env: &Env, data: &[u8]) -> Vec<ibs_repo::ids::ChunkId> {
    let mut chunker = ibs_engine::chunker::Chunker::new(&env.repo.config().chunker);
    chunker.push(data);
    let mut ids = Vec::new();
    chunker.drain(true, |c| ids.push(env.state.keys.dedup.chunk_id(c)));
    ids
}

#[tokio::test]
async fn large_files_restore_in_pieces_sparse_and_a_damaged_piece_leaves_no_file() {
    use std::io::{Seek, SeekFrom, Write};
    let env = env().await;
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    // "big": 10 MiB of data, a 20 MiB hole, 10 MiB of data (restored by several workers at once:
    // files of 16 MiB and more are split into pieces of about 8 MiB).
    let (head, tail) = (bytes(1, 10 << 20), bytes(2, 10 << 20));
    let mut f = std::fs::File::create(src.join("big")).unwrap();
    f.write_all(&head).unwrap();
    f.seek(SeekFrom::Start(30 << 20)).unwrap();
    f.write_all(&tail).unwrap();
    drop(f);
    std::fs::write(src.join("big2"), bytes(3, 24 << 20)).unwrap();
    let id = backup(&env, &[("s", &src)]).await.catalog.backup_id;

    let out = env.path("out");
    let report = restore(&env, &id, &out, Some("s")).await.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_same_tree(&src, &out);
    let m = std::fs::metadata(out.join("big")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert!(
        m.blocks() * 512 < 30 << 20,
        "the 20 MiB zero run stays a hole ({} blocks)",
        m.blocks()
    );

    // Damage one chunk in the middle of "big"'s tail: that file fails as a whole, "big2" does not.
    let data = std::fs::read(src.join("big")).unwrap();
    let ids = chunk_ids(&env, &data);
    let victim = ids[ids.len() * 3 / 4];
    let repo = env.reopen().await;
    let (index, _) = repo.load_index(&env.state.keys.metadata).await.unwrap();
    let loc = index.get(&victim).unwrap();
    let pack = objects(&env, "packs")
        .into_iter()
        .find(|p| p.file_name().unwrap().to_string_lossy() == loc.pack.to_hex())
        .unwrap();
    flip(&pack, loc.offset as usize + loc.length as usize / 2);
    let out2 = env.path("out2");
    let report = restore(&env, &id, &out2, Some("s")).await.unwrap();
    assert!(
        report.errors.iter().any(|e| e.contains("/big:")),
        "{:?}",
        report.errors
    );
    assert!(!out2.join("big").exists(), "no partial file under its name");
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(
        std::fs::read(out2.join("big2")).unwrap() == std::fs::read(src.join("big2")).unwrap(),
        "the undamaged large file restores byte-identical"
    );
    assert_no_temporaries(&out2);
}

/// Small files are restored from memory under their own names (no temporary): a damaged chunk
/// must still leave nothing under its file's name, and every other file byte-identical.
#[tokio::test]
async fn a_damaged_chunk_of_a_small_file_leaves_nothing_under_its_name() {
    let env = env().await;
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..40 {
        std::fs::write(src.join(format!("f{i}")), bytes(i, 48 << 10)).unwrap();
    }
    let id = backup(&env, &[("s", &src)]).await.catalog.backup_id;
    let (victim, offset) = data_chunk(&env, std::slice::from_ref(&id), false).await;
    flip(&victim, offset);
    let out = env.path("out");
    let report = restore(&env, &id, &out, Some("s")).await.unwrap();
    let mut failed = 0;
    for i in 0..40 {
        let name = format!("f{i}");
        let path = out.join(&name);
        if report
            .errors
            .iter()
            .any(|e| e.contains(&format!("/{name}:")))
        {
            assert!(!path.exists(), "{name} failed and must not exist");
            failed += 1;
        } else {
            assert_eq!(
                std::fs::read(&path).unwrap(),
                std::fs::read(src.join(&name)).unwrap(),
                "{name} restored byte-identical"
            );
        }
    }
    assert_eq!(
        failed, 1,
        "one damaged chunk fails one file: {:?}",
        report.errors
    );
    assert_no_temporaries(&out);
}
