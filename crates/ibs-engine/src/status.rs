//! The status roll-up: one rule for how the outcomes of a job's parts make the job's outcome. The
//! engine applies it to a backup's sources (the manifest's status); the controller applies it to
//! a backup job's and a restore job's components.

use ibs_repo::manifest::BackupStatus;

/// All parts succeeded → Succeeded; all failed → Failed; otherwise (a mix, or any partial
/// success) → PartialSucceeded. No parts at all counts as Succeeded.
pub fn roll_up(parts: impl IntoIterator<Item = BackupStatus>) -> BackupStatus {
    let (mut all_ok, mut all_failed) = (true, true);
    for p in parts {
        all_ok &= p == BackupStatus::Succeeded;
        all_failed &= p == BackupStatus::Failed;
    }
    if all_ok {
        BackupStatus::Succeeded
    } else if all_failed {
        BackupStatus::Failed
    } else {
        BackupStatus::PartialSucceeded
    }
}

#[cfg(test)]
mod tests {
    use super::roll_up;
    use ibs_repo::manifest::BackupStatus::*;

    #[test]
    fn all_succeeded_all_failed_otherwise_partial() {
        assert_eq!(roll_up([Succeeded, Succeeded]), Succeeded);
        assert_eq!(roll_up([Failed, Failed]), Failed);
        assert_eq!(roll_up([Succeeded, Failed]), PartialSucceeded);
        assert_eq!(roll_up([PartialSucceeded]), PartialSucceeded);
        assert_eq!(roll_up([Failed, PartialSucceeded]), PartialSucceeded);
        assert_eq!(roll_up([]), Succeeded);
    }
}
