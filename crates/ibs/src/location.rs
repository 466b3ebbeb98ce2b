//! Turns a LOCATION argument into storage through [`ibs_location`]; this file only adds the CLI's
//! share-password and S3-credential sources and prints the location's warnings to stderr.

use crate::cli::Location;
use anyhow::Result;
use ibs_storage::DynStorage;

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
    // `init` does not create a missing local folder: an unmounted share's mount point must not
    // silently become a repository on the local disk. It says what to do instead.
    if create && !ibs_location::is_remote(&loc.repo) && !std::path::Path::new(&loc.repo).exists() {
        return Err(crate::errors::coded(
            crate::output::exit::PATH,
            format!("the folder {} does not exist", loc.repo),
            format!(
                "create it (mkdir -p {}) if the repository is to live on this machine, or mount \
                 the share there first; then run init again",
                loc.repo
            ),
        ));
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
    Ok(ibs_location::open(&loc.repo, username.as_deref(), password, create).await?)
}
