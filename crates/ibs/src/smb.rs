//! SMB locations (`\\host.fqdn\share\folder`, `smb://host[:port]/share/folder`).

use crate::cli::Location;
use anyhow::{bail, Result};
use ibs_storage::Storage;
use std::sync::Arc;

pub async fn open(loc: &Location, _create: bool) -> Result<Arc<dyn Storage>> {
    bail!(
        "{}: SMB locations are not supported by this build yet; use a local folder",
        loc.repo
    )
}
