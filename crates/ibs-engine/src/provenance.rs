//! Who wrote a backup, and the version-mismatch rule every restore path applies.
//!
//! A catalog records the writing build's version (`ibs_version`), its repository format revision
//! (`format_revision`, [`ibs_repo::manifest::FORMAT_REVISION`]), the deployment id
//! ([`crate::state::deployment_id`]) and each service source's server version. [`check_not_newer`]
//! is the one place that decides whether this build may restore a backup: a backup written by a
//! newer ibs or a newer format revision is refused unless the caller passes the explicit override
//! (`--allow-newer`, `"allow_newer": true`). The controller's restore job and `ibs recover` call it
//! before they write anything.
//!
//! Trust: the fields are cleartext in the catalog. In a version-2 manifest the catalog is bound
//! into both sealed parts, so a restore that opens the tree part has authenticated them; a version-1
//! catalog is not authenticated, and its `deployment_id`, `format_revision` and server versions are
//! ignored ([`Provenance::of`]): no build that wrote version 1 wrote them, so they can only be forged.

use ibs_repo::manifest::{Catalog, FORMAT_REVISION, MANIFEST_V2};
use serde::Serialize;

/// The version of this build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What a catalog says about the build and deployment that wrote the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Provenance {
    /// The writing build's version (`ibs_version`); empty when the catalog has none.
    pub ibs_version: String,
    /// The writing build's format revision; 0 before revisions were recorded.
    pub format_revision: u32,
    pub deployment_id: Option<String>,
    /// Source name and the server version it was read from.
    pub server_versions: Vec<(String, String)>,
}

