//! Who holds a lock, and whether a holder is provably a process of this very kernel and pid
//! namespace. Only then can its pid be looked up here; a hostname proves nothing (two machines, or
//! two containers, may share one).

use super::LockInfo;

/// The identity a lock object records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub host: String,
    pub pid: u32,
    /// Start time of `pid` in clock ticks since boot (`/proc/<pid>/stat`, field 22).
    pub pid_start: Option<u64>,
    /// `/proc/sys/kernel/random/boot_id`: random per boot of a kernel.
    pub boot_id: Option<String>,
    /// `/proc/self/ns/pid` (e.g. `pid:[4026531836]`): pids are meaningful only inside one namespace.
    pub pid_ns: Option<String>,
}

impl Identity {
    /// This process.
    pub fn current() -> Identity {
        let pid = std::process::id();
        Identity {
            host: hostname(),
            pid,
            pid_start: process_start(pid),
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty()),
            pid_ns: std::fs::read_link("/proc/self/ns/pid")
                .ok()
                .and_then(|p| p.to_str().map(str::to_owned)),
        }
    }

    /// An identity that is never provably local to anyone: tests use it to play holders on other
    /// machines inside one process.
    pub fn foreign(host: &str, pid: u32) -> Identity {
        Identity {
            host: host.into(),
            pid,
            pid_start: None,
            boot_id: None,
            pid_ns: None,
        }
    }

    /// Whether the holder of `lock` is alive: `Some(true)` or `Some(false)` when its pid provably
    /// names a process of this kernel and pid namespace (same boot id, same namespace, a recorded
    /// start time), `None` when that cannot be proven (then only its refreshes tell).
    pub fn local_liveness(&self, lock: &LockInfo) -> Option<bool> {
        let same_kernel = matches!((&self.boot_id, &lock.boot_id), (Some(a), Some(b)) if a == b);
        let same_ns = matches!((&self.pid_ns, &lock.pid_ns), (Some(a), Some(b)) if a == b);
        let start = lock.pid_start?;
        if !(same_kernel && same_ns) {
            return None;
        }
        Some(process_start(lock.pid) == Some(start))
    }
}

/// The start time (clock ticks since boot) of a live process, from `/proc/<pid>/stat`.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}
