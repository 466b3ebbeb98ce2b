//! Restore of the entries that are neither regular files, directories nor symlinks: further names
//! of a hard-linked file (`linkat`, never following), FIFOs (`mkfifoat`) and device nodes
//! (`mknodat`, which needs `CAP_MKNOD`; without it the entry fails with a message that says so).
//!
//! They are created once every file is in place (a hard link needs its first name restored) and
//! before symlinks, like symlinks: in their (reopened, verified) folder's handle
//! ([`crate::target::TargetDir`]), under a temporary name that gets the metadata, then renamed over
//! whatever non-folder is at the name. A hard link may only name a file entry of this restore
//! marked as having several names (`link_leader`) that is a regular file when linked: a hostile
//! tree cannot make a name for a file outside the restore, or for one the restore did not write.

use crate::folders::Folders;
use crate::restore::{metadata, safe_components};
use crate::target::apply_metadata;
use ibs_repo::tree::{EntryKind, TreeEntry};
use rustix::fs::{AtFlags, FileType, Mode};
use std::collections::HashSet;
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// Creates `e` at `rel`; returns the warnings of its extended attributes.
pub(crate) fn restore(
    temp_name: &dyn Fn() -> OsString,
    folders: &Folders,
    rel: &Path,
    e: &TreeEntry,
    leaders: &HashSet<PathBuf>,
) -> Result<Vec<String>, String> {
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Err("this entry cannot be the source itself".into());
    };
    let dir = folders.reopen(parent).map_err(|err| err.to_string())?;
    if dir.kind_of(name).map_err(|err| err.to_string())? == Some(FileType::Directory) {
        return Err("a directory exists where this entry goes".into());
    }
    let tmp = temp_name();
    let m = metadata(e);
    let made = match e.kind {
        EntryKind::HardLink => {
            let target = e.target.as_deref().ok_or("hard link without a target")?;
            let first: PathBuf = safe_components(target)?.iter().collect();
            if !leaders.contains(&first) {
                return Err(format!(
                    "hard link to {}, which is not a multiply-linked file of this backup",
                    String::from_utf8_lossy(target)
                ));
            }
            let (Some(fp), Some(fname)) = (first.parent(), first.file_name()) else {
                return Err("hard link to the source itself".into());
            };
            let fdir = folders.reopen(fp).map_err(|err| err.to_string())?;
            if fdir.kind_of(fname).map_err(|err| err.to_string())? != Some(FileType::RegularFile) {
                return Err(format!(
                    "hard link to {}, which was not restored",
                    first.display()
                ));
            }
            // The same inode as its first name: owner, mode, times and attributes are set.
            fdir.hard_link(fname, &dir, &tmp)
                .map(|()| Vec::new())
                .map_err(|err| err.to_string())
        }
        EntryKind::Fifo => dir
            .mkfifo(&tmp, 0o600)
            .and_then(|()| dir.open_fifo(&tmp))
            .map(|f| {
                let _ = apply_metadata(f.as_fd(), &m);
                crate::xattrs::apply_fd(f.as_fd(), &e.xattrs)
            })
            .map_err(|err| err.to_string()),
        EntryKind::CharDevice | EntryKind::BlockDevice => {
            let kind = if e.kind == EntryKind::CharDevice {
                FileType::CharacterDevice
            } else {
                FileType::BlockDevice
            };
            match dir.mknod(&tmp, kind, 0o600, e.rdev) {
                Err(err) if err.to_string().contains("not permitted") => Err(format!(
                    "device node not created: mknod needs CAP_MKNOD (restore as root): {err}"
                )),
                Err(err) => Err(err.to_string()),
                Ok(()) => {
                    // Never opened (opening a device can act on it): by name, not following.
                    if nix::unistd::geteuid().is_root() {
                        let _ = rustix::fs::chownat(
                            dir.fd(),
                            &tmp,
                            Some(rustix::fs::Uid::from_raw(e.uid)),
                            Some(rustix::fs::Gid::from_raw(e.gid)),
                            AtFlags::SYMLINK_NOFOLLOW,
                        );
                    }
                    let _ = rustix::fs::chmodat(
                        dir.fd(),
                        &tmp,
                        Mode::from_raw_mode(e.mode & 0o7777),
                        AtFlags::empty(),
                    );
                    let t = rustix::fs::Timespec {
                        tv_sec: e.mtime_ns.div_euclid(1_000_000_000),
                        tv_nsec: e.mtime_ns.rem_euclid(1_000_000_000),
                    };
                    let times = rustix::fs::Timestamps {
                        last_access: t,
                        last_modification: t,
                    };
                    let _ =
                        rustix::fs::utimensat(dir.fd(), &tmp, &times, AtFlags::SYMLINK_NOFOLLOW);
                    Ok(crate::xattrs::apply_at(dir.fd(), &tmp, &e.xattrs))
                }
            }
        }
        other => return Err(format!("{other:?} is not a special entry")),
    };
    let warnings = match made {
        Ok(w) => w,
        Err(err) => {
            let _ = dir.remove_file(&tmp);
            return Err(err);
        }
    };
    dir.rename(&tmp, &dir, name).map_err(|err| {
        let _ = dir.remove_file(&tmp);
        err.to_string()
    })?;
    Ok(warnings)
}
