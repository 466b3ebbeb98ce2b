//! The backup pipeline: walk (one thread, a bounded number of files ahead) → read → chunk → hash
//! (one producer thread) → compress + seal (one thread per core) → pack (one thread) → upload
//! (async, one or two packs in flight; their buffers come back to the packer). Every queue is
//! bounded, so memory stays bounded whatever the data size.
//!
//! Commit order (the crash-safety argument of `docs/design/repository-format.md` §Ordering):
//! data-key envelope → packs → index segment → manifest → files cache. A backup killed at any point
//! before the manifest leaves only unreferenced objects, which `prune` removes.

use crate::cache::FilesCache;
use crate::exclude::Excludes;
use crate::packing::Packing;
use crate::progress::{estimate, Progress};
use crate::state::WriterState;
use crate::walk::{Emitter, SourceReader, SourceStats, Work};
use crate::EngineError;
use futures::StreamExt;
use ibs_repo::chunk::{ChunkSealer, SealedChunk};
use ibs_repo::clock::{new_backup_id, rfc3339};
use ibs_repo::config::Encryption;
use ibs_repo::crypto::SymKey;
use ibs_repo::ids::{ChunkId, KeyId};
use ibs_repo::index::{Index, PackRecord};
use ibs_repo::lock::{self, LockKind};
use ibs_repo::manifest::{BackupStatus, Catalog, Manifest, SourceSummary, SourceTree, TreePart};
use ibs_repo::Repository;
use std::collections::HashSet;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a source's bytes come from.
pub enum SourceOrigin {
    /// A directory tree or a single file.
    Path(PathBuf),
    /// A directory tree without the entries matching `exclude` (see [`crate::exclude`]).
    Tree { root: PathBuf, exclude: Vec<String> },
    /// A byte stream stored as one file (stdin, a command's stdout, a database export).
    Stream {
        reader: Box<dyn Read + Send>,
        file_name: String,
    },
}

impl SourceOrigin {
    /// The folder or file a path source reads.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            SourceOrigin::Path(p) | SourceOrigin::Tree { root: p, .. } => Some(p),
            SourceOrigin::Stream { .. } => None,
        }
    }
}

pub struct SourceSpec {
    pub name: String,
    pub origin: SourceOrigin,
}

pub struct BackupOptions {
    pub sources: Vec<SourceSpec>,
    /// Sealing threads; 0 means one per core.
    pub threads: usize,
    pub lock_wait: Duration,
    pub progress: Arc<Progress>,
}

#[derive(Debug, Clone)]
pub struct BackupReport {
    pub catalog: Catalog,
    pub errors: Vec<String>,
    /// Entries left out of the backup and why (sockets), up to 1000; their count is in each
    /// source's `skipped` in the catalog.
    pub warnings: Vec<String>,
    pub chunks_new: u64,
    pub packs_new: u64,
}

/// Checks a source or component name: 1–64 characters of letters, digits, `.`, `_`, `-`, not
/// starting with `.`.
pub fn validate_name(name: &str) -> Result<(), EngineError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(EngineError::Source(format!(
            "source name {name:?} is invalid: use 1-64 letters, digits, '.', '_' or '-', not starting with '.'"
        )))
    }
}

fn validate(opts: &BackupOptions) -> Result<(), EngineError> {
    if opts.sources.is_empty() {
        return Err(EngineError::Source("no source given".into()));
    }
    let mut names = HashSet::new();
    for s in &opts.sources {
        validate_name(&s.name)?;
        if !names.insert(s.name.as_str()) {
            return Err(EngineError::Source(format!(
                "source name {:?} is given twice",
                s.name
            )));
        }
        if let SourceOrigin::Tree { exclude, .. } = &s.origin {
            crate::exclude::Excludes::new(exclude)?;
        }
        if let Some(p) = s.origin.path() {
            if let Err(e) = std::fs::symlink_metadata(p) {
                return Err(EngineError::Source(format!(
                    "source {}: {} cannot be read: {e}",
                    s.name,
                    p.display()
                )));
            }
        }
    }
    Ok(())
}

