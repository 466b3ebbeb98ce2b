//! Regular files' bytes: for a backup, how a source's files and folders are opened
//! ([`open_source`], [`open_folder`]), a reader that skips a sparse file's holes instead of asking
//! the kernel for their zeros, and the read-ahead hint the walker gives for files about to be
//! read; for a restore, a writer that leaves all-zero blocks as holes.
//!
//! Invariants:
//! - [`HoleSkipping`] yields exactly the bytes `read` would (a hole reads as zeros), so chunk
//!   boundaries and ids do not depend on how a file is stored;
//! - a backup changes nothing in its source: files and folders are opened with `O_NOATIME`
//!   wherever the kernel allows it (the owner, or `CAP_FOWNER`), so reading them leaves their
//!   access times as they were, and never through a symlink in the last component.

use nix::unistd::Whence;
use rustix::fs::{Mode, OFlags, CWD};
use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// At most this many bytes of a file are hinted ahead (the kernel's own read-ahead takes over
/// once the file is read sequentially).
const HINT_MAX: u64 = 4 << 20;

/// Opens `name` relative to `dir` with `flags`, never following a symlink in its last component,
/// and with `O_NOATIME` where the kernel allows it (`EPERM` for it: the entry is neither owned by
/// the process nor open to it by `CAP_FOWNER`; opened again without it).
fn open_untouched(dir: BorrowedFd<'_>, name: &OsStr, flags: OFlags) -> std::io::Result<OwnedFd> {
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(dir, name, flags | OFlags::NOATIME, Mode::empty()) {
        Err(rustix::io::Errno::PERM) => rustix::fs::openat(dir, name, flags, Mode::empty()),
        r => r,
    }
    .map_err(|e| not_followed(e.into()))
}

/// Opens a source's regular file to read it for a backup (see `open_untouched`): a file swapped
/// for a symlink after the walk stat'ed it is refused, not followed. `path` itself is resolved as
/// given (a source root is the operator's choice).
pub fn open_source(path: &Path) -> std::io::Result<File> {
    open_source_at(CWD, path.as_os_str())
}

/// [`open_source`] for the entry `name` of the open folder `dir`: reached only through that folder.
pub fn open_source_at(dir: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<File> {
    open_untouched(dir, name, OFlags::RDONLY).map(File::from)
}

/// Opens a source's folder to list it, on [`open_source`]'s terms (listing a folder updates its
/// access time as reading a file does).
pub fn open_folder(path: &Path) -> std::io::Result<OwnedFd> {
    open_folder_at(CWD, path.as_os_str())
}

/// [`open_folder`] for the entry `name` of the open folder `dir`.
pub fn open_folder_at(dir: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<OwnedFd> {
    open_untouched(dir, name, OFlags::RDONLY | OFlags::DIRECTORY).map_err(|e| {
        // `O_DIRECTORY` answers a symlink (not followed) or a file with ENOTDIR.
        if e.raw_os_error() == Some(libc::ENOTDIR) {
            std::io::Error::other(
                "no longer a folder: replaced while the backup walked it (not followed)",
            )
        } else {
            e
        }
    })
}

/// `ELOOP` from an `O_NOFOLLOW` open: the entry is a symlink now, though the walk found a file or
/// a folder there.
fn not_followed(e: std::io::Error) -> std::io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        std::io::Error::other("replaced by a symlink while the backup walked it (not followed)")
    } else {
        e
    }
}

/// Asks the kernel to start reading the first bytes of `f` now (best effort; errors are ignored:
/// the hint only changes when the bytes arrive, never what they are).
pub fn prefetch(f: &File, len: u64) {
    let len = len.min(HINT_MAX) as libc::off_t;
    if len > 0 {
        let _ = nix::fcntl::posix_fadvise(
            f.as_raw_fd(),
            0,
            len,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
        );
    }
}

/// Reads a file from its start, producing zeros for holes without reading them
/// (`lseek(SEEK_DATA/SEEK_HOLE)`; on file systems without hole reporting the whole file is data).
pub struct HoleSkipping<'a> {
    file: &'a File,
    pos: u64,
    /// `pos..data_end` is data (read from the file); `None` until the next region is looked up.
    data_end: Option<u64>,
    /// `pos..hole_end` is a hole (zeros).
    hole_end: u64,
}

impl<'a> HoleSkipping<'a> {
    pub fn new(file: &'a File) -> Self {
        HoleSkipping {
            file,
            pos: 0,
            data_end: None,
            hole_end: 0,
        }
    }

