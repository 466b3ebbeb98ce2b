//! Restore: rebuild a backup's files under a target folder, byte-identical, with modes, mtimes,
//! ownership (when run as root), extended attributes ([`crate::xattrs`]), symlinks, hard links,
//! FIFOs and device nodes ([`crate::special`]), empty directories and sparse zero runs.
//!
//! Safety invariants:
//! - Every path from a manifest is checked: relative, no empty, `.` or `..` component, no NUL.
//! - The target is reached only through directory handles ([`crate::target::TargetDir`]): the
//!   target folder is opened once; each folder below it is created (`mkdirat`) and opened
//!   (`O_NOFOLLOW|O_DIRECTORY`) relative to its parent's handle, and every file, temporary, rename,
//!   symlink and metadata change is relative to a handle or applied to an open descriptor. A
//!   symlink, file or other non-folder already where a folder goes (also at `TARGET/<source>`) is
//!   refused with an error naming it, never followed; a file or symlink already where a file or
//!   symlink goes is replaced by `renameat`, never followed. A folder swapped for a symlink while the
//!   restore runs does not redirect anything: writes go on through the handle to the real folder,
//!   and a folder reopened later (for symlinks and folder metadata) must be the very one (device and
//!   inode) this restore created or checked, reached with `RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS`.
//! - Every folder on the way to an entry was created or checked by this restore (it appears earlier in
//!   the tree); symlinks are created only after every file and folder, so no write can pass through a
//!   symlink the manifest planted.
//! - No unverified byte reaches a file's name. A file of at most 1 MiB is decrypted and verified
//!   whole in memory, then created under its own name with `O_CREAT|O_EXCL|O_NOFOLLOW` (nothing
//!   already there is touched or followed) and written at once; a failed write removes it. A
//!   larger file, or a small one whose name is taken, is written to a temporary name
//!   (`O_CREAT|O_EXCL|O_NOFOLLOW`, in its folder) and renamed into place only after all its chunks
//!   decrypted and verified, its mode, owner and times already applied to the open descriptor: a
//!   damaged chunk never leaves wrong bytes under the file's name. (A process killed during a
//!   small file's one write can leave that file short under its name, with the restore's time as
//!   its mtime; a later restore reports it as differing, and `--overwrite` replaces it.)
//!   A large file's bytes may also go through a second, `O_DIRECT` descriptor of that same open
//!   temporary file (`write::direct_for`: reopened through its `/proc/self/fd` link, never a path).
//! - Folders are created 0700 and get their own mode, owner and times after their contents: as soon
//!   as the walk has left a folder and its files and sub-folders are done, or at the very end for a
//!   folder with a symlink, hard-link name, FIFO or device below it ([`dirs`]). A tree stream whose
//!   folder's subtree does not follow the folder directly (depth-first) is refused as malformed.
//! - A cancel ([`RestoreOptions::cancel`]) stops the walk at the next entry and the workers at their
//!   next file or piece; a file being written is not put in place (its temporary is removed), so a
//!   cancelled restore leaves whole files only, and returns [`EngineError::Cancelled`].
//! - Entries are counted as they are put in place with [`EntryCounts`], the definition the backup
//!   counted the catalog's `files` and `dirs` with, so the two can be compared.
//! - Extended attributes are applied after the owner (a `chown` clears `security.capability`); an
//!   attribute the target refuses is a warning naming the entry, never dropped silently.

mod conflicts;
mod dirs;
mod queue;
mod reads;
mod write;

pub use conflicts::conflicts;

use crate::blocks::PackBlocks;
use crate::chunkread::{read_chunks, KeyCache, ReadBudget};
use crate::folders::Folders;
use crate::openers::OpenerPool;
use crate::progress::Progress;
use crate::target::{apply_metadata, Metadata, TargetDir};
use crate::{EngineError, RestoreError};
use dirs::{DirMeta, Dirs};
use ibs_repo::chunk::ChunkOpener;
use ibs_repo::ids::ChunkId;
use ibs_repo::index::Index;
use ibs_repo::keyring::Unlock;
use ibs_repo::lock::LockKind;
use ibs_repo::pack::encoding;
use ibs_repo::tree::{parse_header, EntryCounts, EntryKind, TreeEntry};
use ibs_repo::Repository;
use queue::{Dest, Job, Queue, SplitFile};
use reads::{default_threads, openers_at_once, Reads, READ_BUDGET};
use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use write::{create_temp, pieces, restore_batch, restore_file, restore_piece, restore_symlink};

