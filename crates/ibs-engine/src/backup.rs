//! The backup pipeline: walk (one thread, a bounded number of files ahead) → read → chunk → hash
//! (one producer thread) → compress + seal (one thread per core) → pack (one thread) → upload
//! (async, one or two packs in flight; their buffers come back to the packer). Every queue is
//! bounded, so memory stays bounded whatever the data size.
//!
//! Commit order (the crash-safety argument of `docs/design/repository-format.md` §Ordering):
//! data-key envelope → packs → index segment → manifest → files cache. A backup killed at any point
//! before the manifest leaves only unreferenced objects, which `prune` removes. A cancelled backup
//! ([`BackupExtras::cancel`]) stops the same way: the token is checked by the producer at every
//! chunk and source, and before the index and the manifest are written.

use crate::cache::FilesCache;
use crate::packing::{Packing, Uploaded};
use crate::produce::{spawn_producer, start_sealers, Produced, ProducerRun, Sealing};
use crate::progress::{estimate, Progress};
use crate::state::WriterState;
use crate::summary::{build_catalog, summarise, DataKey, Figures, Start, Summary};
use crate::{EngineError, SourceError, StateError};
use ibs_repo::config::Encryption;
use ibs_repo::crypto::SymKey;
use ibs_repo::dedup::DedupSet;
use ibs_repo::ids::KeyId;
use ibs_repo::index::Index;
use ibs_repo::manifest::{Catalog, Manifest};
use ibs_repo::plan::PlanReading;
use ibs_repo::Repository;
use std::collections::HashSet;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
    /// source's `skipped` in the catalog. The repository-level warnings come first.
    pub warnings: Vec<String>,
    /// Warnings about the repository rather than an entry (a prune plan that does not open and
    /// was ignored, ADR 0044); also at the head of `warnings`.
    pub repository_warnings: Vec<String>,
    pub chunks_new: u64,
    pub packs_new: u64,
}

/// Checks a source or component name: 1–64 characters of letters, digits, `.`, `_`, `-`, not
/// starting with `.`.
pub fn validate_name(name: &str) -> Result<(), SourceError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(SourceError::InvalidName {
            name: name.to_owned(),
        })
    }
}

fn validate(opts: &BackupOptions) -> Result<(), EngineError> {
    if opts.sources.is_empty() {
        return Err(SourceError::NoSource.into());
    }
    let mut names = HashSet::new();
    for s in &opts.sources {
        validate_name(&s.name)?;
        if !names.insert(s.name.as_str()) {
            return Err(SourceError::DuplicateName {
                name: s.name.clone(),
            }
            .into());
        }
        if let SourceOrigin::Tree { exclude, .. } = &s.origin {
            crate::exclude::Excludes::new(exclude)?;
        }
        if let Some(p) = s.origin.path() {
            if let Err(cause) = std::fs::symlink_metadata(p) {
                return Err(SourceError::Unreadable {
                    name: s.name.clone(),
                    path: p.to_owned(),
                    cause,
                }
                .into());
            }
        }
    }
    Ok(())
}

/// Checks that the writer state belongs to this repository and that its certificate is current.
pub fn check_state(repo: &Repository, state: &WriterState) -> Result<(), EngineError> {
    repo.check_keys(&state.keys)?;
    match (&repo.config().encryption, &state.certificate, &state.legacy) {
        (Encryption::Certificate { current, .. }, Some(c), _) if c.thumbprint() == current => {
            Ok(())
        }
        // The writer's certificate is one the repository knows but no longer the current one: a
        // rotation (set-cert or rewrap) finished on the share but not yet in this writer's state,
        // e.g. because it was killed in between. New backups stay readable with that certificate's
        // .pfx; re-running the rotation here brings the state up to date. The writer never takes
        // a certificate from the share, so a planted certificate cannot redirect backups.
        (
            Encryption::Certificate {
                current,
                certificates,
            },
            Some(c),
            _,
        ) if certificates.iter().any(|t| t == c.thumbprint()) => {
            tracing::warn!(
                "this writer encrypts for certificate {}, but the repository's current certificate is {current}; \
                 run `ibs repo set-cert` with the current certificate",
                c.thumbprint()
            );
            Ok(())
        }
        (Encryption::Certificate { current, .. }, Some(c), _) => {
            Err(StateError::CertificateNotCurrent {
                current: current.clone(),
                held: c.thumbprint().to_owned(),
            }
            .into())
        }
        (Encryption::LegacyKey, _, Some(_)) => Ok(()),
        _ => Err(StateError::EncryptionMismatch.into()),
    }
}