    /// `lseek` from `pos` (the file offset it moves is unused: reads are `pread`).
    fn seek(&self, whence: Whence) -> std::io::Result<Option<u64>> {
        match nix::unistd::lseek(self.file.as_raw_fd(), self.pos as libc::off_t, whence) {
            Ok(r) => Ok(Some(r as u64)),
            // ENXIO: no data (SEEK_DATA) at or after pos: a trailing hole, or the end.
            Err(nix::errno::Errno::ENXIO) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Finds the region at `pos`: either data up to `data_end`, or a hole up to `hole_end`.
    fn locate(&mut self) -> std::io::Result<()> {
        match self.seek(Whence::SeekData)? {
            Some(d) if d == self.pos => {
                let end = self.seek(Whence::SeekHole)?.unwrap_or(u64::MAX);
                self.data_end = Some(end.max(self.pos + 1));
            }
            Some(d) => {
                self.data_end = None;
                self.hole_end = d;
            }
            None => {
                // A trailing hole runs to the current end of the file.
                let size = self.file.metadata()?.len();
                self.data_end = None;
                self.hole_end = size;
            }
        }
        Ok(())
    }
}

impl Read for HoleSkipping<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(end) = self.data_end {
                if self.pos < end {
                    let want = buf
                        .len()
                        .min((end - self.pos).min(usize::MAX as u64) as usize);
                    let n = self.file.read_at(&mut buf[..want], self.pos)?;
                    if n == 0 {
                        // The file shrank while it was read: end here (the caller sees the size
                        // differ from the one it stat'ed and records the file as changed).
                        return Ok(0);
                    }
                    self.pos += n as u64;
                    return Ok(n);
                }
                self.data_end = None;
                self.hole_end = self.pos;
            }
            if self.pos < self.hole_end {
                let n = buf
                    .len()
                    .min((self.hole_end - self.pos).min(usize::MAX as u64) as usize);
                buf[..n].fill(0);
                self.pos += n as u64;
                return Ok(n);
            }
            let size = self.file.metadata()?.len();
            if self.pos >= size {
                return Ok(0);
            }
            self.locate()?;
            if self.data_end.is_none() && self.hole_end <= self.pos {
                return Ok(0);
            }
        }
    }
}

/// Runs of data at least this long go past the page cache when the caller has a direct descriptor.
const DIRECT_RUN_MIN: usize = 64 << 10;

/// Writes `data` at `offset` of `f`, skipping 4 KiB blocks that are all zero so they stay holes.
/// With `direct` (an `O_DIRECT` descriptor of the same file, [`ibs_storage::direct::reopen`]),
/// the whole blocks of each long run of data are written through it, past the page cache; the
/// unaligned head and tail of a run, and everything if the kernel refuses, go through `f`.
/// Returns where the last write ended (`offset` if all of `data` was zeros): a file that was
/// shorter than that is now exactly that long.
pub(crate) fn write_sparse(
    f: &File,
    direct: Option<&File>,
    offset: u64,
    data: &[u8],
) -> std::io::Result<u64> {
    const BLOCK: usize = 4096;
    let mut written_to = offset;
    let mut i = 0;
    while i < data.len() {
        let end = (i + BLOCK).min(data.len());
        if data[i..end].iter().all(|b| *b == 0) {
            i = end;
            continue;
        }
        let mut j = end;
        while j < data.len() {
            let next = (j + BLOCK).min(data.len());
            if data[j..next].iter().all(|b| *b == 0) {
                break;
            }
            j = next;
        }
        write_run(f, direct, offset + i as u64, &data[i..j])?;
        written_to = offset + j as u64;
        i = j;
    }
    Ok(written_to)
}

