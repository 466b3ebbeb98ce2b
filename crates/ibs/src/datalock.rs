//! One daemon per data directory. `ibs serve` holds an exclusive `flock` on `DATA/serve.lock` for
//! its whole life; the file names the holder (`pid N`, then `api URL` once it listens). A second
//! `ibs serve` on the same directory fails at once, naming the running one, before it touches the
//! state database (where it would mark the first one's live jobs Interrupted). The kernel drops the
//! lock when the holder exits, however it exits, so a crash never leaves a stale lock behind.

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub const LOCK_FILE: &str = "serve.lock";

/// The held lock; dropping it releases the directory.
pub struct DataDirLock {
    file: Flock<File>,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the lock on `data` (created if missing), or fails naming the daemon that holds it.
    pub fn acquire(data: &Path) -> Result<DataDirLock> {
        std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
        let path = data.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(file) => {
                let mut lock = DataDirLock { file, path };
                lock.record(None)?;
                Ok(lock)
            }
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let field = |k: &str| {
                    text.lines()
                        .find_map(|l| l.strip_prefix(k))
                        .map(|v| v.trim().to_string())
                };
                let pid = field("pid ").unwrap_or_else(|| "unknown".into());
                let api = field("api ")
                    .map(|a| format!(", API {a}"))
                    .unwrap_or_default();
                bail!(
                    "another ibs serve (pid {pid}{api}) is running on the data directory {}; \
                     stop it first, or give this one another --data",
                    data.display()
                )
            }
            Err((_, e)) => bail!("locking {}: {e}", path.display()),
        }
    }

    /// Rewrites the lock file with this process's pid and, once known, its API URL.
    pub fn record(&mut self, api: Option<&str>) -> Result<()> {
        let mut text = format!("pid {}\n", std::process::id());
        if let Some(a) = api {
            text.push_str(&format!("api {a}\n"));
        }
        let f: &mut File = &mut self.file;
        f.set_len(0)
            .and_then(|_| f.rewind())
            .and_then(|_| f.write_all(text.as_bytes()))
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_fails_naming_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = DataDirLock::acquire(dir.path()).unwrap();
        first.record(Some("http://127.0.0.1:1")).unwrap();
        let e = DataDirLock::acquire(dir.path()).err().unwrap().to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        assert!(e.contains("http://127.0.0.1:1"), "{e}");
        drop(first);
        assert!(DataDirLock::acquire(dir.path()).is_ok(), "released on drop");
    }
}
