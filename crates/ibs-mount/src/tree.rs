//! The mounted tree as a table of inodes: the root (one folder per backup and the `latest`
//! symlink), each backup's folder (one folder per source, known once the backup's manifest is
//! opened) and each source's entries (known once its tree is walked). Folders are filled on first
//! use and never change afterwards: a backup is immutable, so an inode number, once given, means
//! the same entry for the whole mount.
//!
//! Invariants: inode `n` is `nodes[n - 1]` (the root is 1); a folder's `children` are sorted by
//! name (byte order), so a lookup is a binary search; every name of a hard-linked file points at
//! the inode of its first name, whose `nlink` counts them all.

use fuser::{FileAttr, FileType, INodeNo};
use ibs_repo::tree::{EntryKind, TreeEntry};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(crate) const ROOT: u64 = 1;

/// What stands behind an inode.
pub(crate) enum Body {
    Root,
    /// A backup's folder; `children` stays `None` until its manifest is opened.
    Backup {
        id: String,
    },
    /// A source's top; `children` stays `None` until its tree is walked.
    Source {
        backup: String,
        name: String,
    },
    /// An entry of a walked tree (a regular file keeps its chunk list here).
    Entry(Box<TreeEntry>),
    /// A symlink made by the mount (`latest`).
    Link(Vec<u8>),
}

pub(crate) struct Node {
    pub parent: u64,
    pub attr: FileAttr,
    /// A folder's entries, sorted by name; `None` for a folder not filled yet, and for non-folders.
    pub children: Option<Vec<(Vec<u8>, u64)>>,
    pub body: Body,
}

/// Every inode the mount has given out.
pub(crate) struct Table {
    pub nodes: Vec<Node>,
}

impl Table {
    /// A root holding one (unfilled) folder per backup, named by its id with the backup's start
    /// time as its mtime, and `latest` pointing at the newest.
    pub fn new(backups: &[(String, SystemTime)]) -> Table {
        let mut t = Table {
            nodes: vec![Node {
                parent: ROOT,
                attr: dir_attr(ROOT, backups.iter().map(|b| b.1).max()),
                children: Some(Vec::new()),
                body: Body::Root,
            }],
        };
        let mut sorted: Vec<_> = backups.to_vec();
        sorted.sort();
        for (id, time) in &sorted {
            let ino = t.add(
                ROOT,
                dir_attr(0, Some(*time)),
                None,
                Body::Backup { id: id.clone() },
            );
            t.push_child(ROOT, id.as_bytes().to_vec(), ino);
            t.nodes[0].attr.nlink += 1;
        }
        if let Some((id, time)) = sorted.last() {
            let mut attr = dir_attr(0, Some(*time));
            attr.kind = FileType::Symlink;
            attr.perm = 0o777;
            attr.nlink = 1;
            attr.size = id.len() as u64;
            let ino = t.add(ROOT, attr, None, Body::Link(id.as_bytes().to_vec()));
            t.push_child(ROOT, b"latest".to_vec(), ino);
        }
        t.sort_children(ROOT);
        t
    }

    pub fn get(&self, ino: u64) -> Option<&Node> {
        self.nodes.get((ino as usize).wrapping_sub(1))
    }

    /// The child of folder `parent` called `name`.
    pub fn child(&self, parent: u64, name: &[u8]) -> Option<u64> {
        let kids = self.get(parent)?.children.as_ref()?;
        kids.binary_search_by(|(n, _)| n.as_slice().cmp(name))
            .ok()
            .map(|i| kids[i].1)
    }

    fn add(
        &mut self,
        parent: u64,
        mut attr: FileAttr,
        children: Option<Vec<(Vec<u8>, u64)>>,
        body: Body,
    ) -> u64 {
        let ino = self.nodes.len() as u64 + 1;
        attr.ino = INodeNo(ino);
        self.nodes.push(Node {
            parent,
            attr,
            children,
            body,
        });
        ino
    }

    fn push_child(&mut self, parent: u64, name: Vec<u8>, ino: u64) {
        if let Some(kids) = self.nodes[parent as usize - 1].children.as_mut() {
            kids.push((name, ino));
        }
    }

    fn sort_children(&mut self, ino: u64) {
        if let Some(kids) = self.nodes[ino as usize - 1].children.as_mut() {
            kids.sort_by(|a, b| a.0.cmp(&b.0));
        }
    }

    /// Fills backup folder `ino` with one unfilled folder per source.
    pub fn fill_backup(&mut self, ino: u64, sources: &[String]) {
        let (backup, time) = match &self.nodes[ino as usize - 1] {
            Node {
                body: Body::Backup { id },
                attr,
                ..
            } => (id.clone(), attr.mtime),
            _ => return,
        };
        self.nodes[ino as usize - 1].children = Some(Vec::new());
        for name in sources {
            let child = self.add(
                ino,
                dir_attr(0, Some(time)),
                None,
                Body::Source {
                    backup: backup.clone(),
                    name: name.clone(),
                },
            );
            self.push_child(ino, name.as_bytes().to_vec(), child);
            self.nodes[ino as usize - 1].attr.nlink += 1;
        }
        self.sort_children(ino);
    }