fn write_run(f: &File, direct: Option<&File>, at: u64, run: &[u8]) -> std::io::Result<()> {
    use ibs_storage::direct::{write_at, ALIGN};
    let Some(d) = direct.filter(|_| run.len() >= DIRECT_RUN_MIN) else {
        return f.write_all_at(run, at);
    };
    let head = ((ALIGN as u64 - at % ALIGN as u64) % ALIGN as u64) as usize;
    f.write_all_at(&run[..head], at)?;
    let done = head + write_at(d, at + head as u64, &run[head..], 0)?;
    f.write_all_at(&run[done..], at + done as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    fn read_all(f: &File, step: usize) -> Vec<u8> {
        let mut r = HoleSkipping::new(f);
        let mut out = Vec::new();
        let mut buf = vec![0xAAu8; step];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn a_symlink_is_never_opened_as_a_source_file_or_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), b"not to be read").unwrap();
        std::fs::create_dir(dir.path().join("folder")).unwrap();
        std::os::unix::fs::symlink("secret", dir.path().join("file-link")).unwrap();
        std::os::unix::fs::symlink("folder", dir.path().join("folder-link")).unwrap();
        let e = open_source(&dir.path().join("file-link")).unwrap_err();
        assert!(e.to_string().contains("replaced by a symlink"), "{e}");
        let e = open_folder(&dir.path().join("folder-link")).unwrap_err();
        assert!(e.to_string().contains("no longer a folder"), "{e}");
        // What they refuse is only the symlink: the file and the folder open.
        assert!(open_source(&dir.path().join("secret")).is_ok());
        assert!(open_folder(&dir.path().join("folder")).is_ok());
        assert_eq!(
            open_source(&dir.path().join("absent")).unwrap_err().kind(),
            std::io::ErrorKind::NotFound
        );
    }

    #[test]
    fn holes_read_as_zeros_and_data_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sparse");
        let mut f = File::create(&p).unwrap();
        // hole 0..1 MiB, data, hole, data, trailing hole to 5 MiB.
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(&[7u8; 10_000]).unwrap();
        f.seek(SeekFrom::Start(3 << 20)).unwrap();
        f.write_all(b"tail data").unwrap();
        f.set_len(5 << 20).unwrap();
        drop(f);
        let expected = std::fs::read(&p).unwrap();
        let f = File::open(&p).unwrap();
        for step in [1, 4095, 65_536, 1 << 20, 3 << 20] {
            assert_eq!(read_all(&f, step), expected, "step {step}");
        }
    }

    #[test]
    fn a_dense_and_an_empty_file_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dense");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        assert_eq!(read_all(&File::open(&p).unwrap(), 8192), data);
        let e = dir.path().join("empty");
        std::fs::write(&e, b"").unwrap();
        assert!(read_all(&File::open(&e).unwrap(), 8192).is_empty());
    }

    #[test]
    fn direct_runs_at_unaligned_offsets_with_holes_write_the_same_bytes_as_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        // Data, a zero run of whole blocks (a hole), data; pieces start at unaligned offsets and
        // meet inside a block, as the pieces of a split file restored by two workers do.
        let mut data: Vec<u8> = (0..(3 << 20) + 5000).map(|i| (i % 251 + 1) as u8).collect();
        data[(1 << 20) + 10..(2 << 20) + 3].fill(0);
        let cut = 1_500_001;
        let (a, b) = (dir.path().join("direct"), dir.path().join("buffered"));
        let f = File::create(&a).unwrap();
        let d = ibs_storage::direct::reopen(&f).expect("a file system with O_DIRECT");
        std::thread::scope(|s| {
            s.spawn(|| write_sparse(&f, Some(&d), 777 + cut as u64, &data[cut..]).unwrap());
            s.spawn(|| write_sparse(&f, Some(&d), 777, &data[..cut]).unwrap());
        });
        f.set_len(777 + data.len() as u64).unwrap();
        let g = File::create(&b).unwrap();
        write_sparse(&g, None, 777, &data).unwrap();
        g.set_len(777 + data.len() as u64).unwrap();
        let got = std::fs::read(&a).unwrap();
        assert!(
            got[777..] == data[..],
            "the direct writes read back exactly"
        );
        assert!(got == std::fs::read(&b).unwrap());
        use std::os::unix::fs::MetadataExt;
        let allocated = f.metadata().unwrap().blocks() * 512;
        assert!(
            allocated < got.len() as u64 - (1 << 20) + (64 << 10),
            "the zero run is a hole: {allocated}"
        );
    }

    #[test]
    fn write_sparse_reports_where_its_last_write_ended() {
        let dir = tempfile::tempdir().unwrap();
        let f = File::create(dir.path().join("f")).unwrap();
        let mut data = vec![5u8; 10_000];
        assert_eq!(write_sparse(&f, None, 100, &data).unwrap(), 10_100);
        assert_eq!(
            f.metadata().unwrap().len(),
            10_100,
            "the file reached the end"
        );
        // A trailing all-zero block is a hole: the write ends before it, the file is short.
        data[8192..].fill(0);
        let g = File::create(dir.path().join("g")).unwrap();
        assert_eq!(write_sparse(&g, None, 0, &data).unwrap(), 8192);
        assert_eq!(g.metadata().unwrap().len(), 8192);
        let h = File::create(dir.path().join("h")).unwrap();
        assert_eq!(write_sparse(&h, None, 42, &[0u8; 5000]).unwrap(), 42);
    }
}