impl Provenance {
    /// The provenance `catalog` records. Fields beyond `ibs_version` count only in an
    /// authenticated (version-2 or later) catalog.
    pub fn of(catalog: &Catalog) -> Provenance {
        let authenticated = catalog.format_version >= MANIFEST_V2 as u32;
        Provenance {
            ibs_version: catalog.ibs_version.clone(),
            format_revision: if authenticated { catalog.revision() } else { 0 },
            deployment_id: catalog.deployment_id.clone().filter(|_| authenticated),
            server_versions: if authenticated {
                catalog
                    .sources
                    .iter()
                    .filter_map(|s| Some((s.name.clone(), s.server_version.clone()?)))
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    /// The server version recorded for source `name`.
    pub fn server_version(&self, source: &str) -> Option<&str> {
        self.server_versions
            .iter()
            .find(|(s, _)| s == source)
            .map(|(_, v)| v.as_str())
    }
}

/// A backup written by a newer build than this one, refused without the override.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("backup {backup} was written by {written}, newer than this {running}: this build may not restore it correctly. Restore it with ibs {min_version} or later, or override at your own risk with --allow-newer (API: \"allow_newer\": true)")]
pub struct NewerBackup {
    pub backup: String,
    /// What wrote it, e.g. `ibs 99.0.0 (repository format revision 1)`.
    pub written: String,
    /// This build, e.g. `ibs 0.1.0 (repository format revision 1)`.
    pub running: String,
    pub min_version: String,
}

/// A version `MAJOR.MINOR.PATCH` (a pre-release or build suffix is ignored); `None` when `v`
/// does not start with three numbers.
pub fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let core = v.split(['-', '+']).next()?;
    let mut it = core.split('.').map(|p| p.parse::<u64>().ok());
    let t = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(t)
}

/// Applies the version-mismatch rule to `catalog`, for this build: `Err` when the backup was
/// written by a newer ibs version or a newer format revision and `allow_newer` is false. With the
/// override the same text comes back as `Ok(Some(warning))`, for the caller to show and log. A
/// version that does not parse (older test builds wrote none) is not newer.
pub fn check_not_newer(
    catalog: &Catalog,
    allow_newer: bool,
) -> Result<Option<String>, NewerBackup> {
    check_against(catalog, VERSION, FORMAT_REVISION, allow_newer)
}

/// [`check_not_newer`] against a given running version and revision.
pub fn check_against(
    catalog: &Catalog,
    running_version: &str,
    running_revision: u32,
    allow_newer: bool,
) -> Result<Option<String>, NewerBackup> {
    let p = Provenance::of(catalog);
    let newer_version = match (
        parse_version(&p.ibs_version),
        parse_version(running_version),
    ) {
        (Some(w), Some(r)) => w > r,
        _ => false,
    };
    let newer_revision = p.format_revision > running_revision;
    if !newer_version && !newer_revision {
        return Ok(None);
    }
    let describe = |v: &str, r: u32| format!("ibs {v} (repository format revision {r})");
    let e = NewerBackup {
        backup: catalog.backup_id.clone(),
        written: describe(&p.ibs_version, p.format_revision),
        running: describe(running_version, running_revision),
        min_version: if newer_version {
            p.ibs_version.clone()
        } else {
            format!("supporting format revision {}", p.format_revision)
        },
    };
    if allow_newer {
        Ok(Some(format!(
            "restoring despite the version rule (--allow-newer): {e}"
        )))
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ibs_repo::manifest::{BackupStatus, SourceSummary};

    fn catalog(version: &str, revision: Option<u32>, format_version: u32) -> Catalog {
        Catalog {
            format_version,
            backup_id: "20260101T000000Z-00000000".into(),
            repository_id: String::new(),
            started: String::new(),
            finished: String::new(),
            duration_ms: 0,
            status: BackupStatus::Succeeded,
            sources: vec![SourceSummary {
                name: "pg".into(),
                kind: "stream".into(),
                status: BackupStatus::Succeeded,
                files: 1,
                dirs: 0,
                bytes: 0,
                errors: 0,
                changed_while_read: 0,
                essential: true,
                skipped: 0,
                server_version: Some("16.4".into()),
            }],
            encryption_mode: "certificate".into(),
            certificate_thumbprint: None,
            data_key_id: String::new(),
            bytes_read: 0,
            bytes_new: 0,
            bytes_stored: 0,
            hostname: String::new(),
            ibs_version: version.into(),
            recovery_ready: None,
            deployment_id: Some("ab".repeat(16)),
            format_revision: revision,
        }
    }

    #[test]
    fn versions_parse_numerically() {
        assert_eq!(parse_version("0.1.0"), Some((0, 1, 0)));
        assert_eq!(parse_version("10.2.3-rc.1"), Some((10, 2, 3)));
        assert_eq!(parse_version("test"), None);
        assert_eq!(parse_version("1.2"), None);
        assert!(parse_version("0.10.0") > parse_version("0.9.9"));
    }

    #[test]
    fn newer_version_or_revision_is_refused_unless_overridden() {
        let c = catalog("99.0.0", Some(1), 2);
        let e = check_against(&c, "0.1.0", 1, false).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("ibs 99.0.0") && m.contains("ibs 0.1.0"), "{m}");
        assert!(
            m.contains("--allow-newer") && m.contains("allow_newer"),
            "{m}"
        );
        assert!(check_against(&c, "0.1.0", 1, true).unwrap().is_some());
        let c = catalog("0.1.0", Some(7), 2);
        let m = check_against(&c, "0.1.0", 1, false)
            .unwrap_err()
            .to_string();
        assert!(m.contains("revision 7") && m.contains("revision 1"), "{m}");
        // Same or older: no refusal, no warning.
        assert_eq!(
            check_against(&catalog("0.1.0", Some(1), 2), "0.1.0", 1, false),
            Ok(None)
        );
        assert_eq!(
            check_against(&catalog("0.0.9", None, 2), "0.1.0", 1, false),
            Ok(None)
        );
        assert_eq!(
            check_against(&catalog("", None, 2), "0.1.0", 1, false),
            Ok(None)
        );
    }

    #[test]
    fn unauthenticated_v1_catalogs_cannot_claim_provenance() {
        let c = catalog("0.1.0", Some(9), 1);
        let p = Provenance::of(&c);
        assert_eq!((p.format_revision, p.deployment_id), (0, None));
        assert!(p.server_versions.is_empty());
        assert_eq!(check_against(&c, "0.1.0", 1, false), Ok(None));
        let p = Provenance::of(&catalog("0.1.0", Some(1), 2));
        assert_eq!(p.server_version("pg"), Some("16.4"));
    }
}