/// Checks that the writer state belongs to this repository and that its certificate is current.
pub fn check_state(repo: &Repository, state: &WriterState) -> Result<(), EngineError> {
    repo.check_keys(&state.keys)?;
    match (&repo.config().encryption, &state.certificate, &state.legacy) {
        (Encryption::Certificate { current, .. }, Some(c), _) if c.thumbprint() == current => Ok(()),
        // The writer's certificate is one the repository knows but no longer the current one: a
        // rotation (set-cert or rewrap) finished on the share but not yet in this writer's state,
        // e.g. because it was killed in between. New backups stay readable with that certificate's
        // .pfx; re-running the rotation here brings the state up to date. The writer never takes
        // a certificate from the share, so a planted certificate cannot redirect backups.
        (Encryption::Certificate { current, certificates }, Some(c), _)
            if certificates.iter().any(|t| t == c.thumbprint()) =>
        {
            tracing::warn!(
                "this writer encrypts for certificate {}, but the repository's current certificate is {current}; \
                 run `ibs repo set-cert` with the current certificate",
                c.thumbprint()
            );
            Ok(())
        }
        (Encryption::Certificate { current, .. }, Some(c), _) => Err(EngineError::State(format!(
            "the repository's current certificate is {current}, but this writer holds {}; run `ibs repo set-cert` or `ibs repo adopt`",
            c.thumbprint()
        ))),
        (Encryption::LegacyKey, _, Some(_)) => Ok(()),
        _ => Err(EngineError::State("the writer state does not match the repository's encryption mode".into())),
    }
}

/// What a caller (the controller) knows beyond the sources themselves.
#[derive(Debug, Clone, Default)]
pub struct BackupExtras {
    /// Names of the sources needed for cloud recovery; `None` means every source is.
    pub essential: Option<HashSet<String>>,
}

pub async fn backup(
    repo: Arc<Repository>,
    state: &WriterState,
    opts: BackupOptions,
) -> Result<BackupReport, EngineError> {
    backup_with(repo, state, opts, BackupExtras::default()).await
}

pub async fn backup_with(
    repo: Arc<Repository>,
    state: &WriterState,
    opts: BackupOptions,
    extras: BackupExtras,
) -> Result<BackupReport, EngineError> {
    validate(&opts)?;
    check_state(repo.as_ref(), state)?;
    let lock = repo
        .lock(LockKind::Exclusive, "backup", opts.lock_wait)
        .await?;
    let result = run(repo.clone(), state, opts, extras).await;
    lock.finish(result).await
}

