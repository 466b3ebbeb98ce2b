//! Tree snapshots for byte-for-byte restore comparisons, listings and sizes of folders.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------------
// trees

/// What a restore must reproduce for one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Dir {
        mode: u32,
        mtime: i64,
    },
    File {
        mode: u32,
        mtime: i64,
        size: u64,
        hash: String,
    },
    Symlink {
        target: Vec<u8>,
    },
}

pub type Snapshot = BTreeMap<String, Node>;

pub fn hash_file(p: &Path) -> String {
    let mut h = blake3::Hasher::new();
    let mut f = std::fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    std::io::copy(&mut f, &mut h).unwrap();
    h.finalize().to_hex().to_string()
}

/// Every entry under `root` (root itself as ""), with content hashes, modes and mtimes (seconds).
pub fn snapshot(root: &Path) -> Snapshot {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, p: &Path, out: &mut Snapshot) {
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
    let ft = m.file_type();
    if ft.is_symlink() {
        let t = std::fs::read_link(p).unwrap();
        out.insert(
            rel,
            Node::Symlink {
                target: t.as_os_str().as_bytes().to_vec(),
            },
        );
    } else if ft.is_dir() {
        out.insert(
            rel,
            Node::Dir {
                mode: m.mode() & 0o7777,
                mtime: m.mtime(),
            },
        );
        let mut names: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            walk(root, &p.join(n), out);
        }
    } else if ft.is_file() {
        out.insert(
            rel,
            Node::File {
                mode: m.mode() & 0o7777,
                mtime: m.mtime(),
                size: m.len(),
                hash: hash_file(p),
            },
        );
    } else {
        panic!("unexpected file type at {}", p.display());
    }
}

/// Asserts the tree at `actual` equals `expected`, naming every difference.
#[track_caller]
pub fn assert_tree(expected: &Snapshot, actual: &Path, what: &str) {
    let got = snapshot(actual);
    if &got == expected {
        return;
    }
    let mut diffs = Vec::new();
    for (k, v) in expected {
        match got.get(k) {
            None => diffs.push(format!("missing {k:?} (expected {v:?})")),
            Some(g) if g != v => diffs.push(format!("{k:?}: expected {v:?}, got {g:?}")),
            _ => {}
        }
    }
    for k in got.keys() {
        if !expected.contains_key(k) {
            diffs.push(format!("unexpected {k:?}: {:?}", got[k]));
        }
    }
    panic!(
        "{what}: restored tree {} differs from the source ({} differences):\n{}",
        actual.display(),
        diffs.len(),
        diffs
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Every entry under `dir`, recursively: files as (size, mtime, mtime_nsec), folders with a trailing
/// `/`. Entries that vanish while being listed (a concurrent writer renaming or deleting) are skipped.
pub fn listing(dir: &Path) -> BTreeMap<String, (u64, i64, i64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            let rel = e
                .path()
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if m.is_dir() {
                stack.push(e.path());
                out.insert(rel + "/", (0, 0, 0));
            } else {
                out.insert(rel, (m.len(), m.mtime(), m.mtime_nsec()));
            }
        }
    }
    out
}

/// Total bytes of the regular files under `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    listing(dir).values().map(|v| v.0).sum()
}

/// Every regular file under `dir` (recursively).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Writes `bytes` to `p`, creating parents.
pub fn write(p: &Path, bytes: &[u8]) {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(p, bytes).unwrap();
}

pub fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Sets a file's mtime (seconds since the epoch) with `touch -d @SECS` semantics, no extra crates.
pub fn set_mtime(p: &Path, secs: i64) {
    let t = UNIX_EPOCH + Duration::from_secs(secs as u64);
    let f = std::fs::File::options()
        .write(true)
        .open(p)
        .or_else(|_| std::fs::File::open(p))
        .unwrap();
    f.set_modified(t).unwrap();
}

#[allow(unused_imports)] // used by some test binaries only
pub use ibs_testing::pseudo_random;