/// What a caller (the controller) knows beyond the sources themselves.
#[derive(Debug, Clone, Default)]
pub struct BackupExtras {
    /// Names of the sources needed for cloud recovery; `None` means every source is.
    pub essential: Option<HashSet<String>>,
    /// Stops the backup before its manifest is committed ([`crate::cancel`]); a cancel that comes
    /// after the commit has no effect.
    pub cancel: Option<crate::cancel::CancelToken>,
    /// The deployment writing the backup ([`crate::state::deployment_id`]), recorded in the
    /// catalog.
    pub deployment_id: Option<String>,
    /// The server version each service source was read from, by source name, recorded in the
    /// catalog's source summaries.
    pub server_versions: std::collections::BTreeMap<String, String>,
    /// The backup id to commit under (a caller's own id for the backup, e.g. the controller's job
    /// id, so one backup has one id); must be a valid backup id not used in the repository. `None`:
    /// a new id from the start time.
    pub backup_id: Option<String>,
    /// Test hook: once the backup has loaded its index, it waits on this barrier twice (the test
    /// waits once to know the index is loaded, then once more to let the backup go on).
    #[doc(hidden)]
    pub pause_after_index: Option<Arc<tokio::sync::Barrier>>,
    /// Test hook, never set outside tests: deduplicate against packs that prune plans mark, i.e.
    /// behave like a backup that does not know prune plans (the race §19 exists to prevent).
    #[doc(hidden)]
    pub unsafe_ignore_prune_plans: bool,
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
    // Backups of several writers run together (the append lock); two of one writer state would
    // share its files cache and signature stores, so they take turns on this host.
    let _local = state_lock(state, opts.lock_wait).await?;
    // The lock names the prune plans listed and opened after it became held (§19); the index is
    // loaded without what they mark. Plans that do not open are honoured by nobody (ADR 0044).
    let lock = repo
        .lock_append("backup", opts.lock_wait, &state.keys.metadata)
        .await?;
    let plans = lock.plan_reading().clone();
    let result = run(repo.clone(), state, opts, extras, plans).await;
    lock.finish(result).await
}

/// An exclusive advisory lock on `<writer state>/backup.lock`, held (by the open file) while a
/// backup of this writer state runs; waits up to `wait`. The lock ends with the process.
async fn state_lock(state: &WriterState, wait: Duration) -> Result<std::fs::File, EngineError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = state.dir.join("backup.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| EngineError::from(crate::StateError::io(&path)(e)))?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(ibs_repo::RepoError::Locked {
                    holder: format!(
                        "another backup with this writer state ({}) is running on this host",
                        state.dir.display()
                    ),
                }
                .into())
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(crate::StateError::io(&path)(e).into())
            }
        }
    }
}

