//! The writer's local state, one folder per repository under the state directory:
//!
//! ```text
//! <state>/<repository id>/writer.json        certificate (public), dedup key, metadata key; legacy key in legacy mode
//! <state>/<repository id>/files-cache.sqlite the files cache of the last committed backup
//! ```
//! `writer.json` is created with mode 0600. It never holds a data key or a private key: with this state
//! and the whole repository, nobody can read a finished backup's contents (the key-model test proves
//! it). In legacy-key mode it must hold the key file's material, because every key derives from it.

use crate::EngineError;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ibs_keys::{Certificate, LegacyKey};
use ibs_repo::crypto::SymKey;
use ibs_repo::keyring::RepoKeys;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const STATE_VERSION: u32 = 1;

/// What a writer holds for one repository.
#[derive(Debug, Clone)]
pub struct WriterState {
    pub repo_id: String,
    pub keys: RepoKeys,
    pub certificate: Option<Certificate>,
    pub legacy: Option<std::sync::Arc<LegacyKey>>,
    pub dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    repo_id: String,
    certificate_der: Option<String>,
    dedup_key: String,
    metadata_key: String,
    legacy_key: Option<String>,
}

/// The default state directory: `$IBS_STATE_DIR`, else `$XDG_STATE_HOME/ibs`, else `~/.local/state/ibs`.
/// (Only the binary calls this; libraries take the directory as an argument.)
pub fn default_state_dir(env: impl Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(d) = env("IBS_STATE_DIR").filter(|s| !s.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = env("XDG_STATE_HOME").filter(|s| !s.is_empty()) {
        return PathBuf::from(d).join("ibs");
    }
    PathBuf::from(env("HOME").unwrap_or_else(|| "/root".into())).join(".local/state/ibs")
}

fn state_io(ctx: String) -> impl FnOnce(std::io::Error) -> EngineError {
    move |e| EngineError::State(format!("{ctx}: {e}"))
}

impl WriterState {
    pub fn dir_for(state_root: &Path, repo_id: &str) -> PathBuf {
        state_root.join(repo_id)
    }

    pub fn new(
        state_root: &Path,
        repo_id: &str,
        keys: RepoKeys,
        certificate: Option<Certificate>,
        legacy: Option<LegacyKey>,
    ) -> Self {
        WriterState {
            repo_id: repo_id.into(),
            keys,
            certificate,
            legacy: legacy.map(std::sync::Arc::new),
            dir: Self::dir_for(state_root, repo_id),
        }
    }

    pub fn exists(state_root: &Path, repo_id: &str) -> bool {
        Self::dir_for(state_root, repo_id)
            .join("writer.json")
            .is_file()
    }

    /// Loads the state of repository `repo_id`; a missing state says how to rebuild it.
    pub fn load(state_root: &Path, repo_id: &str) -> Result<Self, EngineError> {
        let dir = Self::dir_for(state_root, repo_id);
        let path = dir.join("writer.json");
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(EngineError::State(format!(
                    "no writer state for repository {repo_id} in {} — run `ibs repo adopt --pfx FILE` (or pass the right --state)",
                    state_root.display()
                )))
            }
            Err(e) => return Err(state_io(path.display().to_string())(e)),
        };
        let f: StateFile = serde_json::from_slice(&text)
            .map_err(|e| EngineError::State(format!("{}: {e}", path.display())))?;
        if f.version != STATE_VERSION || f.repo_id != repo_id {
            return Err(EngineError::State(format!(
                "{} is not a version {STATE_VERSION} state of repository {repo_id}",
                path.display()
            )));
        }
        let key = |s: &str| {
            B64.decode(s)
                .ok()
                .and_then(|b| SymKey::from_bytes(&b))
                .ok_or_else(|| EngineError::State(format!("{}: bad key", path.display())))
        };
        let certificate = match f.certificate_der {
            Some(d) => Some(
                Certificate::from_bytes(
                    &B64.decode(d)
                        .map_err(|e| EngineError::State(e.to_string()))?,
                )
                .map_err(|e| EngineError::State(e.to_string()))?,
            ),
            None => None,
        };
        let legacy = match f.legacy_key {
            Some(t) => Some(std::sync::Arc::new(
                LegacyKey::from_file_text(&t).map_err(|e| EngineError::State(e.to_string()))?,
            )),
            None => None,
        };
        Ok(WriterState {
            repo_id: f.repo_id,
            keys: RepoKeys {
                dedup: key(&f.dedup_key)?,
                metadata: key(&f.metadata_key)?,
            },
            certificate,
            legacy,
            dir,
        })
    }

    /// Writes `writer.json` atomically with mode 0600.
    pub fn save(&self) -> Result<(), EngineError> {
        std::fs::create_dir_all(&self.dir).map_err(state_io(self.dir.display().to_string()))?;
        let f = StateFile {
            version: STATE_VERSION,
            repo_id: self.repo_id.clone(),
            certificate_der: self.certificate.as_ref().map(|c| B64.encode(c.der())),
            dedup_key: B64.encode(self.keys.dedup.bytes()),
            metadata_key: B64.encode(self.keys.metadata.bytes()),
            legacy_key: self.legacy.as_ref().map(|k| k.to_file_text()),
        };
        let tmp = self.dir.join("writer.json.tmp");
        let path = self.dir.join("writer.json");
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&serde_json::to_vec_pretty(&f).expect("state serializes"))?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(state_io(path.display().to_string()))
    }

    /// The delta signature stores of stream sources (`crate::delta`).
    pub fn delta_dir(&self) -> PathBuf {
        self.dir.join("delta")
    }

    pub fn files_cache_path(&self) -> PathBuf {
        self.dir.join("files-cache.sqlite")
    }
}
