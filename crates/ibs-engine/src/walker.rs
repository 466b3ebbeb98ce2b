//! The walking thread of a directory source: lists and stats entries in tree order (parents before
//! children, siblings in byte order of their names) and turns each into a tree entry, or into a
//! [`FileItem`] for the reading thread ([`crate::walk`]) to chunk.
//!
//! What becomes what:
//! - a regular file: a file entry to read; with `st_nlink > 1` the first name met (in tree order)
//!   of its inode, keyed by `(st_dev, st_ino)` within this source, is marked `link_leader` and
//!   every later name becomes a hard-link entry naming it, never read again;
//! - a directory, a symlink (its target, never followed), a FIFO, a character or block device
//!   (`st_rdev`): entries as they are;
//! - a socket: not recordable (it belongs to a running process); counted and reported as skipped.
//!
//! Every entry carries its extended attributes ([`crate::xattrs::read`]).

use crate::cache::{FileStamp, OldCache};
use crate::statahead::StatAhead;
use crate::walk::SourceStats;
use ibs_repo::ids::ChunkId;
use ibs_repo::tree::{EntryKind, TreeEntry};
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::Metadata;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// How many batches of walked items may wait for the reader: the read-ahead distance in files
/// (a batch ends with each file to read).
pub(crate) const WALK_AHEAD: usize = 32;
/// Items that need no reading (directories, symlinks, files the cache knows) go to the reader in
/// batches of up to this many: one wake-up of the reading thread per batch, not per item (an
/// unchanged tree is all such items, and its backup is bound by the walk).
const BATCH: usize = 64;

pub fn mtime_ns(m: &Metadata) -> i64 {
    m.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(m.mtime_nsec())
}

pub(crate) fn stamp(m: &Metadata) -> FileStamp {
    FileStamp {
        size: m.len(),
        mtime_ns: mtime_ns(m),
        ctime_ns: m
            .ctime()
            .saturating_mul(1_000_000_000)
            .saturating_add(m.ctime_nsec()),
        ino: m.ino(),
    }
}

pub(crate) fn base_entry(path: Vec<u8>, kind: EntryKind, m: &Metadata) -> TreeEntry {
    TreeEntry {
        path,
        kind,
        mode: m.mode(),
        mtime_ns: mtime_ns(m),
        uid: m.uid(),
        gid: m.gid(),
        ..Default::default()
    }
}

/// A regular file as the walker hands it to the reader.
pub struct FileItem {
    pub(crate) entry: TreeEntry,
    pub(crate) full: PathBuf,
    pub(crate) stamp: FileStamp,
    /// The chunk ids the files cache has for this file, unchanged since the last backup.
    pub(crate) cached: Option<Vec<ChunkId>>,
    /// The file opened for reading (with a read-ahead hint) when the cache does not know it.
    pub(crate) opened: Option<std::io::Result<std::fs::File>>,
}

/// What the walker hands the reader, in tree order.
pub enum Item {
    /// A directory, a symlink, a hard-link name, a special file or an unreadable entry: added to
    /// the tree as it is.
    Ready(TreeEntry),
    File(FileItem),
}

/// Walks a source's directory tree in tree order, on its own thread.
pub(crate) struct Walker<'a> {
    pub(crate) name: &'a str,
    pub(crate) old: OldCache,
    pub(crate) exclude: crate::exclude::Excludes,
    /// Errors and skips met while walking (merged into the source's).
    pub(crate) stats: SourceStats,
    /// The first name met of each multiply-linked file: `(st_dev, st_ino)` → its path.
    pub(crate) links: HashMap<(u64, u64), Vec<u8>>,
    /// Threads warming the caches for the folders ahead (a directory source's walk only).
    pub(crate) ahead: Option<StatAhead>,
}

