//! The folders of a restore whose metadata (mode, owner, mtime, extended attributes) is still to be
//! applied, and when each one can be.
//!
//! A tree stream lists a folder's whole subtree directly after it (depth-first; the walker writes
//! it so, format §11), so the walk is done with a folder when the next entry is outside it. Its
//! metadata then goes on as soon as nothing more is written into it:
//! - every file job of the folder holds a [`Pending`] of it (in its `Dest`), dropped once the file
//!   is in place or failed;
//! - every finished sub-folder holds one until its own metadata is applied, so a folder is applied
//!   after all its sub-folders (a restrictive mode never blocks the way to a folder below it);
//! - a folder with a symlink, hard-link name, FIFO or device in its subtree, or the first name of a
//!   hard-linked file (a hard-link name is made from its folder), is *deferred*: those entries are
//!   made after every file, so the folder keeps a compact record ([`DirMeta`]) until then, and
//!   so does each folder above it.
//!
//! What is held is therefore bounded by the depth of the tree, the file jobs in flight (twice that
//! between two scans for ready folders) and the deferred folders, not by the number of folders: a
//! folder applied early is forgotten.

use crate::target::Metadata;
use ibs_repo::tree::{TreeEntry, Xattr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

/// What a folder's metadata needs, without the rest of its tree entry (its chunk list, target,
/// path bytes, …): 32 bytes plus its extended attributes.
#[derive(Debug)]
pub(super) struct DirMeta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub xattrs: Box<[Xattr]>,
}

impl DirMeta {
    pub fn of(e: TreeEntry) -> DirMeta {
        DirMeta {
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            mtime_ns: e.mtime_ns,
            xattrs: e.xattrs.into_boxed_slice(),
        }
    }

    pub fn metadata(&self) -> Metadata {
        Metadata {
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            mtime_ns: self.mtime_ns,
        }
    }
}

