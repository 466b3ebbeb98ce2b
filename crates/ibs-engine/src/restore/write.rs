//! Writing one entry under the target: a whole file, a piece of a large file, a symlink. A file
//! of at most [`IN_MEMORY_MAX`] bytes is decrypted and verified whole in memory, then created under
//! its own name (`O_CREAT|O_EXCL|O_NOFOLLOW`, so nothing already there is touched) and written at
//! once; a larger file, and a small one whose name is taken (an `--overwrite` restore, a planted
//! link), goes to a temporary name in its folder and is renamed into place only once its chunks
//! are verified and its metadata applied. Either way no unverified byte reaches a file's name
//! (the invariants of [`super`]).

use super::queue::{BATCH_FILE_MAX, PIECE, SPLIT_MIN};
use super::*;
use crate::chunkread::{prefetch, read_chunks_via, Prefetched, ReadVia};

/// How to restore `e` in pieces (chunk ranges and the offset each starts at), or `None` to restore
/// it whole: it is small, has a delta chunk (whose length is known only once its base is read), or
/// its chunks are not all in the index or do not add up to its size (the whole-file path then
/// reports the problem).
pub(super) fn pieces(index: &Index, e: &TreeEntry) -> Option<Vec<(std::ops::Range<usize>, u64)>> {
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

/// Creates the temporary file a file of `dir` is restored into (renamed over its name at the end).
pub(super) fn create_temp(
    sh: &Shared,
    dir: &TargetDir,
) -> Result<(OsString, std::fs::File), String> {
    let tmp = sh.temp_name();
    let file = dir.create_file(&tmp, 0o600).map_err(|err| {
        format!(
            "cannot create a temporary file in {}: {err}",
            dir.path().display()
        )
    })?;
    Ok((tmp, file))
}

/// Files at least this large are written past the page cache where the file system allows it
/// (`crate::fileio::write_sparse`): a restore's bytes are not read again soon, and copying 10 GiB
/// into fresh page-cache pages was the largest single cost of a restore (ADR 0050).
pub(super) const DIRECT_FILE_MIN: u64 = 1 << 20;

/// The `O_DIRECT` descriptor a file of `size` bytes is written through, if any. The file is given
/// its size first (a hole, which the writes fill and zero runs leave): a direct write past the end
/// of a file extends it, which ext4 serialises and journals across every file being written.
pub(super) fn direct_for(file: &std::fs::File, size: u64) -> Option<std::fs::File> {
    if size < DIRECT_FILE_MIN {
        return None;
    }
    let direct = ibs_storage::direct::reopen(file)?;
    file.set_len(size).ok()?;
    Some(direct)
}

/// Writes `chunks` (decrypted and verified) into `file` (or its `direct` descriptor, see
/// [`DIRECT_FILE_MIN`]) from `offset` on; returns the end offset. Chunks in `prefetched` are taken
/// from it; others are read under the restore's read budget.
pub(super) fn write_chunks(
    sh: &Shared,
    file: &std::fs::File,
    direct: Option<&std::fs::File>,
    chunks: &[ChunkId],
    mut offset: u64,
    opener: &mut ChunkOpener,
    prefetched: Option<&Prefetched>,
) -> Result<u64, String> {
    read_verified(sh, chunks, opener, prefetched, |data| {
        crate::fileio::write_sparse(file, direct, offset, data)
            .map_err(|err| format!("write: {err}"))?;
        offset += data.len() as u64;
        Ok(())
    })?;
    Ok(offset)
}

/// Hands `chunks`, each decrypted and verified, to `sink` in order, counting their bytes as
/// restored. Chunks in `prefetched` are taken from it; others are read under the restore's read
/// budget.
fn read_verified(
    sh: &Shared,
    chunks: &[ChunkId],
    opener: &mut ChunkOpener,
    prefetched: Option<&Prefetched>,
    mut sink: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<(), String> {
    // A batch's worker holds budget for its prefetched chunks: what it reads beyond them is not
    // counted, so it never waits for budget while holding some.
    let via = ReadVia {
        prefetched,
        budget: sh.budget.as_ref().filter(|_| prefetched.is_none()),
        openers: sh.openers.as_ref(),
        blocks: sh.blocks.as_ref(),
    };
    let (rt, repo, keys, index) = (&sh.rt, &sh.repo, &sh.keys, &sh.index);
    read_chunks_via(rt, repo, keys, index, chunks, opener, via, |data| {
        sink(data)?;
        sh.progress.add_bytes(data.len() as u64);
        Ok(())
    })
}

/// Restores one piece of a split file; the last piece to end finishes the file.
pub(super) fn restore_piece(
    sh: &Shared,
    f: &SplitFile,
    chunks: std::ops::Range<usize>,
    offset: u64,
    opener: &mut ChunkOpener,
) {
    let lock = || f.failed.lock().unwrap_or_else(|p| p.into_inner());
    if sh.cancelled() {
        lock().get_or_insert_with(|| "cancelled".into());
    }
    if lock().is_none() {
        let direct = f.direct.as_ref();
        let chunks = &f.entry.chunks[chunks];
        if let Err(e) = write_chunks(sh, &f.file, direct, chunks, offset, opener, None) {
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
    if let Err(e) = result.and_then(|()| put_in_place(sh, &f.entry, &f.file, &f.tmp, &f.dest)) {
        let _ = f.dest.dir.remove_file(&f.tmp);
        sh.error(&f.dest.path, e);
    }
}

/// Gives a fully written temporary file its metadata (through its open descriptor) and its name.
pub(super) fn put_in_place(
    sh: &Shared,
    e: &TreeEntry,
    file: &std::fs::File,
    tmp: &OsStr,
    dest: &Dest,
) -> Result<(), String> {
    let _ = apply_metadata(file.as_fd(), &metadata(e));
    let warnings = crate::xattrs::apply_fd(file.as_fd(), &e.xattrs);
    dest.dir
        .rename(tmp, &dest.dir, &dest.name)
        .map_err(|err| format!("rename into place: {err}"))?;
    restored(sh, e, dest, warnings);
    Ok(())
}

/// Restores a small file: every chunk decrypted and verified into memory first, so a damaged
/// chunk fails the file before anything is created. The bytes then go under the file's own name,
/// created exclusively; if the name is taken, through a temporary and a rename that replaces what
/// is there, never following it. A failed write removes the file it created.
fn restore_small(
    sh: &Shared,
    e: &TreeEntry,
    dest: &Dest,
    opener: &mut ChunkOpener,
    prefetched: Option<&Prefetched>,
) -> Result<(), String> {
    let mut bytes = Vec::with_capacity(e.size as usize);
    read_verified(sh, &e.chunks, opener, prefetched, |data| {
        if (bytes.len() + data.len()) as u64 > e.size {
            return Err(format!(
                "the chunks hold more than the {} bytes the backup recorded",
                e.size
            ));
        }
        bytes.extend_from_slice(data);
        Ok(())
    })?;
    if bytes.len() as u64 != e.size {
        return Err(format!(
            "restored {} bytes but the backup recorded {}",
            bytes.len(),
            e.size
        ));
    }
    // The file is new (empty): it needs its length set only when it ends in a hole.
    let write = |file: &std::fs::File| {
        crate::fileio::write_sparse(file, None, 0, &bytes)
            .and_then(|end| {
                if end == e.size {
                    Ok(())
                } else {
                    file.set_len(e.size)
                }
            })
            .map_err(|err| format!("write: {err}"))
    };
    match dest.dir.create_file(&dest.name, 0o600) {
        Ok(file) => {
            if let Err(err) = write(&file) {
                let _ = dest.dir.remove_file(&dest.name);
                return Err(err);
            }
            let _ = apply_metadata(file.as_fd(), &metadata(e));
            let warnings = crate::xattrs::apply_fd(file.as_fd(), &e.xattrs);
            restored(sh, e, dest, warnings);
            Ok(())
        }
        Err(crate::target::TargetError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::AlreadyExists =>
        {
            let (tmp, file) = create_temp(sh, &dest.dir)?;
            let result = write(&file).and_then(|()| put_in_place(sh, e, &file, &tmp, dest));
            if result.is_err() {
                let _ = dest.dir.remove_file(&tmp);
            }
            result
        }
        Err(err) => Err(format!("cannot create the file: {err}")),
    }
}

/// Counts a file that is in place under its name, with its attributes' warnings.
fn restored(sh: &Shared, e: &TreeEntry, dest: &Dest, warnings: Vec<String>) {
    sh.warn(&dest.path, warnings);
    sh.count(e);
    sh.files.fetch_add(1, Ordering::Relaxed);
    sh.bytes.fetch_add(e.size, Ordering::Relaxed);
    sh.progress.add_file();
}

/// Restores a batch of small files: their chunks are fetched first with as few range reads as
/// their packs allow, then each file is written as [`restore_file`] does (a chunk the prefetch
/// could not get is read again alone, so its file reports what is wrong with it). A cancel stops
/// the batch at its next file.
pub(super) fn restore_batch(sh: &Shared, files: Vec<(TreeEntry, Dest)>, opener: &mut ChunkOpener) {
    if sh.cancelled() {
        return;
    }
    let ids: Vec<ChunkId> = files
        .iter()
        .flat_map(|(e, _)| e.chunks.iter().copied())
        .collect();
    let (budget, blocks) = (sh.budget.as_ref(), sh.blocks.as_ref());
    let pre = prefetch(&sh.rt, &sh.repo, &sh.index, &ids, budget, blocks);
    for (entry, dest) in &files {
        if sh.cancelled() {
            return;
        }
        if let Err(e) = restore_file(sh, entry, dest, opener, Some(&pre)) {
            sh.error(&dest.path, e);
        }
    }
}

/// Files up to this size are restored from memory under their own name ([`restore_small`]).
pub(super) const IN_MEMORY_MAX: u64 = BATCH_FILE_MAX;

pub(super) fn restore_file(
    sh: &Shared,
    e: &TreeEntry,
    dest: &Dest,
    opener: &mut ChunkOpener,
    prefetched: Option<&Prefetched>,
) -> Result<(), String> {
    if e.size <= IN_MEMORY_MAX {
        return restore_small(sh, e, dest, opener, prefetched);
    }
    let (tmp, file) = create_temp(sh, &dest.dir)?;
    let direct = direct_for(&file, e.size);
    let written = write_chunks(sh, &file, direct.as_ref(), &e.chunks, 0, opener, prefetched);
    drop(direct);
    let result = written.and_then(|end| {
        if end != e.size {
            return Err(format!(
                "restored {end} bytes but the backup recorded {}",
                e.size
            ));
        }
        file.set_len(end).map_err(|err| err.to_string())
    });
    if let Err(err) = result.and_then(|()| put_in_place(sh, e, &file, &tmp, dest)) {
        let _ = dest.dir.remove_file(&tmp);
        return Err(err);
    }
    Ok(())
}

/// Creates the symlink `rel` in its (reopened, verified) folder: under a temporary name with its
/// owner, times and extended attributes, then renamed over whatever non-folder is at its name.
/// Returns the warnings of its attributes.
pub(super) fn restore_symlink(
    sh: &Shared,
    folders: &Folders,
    rel: &Path,
    e: &TreeEntry,
) -> Result<Vec<String>, String> {
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Err("a symlink cannot be the source itself".into());
    };
    let dir = folders.reopen(parent).map_err(|err| err.to_string())?;
    let target = e.target.as_deref().ok_or("symlink without a target")?;
    if dir.kind_of(name).map_err(|err| err.to_string())? == Some(rustix::fs::FileType::Directory) {
        return Err("a directory exists where the symlink goes".into());
    }
    let tmp = sh.temp_name();
    dir.symlink(target, &tmp).map_err(|err| err.to_string())?;
    let _ = dir.set_link_metadata(&tmp, &metadata(e));
    let warnings = crate::xattrs::apply_at(dir.fd(), &tmp, &e.xattrs);
    dir.rename(&tmp, &dir, name).map_err(|err| {
        let _ = dir.remove_file(&tmp);
        err.to_string()
    })?;
    Ok(warnings)
}
