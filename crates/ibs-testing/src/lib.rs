//! Dev-only test support shared by the crates' test suites (never a normal dependency).
//!
//! - [`realistic_tree`] builds the kind of tree a real host has and toy fixtures lack: relative,
//!   absolute and dangling symlinks, empty folders, hard links, a sparse file, 0600/0700 modes,
//!   255-byte and non-UTF-8 names, a FIFO, a socket, extended attributes and POSIX ACLs, and as root
//!   also foreign owners, a file capability, an SELinux label, `trusted.*` attributes and device
//!   nodes.
//! - [`snapshot`] and [`assert_restored`] compare a restored tree with its source: kinds, contents,
//!   sparseness, link targets, modes, owners, mtimes (to the nanosecond), hard-link groups, device
//!   numbers and every extended attribute.
//!
//! - [`db`]: the PostgreSQL, MariaDB and Redis servers of the tests, their clients, and the
//!   scratch-database guards [`db::PgDrop`] and [`db::MyDrop`].
//! - [`manifest`]: a snapshot as JSON (the committed expected contents of a fixture) and the
//!   comparison of a restored tree with it.
//! - [`samba`]: the private Samba servers (`scripts/samba-test-server.sh`) and share regions.
//! - [`rgw`] (feature `rgw`): the Ceph RADOS Gateway (`scripts/ceph-rgw.sh`) and fresh buckets.
//!
//! The comparison is written independently of the engine (its own walk and xattr reads), so it is
//! an oracle for the engine's fidelity, not a copy of it.

pub mod db;
pub mod manifest;
#[cfg(feature = "rgw")]
pub mod rgw;
pub mod samba;
mod snapshot;
mod tree;

pub use snapshot::{assert_restored, counts, snapshot, Counts, Kind, Node, Snapshot};
pub use tree::{
    pseudo_random, realistic_tree, set_xattr, Realistic, CAP_NET_RAW_EP, SELINUX_LABEL,
};

/// The workspace root (where `scripts/` lives), found from this crate's manifest folder.
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A TCP port on 127.0.0.1 free at the time of asking (for private test servers and daemons).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real copy of a folder of folders and regular files (no links kept), created as needed.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}
