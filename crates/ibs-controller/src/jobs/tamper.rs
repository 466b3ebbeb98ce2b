//! Tamper evidence on object-lock storage (ADR 0040): what the controller's verification and
//! retention look for, and the `repository-tampered` alert they raise.
//!
//! On an object-lock bucket an attacker holding the writer key cannot destroy what ibs wrote, but
//! every attempt that leaves a trace is evidence worth an alert:
//! - a write-once object (config, pack, index or reference segment, manifest, data-key envelope)
//!   with a later version of different content or a delete marker ([`ibs_engine::history`]: two
//!   writers storing the same content-addressed object at once is no evidence);
//! - a pack ibs wrote through the locking decorator that carries no lock at all;
//! - a pack whose lock ends before the one ibs gave it: ibs locked it at least until its first
//!   version's write time plus the policy's horizon (extensions only lengthen a lock), so an
//!   earlier retain-until date means someone with GOVERNANCE bypass rights re-locked it shorter;
//! - a delete the maintenance credential should have been allowed to make but the storage
//!   refused (a changed bucket policy, a legal hold, or a weakened maintenance key);
//! - an object under `plans/` that does not open under the metadata key (ADR 0044): honoured by
//!   nobody, so harmless to backups and prune, but only someone with storage access puts one.
//!
//! Invariants: the scan only runs where writes are locked (`lock_policy()` is some), so other
//! storage never pays for it or raises the alert; verification closes the alert when it finds
//! nothing (it scans every write-once prefix), retention only raises or refreshes it (a clean
//! retention run has not looked at everything verification looks at).

use crate::alerts::AlertKind;
use crate::context::JobContext;
use ibs_repo::clock::rfc3339;
use ibs_repo::crypto::SymKey;
use ibs_repo::Repository;
use ibs_storage::{DynStorage, LockPolicy, ObjectKey, StorageError};

/// How many object names an alert's details list before "and N more".
pub const NAMED: usize = 5;

/// How far a lock may end before the write time plus the horizon without counting as shortened:
/// the writer set the date by its own clock, the storage stamps the write time by its clock.
pub const CLOCK_TOLERANCE: i64 = 15 * 60;

/// A pack locked for less time than ibs locked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortened {
    pub key: String,
    /// Its retain-until date now (Unix seconds).
    pub until: i64,
    /// The earliest date ibs locked it until (Unix seconds): its write time plus the horizon.
    pub expected: i64,
}

/// What one scan found; empty when nothing points at tampering.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// Write-once objects overwritten or hidden by a delete marker after ibs wrote them.
    pub rewritten: Vec<String>,
    /// Objects ibs wrote locked that carry no lock.
    pub unlocked: Vec<String>,
    /// Objects whose lock ends before the date ibs locked them until.
    pub shortened: Vec<Shortened>,
    /// Deletes the maintenance credential should have been allowed that the storage refused.
    pub refused: Vec<String>,
    /// Objects under `plans/` that do not open under the metadata key.
    pub rejected_plans: Vec<String>,
}

impl Findings {
    pub fn is_empty(&self) -> bool {
        self.rewritten.is_empty()
            && self.unlocked.is_empty()
            && self.shortened.is_empty()
            && self.refused.is_empty()
            && self.rejected_plans.is_empty()
    }

