//! The process limits ibs raises for itself at start.
//!
//! A backup walks each source through open folder descriptors (ADR 0061): one per folder depth,
//! plus those of the storage and the runtime. Services started by systemd get a soft limit of
//! 1024 open files by default (with a much higher hard limit), which a tree a thousand folders
//! deep would exceed; a process may raise its own soft limit up to the hard one, as Go programs
//! do at start.

/// The soft limit on open files is raised to the hard limit (at most this many).
pub const OPEN_FILES_MAX: u64 = 1 << 20;

/// Raises the soft limit on open files to the hard limit (capped at [`OPEN_FILES_MAX`]). Best
/// effort: where it cannot be raised, the walk reports the folders it could not open.
pub fn raise_open_files() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = hard.min(OPEN_FILES_MAX);
        if soft < want {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, want, hard);
        }
    }
}
