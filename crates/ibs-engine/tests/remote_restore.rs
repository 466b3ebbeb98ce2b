//! Restore from storage read through the runtime (a share, an object store): small files go in
//! batches, every worker cuts its chunks from pack blocks the workers share (each block read once),
//! and damage stays confined to the files it hits.
//! The repository is the real local backend behind a decorator that reports itself as remote (so
//! the engine takes the path it takes for SMB and S3) and counts range reads; the same restore on
//! a real Ceph RGW and Samba share runs in `crates/ibs/tests` (`s3_*.rs`, `smb_*.rs`).

mod common;

use async_trait::async_trait;
use bytes::Bytes;
use common::*;
use ibs_repo::clock::SystemClock;
use ibs_repo::Repository;
use ibs_storage::{
    Capabilities, DynStorage, ErrorKind, ForeignFile, LocalStorage, ObjectInfo, ObjectKey, Result,
    SpaceInfo, Storage, StorageError,
};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The local backend, reported as remote, counting range reads and the bytes they return; like a
/// share (`blocks == false`) or like an object store, which prefers large reads.
#[derive(Debug)]
struct Remote {
    inner: DynStorage,
    blocks: bool,
    /// Range reads of more than this many bytes fail as the storage's connectivity error (a
    /// gateway gone for good, after the retries a real location wraps around it).
    fail_above: u64,
    ranges: AtomicU64,
    bytes: AtomicU64,
}

#[async_trait]
impl Storage for Remote {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            local: false,
            prefers_large_reads: self.blocks,
            ..self.inner.capabilities()
        }
    }
    async fn put(&self, key: &ObjectKey, data: Bytes) -> Result<()> {
        self.inner.put(key, data).await
    }
    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &ObjectKey, offset: u64, len: u64) -> Result<Bytes> {
        self.ranges.fetch_add(1, Ordering::Relaxed);
        if len > self.fail_above {
            return Err(StorageError::new(
                ErrorKind::Connectivity,
                "get_range",
                Some(key.as_str()),
                "injected: the gateway is gone",
            ));
        }
        let got = self.inner.get_range(key, offset, len).await?;
        self.bytes.fetch_add(got.len() as u64, Ordering::Relaxed);
        Ok(got)
    }
    async fn stat(&self, key: &ObjectKey) -> Result<ObjectInfo> {
        self.inner.stat(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.inner.delete(key).await
    }
    async fn space(&self) -> Result<Option<SpaceInfo>> {
        self.inner.space().await
    }
    async fn remove_stale_temporaries(&self, older_than: std::time::Duration) -> Result<usize> {
        self.inner.remove_stale_temporaries(older_than).await
    }
    async fn list_foreign(&self) -> Result<Vec<ForeignFile>> {
        self.inner.list_foreign().await
    }
    async fn delete_foreign(&self, path: &str) -> Result<()> {
        self.inner.delete_foreign(path).await
    }
}

/// Restores `id`'s source `data` from `env`'s repository opened through [`Remote`] (an object
/// store's shared blocks if `blocks`, a share's range reads otherwise); returns the decorator with
/// its counts.
async fn restore_remote(
    env: &Env,
    id: &str,
    target: &Path,
    blocks: bool,
) -> (Arc<Remote>, ibs_engine::RestoreReport) {
    restore_failing(env, id, target, blocks, u64::MAX).await
}

/// [`restore_remote`] with range reads of more than `fail_above` bytes failing.
async fn restore_failing(
    env: &Env,
    id: &str,
    target: &Path,
    blocks: bool,
    fail_above: u64,
) -> (Arc<Remote>, ibs_engine::RestoreReport) {
    let s = Arc::new(Remote {
        inner: Arc::new(LocalStorage::open(env.repo_dir()).unwrap()),
        blocks,
        fail_above,
        ranges: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
    });
    let repo = Repository::open(s.clone(), Arc::new(SystemClock))
        .await
        .unwrap();
    let report = ibs_engine::restore(
        Arc::new(repo),
        env.unlock(),
        ibs_engine::RestoreOptions {
            backup_id: id.into(),
            target: target.into(),
            source: Some("data".into()),
            threads: 0,
            progress: Default::default(),
            lock_wait: std::time::Duration::ZERO,
            cancel: None,
        },
    )
    .await
    .unwrap();
    (s, report)
}