/// Held by whatever may still write into a folder (a file job of it, a sub-folder not yet
/// applied): the folder's metadata waits until no `Pending` of it is left.
#[derive(Clone, Debug)]
pub(super) struct Pending(#[allow(dead_code)] Arc<()>);

/// A folder the walk is in (the root and the folders down to the last entry).
struct Open {
    rel: PathBuf,
    /// `None` only for the root when the stream has no entry for it.
    meta: Option<DirMeta>,
    /// Cloned into every [`Pending`] of this folder.
    token: Arc<()>,
    /// The parent's, held until this folder's metadata is applied.
    parent: Option<Pending>,
    deferred: bool,
}

/// A folder the walk is done with, waiting for its file jobs and sub-folders.
struct Closed {
    rel: PathBuf,
    meta: Option<DirMeta>,
    token: Arc<()>,
    parent: Option<Pending>,
}

impl Closed {
    fn ready(&self) -> bool {
        Arc::strong_count(&self.token) == 1
    }
}

/// Why an entry cannot be placed (see [`Dirs::walk_to`]).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct OutOfOrder;

/// See the module documentation. `apply` callbacks get a folder's path (relative to the tree's
/// root) and its metadata, once, children before parents.
pub(super) struct Dirs {
    /// The root's first; each the parent of the next.
    open: Vec<Open>,
    /// In the order the walk left them (children before parents).
    waiting: Vec<Closed>,
    /// In the order the walk left them; applied by the caller after the deferred entries are made.
    deferred: Vec<(PathBuf, DirMeta)>,
    /// `waiting` is scanned for ready folders once it holds this many: twice what the last scan
    /// left, at least `scan_min`. Each scan is paid for by as many closes as it looks at, however
    /// many file jobs are in flight (a restore from remote storage sends batches of up to 512
    /// files), and `waiting` stays within twice the folders really waiting plus `scan_min`.
    scan_at: usize,
    scan_min: usize,
}

/// See [`Dirs::scan_at`].
const SCAN_MIN: usize = 32;

impl Dirs {
    pub fn new() -> Dirs {
        Dirs {
            open: vec![Open {
                rel: PathBuf::new(),
                meta: None,
                token: Arc::new(()),
                parent: None,
                deferred: false,
            }],
            waiting: Vec::new(),
            deferred: Vec::new(),
            scan_at: SCAN_MIN,
            scan_min: SCAN_MIN,
        }
    }

    /// The tree's own entry (the root folder's metadata).
    pub fn root(&mut self, meta: DirMeta) {
        self.open[0].meta = Some(meta);
    }

    /// Leaves every open folder that `parent` is not in, which must leave `parent` itself as the
    /// innermost open folder; [`OutOfOrder`] if it is not open (its subtree did not follow it
    /// directly, or it is not a folder of the tree).
    pub fn walk_to(
        &mut self,
        parent: &Path,
        apply: &mut impl FnMut(&Path, &DirMeta),
    ) -> Result<(), OutOfOrder> {
        loop {
            let top = &self.open[self.open.len() - 1].rel;
            if top.as_os_str().as_bytes() == parent.as_os_str().as_bytes() {
                return Ok(());
            }
            if self.open.len() == 1 || parent.starts_with(top) {
                return Err(OutOfOrder);
            }
            self.close(apply);
        }
    }

    /// Enters the folder `rel`, a child of the innermost open one (after [`Dirs::walk_to`] its parent).
    pub fn enter(&mut self, rel: PathBuf, meta: DirMeta) {
        let parent = Some(self.pending());
        self.open.push(Open {
            rel,
            meta: Some(meta),
            token: Arc::new(()),
            parent,
            deferred: false,
        });
    }

    /// A hold on the innermost open folder, for a file job of it.
    pub fn pending(&self) -> Pending {
        Pending(self.open[self.open.len() - 1].token.clone())
    }

    /// The innermost open folder (and so every folder above it) gets an entry made at the end.
    pub fn defer(&mut self) {
        let last = self.open.len() - 1;
        self.open[last].deferred = true;
    }

    /// Leaves every open folder and applies every waiting one (call once no file job is left);
    /// returns the deferred folders, children before parents.
    pub fn finish(&mut self, apply: &mut impl FnMut(&Path, &DirMeta)) -> Vec<(PathBuf, DirMeta)> {
        while !self.open.is_empty() {
            self.close(apply);
        }
        for c in self.waiting.drain(..) {
            if let Some(m) = &c.meta {
                apply(&c.rel, m);
            }
        }
        std::mem::take(&mut self.deferred)
    }

    /// Folders held: open, waiting and deferred.
    #[cfg(test)]
    fn held(&self) -> (usize, usize, usize) {
        (self.open.len(), self.waiting.len(), self.deferred.len())
    }

    fn close(&mut self, apply: &mut impl FnMut(&Path, &DirMeta)) {
        let Some(o) = self.open.pop() else { return };
        if o.deferred {
            if let Some(p) = self.open.last_mut() {
                p.deferred = true;
            }
            if let Some(meta) = o.meta {
                self.deferred.push((o.rel, meta));
            }
            return;
        }
        self.waiting.push(Closed {
            rel: o.rel,
            meta: o.meta,
            token: o.token,
            parent: o.parent,
        });
        if self.waiting.len() >= self.scan_at {
            self.apply_ready(apply);
            self.scan_at = (2 * self.waiting.len()).max(self.scan_min);
        }
    }

    /// Applies every waiting folder nothing holds any more; one pass, as a child waits before its
    /// parent and releases the parent's hold when applied.
    fn apply_ready(&mut self, apply: &mut impl FnMut(&Path, &DirMeta)) {
        self.waiting.retain_mut(|c| {
            if !c.ready() {
                return true;
            }
            // Pairs with the release of the last `Pending`'s drop: whatever the file job did to the
            // folder happened before.
            fence(Ordering::Acquire);
            if let Some(m) = &c.meta {
                apply(&c.rel, m);
            }
            c.parent = None;
            false
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(mode: u32) -> DirMeta {
        DirMeta {
            mode,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            xattrs: Box::new([]),
        }
    }

    /// Walks `entries` (folder paths in tree order) as the restore does, returning the order of
    /// applications.
    /// Scanning from the first close on.
    fn dirs() -> Dirs {
        let mut d = Dirs::new();
        d.root(meta(0o755));
        (d.scan_at, d.scan_min) = (1, 1);
        d
    }

    fn walk(d: &mut Dirs, entries: &[&str], applied: &mut Vec<String>) {
        for e in entries {
            let rel = PathBuf::from(e);
            let parent = rel.parent().unwrap().to_path_buf();
            d.walk_to(&parent, &mut |p, _| applied.push(p.display().to_string()))
                .unwrap();
            d.enter(rel, meta(0o755));
        }
    }

    #[test]
    fn a_folder_record_is_compact() {
        // A whole tree entry is ~160 bytes plus its path; the record kept per deferred folder is
        // its metadata only.
        assert!(std::mem::size_of::<DirMeta>() <= 40);
        assert!(std::mem::size_of::<TreeEntry>() >= 150);
    }

    #[test]
    fn folders_held_are_bounded_by_depth_not_count() {
        let mut d = dirs();
        let mut applied = Vec::new();
        let mut max = 0;
        for a in 0..50 {
            for b in 0..50 {
                let (x, y) = (format!("h{a:02}"), format!("h{a:02}/d{b:02}"));
                let entries: Vec<&str> = if b == 0 { vec![&x, &y] } else { vec![&y] };
                walk(&mut d, &entries, &mut applied);
                let (o, w, def) = d.held();
                max = max.max(o + w + def);
            }
        }
        assert!(max <= 4, "held up to {max} folders");
        let deferred = d.finish(&mut |p, _| applied.push(p.display().to_string()));
        assert!(deferred.is_empty());
        assert_eq!(applied.len(), 50 * 51 + 1);
        // Children before parents, the root last.
        assert_eq!(applied[0], "h00/d00");
        assert_eq!(applied[50], "h00");
        assert_eq!(applied.last().unwrap(), "");

        // As the restore runs it, scanning for ready folders now and then.
        let mut d = Dirs::new();
        let mut max = 0;
        for a in 0..1000 {
            walk(&mut d, &[&format!("h{a:03}")], &mut applied);
            let (o, w, def) = d.held();
            max = max.max(o + w + def);
        }
        assert!(max <= SCAN_MIN + 2, "held up to {max} folders");
    }

    #[test]
    fn a_folder_waits_for_its_files_and_its_sub_folders() {
        let mut d = dirs();
        let mut applied = Vec::new();
        walk(&mut d, &["a", "a/b"], &mut applied);
        let job = d.pending(); // a file of a/b still queued
        walk(&mut d, &["c"], &mut applied);
        // a/b waits for its file, a for a/b.
        assert!(applied.is_empty());
        drop(job);
        // The next scan (the waiting list doubled since the last: a/b, a, c, e) applies them.
        walk(&mut d, &["e"], &mut applied);
        assert!(applied.is_empty());
        walk(&mut d, &["f"], &mut applied);
        assert_eq!(applied, ["a/b", "a", "c", "e"]);
        d.finish(&mut |p, _| applied.push(p.display().to_string()));
        assert_eq!(applied, ["a/b", "a", "c", "e", "f", ""]);
    }

    #[test]
    fn a_deferred_entry_defers_its_folder_and_every_folder_above() {
        let mut d = dirs();
        let mut applied = Vec::new();
        walk(&mut d, &["a", "a/b", "a/b/c"], &mut applied);
        d.walk_to(Path::new("a/b"), &mut |p, _| {
            applied.push(p.display().to_string())
        })
        .unwrap();
        d.defer(); // a symlink in a/b
        walk(&mut d, &["a/x", "z"], &mut applied);
        let deferred = d.finish(&mut |p, _| applied.push(p.display().to_string()));
        assert_eq!(applied, ["a/b/c", "a/x", "z"]);
        let names: Vec<_> = deferred
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect();
        assert_eq!(names, ["a/b", "a", ""]);
    }

    #[test]
    fn an_entry_outside_the_open_folders_is_out_of_order() {
        let mut d = dirs();
        let mut applied = Vec::new();
        walk(&mut d, &["a", "b"], &mut applied);
        let mut f = |p: &Path, _: &DirMeta| applied.push(p.display().to_string());
        // A folder never entered.
        assert_eq!(d.walk_to(Path::new("b/q"), &mut f), Err(OutOfOrder));
        assert!(d.walk_to(Path::new("b"), &mut f).is_ok());
        // `a` was left when `b` came: its subtree did not follow it directly.
        assert_eq!(d.walk_to(Path::new("a"), &mut f), Err(OutOfOrder));
    }
}