/// The backup under the exclusive lock: prepare the index and a data key, run the pipeline, store
/// the index, then commit the manifest and the writer's local state.
async fn run(
    repo: Arc<Repository>,
    state: &WriterState,
    opts: BackupOptions,
    extras: BackupExtras,
    plans: PlanReading,
) -> Result<BackupReport, EngineError> {
    let start = match &extras.backup_id {
        Some(id) => Start::with_id(&repo, id).await?,
        None => Start::now(&repo),
    };
    let PlanReading {
        mut marks,
        rejected,
    } = plans;
    if extras.unsafe_ignore_prune_plans {
        marks.packs.clear();
        marks.segments.clear();
    }
    if !marks.packs.is_empty() {
        tracing::info!(
            "a prune plan marks {} packs; this backup stores again what it needs of them",
            marks.packs.len()
        );
    }
    let index = writer_index(&repo, state, &marks.packs).await?;
    if let Some(b) = &extras.pause_after_index {
        b.wait().await;
        b.wait().await;
    }
    crate::preflight::preflight_capacity(&repo, &opts.sources).await?;
    let cancel = extras.cancel.clone();
    crate::cancel::check(cancel.as_ref())?;
    let key = new_data_key(&repo, state).await?;
    let (uploaded, produced) =
        run_pipeline(&repo, state, opts, index, &key, start.unix, cancel.clone()).await?;
    crate::cancel::check(cancel.as_ref())?;
    let Produced {
        outcomes,
        source_refs,
        bytes_new,
        cache,
        delta_pending,
    } = produced;
    // Until the manifest is committed, the new delta stores are not in force.
    let pending = DiscardOnDrop(delta_pending);
    let packs_new = uploaded.packs;
    let (chunks_new, bytes_stored) = store_index(&repo, state, uploaded).await?;
    let Summary {
        summaries,
        mut warnings,
        trees,
        bytes_read,
    } = summarise(outcomes, &extras);
    let repository_warnings: Vec<String> = rejected.iter().map(|r| {
        format!(
            "prune plan plans/{} was ignored: it does not open under the metadata key ({}): someone with storage access put it there, or it was damaged in storage or in transit (operator guide, \"A prune plan that fails authentication\")",
            r.name, r.reason
        )
    }).collect();
    // First: a repository-level warning must not drown among per-file ones.
    warnings.splice(0..0, repository_warnings.iter().cloned());
    let status = crate::status::roll_up(summaries.iter().map(|s| s.status));
    // The reference segments go to storage before the manifest that lists them; a no-change
    // backup finds every one there and stores none. A source that changed little is written as
    // its parent's segments and a delta (ADR 0046) whose added and removed lists are cut into
    // segments too: it stores only the delta segments storage does not hold (none when the delta
    // is its parent's).
    let bases = parent_bases(&repo, state).await;
    let (segments, refs_written) = repo
        .put_refs_with_bases(&source_refs, &state.keys.metadata, &marks.segments, &bases)
        .await?;
    // Stored: the sorted lists (32 bytes per reference) are not held while the manifest is stored.
    drop(source_refs);
    tracing::debug!(
        "reference segments: {} listed, {} new ({} bytes); {} sources as deltas ({} ids in {} \
         segments)",
        refs_written.segments,
        refs_written.new,
        refs_written.bytes,
        refs_written.delta_sources,
        refs_written.delta_ids,
        refs_written.delta_segments
    );
    let figures = Figures {
        bytes_read,
        bytes_new,
        bytes_stored: bytes_stored + refs_written.bytes,
    };
    let catalog = build_catalog(&repo, &start, &key, status, summaries, figures, &extras);
    let manifest = Manifest::seal_with_segments(
        catalog.clone(),
        &trees,
        &segments,
        &key.key,
        &state.keys.metadata,
    );
    // The last point a cancel stops the backup: from here on the manifest is being committed.
    crate::cancel::check(cancel.as_ref())?;
    commit(&repo, state, &manifest, cache, pending).await?;
    Ok(BackupReport {
        catalog,
        errors: trees.errors,
        warnings,
        repository_warnings,
        chunks_new,
        packs_new,
    })
}