/// 1,500 small files in 30 folders (some identical, some empty), a 3 MiB file, a 40 MiB file
/// (restored in pieces), symlinks and a hard link.
fn tree(root: &Path) -> usize {
    let mut files = 0;
    for d in 0..30 {
        let dir = root.join(format!("etc/svc-{d:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..50 {
            let body = match f % 10 {
                0 => Vec::new(),
                1 => b"shared config line\n".repeat(40),
                _ => bytes(d * 1000 + f, 200 + (f as usize * 97) % 6000),
            };
            std::fs::write(dir.join(format!("conf-{f:02}.ini")), body).unwrap();
            files += 1;
        }
        std::os::unix::fs::symlink(format!("conf-{:02}.ini", d % 50), dir.join("current")).unwrap();
    }
    std::fs::create_dir_all(root.join("var/empty")).unwrap();
    std::fs::write(root.join("var/mid.bin"), bytes(7, 3 << 20)).unwrap();
    std::fs::write(root.join("var/big.img"), bytes(8, 40 << 20)).unwrap();
    std::fs::hard_link(root.join("var/mid.bin"), root.join("var/mid.link")).unwrap();
    files + 2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_files_restore_with_far_fewer_range_reads_than_chunks() {
    let env = env().await;
    let src = env.path("src");
    let files = tree(&src);
    let b = backup(&env, &[("data", &src)]).await;
    let stored = dir_bytes(&env.repo_dir().join("packs"));
    for blocks in [false, true] {
        let target = env.path(&format!("out-{blocks}"));
        let (store, r) = restore_remote(&env, &b.catalog.backup_id, &target, blocks).await;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(r.files as usize, files);
        assert_same_tree(&src, &target);
        // Every distinct chunk read one by one would be at least one range read per non-empty
        // small file (1,320) plus the large files' chunks; coalesced, a few per pack suffice.
        let ranges = store.ranges.load(Ordering::Relaxed);
        assert!(
            ranges < 150,
            "{ranges} range reads for {files} files (coalescing does not happen; blocks: {blocks})"
        );
        if blocks {
            // Workers cut their chunks from shared pack blocks of 4 MiB (ADR 0056): each block
            // is read once (the blocks kept hold more than this repository), plus a few reads of
            // the tree's own chunks, which the walking thread reads alone.
            let blocks = pack_blocks(&env);
            assert!(
                ranges <= blocks + 4,
                "{ranges} range reads for {blocks} pack blocks"
            );
        }
        // Bytes read past what was needed stay small.
        let read = store.bytes.load(Ordering::Relaxed);
        assert!(
            read < stored + stored / 4,
            "read {read} bytes of {stored} in packs (blocks: {blocks})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_chunk_in_a_batch_fails_only_its_own_file() {
    let env = env().await;
    let src = env.path("src");
    let files = tree(&src);
    let b = backup(&env, &[("data", &src)]).await;
    // Flip a byte inside one small file's chunk: its neighbours in the same range read are intact.
    let victim = src.join("etc/svc-07/conf-23.ini");
    let (pack, at) = locate_chunk(&env, &victim);
    let mut packed = std::fs::read(&pack).unwrap();
    packed[at] ^= 0x40;
    std::fs::write(&pack, packed).unwrap();
    // Both read paths: a share's range reads and an object store's shared blocks.
    for blocks in [false, true] {
        let target = env.path(&format!("out-{blocks}"));
        let (_, r) = restore_remote(&env, &b.catalog.backup_id, &target, blocks).await;
        assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
        assert!(r.errors[0].contains("svc-07/conf-23.ini"), "{:?}", r.errors);
        assert_eq!(r.files as usize, files - 1);
        assert!(!target.join("etc/svc-07/conf-23.ini").exists());
        for f in [
            "etc/svc-07/conf-22.ini",
            "etc/svc-07/conf-24.ini",
            "var/big.img",
        ] {
            assert_eq!(
                std::fs::read(target.join(f)).unwrap(),
                std::fs::read(src.join(f)).unwrap(),
                "{f}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_pack_fails_only_the_files_whose_chunks_it_lost() {
    let env = env().await;
    let src = env.path("src");
    let files = tree(&src);
    let b = backup(&env, &[("data", &src)]).await;
    // Cut a pack inside the chunk of the small file in the middle of its pack: the range reads
    // that cover the cut fail, and each chunk before the cut must still come back when read alone.
    let victim = {
        let (index, dedup) = reader_index(&env);
        let mut small: Vec<_> = walkdir(&src.join("etc"))
            .into_iter()
            .filter_map(|p| {
                let c = std::fs::read(&p).unwrap();
                (!c.is_empty()).then(|| (index.get(&dedup.chunk_id(&c)).unwrap(), p))
            })
            .collect();
        small.sort_by_key(|(l, _)| (l.pack, l.offset));
        let pack = small[small.len() / 2].0.pack;
        small.retain(|(l, _)| l.pack == pack);
        small.swap_remove(small.len() / 2).1
    };
    let (pack, at) = locate_chunk(&env, &victim);
    let f = std::fs::OpenOptions::new().write(true).open(&pack).unwrap();
    f.set_len(at as u64).unwrap();
    // Both read paths: a share's range reads and an object store's shared blocks.
    for blocks in [false, true] {
        let target = env.path(&format!("out-{blocks}"));
        let (_, r) = restore_remote(&env, &b.catalog.backup_id, &target, blocks).await;
        let cut = pack.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            r.errors.iter().any(|e| e
                .contains(&*victim.strip_prefix(&src).unwrap().to_string_lossy())
                && e.contains(&cut)),
            "the victim's error names its pack {cut}: {:?}",
            r.errors
        );
        // A small file restores exactly when its chunk is intact: in another pack, or wholly before
        // the cut (a failed range read must not take its intact neighbours with it).
        let (index, dedup) = reader_index(&env);
        let (mut intact, mut lost) = (0, 0);
        for e in walkdir(&src.join("etc")) {
            let rel = e.strip_prefix(&src).unwrap();
            let content = std::fs::read(&e).unwrap();
            if content.is_empty() {
                continue;
            }
            let loc = index.get(&dedup.chunk_id(&content)).unwrap();
            let whole = loc.pack.to_hex() != cut || (loc.offset + loc.length) as usize <= at;
            match std::fs::read(target.join(rel)) {
                Ok(got) => {
                    assert!(whole, "{} restored from a lost chunk", rel.display());
                    assert!(got == content, "{}", rel.display());
                    intact += 1;
                }
                Err(_) => {
                    assert!(
                        !whole,
                        "{} lost although its chunk is intact",
                        rel.display()
                    );
                    assert!(
                        r.errors.iter().any(|x| x.contains(&*rel.to_string_lossy())),
                        "{} is missing without an error",
                        rel.display()
                    );
                    lost += 1;
                }
            }
        }
        assert!(intact > 0 && lost > 0, "{intact} intact, {lost} lost");
        assert_eq!(r.files as usize + r.errors.len(), files, "{:?}", r.errors);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_fails_every_block_read_fails_the_files_once_without_reading_chunks_alone() {
    let env = env().await;
    let src = env.path("src");
    let files = tree(&src);
    let b = backup(&env, &[("data", &src)]).await;
    // The tree's own chunks are read alone (small reads); every 4 MiB block read fails.
    let target = env.path("out");
    let (store, r) = restore_failing(&env, &b.catalog.backup_id, &target, true, 1 << 20).await;
    assert!(
        !r.errors.is_empty(),
        "nothing failed although no block can be read"
    );
    for e in &r.errors {
        // A hard link's error names the file it could not link to.
        let linked = e.contains("hard link to") && e.contains("was not restored");
        assert!(e.contains("the gateway is gone") || linked, "{e}");
    }
    // Each block was asked for once: no worker repeats a failed block read, and no span falls
    // back to reading its chunks alone, which would fail the same way.
    let blocks = pack_blocks(&env);
    let ranges = store.ranges.load(Ordering::Relaxed);
    assert!(
        ranges <= blocks + 4,
        "{ranges} range reads for {blocks} pack blocks"
    );
    // Whatever was put in place is exact: only a pack's last block under 1 MiB could be read.
    let links = r
        .errors
        .iter()
        .filter(|e| e.contains("hard link to"))
        .count();
    assert_eq!(
        r.files as usize + r.errors.len() - links,
        files,
        "{:?}",
        r.errors
    );
    for f in walkdir(&target) {
        let rel = f.strip_prefix(&target).unwrap();
        assert!(
            !rel.to_string_lossy().contains(".ibs-restore-"),
            "{rel:?} left behind"
        );
        assert_eq!(
            std::fs::read(&f).unwrap(),
            std::fs::read(src.join(rel)).unwrap()
        );
    }
}

/// The index a reader of `env`'s repository uses, and the key chunk ids are computed with.
fn reader_index(env: &Env) -> (ibs_repo::index::Index, ibs_repo::crypto::SymKey) {
    let rt = tokio::runtime::Handle::current();
    let (repo, unlock) = (env.repo.clone(), env.unlock());
    tokio::task::block_in_place(|| {
        rt.block_on(async {
            let keys = repo.open_repo_keys(&unlock).await.unwrap();
            let index = ibs_engine::keysel::reader_index(&repo, &keys.metadata, &unlock)
                .await
                .unwrap();
            (index, keys.dedup)
        })
    })
}

/// Where `file`'s (single) chunk lies: its pack's path and an offset inside the sealed chunk.
fn locate_chunk(env: &Env, file: &Path) -> (std::path::PathBuf, usize) {
    let (index, dedup) = reader_index(env);
    let loc = index
        .get(&dedup.chunk_id(&std::fs::read(file).unwrap()))
        .expect("the victim's chunk is indexed");
    let hex = loc.pack.to_hex();
    let pack = env.repo_dir().join("packs").join(&hex[..2]).join(&hex);
    assert!(pack.is_file(), "{} is where packs are", pack.display());
    (pack, loc.offset as usize + loc.length as usize / 2)
}

fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

/// The 4 MiB blocks (ADR 0056) of `env`'s packs: what a restore that reads each block once reads.
fn pack_blocks(env: &Env) -> u64 {
    walkdir(&env.repo_dir().join("packs"))
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len().div_ceil(4 << 20))
        .sum()
}

fn dir_bytes(dir: &Path) -> u64 {
    walkdir(dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}
