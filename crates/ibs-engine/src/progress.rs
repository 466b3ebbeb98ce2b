//! Live progress counters shared between an operation and whoever watches it (the CLI's progress bar,
//! the controller's job record). Operations only add; watchers only read. Counters nobody watches
//! ([`Progress::unwatched`]) are still kept, but an operation skips work done only for them (the
//! first backup's size-estimate walk).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Progress {
    bytes_total: AtomicU64,
    bytes_done: AtomicU64,
    files_done: AtomicU64,
    files_total: AtomicU64,
    /// Nobody reads the totals while the operation runs (a CLI run without a progress bar).
    unwatched: bool,
}

/// A consistent-enough copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProgressSnapshot {
    pub bytes_total: u64,
    pub bytes_done: u64,
    pub files_done: u64,
    pub files_total: u64,
}

impl ProgressSnapshot {
    /// Percent done, if the total is known.
    pub fn percent(&self) -> Option<f64> {
        (self.bytes_total > 0)
            .then(|| (self.bytes_done as f64 * 100.0 / self.bytes_total as f64).min(100.0))
    }
}

impl Progress {
    /// Counters nobody watches live: totals that would cost work to find are not looked for.
    pub fn unwatched() -> Self {
        Progress {
            unwatched: true,
            ..Default::default()
        }
    }

    /// True unless made by [`Progress::unwatched`].
    pub fn watched(&self) -> bool {
        !self.unwatched
    }

    pub fn add_bytes(&self, n: u64) {
        self.bytes_done.fetch_add(n, Relaxed);
    }
    pub fn add_file(&self) {
        self.files_done.fetch_add(1, Relaxed);
    }
    pub fn add_total(&self, bytes: u64, files: u64) {
        self.bytes_total.fetch_add(bytes, Relaxed);
        self.files_total.fetch_add(files, Relaxed);
    }
    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            bytes_total: self.bytes_total.load(Relaxed),
            bytes_done: self.bytes_done.load(Relaxed),
            files_done: self.files_done.load(Relaxed),
            files_total: self.files_total.load(Relaxed),
        }
    }
}

/// Sums the sizes of regular files under `root` without reading them (for percent and ETA). Walks
/// as the backup does: through open folders, never following a symlink, access times kept
/// ([`crate::fileio::open_folder`]).
pub fn estimate(root: &std::path::Path) -> (u64, u64) {
    use rustix::fs::{AtFlags, FileType};
    use std::os::unix::ffi::OsStrExt;
    let Ok(m) = std::fs::symlink_metadata(root) else {
        return (0, 0);
    };
    if m.is_file() {
        return (m.len(), 1);
    }
    let (mut bytes, mut files) = (0, 0);
    let mut stack: Vec<_> = crate::fileio::open_folder(root).into_iter().collect();
    while let Some(fd) = stack.pop() {
        let Ok(mut listing) = rustix::fs::Dir::new(fd) else {
            continue;
        };
        while let Some(Ok(entry)) = listing.next() {
            let name = entry.file_name();
            if matches!(name.to_bytes(), b"." | b"..") {
                continue;
            }
            let Ok(dir) = listing.fd() else { break };
            let Ok(st) = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => {
                    let name = std::ffi::OsStr::from_bytes(name.to_bytes());
                    if let Ok(child) = crate::fileio::open_folder_at(dir, name) {
                        stack.push(child);
                    }
                }
                FileType::RegularFile => {
                    bytes += st.st_size as u64;
                    files += 1;
                }
                _ => {}
            }
        }
    }
    (bytes, files)
}