pub struct RestoreOptions {
    pub backup_id: String,
    pub target: PathBuf,
    /// Restore only this source, directly into `target`; otherwise each source goes to `target/<name>`.
    pub source: Option<String>,
    pub threads: usize,
    pub progress: Arc<Progress>,
    pub lock_wait: Duration,
    /// Stops the restore early ([`crate::cancel`]); files already in place stay.
    pub cancel: Option<crate::CancelToken>,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RestoreReport {
    /// Regular files (their first names).
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Further names of hard-linked files.
    pub hardlinks: u64,
    /// FIFOs and device nodes.
    pub specials: u64,
    pub bytes: u64,
    /// Every entry put in place, counted as the backup counted its catalog's `files` and `dirs`.
    pub entries: EntryCounts,
    /// Metadata the target refused (extended attributes), per entry; the entry itself is restored.
    pub warnings: Vec<String>,
    /// Files that could not be restored (their names are not left with wrong bytes).
    pub errors: Vec<String>,
    /// Entries recorded at backup time as unreadable, so there is nothing to restore.
    pub skipped: Vec<String>,
}

/// Splits a manifest path into checked components.
pub fn safe_components(path: &[u8]) -> Result<Vec<&OsStr>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for c in path.split(|b| *b == b'/') {
        if c.is_empty() || c == b"." || c == b".." || c.contains(&0) {
            return Err(format!(
                "refusing unsafe path {:?} from the manifest",
                String::from_utf8_lossy(path)
            ));
        }
        out.push(OsStr::from_bytes(c));
    }
    Ok(out)
}

struct Shared {
    rt: tokio::runtime::Handle,
    repo: Arc<Repository>,
    keys: KeyCache,
    index: Index,
    progress: Arc<Progress>,
    errors: Mutex<Vec<String>>,
    warnings: Mutex<Vec<String>>,
    entries: Mutex<EntryCounts>,
    files: AtomicU64,
    bytes: AtomicU64,
    seq: AtomicU64,
    cancel: Option<crate::CancelToken>,
    /// Bounds the sealed bytes in flight on storage read through the runtime; `None` on a local
    /// folder (read on the workers' threads, one chunk at a time). Its presence also turns on
    /// batches of small files.
    budget: Option<ReadBudget>,
    /// The openers workers open chunks with on storage read through the runtime; `None` on a
    /// local folder, where each worker keeps its own.
    openers: Option<OpenerPool>,
    /// The pack blocks workers cut chunks from on storage read through the runtime; `None` on a
    /// local folder.
    blocks: Option<PackBlocks>,
}

impl Shared {
    fn cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|c| c.is_cancelled())
    }

    fn error(&self, path: &Path, e: String) {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{}: {e}", path.display()));
    }

    fn warn(&self, path: &Path, warnings: Vec<String>) {
        let mut w = self.warnings.lock().unwrap_or_else(|p| p.into_inner());
        for e in warnings {
            w.push(format!("{}: {e}", path.display()));
        }
    }

    fn count(&self, e: &TreeEntry) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(e);
    }

    fn count_dir(&self) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).dirs += 1;
    }

    /// A fresh temporary name (unique in this process; `O_EXCL` guards against anything else).
    fn temp_name(&self) -> OsString {
        format!(
            ".ibs-restore-{}-{}",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        )
        .into()
    }
}

pub(crate) fn metadata(e: &TreeEntry) -> Metadata {
    Metadata {
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        mtime_ns: e.mtime_ns,
    }
}

