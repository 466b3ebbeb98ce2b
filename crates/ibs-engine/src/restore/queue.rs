//! The restore's work queue: what the walking thread hands its workers ([`Job`]: a whole file, a
//! batch of small files, a piece of a large file) and how small files are gathered into batches on
//! storage read through the runtime ([`Queue`]). Sizes that decide the split are owned here.

use super::dirs::Pending;
use crate::target::TargetDir;
use ibs_repo::tree::TreeEntry;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

/// Files at least this large are restored in pieces by several workers at once.
pub(super) const SPLIT_MIN: u64 = 16 << 20;
/// A piece covers whole chunks and at least this many bytes (the last one may be shorter).
pub(super) const PIECE: u64 = 8 << 20;

/// On storage read through the runtime (a share, an object store), files up to this size are
/// restored in batches: one worker fetches a batch's chunks with as few range reads as the packs
/// allow ([`crate::chunkread::prefetch`]), then writes its files one by one. One request per small
/// file would otherwise bound the restore by round trips (5,029 GETs for the 1 GiB bench tree).
pub(super) const BATCH_FILE_MAX: u64 = 1 << 20;
/// A batch is sent once its files hold this many bytes ...
pub(super) const BATCH_BYTES: u64 = 4 << 20;
/// ... or this many files.
pub(super) const BATCH_FILES: usize = 512;

/// Where a file goes: its folder's handle and its name in it.
pub(super) struct Dest {
    pub(super) dir: Arc<TargetDir>,
    pub(super) name: OsString,
    /// The full path, for messages only.
    pub(super) path: PathBuf,
    /// Holds the folder's metadata back until the file is in place (or failed) and this is dropped.
    pub(super) _folder: Pending,
}

pub(super) enum Job {
    /// A whole file, restored by one worker.
    File { entry: TreeEntry, dest: Dest },
    /// Small files restored by one worker after one prefetch of their chunks.
    Batch(Vec<(TreeEntry, Dest)>),
    /// A range of a large file's chunks and the offset of its first byte; the worker that ends the
    /// last piece puts the file in place.
    Piece {
        file: Arc<SplitFile>,
        chunks: std::ops::Range<usize>,
        offset: u64,
    },
}

/// A large file being restored in pieces, into its temporary name in its folder.
pub(super) struct SplitFile {
    pub(super) entry: TreeEntry,
    pub(super) dest: Dest,
    pub(super) tmp: OsString,
    pub(super) file: std::fs::File,
    /// `file`'s `O_DIRECT` descriptor, if it has one (`super::write::direct_for`).
    pub(super) direct: Option<std::fs::File>,
    /// Pieces not yet ended.
    pub(super) left: AtomicUsize,
    /// The first failure of any piece; later pieces are then skipped.
    pub(super) failed: Mutex<Option<String>>,
}

/// The restore's workers are gone (they stop only once the queue is dropped, or by panicking).
pub(super) struct WorkersStopped;

/// The walking thread's side of the workers' queue: on storage read through the runtime, small
/// whole files are gathered into [`Job::Batch`]es; everything else is sent as it comes.
pub(super) struct Queue {
    tx: crossbeam_channel::Sender<Job>,
    batching: bool,
    batch: Vec<(TreeEntry, Dest)>,
    batch_bytes: u64,
}

impl Queue {
    pub(super) fn new(tx: crossbeam_channel::Sender<Job>, batching: bool) -> Self {
        Queue {
            tx,
            batching,
            batch: Vec::new(),
            batch_bytes: 0,
        }
    }

    /// Queues `job`; `Err` once the workers are gone.
    pub(super) fn send(&mut self, job: Job) -> Result<(), WorkersStopped> {
        match job {
            Job::File { entry, dest } if self.batching && entry.size <= BATCH_FILE_MAX => {
                self.batch_bytes += entry.size;
                self.batch.push((entry, dest));
                if self.batch_bytes >= BATCH_BYTES || self.batch.len() >= BATCH_FILES {
                    self.send_batch()?;
                }
                Ok(())
            }
            job => self.tx.send(job).map_err(|_| WorkersStopped),
        }
    }

    pub(super) fn send_batch(&mut self) -> Result<(), WorkersStopped> {
        self.batch_bytes = 0;
        match std::mem::take(&mut self.batch) {
            b if b.is_empty() => Ok(()),
            b => self.tx.send(Job::Batch(b)).map_err(|_| WorkersStopped),
        }
    }

    /// Sends the batch being gathered.
    pub(super) fn flush(&mut self) -> Result<(), String> {
        self.send_batch()
            .map_err(|_| "restore workers stopped".to_string())
    }
}