/// The segment list of each source of this writer's parent backup: the backup it committed last
/// and has not forgotten (its ledger; the backup its files cache describes), as a base for
/// reference deltas (ADR 0046). A version-4 parent gives its base segments (never its delta, so
/// chains stay of length one), a version-3 parent its segments; a version-1 or -2 parent, none.
/// No ledger, a parent that is gone or does not open: no bases (every source is cut afresh).
async fn parent_bases(
    repo: &Repository,
    state: &WriterState,
) -> std::collections::HashMap<String, Vec<ibs_repo::ids::SegmentId>> {
    let parent = match crate::ledger::Ledger::of(state).latest() {
        Ok(Some(id)) => id,
        Ok(None) => return Default::default(),
        Err(e) => {
            tracing::warn!("reading the writer's ledger for the parent backup: {e}");
            return Default::default();
        }
    };
    let part = match repo.read_manifest(&parent).await {
        Ok(m) => m.open_refs_part(&state.keys.metadata),
        Err(e) => Err(e),
    };
    match part {
        Ok(ibs_repo::manifest::RefsPart::Segmented(sources)) => {
            sources.into_iter().map(|s| (s.name, s.segments)).collect()
        }
        Ok(ibs_repo::manifest::RefsPart::Inline(_)) => Default::default(),
        Err(e) => {
            tracing::info!("parent backup {parent} gives no reference base: {e}");
            Default::default()
        }
    }
}

/// The index this writer dedups against: only chunks under keys wrapped for its certificate count
/// as present (keysel), and a chunk whose only copies are in damaged packs counts as absent, so a
/// source that still has it stores it again (self-heal, in a new pack indexed by this backup).
async fn writer_index(
    repo: &Repository,
    state: &WriterState,
    marked: &HashSet<ibs_repo::ids::PackId>,
) -> Result<Arc<DedupSet>, EngineError> {
    Ok(Arc::new(
        crate::keysel::writer_index(repo, state, marked).await?,
    ))
}

/// A fresh data key for this backup: in memory for this run only, persisted only inside its
/// envelope for the writer's certificate (or derived from the legacy key).
async fn new_data_key(repo: &Repository, state: &WriterState) -> Result<DataKey, EngineError> {
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
        (None, None) => return Err(StateError::NoKey.into()),
    };
    Ok(DataKey {
        id: key_id,
        key: data_key,
        thumbprint,
    })
}

/// Runs the pipeline to its end: producer → sealers → packer → uploader, with the size estimate
/// beside it. Returns the stored packs and what the producer read; an upload failure, the root
/// cause of a cancelled producer, is reported first.
async fn run_pipeline(
    repo: &Arc<Repository>,
    state: &WriterState,
    opts: BackupOptions,
    index: Arc<DedupSet>,
    key: &DataKey,
    started_unix: i64,
    cancel: Option<crate::cancel::CancelToken>,
) -> Result<(Uploaded, Produced), EngineError> {
    start_totals(repo, state, &opts).await;
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    } else {
        opts.threads
    };
    let Sealing {
        work_tx,
        sealed_rx,
        threads: sealers,
        budget,
    } = start_sealers(threads, repo.config().compression_level, &key.key);
    let Packing { packer, uploader } = crate::packing::start(
        repo.clone(),
        sealed_rx,
        budget.clone(),
        key.id,
        state.keys.metadata.clone(),
        pack_target(repo),
    );
    let producer = spawn_producer(
        repo,
        state,
        index,
        opts.sources,
        work_tx,
        ProducerRun {
            progress: opts.progress.clone(),
            started_unix,
            cancel,
            budget,
        },
    );
    let joiner = tokio::task::spawn_blocking(move || {
        for s in sealers {
            let _ = s.join();
        }
        let _ = packer.join();
    });
    let (produced, _, uploaded) = tokio::join!(producer, joiner, uploader);
    let produced = produced.map_err(|cause| EngineError::Task {
        task: "producer",
        cause,
    })?;
    let uploaded = uploaded.map_err(|cause| EngineError::Task {
        task: "uploader",
        cause,
    })?;
    let packs = uploaded?;
    Ok((packs, produced?))
}

