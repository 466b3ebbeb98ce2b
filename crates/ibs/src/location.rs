//! Turns a LOCATION argument into storage through [`ibs_location`]; this file only adds the CLI's
//! share-password sources and prints the location's warnings to stderr.

use crate::cli::Location;
use anyhow::Result;
use ibs_storage::DynStorage;

/// Opens (or with `create`, creates) the storage behind a location. For an SMB location the share
/// password comes from `--password-file`, `$IBS_SHARE_PASSWORD` or a prompt.
pub async fn open(loc: &Location, create: bool) -> Result<DynStorage> {
    let password = if ibs_location::is_smb(&loc.repo) {
        Some(crate::secrets::share_password(
            loc.password_file.as_deref(),
        )?)
    } else {
        None
    };
    for w in ibs_location::warnings(&loc.repo) {
        eprintln!("warning: {w}");
    }
    Ok(ibs_location::open(&loc.repo, loc.username.as_deref(), password, create).await?)
}
