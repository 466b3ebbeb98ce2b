//! Turns a LOCATION argument into storage. A local folder maps to `LocalStorage` on
//! `<folder>/MASBackup`; every backend is wrapped in the retry decorator (the one place ibs retries).

use crate::cli::Location;
use anyhow::Result;
use ibs_repo::layout::ROOT_FOLDER;
use ibs_storage::{DynStorage, LocalStorage, RetryPolicy, RetryStorage, Storage};
use std::path::PathBuf;
use std::sync::Arc;

pub fn is_smb(loc: &str) -> bool {
    loc.starts_with("\\\\") || loc.starts_with("smb://") || loc.starts_with("//")
}

/// Opens (or with `create`, creates) the storage behind a location. For an SMB location the share
/// password comes from `--password-file`, `$IBS_SHARE_PASSWORD` or a prompt.
pub async fn open(loc: &Location, create: bool) -> Result<DynStorage> {
    let password = if is_smb(&loc.repo) {
        Some(crate::secrets::share_password(
            loc.password_file.as_deref(),
        )?)
    } else {
        None
    };
    open_with_password(loc, password, create).await
}

/// Like [`open`], with the share password given in memory (the controller's stored password).
pub async fn open_with_password(
    loc: &Location,
    password: Option<String>,
    create: bool,
) -> Result<DynStorage> {
    let inner: Arc<dyn Storage> = if is_smb(&loc.repo) {
        crate::smb::open(loc, password, create).await?
    } else {
        let root = PathBuf::from(&loc.repo).join(ROOT_FOLDER);
        Arc::new(if create {
            // The configured folder itself must exist: ibs creates only MASBackup under it.
            LocalStorage::open(&loc.repo)?;
            LocalStorage::create(root)?
        } else {
            LocalStorage::open(&loc.repo)?;
            match LocalStorage::open(&root) {
                Ok(s) => s,
                Err(_) => {
                    return Err(ibs_repo::RepoError::NotARepository {
                        location: loc.repo.clone(),
                    }
                    .into());
                }
            }
        })
    };
    Ok(Arc::new(RetryStorage::new(inner, RetryPolicy::default())))
}
