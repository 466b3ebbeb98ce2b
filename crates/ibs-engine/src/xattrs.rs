//! Extended attributes of tree entries: every name the kernel lists (`user.*`, `trusted.*` as root,
//! `security.capability`, `security.selinux`, the POSIX ACLs `system.posix_acl_access` and
//! `system.posix_acl_default`), read at backup and applied at restore.
//!
//! Syscalls go through `rustix` (nix 0.29 has no xattr calls). Backup reads an open file or folder
//! with `flistxattr`/`fgetxattr`, anything else with `llistxattr`/`lgetxattr`, which never follow a
//! symlink, through its open folder's `/proc/self/fd` link ([`read_at`]). Restore applies with `fsetxattr` on an
//! open descriptor of the entry ([`apply_fd`]); symlinks and device nodes, which cannot be opened
//! for I/O without following or side effects, are opened `O_PATH|O_NOFOLLOW` relative to their
//! folder's handle and set through that descriptor's `/proc/self/fd` link, which designates the
//! entry itself and is never resolved further ([`apply_at`], as libselinux does for labels).
//!
//! Invariants: a read never follows the last component; an attribute the target refuses (privilege,
//! file system support) is reported by name for its entry, never dropped silently; attributes are
//! applied after the owner (a `chown` clears `security.capability`) and before the mode and times.

use ibs_repo::tree::Xattr;
use rustix::fs::XattrFlags;
use rustix::io::Errno;
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Reads how many bytes `query` says, then the bytes with `read`; retries when the attribute grew
/// in between (`ERANGE`).
fn sized(
    query: impl Fn() -> rustix::io::Result<usize>,
    read: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
) -> rustix::io::Result<Vec<u8>> {
    for _ in 0..8 {
        let n = query()?;
        let mut buf = vec![0u8; n];
        if n == 0 {
            return Ok(buf);
        }
        match read(&mut buf) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(buf);
            }
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Errno::RANGE)
}

/// The extended attributes of `path` (not following a symlink), sorted by name. A file system
/// without xattr support has none. An attribute removed between listing and reading is left out.
pub fn read(path: &Path) -> Result<Vec<Xattr>, String> {
    read_with(
        || rustix::fs::llistxattr_query(path),
        |b| rustix::fs::llistxattr(path, b),
        |n| rustix::fs::lgetxattr_query(path, n),
        |n, b| rustix::fs::lgetxattr(path, n, b),
    )
}

/// [`read`] for an open file or folder.
pub fn read_fd(fd: BorrowedFd<'_>) -> Result<Vec<Xattr>, String> {
    read_with(
        || rustix::fs::flistxattr_query(fd),
        |b| rustix::fs::flistxattr(fd, b),
        |n| rustix::fs::fgetxattr_query(fd, n),
        |n, b| rustix::fs::fgetxattr(fd, n, b),
    )
}

/// [`read`] for the entry `name` of the open folder `dir`, reached only through that folder: by
/// the path `/proc/self/fd/DIR/NAME`, whose first part is the folder's descriptor (a link the
/// kernel resolves to the open folder itself, wherever it is now) and whose last is not followed.
/// Without `/proc` (`None` from [`proc_fd_root`]), `full` is used, as [`read`].
pub fn read_at(dir: BorrowedFd<'_>, name: &OsStr, full: &Path) -> Result<Vec<Xattr>, String> {
    match proc_fd_root() {
        Some(root) => {
            let mut p = root.join(dir.as_raw_fd().to_string()).into_os_string();
            p.push("/");
            p.push(name);
            read(Path::new(&p))
        }
        None => read(full),
    }
}

/// `/proc/self/fd` if this process can use it (asked once).
fn proc_fd_root() -> Option<&'static Path> {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let p = Path::new("/proc/self/fd");
    ROOT.get_or_init(|| p.is_dir()).then_some(p)
}

