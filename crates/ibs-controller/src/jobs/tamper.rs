//! Tamper evidence on object-lock storage (ADR 0040): what the controller's verification and
//! retention look for, and the `repository-tampered` alert they raise.
//!
//! On an object-lock bucket an attacker holding the writer key cannot destroy what ibs wrote, but
//! every attempt that leaves a trace is evidence worth an alert:
//! - a write-once object (config, pack, index segment, manifest, data-key envelope) with a later
//!   version of different content or a delete marker ([`ibs_storage::Storage::rewritten`]);
//! - a pack ibs wrote through the locking decorator that carries no lock at all;
//! - a delete the maintenance credential should have been allowed to make but the storage
//!   refused (a changed bucket policy, a legal hold, or a weakened maintenance key).
//!
//! Invariants: the scan only runs where writes are locked (`lock_policy()` is some), so other
//! storage never pays for it or raises the alert; verification closes the alert when it finds
//! nothing (it scans every write-once prefix), retention only raises or refreshes it (a clean
//! retention run has not looked at everything verification looks at).

use crate::alerts::AlertKind;
use crate::context::JobContext;
use ibs_repo::layout;
use ibs_storage::{DynStorage, ObjectKey, StorageError};

/// How many object names an alert's details list before "and N more".
pub const NAMED: usize = 5;

/// The prefixes of the objects ibs writes exactly once (the S3 backend reads their first version).
pub const WRITE_ONCE: [&str; 5] = [
    layout::CONFIG,
    layout::PACKS,
    layout::INDEX,
    layout::BACKUPS,
    layout::DATA_KEYS,
];

/// What one scan found; empty when nothing points at tampering.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// Write-once objects overwritten or hidden by a delete marker after ibs wrote them.
    pub rewritten: Vec<String>,
    /// Objects ibs wrote locked that carry no lock.
    pub unlocked: Vec<String>,
    /// Deletes the maintenance credential should have been allowed that the storage refused.
    pub refused: Vec<String>,
}

impl Findings {
    pub fn is_empty(&self) -> bool {
        self.rewritten.is_empty() && self.unlocked.is_empty() && self.refused.is_empty()
    }

    /// The alert's details: per kind of evidence, the count and the first [`NAMED`] objects.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (objects, what) in [
            (
                &self.rewritten,
                "overwritten or hidden by a delete marker after ibs wrote them",
            ),
            (
                &self.unlocked,
                "carry no object lock although ibs locked them",
            ),
            (
                &self.refused,
                "could not be deleted by the maintenance credential (the storage refused)",
            ),
        ] {
            if !objects.is_empty() {
                parts.push(format!(
                    "{} object(s) {what}: {}",
                    objects.len(),
                    name_some(objects)
                ));
            }
        }
        parts.join("; ")
    }
}

/// The first [`NAMED`] names, then "and N more".
fn name_some(objects: &[String]) -> String {
    let mut s = objects
        .iter()
        .take(NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if objects.len() > NAMED {
        s.push_str(&format!(" and {} more", objects.len() - NAMED));
    }
    s
}

/// True where the scan applies: writes to this storage are locked.
pub fn applies(storage: &DynStorage) -> bool {
    storage.lock_policy().is_some()
}

/// Every write-once object overwritten or hidden after ibs wrote it (one version listing per
/// write-once prefix).
pub async fn rewritten(storage: &DynStorage) -> Result<Vec<String>, StorageError> {
    let mut out = Vec::new();
    for prefix in WRITE_ONCE {
        for key in storage.rewritten(prefix).await? {
            out.push(key.as_str().to_owned());
        }
    }
    Ok(out)
}

/// Those of `keys` that carry no lock (a missing object is not this check's finding: the
/// verification reports it as damage).
pub async fn unlocked(
    storage: &DynStorage,
    keys: &[ObjectKey],
) -> Result<Vec<String>, StorageError> {
    let mut out = Vec::new();
    for key in keys {
        match storage.lock_until(key).await {
            Ok(None) => out.push(key.as_str().to_owned()),
            Ok(Some(_)) => {}
            Err(e) if e.kind == ibs_storage::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Raises (or refreshes) the alert when `f` holds evidence; with `close_when_clean`, closes it
/// when it holds none. `source` names the job in the log. Best effort: a failure to record is
/// logged, never fails the job.
pub fn record(ctx: &JobContext, f: &Findings, source: &str, close_when_clean: bool) {
    let now = ctx.now();
    let r = if !f.is_empty() {
        let details = format!("{source}: {}", f.describe());
        tracing::warn!("repository tampered: {details}");
        ctx.alerts
            .raise(AlertKind::RepositoryTampered, &details, now)
            .map(|_| ())
    } else if close_when_clean {
        ctx.alerts.close_kind(
            AlertKind::RepositoryTampered,
            "a later verification found no tampering",
            now,
        )
    } else {
        Ok(())
    };
    if let Err(e) = r {
        tracing::error!("recording the tamper evidence of {source}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_count_and_name_the_first_objects() {
        let f = Findings {
            rewritten: (0..7).map(|i| format!("packs/p{i}")).collect(),
            unlocked: vec![],
            refused: vec!["index/s1".into()],
        };
        let d = f.describe();
        assert!(d.starts_with("7 object(s) overwritten or hidden"), "{d}");
        assert!(
            d.contains("packs/p0, packs/p1, packs/p2, packs/p3, packs/p4 and 2 more"),
            "{d}"
        );
        assert!(!d.contains("packs/p5"), "{d}");
        assert!(d.contains("1 object(s) could not be deleted by the maintenance credential"));
        assert!(!d.contains("carry no object lock"), "{d}");
        assert!(Findings::default().is_empty());
        assert!(!f.is_empty());
    }
}
