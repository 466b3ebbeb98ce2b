//! The writer's ledger of backups, `<state>/<repository id>/backups.ledger`: what this writer
//! knows must exist in the repository, so that prune can tell a complete listing from one that
//! lags or lies (see `crate::prune`).
//!
//! One line per event, appended and synced: `+ID` when a backup's manifest was committed, `-ID`
//! when the writer is about to delete it (forget records before it deletes, so a crash in between
//! leaves a manifest the ledger no longer expects, never the reverse). The expected set is every
//! `+` without a later `-`. A torn last line (no newline) is ignored. The file is 0600 (the folder
//! is the writer state's); it holds backup ids only.
//!
//! A ledger is a lower bound: backups written by other writers, or before the ledger existed, are
//! not in it, and that only makes prune's check weaker, never wrong. A writer state without a
//! ledger (adopted, or older than the ledger) makes the CLI ask the operator to vouch for the
//! listing instead (`ibs repo prune --trust-listing`).

use crate::state::WriterState;
use crate::{EngineError, StateError};
use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

pub struct Ledger {
    path: PathBuf,
}

impl Ledger {
    pub fn of(state: &WriterState) -> Self {
        Ledger {
            path: state.dir.join("backups.ledger"),
        }
    }

    pub fn exists(&self) -> bool {
        self.path.is_file()
    }

    fn append(&self, sign: char, ids: &[String]) -> Result<(), EngineError> {
        if ids.is_empty() {
            return Ok(());
        }
        let io = |e: std::io::Error| EngineError::from(StateError::io(&self.path)(e));
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(io)?;
        let text: String = ids.iter().map(|id| format!("{sign}{id}\n")).collect();
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)
    }

    /// Starts an empty ledger (a writer state that has seen every backup it wrote: none yet).
    pub fn start(&self) -> Result<(), EngineError> {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
            .and_then(|f| f.sync_all())
            .map_err(|e| StateError::io(&self.path)(e).into())
    }

    /// Records a committed backup.
    pub fn record_written(&self, id: &str) -> Result<(), EngineError> {
        self.append('+', &[id.to_owned()])
    }

    /// Records backups about to be deleted (call before deleting them).
    pub fn record_forgotten(&self, ids: &[String]) -> Result<(), EngineError> {
        self.append('-', ids)
    }

    /// The backups this writer committed and has not forgotten; `None` if there is no ledger.
    pub fn expected(&self) -> Result<Option<BTreeSet<String>>, EngineError> {
        Ok(self.events()?.map(|events| {
            let mut set = BTreeSet::new();
            for (written, id) in events {
                if written {
                    set.insert(id);
                } else {
                    set.remove(&id);
                }
            }
            set
        }))
    }

    /// The backup this writer committed last and has not forgotten (the one its files cache
    /// describes; a backup's parent for reference deltas, ADR 0046); `None` without one.
    pub fn latest(&self) -> Result<Option<String>, EngineError> {
        let Some(events) = self.events()? else {
            return Ok(None);
        };
        let mut forgotten = BTreeSet::new();
        for (written, id) in events.into_iter().rev() {
            if !written {
                forgotten.insert(id);
            } else if !forgotten.contains(&id) {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// The ledger's events in order: (`true` written / `false` forgotten, backup id); `None` if
    /// there is no ledger.
    fn events(&self) -> Result<Option<Vec<(bool, String)>>, EngineError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StateError::io(&self.path)(e).into()),
        };
        let mut out = Vec::new();
        // Only complete lines: a crash may have torn the last one.
        for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            let line = line.trim_end();
            let (sign, id) = line.split_at(line.len().min(1));
            if !ibs_repo::layout::is_backup_id(id) {
                continue;
            }
            match sign {
                "+" => out.push((true, id.to_owned())),
                "-" => out.push((false, id.to_owned())),
                _ => {}
            }
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ibs_repo::keyring::RepoKeys;

    #[test]
    fn written_minus_forgotten_ignoring_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let st = WriterState::new(dir.path(), "r", RepoKeys::random(), None, None);
        std::fs::create_dir_all(&st.dir).unwrap();
        let l = Ledger::of(&st);
        assert_eq!(l.expected().unwrap(), None);
        let (a, b) = ("20270101T000000Z-0a1b2c3d", "20270102T000000Z-0a1b2c3e");
        l.record_written(a).unwrap();
        l.record_written(b).unwrap();
        l.record_forgotten(&[a.to_owned()]).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("r/backups.ledger"))
            .unwrap();
        f.write_all(b"+20270103T000000Z-0a1b").unwrap();
        assert_eq!(
            l.expected()
                .unwrap()
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            vec![b.to_owned()]
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("r/backups.ledger"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn latest_is_the_last_written_not_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let st = WriterState::new(dir.path(), "r", RepoKeys::random(), None, None);
        std::fs::create_dir_all(&st.dir).unwrap();
        let l = Ledger::of(&st);
        assert_eq!(l.latest().unwrap(), None);
        let (a, b) = ("20270101T000000Z-0a1b2c3d", "20270102T000000Z-0a1b2c3e");
        l.record_written(a).unwrap();
        l.record_written(b).unwrap();
        assert_eq!(l.latest().unwrap().as_deref(), Some(b));
        l.record_forgotten(&[b.to_owned()]).unwrap();
        assert_eq!(l.latest().unwrap().as_deref(), Some(a));
        l.record_forgotten(&[a.to_owned()]).unwrap();
        assert_eq!(l.latest().unwrap(), None);
    }
}