    /// Fills source folder `top` from its tree's entries, given in stored order (parents before
    /// children). The entry with the empty path is the source's top itself.
    pub fn fill_source(&mut self, top: u64, entries: Vec<TreeEntry>) {
        self.nodes[top as usize - 1].children = Some(Vec::new());
        // Folders (and first names of hard-linked files) by path, to place what follows.
        let mut by_path: HashMap<Vec<u8>, u64> = HashMap::from([(Vec::new(), top)]);
        let mut filled = vec![top];
        for e in entries {
            if e.path.is_empty() {
                let node = &mut self.nodes[top as usize - 1];
                node.attr = entry_attr(top, &e);
                if e.kind != EntryKind::Dir {
                    node.children = None;
                }
                node.body = Body::Entry(Box::new(e));
                continue;
            }
            let (dir, name) = match e.path.iter().rposition(|b| *b == b'/') {
                Some(i) => (e.path[..i].to_vec(), e.path[i + 1..].to_vec()),
                None => (Vec::new(), e.path.clone()),
            };
            let Some(&parent) = by_path.get(&dir) else {
                tracing::warn!(
                    path = %String::from_utf8_lossy(&e.path),
                    "tree entry without its folder; left out of the mount"
                );
                continue;
            };
            if e.kind == EntryKind::HardLink {
                let first = e.target.as_deref().and_then(|t| by_path.get(t)).copied();
                match first {
                    Some(first) => {
                        self.nodes[first as usize - 1].attr.nlink += 1;
                        self.push_child(parent, name, first);
                    }
                    None => tracing::warn!(
                        path = %String::from_utf8_lossy(&e.path),
                        "hard link to a name not in the tree; left out of the mount"
                    ),
                }
                continue;
            }
            let is_dir = e.kind == EntryKind::Dir;
            let keep = is_dir || e.link_leader;
            let path = e.path.clone();
            let ino = self.add(
                parent,
                entry_attr(0, &e),
                is_dir.then(Vec::new),
                Body::Entry(Box::new(e)),
            );
            self.push_child(parent, name, ino);
            if is_dir {
                self.nodes[parent as usize - 1].attr.nlink += 1;
                filled.push(ino);
            }
            if keep {
                by_path.insert(path, ino);
            }
        }
        for ino in filled {
            self.sort_children(ino);
        }
    }
}

fn time_of(ns: i64) -> SystemTime {
    let d = Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

/// A folder made by the mount: read and search for everyone, like the backup itself (r-x).
fn dir_attr(ino: u64, time: Option<SystemTime>) -> FileAttr {
    let t = time.unwrap_or(UNIX_EPOCH);
    FileAttr {
        ino: INodeNo(ino),
        size: 0,
        blocks: 0,
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind: FileType::Directory,
        perm: 0o555,
        nlink: 2,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

/// An entry's attributes as backed up: type, permission bits, owner, size, mtime, device number.
/// Access and change times show the mtime (a backup records no other).
pub(crate) fn entry_attr(ino: u64, e: &TreeEntry) -> FileAttr {
    let t = time_of(e.mtime_ns);
    let (kind, size) = match e.kind {
        EntryKind::Dir => (FileType::Directory, 0),
        EntryKind::Symlink => (
            FileType::Symlink,
            e.target.as_ref().map_or(0, |t| t.len() as u64),
        ),
        EntryKind::Fifo => (FileType::NamedPipe, 0),
        EntryKind::CharDevice => (FileType::CharDevice, 0),
        EntryKind::BlockDevice => (FileType::BlockDevice, 0),
        EntryKind::File | EntryKind::HardLink => (FileType::RegularFile, e.size),
    };
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind,
        perm: (e.mode & 0o7777) as u16,
        nlink: if kind == FileType::Directory { 2 } else { 1 },
        uid: e.uid,
        gid: e.gid,
        rdev: kernel_dev(e.rdev),
        blksize: 4096,
        flags: 0,
    }
}

/// A `st_rdev` as recorded (glibc's 64-bit `makedev` layout) in the kernel's 32-bit encoding,
/// which is what FUSE carries (`new_encode_dev`).
fn kernel_dev(rdev: u64) -> u32 {
    let major = ((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0xfff);
    let minor = ((rdev >> 12) & 0xffff_ff00) | (rdev & 0xff);
    ((minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)) as u32
}

#[cfg(test)]
mod tests {
    use super::kernel_dev;

    #[test]
    fn device_numbers_keep_major_and_minor() {
        // makedev(1, 3) and makedev(7, 200), as glibc lays them out; the kernel's encoding of
        // small numbers is (major << 8) | minor.
        assert_eq!(kernel_dev((1 << 8) | 3), (1 << 8) | 3);
        assert_eq!(kernel_dev((7 << 8) | 200), (7 << 8) | 200);
        // A minor above 255: glibc keeps its high bits at 12..; the kernel at 20...
        let glibc = (8u64 << 8) | (0x1234 & 0xff) | ((0x1234 & !0xff) << 12);
        assert_eq!(kernel_dev(glibc), (8 << 8) | 0x34 | (0x12 << 20));
    }
}
