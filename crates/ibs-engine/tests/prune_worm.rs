//! Prune on storage that refuses deletes (ADR 0035), over the real local backend behind a decorator
//! that refuses deletes under chosen prefixes as an object lock (`Locked`) or a writer key without
//! delete permission (`Authentication`) would. Prune must finish, name what stayed, and keep the
//! index consistent: a locked old index segment keeps every pack it names, so a later backup that
//! deduplicates against that segment restores. (The same on a real Ceph RGW object-lock bucket:
//! `crates/ibs/tests/s3_immutability.rs`.)

mod common;

use async_trait::async_trait;
use bytes::Bytes;
use common::*;
use ibs_engine::check::{check, CheckOptions};
use ibs_engine::retention::{prune, Expected, PruneOptions};
use ibs_repo::clock::SystemClock;
use ibs_repo::Repository;
use ibs_storage::{
    Capabilities, DynStorage, ErrorKind, ForeignFile, LocalStorage, ObjectInfo, ObjectKey, Result,
    SpaceInfo, Storage, StorageError,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Refuses deletes of keys under `refuse` prefixes with the paired kind; all else goes through.
#[derive(Debug)]
struct Refusing {
    inner: DynStorage,
    refuse: Mutex<Vec<(String, ErrorKind)>>,
}

impl Refusing {
    fn set(&self, rules: &[(&str, ErrorKind)]) {
        *self.refuse.lock().unwrap() = rules.iter().map(|(p, k)| (p.to_string(), *k)).collect();
    }
}

#[async_trait]
impl Storage for Refusing {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn put(&self, key: &ObjectKey, data: Bytes) -> Result<()> {
        self.inner.put(key, data).await
    }
    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &ObjectKey, offset: u64, len: u64) -> Result<Bytes> {
        self.inner.get_range(key, offset, len).await
    }
    async fn stat(&self, key: &ObjectKey) -> Result<ObjectInfo> {
        self.inner.stat(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        let rule = self
            .refuse
            .lock()
            .unwrap()
            .iter()
            .find(|(p, _)| key.as_str().starts_with(p.as_str()))
            .map(|(_, k)| *k);
        match rule {
            Some(kind) => Err(StorageError::new(
                kind,
                "delete",
                Some(key.as_str()),
                "refused by the test store",
            )),
            None => self.inner.delete(key).await,
        }
    }
    async fn space(&self) -> Result<Option<SpaceInfo>> {
        self.inner.space().await
    }
    async fn remove_stale_temporaries(&self, older_than: Duration) -> Result<usize> {
        self.inner.remove_stale_temporaries(older_than).await
    }
    async fn list_foreign(&self) -> Result<Vec<ForeignFile>> {
        self.inner.list_foreign().await
    }
    async fn delete_foreign(&self, path: &str) -> Result<()> {
        self.inner.delete_foreign(path).await
    }
}

fn source(env: &Env, name: &str, seed: u64) -> std::path::PathBuf {
    let src = env.path(name);
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("b.bin"), bytes(seed, 3 << 20)).unwrap();
    src
}

fn opts(ids: &[&str]) -> PruneOptions {
    PruneOptions {
        dry_run: false,
        lock_wait: Duration::ZERO,
        expected: Expected::Backups(ids.iter().map(|s| s.to_string()).collect()),
        grace: Duration::ZERO,
        delete_delay: Duration::ZERO,
        max_unused_percent: ibs_engine::retention::DEFAULT_MAX_UNUSED_PERCENT,
    }
}

async fn refusing(env: &Env) -> (Arc<Refusing>, Repository) {
    let local: DynStorage = Arc::new(LocalStorage::open(env.repo_dir()).unwrap());
    let s = Arc::new(Refusing {
        inner: local,
        refuse: Mutex::new(Vec::new()),
    });
    let repo = Repository::open(s.clone(), Arc::new(SystemClock))
        .await
        .unwrap();
    (s, repo)
}