async fn run(
    repo: Arc<Repository>,
    state: &WriterState,
    opts: BackupOptions,
    extras: BackupExtras,
) -> Result<BackupReport, EngineError> {
    let started_unix = repo.clock().now_unix();
    let started = Instant::now();
    let backup_id = new_backup_id(started_unix);
    // Only chunks under keys wrapped for this writer's certificate count as present (keysel).
    let mut index = crate::keysel::writer_index(&repo, state).await?;
    // Self-heal: a chunk whose only copies are in damaged packs counts as absent, so a source
    // that still has it stores it again (in a new pack, indexed by this backup's segment).
    let healing = index.forget_damaged();
    if healing > 0 {
        tracing::info!("{healing} chunks have copies only in damaged packs; they are stored again if a source still has them");
    }
    let index = Arc::new(index);
    preflight_capacity(&repo, &opts.sources).await?;

    // A fresh data key: in memory for this run only, persisted only inside its envelope.
    let key_id = KeyId::random();
    let (data_key, thumbprint) = match (&state.certificate, &state.legacy) {
        (Some(cert), _) => {
            let k = SymKey::random();
            repo.put_data_key(&key_id, &k, &[cert]).await?;
            crate::keysel::remember(state, &key_id)?;
            (k, Some(cert.thumbprint().to_owned()))
        }
        (None, Some(legacy)) => (
            ibs_repo::crypto::derive_legacy_data_key(legacy.material(), &key_id),
            None,
        ),
        (None, None) => {
            return Err(EngineError::State(
                "writer state holds neither a certificate nor a key".into(),
            ))
        }
    };

    // Totals for percent and ETA, counted beside the backup (metadata only). The walk also runs
    // ahead of the producer's own, so on a cold cache the two overlap their metadata reads: the
    // no-change backup of the bench tree takes 0.29 s with it and 0.42-0.46 s without.
    let roots: Vec<PathBuf> = opts
        .sources
        .iter()
        .filter_map(|s| s.origin.path().map(|p| p.to_path_buf()))
        .collect();
    let totals = opts.progress.clone();
    std::thread::spawn(move || {
        for r in roots {
            let (b, f) = estimate(&r);
            totals.add_total(b, f);
        }
    });

    let threads = if opts.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    } else {
        opts.threads
    };
    let level = repo.config().compression_level;
    let (work_tx, work_rx) = crossbeam_channel::bounded::<Work>(2 * threads);
    let (sealed_tx, sealed_rx) = crossbeam_channel::bounded::<SealedChunk>(2 * threads);
    let mut sealers = Vec::new();
    for _ in 0..threads {
        let (rx, tx, key) = (work_rx.clone(), sealed_tx.clone(), data_key.clone());
        sealers.push(std::thread::spawn(move || {
            let mut sealer = ChunkSealer::new(level);
            for w in rx {
                let sealed = if w.recipe {
                    sealer.seal_recipe_into(w.id, &w.data, &key, Vec::new())
                } else {
                    sealer.seal(w.id, &w.data, &key)
                };
                if tx.send(sealed).is_err() {
                    break;
                }
            }
        }));
    }
    drop((work_rx, sealed_tx));

    let Packing { packer, uploader } = crate::packing::start(
        repo.clone(),
        sealed_rx,
        key_id,
        state.keys.metadata.clone(),
        repo.config().pack_target_size as usize,
    );

    // The producer: walks every source on a blocking thread.
    let cache_path = state.files_cache_path();
    let path_key = crate::cache::PathKey::derive(&state.keys.dedup);
    let delta_dir = state.delta_dir();
    let params = repo.config().chunker.clone();
    let dedup = state.keys.dedup.clone();
    let progress = opts.progress.clone();
    let sources = opts.sources;
    let producer = tokio::task::spawn_blocking(move || {
        let mut cache = FilesCache::open(&cache_path, path_key)?;
        let mut em = Emitter {
            dedup,
            index,
            refs: HashSet::new(),
            source_refs: HashSet::new(),
            tx: work_tx,
            bytes_new: 0,
            closed: false,
            delta: None,
            delta_error: None,
            delta_pending: Vec::new(),
        };
        let mut results = Vec::new();
        let mut source_refs: Vec<(String, Vec<ChunkId>)> = Vec::new();
        for src in sources {
            let mut reader = SourceReader {
                name: &src.name,
                params: &params,
                em: &mut em,
                cache: &mut cache,
                progress: &progress,
                stats: SourceStats::default(),
                read_buf: 1 << 20,
                chunker: crate::chunker::Chunker::new(&params),
                exclude: Excludes::default(),
                delta_dir: Some(&delta_dir),
            };
            let (kind, origin, tree) = match src.origin {
                SourceOrigin::Path(p) => {
                    let kind = if p.is_dir() { "dir" } else { "file" };
                    let tree = reader.path(&p);
                    (kind, p.display().to_string(), tree)
                }
                SourceOrigin::Tree { root, exclude } => {
                    let kind = if root.is_dir() { "dir" } else { "file" };
                    reader.exclude = Excludes::new(&exclude)?;
                    let tree = reader.path(&root);
                    (kind, root.display().to_string(), tree)
                }
                SourceOrigin::Stream {
                    reader: mut r,
                    file_name,
                } => (
                    "stream",
                    "-".to_string(),
                    reader.stream(
                        &file_name,
                        &mut r,
                        started_unix.saturating_mul(1_000_000_000),
                    ),
                ),
            };
            let stats = reader.stats;
            if matches!(tree, Err(EngineError::Cancelled)) {
                return Err(EngineError::Cancelled);
            }
            let mut mine: Vec<ChunkId> = std::mem::take(&mut em.source_refs).into_iter().collect();
            mine.sort_unstable();
            source_refs.push((src.name.clone(), mine));
            results.push((src.name, kind, origin, tree, stats));
        }
        let refs = (em.refs, source_refs);
        let bytes_new = em.bytes_new;
        drop(em.tx);
        Ok::<_, EngineError>((results, refs, bytes_new, (cache, em.delta_pending)))
    });

    let joiner = tokio::task::spawn_blocking(move || {
        for s in sealers {
            let _ = s.join();
        }
        let _ = packer.join();
    });
    let (produced, _, uploaded) = tokio::join!(producer, joiner, uploader);
    let produced = produced.map_err(|e| EngineError::Internal(format!("producer: {e}")))?;
    let uploaded = uploaded.map_err(|e| EngineError::Internal(format!("uploader: {e}")))?;
    // An upload failure is the root cause of a cancelled producer: report it first.
    let packs = uploaded?;
    let (results, refs, bytes_new, (cache, delta_stores)) = produced?;
    // Until the manifest is committed, the new delta stores are not in force.
    let pending = DiscardOnDrop(delta_stores);

    verify_uploaded(&repo, &packs).await?;
    let mut bytes_stored: u64 = packs.iter().map(|p| p.length).sum();
    let chunks_new: u64 = packs.iter().map(|p| p.entries.len() as u64).sum();
    for group in packs.chunks(2000) {
        bytes_stored += repo.write_index(group, &state.keys.metadata).await?.1;
    }

    let mut summaries = Vec::new();
    let mut warnings = Vec::new();
    let mut trees = TreePart::default();
    let mut bytes_read = 0;
    for (name, kind, origin, tree, stats) in results {
        bytes_read += stats.bytes;
        let (status, tree_ids) = match tree {
            Ok(ids) if stats.errors == 0 => (BackupStatus::Succeeded, ids),
            Ok(ids) => (BackupStatus::PartialSucceeded, ids),
            Err(e) => {
                trees.errors.push(format!("{name}: {e}"));
                (BackupStatus::Failed, Vec::new())
            }
        };
        trees.errors.extend(
            stats
                .error_messages
                .iter()
                .take(1000usize.saturating_sub(trees.errors.len()))
                .cloned(),
        );
        summaries.push(SourceSummary {
            name: name.clone(),
            kind: kind.into(),
            status,
            files: stats.entries.files,
            dirs: stats.entries.dirs,
            bytes: stats.bytes,
            errors: stats.errors,
            changed_while_read: stats.changed,
            essential: extras.essential.as_ref().is_none_or(|e| e.contains(&name)),
            skipped: stats.skipped,
        });
        warnings.extend(
            stats
                .warnings
                .iter()
                .take(1000usize.saturating_sub(warnings.len()))
                .cloned(),
        );
        trees.sources.push(SourceTree {
            name,
            kind: kind.into(),
            origin,
            tree: tree_ids.iter().map(ChunkId::to_hex).collect(),
        });
    }
    let status = crate::status::roll_up(summaries.iter().map(|s| s.status));
    let finished_unix = repo.clock().now_unix();
    let catalog = Catalog {
        format_version: ibs_repo::manifest::MANIFEST_VERSION as u32,
        backup_id: backup_id.clone(),
        repository_id: repo.config().id.clone(),
        started: rfc3339(started_unix),
        finished: rfc3339(finished_unix),
        duration_ms: started.elapsed().as_millis() as u64,
        status,
        sources: summaries,
        encryption_mode: if thumbprint.is_some() {
            "certificate"
        } else {
            "legacy-key"
        }
        .into(),
        certificate_thumbprint: thumbprint,
        data_key_id: key_id.to_hex(),
        bytes_read,
        bytes_new,
        bytes_stored,
        hostname: lock::hostname(),
        ibs_version: env!("CARGO_PKG_VERSION").into(),
        recovery_ready: None,
    };
    let mut catalog = catalog;
    catalog.recovery_ready = Some(
        catalog.status != BackupStatus::Failed
            && catalog
                .sources
                .iter()
                .filter(|s| s.essential)
                .all(|s| s.status == BackupStatus::Succeeded),
    );
    // Every chunk of the backup is referenced by the source that emitted it, so the union of
    // the per-source lists is the backup's whole reference list.
    let (all_refs, source_refs) = refs;
    debug_assert_eq!(
        all_refs.len(),
        source_refs
            .iter()
            .flat_map(|(_, c)| c.iter())
            .collect::<HashSet<_>>()
            .len()
    );
    let manifest = Manifest::seal_with_sources(
        catalog.clone(),
        &trees,
        &source_refs,
        &data_key,
        &state.keys.metadata,
    );
    repo.put_manifest(&manifest).await?;
    // The backup is committed; the ledger is a lower bound for prune, so failing to record it
    // only weakens that check.
    if let Err(e) = crate::ledger::Ledger::of(state).record_written(&backup_id) {
        tracing::warn!("recording backup {backup_id} in the writer's ledger: {e}");
    }
    cache.commit()?;
    for store in pending.take() {
        if let Err(e) = store.commit() {
            tracing::warn!("a delta signature store could not be put in place: {e}");
        }
    }
    Ok(BackupReport {
        catalog,
        errors: trees.errors,
        warnings,
        chunks_new,
        packs_new: packs.len() as u64,
    })
}

