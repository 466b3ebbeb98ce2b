//! The overwrite check a restore makes before it writes anything: which entries already at the
//! target differ from what the backup would put there.
//!
//! An entry already where the backup puts one is *the same* when it is a regular file of the
//! backup's size and modification time (to the nanosecond, as a restore leaves it), a symlink to
//! the backup's target, or a FIFO/device/hard-link name of the same type; anything else there
//! differs. Folders are merged, never a conflict (a non-folder where a folder goes is refused by
//! the restore itself, with its own error). Entries absent from the target never conflict, and
//! neither do files the target has and the backup does not (they are left alone). This check reads
//! paths (`lstat`) only to inform the caller; the restore itself still reaches the target only
//! through directory handles (see the parent module).

use super::safe_components;
use crate::chunkread::{read_chunks, KeyCache};
use crate::{EngineError, RestoreOptions};
use ibs_repo::chunk::ChunkOpener;
use ibs_repo::ids::ChunkId;
use ibs_repo::keyring::Unlock;
use ibs_repo::tree::{parse_header, EntryKind, TreeEntry};
use ibs_repo::Repository;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Up to `limit` paths under `opts.target` that hold something other than what restoring `opts`
/// would put there (empty when the target does not exist yet).
pub async fn conflicts(
    repo: Arc<Repository>,
    unlock: Arc<Unlock>,
    opts: &RestoreOptions,
    limit: usize,
) -> Result<Vec<PathBuf>, EngineError> {
    if std::fs::symlink_metadata(&opts.target).is_err() {
        return Ok(Vec::new());
    }
    let keys = KeyCache::open(repo.clone(), unlock.clone()).await?;
    let manifest = repo.read_manifest(&opts.backup_id).await?;
    let tree = keys.open_tree(&manifest).await?;
    let mut sources = Vec::new();
    for s in &tree.sources {
        if opts.source.as_deref().is_some_and(|n| n != s.name) {
            continue;
        }
        let ids = s
            .tree
            .iter()
            .map(|h| ChunkId::from_hex(h))
            .collect::<Result<Vec<_>, _>>()?;
        let dest = match &opts.source {
            Some(_) => opts.target.clone(),
            None => opts.target.join(&s.name),
        };
        sources.push((ids, dest));
    }
    let index = crate::keysel::reader_index(&repo, &keys.repo_keys.metadata, &unlock).await?;
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut found = Vec::new();
        let mut opener = ChunkOpener::default();
        for (ids, dest) in sources {
            let mut pending = Vec::<u8>::new();
            let mut format = None;
            read_chunks(&rt, &repo, &keys, &index, &ids, &mut opener, |data| {
                pending.extend_from_slice(data);
                let mut start = 0;
                while let Some(nl) = pending[start..].iter().position(|b| *b == b'\n') {
                    let line = &pending[start..start + nl];
                    start += nl + 1;
                    let Some(format) = format else {
                        format = Some(parse_header(line).map_err(|e| e.to_string())?);
                        continue;
                    };
                    if found.len() >= limit {
                        continue;
                    }
                    let entry =
                        TreeEntry::parse_line_in(line, format).map_err(|e| e.to_string())?;
                    let rel: PathBuf = safe_components(&entry.path)?.iter().collect();
                    let path = dest.join(rel);
                    if entry.error.is_none() && differs(&path, &entry) {
                        found.push(path);
                    }
                }
                pending.drain(..start);
                Ok(())
            })
            .map_err(|detail| crate::RestoreError::TreeUnreadable { detail })?;
        }
        Ok::<_, EngineError>(found)
    })
    .await
    .map_err(|cause| EngineError::Task {
        task: "restore check",
        cause,
    })?
}

/// Whether `path` holds something other than what restoring `e` puts there.
fn differs(path: &Path, e: &TreeEntry) -> bool {
    let Ok(m) = std::fs::symlink_metadata(path) else {
        return false;
    };
    let ft = m.file_type();
    match e.kind {
        // Folders merge; a non-folder where one goes is refused by the restore itself, naming it.
        EntryKind::Dir => false,
        EntryKind::File => {
            let mtime_ns = m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128;
            !(ft.is_file() && m.len() == e.size && mtime_ns == e.mtime_ns as i128)
        }
        EntryKind::HardLink => !ft.is_file(),
        EntryKind::Symlink => {
            !ft.is_symlink()
                || std::fs::read_link(path)
                    .ok()
                    .map(|t| t.as_os_str().as_bytes().to_vec())
                    != e.target
        }
        EntryKind::Fifo => !ft.is_fifo(),
        EntryKind::CharDevice => !ft.is_char_device(),
        EntryKind::BlockDevice => !ft.is_block_device(),
    }
}
