//! Where an API restore may write: only beneath a folder the host's configuration names
//! (`restore_roots` in ibs.toml, `ibs serve --restore-root`; default `DATA/restores`).
//!
//! An API token is not the host: an admin token may pick which backup to restore and where, but
//! "where" is confined to these roots, so a token cannot have the daemon (often root) write a
//! backup's files into `/etc`, `/root/.ssh` or over a SQLite file elsewhere. Database URL targets
//! are not paths and are governed by `component_api::check_restore_target`.
//!
//! Invariants of [`check`]: the target is absolute and free of `..` (`Path::components` drops inner `.`); it is the
//! root or lies beneath it by path components; no existing folder between the root and the target
//! is a symlink (the root itself may be one: it is the host's choice). The engine then writes
//! below the target only through directory handles (ADR 0008). A root must be writable only by the
//! service's user: someone who can swap a folder inside it for a symlink after this check already
//! has a foothold the check cannot take away.

use crate::{ControllerError, Result};
use std::path::{Component, Path, PathBuf};

/// The default root under the data directory.
pub fn default_roots(data_dir: &Path) -> Vec<PathBuf> {
    vec![data_dir.join("restores")]
}

/// Refuses `target` unless it lies beneath one of `roots` (see the module invariants).
pub fn check(roots: &[PathBuf], target: &Path) -> Result<()> {
    if !target.is_absolute() {
        return Err(ControllerError::invalid(
            "target",
            "must be an absolute path",
        ));
    }
    if target
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(ControllerError::invalid(
            "target",
            "must not contain `..` components",
        ));
    }
    let Some(root) = roots.iter().find(|r| target.starts_with(r)) else {
        let names: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
        return Err(ControllerError::invalid(
            "target",
            format!(
                "{} is not beneath a restore root of this host ({}); the host's configuration \
                 names them (restore_roots in ibs.toml or ibs serve --restore-root)",
                target.display(),
                if names.is_empty() {
                    "none configured".to_string()
                } else {
                    names.join(", ")
                }
            ),
        ));
    };
    let mut at = root.clone();
    for part in target
        .strip_prefix(root)
        .unwrap_or(Path::new(""))
        .components()
    {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(ControllerError::invalid(
                    "target",
                    format!(
                        "{} passes through the symlink {}; restore targets are reached without \
                         following links below the restore root",
                        target.display(),
                        at.display()
                    ),
                ))
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_targets_beneath_a_root_without_symlinks_pass() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("restores");
        std::fs::create_dir_all(root.join("a")).unwrap();
        let outside = d.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let roots = vec![root.clone()];
        check(&roots, &root).unwrap();
        check(&roots, &root.join("a/new/deeper")).unwrap();
        for bad in [
            PathBuf::from("/etc/cron.d"),
            root.join("../outside"),
            root.join("link"),
            root.join("link/x"),
            PathBuf::from("relative/path"),
            // A sibling whose name starts with the root's name is not beneath it.
            d.path().join("restores-evil"),
        ] {
            let e = check(&roots, &bad).unwrap_err().to_string();
            assert!(e.starts_with("target: "), "{bad:?}: {e}");
        }
        assert!(check(&[], &root)
            .unwrap_err()
            .to_string()
            .contains("none configured"));
    }
}