pub async fn restore(
    repo: Arc<Repository>,
    unlock: Arc<Unlock>,
    opts: RestoreOptions,
) -> Result<RestoreReport, EngineError> {
    let keys = KeyCache::open(repo.clone(), unlock.clone()).await?;
    let manifest = repo.read_manifest(&opts.backup_id).await?;
    let cat = &manifest.catalog;
    let tree = keys.open_tree(&manifest).await?;
    // Each source with the folder it goes to below the target: `None` is the target itself.
    let sources: Vec<_> = match &opts.source {
        Some(name) => {
            let s = tree
                .sources
                .iter()
                .find(|s| &s.name == name)
                .ok_or_else(|| RestoreError::NoSuchSource {
                    backup: cat.backup_id.clone(),
                    source_name: name.clone(),
                    has: tree.sources.iter().map(|s| s.name.clone()).collect(),
                })?;
            vec![(s.clone(), None)]
        }
        None => tree
            .sources
            .iter()
            .map(|s| (s.clone(), Some(OsString::from(&s.name))))
            .collect(),
    };
    for (s, _) in &sources {
        crate::backup::validate_name(&s.name).map_err(RestoreError::BadSourceName)?;
        if let Some(sum) = cat.sources.iter().find(|x| x.name == s.name) {
            opts.progress.add_total(sum.bytes, sum.files);
        }
    }
    let lock = repo
        .lock(LockKind::Shared, "restore", opts.lock_wait)
        .await?;
    let index = crate::keysel::reader_index(&repo, &keys.repo_keys.metadata, &unlock).await?;
    let reads = Reads::of(repo.storage().capabilities());
    let local = reads == Reads::Local;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let threads = if opts.threads == 0 {
        default_threads(reads, cores)
    } else {
        opts.threads
    };
    let shared = Arc::new(Shared {
        rt: tokio::runtime::Handle::current(),
        repo: repo.clone(),
        keys,
        index,
        progress: opts.progress.clone(),
        errors: Mutex::new(Vec::new()),
        warnings: Mutex::new(Vec::new()),
        entries: Mutex::new(EntryCounts::default()),
        files: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        seq: AtomicU64::new(0),
        cancel: opts.cancel.clone(),
        budget: (!local).then(|| ReadBudget::new(READ_BUDGET)),
        openers: (!local).then(|| OpenerPool::new(Some(openers_at_once(cores)))),
        blocks: (reads == Reads::Blocks).then(|| PackBlocks::for_workers(threads)),
    });
    let sh = shared.clone();
    let target = opts.target.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut report = RestoreReport::default();
        let root = TargetDir::open_root(&target).map_err(RestoreError::Target)?;
        for (src, sub) in sources {
            crate::cancel::check(sh.cancel.as_ref())?;
            let ids = src
                .tree
                .iter()
                .map(|h| ChunkId::from_hex(h))
                .collect::<Result<Vec<_>, _>>()?;
            let dest = match sub {
                None => root.open_beneath(Path::new("")),
                Some(name) => root.create_dir(&name, 0o700).map(|(d, _)| d),
            }
            .map_err(RestoreError::Target)?;
            restore_source(&sh, &ids, dest, threads, &mut report)?;
        }
        Ok::<_, EngineError>(report)
    })
    .await
    .map_err(|cause| EngineError::Task {
        task: "restore",
        cause,
    });
    let mut report = lock.finish(result).await??;
    report.files = shared.files.load(Ordering::Relaxed);
    report.bytes = shared.bytes.load(Ordering::Relaxed);
    report.entries = *shared.entries.lock().unwrap_or_else(|p| p.into_inner());
    report.warnings.extend(
        shared
            .warnings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..),
    );
    report.errors.extend(
        shared
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..),
    );
    Ok(report)
}

