//! `ibs repo mount MOUNTPOINT`: composes the browse reader (opened with the .pfx), a shared
//! repository lock and `ibs_mount` (the FUSE file system), then waits in the foreground. Ctrl-C or
//! SIGTERM unmounts (a busy mount point is reported and stays served until the next signal);
//! an unmount by someone else (`umount`, `fusermount3 -u`) ends the command as well. Exit 0 after
//! a clean unmount.

use super::{browse, Ctx};
use crate::cli::{Location, UnlockArgs};
use crate::errors::coded;
use crate::output::exit;
use anyhow::Result;
use ibs_mount::MountError;
use ibs_repo::lock::LockKind;
use ibs_repo::manifest::BackupStatus;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};
use tokio::signal::unix::{signal, SignalKind};

/// How often the command looks whether the mount was ended from outside.
const POLL: Duration = Duration::from_millis(200);

pub(super) async fn mount(
    ctx: &Ctx,
    loc: Location,
    mountpoint: PathBuf,
    u: UnlockArgs,
) -> Result<i32> {
    let (repo, reader) = browse::open(&loc, &u).await?;
    let lock = repo.lock(LockKind::Shared, "mount", ctx.lock_wait).await?;
    let mut ids = repo.list_backup_ids().await?;
    ids.sort();
    let mut backups = Vec::new();
    for id in ids {
        let Ok(c) = repo.read_catalog(&id).await else {
            continue;
        };
        if c.status == BackupStatus::Failed {
            continue;
        }
        let started = ibs_repo::clock::parse_rfc3339(&c.started).unwrap_or(0);
        let time = UNIX_EPOCH + Duration::from_secs(started.max(0) as u64);
        backups.push((id, time));
    }
    let rt = tokio::runtime::Handle::current();
    let (mp, shown) = (mountpoint.clone(), backups.len());
    let mounted = tokio::task::spawn_blocking(move || ibs_mount::mount(rt, reader, &backups, &mp))
        .await?
        .map_err(classify)?;
    if !ctx.quiet {
        outln!(
            "mounted {shown} backup{} read-only at {} (BACKUP_ID/SOURCE/PATH, and `latest`)",
            if shown == 1 { "" } else { "s" },
            mountpoint.display()
        );
        outln!(
            "Ctrl-C or `umount {}` unmounts; backups, forget and prune cannot run until then",
            mountpoint.display()
        );
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = tokio::time::sleep(POLL) => {
                if mounted.is_finished() { break; }
                continue;
            }
        }
        match mounted.unmount() {
            Ok(()) => break,
            Err(e @ MountError::Busy { .. }) => {
                errln!("error: {e}; still mounted (Ctrl-C again to retry)")
            }
            Err(e) => return Err(classify(e)),
        }
    }
    tokio::task::spawn_blocking(move || mounted.join())
        .await?
        .map_err(classify)?;
    lock.release().await?;
    if !ctx.quiet {
        outln!("unmounted {}", mountpoint.display());
    }
    Ok(exit::OK)
}

/// A mount error as the one exit table has it.
fn classify(e: MountError) -> anyhow::Error {
    let (code, hint) = match &e {
        MountError::BadMountPoint { .. } => (exit::USAGE, "give an existing, empty folder"),
        MountError::NoFuseDevice { .. } | MountError::Mount { .. } => (
            exit::FAILURE,
            "FUSE needs /dev/fuse and, when not root, Debian's fuse3 (fusermount3)",
        ),
        MountError::Busy { .. } => (exit::LOCKED, "close what uses the mount point"),
        MountError::Unmount { .. } => {
            (exit::FAILURE, "unmount it with `fusermount3 -u MOUNTPOINT`")
        }
    };
    coded(code, e.to_string(), hint)
}
