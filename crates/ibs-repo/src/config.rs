//! The repository config object (`MASBackup/config`): cleartext JSON, readable with no key, that
//! identifies the repository, pins the format version and the chunker parameters, and says how keys
//! are protected. It is the first object `init` writes and the last one any other command trusts
//! blindly: every reader checks `format` and `version` before anything else.

use crate::error::{RepoError, Result};
use crate::ids::RepoId;
use serde::{Deserialize, Serialize};

pub const FORMAT_NAME: &str = "ibs-repository";
pub const FORMAT_VERSION: u32 = 1;
pub const CHUNKER_ALGORITHM: &str = "fastcdc-2020";

/// Content-defined chunking parameters (FastCDC 2020, normalization level 1).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkerParams {
    pub algorithm: String,
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            algorithm: CHUNKER_ALGORITHM.into(),
            min_size: 256 << 10,
            avg_size: 1 << 20,
            max_size: 4 << 20,
        }
    }
}

/// How the repository's keys are protected.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum Encryption {
    /// Keys are wrapped in CMS envelopes for X.509 certificates. `current` is the thumbprint new
    /// backups are wrapped for; `certificates` lists every certificate ever used (their .cer files are
    /// under `keys/certs/`).
    Certificate {
        current: String,
        certificates: Vec<String>,
    },
    /// Keys are derived from an operator-held symmetric key file (the brief's "1811 and older" mode).
    LegacyKey,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RepoConfig {
    pub format: String,
    pub version: u32,
    pub id: String,
    pub created: String,
    pub chunker: ChunkerParams,
    /// zstd level used for chunks (readers do not need it: zstd frames are self-describing).
    pub compression_level: i32,
    /// Packs are closed once they reach this many bytes.
    pub pack_target_size: u32,
    pub encryption: Encryption,
    /// Check value of the metadata key (see `SymKey::check_value`), to detect a writer state or key
    /// file that belongs to another repository.
    pub metadata_key_check: String,
}

impl RepoConfig {
    pub fn new(created: String, encryption: Encryption, metadata_key_check: String) -> Self {
        RepoConfig {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            id: RepoId::random().to_hex(),
            created,
            chunker: ChunkerParams::default(),
            compression_level: 3,
            pack_target_size: 16 << 20,
            encryption,
            metadata_key_check,
        }
    }

    /// Sets the size at which packs are closed; refuses one below the chunker's largest chunk
    /// (a chunk must fit a pack) or above 256 MiB, the ranges `from_bytes` enforces.
    pub fn set_pack_target_size(&mut self, size: u32) -> Result<()> {
        let min = self.chunker.max_size;
        if !(min..=256 << 20).contains(&size) {
            return Err(RepoError::PackSizeOutOfRange {
                size,
                min,
                max: 256 << 20,
            });
        }
        self.pack_target_size = size;
        Ok(())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("config serializes");
        v.push(b'\n');
        v
    }

    /// Parses and validates a config object. Unknown versions are refused with a specific error.
    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        #[derive(Deserialize)]
        struct Probe {
            format: Option<String>,
            version: Option<u32>,
        }
        let probe: Probe = serde_json::from_slice(b)
            .map_err(|e| RepoError::corrupt("config", format!("not an ibs config (JSON: {e})")))?;
        if probe.format.as_deref() != Some(FORMAT_NAME) {
            return Err(RepoError::corrupt(
                "config",
                "not an ibs repository config (format field)",
            ));
        }
        let version = probe.version.unwrap_or(0);
        if version != FORMAT_VERSION {
            return Err(RepoError::UnsupportedVersion {
                object: "config".into(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let c: RepoConfig =
            serde_json::from_slice(b).map_err(|e| RepoError::corrupt("config", e.to_string()))?;
        let ch = &c.chunker;
        if ch.algorithm != CHUNKER_ALGORITHM
            || !(64 << 10..=ch.avg_size).contains(&ch.min_size)
            || ch.avg_size > ch.max_size
            || ch.max_size > 16 << 20
            || c.pack_target_size < ch.max_size
            || c.pack_target_size > 256 << 20
            || !(1..=19).contains(&c.compression_level)
            || RepoId::from_hex(&c.id).is_err()
        {
            return Err(RepoError::corrupt("config", "parameters out of range"));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_target_size_is_set_within_the_range_readers_accept_and_refused_outside_it() {
        let mut c = RepoConfig::new("now".into(), Encryption::LegacyKey, "00".into());
        for bad in [(4 << 20) - 1, (256 << 20) + 1, 0] {
            assert!(c.set_pack_target_size(bad).is_err(), "{bad} accepted");
            assert_eq!(c.pack_target_size, 16 << 20);
        }
        for good in [4 << 20, 256 << 20] {
            c.set_pack_target_size(good).unwrap();
            let back = RepoConfig::from_bytes(&c.to_bytes()).unwrap();
            assert_eq!(back.pack_target_size, good);
        }
    }
}
