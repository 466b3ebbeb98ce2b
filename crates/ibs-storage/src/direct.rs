//! Writing past the page cache (`O_DIRECT`), for bytes that will not be read again soon: packs a
//! backup stores in a local folder, large files a restore writes. Copying them into fresh
//! page-cache pages cost about 1.7 s of CPU per GiB on the benchmark machine (fresh pages are
//! expensive to touch in a virtual machine), the kernel's writeback threads more, and pushed the
//! host's useful cache out (ADR 0050).
//!
//! `O_DIRECT` wants the buffer address, the file offset and the length aligned to the device's
//! logical block. [`write_at`] copies the data through an aligned per-thread bounce buffer and
//! writes whole blocks only; the caller writes what is left (an unaligned head or tail) through
//! the page cache, which the kernel keeps coherent with the direct writes beside it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

/// The alignment assumed: the common logical block size. A device with larger blocks refuses the
/// writes (`EINVAL`), and the caller's page-cache fallback takes over.
pub const ALIGN: usize = 4096;
/// The bounce buffer, per writing thread.
const BOUNCE: usize = 1 << 20;

thread_local! {
    static BOUNCE_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Writes the largest whole-block prefix of `data` at `offset` (a multiple of [`ALIGN`]) to `f`,
/// which must be open with `O_DIRECT`, through the bounce buffer started `skew` bytes past an
/// aligned address (tests use 1 to make the kernel refuse). Returns how many bytes it wrote: it
/// stops, without error, at the first write the kernel refuses with `EINVAL` or answers short, and
/// the caller writes the rest through the page cache.
pub fn write_at(f: &File, offset: u64, data: &[u8], skew: usize) -> std::io::Result<usize> {
    if !offset.is_multiple_of(ALIGN as u64) {
        return Ok(0);
    }
    let bulk = data.len() / ALIGN * ALIGN;
    let mut done = 0;
    BOUNCE_BUF.with(|cell| {
        let mut bounce = cell.borrow_mut();
        if bounce.len() < BOUNCE + 2 * ALIGN {
            *bounce = vec![0; BOUNCE + 2 * ALIGN];
        }
        let at = bounce.as_ptr().align_offset(ALIGN) + skew % ALIGN;
        let buf = &mut bounce[at..at + BOUNCE];
        while done < bulk {
            let n = (bulk - done).min(BOUNCE);
            buf[..n].copy_from_slice(&data[done..done + n]);
            match f.write_at(&buf[..n], offset + done as u64) {
                // Only whole blocks keep the offset aligned.
                Ok(w) if w > 0 && w % ALIGN == 0 => done += w,
                Ok(w) => {
                    done += w;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    })
}

/// A second descriptor of `f`'s file, for writing with `O_DIRECT` (opened through
/// `/proc/self/fd`, which names the open file itself, never a path that could be swapped);
/// `None` where that is not possible (no `/proc`, or a file system without direct I/O).
pub fn reopen(f: &File) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(format!("/proc/self/fd/{}", f.as_raw_fd()))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_blocks_go_direct_and_the_rest_is_left_to_the_caller() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = File::create(&path).unwrap();
        let Some(d) = reopen(&f) else {
            panic!("this file system refuses O_DIRECT: the test needs one that allows it");
        };
        let data: Vec<u8> = (0..3 * BOUNCE + 777).map(|j| (j * 7) as u8).collect();
        let n = write_at(&d, ALIGN as u64, &data, 0).unwrap();
        assert_eq!(n, data.len() / ALIGN * ALIGN);
        f.write_all_at(&data[n..], (ALIGN + n) as u64).unwrap();
        f.write_all_at(&[9u8; ALIGN], 0).unwrap();
        let got = std::fs::read(&path).unwrap();
        assert!(got[..ALIGN] == [9u8; ALIGN]);
        assert!(got[ALIGN..] == data[..]);
        // An unaligned offset is never written directly.
        assert_eq!(write_at(&d, 100, &data, 0).unwrap(), 0);
    }

    #[test]
    fn a_refused_direct_write_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let f = File::create(dir.path().join("skewed")).unwrap();
        let d = reopen(&f).unwrap();
        // A misaligned buffer: the kernel answers O_DIRECT writes with EINVAL.
        assert_eq!(write_at(&d, 0, &[5u8; 3 * ALIGN], 1).unwrap(), 0);
        assert_eq!(f.metadata().unwrap().len(), 0);
    }
}