fn restore_source(
    sh: &Arc<Shared>,
    tree: &[ChunkId],
    dest: TargetDir,
    threads: usize,
    report: &mut RestoreReport,
) -> Result<(), EngineError> {
    let (tx, rx) = crossbeam_channel::bounded::<Job>(threads * 4);
    let mut tx = Queue::new(tx, sh.budget.is_some());
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (rx, sh) = (rx.clone(), sh.clone());
            std::thread::spawn(move || {
                // On a local folder (two workers per core) each keeps its chunk buffers; the many
                // workers of remote storage lease theirs from `sh.openers`, so memory stays
                // bounded; their own opener is not used for file contents.
                let mut opener = if sh.budget.is_none() {
                    ChunkOpener::reusing()
                } else {
                    ChunkOpener::default()
                };
                for job in rx {
                    match job {
                        // Cancelled: the rest of the queue is drained without writing.
                        Job::File { .. } if sh.cancelled() => {}
                        Job::File { entry, dest } => {
                            if let Err(e) = restore_file(&sh, &entry, &dest, &mut opener, None) {
                                sh.error(&dest.path, e);
                            }
                        }
                        Job::Batch(files) => restore_batch(&sh, files, &mut opener),
                        Job::Piece {
                            file,
                            chunks,
                            offset,
                        } => restore_piece(&sh, &file, chunks, offset, &mut opener),
                    }
                }
            })
        })
        .collect();
    drop(rx);

    let mut seen = Seen {
        folders: Folders::new(dest),
        dirs: Dirs::new(),
        links: Vec::new(),
        later: Vec::new(),
        leaders: std::collections::HashSet::new(),
    };
    let mut pending = Vec::<u8>::new();
    let mut format = None;
    let mut opener = ChunkOpener::default();
    let walk = read_chunks(
        &sh.rt,
        &sh.repo,
        &sh.keys,
        &sh.index,
        tree,
        &mut opener,
        |data| {
            if sh.cancelled() {
                return Err("cancelled".into());
            }
            pending.extend_from_slice(data);
            let mut start = 0;
            while let Some(nl) = pending[start..].iter().position(|b| *b == b'\n') {
                let line = &pending[start..start + nl];
                start += nl + 1;
                let Some(format) = format else {
                    format = Some(parse_header(line).map_err(|e| e.to_string())?);
                    continue;
                };
                let entry = TreeEntry::parse_line_in(line, format).map_err(|e| e.to_string())?;
                dispatch(sh, entry, &mut seen, &mut tx, report)?;
            }
            pending.drain(..start);
            Ok(())
        },
    );
    // Files batched but not yet sent go now (also after a failed walk: what was dispatched is
    // restored, as without batches).
    let flushed = tx.flush();
    drop(tx);
    for w in workers {
        let _ = w.join();
    }
    crate::cancel::check(sh.cancel.as_ref())?;
    walk.and(flushed)
        .map_err(|detail| RestoreError::TreeUnreadable { detail })?;
    if !pending.is_empty() {
        return Err(RestoreError::TreeTruncated.into());
    }
    let Seen {
        mut folders,
        mut dirs,
        links,
        later,
        leaders,
    } = seen;
    let deferred = dirs.finish(&mut |rel, m| apply_dir(sh, &mut folders, report, rel, m));
    let root = folders.root().clone();
    for (rel, e) in later {
        let path = root.path().join(&rel);
        match crate::special::restore(&|| sh.temp_name(), &folders, &rel, &e, &leaders) {
            Ok(w) => {
                sh.warn(&path, w);
                sh.count(&e);
                match e.kind {
                    EntryKind::HardLink => report.hardlinks += 1,
                    _ => report.specials += 1,
                }
            }
            Err(err) => report.errors.push(format!("{}: {err}", path.display())),
        }
    }
    for (rel, e) in links {
        let path = root.path().join(&rel);
        match restore_symlink(sh, &folders, &rel, &e) {
            Ok(w) => {
                sh.warn(&path, w);
                sh.count(&e);
                report.symlinks += 1;
            }
            Err(err) => report.errors.push(format!("{}: {err}", path.display())),
        }
    }
    for (rel, m) in &deferred {
        apply_dir(sh, &mut folders, report, rel, m);
    }
    Ok(())
}

/// Applies a folder's metadata once nothing more is written into it ([`dirs`]), then forgets the
/// folder: no later entry may be under it. Best effort, as for files; but a folder that is no longer
/// the one restored is reported.
fn apply_dir(
    sh: &Shared,
    folders: &mut Folders,
    report: &mut RestoreReport,
    rel: &Path,
    m: &DirMeta,
) {
    report.dirs += 1;
    match folders.reopen(rel) {
        Ok(dir) => {
            let _ = apply_metadata(dir.fd(), &m.metadata());
            sh.warn(
                &folders.root().path().join(rel),
                crate::xattrs::apply_fd(dir.fd(), &m.xattrs),
            );
            sh.count_dir();
        }
        Err(err) => report
            .errors
            .push(format!("folder metadata not applied: {err}")),
    }
    folders.forget(rel);
}

