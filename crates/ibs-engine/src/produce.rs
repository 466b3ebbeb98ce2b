//! The front of the backup pipeline: the producer (walk → read → chunk → hash, one blocking task
//! over every source in turn) and the sealing threads (compress + seal, one per core) that feed
//! [`crate::packing`]. Both queues hold at most [`QUEUE_ITEMS`] chunks, and the bytes between the
//! producer and the packer at most the pipeline's [`ByteBudget`].
//!
//! Invariants: every chunk a source references is recorded in that source's reference list, so the
//! union of the per-source lists is the backup's whole reference list; a cancelled source stops the
//! producer at once, any other source failure is kept in that source's outcome and the next source
//! is read.

use crate::backup::SourceOrigin;
use crate::cache::{FilesCache, PathKey};
use crate::delta::PendingStore;
use crate::exclude::Excludes;
use crate::inflight::{held_once_sealed, ByteBudget, PIPELINE_BYTES, QUEUE_ITEMS};
use crate::progress::Progress;
use crate::refs::BackupRefs;
use crate::state::WriterState;
use crate::walk::{Emitter, SourceReader, SourceStats, Work};
use crate::{EngineError, SourceSpec};
use ibs_repo::chunk::{ChunkSealer, SealedChunk};
use ibs_repo::crypto::SymKey;
use ibs_repo::dedup::DedupSet;
use ibs_repo::ids::ChunkId;
use ibs_repo::Repository;
use std::sync::Arc;

/// The running sealing threads and the two ends of the pipeline around them.
pub(crate) struct Sealing {
    /// Where the producer sends chunks new to the repository.
    pub work_tx: crossbeam_channel::Sender<Work>,
    /// Where sealed chunks leave for the packer.
    pub sealed_rx: crossbeam_channel::Receiver<SealedChunk>,
    /// End when `work_tx` is dropped and the queue is drained (or the packer is gone).
    pub threads: Vec<std::thread::JoinHandle<()>>,
    /// Taken by the producer for each chunk it sends, given back by the sealers and the packer.
    pub budget: Arc<ByteBudget>,
}

/// Starts `threads` sealing threads that compress at `level` and seal under `key`.
pub(crate) fn start_sealers(threads: usize, level: i32, key: &SymKey) -> Sealing {
    let (work_tx, work_rx) = crossbeam_channel::bounded::<Work>(QUEUE_ITEMS);
    let (sealed_tx, sealed_rx) = crossbeam_channel::bounded::<SealedChunk>(QUEUE_ITEMS);
    let budget = ByteBudget::new(PIPELINE_BYTES);
    let mut sealers = Vec::new();
    for _ in 0..threads {
        let (rx, tx, key) = (work_rx.clone(), sealed_tx.clone(), key.clone());
        let (closer, budget) = (budget.closer(), budget.clone());
        sealers.push(std::thread::spawn(move || {
            let _closer = closer;
            let mut sealer = ChunkSealer::new(level);
            for w in rx {
                let sealed = if w.recipe {
                    sealer.seal_recipe_into(w.id, &w.data, &key, Vec::new())
                } else {
                    sealer.seal(w.id, &w.data, &key)
                };
                drop(w);
                let held = held_once_sealed(sealed.raw_length, sealed.sealed.len());
                budget.give(sealed.raw_length as u64 - held);
                if tx.send(sealed).is_err() {
                    break;
                }
            }
        }));
    }
    Sealing {
        work_tx,
        sealed_rx,
        threads: sealers,
        budget,
    }
}

/// What reading one source produced.
pub(crate) struct SourceOutcome {
    pub name: String,
    /// `dir`, `file` or `stream`.
    pub kind: &'static str,
    /// The path read, or `-` for a stream.
    pub origin: String,
    /// The source's tree chunks, or why it could not be read.
    pub tree: Result<Vec<ChunkId>, EngineError>,
    pub stats: SourceStats,
}

/// What the producer hands back once every source is read.
pub(crate) struct Produced {
    pub outcomes: Vec<SourceOutcome>,
    /// Each source's referenced chunks, sorted.
    pub source_refs: Vec<(String, Vec<ChunkId>)>,
    /// Bytes of chunks new to the repository (before compression).
    pub bytes_new: u64,
    /// The files cache being written, committed with the manifest.
    pub cache: FilesCache,
    /// New delta signature stores, committed with the manifest.
    pub delta_pending: Vec<PendingStore>,
}

/// What the producer reports to and is steered by: live progress, the backup's start time (the
/// mtime of stream files) and its cancel token.
pub(crate) struct ProducerRun {
    pub progress: Arc<Progress>,
    pub started_unix: i64,
    pub cancel: Option<crate::cancel::CancelToken>,
    /// The pipeline's byte budget ([`Sealing::budget`]).
    pub budget: Arc<ByteBudget>,
}

/// Starts the producer on a blocking thread: reads `sources` in turn against `index`, sending
/// chunks new to the repository to `work_tx` (dropped when it ends, which ends the sealers).
pub(crate) fn spawn_producer(
    repo: &Repository,
    state: &WriterState,
    index: Arc<DedupSet>,
    sources: Vec<SourceSpec>,
    work_tx: crossbeam_channel::Sender<Work>,
    run: ProducerRun,
) -> tokio::task::JoinHandle<Result<Produced, EngineError>> {
    let ProducerRun {
        progress,
        started_unix,
        cancel,
        budget,
    } = run;
    let cache_path = state.files_cache_path();
    let path_key = PathKey::derive(&state.keys.dedup);
    let delta_dir = state.delta_dir();
    let params = repo.config().chunker.clone();
    let dedup = state.keys.dedup.clone();
    tokio::task::spawn_blocking(move || {
        let mut cache = FilesCache::open(&cache_path, path_key)?;
        let mut em = Emitter {
            dedup,
            index,
            refs: BackupRefs::default(),
            tx: work_tx,
            budget,
            bytes_new: 0,
            closed: false,
            cancel,
            delta: None,
            delta_error: None,
            delta_pending: Vec::new(),
        };
        let mut outcomes = Vec::new();
        for src in sources {
            crate::cancel::check(em.cancel.as_ref())?;
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
            let (kind, origin, tree) = read_source(&mut reader, src.origin, started_unix)?;
            let stats = reader.stats;
            if matches!(tree, Err(EngineError::Cancelled)) {
                return Err(EngineError::Cancelled);
            }
            em.refs.finish_source(&src.name);
            outcomes.push(SourceOutcome {
                name: src.name,
                kind,
                origin,
                tree,
                stats,
            });
        }
        let bytes_new = em.bytes_new;
        drop(em.tx);
        Ok(Produced {
            outcomes,
            source_refs: em.refs.into_lists(),
            bytes_new,
            cache,
            delta_pending: em.delta_pending,
        })
    })
}

/// Reads one source: its kind, its origin as text, and its tree chunks or why it failed. Only a
/// bad exclude pattern fails the whole backup.
#[allow(clippy::type_complexity)]
fn read_source(
    reader: &mut SourceReader<'_>,
    origin: SourceOrigin,
    started_unix: i64,
) -> Result<(&'static str, String, Result<Vec<ChunkId>, EngineError>), EngineError> {
    Ok(match origin {
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
    })
}
