//! Creating a repository: [`Repository::init`] and its two halves, [`Repository::prepare_init`]
//! (keys and config in memory) and [`PendingInit::commit`] (certificate, envelope, config last), so
//! a writer can save its state in between.

use super::{InitKeys, Repository};
use crate::clock::{rfc3339, Clock};
use crate::config::{Encryption, RepoConfig};
use crate::error::{RepoError, Result};
use crate::ids::RepoId;
use crate::keyring::RepoKeys;
use crate::layout;
use ibs_storage::DynStorage;
use std::sync::Arc;

impl Repository {
    /// Creates a new repository at `storage`: fresh keys, config and (with a certificate) its
    /// envelope. Nothing a writer needs may exist only in memory when the config lands, so callers
    /// that keep writer state use [`Repository::prepare_init`] and save it before
    /// [`PendingInit::commit`]; this is both in one step.
    pub async fn init(
        storage: DynStorage,
        clock: Arc<dyn Clock>,
        keys_from: InitKeys<'_>,
    ) -> Result<(Self, RepoKeys)> {
        let pending = Self::prepare_init(storage, clock, keys_from).await?;
        let keys = pending.keys.clone();
        Ok((pending.commit().await?, keys))
    }

    /// The first half of [`Repository::init`]: refuses a location that already holds a repository,
    /// then draws the keys and the config without writing anything.
    pub async fn prepare_init<'k>(
        storage: DynStorage,
        clock: Arc<dyn Clock>,
        keys_from: InitKeys<'k>,
    ) -> Result<PendingInit<'k>> {
        match storage.stat(&layout::config()).await {
            Ok(_) => {
                return Err(RepoError::AlreadyARepository {
                    location: storage.location(),
                })
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        let now = rfc3339(clock.now_unix());
        let (keys, encryption) = match keys_from {
            InitKeys::Certificate(c) => (
                RepoKeys::random(),
                Encryption::Certificate {
                    current: c.thumbprint().into(),
                    certificates: vec![c.thumbprint().into()],
                },
            ),
            InitKeys::Legacy(k) => (RepoKeys::from_legacy(k), Encryption::LegacyKey),
        };
        let config = RepoConfig::new(now, encryption, keys.metadata.check_value("metadata"));
        let id = RepoId::from_hex(&config.id)?;
        Ok(PendingInit {
            repo: Repository::assemble(storage, config, id, clock),
            keys,
            keys_from,
        })
    }
}

/// A repository whose keys and config exist in memory only: [`Repository::prepare_init`] made it,
/// [`PendingInit::commit`] writes it. Until the config is written the location is no repository, so
/// a process killed before or during `commit` leaves nothing a later `init` refuses.
pub struct PendingInit<'k> {
    repo: Repository,
    keys: RepoKeys,
    keys_from: InitKeys<'k>,
}

impl PendingInit<'_> {
    pub fn config(&self) -> &RepoConfig {
        &self.repo.config
    }

    pub fn keys(&self) -> &RepoKeys {
        &self.keys
    }

    /// See [`RepoConfig::set_pack_target_size`].
    pub fn set_pack_target_size(&mut self, size: u32) -> Result<()> {
        self.repo.config.set_pack_target_size(size)
    }

    /// Writes the certificate and the repository-key envelope, then the config last.
    pub async fn commit(self) -> Result<Repository> {
        if let InitKeys::Certificate(c) = self.keys_from {
            self.repo.put_certificate(c).await?;
            self.repo.put_repo_envelope(&self.keys, &[c]).await?;
        }
        self.repo.write_config().await?;
        Ok(self.repo)
    }
}
