//! Shared fixtures for engine tests: a repository in a temp folder with a writer state and the .pfx
//! identity, plus tree comparison and hand-crafted backups for hostile-input tests.
#![allow(dead_code)]

pub mod prune;

use ibs_engine::state::WriterState;
use ibs_engine::{
    BackupOptions, BackupReport, Progress, RestoreOptions, RestoreReport, SourceOrigin, SourceSpec,
};
use ibs_keys::PrivateIdentity;
use ibs_repo::chunk::ChunkSealer;
use ibs_repo::clock::{new_backup_id, Clock, SystemClock};
use ibs_repo::crypto::SymKey;
use ibs_repo::ids::{ChunkId, KeyId};
use ibs_repo::index::PackRecord;
use ibs_repo::keyring::Unlock;
use ibs_repo::manifest::{BackupStatus, Catalog, Manifest, SourceSummary, SourceTree, TreePart};
use ibs_repo::pack::PackBuilder;
use ibs_repo::tree::{header_line, TreeEntry};
use ibs_repo::{InitKeys, Repository};
use ibs_storage::{DynStorage, LocalStorage};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub fn identity() -> PrivateIdentity {
    static ID: OnceLock<PrivateIdentity> = OnceLock::new();
    ID.get_or_init(|| {
        ibs_keys::generate_self_signed("engine tests", 2048, 30, SystemClock.now_unix()).unwrap()
    })
    .clone()
}

pub fn other_identity() -> PrivateIdentity {
    static ID: OnceLock<PrivateIdentity> = OnceLock::new();
    ID.get_or_init(|| {
        ibs_keys::generate_self_signed("other", 2048, 30, SystemClock.now_unix()).unwrap()
    })
    .clone()
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub repo: Arc<Repository>,
    pub state: WriterState,
    pub ident: PrivateIdentity,
}

impl Env {
    pub fn repo_dir(&self) -> PathBuf {
        self.dir.path().join("repo")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    pub fn unlock(&self) -> Arc<Unlock> {
        Arc::new(Unlock::Identities(vec![self.ident.clone()]))
    }
    pub async fn reopen(&self) -> Arc<Repository> {
        let storage: DynStorage = Arc::new(LocalStorage::open(self.repo_dir()).unwrap());
        Arc::new(
            Repository::open(storage, Arc::new(SystemClock))
                .await
                .unwrap(),
        )
    }
}

pub async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let storage: DynStorage = Arc::new(LocalStorage::create(dir.path().join("repo")).unwrap());
    let ident = identity();
    let (repo, state) = ibs_engine::keyops::init(
        storage,
        Arc::new(SystemClock),
        &dir.path().join("state"),
        InitKeys::Certificate(ident.certificate()),
    )
    .await
    .unwrap();
    Env {
        dir,
        repo: Arc::new(repo),
        state,
        ident,
    }
}

pub async fn backup(env: &Env, sources: &[(&str, &Path)]) -> BackupReport {
    try_backup(env, sources).await.unwrap()
}

pub async fn try_backup(
    env: &Env,
    sources: &[(&str, &Path)],
) -> Result<BackupReport, ibs_engine::EngineError> {
    let sources = sources
        .iter()
        .map(|(n, p)| SourceSpec {
            name: n.to_string(),
            origin: SourceOrigin::Path(p.to_path_buf()),
        })
        .collect();
    ibs_engine::backup(
        env.repo.clone(),
        &env.state,
        BackupOptions {
            sources,
            threads: 2,
            lock_wait: Duration::ZERO,
            progress: Arc::new(Progress::default()),
        },
    )
    .await
}

pub async fn restore(
    env: &Env,
    id: &str,
    target: &Path,
    source: Option<&str>,
) -> Result<RestoreReport, ibs_engine::EngineError> {
    ibs_engine::restore(
        env.repo.clone(),
        env.unlock(),
        RestoreOptions {
            backup_id: id.into(),
            target: target.into(),
            source: source.map(str::to_owned),
            threads: 3,
            progress: Arc::new(Progress::default()),
            lock_wait: Duration::ZERO,
            cancel: None,
        },
    )
    .await
}

/// Asserts two trees are identical: names, kinds, bytes, modes, mtimes (to the second), link targets.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let (pa, pb) = (a.join(&rel), b.join(&rel));
        let (ma, mb) = (
            std::fs::symlink_metadata(&pa).unwrap(),
            std::fs::symlink_metadata(&pb).unwrap_or_else(|e| panic!("{}: {e}", pb.display())),
        );
        assert_eq!(ma.file_type(), mb.file_type(), "{}", rel.display());
        if ma.is_symlink() {
            assert_eq!(
                std::fs::read_link(&pa).unwrap(),
                std::fs::read_link(&pb).unwrap(),
                "{}",
                rel.display()
            );
            continue;
        }
        assert_eq!(
            ma.mode() & 0o7777,
            mb.mode() & 0o7777,
            "mode of {}",
            rel.display()
        );
        assert_eq!(ma.mtime(), mb.mtime(), "mtime of {}", rel.display());
        if ma.is_file() {
            assert!(
                std::fs::read(&pa).unwrap() == std::fs::read(&pb).unwrap(),
                "contents of {}",
                rel.display()
            );
        } else if ma.is_dir() {
            let names = |p: &Path| {
                let mut v: Vec<_> = std::fs::read_dir(p)
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .collect();
                v.sort();
                v
            };
            let (na, nb) = (names(&pa), names(&pb));
            assert_eq!(na, nb, "entries of {}", rel.display());
            stack.extend(na.into_iter().map(|n| rel.join(n)));
        }
    }
}

