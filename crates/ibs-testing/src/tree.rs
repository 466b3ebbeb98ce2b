//! The realistic source tree. Every entry gets a distinct mtime with a nanosecond part, set last
//! (folders deepest first), so a restore that loses or rounds a time is caught.
//!
//! Layout (relative to the root; `[root]` marks what only a root caller gets):
//! ```text
//! docs/readme.txt, docs/report.bin (300 KiB, several chunks)
//! secret/ 0700, secret/key.pem 0600, secret/empty 0600 (0 bytes)
//! scripts/run.sh 0755, scripts/sticky/ 1777
//! links/relative -> ../docs/readme.txt      links/absolute -> /etc/hostname
//! links/dangling -> ../nowhere/at/all       links/to-dir -> ../docs
//! empty/ and empty/deeper/ 0700 (empty folders)
//! hard/first, hard/second, other/third      one inode, three names
//! sparse/disk.img                           16 MiB: data at 0 and at 12 MiB, holes between
//! names/<255-byte name>, names/caf\xe9.txt, names/\xff\xfe-dir/inner.txt, names/"line\nbreak"
//! run/fifo 0600 (FIFO), run/socket (a unix socket: not restorable, reported skipped)
//! attrs/noted (user.note=hello, user.empty=""), attrs/acl (an access ACL),
//! attrs/acl-dir/ (a default ACL) and attrs/acl-dir/inherited (created under it)
//! [root] attrs/ping (security.capability cap_net_raw+ep), attrs/labelled (security.selinux),
//!        attrs/trusted (trusted.ibs), links/relative (trusted.link on the symlink itself),
//!        owned/ 1001:1001 and owned/by-1000 1000:1000, dev/null-like (char 1:3), dev/loop-like
//!        (block 7:200)
//! ```

use rustix::fs::{AtFlags, FileType, Mode, Timespec, Timestamps, XattrFlags, CWD};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The v2 `security.capability` value for `cap_net_raw+ep`, as `setcap cap_net_raw+ep` writes it.
pub const CAP_NET_RAW_EP: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, // VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE
    0x00, 0x20, 0x00, 0x00, // permitted, low word: bit 13 (CAP_NET_RAW)
    0x00, 0x00, 0x00, 0x00, // inheritable, low word
    0x00, 0x00, 0x00, 0x00, // permitted, high word
    0x00, 0x00, 0x00, 0x00, // inheritable, high word
];

/// An SELinux label, stored raw (this kernel has no SELinux; the file system keeps the bytes).
pub const SELINUX_LABEL: &[u8] = b"system_u:object_r:etc_t:s0\0";

/// A built tree.
pub struct Realistic {
    pub root: PathBuf,
    /// Whether the root-only entries were made.
    pub privileged: bool,
}

impl Realistic {
    pub fn path(&self, rel: impl AsRef<[u8]>) -> PathBuf {
        self.root.join(std::ffi::OsStr::from_bytes(rel.as_ref()))
    }
}

/// Deterministic pseudo-random bytes (xorshift; incompressible enough to make real chunks).
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn fail(what: &str, p: &Path, e: impl std::fmt::Display) -> ! {
    panic!("realistic tree: {what} {}: {e}", p.display())
}

fn write(p: &Path, bytes: &[u8], mode: u32) {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).unwrap_or_else(|e| fail("mkdir", d, e));
    }
    std::fs::write(p, bytes).unwrap_or_else(|e| fail("write", p, e));
    chmod(p, mode);
}

fn mkdir(p: &Path, mode: u32) {
    std::fs::create_dir_all(p).unwrap_or_else(|e| fail("mkdir", p, e));
    chmod(p, mode);
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| fail("chmod", p, e));
}

fn symlink(target: &str, p: &Path) {
    std::os::unix::fs::symlink(target, p).unwrap_or_else(|e| fail("symlink", p, e));
}

