//! `ibs repo mount` (issue 17 "what to add" 1, ADR 0033), run as an operator runs it: the
//! realistic tree (symlinks of every sort, hard links, FIFOs, devices, xattrs and ACLs, a sparse
//! file, names that are not UTF-8) plus nested folders holding a file of many chunks is backed up
//! twice, mounted, and every entry under the mount is compared with the source: type, permission
//! bits, owner, mtime to the nanosecond, size, content, link targets, device numbers, hard-link
//! groups and extended attributes. Reads at offsets that straddle chunks are compared too; writes,
//! creates, unlinks and renames must fail with EROFS; SIGTERM must unmount and leave the mount
//! point empty; a busy mount point is reported and stays served until it is free.
//!
//! Needs `/dev/fuse` and Debian's `fuse3` (`fusermount3`; scripts/ensure-deps.sh installs it).
//! Where either is missing the tests fail saying so: they never skip.

mod common;

use common::*;
use ibs_testing::{snapshot, Kind, Snapshot};
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Fails the test, naming what is missing, unless FUSE can be used here.
fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: `ibs repo mount` cannot be tested here (load the fuse module, or \
         give the container the device)"
    );
    let found = Command::new("fusermount3").arg("-V").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "fusermount3 is missing: install Debian's fuse3 (scripts/ensure-deps.sh does)"
    );
}

fn is_mounted(mp: &Path) -> bool {
    let canon = mp.canonicalize().unwrap_or_else(|_| mp.to_path_buf());
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(&*canon.to_string_lossy()))
}

/// Waits (bounded) until `cond` holds; panics with `what` otherwise.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running `ibs repo mount`, its stderr lines forwarded to a channel.
struct Mount {
    child: Child,
    mp: PathBuf,
    stderr: mpsc::Receiver<String>,
}

impl Mount {
    /// Starts the mount (the .pfx password from a file, never argv) and waits until it is live.
    fn start(fx: &Fx, cert: &Cert, mp: &Path) -> Mount {
        let pw = fx.path("pfx-password");
        std::fs::write(&pw, PASSWORD).unwrap();
        let mut child = fx
            .repo_cmd("mount")
            .arg(mp)
            .arg("--pfx")
            .arg(&cert.pfx)
            .arg("--pfx-password-file")
            .arg(&pw)
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut m = Mount {
            child,
            mp: mp.to_path_buf(),
            stderr: rx,
        };
        wait_for("the mount to appear", || {
            if let Some(st) = m.child.try_wait().unwrap() {
                let err: Vec<String> = m.stderr.try_iter().collect();
                panic!("ibs repo mount exited {st}: {}", err.join("\n"));
            }
            is_mounted(mp)
        });
        m
    }

    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Waits for a stderr line containing `needle`.
    fn stderr_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(e) => panic!("no stderr line with {needle:?}: {e}"),
            }
        }
    }

    /// Sends SIGTERM and waits for a clean exit (code 0); the mount point must be empty again.
    fn stop(mut self) {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            assert!(Instant::now() < deadline, "ibs repo mount ignores SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        let err: Vec<String> = self.stderr.try_iter().collect();
        assert_eq!(status.code(), Some(0), "stderr: {}", err.join("\n"));
        assert!(!is_mounted(&self.mp), "still mounted after SIGTERM");
        let left: Vec<_> = std::fs::read_dir(&self.mp).unwrap().collect();
        assert!(left.is_empty(), "mount point not empty: {left:?}");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // A failed assertion must not leave a mount behind.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if is_mounted(&self.mp) {
            let _ = Command::new("umount").arg("-l").arg(&self.mp).status();
        }
    }
}

/// A snapshot as a mount can show it: sockets are not backed up, and a sparse file's holes are
/// not visible through FUSE (its allocation is not recorded), so sparseness is left out.
fn comparable(mut s: Snapshot) -> Snapshot {
    s.retain(|_, n| n.kind != Kind::Socket);
    for n in s.values_mut() {
        n.sparse = false;
    }
    s
}

