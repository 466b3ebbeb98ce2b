//! What `recover` checks before it writes anything: the version-mismatch rule
//! ([`ibs_engine::provenance::check_not_newer`]: a backup written by a newer ibs version or format
//! revision is refused unless `allow_newer`), and whether a planned database target runs an older
//! server major version than the one the backup was read from (a warning, see
//! [`ibs_sources::kinds::version`]). The command runs [`preflight`] first and shows the warnings;
//! [`crate::recover::recover`] applies the rule again itself, so no caller can skip it.

use crate::plan::Plan;
use crate::recover::match_plan;
use crate::{RecoveryError, Result};
use ibs_engine::provenance::{check_not_newer, Provenance};
use ibs_repo::manifest::Catalog;

/// The version rule alone: `Err` for a backup from a newer build without `allow_newer`; with it,
/// the warning that it was overridden.
pub fn check_versions(catalog: &Catalog, allow_newer: bool) -> Result<Option<String>> {
    check_not_newer(catalog, allow_newer).map_err(RecoveryError::NewerBackup)
}

/// The version rule, then one warning per planned database component whose target server's major
/// version is older than the backup's. A target that cannot be asked is left to the restore,
/// which reports it. Every warning is also logged.
pub async fn preflight(catalog: &Catalog, plan: &Plan, allow_newer: bool) -> Result<Vec<String>> {
    let mut warnings: Vec<String> = check_versions(catalog, allow_newer)?.into_iter().collect();
    let recorded = Provenance::of(catalog);
    let (matched, _) = match_plan(plan, catalog)?;
    for (p, sources) in matched {
        let Some(c) = p.service.clone() else { continue };
        let Some(backed_up) = sources.iter().find_map(|s| recorded.server_version(s)) else {
            continue;
        };
        let backed_up = backed_up.to_string();
        let target = p.target.clone();
        let comp = c.clone();
        let asked = tokio::task::spawn_blocking(move || {
            ibs_sources::mapping::target_server_version(&comp, &target)
        })
        .await
        .map_err(RecoveryError::task("asking a target server's version"))?;
        match asked {
            Some(Ok(v)) => warnings.extend(ibs_sources::kinds::version::older_server_warning(
                &c.name,
                c.kind.name(),
                &backed_up,
                &v,
            )),
            Some(Err(e)) => tracing::debug!("server version of {}'s target: {e}", c.name),
            None => {}
        }
    }
    for w in &warnings {
        tracing::warn!("recovery of backup {}: {w}", catalog.backup_id);
    }
    Ok(warnings)
}
