//! `ibs repo mount`: every backup of a repository as a read-only FUSE file system, laid out as
//! `MOUNTPOINT/<backup id>/<source>/<path…>` plus `MOUNTPOINT/latest`, a symlink to the newest
//! backup's folder. Entries show the type, permission bits, owner, size, mtime, device numbers,
//! symlink targets, hard links and extended attributes they were backed up with; file contents
//! are read on demand, chunk by chunk, through the engine's [`Reader`] (authenticated and
//! re-hashed like every restore), never loaded whole.
//!
//! This crate is the only one that knows FUSE (the `fuser` crate, without libfuse: as root it
//! mounts with `mount(2)`, otherwise through Debian's setuid `fusermount3`); the engine stays free
//! of it and the binary only composes. The mount is read-only to the kernel (`ro`, `nodev`,
//! `nosuid`, `default_permissions`), and the file system itself answers `EROFS` to any change.
//!
//! Lifecycle: [`mount`] returns once the kernel has the mount; [`Mounted::unmount`] unmounts
//! (refusing, and leaving the mount served, while something still uses it); [`Mounted::join`]
//! waits for the session to end, which it also does when someone else unmounts.

mod fs;
mod tree;

use ibs_engine::browse::Reader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// Why mounting or unmounting failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// `/dev/fuse` is missing or cannot be opened.
    #[error("/dev/fuse is not available ({detail}): load the fuse module (`modprobe fuse`), or give the container the device")]
    NoFuseDevice { detail: String },
    /// The mount point is not an existing folder.
    #[error("mount point {path}: {detail}")]
    BadMountPoint { path: PathBuf, detail: String },
    /// The kernel (or fusermount3) refused the mount.
    #[error("mounting at {path} failed: {detail}")]
    Mount { path: PathBuf, detail: String },
    /// Something still uses the mount; it stays mounted and served.
    #[error("{path} is busy (a shell or program still has a file or folder under it open); close it and try again")]
    Busy { path: PathBuf },
    /// Unmounting failed for another reason.
    #[error("unmounting {path} failed: {detail}")]
    Unmount { path: PathBuf, detail: String },
}

/// A live mount: the FUSE session runs on its own thread until the file system is unmounted.
pub struct Mounted {
    path: PathBuf,
    session: fuser::BackgroundSession,
}

/// Mounts the backups `backups` (id and start time; the caller leaves out those it cannot show)
/// of `reader`'s repository at `mountpoint`, an existing empty folder. `rt` is the runtime the
/// reader was opened on; the session thread blocks on it, so it must not be a runtime thread.
pub fn mount(
    rt: tokio::runtime::Handle,
    reader: Arc<Reader>,
    backups: &[(String, SystemTime)],
    mountpoint: &Path,
) -> Result<Mounted, MountError> {
    let bad = |detail: String| MountError::BadMountPoint {
        path: mountpoint.to_path_buf(),
        detail,
    };
    let meta = std::fs::metadata(mountpoint).map_err(|e| bad(e.to_string()))?;
    if !meta.is_dir() {
        return Err(bad("not a folder".into()));
    }
    if std::fs::read_dir(mountpoint)
        .map_err(|e| bad(e.to_string()))?
        .next()
        .is_some()
    {
        return Err(bad(
            "not empty (mounting would hide what is there); use an empty folder".into(),
        ));
    }
    // Only its presence: a user who may not open it mounts through the setuid fusermount3.
    if let Err(e) = std::fs::metadata("/dev/fuse") {
        return Err(MountError::NoFuseDevice {
            detail: e.to_string(),
        });
    }
    let fs = fs::BackupFs::new(rt, reader, tree::Table::new(backups));
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::FSName("ibs".into()),
        fuser::MountOption::Subtype("ibs".into()),
    ];
    let session = fuser::spawn_mount(fs, mountpoint, &config).map_err(|e| MountError::Mount {
        path: mountpoint.to_path_buf(),
        detail: e.to_string(),
    })?;
    Ok(Mounted {
        path: mountpoint.to_path_buf(),
        session,
    })
}

impl Mounted {
    /// Whether the session has ended (the file system was unmounted, by us or by someone else).
    pub fn is_finished(&self) -> bool {
        self.session.guard.is_finished()
    }

    /// Unmounts: with `umount(2)` as root, else with `fusermount3 -u`. While something still uses
    /// the mount this fails with [`MountError::Busy`] and the mount stays served.
    pub fn unmount(&self) -> Result<(), MountError> {
        let fail = |detail: String| MountError::Unmount {
            path: self.path.clone(),
            detail,
        };
        if self.is_finished() {
            return Ok(());
        }
        match nix::mount::umount(&self.path) {
            Ok(()) => Ok(()),
            Err(nix::errno::Errno::EBUSY) => Err(MountError::Busy {
                path: self.path.clone(),
            }),
            Err(nix::errno::Errno::EPERM) if !nix::unistd::geteuid().is_root() => {
                let out = std::process::Command::new("fusermount3")
                    .arg("-u")
                    .arg("--")
                    .arg(&self.path)
                    .output()
                    .map_err(|e| fail(format!("running fusermount3: {e}")))?;
                let err = String::from_utf8_lossy(&out.stderr).into_owned();
                match out.status.success() {
                    true => Ok(()),
                    false if err.contains("busy") => Err(MountError::Busy {
                        path: self.path.clone(),
                    }),
                    false => Err(fail(format!("fusermount3: {}", err.trim()))),
                }
            }
            Err(e) => Err(fail(e.to_string())),
        }
    }

    /// Waits for the session to end (after [`Mounted::unmount`], or an unmount by someone else).
    pub fn join(self) -> Result<(), MountError> {
        let path = self.path.clone();
        self.session.join().map_err(|e| MountError::Unmount {
            path,
            detail: e.to_string(),
        })
    }
}