fn assert_same(expected: &Snapshot, got: &Snapshot, what: &str) {
    let mut diffs = Vec::new();
    for (k, v) in expected {
        match got.get(k) {
            None => diffs.push(format!("missing {:?}", String::from_utf8_lossy(k))),
            Some(g) if g != v => diffs.push(format!(
                "{:?}:\n  source {v:?}\n  mount  {g:?}",
                String::from_utf8_lossy(k)
            )),
            _ => {}
        }
    }
    for k in got.keys().filter(|k| !expected.contains_key(*k)) {
        diffs.push(format!("unexpected {:?}", String::from_utf8_lossy(k)));
    }
    assert!(
        diffs.is_empty(),
        "{what}: {} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

fn errno(r: std::io::Result<impl Sized>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

const EROFS: i32 = 30;

#[test]
fn every_backup_is_a_read_only_folder_equal_to_its_source() {
    require_fuse();
    let fx = Fx::new();
    let cert = shared_cert(0);
    fx.init_cert(&cert.cer);
    let src = fx.path("src");
    ibs_testing::realistic_tree(&src);
    // Nested folders and a file of many chunks (chunks average 256 KiB).
    let nested = src.join("nested/a/b/c");
    std::fs::create_dir_all(&nested).unwrap();
    let big = ibs_testing::pseudo_random(42, 6 << 20);
    write(&nested.join("big.bin"), &big);
    let first_snapshot = comparable(snapshot(&src));
    let a = fx.backup(&[("data", &src)]);
    next_second();
    write(
        &src.join("docs/readme.txt"),
        b"changed after the first backup\n",
    );
    let second_snapshot = comparable(snapshot(&src));
    let b = fx.backup(&[("data", &src)]);

    let mp = fx.path("mnt");
    std::fs::create_dir(&mp).unwrap();
    let m = Mount::start(&fx, cert, &mp);

    // The top: one folder per backup, and `latest` pointing at the newer one.
    let mut top: Vec<String> = std::fs::read_dir(&mp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, [a.clone(), b.clone(), "latest".to_string()]);
    assert_eq!(
        std::fs::read_link(mp.join("latest")).unwrap(),
        Path::new(&b)
    );

    // Each backup shows the source as it was when it was taken, entry by entry.
    assert_same(
        &first_snapshot,
        &snapshot(&mp.join(&a).join("data")),
        "first backup",
    );
    assert_same(
        &second_snapshot,
        &snapshot(&mp.join("latest/data")),
        "latest backup",
    );
    let names = std::fs::read_dir(mp.join("latest/data/names")).unwrap();
    assert!(
        names
            .map(|e| e.unwrap().file_name())
            .any(|n| n.as_bytes() == b"caf\xe9.txt"),
        "the non-UTF-8 name is listed byte for byte"
    );

    // Reads at any offset, across chunk boundaries, in any order.
    let f = std::fs::File::open(mp.join("latest/data/nested/a/b/c/big.bin")).unwrap();
    for (off, len) in [
        (5 << 20, 1 << 20),
        (0, 10),
        ((1 << 20) - 7, 300_000),
        (big.len() - 100, 100),
        (3 << 20, 2 << 20),
    ] {
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, off as u64).unwrap();
        assert!(buf == big[off..off + len], "bytes at {off}+{len} differ");
    }
    let mut past = [0u8; 16];
    assert_eq!(f.read_at(&mut past, big.len() as u64).unwrap(), 0);
    drop(f);

    // Nothing can be changed.
    let d = mp.join("latest/data");
    assert_eq!(errno(std::fs::write(d.join("new.txt"), b"x")), Some(EROFS));
    assert_eq!(
        errno(
            std::fs::OpenOptions::new()
                .append(true)
                .open(d.join("docs/readme.txt"))
        ),
        Some(EROFS)
    );
    assert_eq!(
        errno(std::fs::remove_file(d.join("docs/readme.txt"))),
        Some(EROFS)
    );
    assert_eq!(errno(std::fs::create_dir(d.join("newdir"))), Some(EROFS));
    assert_eq!(
        errno(std::fs::rename(d.join("docs"), d.join("docs2"))),
        Some(EROFS)
    );
    assert_eq!(
        errno(std::fs::set_permissions(
            d.join("docs/readme.txt"),
            std::os::unix::fs::PermissionsExt::from_mode(0o777)
        )),
        Some(EROFS)
    );
    assert_eq!(errno(std::fs::remove_dir_all(mp.join(&a))), Some(EROFS));

    m.stop();
    // The source is untouched by all of this.
    assert_same(&second_snapshot, &comparable(snapshot(&src)), "source");
}

#[test]
fn a_busy_mount_point_stays_mounted_until_it_is_free() {
    require_fuse();
    let fx = Fx::new();
    let cert = shared_cert(0);
    fx.init_cert(&cert.cer);
    let src = fx.path("src");
    std::fs::create_dir_all(src.join("dir")).unwrap();
    write(&src.join("dir/file.txt"), b"kept open\n");
    fx.backup(&[("data", &src)]);
    let mp = fx.path("mnt");
    std::fs::create_dir(&mp).unwrap();
    let m = Mount::start(&fx, cert, &mp);
    let open = std::fs::File::open(mp.join("latest/data/dir/file.txt")).unwrap();
    m.signal("TERM");
    let line = m.stderr_line("busy");
    assert!(line.contains("still mounted"), "{line}");
    assert!(is_mounted(&mp), "a busy mount must stay");
    let mut buf = String::new();
    std::io::Read::read_to_string(&mut &open, &mut buf).unwrap();
    assert_eq!(buf, "kept open\n", "and stay served");
    drop(open);
    m.stop();
}

#[test]
fn a_mount_point_that_is_missing_or_not_empty_is_refused() {
    require_fuse();
    let fx = Fx::new();
    let cert = shared_cert(0);
    fx.init_cert(&cert.cer);
    let pfx = |c: Ibs| c.arg("--pfx").arg(&cert.pfx).pw();
    pfx(fx.repo_cmd("mount").arg(fx.path("nowhere")))
        .run()
        .code(2)
        .stderr_has("mount point");
    let full = fx.path("full");
    std::fs::create_dir(&full).unwrap();
    write(&full.join("keep.txt"), b"x");
    pfx(fx.repo_cmd("mount").arg(&full))
        .run()
        .code(2)
        .stderr_has("not empty");
    // Without the .pfx nothing is mounted (names are encrypted with contents).
    let empty = fx.path("empty");
    std::fs::create_dir(&empty).unwrap();
    fx.repo_cmd("mount").arg(&empty).run().code(5);
    assert!(!is_mounted(&empty));
}
