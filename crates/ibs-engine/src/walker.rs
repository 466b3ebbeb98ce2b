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
//! Every entry carries its extended attributes ([`crate::xattrs`]).
//!
//! Every entry below the root is reached through the open descriptor of the folder that listed it
//! (`statat`, `openat`, `readlinkat` and the folder's `/proc/self/fd` link for extended
//! attributes, none following the entry itself), never by a path: a folder swapped for a symlink
//! after it was listed cannot lead the walk elsewhere (ADR 0061).

use crate::cache::{FileStamp, OldCache};
use crate::statahead::StatAhead;
use crate::walk::SourceStats;
use ibs_repo::ids::ChunkId;
use ibs_repo::tree::{EntryKind, TreeEntry};
use rustix::fs::{AtFlags, FileType};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How many batches of walked items may wait for the reader: the read-ahead distance in files
/// (a batch ends with each file to read).
pub(crate) const WALK_AHEAD: usize = 32;
/// Items that need no reading (directories, symlinks, files the cache knows) go to the reader in
/// batches of up to this many: one wake-up of the reading thread per batch, not per item (an
/// unchanged tree is all such items, and its backup is bound by the walk).
const BATCH: usize = 64;

/// What a backup keeps of an entry's `lstat`.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    pub nlink: u64,
    pub dev: u64,
    pub ino: u64,
    pub rdev: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

fn ns(s: i64, n: i64) -> i64 {
    s.saturating_mul(1_000_000_000).saturating_add(n)
}

impl From<&std::fs::Metadata> for Meta {
    fn from(m: &std::fs::Metadata) -> Self {
        Meta {
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            size: m.len(),
            blocks: m.blocks(),
            nlink: m.nlink(),
            dev: m.dev(),
            ino: m.ino(),
            rdev: m.rdev(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        }
    }
}

impl From<&rustix::fs::Stat> for Meta {
    // The field types differ between architectures; on Linux each value fits the wider type.
    #[allow(clippy::unnecessary_cast)]
    fn from(st: &rustix::fs::Stat) -> Self {
        Meta {
            mode: st.st_mode as u32,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            nlink: st.st_nlink as u64,
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            rdev: st.st_rdev as u64,
            mtime_ns: ns(st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime_ns: ns(st.st_ctime as i64, st.st_ctime_nsec as i64),
        }
    }
}

impl Meta {
    pub fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.mode)
    }
}

pub(crate) fn stamp(m: &Meta) -> FileStamp {
    FileStamp {
        size: m.size,
        mtime_ns: m.mtime_ns,
        ctime_ns: m.ctime_ns,
        ino: m.ino,
    }
}

pub(crate) fn base_entry(path: Vec<u8>, kind: EntryKind, m: &Meta) -> TreeEntry {
    TreeEntry {
        path,
        kind,
        mode: m.mode,
        mtime_ns: m.mtime_ns,
        uid: m.uid,
        gid: m.gid,
        ..Default::default()
    }
}

/// Where an entry is: a source root by the path the operator gave, anything below it by the open
/// folder that listed it.
pub(crate) enum At<'a> {
    Root(&'a Path),
    In {
        dir: &'a Arc<OwnedFd>,
        name: &'a OsStr,
        /// For messages only, never used to reach the entry.
        full: &'a Path,
    },
}

impl At<'_> {
    fn full(&self) -> &Path {
        match self {
            At::Root(p) => p,
            At::In { full, .. } => full,
        }
    }

    fn open_file(&self) -> std::io::Result<std::fs::File> {
        match self {
            At::Root(p) => crate::fileio::open_source(p),
            At::In { dir, name, .. } => crate::fileio::open_source_at(dir.as_fd(), name),
        }
    }

    fn read_link(&self) -> std::io::Result<Vec<u8>> {
        match self {
            At::Root(p) => std::fs::read_link(p).map(|t| t.into_os_string().into_vec()),
            At::In { dir, name, .. } => rustix::fs::readlinkat(dir.as_fd(), *name, Vec::new())
                .map(|t| t.into_bytes())
                .map_err(Into::into),
        }
    }

    fn xattrs(&self) -> Result<Vec<ibs_repo::tree::Xattr>, String> {
        match self {
            At::Root(p) => crate::xattrs::read(p),
            At::In { dir, name, full } => crate::xattrs::read_at(dir.as_fd(), name, full),
        }
    }
}

/// A regular file as the walker hands it to the reader.
pub struct FileItem {
    pub(crate) entry: TreeEntry,
    /// For messages, and to open the file again should the files cache's chunks be gone (then only
    /// the file the walk stat'ed is read: see `dev`).
    pub(crate) full: PathBuf,
    /// The file's device; with `stamp.ino`, what a file opened again by `full` must be (a path can
    /// lead elsewhere by then; a descriptor of the walk's folder is not kept per queued file).
    pub(crate) dev: u64,
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

/// A folder the walk is in: its descriptor, its path (for messages), its path relative to the
/// source root, and its child names not walked yet, in reverse order.
type Open = (Arc<OwnedFd>, PathBuf, Vec<u8>, Vec<OsString>);

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
    pub(crate) fn item(&mut self, rel: Vec<u8>, at: &At<'_>, m: &Meta) -> Option<Item> {
        if m.file_type() == FileType::Socket {
            self.stats.skip(format!(
                "{}/{}: a socket, skipped (sockets cannot be backed up)",
                self.name,
                String::from_utf8_lossy(&rel)
            ));
            return None;
        }
        let mut item = self.kind_item(rel, at, m);
        // A file opened to be read gives its attributes through its descriptor.
        let xattrs = match &item {
            Item::File(FileItem {
                opened: Some(Ok(f)),
                ..
            }) => crate::xattrs::read_fd(f.as_fd()),
            _ => at.xattrs(),
        };
        let xattrs = xattrs.unwrap_or_else(|err| {
            let path = match &item {
                Item::Ready(e) => e.path.clone(),
                Item::File(f) => f.entry.path.clone(),
            };
            self.error(&path, err);
            Vec::new()
        });
        match &mut item {
            Item::Ready(e) => e.xattrs = xattrs,
            Item::File(f) => f.entry.xattrs = xattrs,
        }
        Some(item)
    }