/// Counts the sources' totals for percent and ETA beside the backup (metadata only). The walk
/// also runs ahead of the producer's own, so on a cold cache the two overlap their metadata reads:
/// the no-change backup of the bench tree takes 0.29 s with it and 0.42-0.46 s without.
/// The size at which a backup (and prune's repacking) closes packs: the repository's pack size,
/// or the storage's smaller [`put_size_hint`](ibs_storage::Capabilities::put_size_hint) (an
/// upload limit, whose bursts are one object each). Smaller packs are ordinary packs: the format
/// does not change.
pub(crate) fn pack_target(repo: &Repository) -> usize {
    let configured = repo.config().pack_target_size as u64;
    let hint = repo.storage().capabilities().put_size_hint;
    hint.map_or(configured, |h| h.min(configured)) as usize
}

/// Starts the progress totals (for percent and ETA). A source that the writer's parent backup
/// also had counts that backup's files and bytes: no second walk of the tree runs beside the
/// backup's own, which on a large tree costs as much as the walk of a no-change backup. Any other
/// path source is walked for its sizes on a thread of its own, unless nobody watches the progress
/// ([`Progress::watched`]): that walk competes with the backup's own for the cores and the disk.
/// The parent's catalog is read as stored: these totals only feed the progress display.
async fn start_totals(repo: &Repository, state: &WriterState, opts: &BackupOptions) {
    if !opts.progress.watched() {
        return;
    }
    let parent = match crate::ledger::Ledger::of(state).latest() {
        Ok(Some(id)) => repo.read_catalog(&id).await.ok(),
        _ => None,
    };
    let mut roots: Vec<PathBuf> = Vec::new();
    for s in &opts.sources {
        let Some(path) = s.origin.path() else {
            continue;
        };
        let known = parent
            .as_ref()
            .and_then(|c| c.sources.iter().find(|p| p.name == s.name));
        match known {
            Some(p) => opts.progress.add_total(p.bytes, p.files),
            None => roots.push(path.to_path_buf()),
        }
    }
    if roots.is_empty() {
        return;
    }
    let totals = opts.progress.clone();
    std::thread::spawn(move || {
        for r in roots {
            let (b, f) = estimate(&r);
            totals.add_total(b, f);
        }
    });
}

/// Writes the index segment of the stored packs that no segment lists yet (the uploader wrote
/// the full ones as it went: `crate::packing`), after confirming them stored whole. Returns the
/// number of new chunks and the bytes stored (packs and segments).
async fn store_index(
    repo: &Repository,
    state: &WriterState,
    uploaded: Uploaded,
) -> Result<(u64, u64), EngineError> {
    let mut bytes_stored = uploaded.bytes;
    for group in crate::packing::segment_groups(&uploaded.rest) {
        bytes_stored += crate::packing::write_segment(repo, group, &state.keys.metadata).await?;
    }
    Ok((uploaded.chunks, bytes_stored))
}

/// Commits the backup: the manifest, then (the backup is committed) the writer's ledger, files
/// cache and delta signature stores. The ledger is a lower bound for prune, so failing to record
/// the backup only weakens that check, and a delta store that cannot be put in place only costs
/// the next backup its deltas.
async fn commit(
    repo: &Repository,
    state: &WriterState,
    manifest: &Manifest,
    cache: FilesCache,
    pending: DiscardOnDrop,
) -> Result<(), EngineError> {
    repo.put_manifest(manifest).await?;
    let backup_id = &manifest.catalog.backup_id;
    if let Err(e) = crate::ledger::Ledger::of(state).record_written(backup_id) {
        tracing::warn!("recording backup {backup_id} in the writer's ledger: {e}");
    }
    cache.commit()?;
    for store in pending.take() {
        if let Err(e) = store.commit() {
            tracing::warn!("a delta signature store could not be put in place: {e}");
        }
    }
    Ok(())
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

/// The index as loaded for a backup (exposed for tests and tools).
pub async fn load_index(repo: &Repository, state: &WriterState) -> Result<Index, EngineError> {
    Ok(repo.load_index(&state.keys.metadata).await?.0)
}
