//! Presentation: exit codes (documented in docs/operator-guide.md §Exit codes), human sizes, tables
//! and progress bars. Progress goes to stderr and only on a terminal.

use ibs_engine::{EngineError, Progress};
use ibs_keys::KeyError;
use ibs_location::LocationError;
use ibs_repo::RepoError;
use ibs_storage::{AlertClass, StorageError};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILURE: i32 = 1;
    // 2 is clap's usage error.
    pub const PARTIAL: i32 = 3;
    pub const CHECK_PROBLEMS: i32 = 4;
    pub const KEY: i32 = 5;
    pub const LOCKED: i32 = 6;
    pub const NOT_A_REPOSITORY: i32 = 7;
    /// The backup (or a planned component) asked for is not in the repository.
    pub const NOT_FOUND: i32 = 8;
    /// `ibs recover`: the backup was written by a newer ibs or format revision (`--allow-newer`).
    pub const NEWER_BACKUP: i32 = 9;
    pub const CAPACITY: i32 = 10;
    pub const CONNECTIVITY: i32 = 11;
    pub const PATH: i32 = 12;
    pub const AUTHENTICATION: i32 = 13;
    pub const GENERAL: i32 = 14;
}

fn storage_code(e: &StorageError) -> i32 {
    match e.class() {
        AlertClass::Capacity => exit::CAPACITY,
        AlertClass::Connectivity => exit::CONNECTIVITY,
        AlertClass::Path => exit::PATH,
        AlertClass::Authentication => exit::AUTHENTICATION,
        AlertClass::General => exit::GENERAL,
    }
}

fn repo_code(e: &RepoError) -> i32 {
    match e {
        RepoError::Storage(s) => storage_code(s),
        RepoError::Key(_)
        | RepoError::WrongCertificate { .. }
        | RepoError::MissingKey(_)
        | RepoError::WrongKeyFile => exit::KEY,
        RepoError::Locked { .. } | RepoError::LockLost { .. } => exit::LOCKED,
        RepoError::NotARepository { .. } | RepoError::UnsupportedVersion { .. } => {
            exit::NOT_A_REPOSITORY
        }
        _ => exit::FAILURE,
    }
}

fn location_code(e: &LocationError) -> i32 {
    match e {
        LocationError::Storage(s) => storage_code(s),
        LocationError::NotARepository { .. } => exit::NOT_A_REPOSITORY,
        _ => exit::FAILURE,
    }
}

/// The exit code for an error, by the most specific typed cause found.
pub fn code_for(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<ibs_recovery::RecoveryError>() {
            use ibs_recovery::RecoveryError as R;
            return match e {
                R::Engine(EngineError::Repo(r)) => repo_code(r),
                R::NoSuchBackup { .. } | R::NoReadyBackup { .. } | R::MissingComponent { .. } => {
                    exit::NOT_FOUND
                }
                R::NewerBackup(_) => exit::NEWER_BACKUP,
                _ => exit::FAILURE,
            };
        }
        if let Some(e) = cause.downcast_ref::<EngineError>() {
            return match e {
                EngineError::Repo(r) => repo_code(r),
                _ => exit::FAILURE,
            };
        }
        if let Some(e) = cause.downcast_ref::<RepoError>() {
            return repo_code(e);
        }
        if let Some(e) = cause.downcast_ref::<LocationError>() {
            return location_code(e);
        }
        if let Some(e) = cause.downcast_ref::<StorageError>() {
            return storage_code(e);
        }
        if cause.downcast_ref::<KeyError>().is_some() {
            return exit::KEY;
        }
    }
    exit::FAILURE
}

/// A remediation line for storage failures (the brief's alert texts).
pub fn remediation(err: &anyhow::Error) -> Option<String> {
    for cause in err.chain() {
        let s = cause
            .downcast_ref::<StorageError>()
            .or_else(|| {
                cause
                    .downcast_ref::<RepoError>()
                    .and_then(RepoError::storage)
            })
            .or_else(|| {
                cause
                    .downcast_ref::<LocationError>()
                    .and_then(LocationError::storage)
            })
            .or_else(|| match cause.downcast_ref::<EngineError>() {
                Some(EngineError::Repo(r)) => r.storage(),
                _ => None,
            })
            .or_else(
                || match cause.downcast_ref::<ibs_recovery::RecoveryError>() {
                    Some(ibs_recovery::RecoveryError::Engine(EngineError::Repo(r))) => r.storage(),
                    _ => None,
                },
            );
        if let Some(s) = s {
            let c = s.class();
            return Some(format!(
                "{} ({}) {} Remediation: {}",
                c.title(),
                c.as_str(),
                c.description(),
                c.remediation()
            ));
        }
    }
    None
}

pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Prints rows as an aligned table.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(header.iter().map(|s| s.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

/// A progress bar on stderr fed from `progress`, if stderr is a terminal and output is for people.
pub struct Bar {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Bar {
    pub fn start(progress: Arc<Progress>, label: &'static str, enabled: bool) -> Bar {
        let stop = Arc::new(AtomicBool::new(false));
        if !enabled || !std::io::stderr().is_terminal() {
            return Bar { stop, handle: None };
        }
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{prefix} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
                )
                .expect("valid template"),
            );
            bar.set_prefix(label);
            while !s.load(Ordering::Relaxed) {
                let snap = progress.snapshot();
                bar.set_length(snap.bytes_total.max(snap.bytes_done));
                bar.set_position(snap.bytes_done);
                bar.set_message(format!("{} files", snap.files_done));
                std::thread::sleep(Duration::from_millis(100));
            }
            bar.finish_and_clear();
        });
        Bar {
            stop,
            handle: Some(handle),
        }
    }

    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