/// Sets extended attribute `name` on `p` itself (not a symlink's target); panics on failure.
pub fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(p, name, value, XattrFlags::empty())
        .unwrap_or_else(|e| fail(&format!("setxattr {name} on"), p, e));
}

/// A POSIX ACL in the kernel's xattr form (version 2): `(tag, perm, id)` entries.
fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

const UNDEFINED: u32 = u32::MAX;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

/// Builds the realistic tree under `root` (created if missing). Panics with the path and the
/// reason if any part cannot be made: a test never runs on less than it claims.
pub fn realistic_tree(root: &Path) -> Realistic {
    let privileged = rustix::process::geteuid().is_root();
    mkdir(root, 0o755);
    let p = |rel: &str| root.join(rel);

    write(
        &p("docs/readme.txt"),
        &b"read me, then restore me\n".repeat(40),
        0o644,
    );
    write(&p("docs/report.bin"), &pseudo_random(7, 300 << 10), 0o644);
    mkdir(&p("secret"), 0o700);
    write(
        &p("secret/key.pem"),
        b"-----BEGIN PRIVATE KEY-----\n",
        0o600,
    );
    write(&p("secret/empty"), b"", 0o600);
    write(&p("scripts/run.sh"), b"#!/bin/sh\necho run\n", 0o755);
    mkdir(&p("scripts/sticky"), 0o1777);

    mkdir(&p("links"), 0o755);
    symlink("../docs/readme.txt", &p("links/relative"));
    symlink("/etc/hostname", &p("links/absolute"));
    symlink("../nowhere/at/all", &p("links/dangling"));
    symlink("../docs", &p("links/to-dir"));

    mkdir(&p("empty/deeper"), 0o700);

    write(&p("hard/first"), &pseudo_random(8, 50_000), 0o640);
    std::fs::hard_link(p("hard/first"), p("hard/second"))
        .unwrap_or_else(|e| fail("link", &p("hard/second"), e));
    mkdir(&p("other"), 0o755);
    std::fs::hard_link(p("hard/first"), p("other/third"))
        .unwrap_or_else(|e| fail("link", &p("other/third"), e));

    let img = p("sparse/disk.img");
    write(&img, &pseudo_random(9, 100_000), 0o644);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&img)
            .unwrap_or_else(|e| fail("open", &img, e));
        f.write_all_at(&pseudo_random(10, 70_000), 12 << 20)
            .unwrap_or_else(|e| fail("write", &img, e));
        f.set_len(16 << 20)
            .unwrap_or_else(|e| fail("truncate", &img, e));
    }

    let names = p("names");
    mkdir(&names, 0o755);
    let long = format!("{}.txt", "n".repeat(251));
    write(&names.join(&long), b"a 255-byte name", 0o644);
    let latin1 = names.join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt"));
    write(&latin1, b"not UTF-8", 0o644);
    let odd_dir = names.join(std::ffi::OsStr::from_bytes(b"\xff\xfe-dir"));
    write(
        &odd_dir.join("inner.txt"),
        b"below a non-UTF-8 folder",
        0o600,
    );
    write(&names.join("line\nbreak"), b"a newline in a name", 0o644);

    mkdir(&p("run"), 0o755);
    rustix::fs::mknodat(
        CWD,
        p("run/fifo"),
        FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap_or_else(|e| fail("mkfifo", &p("run/fifo"), e));
    // The socket file stays after the listener is dropped.
    drop(
        std::os::unix::net::UnixListener::bind(p("run/socket"))
            .unwrap_or_else(|e| fail("bind", &p("run/socket"), e)),
    );

    write(&p("attrs/noted"), b"a file with notes", 0o644);
    set_xattr(&p("attrs/noted"), "user.note", b"hello");
    set_xattr(&p("attrs/noted"), "user.empty", b"");
    write(&p("attrs/acl"), b"a file with an access ACL", 0o640);
    set_xattr(
        &p("attrs/acl"),
        "system.posix_acl_access",
        &acl(&[
            (USER_OBJ, 6, UNDEFINED),
            (USER, 4, 1234),
            (GROUP_OBJ, 4, UNDEFINED),
            (MASK, 4, UNDEFINED),
            (OTHER, 0, UNDEFINED),
        ]),
    );
    mkdir(&p("attrs/acl-dir"), 0o750);
    set_xattr(
        &p("attrs/acl-dir"),
        "system.posix_acl_default",
        &acl(&[
            (USER_OBJ, 7, UNDEFINED),
            (USER, 5, 4321),
            (GROUP_OBJ, 5, UNDEFINED),
            (MASK, 5, UNDEFINED),
            (OTHER, 0, UNDEFINED),
        ]),
    );
    // Inherits an access ACL from the folder's default ACL.
    write(&p("attrs/acl-dir/inherited"), b"inherited ACL", 0o640);

    if privileged {
        let ping = p("attrs/ping");
        write(&ping, &pseudo_random(11, 40_000), 0o755);
        set_xattr(&ping, "security.capability", &CAP_NET_RAW_EP);
        write(&p("attrs/labelled"), b"labelled", 0o644);
        set_xattr(&p("attrs/labelled"), "security.selinux", SELINUX_LABEL);
        write(&p("attrs/trusted"), b"trusted", 0o644);
        set_xattr(&p("attrs/trusted"), "trusted.ibs", b"only root sees this");
        set_xattr(&p("links/relative"), "trusted.link", b"on the link itself");
        write(&p("owned/by-1000"), b"someone else's", 0o640);
        rustix::fs::chown(
            p("owned/by-1000"),
            Some(rustix::fs::Uid::from_raw(1000)),
            Some(rustix::fs::Gid::from_raw(1000)),
        )
        .unwrap_or_else(|e| fail("chown", &p("owned/by-1000"), e));
        rustix::fs::chown(
            p("owned"),
            Some(rustix::fs::Uid::from_raw(1001)),
            Some(rustix::fs::Gid::from_raw(1001)),
        )
        .unwrap_or_else(|e| fail("chown", &p("owned"), e));
        mkdir(&p("dev"), 0o755);
        for (name, ft, dev) in [
            ("dev/null-like", FileType::CharacterDevice, (1, 3)),
            ("dev/loop-like", FileType::BlockDevice, (7, 200)),
        ] {
            rustix::fs::mknodat(
                CWD,
                p(name),
                ft,
                Mode::from_raw_mode(0o640),
                rustix::fs::makedev(dev.0, dev.1),
            )
            .unwrap_or_else(|e| fail("mknod", &p(name), e));
        }
    }

    set_times(root);
    Realistic {
        root: root.to_path_buf(),
        privileged,
    }
}

/// Gives every entry under `root` a distinct mtime (atime alike), children before their folder.
fn set_times(root: &Path) {
    let mut all = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        all.push(d.clone());
        let mut names: Vec<_> = std::fs::read_dir(&d)
            .unwrap_or_else(|e| fail("list", &d, e))
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for n in names {
            let m = std::fs::symlink_metadata(&n).unwrap_or_else(|e| fail("stat", &n, e));
            if m.is_dir() {
                stack.push(n);
            } else {
                all.push(n);
            }
        }
    }
    // Deepest paths last in `all` are not guaranteed: sort so children come before parents.
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in all.iter().enumerate() {
        let t = Timespec {
            tv_sec: 1_600_000_000 + 86_400 * i as i64,
            tv_nsec: 123_456_789 + i as i64,
        };
        let times = Timestamps {
            last_access: t,
            last_modification: t,
        };
        rustix::fs::utimensat(CWD, p, &times, AtFlags::SYMLINK_NOFOLLOW)
            .unwrap_or_else(|e| fail("utimensat", p, e));
    }
}
