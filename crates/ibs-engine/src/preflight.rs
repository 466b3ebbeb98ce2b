//! The capacity preflight of a backup: fail early, as Capacity, when the backup will not fit, before
//! anything is written.
//!
//! The projected need is what the newest backup stored (incremental backups), or, for a first
//! backup, half the sources' size (zstd and deduplication rarely do worse on infrastructure data).
//! A first backup's sources are measured in two steps, cheapest first:
//! 1. [`used_bound`]: the bytes in use on every file system the sources reach (the one holding each
//!    root and every mount below it, `statvfs`), each file system counted once. The walk crosses
//!    mount points, so this is what the sources can hold at most, in allocated blocks. When the
//!    location has room for half of that, the check passes without reading a directory.
//! 2. Otherwise the trees are walked and their file sizes added ([`crate::progress::estimate`]),
//!    as the check always did. On a cold tree of 600,000 files that walk took 17 s before the
//!    backup's own walk began (`bench/README.md`), so it runs only when the check could fail.
//!
//! Where the two differ (sparse files, or a source file system that compresses or shares blocks),
//! the allocated blocks are the better guess of what a backup stores: holes and shared blocks cost
//! the repository next to nothing. Storage that cannot tell its free space is not checked.

use crate::progress::estimate;
use crate::{EngineError, SourceSpec};
use ibs_repo::Repository;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub(crate) async fn preflight_capacity(
    repo: &Repository,
    sources: &[SourceSpec],
) -> Result<(), EngineError> {
    let Some(space) = repo.storage().space().await? else {
        return Ok(());
    };
    let ids = repo.list_backup_ids().await?;
    let mut previous = None;
    for id in ids.iter().rev().take(5) {
        if let Ok(c) = repo.read_catalog(id).await {
            previous = Some(c.bytes_stored);
            break;
        }
    }
    let need = match previous {
        Some(b) => b,
        None => {
            let roots: Vec<PathBuf> = sources
                .iter()
                .filter_map(|s| s.origin.path().map(|p| p.to_path_buf()))
                .collect();
            let available = space.available;
            let total = tokio::task::spawn_blocking(move || {
                let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
                match used_bound(&roots, &mount_points(&mountinfo)) {
                    Some(used) if used / 2 <= available => used,
                    _ => roots.iter().map(|r| estimate(r).0).sum::<u64>(),
                }
            })
            .await
            .map_err(|cause| EngineError::Task {
                task: "size estimate",
                cause,
            })?;
            total / 2
        }
    };
    if space.available < need {
        return Err(ibs_storage::StorageError::new(
            ibs_storage::ErrorKind::Capacity,
            "preflight",
            None,
            format!(
                "the location has {} bytes free, and this backup is projected to need about {need} bytes; nothing was written",
                space.available
            ),
        )
        .into());
    }
    Ok(())
}

/// The mount points listed in a `/proc/self/mountinfo` text (field 5, with the kernel's octal
/// escapes of space, tab, newline and backslash undone).
pub(crate) fn mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .collect()
}

fn unescape(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).filter(|d| {
            b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)) && d[0] <= b'3'
        });
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    std::ffi::OsString::from_vec(out).into()
}

/// The bytes in use on the file systems holding `roots` and every mount point below them, each
/// file system (by device number) counted once; `None` when any of them cannot be measured.
pub(crate) fn used_bound(roots: &[PathBuf], mounts: &[PathBuf]) -> Option<u64> {
    let mut seen = HashSet::new();
    let mut used = 0u64;
    let mut add = |p: &Path| -> Option<()> {
        let dev = std::fs::metadata(p).ok()?.dev();
        if seen.insert(dev) {
            let s = nix::sys::statvfs::statvfs(p).ok()?;
            let blocks = (s.blocks() as u64).saturating_sub(s.blocks_free() as u64);
            used = used.saturating_add(blocks.saturating_mul(s.fragment_size() as u64));
        }
        Some(())
    };
    for root in roots {
        let root = std::fs::canonicalize(root).ok()?;
        add(&root)?;
        for m in mounts
            .iter()
            .filter(|m| m.starts_with(&root) && **m != root)
        {
            // A mount point that cannot be reached (hidden by another mount) holds nothing the
            // walk can see.
            if std::fs::symlink_metadata(m).is_ok() {
                add(m)?;
            }
        }
    }
    Some(used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_read_with_their_escapes_undone() {
        let text = "22 1 252:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                    40 22 0:35 / /mnt/with\\040space rw - tmpfs tmpfs rw\n\
                    41 22 0:36 / /mnt/back\\134slash\\011tab rw - tmpfs tmpfs rw\n\
                    42 22 0:37 / /mnt/not\\9escape rw - tmpfs tmpfs rw\n";
        assert_eq!(
            mount_points(text),
            vec![
                PathBuf::from("/"),
                PathBuf::from("/mnt/with space"),
                PathBuf::from("/mnt/back\\slash\ttab"),
                PathBuf::from("/mnt/not\\9escape"),
            ]
        );
    }

    #[test]
    fn the_bound_counts_each_file_system_once_and_covers_a_tree_on_it() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 4 << 20];
        std::fs::write(dir.path().join("a"), &data).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b"), &data).unwrap();
        let root = dir.path().to_path_buf();
        let one = used_bound(std::slice::from_ref(&root), &[]).unwrap();
        // The same file system through two roots and a "mount" below the root is counted once.
        let twice = used_bound(
            &[root.clone(), root.join("sub")],
            &[root.join("sub"), PathBuf::from("/")],
        )
        .unwrap();
        let s = nix::sys::statvfs::statvfs(&root).unwrap();
        let in_use = (s.blocks() as u64 - s.blocks_free() as u64) * s.fragment_size() as u64;
        let tolerance = 64 << 20; // other writers on the machine's file system meanwhile
        assert!(one.abs_diff(in_use) < tolerance, "{one} vs {in_use}");
        assert!(twice.abs_diff(one) < tolerance, "{twice} vs {one}");
        // The tree's own bytes are within what its file system has in use.
        assert!(one >= 8 << 20);
        assert_eq!(used_bound(&[root.join("missing")], &[]), None);
    }
}
