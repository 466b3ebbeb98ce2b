//! The folders of one restored tree: which ones this restore created or checked (by path relative
//! to the tree's root folder, with the device and inode found there), and open handles of those on
//! the way to the entry being restored.
//!
//! Invariants:
//! - A folder is reached only from the handle of its verified parent, one `O_NOFOLLOW` component at
//!   a time, or afresh from the root with `RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS`; either way it must
//!   be the very folder (device, inode) recorded when it was created or checked, else
//!   [`TargetError::Replaced`].
//! - A folder is created only in a verified parent: an entry below anything else (a symlink entry,
//!   a file, a folder not seen) is [`TargetError::NotInRestore`].

use crate::target::{DirId, TargetDir, TargetError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// At most this many handles of [`Folders`] stay open (besides the root's).
const OPEN_MAX: usize = 64;

/// The folders of one restored tree, by path relative to its root folder (`""` is the root): which
/// were created or checked, with the identity of the folder found there, and open handles of the
/// folders on the way to the last one asked for.
#[derive(Debug)]
pub struct Folders {
    verified: HashMap<PathBuf, DirId>,
    /// Each entry an ancestor of the next; the root's is first and stays.
    open: Vec<(PathBuf, Arc<TargetDir>)>,
}

impl Folders {
    pub fn new(root: TargetDir) -> Folders {
        Folders {
            verified: HashMap::from([(PathBuf::new(), root.id())]),
            open: vec![(PathBuf::new(), Arc::new(root))],
        }
    }

    pub fn root(&self) -> &Arc<TargetDir> {
        &self.open[0].1
    }

    /// Whether `rel` is a folder this restore created or checked.
    pub fn is_verified(&self, rel: &Path) -> bool {
        self.verified.contains_key(rel)
    }

    /// Creates the folder `rel` (or checks the real folder there) with `mode`, in its parent, which
    /// must be verified; records it and returns its handle.
    pub fn create(&mut self, rel: &Path, mode: u32) -> Result<Arc<TargetDir>, TargetError> {
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return Err(TargetError::BadPath {
                path: self.root().path().join(rel),
            });
        };
        let (dir, _) = self.get(parent)?.create_dir(name, mode)?;
        let dir = Arc::new(dir);
        self.verified.insert(rel.to_path_buf(), dir.id());
        self.push(rel.to_path_buf(), dir.clone());
        Ok(dir)
    }

    /// The handle of the verified folder `rel`: an open one, or opened below the nearest open
    /// ancestor one `O_NOFOLLOW` component at a time, each checked to be the folder verified there.
    pub fn get(&mut self, rel: &Path) -> Result<Arc<TargetDir>, TargetError> {
        while self.open.len() > 1 && !rel.starts_with(&self.open[self.open.len() - 1].0) {
            self.open.pop();
        }
        let (base, mut dir) = self.open[self.open.len() - 1].clone();
        let mut cur = base.clone();
        for c in rel.strip_prefix(&base).unwrap_or(rel).components() {
            cur.push(c);
            let want = *self
                .verified
                .get(&cur)
                .ok_or_else(|| TargetError::NotInRestore {
                    path: self.root().path().join(&cur),
                })?;
            let next = dir.open_dir(c.as_os_str())?;
            if next.id() != want {
                return Err(TargetError::Replaced {
                    path: next.path().to_path_buf(),
                });
            }
            dir = Arc::new(next);
            self.push(cur.clone(), dir.clone());
        }
        Ok(dir)
    }

    fn push(&mut self, rel: PathBuf, dir: Arc<TargetDir>) {
        if self.open.len() > OPEN_MAX {
            self.open.remove(1);
        }
        self.open.push((rel, dir));
    }

    /// Forgets the folder `rel` (never the root): nothing more may be created or opened in it, and
    /// the restore keeps no record of it. Folders held are then those still to be finished, not
    /// every folder of the tree.
    pub fn forget(&mut self, rel: &Path) {
        if rel.as_os_str().is_empty() {
            return;
        }
        self.verified.remove(rel);
        if let Some(i) = self.open.iter().position(|(p, _)| p == rel) {
            // Its descendants in the chain go with it: they could only be reached through it.
            self.open.truncate(i.max(1));
        }
    }

    /// Folders recorded as created or checked (the root included).
    #[cfg(test)]
    pub fn verified_len(&self) -> usize {
        self.verified.len()
    }

    /// Opens the verified folder `rel` afresh from the root (`RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS`)
    /// and checks it is the very folder verified there.
    pub fn reopen(&self, rel: &Path) -> Result<TargetDir, TargetError> {
        let path = || self.root().path().join(rel);
        let want = *self
            .verified
            .get(rel)
            .ok_or_else(|| TargetError::NotInRestore { path: path() })?;
        let dir = self.root().open_beneath(rel)?;
        if dir.id() != want {
            return Err(TargetError::Replaced { path: path() });
        }
        Ok(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_reopen_only_the_folder_they_verified() {
        let t = tempfile::tempdir().unwrap();
        let root = TargetDir::open_root(&t.path().join("root")).unwrap();
        let mut f = Folders::new(root);
        f.create(Path::new("n"), 0o700).unwrap();
        f.create(Path::new("n/m"), 0o700).unwrap();
        assert!(f.is_verified(Path::new("n/m")));
        assert!(matches!(
            f.create(Path::new("x/y"), 0o700),
            Err(TargetError::NotInRestore { .. })
        ));
        f.get(Path::new("")).unwrap();
        // Swap `n` for another real folder: reopening by path finds it, and refuses it.
        std::fs::rename(t.path().join("root/n"), t.path().join("root/n2")).unwrap();
        std::fs::create_dir_all(t.path().join("root/n/m")).unwrap();
        assert!(matches!(
            f.reopen(Path::new("n/m")),
            Err(TargetError::Replaced { .. })
        ));
        assert!(matches!(
            f.get(Path::new("n/m")),
            Err(TargetError::Replaced { .. })
        ));
    }

    #[test]
    fn a_forgotten_folder_is_no_longer_part_of_the_restore() {
        let t = tempfile::tempdir().unwrap();
        let mut f = Folders::new(TargetDir::open_root(&t.path().join("root")).unwrap());
        f.create(Path::new("a"), 0o700).unwrap();
        f.create(Path::new("a/b"), 0o700).unwrap();
        f.create(Path::new("c"), 0o700).unwrap();
        f.forget(Path::new("a/b"));
        f.forget(Path::new("a"));
        f.forget(Path::new(""));
        assert_eq!(f.verified_len(), 2);
        assert!(f.is_verified(Path::new("")) && f.is_verified(Path::new("c")));
        assert!(matches!(
            f.reopen(Path::new("a")),
            Err(TargetError::NotInRestore { .. })
        ));
        assert!(matches!(
            f.get(Path::new("a/b")),
            Err(TargetError::NotInRestore { .. })
        ));
        assert!(matches!(
            f.create(Path::new("a/x"), 0o700),
            Err(TargetError::NotInRestore { .. })
        ));
        f.get(Path::new("c")).unwrap();
    }
}