async fn assert_clean(env: &Env) {
    let r = check(
        env.reopen().await,
        CheckOptions {
            read_data: true,
            unlock: Some(env.unlock()),
            state: None,
            progress: Default::default(),
            lock_wait: Duration::ZERO,
        },
    )
    .await
    .unwrap();
    assert!(r.problems.is_empty(), "check: {:?}", r.problems);
}

fn packs_on_disk(env: &Env) -> usize {
    walk_count(&env.repo_dir().join("packs"))
}

fn walk_count(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk_count(&p)
                } else {
                    1
                }
            })
            .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_index_segment_keeps_its_packs_and_a_later_backup_restores() {
    let env = env().await;
    let one = source(&env, "one", 1);
    let two = source(&env, "two", 2);
    let a = backup(&env, &[("data", &one)]).await.catalog.backup_id;
    let b = backup(&env, &[("data", &two)]).await.catalog.backup_id;
    // b is forgotten: its pack is unused.
    env.repo
        .storage()
        .delete(&ibs_repo::layout::backup(&b))
        .await
        .unwrap();
    let packs_before = packs_on_disk(&env);
    let (store, repo) = refusing(&env).await;
    store.set(&[("index/", ErrorKind::Locked)]);
    let plan = prune(&repo, &env.state, opts(&[&a])).await.unwrap();
    assert!(!plan.delete.is_empty(), "b's pack is unused: {plan:?}");
    assert!(
        plan.locked.iter().all(|k| k.starts_with("index/")) && !plan.locked.is_empty(),
        "{plan:?}"
    );
    assert_eq!(
        plan.kept_for_index, plan.delete,
        "the packs a locked segment names stay"
    );
    assert_eq!(
        packs_on_disk(&env),
        packs_before,
        "nothing the index names is gone"
    );
    assert_clean(&env).await;
    // A backup of b's data again deduplicates against the locked segment's entries: it must find
    // those chunks where that segment says they are.
    let c = backup(&env, &[("data", &two)]).await.catalog.backup_id;
    let t = env.path("t-c");
    restore(&env, &c, &t, None).await.unwrap();
    assert_same_tree(&two, &t.join("data"));
    // Once the lock is gone, prune removes the old segments; everything still restores.
    store.set(&[]);
    let plan = prune(&repo, &env.state, opts(&[&a, &c])).await.unwrap();
    assert!(
        plan.locked.is_empty() && plan.kept_for_index.is_empty(),
        "{plan:?}"
    );
    assert_clean(&env).await;
    for (id, src) in [(&a, &one), (&c, &two)] {
        let t = env.path(&format!("t-{id}"));
        restore(&env, id, &t, None).await.unwrap();
        assert_same_tree(src, &t.join("data"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_pack_deletes_are_reported_and_done_by_a_later_prune() {
    let env = env().await;
    let one = source(&env, "one", 3);
    let two = source(&env, "two", 4);
    let a = backup(&env, &[("data", &one)]).await.catalog.backup_id;
    let b = backup(&env, &[("data", &two)]).await.catalog.backup_id;
    env.repo
        .storage()
        .delete(&ibs_repo::layout::backup(&b))
        .await
        .unwrap();
    let packs_before = packs_on_disk(&env);
    let (store, repo) = refusing(&env).await;
    store.set(&[
        ("packs/", ErrorKind::Authentication),
        ("keys/data/", ErrorKind::Locked),
    ]);
    let plan = prune(&repo, &env.state, opts(&[&a])).await.unwrap();
    assert_eq!(plan.refused.len(), plan.delete.len(), "{plan:?}");
    assert!(
        !plan.refused.is_empty() && !plan.locked.is_empty(),
        "{plan:?}"
    );
    assert_eq!(packs_on_disk(&env), packs_before);
    assert_clean(&env).await;
    store.set(&[]);
    let plan = prune(&repo, &env.state, opts(&[&a])).await.unwrap();
    assert!(
        plan.refused.is_empty() && !plan.unindexed.is_empty(),
        "the refused packs are unindexed now and go: {plan:?}"
    );
    assert!(packs_on_disk(&env) < packs_before);
    assert_clean(&env).await;
    let t = env.path("t");
    restore(&env, &a, &t, None).await.unwrap();
    assert_same_tree(&one, &t.join("data"));
}
