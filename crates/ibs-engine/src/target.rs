//! The restore target, reached only through directory handles.
//!
//! A [`TargetDir`] is an open directory (`O_RDONLY|O_DIRECTORY`). The target root is opened once,
//! from the path the operator gave (that path may itself be or pass through a symlink: it is the
//! operator's choice). Everything below it is reached from a handle, one component at a time with
//! `O_NOFOLLOW`, or several at once with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (a
//! per-component `O_NOFOLLOW` walk where the kernel lacks `openat2`). Files, folders, symlinks,
//! hard links, FIFOs and devices are created, and renamed, relative to a handle; modes, owners and
//! times are applied to an open descriptor ([`apply_metadata`]; a FIFO is opened for that with
//! [`TargetDir::open_fifo`]), or, for a symlink, by name relative to its folder's handle without
//! following it ([`TargetDir::set_link_metadata`]).
//!
//! Invariants:
//! - No operation here resolves a symlink below the root: a symlink (or any non-directory) where a
//!   folder is needed is refused with [`TargetError::NotADirectory`] naming the path, and a symlink
//!   where a file, link or node is created is replaced by `renameat` (which never follows it) or
//!   makes `O_CREAT|O_EXCL` fail.
//! - A handle keeps designating the folder it opened: if someone renames that folder and puts a
//!   symlink in its place, writes through the handle still land in the (moved) folder, which is
//!   below the root unless someone who can already write there moved it out.
//! - [`DirId`] (device, inode) lets a caller check that a folder reopened later is the very one it
//!   created or checked before ([`crate::folders::Folders`] does).

use rustix::fs::{
    self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps,
};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// A failed operation on the restore target, naming the path it concerns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    #[error(
        "{path}: exists and is not a directory (it is {found}); refusing to restore through it"
    )]
    NotADirectory { path: PathBuf, found: &'static str },
    #[error(
        "{path}: is no longer the folder this restore created or checked (it was replaced while the \
         restore ran); nothing is written through it"
    )]
    Replaced { path: PathBuf },
    #[error(
        "{path}: its parent directory is not part of the restore (unsafe or malformed manifest)"
    )]
    NotInRestore { path: PathBuf },
    #[error("{path}: a directory exists where a {what} goes")]
    DirectoryInTheWay { path: PathBuf, what: &'static str },
    #[error("{path}: not a plain relative path below the target")]
    BadPath { path: PathBuf },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(op: &'static str, path: PathBuf) -> impl FnOnce(Errno) -> TargetError {
    move |e| TargetError::Io {
        op,
        path,
        source: e.into(),
    }
}

/// Which folder a handle designates: device and inode number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirId {
    dev: u64,
    ino: u64,
}

/// Mode, owner and modification time to give a restored entry (atime is set to the mtime).
#[derive(Debug, Clone, Copy)]
pub struct Metadata {
    /// Permission bits (`& 0o7777` is applied).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
}

impl Metadata {
    fn times(&self) -> Timestamps {
        let t = Timespec {
            tv_sec: self.mtime_ns.div_euclid(1_000_000_000),
            tv_nsec: self.mtime_ns.rem_euclid(1_000_000_000),
        };
        Timestamps {
            last_access: t,
            last_modification: t,
        }
    }
}

/// Owners are restored only by root (anyone else could only give files away). Asked once per
/// process: ibs never changes its effective user.
fn restores_owners() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| nix::unistd::geteuid().is_root())
}

/// Applies owner (as root), mode and times to an open file or folder, in that order (a change of
/// owner clears set-id bits, so the mode comes after it). Each step is tried; the first failure is
/// returned.
pub fn apply_metadata(fd: BorrowedFd<'_>, m: &Metadata) -> std::io::Result<()> {
    let owner = if restores_owners() {
        rfs::fchown(
            fd,
            Some(rfs::Uid::from_raw(m.uid)),
            Some(rfs::Gid::from_raw(m.gid)),
        )
    } else {
        Ok(())
    };
    let mode = rfs::fchmod(fd, Mode::from_raw_mode(m.mode & 0o7777));
    let times = rfs::futimens(fd, &m.times());
    Ok(owner.and(mode).and(times)?)
}