impl Walker<'_> {
    pub(crate) fn new<'a>(
        name: &'a str,
        old: OldCache,
        exclude: crate::exclude::Excludes,
    ) -> Walker<'a> {
        Walker {
            name,
            old,
            exclude,
            stats: SourceStats::default(),
            links: HashMap::new(),
            ahead: None,
        }
    }

    fn error(&mut self, rel: &[u8], err: impl std::fmt::Display) -> String {
        let msg = err.to_string();
        self.stats.error(format!(
            "{}/{}: {msg}",
            self.name,
            String::from_utf8_lossy(rel)
        ));
        msg
    }

    /// The item for one entry, or `None` for a socket (skipped, counted and reported).
    pub(crate) fn item(&mut self, rel: Vec<u8>, full: &Path, m: &Metadata) -> Option<Item> {
        let ft = m.file_type();
        if ft.is_socket() {
            self.stats.skip(format!(
                "{}/{}: a socket, skipped (sockets cannot be backed up)",
                self.name,
                String::from_utf8_lossy(&rel)
            ));
            return None;
        }
        let xattrs = match crate::xattrs::read(full) {
            Ok(x) => x,
            Err(err) => {
                self.error(&rel, err);
                Vec::new()
            }
        };
        let mut item = self.kind_item(rel, full, m);
        match &mut item {
            Item::Ready(e) => e.xattrs = xattrs,
            Item::File(f) => f.entry.xattrs = xattrs,
        }
        Some(item)
    }

    fn kind_item(&mut self, rel: Vec<u8>, full: &Path, m: &Metadata) -> Item {
        let ft = m.file_type();
        if ft.is_file() {
            if m.nlink() > 1 {
                let key = (m.dev(), m.ino());
                if let Some(first) = self.links.get(&key) {
                    let mut e = base_entry(rel, EntryKind::HardLink, m);
                    e.size = m.len();
                    e.target = Some(first.clone());
                    return Item::Ready(e);
                }
                self.links.insert(key, rel.clone());
            }
            let mut entry = base_entry(rel, EntryKind::File, m);
            entry.size = m.len();
            entry.sparse = m.blocks().saturating_mul(512) < m.len();
            entry.link_leader = m.nlink() > 1;
            let stamp = stamp(m);
            let cached = self.old.lookup(self.name, &entry.path, &stamp);
            let opened = cached.is_none().then(|| {
                std::fs::File::open(full).inspect(|f| crate::fileio::prefetch(f, m.len()))
            });
            Item::File(FileItem {
                entry,
                full: full.to_owned(),
                stamp,
                cached,
                opened,
            })
        } else if ft.is_symlink() {
            let mut e = base_entry(rel, EntryKind::Symlink, m);
            match std::fs::read_link(full) {
                Ok(t) => e.target = Some(t.into_os_string().into_vec()),
                Err(err) => e.error = Some(self.error(&e.path, err)),
            }
            Item::Ready(e)
        } else if ft.is_dir() {
            Item::Ready(base_entry(rel, EntryKind::Dir, m))
        } else {
            let kind = if ft.is_fifo() {
                EntryKind::Fifo
            } else if ft.is_char_device() {
                EntryKind::CharDevice
            } else {
                EntryKind::BlockDevice
            };
            let mut e = base_entry(rel, kind, m);
            if kind != EntryKind::Fifo {
                e.rdev = m.rdev();
            }
            Item::Ready(e)
        }
    }

    /// Walks below `root` (whose sorted child names are `names`), sending every item to `tx` in
    /// order, in batches (see [`BATCH`]); stops early when the receiver is gone.
    pub(crate) fn tree(
        &mut self,
        root: &Path,
        names: Vec<OsString>,
        tx: &crossbeam_channel::Sender<Vec<Item>>,
    ) {
        let mut batch = Vec::with_capacity(BATCH);
        // Stack of (directory path, its relative path, remaining child names in reverse order).
        let mut stack: Vec<(PathBuf, Vec<u8>, Vec<OsString>)> =
            vec![(root.to_owned(), Vec::new(), names)];
        while let Some((dir, rel, names)) = stack.last_mut() {
            let Some(name) = names.pop() else {
                stack.pop();
                continue;
            };
            let full = dir.join(&name);
            let child_rel = child_rel(rel, name.as_bytes());
            if self.exclude.matches(&child_rel, &name) {
                continue;
            }
            let m = match std::fs::symlink_metadata(&full) {
                Ok(m) => m,
                Err(err) => {
                    // Vanished between listing and stat: not an error of the backup.
                    if err.kind() != std::io::ErrorKind::NotFound {
                        self.error(&child_rel, err);
                    }
                    continue;
                }
            };
            let Some(mut item) = self.item(child_rel.clone(), &full, &m) else {
                continue;
            };
            if let Item::Ready(e) = &mut item {
                if e.kind == EntryKind::Dir {
                    if let Some(ahead) = &self.ahead {
                        ahead.entered();
                    }
                    match sorted_names(&full) {
                        Ok(names) => stack.push((full, child_rel, names)),
                        Err(err) => e.error = Some(self.error(&child_rel, err)),
                    }
                }
            }
            let to_read = matches!(&item, Item::File(f) if f.opened.is_some());
            batch.push(item);
            if (to_read || batch.len() >= BATCH)
                && tx
                    .send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))
                    .is_err()
            {
                break;
            }
        }
        self.ahead = None;
        if !batch.is_empty() {
            let _ = tx.send(batch);
        }
    }
}

/// The path, relative to the source root, of `name` in the folder at `parent` (empty: the root).
pub(crate) fn child_rel(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut rel = Vec::with_capacity(parent.len() + 1 + name.len());
    rel.extend_from_slice(parent);
    if !parent.is_empty() {
        rel.push(b'/');
    }
    rel.extend_from_slice(name);
    rel
}

/// A directory's entry names, sorted by bytes, reversed (so `pop` yields them in order).
pub(crate) fn sorted_names(dir: &Path) -> std::io::Result<Vec<OsString>> {
    let mut names = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<Vec<_>>>()?;
    names.sort_by(|a, b| b.as_bytes().cmp(a.as_bytes()));
    Ok(names)
}
