//! Open files kept between ranged reads of the local folder backend.
//!
//! A restore, `check --pfx` or a mount reads a pack chunk by chunk; without this every chunk cost an
//! `open` (a walk of the whole path), a `stat`, a seek, the read and a `close`; with it, one
//! `pread`. Packs are immutable once published (a pack's name is the hash of its bytes), so a
//! descriptor keeps designating the right bytes for as long as the object lives.
//!
//! Invariants:
//! - At most [`CAPACITY`] files are open; the least recently used one goes first. A file is closed
//!   when its last reader drops it.
//! - `put`, `delete` and `rename` of a key through this backend forget its file first, so this
//!   process never reads an object it replaced through an old descriptor.
//! - The cache lives as long as its `LocalStorage` (the controller opens one per job): a file
//!   another process deletes keeps its blocks only until then.
//! - The size is taken once, at open; a read past it is refused as before, and a file truncated in
//!   place since comes back short, which the reader reports as an object that shrank.

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Most files kept open at once (as the SMB client's read handles).
pub const CAPACITY: usize = 16;

struct Entry {
    key: String,
    file: Arc<File>,
    size: u64,
    used: u64,
}

/// The cache; see the module doc.
#[derive(Default)]
pub(crate) struct ReadFiles {
    inner: Mutex<(Vec<Entry>, u64)>,
}

impl std::fmt::Debug for ReadFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadFiles")
            .field("open", &self.len())
            .finish()
    }
}

impl ReadFiles {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Vec<Entry>, u64)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Files currently open.
    pub fn len(&self) -> usize {
        self.lock().0.len()
    }

    /// The open file of `key` (at `path`) and its size, opening it if it is not cached.
    pub fn get_or_open(&self, key: &str, path: &Path) -> std::io::Result<(Arc<File>, u64)> {
        {
            let mut g = self.lock();
            let (entries, clock) = &mut *g;
            *clock += 1;
            if let Some(e) = entries.iter_mut().find(|e| e.key == key) {
                e.used = *clock;
                return Ok((e.file.clone(), e.size));
            }
        }
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        let file = Arc::new(file);
        let evicted = {
            let mut g = self.lock();
            let (entries, clock) = &mut *g;
            if let Some(e) = entries.iter_mut().find(|e| e.key == key) {
                // Another reader opened it meanwhile: use theirs, ours closes on drop.
                e.used = *clock;
                return Ok((e.file.clone(), e.size));
            }
            entries.push(Entry {
                key: key.to_owned(),
                file: file.clone(),
                size,
                used: *clock,
            });
            (entries.len() > CAPACITY).then(|| {
                let oldest = (0..entries.len())
                    .min_by_key(|&i| entries[i].used)
                    .unwrap_or(0);
                entries.swap_remove(oldest)
            })
        };
        drop(evicted);
        Ok((file, size))
    }

    /// Forgets `key`'s file (before the key is replaced, removed or renamed).
    pub fn forget(&self, key: &str) {
        let gone = {
            let mut g = self.lock();
            let entries = &mut g.0;
            entries
                .iter()
                .position(|e| e.key == key)
                .map(|i| entries.swap_remove(i))
        };
        drop(gone);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_capacity_files_least_recently_used_out_and_forgets_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let files = ReadFiles::default();
        let path = |i: usize| dir.path().join(format!("f{i}"));
        for i in 0..=CAPACITY {
            std::fs::write(path(i), vec![1u8; i]).unwrap();
        }
        for i in 0..CAPACITY {
            let (_, size) = files.get_or_open(&format!("f{i}"), &path(i)).unwrap();
            assert_eq!(size, i as u64);
        }
        // f0 is used again, so f1 is the least recently used when a 17th file opens.
        let (f0, _) = files.get_or_open("f0", &path(0)).unwrap();
        files
            .get_or_open(&format!("f{CAPACITY}"), &path(CAPACITY))
            .unwrap();
        assert_eq!(files.len(), CAPACITY);
        let keys: Vec<String> = files.lock().0.iter().map(|e| e.key.clone()).collect();
        assert!(keys.contains(&"f0".to_owned()) && !keys.contains(&"f1".to_owned()));
        // Cached: the same descriptor comes back.
        let (again, _) = files.get_or_open("f0", &path(0)).unwrap();
        assert!(Arc::ptr_eq(&f0, &again));
        files.forget("f0");
        assert_eq!(files.len(), CAPACITY - 1);
        // A replaced file is opened afresh after `forget`.
        std::fs::write(path(0), b"new bytes").unwrap();
        let (_, size) = files.get_or_open("f0", &path(0)).unwrap();
        assert_eq!(size, 9);
        assert!(files.get_or_open("nope", &dir.path().join("nope")).is_err());
        assert_eq!(files.len(), CAPACITY, "a failed open caches nothing");
    }
}
