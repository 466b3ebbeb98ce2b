//! A tree's restorable state, and the assertion that a restore reproduced it.
//!
//! A [`Snapshot`] maps each path (bytes, relative to the root; the root is `""`) to a [`Node`]:
//! kind, permission bits, owner, mtime in nanoseconds, extended attributes (every name `llistxattr`
//! lists, ACLs included), and per kind the content hash and sparseness, the link target or the
//! device number. Hard links are described within the tree: each name of an inode with more than
//! one name in the tree carries the first of those names (in byte order), so "the same groups"
//! holds whatever inode numbers the restore got.
//!
//! Sockets cannot be restored (there is no data to bring back; a socket belongs to a running
//! process): they are in the source's snapshot for [`counts`], [`assert_restored`]
//! expects them absent.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hasher;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    /// Permission bits (`mode & 0o7777`).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i128,
    /// Files: size, a hash of the contents, and whether fewer blocks than bytes are allocated.
    pub size: u64,
    /// SipHash-1-3 (zero keys) of the contents: stable across builds and toolchains.
    pub hash: u64,
    pub sparse: bool,
    /// Symlinks: the target bytes.
    pub target: Option<Vec<u8>>,
    /// Devices: `st_rdev`.
    pub rdev: u64,
    /// The first name (byte order) of this inode within the tree, when it has several there.
    pub link_group: Option<Vec<u8>>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

pub type Snapshot = BTreeMap<Vec<u8>, Node>;

/// Entry counts in the catalog's terms: folders (the root included), everything else that a
/// backup records ("files": regular files, every hard-link name, symlinks, FIFOs, devices), and
/// sockets, which a backup reports as skipped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub files: u64,
    pub dirs: u64,
    pub skipped: u64,
}

impl Node {
    fn kind_of(ft: std::fs::FileType) -> Kind {
        if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_fifo() {
            Kind::Fifo
        } else if ft.is_char_device() {
            Kind::CharDevice
        } else if ft.is_block_device() {
            Kind::BlockDevice
        } else if ft.is_socket() {
            Kind::Socket
        } else {
            Kind::File
        }
    }
}

/// Counts a snapshot's entries (see [`Counts`]).
pub fn counts(s: &Snapshot) -> Counts {
    let mut c = Counts::default();
    for n in s.values() {
        match n.kind {
            Kind::Dir => c.dirs += 1,
            Kind::Socket => c.skipped += 1,
            _ => c.files += 1,
        }
    }
    c
}

fn xattrs(p: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    let n = rustix::fs::llistxattr_query(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    if n == 0 {
        return out;
    }
    let mut list = vec![0u8; n];
    let n = rustix::fs::llistxattr(p, &mut list[..])
        .unwrap_or_else(|e| panic!("llistxattr {}: {e}", p.display()));
    for name in list[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let os = std::ffi::OsStr::from_bytes(name);
        let len = rustix::fs::lgetxattr_query(p, os)
            .unwrap_or_else(|e| panic!("lgetxattr {}: {e}", p.display()));
        let mut v = vec![0u8; len];
        let len = if len == 0 {
            0
        } else {
            rustix::fs::lgetxattr(p, os, &mut v[..])
                .unwrap_or_else(|e| panic!("lgetxattr {}: {e}", p.display()))
        };
        v.truncate(len);
        out.insert(name.to_vec(), v);
    }
    out
}

fn hash_file(p: &Path) -> u64 {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    // SipHash-1-3 with zero keys from `siphasher`, not std's `DefaultHasher`: the value is stable
    // across builds, so a snapshot can be committed (see `manifest`).
    let mut h = siphasher::sip::SipHasher13::new();
    h.write(&bytes);
    h.finish()
}

/// Every entry under `root`, the root itself included (as `""`).
pub fn snapshot(root: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    let mut inodes: HashMap<(u64, u64), Vec<Vec<u8>>> = HashMap::new();
    let mut stack = vec![Vec::<u8>::new()];
    while let Some(rel) = stack.pop() {
        let p = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(std::ffi::OsStr::from_bytes(&rel))
        };
        let m = std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let kind = Node::kind_of(m.file_type());
        let mut node = Node {
            kind,
            perm: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            size: 0,
            hash: 0,
            sparse: false,
            target: None,
            rdev: 0,
            link_group: None,
            xattrs: xattrs(&p),
        };
        match kind {
            Kind::File => {
                node.size = m.len();
                node.hash = hash_file(&p);
                node.sparse = m.blocks() * 512 < m.len();
            }
            Kind::Symlink => {
                node.target = Some(
                    std::fs::read_link(&p)
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                )
            }
            Kind::CharDevice | Kind::BlockDevice => node.rdev = m.rdev(),
            Kind::Dir => {
                for e in std::fs::read_dir(&p).unwrap() {
                    let name = e.unwrap().file_name();
                    let mut child = rel.clone();
                    if !child.is_empty() {
                        child.push(b'/');
                    }
                    child.extend_from_slice(name.as_bytes());
                    stack.push(child);
                }
            }
            _ => {}
        }
        if kind != Kind::Dir && m.nlink() > 1 {
            inodes
                .entry((m.dev(), m.ino()))
                .or_default()
                .push(rel.clone());
        }
        out.insert(rel, node);
    }
    for names in inodes.into_values().filter(|n| n.len() > 1) {
        let first = names.iter().min().unwrap().clone();
        for n in names {
            out.get_mut(&n).unwrap().link_group = Some(first.clone());
        }
    }
    out
}

fn show(p: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(p))
}

/// Asserts the tree at `restored` reproduces `expected` (a source's snapshot) entry by entry,
/// sockets excepted (they must be absent); panics listing up to 40 differences.
pub fn assert_restored(expected: &Snapshot, restored: &Path, what: &str) {
    let got = snapshot(restored);
    let mut diffs = Vec::new();
    for (k, v) in expected {
        match (v.kind, got.get(k)) {
            (Kind::Socket, None) => {}
            (Kind::Socket, Some(g)) => {
                diffs.push(format!("{}: a socket was restored as {g:?}", show(k)))
            }
            (_, None) => diffs.push(format!("missing {} (expected {v:?})", show(k))),
            (_, Some(g)) if g != v => diffs.push(format!(
                "{}:\n    expected {v:?}\n    got      {g:?}",
                show(k)
            )),
            _ => {}
        }
    }
    for (k, g) in &got {
        if !expected.contains_key(k) {
            diffs.push(format!("unexpected {}: {g:?}", show(k)));
        }
    }
    report(what, restored, "the source", &diffs);
}

/// Panics naming `restored`, what it was compared with and up to 40 of `diffs`, if there are any.
pub(crate) fn report(what: &str, restored: &Path, against: &str, diffs: &[String]) {
    assert!(
        diffs.is_empty(),
        "{what}: the restored tree {} differs from {against} in {} entries:\n{}",
        restored.display(),
        diffs.len(),
        diffs
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
