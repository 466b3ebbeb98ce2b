//! Restore: rebuild a backup's files under a target folder, byte-identical, with modes, mtimes,
//! ownership (when run as root), symlinks, empty directories and sparse zero runs.
//!
//! Safety invariants:
//! - Every path from a manifest is checked: relative, no empty, `.` or `..` component, no NUL.
//! - Every directory on the way to an entry was created or checked (lstat: a real directory, never a
//!   symlink) by this restore; symlinks are created only after every file and directory, so no write
//!   can pass through a symlink the manifest planted.
//! - A file is written to a temporary name (O_NOFOLLOW, O_EXCL) and renamed into place only after all
//!   its chunks decrypted and verified: a damaged chunk never leaves wrong bytes under the file's name.

use crate::chunkread::{read_chunks, KeyCache};
use crate::progress::Progress;
use crate::EngineError;
use ibs_repo::chunk::ChunkOpener;
use ibs_repo::ids::{ChunkId, KeyId};
use ibs_repo::index::Index;
use ibs_repo::keyring::Unlock;
use ibs_repo::lock::{self, LockKind};
use ibs_repo::pack::encoding;
use ibs_repo::tree::{parse_header, EntryKind, TreeEntry};
use ibs_repo::Repository;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct RestoreOptions {
    pub backup_id: String,
    pub target: PathBuf,
    /// Restore only this source, directly into `target`; otherwise each source goes to `target/<name>`.
    pub source: Option<String>,
    pub threads: usize,
    pub progress: Arc<Progress>,
    pub lock_wait: Duration,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
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

/// Files at least this large are restored in pieces by several workers at once.
const SPLIT_MIN: u64 = 16 << 20;
/// A piece covers whole chunks and at least this many bytes (the last one may be shorter).
const PIECE: u64 = 8 << 20;

enum Job {
    /// A whole file, restored by one worker.
    File { entry: TreeEntry, dest: PathBuf },
    /// A range of a large file's chunks and the offset of its first byte; the worker that ends the
    /// last piece puts the file in place.
    Piece {
        file: Arc<SplitFile>,
        chunks: std::ops::Range<usize>,
        offset: u64,
    },
}

/// A large file being restored in pieces, into its temporary name.
struct SplitFile {
    entry: TreeEntry,
    dest: PathBuf,
    tmp: PathBuf,
    file: std::fs::File,
    /// Pieces not yet ended.
    left: AtomicUsize,
    /// The first failure of any piece; later pieces are then skipped.
    failed: Mutex<Option<String>>,
}

struct Shared {
    rt: tokio::runtime::Handle,
    repo: Arc<Repository>,
    keys: KeyCache,
    index: Index,
    progress: Arc<Progress>,
    errors: Mutex<Vec<String>>,
    files: AtomicU64,
    bytes: AtomicU64,
    seq: AtomicU64,
}

impl Shared {
    fn error(&self, path: &Path, e: String) {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{}: {e}", path.display()));
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
    let data_key = keys
        .data_key(
            &KeyId::from_hex(&cat.data_key_id)?,
            cat.certificate_thumbprint.as_deref(),
        )
        .await?;
    let tree = manifest.open_tree(&data_key)?;
    let sources: Vec<_> = match &opts.source {
        Some(name) => {
            let s = tree
                .sources
                .iter()
                .find(|s| &s.name == name)
                .ok_or_else(|| {
                    let names: Vec<_> = tree.sources.iter().map(|s| s.name.as_str()).collect();
                    EngineError::Restore(format!(
                        "backup {} has no source {name:?} (it has: {})",
                        cat.backup_id,
                        names.join(", ")
                    ))
                })?;
            vec![(s.clone(), opts.target.clone())]
        }
        None => tree
            .sources
            .iter()
            .map(|s| (s.clone(), opts.target.join(&s.name)))
            .collect(),
    };
    for (s, _) in &sources {
        crate::backup::validate_name(&s.name)
            .map_err(|e| EngineError::Restore(format!("manifest: {e}")))?;
        if let Some(sum) = cat.sources.iter().find(|x| x.name == s.name) {
            opts.progress.add_total(sum.bytes, sum.files);
        }
    }
    let lock = lock::acquire(
        repo.storage(),
        repo.clock().clone(),
        LockKind::Shared,
        "restore",
        opts.lock_wait,
    )
    .await?;
    let index = crate::keysel::reader_index(&repo, &keys.repo_keys.metadata, &unlock).await?;
    let shared = Arc::new(Shared {
        rt: tokio::runtime::Handle::current(),
        repo: repo.clone(),
        keys,
        index,
        progress: opts.progress.clone(),
        errors: Mutex::new(Vec::new()),
        files: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        seq: AtomicU64::new(0),
    });
    let threads = if opts.threads == 0 {
        4.max(
            2 * std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        )
    } else {
        opts.threads
    };
    let sh = shared.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut report = RestoreReport::default();
        for (src, dest) in sources {
            let ids = src
                .tree
                .iter()
                .map(|h| ChunkId::from_hex(h))
                .collect::<Result<Vec<_>, _>>()?;
            restore_source(&sh, &ids, &dest, threads, &mut report)?;
        }
        Ok::<_, EngineError>(report)
    })
    .await
    .map_err(|e| EngineError::Internal(format!("restore: {e}")));
    lock.release().await?;
    let mut report = result??;
    report.files = shared.files.load(Ordering::Relaxed);
    report.bytes = shared.bytes.load(Ordering::Relaxed);
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
    dest: &Path,
    threads: usize,
    report: &mut RestoreReport,
) -> Result<(), EngineError> {
    std::fs::create_dir_all(dest)
        .map_err(|e| EngineError::Restore(format!("cannot create {}: {e}", dest.display())))?;
    let (tx, rx) = crossbeam_channel::bounded::<Job>(threads * 4);
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (rx, sh) = (rx.clone(), sh.clone());
            std::thread::spawn(move || {
                let mut opener = ChunkOpener::default();
                for job in rx {
                    match job {
                        Job::File { entry, dest } => {
                            if let Err(e) = restore_file(&sh, &entry, &dest, &mut opener) {
                                sh.error(&dest, e);
                            }
                        }
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
        verified: HashSet::from([dest.to_path_buf()]),
        dirs: Vec::new(),
        links: Vec::new(),
    };
    let mut pending = Vec::<u8>::new();
    let mut header_seen = false;
    let mut opener = ChunkOpener::default();
    let walk = read_chunks(
        &sh.rt,
        &sh.repo,
        &sh.keys,
        &sh.index,
        tree,
        &mut opener,
        |data| {
            pending.extend_from_slice(data);
            let mut start = 0;
            while let Some(nl) = pending[start..].iter().position(|b| *b == b'\n') {
                let line = &pending[start..start + nl];
                start += nl + 1;
                if !header_seen {
                    parse_header(line).map_err(|e| e.to_string())?;
                    header_seen = true;
                    continue;
                }
                let entry = TreeEntry::parse_line(line).map_err(|e| e.to_string())?;
                dispatch(sh, entry, dest, &mut seen, &tx, report)?;
            }
            pending.drain(..start);
            Ok(())
        },
    );
    drop(tx);
    for w in workers {
        let _ = w.join();
    }
    walk.map_err(|e| EngineError::Restore(format!("reading the backup's tree failed: {e}")))?;
    if !pending.is_empty() {
        return Err(EngineError::Restore(
            "the backup's tree ends in the middle of an entry".into(),
        ));
    }
    let Seen {
        verified,
        dirs,
        links,
    } = seen;
    for (path, e) in links {
        match restore_symlink(&path, &e, dest, &verified) {
            Ok(()) => report.symlinks += 1,
            Err(err) => report.errors.push(format!("{}: {err}", path.display())),
        }
    }
    for (path, e) in dirs.iter().rev() {
        apply_metadata(path, e, false);
    }
    report.dirs += dirs.len() as u64;
    Ok(())
}

/// What the walking thread keeps while it reads a source's tree.
struct Seen {
    /// Directories this restore created or checked (lstat: a real directory, not a symlink).
    verified: HashSet<PathBuf>,
    /// Directories, for their metadata once their contents are in place.
    dirs: Vec<(PathBuf, TreeEntry)>,
    /// Symlinks, created after every file and directory.
    links: Vec<(PathBuf, TreeEntry)>,
}

/// Handles one tree entry on the walking thread: directories now, files to the workers, symlinks later.
fn dispatch(
    sh: &Shared,
    entry: TreeEntry,
    dest: &Path,
    seen: &mut Seen,
    tx: &crossbeam_channel::Sender<Job>,
    report: &mut RestoreReport,
) -> Result<(), String> {
    let comps = safe_components(&entry.path)?;
    let mut path = dest.to_path_buf();
    for c in &comps {
        path.push(c);
    }
    let parent = path.parent().unwrap_or(dest).to_path_buf();
    if entry.kind == EntryKind::Dir && comps.is_empty() {
        seen.dirs.push((path, entry));
        return Ok(());
    }
    if !seen.verified.contains(&parent) {
        return Err(format!(
            "{}: its parent directory is not part of the restore (unsafe or malformed manifest)",
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
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(format!(
                        "{}: exists and is not a directory; refusing to restore through it",
                        path.display()
                    ))
                }
                Err(_) => {
                    std::fs::create_dir(&path).map_err(|e| format!("{}: {e}", path.display()))?
                }
            }
            seen.verified.insert(path.clone());
            seen.dirs.push((path, entry));
        }
        EntryKind::Symlink => seen.links.push((path, entry)),
        EntryKind::File => {
            let stopped = |_| "restore workers stopped".to_string();
            match pieces(&sh.index, &entry) {
                None => tx.send(Job::File { entry, dest: path }).map_err(stopped)?,
                Some(pieces) => match create_temp(sh, &path) {
                    Err(e) => sh.error(&path, e),
                    Ok((tmp, file)) => {
                        let file = Arc::new(SplitFile {
                            entry,
                            dest: path,
                            tmp,
                            file,
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

/// How to restore `e` in pieces (chunk ranges and the offset each starts at), or `None` to restore
/// it whole: it is small, has a delta chunk (whose length is known only once its base is read), or
/// its chunks are not all in the index or do not add up to its size (the whole-file path then
/// reports the problem).
fn pieces(index: &Index, e: &TreeEntry) -> Option<Vec<(std::ops::Range<usize>, u64)>> {
    if e.size < SPLIT_MIN {
        return None;
    }
    let mut out = Vec::new();
    let (mut start, mut start_offset, mut offset) = (0, 0u64, 0u64);
    for (i, id) in e.chunks.iter().enumerate() {
        let loc = index.get(id)?;
        if loc.encoding == encoding::DELTA {
            return None;
        }
        offset += loc.raw_length as u64;
        if offset - start_offset >= PIECE || i + 1 == e.chunks.len() {
            out.push((start..i + 1, start_offset));
            (start, start_offset) = (i + 1, offset);
        }
    }
    (offset == e.size && out.len() > 1).then_some(out)
}

/// Creates the temporary file `dest` is restored into (beside it; renamed over it at the end).
fn create_temp(sh: &Shared, dest: &Path) -> Result<(PathBuf, std::fs::File), String> {
    let dir = dest.parent().ok_or("no parent")?;
    let tmp = dir.join(format!(
        ".ibs-restore-{}-{}",
        std::process::id(),
        sh.seq.fetch_add(1, Ordering::Relaxed)
    ));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|err| format!("cannot create a temporary file in {}: {err}", dir.display()))?;
    Ok((tmp, file))
}

/// Writes `chunks` (decrypted and verified) into `file` from `offset` on; returns the end offset.
fn write_chunks(
    sh: &Shared,
    file: &std::fs::File,
    chunks: &[ChunkId],
    mut offset: u64,
    opener: &mut ChunkOpener,
) -> Result<u64, String> {
    read_chunks(
        &sh.rt,
        &sh.repo,
        &sh.keys,
        &sh.index,
        chunks,
        opener,
        |data| {
            write_sparse(file, offset, data).map_err(|err| format!("write: {err}"))?;
            offset += data.len() as u64;
            sh.progress.add_bytes(data.len() as u64);
            Ok(())
        },
    )?;
    Ok(offset)
}

/// Restores one piece of a split file; the last piece to end finishes the file.
fn restore_piece(
    sh: &Shared,
    f: &SplitFile,
    chunks: std::ops::Range<usize>,
    offset: u64,
    opener: &mut ChunkOpener,
) {
    let lock = || f.failed.lock().unwrap_or_else(|p| p.into_inner());
    if lock().is_none() {
        if let Err(e) = write_chunks(sh, &f.file, &f.entry.chunks[chunks], offset, opener) {
            lock().get_or_insert(e);
        }
    }
    if f.left.fetch_sub(1, Ordering::AcqRel) != 1 {
        return;
    }
    let result = match lock().take() {
        Some(e) => Err(e),
        None => f.file.set_len(f.entry.size).map_err(|e| e.to_string()),
    };
    if let Err(e) = result.and_then(|()| put_in_place(sh, &f.entry, &f.tmp, &f.dest)) {
        let _ = std::fs::remove_file(&f.tmp);
        sh.error(&f.dest, e);
    }
}

/// Gives a fully written temporary file its metadata and its name.
fn put_in_place(sh: &Shared, e: &TreeEntry, tmp: &Path, dest: &Path) -> Result<(), String> {
    apply_metadata(tmp, e, false);
    std::fs::rename(tmp, dest).map_err(|err| format!("rename into place: {err}"))?;
    sh.files.fetch_add(1, Ordering::Relaxed);
    sh.bytes.fetch_add(e.size, Ordering::Relaxed);
    sh.progress.add_file();
    Ok(())
}

fn restore_file(
    sh: &Shared,
    e: &TreeEntry,
    dest: &Path,
    opener: &mut ChunkOpener,
) -> Result<(), String> {
    let (tmp, file) = create_temp(sh, dest)?;
    let result = write_chunks(sh, &file, &e.chunks, 0, opener).and_then(|end| {
        if end != e.size {
            return Err(format!(
                "restored {end} bytes but the backup recorded {}",
                e.size
            ));
        }
        file.set_len(end).map_err(|err| err.to_string())
    });
    drop(file);
    if let Err(err) = result.and_then(|()| put_in_place(sh, e, &tmp, dest)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(err);
    }
    Ok(())
}

/// Writes `data` at `offset`, skipping 4 KiB blocks that are all zero so they stay holes.
fn write_sparse(f: &std::fs::File, offset: u64, data: &[u8]) -> std::io::Result<()> {
    const BLOCK: usize = 4096;
    let mut i = 0;
    while i < data.len() {
        let end = (i + BLOCK).min(data.len());
        if data[i..end].iter().all(|b| *b == 0) {
            i = end;
            continue;
        }
        let mut j = end;
        while j < data.len() {
            let next = (j + BLOCK).min(data.len());
            if data[j..next].iter().all(|b| *b == 0) {
                break;
            }
            j = next;
        }
        f.write_all_at(&data[i..j], offset + i as u64)?;
        i = j;
    }
    Ok(())
}

fn restore_symlink(
    path: &Path,
    e: &TreeEntry,
    dest: &Path,
    verified: &HashSet<PathBuf>,
) -> Result<(), String> {
    let parent = path.parent().unwrap_or(dest);
    if !verified.contains(parent) {
        return Err("parent directory is not part of the restore".into());
    }
    // The parent must still be a real directory (nothing swapped it for a link meanwhile).
    match std::fs::symlink_metadata(parent) {
        Ok(m) if m.is_dir() => {}
        _ => return Err("parent is no longer a directory".into()),
    }
    let target = e.target.as_deref().ok_or("symlink without a target")?;
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if m.is_dir() {
            return Err("a directory exists where the symlink goes".into());
        }
        std::fs::remove_file(path).map_err(|err| err.to_string())?;
    }
    std::os::unix::fs::symlink(OsStr::from_bytes(target), path).map_err(|err| err.to_string())?;
    apply_metadata(path, e, true);
    Ok(())
}

/// Best-effort mode, owner (root only) and mtime.
fn apply_metadata(path: &Path, e: &TreeEntry, is_link: bool) {
    let mtime = filetime::FileTime::from_unix_time(
        e.mtime_ns.div_euclid(1_000_000_000),
        e.mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    if nix::unistd::geteuid().is_root() {
        let _ = std::os::unix::fs::lchown(path, Some(e.uid), Some(e.gid));
    }
    if is_link {
        let _ = filetime::set_symlink_file_times(path, mtime, mtime);
        return;
    }
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(e.mode & 0o7777));
    let _ = filetime::set_file_times(path, mtime, mtime);
}