/// Writes a backup whose tree is exactly `entries` (for hostile-manifest tests). `files` gives the
/// contents of file entries by path; each becomes one chunk.
pub async fn crafted_backup(env: &Env, entries: &[TreeEntry], files: &[(&[u8], &[u8])]) -> String {
    crafted_backup_with_lines(env, entries, files, &[]).await
}

/// Like [`crafted_backup`], with `raw` tree lines appended as they are (entries no honest writer
/// produces, such as unknown kinds).
pub async fn crafted_backup_with_lines(
    env: &Env,
    entries: &[TreeEntry],
    files: &[(&[u8], &[u8])],
    raw: &[&[u8]],
) -> String {
    crafted_backup_in(env, &header_line(), entries, files, raw).await
}

/// Like [`crafted_backup_with_lines`], with the tree stream's header line given (e.g. an older
/// tree format's).
pub async fn crafted_backup_in(
    env: &Env,
    header: &[u8],
    entries: &[TreeEntry],
    files: &[(&[u8], &[u8])],
    raw: &[&[u8]],
) -> String {
    let repo = &env.repo;
    let key_id = KeyId::random();
    let data_key = SymKey::random();
    repo.put_data_key(&key_id, &data_key, &[env.ident.certificate()])
        .await
        .unwrap();
    let mut sealer = ChunkSealer::new(3);
    let mut pack = PackBuilder::new(0);
    let mut refs = Vec::new();
    let mut lines = header.to_vec();
    for e in entries {
        let mut e = e.clone();
        if let Some((_, content)) = files.iter().find(|(p, _)| *p == e.path.as_slice()) {
            let id = env.state.keys.dedup.chunk_id(content);
            let s = sealer.seal(id, content, &data_key);
            pack.add(id, s.encoding, s.raw_length, key_id, &s.sealed);
            refs.push(id);
            e.chunks = vec![id];
            e.size = content.len() as u64;
        }
        lines.extend_from_slice(&e.to_line());
    }
    for r in raw {
        lines.extend_from_slice(r);
        lines.push(b'\n');
    }
    let tree_id: ChunkId = env.state.keys.dedup.chunk_id(&lines);
    let s = sealer.seal(tree_id, &lines, &data_key);
    pack.add(tree_id, s.encoding, s.raw_length, key_id, &s.sealed);
    refs.push(tree_id);
    let (pid, bytes, pe) = pack.finish(&env.state.keys.metadata);
    let length = bytes.len() as u64;
    repo.put_pack(&pid, bytes).await.unwrap();
    repo.write_index(
        &[PackRecord {
            id: pid,
            length,
            entries: pe,
        }],
        &env.state.keys.metadata,
    )
    .await
    .unwrap();
    let now = SystemClock.now_unix();
    let id = new_backup_id(now);
    let catalog = Catalog {
        format_version: 1,
        backup_id: id.clone(),
        repository_id: repo.config().id.clone(),
        started: ibs_repo::clock::rfc3339(now),
        finished: ibs_repo::clock::rfc3339(now),
        duration_ms: 0,
        status: BackupStatus::Succeeded,
        sources: vec![SourceSummary {
            name: "evil".into(),
            kind: "dir".into(),
            status: BackupStatus::Succeeded,
            files: 0,
            dirs: 0,
            bytes: 0,
            errors: 0,
            changed_while_read: 0,
            essential: true,
            skipped: 0,
            server_version: None,
        }],
        encryption_mode: "certificate".into(),
        certificate_thumbprint: Some(env.ident.certificate().thumbprint().into()),
        data_key_id: key_id.to_hex(),
        bytes_read: 0,
        bytes_new: 0,
        bytes_stored: 0,
        hostname: "test".into(),
        ibs_version: "test".into(),
        recovery_ready: None,
        deployment_id: None,
        format_revision: None,
    };
    let tree = TreePart {
        sources: vec![SourceTree {
            name: "evil".into(),
            kind: "dir".into(),
            origin: "/".into(),
            tree: vec![tree_id.to_hex()],
        }],
        errors: vec![],
    };
    let m = Manifest::seal(
        catalog,
        &tree,
        &mut refs,
        &data_key,
        &env.state.keys.metadata,
    );
    repo.put_manifest(&m).await.unwrap();
    id
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// `check` of the repository as reopened: at the depth the writer state allows, or with
/// `read_data` every pack read and every chunk decrypted with the .pfx. Every problem as (object,
/// detail, backups it names).
pub async fn check_problems(env: &Env, read_data: bool) -> Vec<(String, String, Vec<String>)> {
    ibs_engine::check::check(
        env.reopen().await,
        ibs_engine::check::CheckOptions {
            read_data,
            unlock: read_data.then(|| env.unlock()),
            state: Some(env.state.clone()),
            progress: Default::default(),
            lock_wait: Duration::from_secs(60),
        },
    )
    .await
    .unwrap()
    .problems
    .into_iter()
    .map(|p| (p.object, p.detail, p.backups))
    .collect()
}