    fn kind_item(&mut self, rel: Vec<u8>, at: &At<'_>, m: &Meta) -> Item {
        match m.file_type() {
            FileType::RegularFile => {
                if m.nlink > 1 {
                    let key = (m.dev, m.ino);
                    if let Some(first) = self.links.get(&key) {
                        let mut e = base_entry(rel, EntryKind::HardLink, m);
                        e.size = m.size;
                        e.target = Some(first.clone());
                        return Item::Ready(e);
                    }
                    self.links.insert(key, rel.clone());
                }
                let mut entry = base_entry(rel, EntryKind::File, m);
                entry.size = m.size;
                entry.sparse = m.blocks.saturating_mul(512) < m.size;
                entry.link_leader = m.nlink > 1;
                let stamp = stamp(m);
                let cached = self.old.lookup(self.name, &entry.path, &stamp);
                let opened = cached.is_none().then(|| {
                    at.open_file()
                        .inspect(|f| crate::fileio::prefetch(f, m.size))
                });
                Item::File(FileItem {
                    entry,
                    full: at.full().to_owned(),
                    dev: m.dev,
                    stamp,
                    cached,
                    opened,
                })
            }
            FileType::Symlink => {
                let mut e = base_entry(rel, EntryKind::Symlink, m);
                match at.read_link() {
                    Ok(t) => e.target = Some(t),
                    Err(err) => e.error = Some(self.error(&e.path, err)),
                }
                Item::Ready(e)
            }
            FileType::Directory => Item::Ready(base_entry(rel, EntryKind::Dir, m)),
            ft => {
                let kind = match ft {
                    FileType::Fifo => EntryKind::Fifo,
                    FileType::CharacterDevice => EntryKind::CharDevice,
                    _ => EntryKind::BlockDevice,
                };
                let mut e = base_entry(rel, kind, m);
                if kind != EntryKind::Fifo {
                    e.rdev = m.rdev;
                }
                Item::Ready(e)
            }
        }
    }

    /// Walks below `root` (open as `root_fd`, its sorted child names `names`), sending every item
    /// to `tx` in order, in batches (see [`BATCH`]); stops early when the receiver is gone.
    pub(crate) fn tree(
        &mut self,
        root: &Path,
        root_fd: OwnedFd,
        names: Vec<OsString>,
        tx: &crossbeam_channel::Sender<Vec<Item>>,
    ) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut stack: Vec<Open> = vec![(Arc::new(root_fd), root.to_owned(), Vec::new(), names)];
        while let Some((dir_fd, dir, rel, names)) = stack.last_mut() {
            let Some(name) = names.pop() else {
                stack.pop();
                continue;
            };
            let full = dir.join(&name);
            let child_rel = child_rel(rel, name.as_bytes());
            if self.exclude.matches(&child_rel, &name) {
                continue;
            }
            let m = match rustix::fs::statat(
                dir_fd.as_fd(),
                name.as_os_str(),
                AtFlags::SYMLINK_NOFOLLOW,
            ) {
                Ok(st) => Meta::from(&st),
                Err(err) => {
                    // Vanished between listing and stat: not an error of the backup.
                    if err != rustix::io::Errno::NOENT {
                        self.error(&child_rel, std::io::Error::from(err));
                    }
                    continue;
                }
            };
            let dir_fd = Arc::clone(dir_fd);
            let at = At::In {
                dir: &dir_fd,
                name: name.as_os_str(),
                full: &full,
            };
            let Some(mut item) = self.item(child_rel.clone(), &at, &m) else {
                continue;
            };
            if let Item::Ready(e) = &mut item {
                if e.kind == EntryKind::Dir {
                    if let Some(ahead) = &self.ahead {
                        ahead.entered();
                    }
                    match open_listed(dir_fd.as_fd(), name.as_os_str()) {
                        Ok((fd, names)) => stack.push((Arc::new(fd), full, child_rel, names)),
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

/// The folder `name` in `dir` ([`rustix::fs::CWD`] for a path), opened with
/// [`crate::fileio::open_folder_at`], and its names ([`sorted_names`]).
pub(crate) fn open_listed(
    dir: BorrowedFd<'_>,
    name: &OsStr,
) -> std::io::Result<(OwnedFd, Vec<OsString>)> {
    let fd = crate::fileio::open_folder_at(dir, name)?;
    let names = sorted_names(fd.as_fd())?;
    Ok((fd, names))
}

/// The entry names of the open folder `dir`, sorted by bytes, reversed (so `pop` yields them in
/// order). Open folders with [`crate::fileio::open_folder`] or [`crate::fileio::open_folder_at`]:
/// never through a symlink, access time kept.
pub(crate) fn sorted_names(dir: BorrowedFd<'_>) -> std::io::Result<Vec<OsString>> {
    // A duplicate: `Dir::read_from` would open the folder again by the path ".", a second open
    // (that would update the access time).
    let listing = rustix::fs::Dir::new(rustix::io::fcntl_dupfd_cloexec(dir, 0)?)?;
    let mut names = Vec::new();
    for entry in listing {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(OsString::from_vec(name));
        }
    }
    names.sort_by(|a, b| b.as_bytes().cmp(a.as_bytes()));
    Ok(names)
}