/// What the walking thread keeps while it reads a source's tree. Paths are relative to the source's
/// folder (`""` is that folder).
struct Seen {
    /// Folders created or checked, and handles on the way to the last entry.
    folders: Folders,
    /// Folders whose metadata is still to be applied.
    dirs: Dirs,
    /// Symlinks, created after every file and folder.
    links: Vec<(PathBuf, TreeEntry)>,
    /// Hard-link names, FIFOs and devices, created after every file ([`crate::special`]).
    later: Vec<(PathBuf, TreeEntry)>,
    /// Files of this restore that have several names (the only files a hard link may name).
    leaders: std::collections::HashSet<PathBuf>,
}

/// Handles one tree entry on the walking thread: directories now, files to the workers, symlinks later.
fn dispatch(
    sh: &Shared,
    entry: TreeEntry,
    seen: &mut Seen,
    tx: &mut Queue,
    report: &mut RestoreReport,
) -> Result<(), String> {
    let comps = safe_components(&entry.path)?;
    let rel: PathBuf = comps.iter().collect();
    let path = seen.folders.root().path().join(&rel);
    let (Some(name), Some(parent)) = (comps.last(), rel.parent()) else {
        if entry.kind == EntryKind::Dir {
            seen.dirs.root(DirMeta::of(entry));
            return Ok(());
        }
        return Err(format!(
            "{}: the source's own entry is not a directory (unsafe or malformed manifest)",
            path.display()
        ));
    };
    if !seen.folders.is_verified(parent) {
        return Err(format!(
            "{}: its parent directory is not part of the restore (unsafe or malformed manifest)",
            path.display()
        ));
    }
    let mut apply = |rel: &Path, m: &DirMeta| apply_dir(sh, &mut seen.folders, report, rel, m);
    if seen.dirs.walk_to(parent, &mut apply).is_err() {
        return Err(format!(
            "{}: not directly after its parent directory's other entries (tree stream out of \
             depth-first order: malformed manifest)",
            path.display()
        ));
    }
    if let Some(err) = &entry.error {
        report.skipped.push(format!(
            "{}: unreadable at backup time: {err}",
            path.display()
        ));
        return Ok(());
    }
    match entry.kind {
        EntryKind::Dir => {
            seen.folders
                .create(&rel, 0o700)
                .map_err(|e| e.to_string())?;
            seen.dirs.enter(rel, DirMeta::of(entry));
        }
        EntryKind::Symlink => {
            seen.dirs.defer();
            seen.links.push((rel, entry))
        }
        EntryKind::HardLink | EntryKind::Fifo | EntryKind::CharDevice | EntryKind::BlockDevice => {
            seen.dirs.defer();
            seen.later.push((rel, entry))
        }
        EntryKind::File => {
            if entry.link_leader {
                // Its later names are linked from its folder at the end.
                seen.dirs.defer();
                seen.leaders.insert(rel.clone());
            }
            let parent = seen.folders.get(parent).map_err(|e| e.to_string())?;
            let stopped = |_| "restore workers stopped".to_string();
            let dest = Dest {
                dir: parent,
                name: name.to_os_string(),
                path,
                _folder: seen.dirs.pending(),
            };
            match pieces(&sh.index, &entry) {
                None => tx.send(Job::File { entry, dest }).map_err(stopped)?,
                Some(pieces) => match create_temp(sh, &dest.dir) {
                    Err(e) => sh.error(&dest.path, e),
                    Ok((tmp, file)) => {
                        let direct = write::direct_for(&file, entry.size);
                        let file = Arc::new(SplitFile {
                            entry,
                            dest,
                            tmp,
                            file,
                            direct,
                            left: AtomicUsize::new(pieces.len()),
                            failed: Mutex::new(None),
                        });
                        for (chunks, offset) in pieces {
                            let file = file.clone();
                            tx.send(Job::Piece {
                                file,
                                chunks,
                                offset,
                            })
                            .map_err(stopped)?;
                        }
                    }
                },
            }
        }
    }
    Ok(())
}
