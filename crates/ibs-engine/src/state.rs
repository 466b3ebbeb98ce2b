//! The writer's local state, one folder per repository under the state directory:
//!
//! ```text
//! <state>/<repository id>/writer.json        certificate (public), dedup key, metadata key; legacy key in legacy mode
//! <state>/<repository id>/files-cache.sqlite the files cache of the last committed backup (no names: `cache`)
//! <state>/<repository id>/wrapped-keys.json  data key ids known wrapped for the certificate (`keysel`)
//! <state>/<repository id>/delta/<source>.sig  delta block signatures of stream sources (`delta`)
//! <state>/deployment-id                      this deployment's id (`deployment_id`), one line of 32 hex digits
//! ```
//! Every file of the state is created with mode 0600 and every folder 0700 (the state root too);
//! opening a state tightens what an older ibs left wider. `writer.json` is created with mode 0600. It never holds a data key or a private key: with this state
//! and the whole repository, nobody can read a finished backup's contents (the key-model test proves
//! it). In legacy-key mode it must hold the key file's material, because every key derives from it.

use crate::{EngineError, StateError};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ibs_keys::{Certificate, LegacyKey};
use ibs_repo::crypto::SymKey;
use ibs_repo::keyring::RepoKeys;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
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

fn state_io(path: &Path) -> impl FnOnce(std::io::Error) -> EngineError + '_ {
    move |e| StateError::io(path)(e).into()
}

/// Creates `dir` (and missing parents) with mode 0700, and sets 0700 on `dir` if it exists wider.
pub fn private_dir(dir: &Path) -> Result<(), EngineError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(state_io(dir))?;
    tighten(dir);
    Ok(())
}

/// Sets mode 0700 on a folder or 0600 on a file (never follows a symlink), if it is wider.
pub fn tighten(path: &Path) {
    let Ok(m) = std::fs::symlink_metadata(path) else {
        return;
    };
    let want = if m.is_dir() {
        0o700
    } else if m.is_file() {
        0o600
    } else {
        return;
    };
    if m.permissions().mode() & 0o777 & !want != 0 {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(want));
    }
}

/// Tightens `root` and everything below it (see [`tighten`]).
pub fn tighten_tree(root: &Path) {
    tighten(root);
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            tighten_tree(&p);
        } else {
            tighten(&p);
        }
    }
}

/// Creates an empty file with mode 0600 (replacing any file there).
pub fn write_private_new(path: &Path) -> Result<(), EngineError> {
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(drop)
        .map_err(state_io(path))
}

/// The name of the deployment-id file in the state root.
pub const DEPLOYMENT_ID_FILE: &str = "deployment-id";

/// This deployment's id: 32 random lower-case hex digits created once in `state_root`
/// (`deployment-id`, mode 0600) and read from there afterwards. A controller's state root is
/// `DATA/state`, a CLI writer's the state directory, so each controller and each CLI host has its
/// own. Every backup records it in its catalog. Two callers racing on a new root agree: the file
/// is linked into place only if absent, and the loser reads the winner's.
pub fn deployment_id(state_root: &Path) -> Result<String, EngineError> {
    let path = state_root.join(DEPLOYMENT_ID_FILE);
    let valid = |s: &str| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
    match std::fs::read_to_string(&path) {
        Ok(s) if valid(s.trim()) => return Ok(s.trim().to_ascii_lowercase()),
        Ok(_) => {
            return Err(StateError::io(&path)(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not a deployment id (32 hex digits); remove the file to make a new one",
            ))
            .into())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(state_io(&path)(e)),
    }
    private_dir(state_root)?;
    // 16 random bytes from the OS generator (the key-id generator), as 32 hex digits.
    let id = ibs_repo::ids::KeyId::random().to_hex();
    let tmp = state_root.join(format!(
        ".{DEPLOYMENT_ID_FILE}.{}",
        ibs_repo::ids::KeyId::random().to_hex()
    ));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(format!("{id}\n").as_bytes())?;
        file.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(state_io(&tmp)(e));
    }
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(id),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => deployment_id(state_root),
        Err(e) => Err(state_io(&path)(e)),
    }
}

/// Writes `bytes` to `path` atomically (a 0600 temporary renamed over it). The temporary's name
/// is unique, so two processes sharing a writer state (a backup and a prune on one host) that
/// write one file at once each rename a whole file of their own: the last rename wins.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), EngineError> {
    let tmp = path.with_extension(format!("tmp.{}", ibs_repo::ids::KeyId::random().to_hex()));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        state_io(path)(e)
    })
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
                return Err(StateError::Missing {
                    repo_id: repo_id.to_owned(),
                    state_root: state_root.to_owned(),
                }
                .into())
            }
            Err(e) => return Err(state_io(&path)(e)),
        };
        // A state an older ibs wrote with default modes is made private on first use.
        tighten(state_root);
        tighten_tree(&dir);
        let f: StateFile = serde_json::from_slice(&text).map_err(|cause| StateError::Parse {
            path: path.clone(),
            cause,
        })?;
        if f.version != STATE_VERSION || f.repo_id != repo_id {
            return Err(StateError::WrongVersion {
                path,
                version: STATE_VERSION,
                repo_id: repo_id.to_owned(),
            }
            .into());
        }
        let key = |s: &str| {
            B64.decode(s)
                .ok()
                .and_then(|b| SymKey::from_bytes(&b))
                .ok_or_else(|| StateError::BadKey { path: path.clone() })
        };
        let certificate = match f.certificate_der {
            Some(d) => Some(
                Certificate::from_bytes(&B64.decode(d).map_err(StateError::CertificateEncoding)?)
                    .map_err(StateError::Key)?,
            ),
            None => None,
        };
        let legacy = match f.legacy_key {
            Some(t) => Some(std::sync::Arc::new(
                LegacyKey::from_file_text(&t).map_err(StateError::Key)?,
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

    /// Writes `writer.json` atomically with mode 0600, in 0700 folders.
    pub fn save(&self) -> Result<(), EngineError> {
        if let Some(root) = self.dir.parent() {
            private_dir(root)?;
        }
        private_dir(&self.dir)?;
        let f = StateFile {
            version: STATE_VERSION,
            repo_id: self.repo_id.clone(),
            certificate_der: self.certificate.as_ref().map(|c| B64.encode(c.der())),
            dedup_key: B64.encode(self.keys.dedup.bytes()),
            metadata_key: B64.encode(self.keys.metadata.bytes()),
            legacy_key: self.legacy.as_ref().map(|k| k.to_file_text()),
        };
        let bytes = serde_json::to_vec_pretty(&f).expect("state serializes");
        write_private(&self.dir.join("writer.json"), &bytes)
    }

    /// The delta signature stores of stream sources (`crate::delta`).
    pub fn delta_dir(&self) -> PathBuf {
        self.dir.join("delta")
    }

    pub fn files_cache_path(&self) -> PathBuf {
        self.dir.join("files-cache.sqlite")
    }
}
