//! Read-only browsing of backups without restoring them (`ibs repo ls|find|dump|diff`): a
//! [`Reader`] opens the repository keys and the index once, then walks the tree of any backup's
//! sources and streams any file's bytes, through the same chunk reader restore and check use (every
//! plaintext authenticated and re-hashed to its id). Nothing is written anywhere.
//!
//! The blocking calls ([`Reader::walk`], [`Reader::read_file`]) must run on a non-runtime thread
//! (e.g. `tokio::task::spawn_blocking`): they wait for the runtime the reader was opened on. A caller
//! that wants the packs it reads kept from a concurrent prune holds a shared repository lock while
//! it browses. [`FileCursor`] ([`Reader::open_file`], [`Reader::read_at`]) reads a file at any
//! offset, for `ibs repo mount`.

mod cursor;

pub use cursor::FileCursor;

use crate::chunkread::{read_chunks, KeyCache};
use crate::{EngineError, RestoreError};
use ibs_repo::chunk::ChunkOpener;
use ibs_repo::ids::ChunkId;
use ibs_repo::index::Index;
use ibs_repo::keyring::Unlock;
use ibs_repo::manifest::Catalog;
use ibs_repo::tree::{parse_header, EntryKind, TreeEntry};
use ibs_repo::Repository;
use std::sync::Arc;

/// A reader of backups: repository keys, data keys opened on demand, and the index.
pub struct Reader {
    rt: tokio::runtime::Handle,
    repo: Arc<Repository>,
    keys: KeyCache,
    index: Index,
}

/// One backup as a reader sees it: its catalog and its sources' trees.
pub struct BackupView {
    pub catalog: Catalog,
    pub sources: Vec<SourceView>,
}

/// One source of a backup: its name and the chunks of its tree stream.
pub struct SourceView {
    pub name: String,
    tree: Vec<ChunkId>,
}

impl BackupView {
    /// The source named `name`, or [`RestoreError::NoSuchSource`] naming the ones there are.
    pub fn source(&self, name: &str) -> Result<&SourceView, EngineError> {
        self.sources.iter().find(|s| s.name == name).ok_or_else(|| {
            RestoreError::NoSuchSource {
                backup: self.catalog.backup_id.clone(),
                source_name: name.to_string(),
                has: self.sources.iter().map(|s| s.name.clone()).collect(),
            }
            .into()
        })
    }
}

impl Reader {
    /// Opens the repository keys with `unlock` and loads the index (fails with a key error when
    /// `unlock` opens nothing).
    pub async fn open(repo: Arc<Repository>, unlock: Arc<Unlock>) -> Result<Self, EngineError> {
        let keys = KeyCache::open(repo.clone(), unlock.clone()).await?;
        let index = crate::keysel::reader_index(&repo, &keys.repo_keys.metadata, &unlock).await?;
        Ok(Reader {
            rt: tokio::runtime::Handle::current(),
            repo,
            keys,
            index,
        })
    }

    /// Reads and opens backup `id`'s manifest (not-found is [`ibs_repo::RepoError::NoSuchBackup`]).
    pub async fn backup(&self, id: &str) -> Result<BackupView, EngineError> {
        let manifest = self.repo.read_manifest(id).await?;
        let tree = self.keys.open_tree(&manifest).await?;
        let mut sources = Vec::new();
        for s in &tree.sources {
            let ids = s
                .tree
                .iter()
                .map(|h| ChunkId::from_hex(h))
                .collect::<Result<Vec<_>, _>>()?;
            sources.push(SourceView {
                name: s.name.clone(),
                tree: ids,
            });
        }
        Ok(BackupView {
            catalog: manifest.catalog.clone(),
            sources,
        })
    }

    /// Calls `f` with every entry of `source`'s tree in stored order (parents before children,
    /// siblings in byte order); `f` returning `Ok(false)` stops the walk early. Blocking.
    pub fn walk(
        &self,
        source: &SourceView,
        mut f: impl FnMut(TreeEntry) -> Result<bool, String>,
    ) -> Result<(), EngineError> {
        let mut opener = ChunkOpener::default();
        let mut pending = Vec::<u8>::new();
        let mut format = None;
        let mut stopped = false;
        let walked = read_chunks(
            &self.rt,
            &self.repo,
            &self.keys,
            &self.index,
            &source.tree,
            &mut opener,
            |data| {
                if stopped {
                    return Ok(());
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
                    let entry =
                        TreeEntry::parse_line_in(line, format).map_err(|e| e.to_string())?;
                    if !f(entry)? {
                        stopped = true;
                        break;
                    }
                }
                pending.drain(..start);
                Ok(())
            },
        );
        walked.map_err(|detail| RestoreError::TreeUnreadable { detail })?;
        if !stopped && !pending.is_empty() {
            return Err(RestoreError::TreeTruncated.into());
        }
        Ok(())
    }

    /// Streams a regular file's bytes (decrypted and verified) to `sink`, in order; fails when the
    /// entry is not a readable file or its chunks do not add up to its recorded size. Blocking.
    pub fn read_file(
        &self,
        entry: &TreeEntry,
        mut sink: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), EngineError> {
        let name = String::from_utf8_lossy(&entry.path).into_owned();
        let fail = |detail: String| {
            EngineError::from(RestoreError::FileUnreadable {
                path: name.clone(),
                detail,
            })
        };
        if entry.kind != EntryKind::File {
            return Err(fail("not a regular file".into()));
        }
        if let Some(e) = &entry.error {
            return Err(fail(format!("unreadable at backup time: {e}")));
        }
        let mut total = 0u64;
        let mut opener = ChunkOpener::default();
        read_chunks(
            &self.rt,
            &self.repo,
            &self.keys,
            &self.index,
            &entry.chunks,
            &mut opener,
            |data| {
                total += data.len() as u64;
                sink(data)
            },
        )
        .map_err(fail)?;
        if total != entry.size {
            return Err(fail(format!(
                "its chunks hold {total} bytes, the tree records {}",
                entry.size
            )));
        }
        Ok(())
    }
}