/// New delta signature stores that are thrown away unless taken (the backup failed).
struct DiscardOnDrop(Vec<crate::delta::PendingStore>);

impl DiscardOnDrop {
    fn take(mut self) -> Vec<crate::delta::PendingStore> {
        std::mem::take(&mut self.0)
    }
}

impl Drop for DiscardOnDrop {
    fn drop(&mut self) {
        for s in self.0.drain(..) {
            s.discard();
        }
    }
}

/// Fails early, as Capacity, when the backup will not fit: the projected need is what the newest
/// backup stored (incremental backups), or half the sources' size for a first backup (zstd and
/// deduplication rarely do worse on infrastructure data). Storage that cannot tell its free space
/// is not checked.
async fn preflight_capacity(repo: &Repository, sources: &[SourceSpec]) -> Result<(), EngineError> {
    let Some(space) = repo.storage().space().await? else {
        return Ok(());
    };
    let ids = repo.list_backup_ids().await?;
    let mut previous = None;
    for id in ids.iter().rev().take(5) {
        if let Ok(c) = repo.read_catalog(id).await {
            previous = Some(c.bytes_stored);
            break;
        }
    }
    let need = match previous {
        Some(b) => b,
        None => {
            let roots: Vec<PathBuf> = sources
                .iter()
                .filter_map(|s| s.origin.path().map(|p| p.to_path_buf()))
                .collect();
            let total = tokio::task::spawn_blocking(move || {
                roots.iter().map(|r| estimate(r).0).sum::<u64>()
            })
            .await
            .map_err(|e| EngineError::Internal(format!("size estimate: {e}")))?;
            total / 2
        }
    };
    if space.available < need {
        return Err(ibs_storage::StorageError::new(
            ibs_storage::ErrorKind::Capacity,
            "preflight",
            None,
            format!(
                "the location has {} bytes free, and this backup is projected to need about {need} bytes; nothing was written",
                space.available
            ),
        )
        .into());
    }
    Ok(())
}

/// Confirms every new pack is on storage with its full length before anything references it, so a
/// storage that acknowledged a write it did not (fully) keep can never lead to a committed manifest
/// that points at missing data.
async fn verify_uploaded(repo: &Repository, packs: &[PackRecord]) -> Result<(), EngineError> {
    let mut checks = futures::stream::iter(packs)
        .map(|p| async move { (p, repo.storage().stat(&ibs_repo::layout::pack(&p.id)).await) })
        .buffer_unordered(8);
    while let Some((p, stat)) = checks.next().await {
        let size = stat?.size;
        if size != p.length {
            return Err(EngineError::Repo(ibs_repo::RepoError::Storage(
                ibs_storage::StorageError::new(
                    ibs_storage::ErrorKind::Other,
                    "verify",
                    Some(ibs_repo::layout::pack(&p.id).as_str()),
                    format!(
                        "storage kept {size} of {} bytes; the backup was not committed",
                        p.length
                    ),
                ),
            )));
        }
    }
    Ok(())
}

/// The index as loaded for a backup (exposed for tests and tools).
pub async fn load_index(repo: &Repository, state: &WriterState) -> Result<Index, EngineError> {
    Ok(repo.load_index(&state.keys.metadata).await?.0)
}