fn read_with(
    list_query: impl Fn() -> rustix::io::Result<usize>,
    list: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
    get_query: impl Fn(&OsStr) -> rustix::io::Result<usize>,
    get: impl Fn(&OsStr, &mut [u8]) -> rustix::io::Result<usize>,
) -> Result<Vec<Xattr>, String> {
    let list = match sized(list_query, list) {
        Ok(l) => l,
        Err(Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(format!("listing extended attributes: {e}")),
    };
    let mut out = Vec::new();
    for name in list.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let os = OsStr::from_bytes(name);
        match sized(|| get_query(os), |b| get(os, b)) {
            Ok(value) => out.push(Xattr {
                name: name.to_vec(),
                value,
            }),
            Err(Errno::NODATA) => {}
            Err(e) => {
                return Err(format!(
                    "reading extended attribute {}: {e}",
                    String::from_utf8_lossy(name)
                ))
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn refused(x: &Xattr, e: Errno) -> String {
    let why = match e {
        Errno::PERM | Errno::ACCESS => " (needs privileges this restore does not have)",
        Errno::NOTSUP => " (the target file system does not support it)",
        _ => "",
    };
    format!(
        "extended attribute {} not restored: {e}{why}",
        String::from_utf8_lossy(&x.name)
    )
}

/// Sets every attribute on the open descriptor `fd`; returns one message per attribute refused.
pub fn apply_fd(fd: BorrowedFd<'_>, xattrs: &[Xattr]) -> Vec<String> {
    xattrs
        .iter()
        .filter_map(|x| {
            rustix::fs::fsetxattr(
                fd,
                OsStr::from_bytes(&x.name),
                &x.value,
                XattrFlags::empty(),
            )
            .err()
            .map(|e| refused(x, e))
        })
        .collect()
}

/// Sets every attribute on the entry `name` of the folder `dir` itself (a symlink or device node is
/// not followed or opened for I/O); returns one message per attribute refused.
pub fn apply_at(dir: BorrowedFd<'_>, name: &OsStr, xattrs: &[Xattr]) -> Vec<String> {
    if xattrs.is_empty() {
        return Vec::new();
    }
    use rustix::fs::OFlags;
    use std::os::fd::AsRawFd;
    let fd = match rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => return xattrs.iter().map(|x| refused(x, e)).collect(),
    };
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    xattrs
        .iter()
        .filter_map(|x| {
            rustix::fs::setxattr(
                link.as_str(),
                OsStr::from_bytes(&x.name),
                &x.value,
                XattrFlags::empty(),
            )
            .err()
            .map(|e| refused(x, e))
        })
        .collect()
}

/// Sets every attribute on `path` itself (a symlink is not followed); returns one message per
/// attribute refused.
pub fn apply_nofollow(path: &Path, xattrs: &[Xattr]) -> Vec<String> {
    xattrs
        .iter()
        .filter_map(|x| {
            rustix::fs::lsetxattr(
                path,
                OsStr::from_bytes(&x.name),
                &x.value,
                XattrFlags::empty(),
            )
            .err()
            .map(|e| refused(x, e))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_attributes_round_trip_and_symlinks_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let l = dir.path().join("l");
        std::os::unix::fs::symlink("f", &l).unwrap();
        let want = vec![
            Xattr {
                name: b"user.a".to_vec(),
                value: Vec::new(),
            },
            Xattr {
                name: b"user.note".to_vec(),
                value: b"hello".to_vec(),
            },
        ];
        assert!(apply_nofollow(&f, &want).is_empty());
        assert_eq!(read(&f).unwrap(), want);
        assert_eq!(
            read(&l).unwrap(),
            Vec::new(),
            "the link's own, not its target's"
        );

        let g = dir.path().join("g");
        let file = std::fs::File::create(&g).unwrap();
        use std::os::fd::AsFd;
        assert!(apply_fd(file.as_fd(), &want).is_empty());
        assert_eq!(read(&g).unwrap(), want);

        // user.* is not allowed on a symlink: refused by name, not dropped.
        let errs = apply_nofollow(&l, &want[1..]);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("user.note"), "{errs:?}");
    }
}