    /// The alert's details: per kind of evidence, the count and the first [`NAMED`] objects (a
    /// shortened lock with its date and the date ibs set).
    pub fn describe(&self) -> String {
        let shortened: Vec<String> = self
            .shortened
            .iter()
            .map(|s| {
                format!(
                    "{} (locked until {}, ibs locked it until at least {})",
                    s.key,
                    rfc3339(s.until),
                    rfc3339(s.expected)
                )
            })
            .collect();
        [
            (
                &self.rewritten,
                "overwritten or hidden by a delete marker after ibs wrote them",
            ),
            (
                &self.unlocked,
                "carry no object lock although ibs locked them",
            ),
            (
                &shortened,
                "carry a lock shorter than ibs set (re-locked by someone with governance bypass rights)",
            ),
            (
                &self.refused,
                "could not be deleted by the maintenance credential (the storage refused)",
            ),
            (
                &self.rejected_plans,
                "under plans/ do not open under the metadata key (put there by someone with storage access; backups and prune ignore them)",
            ),
        ]
        .into_iter()
        .filter(|(objects, _)| !objects.is_empty())
        .map(|(objects, what)| format!("{} object(s) {what}: {}", objects.len(), name_some(objects)))
        .collect::<Vec<_>>()
        .join("; ")
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

/// Every write-once object (`layout::WRITE_ONCE`) overwritten or hidden after ibs wrote it, less
/// second puts of the same content (one version listing per prefix; [`ibs_engine::history`]).
pub async fn rewritten(
    repo: &Repository,
    metadata_key: &SymKey,
) -> Result<Vec<String>, ibs_engine::EngineError> {
    Ok(ibs_engine::history::rewritten(repo, Some(metadata_key))
        .await?
        .into_iter()
        .map(|k| k.as_str().to_owned())
        .collect())
}

/// The objects under `plans/` that do not open under the metadata key, as `plans/<name>`.
pub async fn rejected_plans(
    repo: &Repository,
    metadata_key: &SymKey,
) -> Result<Vec<String>, ibs_repo::RepoError> {
    let names = repo.list_plans().await?;
    Ok(repo
        .read_plans(&names, metadata_key)
        .await?
        .rejected
        .into_iter()
        .map(|r| format!("plans/{}", r.name))
        .collect())
}

/// Those of `keys` that carry no lock, and those whose lock ends more than [`CLOCK_TOLERANCE`]
/// before their write time plus `policy`'s horizon (a missing object is not this check's finding:
/// the verification reports it as damage).
pub async fn locks(
    storage: &DynStorage,
    policy: LockPolicy,
    keys: &[ObjectKey],
) -> Result<(Vec<String>, Vec<Shortened>), StorageError> {
    let (mut unlocked, mut shortened) = (Vec::new(), Vec::new());
    for key in keys {
        let until = match storage.lock_until(key).await {
            Ok(None) => {
                unlocked.push(key.as_str().to_owned());
                continue;
            }
            Ok(Some(u)) => u,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        let written = match storage.stat(key).await {
            Ok(info) => info.modified,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        if let Some(expected) = written.map(|w| policy.retention_from(w).until) {
            if until < expected.saturating_sub(CLOCK_TOLERANCE) {
                shortened.push(Shortened {
                    key: key.as_str().to_owned(),
                    until,
                    expected,
                });
            }
        }
    }
    Ok((unlocked, shortened))
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
            shortened: vec![],
            refused: vec!["index/s1".into()],
            rejected_plans: vec![],
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
        assert!(!d.contains("plans/"), "{d}");
        assert!(Findings::default().is_empty());
        assert!(!f.is_empty());
        let planted = Findings {
            rejected_plans: vec!["plans/00ff".into()],
            ..Default::default()
        };
        assert!(!planted.is_empty());
        assert!(
            planted
                .describe()
                .starts_with("1 object(s) under plans/ do not open under the metadata key"),
            "{}",
            planted.describe()
        );
    }

    #[test]
    fn a_shortened_lock_names_the_object_and_both_dates() {
        let f = Findings {
            shortened: vec![Shortened {
                key: "packs/ab/abcd".into(),
                until: 1_700_000_000,
                expected: 1_700_086_400,
            }],
            refused: vec!["backups/b1".into()],
            ..Default::default()
        };
        let d = f.describe();
        assert!(!f.is_empty());
        assert!(
            d.starts_with("1 object(s) carry a lock shorter than ibs set (re-locked by someone with governance bypass rights): packs/ab/abcd (locked until 2023-11-14T22:13:20Z, ibs locked it until at least 2023-11-15T22:13:20Z); 1 object(s) could not be deleted"),
            "{d}"
        );
        assert!(!d.contains("carry no object lock"), "{d}");
    }
}
