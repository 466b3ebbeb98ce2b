//! Turns a LOCATION argument into storage through [`ibs_location`]; this file only adds the CLI's
//! share-password and S3-credential sources, prints the location's warnings to stderr, and lets
//! `repo init` create a missing local folder — but never below an `/etc/fstab` mount point that is
//! not mounted, so an unmounted share's mount point does not silently become a repository on the
//! local disk.

use crate::cli::Location;
use anyhow::Result;
use ibs_storage::DynStorage;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Opens (or with `create`, creates) the storage behind a location. For an SMB location the share
/// password comes from `--password-file`, `$IBS_SHARE_PASSWORD` or a prompt.
pub async fn open(loc: &Location, create: bool) -> Result<DynStorage> {
    let last = loc
        .repo
        .trim_end_matches(['/', '\\'])
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or("");
    if last.eq_ignore_ascii_case("MASBackup") {
        let parent = &loc.repo[..loc.repo.trim_end_matches(['/', '\\']).len() - last.len()];
        return Err(crate::errors::coded(
            crate::output::exit::USAGE,
            format!(
                "{} is the repository's own MASBackup folder, not its location",
                loc.repo
            ),
            format!(
                "give the folder that holds MASBackup: --repo {}",
                parent.trim_end_matches(['/', '\\'])
            ),
        ));
    }
    if create && !ibs_location::is_remote(&loc.repo) {
        prepare_local_folder(Path::new(&loc.repo))?;
    }
    let (username, password) = if ibs_location::is_s3(&loc.repo) {
        let (key, secret) =
            crate::secrets::s3_credentials(loc.username.as_deref(), loc.password_file.as_deref())?;
        (Some(key), Some(secret))
    } else if ibs_location::is_smb(&loc.repo) {
        let password =
            crate::secrets::share_password(loc.password_file.as_deref(), Some("--password-file"))?;
        (loc.username.clone(), Some(password))
    } else {
        (None, None)
    };
    for w in ibs_location::warnings(&loc.repo) {
        errln!("warning: {w}");
    }
    let timeouts = loc
        .storage_timeout
        .map(|s| ibs_location::OpTimeouts::uniform(std::time::Duration::from_secs(s)))
        .unwrap_or_default();
    let storage =
        ibs_location::open_with(&loc.repo, username.as_deref(), password, create, timeouts).await?;
    // Outermost: each operation is paced once, whatever the layers below retry.
    Ok(ibs_storage::ThrottleStorage::wrap(
        storage,
        ibs_storage::Limits {
            upload: loc.limit_upload,
            download: loc.limit_download,
        },
    ))
}

/// For `init` on a local folder: refuses a folder at or below a mount point of `/etc/fstab` that is
/// not mounted now (exit 12, saying to mount it), else creates the folder when it is missing.
fn prepare_local_folder(path: &Path) -> Result<()> {
    let abs = std::path::absolute(path)?;
    let fstab = std::fs::read_to_string("/etc/fstab").unwrap_or_default();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if let Some(m) = unmounted_mount_point(&abs, &fstab, &mountinfo) {
        return Err(crate::errors::coded(
            crate::output::exit::PATH,
            format!(
                "{} is on {}, a mount point in /etc/fstab that is not mounted",
                path.display(),
                m.display()
            ),
            format!(
                "mount it first (mount {}), then run init again; a repository there now would \
                 land on the local disk",
                m.display()
            ),
        ));
    }
    if !abs.exists() {
        std::fs::create_dir_all(&abs).map_err(|e| {
            crate::errors::coded(
                crate::output::exit::PATH,
                format!("cannot create the folder {}: {e}", path.display()),
                "create it yourself, or give a folder you can write to",
            )
        })?;
    }
    Ok(())
}

/// The deepest mount point of `fstab` that holds `path` (the path itself or a folder above it,
/// never `/`) and is not among the mounted ones of `mountinfo` (`/proc/self/mountinfo` format).
fn unmounted_mount_point(path: &Path, fstab: &str, mountinfo: &str) -> Option<PathBuf> {
    let mounted: HashSet<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .collect();
    fstab
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(unescape)
        .filter(|t| t.is_absolute() && t != Path::new("/"))
        .filter(|t| path.starts_with(t) && !mounted.contains(t))
        .max_by_key(|t| t.components().count())
}

/// A path as fstab and mountinfo write it: space, tab, newline and backslash as octal escapes.
fn unescape(s: &str) -> PathBuf {
    let mut out = s.to_string();
    for (esc, c) in [
        ("\\040", " "),
        ("\\011", "\t"),
        ("\\012", "\n"),
        ("\\134", "\\"),
    ] {
        out = out.replace(esc, c);
    }
    PathBuf::from(out)
}

#[cfg(test)]
mod tests {
    use super::unmounted_mount_point;
    use std::path::{Path, PathBuf};

    const FSTAB: &str = "# <fs> <mount point> <type> <options>\n\
        UUID=1 / ext4 defaults 0 1\n\
        //nas.example.com/backup /mnt/nas cifs credentials=/root/c 0 0\n\
        /dev/sdb1 /srv/usb\\040disk ext4 noauto 0 0\n";

    fn mounts(points: &[&str]) -> String {
        points
            .iter()
            .map(|p| format!("36 35 98:0 / {p} rw,noatime master:1 - ext4 /dev/x rw\n"))
            .collect()
    }

    #[test]
    fn a_folder_below_an_unmounted_fstab_mount_point_is_named() {
        let none = mounts(&["/"]);
        assert_eq!(
            unmounted_mount_point(Path::new("/mnt/nas/ibs"), FSTAB, &none),
            Some(PathBuf::from("/mnt/nas"))
        );
        assert_eq!(
            unmounted_mount_point(Path::new("/mnt/nas"), FSTAB, &none),
            Some(PathBuf::from("/mnt/nas"))
        );
        assert_eq!(
            unmounted_mount_point(Path::new("/srv/usb disk/x"), FSTAB, &none),
            Some(PathBuf::from("/srv/usb disk"))
        );
    }

    #[test]
    fn mounted_or_unrelated_folders_are_not_refused() {
        let mounted = mounts(&["/", "/mnt/nas", "/srv/usb\\040disk"]);
        assert_eq!(
            unmounted_mount_point(Path::new("/mnt/nas/ibs"), FSTAB, &mounted),
            None
        );
        assert_eq!(
            unmounted_mount_point(Path::new("/srv/usb disk/a"), FSTAB, &mounted),
            None
        );
        let none = mounts(&["/"]);
        // `/` is always there; a sibling whose name merely starts the same is not below it.
        assert_eq!(
            unmounted_mount_point(Path::new("/srv/backup"), FSTAB, &none),
            None
        );
        assert_eq!(
            unmounted_mount_point(Path::new("/mnt/nasty"), FSTAB, &none),
            None
        );
    }
}