/// Set once `openat2` turned out to be unavailable (old kernel, or a seccomp filter refusing it).
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// An open folder of the restore target.
#[derive(Debug)]
pub struct TargetDir {
    fd: OwnedFd,
    /// Where the folder was when opened: for messages only, never used to reach it.
    path: PathBuf,
    id: DirId,
}

impl TargetDir {
    fn from_fd(fd: OwnedFd, path: PathBuf) -> Result<TargetDir, TargetError> {
        let st = rfs::fstat(&fd).map_err(io("stat", path.clone()))?;
        let id = DirId {
            dev: st.st_dev,
            ino: st.st_ino,
        };
        Ok(TargetDir { fd, path, id })
    }

    /// Creates the target root (and missing parents) if needed, and opens it. The path is resolved
    /// as given, once.
    pub fn open_root(path: &Path) -> Result<TargetDir, TargetError> {
        std::fs::create_dir_all(path).map_err(|source| TargetError::Io {
            op: "create",
            path: path.to_path_buf(),
            source,
        })?;
        let fd = rfs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io("open", path.to_path_buf()))?;
        TargetDir::from_fd(fd, path.to_path_buf())
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Where this folder was when it was opened (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn id(&self) -> DirId {
        self.id
    }

    fn child(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// What `name` is, without following a symlink; `None` if nothing is there.
    pub fn kind_of(&self, name: &OsStr) -> Result<Option<FileType>, TargetError> {
        match rfs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(io("stat", self.child(name))(e)),
        }
    }

    fn not_a_dir(&self, name: &OsStr, e: Errno) -> TargetError {
        let found = match self.kind_of(name) {
            Ok(Some(FileType::Symlink)) => "a symlink",
            Ok(Some(FileType::RegularFile)) => "a file",
            Ok(Some(FileType::Directory)) | Ok(None) | Err(_) => {
                return io("open", self.child(name))(e)
            }
            Ok(Some(_)) => "a special file",
        };
        TargetError::NotADirectory {
            path: self.child(name),
            found,
        }
    }

    /// Opens the existing folder `name` (one component), never through a symlink.
    pub fn open_dir(&self, name: &OsStr) -> Result<TargetDir, TargetError> {
        check_name(name, &self.path)?;
        match rfs::openat(&self.fd, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => TargetDir::from_fd(fd, self.child(name)),
            Err(e @ (Errno::LOOP | Errno::NOTDIR)) => Err(self.not_a_dir(name, e)),
            Err(e) => Err(io("open", self.child(name))(e)),
        }
    }

    /// Creates the folder `name` with `mode` (or takes the real folder already there) and opens it;
    /// returns whether it was created. A symlink or file at `name` is refused, never followed.
    pub fn create_dir(&self, name: &OsStr, mode: u32) -> Result<(TargetDir, bool), TargetError> {
        check_name(name, &self.path)?;
        let created = match rfs::mkdirat(&self.fd, name, Mode::from_raw_mode(mode & 0o7777)) {
            Ok(()) => true,
            Err(Errno::EXIST) => false,
            Err(e) => return Err(io("create folder", self.child(name))(e)),
        };
        Ok((self.open_dir(name)?, created))
    }

    /// Opens the folder at `rel` (plain components only) below this one, never through a symlink
    /// and never above this folder. An empty `rel` reopens this folder.
    pub fn open_beneath(&self, rel: &Path) -> Result<TargetDir, TargetError> {
        if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(TargetError::BadPath {
                path: self.path.join(rel),
            });
        }
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            match self.open_beneath_openat2(rel) {
                Err(TargetError::Io { source, .. })
                    if matches!(
                        Errno::from_io_error(&source),
                        Some(Errno::NOSYS | Errno::PERM)
                    ) =>
                {
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                }
                other => return other,
            }
        }
        self.open_beneath_walk(rel)
    }

    fn open_beneath_openat2(&self, rel: &Path) -> Result<TargetDir, TargetError> {
        let path = self.path.join(rel);
        let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        let at = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        // EAGAIN: a rename elsewhere on the system raced the lookup; the kernel asks for a retry.
        let mut tries = 0;
        loop {
            match rfs::openat2(&self.fd, at, DIR_FLAGS, Mode::empty(), how) {
                Ok(fd) => return TargetDir::from_fd(fd, path),
                Err(Errno::AGAIN) if tries < 64 => tries += 1,
                Err(e @ (Errno::LOOP | Errno::NOTDIR | Errno::XDEV)) => {
                    // Name the component that is in the way, found the slow way.
                    return match self.open_beneath_walk(rel) {
                        Err(err) => Err(err),
                        Ok(_) => Err(io("open", path)(e)),
                    };
                }
                Err(e) => return Err(io("open", path)(e)),
            }
        }
    }

    /// [`TargetDir::open_beneath`] one `O_NOFOLLOW` component at a time.
    pub(crate) fn open_beneath_walk(&self, rel: &Path) -> Result<TargetDir, TargetError> {
        let mut cur = self.open_dir_dot()?;
        for c in rel.components() {
            cur = cur.open_dir(c.as_os_str())?;
        }
        Ok(cur)
    }

    fn open_dir_dot(&self) -> Result<TargetDir, TargetError> {
        let fd = rfs::openat(&self.fd, ".", DIR_FLAGS, Mode::empty())
            .map_err(io("open", self.path.clone()))?;
        TargetDir::from_fd(fd, self.path.clone())
    }

    /// Creates the file `name` (`O_CREAT|O_EXCL|O_NOFOLLOW`: never an existing file, never through
    /// a symlink) for writing.
    pub fn create_file(&self, name: &OsStr, mode: u32) -> Result<File, TargetError> {
        check_name(name, &self.path)?;
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
        rfs::openat(
            &self.fd,
            name,
            flags | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode & 0o7777),
        )
        .map(File::from)
        .map_err(io("create", self.child(name)))
    }

    /// Renames `from` in this folder to `to` in `to_dir`. Whatever was at `to` (a file, a symlink)
    /// is replaced, never followed; a folder there makes it fail.
    pub fn rename(&self, from: &OsStr, to_dir: &TargetDir, to: &OsStr) -> Result<(), TargetError> {
        check_name(from, &self.path)?;
        check_name(to, &to_dir.path)?;
        match rfs::renameat(&self.fd, from, &to_dir.fd, to) {
            Ok(()) => Ok(()),
            Err(Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST) => {
                Err(TargetError::DirectoryInTheWay {
                    path: to_dir.child(to),
                    what: "file or symlink",
                })
            }
            Err(e) => Err(io("rename into", to_dir.child(to))(e)),
        }
    }

    /// Removes the non-folder `name` (a symlink itself, not what it points to).
    pub fn remove_file(&self, name: &OsStr) -> Result<(), TargetError> {
        check_name(name, &self.path)?;
        rfs::unlinkat(&self.fd, name, AtFlags::empty()).map_err(io("remove", self.child(name)))
    }

    /// Creates the symlink `name` pointing to `target` (fails if `name` exists).
    pub fn symlink(&self, target: &[u8], name: &OsStr) -> Result<(), TargetError> {
        check_name(name, &self.path)?;
        use std::os::unix::ffi::OsStrExt;
        rfs::symlinkat(OsStr::from_bytes(target), &self.fd, name)
            .map_err(io("create symlink", self.child(name)))
    }

    /// Creates `to` in `to_dir` as a hard link to `from` in this folder. A symlink at `from` is
    /// linked itself, never followed; an existing `to` makes it fail.
    pub fn hard_link(
        &self,
        from: &OsStr,
        to_dir: &TargetDir,
        to: &OsStr,
    ) -> Result<(), TargetError> {
        check_name(from, &self.path)?;
        check_name(to, &to_dir.path)?;
        rfs::linkat(&self.fd, from, &to_dir.fd, to, AtFlags::empty())
            .map_err(io("create hard link", to_dir.child(to)))
    }

    /// Creates the FIFO `name` (fails if `name` exists).
    pub fn mkfifo(&self, name: &OsStr, mode: u32) -> Result<(), TargetError> {
        check_name(name, &self.path)?;
        rfs::mkfifoat(&self.fd, name, Mode::from_raw_mode(mode & 0o7777))
            .map_err(io("create fifo", self.child(name)))
    }

    /// Opens the FIFO `name` (`O_RDONLY|O_NONBLOCK|O_NOFOLLOW`: returns at once, never through a
    /// symlink) so that its metadata can be applied to the descriptor; anything else there is refused.
    pub fn open_fifo(&self, name: &OsStr) -> Result<File, TargetError> {
        check_name(name, &self.path)?;
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rfs::openat(&self.fd, name, flags, Mode::empty())
            .map_err(io("open fifo", self.child(name)))?;
        let st = rfs::fstat(&fd).map_err(io("stat", self.child(name)))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::Fifo {
            return Err(io("open fifo", self.child(name))(Errno::INVAL));
        }
        Ok(File::from(fd))
    }

    /// Creates the device or socket node `name` (fails if `name` exists; devices need root).
    pub fn mknod(
        &self,
        name: &OsStr,
        kind: FileType,
        mode: u32,
        dev: u64,
    ) -> Result<(), TargetError> {
        check_name(name, &self.path)?;
        rfs::mknodat(
            &self.fd,
            name,
            kind,
            Mode::from_raw_mode(mode & 0o7777),
            dev,
        )
        .map_err(io("create node", self.child(name)))
    }

    /// Applies owner (as root) and times to the symlink `name` itself, never to what it points to
    /// (a symlink has no mode of its own). Both steps are tried; the first failure is returned.
    pub fn set_link_metadata(&self, name: &OsStr, m: &Metadata) -> Result<(), TargetError> {
        check_name(name, &self.path)?;
        let owner = if restores_owners() {
            rfs::chownat(
                &self.fd,
                name,
                Some(rfs::Uid::from_raw(m.uid)),
                Some(rfs::Gid::from_raw(m.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
        } else {
            Ok(())
        };
        let times = rfs::utimensat(&self.fd, name, &m.times(), AtFlags::SYMLINK_NOFOLLOW);
        owner
            .and(times)
            .map_err(io("set metadata of", self.child(name)))
    }
}

/// A name used relative to a handle must be one plain component.
fn check_name(name: &OsStr, dir: &Path) -> Result<(), TargetError> {
    let mut c = Path::new(name).components();
    match (c.next(), c.next()) {
        (Some(Component::Normal(n)), None) if n == name => Ok(()),
        _ => Err(TargetError::BadPath {
            path: dir.join(name),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, TargetDir) {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("root/a/b")).unwrap();
        std::fs::create_dir_all(t.path().join("outside")).unwrap();
        symlink(t.path().join("outside"), t.path().join("root/a/link")).unwrap();
        symlink("../outside", t.path().join("root/up")).unwrap();
        std::fs::write(t.path().join("root/a/file"), b"x").unwrap();
        let root = TargetDir::open_root(&t.path().join("root")).unwrap();
        (t, root)
    }

    fn beneath_refusals(open: impl Fn(&Path) -> Result<TargetDir, TargetError>) {
        assert!(open(Path::new("a/b")).is_ok());
        assert!(open(Path::new("")).is_ok());
        for bad in ["a/link", "a/link/x", "up", "a/file"] {
            match open(Path::new(bad)) {
                Err(TargetError::NotADirectory { path, .. }) => {
                    assert!(path.ends_with(bad.split('/').take(2).collect::<PathBuf>()))
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn openat2_and_the_fallback_walk_refuse_symlinks_and_files() {
        let (_t, root) = setup();
        beneath_refusals(|p| root.open_beneath_openat2(p));
        beneath_refusals(|p| root.open_beneath_walk(p));
        for bad in ["..", "a/../..", "/etc"] {
            assert!(matches!(
                root.open_beneath(Path::new(bad)),
                Err(TargetError::BadPath { .. })
            ));
        }
    }

    #[test]
    fn create_dir_refuses_a_planted_symlink_and_creates_nothing_outside() {
        let (t, root) = setup();
        let a = root.open_dir(OsStr::new("a")).unwrap();
        let err = a.create_dir(OsStr::new("link"), 0o700).unwrap_err();
        assert!(err.to_string().contains("is a symlink"), "{err}");
        assert!(a.create_file(OsStr::new("link"), 0o600).is_err());
        assert!(a.create_dir(OsStr::new("x/y"), 0o700).is_err());
        let (_, created) = a.create_dir(OsStr::new("b"), 0o700).unwrap();
        assert!(!created);
        assert_eq!(
            std::fs::read_dir(t.path().join("outside")).unwrap().count(),
            0
        );
    }

    #[test]
    fn rename_replaces_a_symlink_without_following_it() {
        let (t, root) = setup();
        let a = root.open_dir(OsStr::new("a")).unwrap();
        let f = a.create_file(OsStr::new("tmp"), 0o600).unwrap();
        apply_metadata(
            f.as_fd(),
            &Metadata {
                mode: 0o640,
                uid: 0,
                gid: 0,
                mtime_ns: 1_500_000_000_123_456_789,
            },
        )
        .unwrap();
        a.rename(OsStr::new("tmp"), &a, OsStr::new("link")).unwrap();
        let m = std::fs::symlink_metadata(t.path().join("root/a/link")).unwrap();
        assert!(m.is_file());
        use std::os::unix::fs::MetadataExt;
        assert_eq!((m.mode() & 0o7777, m.mtime()), (0o640, 1_500_000_000));
        assert_eq!(
            std::fs::read_dir(t.path().join("outside")).unwrap().count(),
            0
        );
        let err = a.rename(OsStr::new("file"), &a, OsStr::new("b"));
        assert!(matches!(err, Err(TargetError::DirectoryInTheWay { .. })));
    }

    #[test]
    fn a_handle_keeps_its_folder_when_the_path_is_swapped_for_a_symlink() {
        let (t, root) = setup();
        let b = root.open_beneath(Path::new("a/b")).unwrap();
        std::fs::rename(t.path().join("root/a/b"), t.path().join("root/moved")).unwrap();
        symlink(t.path().join("outside"), t.path().join("root/a/b")).unwrap();
        b.create_file(OsStr::new("f"), 0o600).unwrap();
        b.mkfifo(OsStr::new("p"), 0o600).unwrap();
        let fifo = b.open_fifo(OsStr::new("p")).unwrap();
        let m = Metadata {
            mode: 0o640,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
        };
        apply_metadata(fifo.as_fd(), &m).unwrap();
        assert!(b.open_fifo(OsStr::new("f")).is_err());
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let p = std::fs::symlink_metadata(t.path().join("root/moved/p")).unwrap();
        assert!(p.file_type().is_fifo());
        assert_eq!(p.mode() & 0o7777, 0o640);
        b.hard_link(OsStr::new("f"), &b, OsStr::new("g")).unwrap();
        b.symlink(b"/etc", OsStr::new("l")).unwrap();
        assert!(t.path().join("root/moved/f").is_file());
        assert!(t.path().join("root/moved/g").is_file());
        assert_eq!(
            std::fs::read_dir(t.path().join("outside")).unwrap().count(),
            0
        );
        let again = root.open_beneath(Path::new("a/b"));
        assert!(matches!(again, Err(TargetError::NotADirectory { .. })));
    }
}
