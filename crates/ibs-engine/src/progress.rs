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

/// Sums the sizes of regular files under `root` without reading them (for percent and ETA).
pub fn estimate(root: &std::path::Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut files = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else if m.is_file() {
            bytes += m.len();
            files += 1;
        }
    }
    (bytes, files)
}
