//! SMB locations: `\\host.fqdn\share\folder…` or `smb://host[:port]/share/folder…`, through ibs's own
//! SMB2/3 client (`ibs-smb`). The configured folder must exist; ibs creates only `MASBackup` in it.

use crate::cli::Location;
use anyhow::{bail, Result};
use ibs_repo::layout::ROOT_FOLDER;
use ibs_smb::{SmbCredentials, SmbLocation, SmbOptions, SmbStorage};
use ibs_storage::{ErrorKind, Storage, StorageError};
use std::sync::Arc;

/// Parses and checks an SMB location (FQDN or IP host, share, folder). Warnings (an IP host) go to
/// stderr.
pub fn parse(text: &str) -> Result<SmbLocation, StorageError> {
    let loc = SmbLocation::parse(text)
        .map_err(|e| StorageError::new(ErrorKind::Path, "location", None, e.to_string()))?;
    for w in loc.warnings() {
        eprintln!("warning: {w}");
    }
    Ok(loc)
}

async fn connect(
    at: &SmbLocation,
    creds: &SmbCredentials,
    create_folder: bool,
) -> Result<SmbStorage, StorageError> {
    let options = SmbOptions {
        create_folder,
        ..SmbOptions::default()
    };
    SmbStorage::connect(at, creds.clone(), options).await
}

pub async fn open(
    loc: &Location,
    password: Option<String>,
    create: bool,
) -> Result<Arc<dyn Storage>> {
    let region = parse(&loc.repo)?;
    let Some(username) = loc.username.clone() else {
        bail!(
            "{}: an SMB location needs --username (user or DOMAIN\\user)",
            loc.repo
        );
    };
    let Some(password) = password else {
        bail!(
            "{}: no share password (set $IBS_SHARE_PASSWORD or --password-file)",
            loc.repo
        );
    };
    let creds = SmbCredentials::new(username, password);
    let root = region
        .join(ROOT_FOLDER)
        .map_err(|e| StorageError::new(ErrorKind::Path, "location", None, e.to_string()))?;
    if create {
        // The region folder must exist; only MASBackup is created.
        drop(connect(&region, &creds, false).await?);
        return Ok(Arc::new(connect(&root, &creds, true).await?));
    }
    match connect(&root, &creds, false).await {
        Ok(s) => Ok(Arc::new(s)),
        Err(e) if e.kind == ErrorKind::Path => {
            // Tell a missing region folder (Path) from a folder without a repository.
            connect(&region, &creds, false).await?;
            Err(ibs_repo::RepoError::NotARepository {
                location: loc.repo.clone(),
            }
            .into())
        }
        Err(e) => Err(e.into()),
    }
}
