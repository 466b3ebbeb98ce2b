//! An opened repository: its config and typed access to every kind of object. This is the only module
//! that turns object kinds into storage calls; the engine composes these calls into operations.

mod init;
mod refs;
mod refs_delta;
mod sealed;

pub use init::PendingInit;
pub use refs::RefsWritten;
pub use refs_delta::{delta_bound, Delta, DELTA_DIVISOR, DELTA_MAX_IDS, DELTA_MIN_IDS};
pub use sealed::span_ok;

use crate::clock::Clock;
use crate::config::{Encryption, RepoConfig};
use crate::crypto::SymKey;
use crate::damaged::DamageMarker;
use crate::error::{MissingKey, RepoError, Result};
use crate::ids::{KeyId, PackId, RepoId};
use crate::index::{decode_segment, encode_segment, Index, PackRecord};
use crate::keyring::{decode_data_key, encode_data_key, RepoKeys, Unlock};
use crate::layout;
use crate::lock::{FenceSlot, FencedStorage, LockGuard, LockKind};
use crate::manifest::{Catalog, Manifest};
use crate::plan::{PlanReading, PrunePlanObject};
use bytes::Bytes;
use ibs_keys::{Certificate, KeyError, LegacyKey};
use ibs_storage::DynStorage;
use std::collections::HashSet;
use std::sync::Arc;

/// How `init` protects the keys.
pub enum InitKeys<'a> {
    Certificate(&'a Certificate),
    Legacy(&'a LegacyKey),
}

pub struct Repository {
    /// `raw` behind the lock fence: writes are refused once a lock held through this handle is lost.
    storage: DynStorage,
    /// The backend itself, for the lock objects.
    raw: DynStorage,
    fence: Arc<FenceSlot>,
    config: RepoConfig,
    id: RepoId,
    clock: Arc<dyn Clock>,
}

impl Repository {
    /// Opens an existing repository. A missing config is `NotARepository`; an unknown version is
    /// `UnsupportedVersion`.
    pub async fn open(storage: DynStorage, clock: Arc<dyn Clock>) -> Result<Self> {
        let bytes = match storage.get(&layout::config()).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                return Err(RepoError::NotARepository {
                    location: storage.location(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        let config = RepoConfig::from_bytes(&bytes)?;
        let id = RepoId::from_hex(&config.id)?;
        Ok(Repository::assemble(storage, config, id, clock))
    }

    fn assemble(raw: DynStorage, config: RepoConfig, id: RepoId, clock: Arc<dyn Clock>) -> Self {
        let fence = Arc::new(FenceSlot::default());
        Repository {
            storage: Arc::new(FencedStorage::new(raw.clone(), fence.clone())),
            raw,
            fence,
            config,
            id,
            clock,
        }
    }

    /// Takes a repository lock (see [`crate::lock`]). While it is held, writes through this handle
    /// are refused once the lock may be lost; [`LockGuard::finish`] then reports
    /// [`RepoError::LockLost`].
    pub async fn lock(
        &self,
        kind: LockKind,
        operation: &str,
        wait: std::time::Duration,
    ) -> Result<LockGuard> {
        let mut guard =
            crate::lock::acquire(&self.raw, self.clock.clone(), kind, operation, wait).await?;
        guard.arm(self.fence.clone());
        Ok(guard)
    }

    /// The append lock of a backup, recording the prune plans it read (§19): listed and read
    /// after the lock became held, the names of those that open under `metadata_key`. The caller
    /// builds its index without what [`LockGuard::plan_reading`] marks.
    pub async fn lock_append(
        &self,
        operation: &str,
        wait: std::time::Duration,
        metadata_key: &SymKey,
    ) -> Result<LockGuard> {
        let mut guard = crate::lock::acquire_noting(
            &self.raw,
            self.clock.clone(),
            LockKind::Append,
            operation,
            wait,
            &crate::lock::LockConfig::default(),
            Some(metadata_key),
        )
        .await?;
        guard.arm(self.fence.clone());
        Ok(guard)
    }

    // ---- prune plans (§19) ----

    /// The names of the prune plans on storage, sorted.
    pub async fn list_plans(&self) -> Result<Vec<String>> {
        crate::lock::list_plans(&self.storage).await
    }

    pub async fn put_plan(&self, plan: &PrunePlanObject, metadata_key: &SymKey) -> Result<()> {
        Ok(self
            .storage
            .put(
                &layout::plan(&plan.name),
                plan.to_bytes(metadata_key).into(),
            )
            .await?)
    }

    /// Reads and authenticates one plan; `None` if it is gone (swept since it was listed).
    pub async fn read_plan(
        &self,
        name: &str,
        metadata_key: &SymKey,
    ) -> Result<Option<PrunePlanObject>> {
        match self.storage.get(&layout::plan(name)).await {
            Ok(b) => PrunePlanObject::from_bytes(name, &b, metadata_key).map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The plans `names` as read now: the marks of those that open, and those honoured by nobody
    /// ([`crate::lock::read_plans`]).
    pub async fn read_plans(&self, names: &[String], metadata_key: &SymKey) -> Result<PlanReading> {
        crate::lock::read_plans(&self.storage, names, metadata_key).await
    }

    pub async fn delete_plan(&self, name: &str) -> Result<()> {
        match self.storage.delete(&layout::plan(name)).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates a repository. Refuses a location that already holds one.
    pub fn storage(&self) -> &DynStorage {
        &self.storage
    }

    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    pub fn id(&self) -> &RepoId {
        &self.id
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub async fn write_config(&self) -> Result<()> {
        Ok(self
            .storage
            .put(&layout::config(), self.config.to_bytes().into())
            .await?)
    }

    /// Replaces the in-memory config (the caller then calls [`Repository::write_config`]).
    pub fn set_encryption(&mut self, enc: Encryption) {
        self.config.encryption = enc;
    }

    /// Fails unless `keys` are this repository's keys.
    pub fn check_keys(&self, keys: &RepoKeys) -> Result<()> {
        if keys.metadata.check_value("metadata") == self.config.metadata_key_check {
            Ok(())
        } else {
            Err(RepoError::StateMismatch)
        }
    }

    // ---- certificates and envelopes ----

    pub async fn put_certificate(&self, cert: &Certificate) -> Result<()> {
        Ok(self
            .storage
            .put(
                &layout::cert(cert.thumbprint()),
                Bytes::copy_from_slice(cert.der()),
            )
            .await?)
    }

    pub async fn certificate(&self, thumbprint: &str) -> Result<Certificate> {
        let der = self.storage.get(&layout::cert(thumbprint)).await?;
        let cert = Certificate::from_bytes(&der)?;
        if cert.thumbprint() != thumbprint {
            return Err(RepoError::corrupt(
                layout::cert(thumbprint).to_string(),
                "certificate does not match its name",
            ));
        }
        Ok(cert)
    }

    /// The certificate new backups are wrapped for (None in legacy mode).
    pub async fn current_certificate(&self) -> Result<Option<Certificate>> {
        match &self.config.encryption {
            Encryption::Certificate { current, .. } => Ok(Some(self.certificate(current).await?)),
            Encryption::LegacyKey => Ok(None),
        }
    }

    pub async fn put_repo_envelope(
        &self,
        keys: &RepoKeys,
        recipients: &[&Certificate],
    ) -> Result<()> {
        let payload = keys.encode_payload(&self.id);
        let env = ibs_keys::seal_envelope(recipients, &payload)?;
        for c in recipients {
            self.storage
                .put(&layout::repo_key(c.thumbprint()), env.clone().into())
                .await?;
        }
        Ok(())
    }

    /// Recovers the repository keys with a .pfx (from `keys/repo-<thumbprint>.p7m`) or the legacy key.
    pub async fn open_repo_keys(&self, unlock: &Unlock) -> Result<RepoKeys> {
        let keys = match unlock {
            Unlock::Legacy(k) => {
                if self.config.encryption != Encryption::LegacyKey {
                    // A repository that switched to certificates still accepts its old key file for
                    // the repository keys (they were derived from it).
                }
                RepoKeys::from_legacy(k)
            }
            Unlock::Identities(ids) => {
                let mut found = None;
                for ident in ids {
                    let key = layout::repo_key(ident.certificate().thumbprint());
                    match self.storage.get(&key).await {
                        Ok(env) => {
                            let payload = ibs_keys::open_envelope(ident, &env)
                                .map_err(|e| RepoError::corrupt(key.to_string(), e.to_string()))?;
                            found =
                                Some(RepoKeys::decode_payload(&payload, &self.id, key.as_str())?);
                            break;
                        }
                        Err(e) if e.is_not_found() => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                found.ok_or_else(|| RepoError::WrongCertificate {
                    what: "this repository".into(),
                    expected: self.expected_thumbprints(),
                    provided: unlock.thumbprints().join(", "),
                })?
            }
        };
        if self.check_keys(&keys).is_err() {
            return Err(match unlock {
                Unlock::Legacy(_) => RepoError::WrongKeyFile,
                Unlock::Identities(_) => RepoError::corrupt(
                    "repository key envelope",
                    "keys fail the config's key check",
                ),
            });
        }
        Ok(keys)
    }

    fn expected_thumbprints(&self) -> String {
        match &self.config.encryption {
            Encryption::Certificate { certificates, .. } => certificates.join(" or "),
            Encryption::LegacyKey => "(legacy key mode: use --key-file)".into(),
        }
    }

    pub async fn put_data_key(
        &self,
        id: &KeyId,
        key: &SymKey,
        recipients: &[&Certificate],
    ) -> Result<()> {
        let env = ibs_keys::seal_envelope(recipients, &encode_data_key(id, key))?;
        Ok(self.storage.put(&layout::data_key(id), env.into()).await?)
    }

    /// Opens the data key `id`. `expected` is the thumbprint the catalog recorded, used in the error
    /// when no offered .pfx matches.
    pub async fn open_data_key(
        &self,
        id: &KeyId,
        unlock: &Unlock,
        expected: Option<&str>,
    ) -> Result<SymKey> {
        let key = layout::data_key(id);
        let env = match self.storage.get(&key).await {
            Ok(env) => env,
            Err(e) if e.is_not_found() => {
                if let Some(k) = unlock.legacy_data_key(id) {
                    return Ok(k);
                }
                return Err(RepoError::corrupt(
                    key.to_string(),
                    "data key envelope is missing",
                ));
            }
            Err(e) => return Err(e.into()),
        };
        let Unlock::Identities(ids) = unlock else {
            return Err(RepoError::MissingKey(MissingKey::PfxForDataKey {
                id: id.to_string(),
            }));
        };
        for ident in ids {
            match ibs_keys::open_envelope(ident, &env) {
                Ok(payload) => return decode_data_key(&payload, id, key.as_str()),
                Err(KeyError::NoMatchingRecipient { .. }) => continue,
                Err(e) => return Err(RepoError::corrupt(key.to_string(), e.to_string())),
            }
        }
        // Name the certificate(s) this very envelope is wrapped for: the catalog's thumbprint
        // (`expected`) is only where the backup's own key went, not where every chunk's key went.
        let wrapped_for = match ibs_keys::envelope_recipients(&env) {
            Ok(r) => self.describe_recipients(&r).await,
            Err(_) => expected
                .map(str::to_owned)
                .unwrap_or_else(|| self.expected_thumbprints()),
        };
        Err(RepoError::WrongCertificate {
            what: format!("data key {id}"),
            expected: wrapped_for,
            provided: self.describe_identities(ids),
        })
    }

    /// The recipients of data key `id`'s envelope, as [`crate::keyring::recipient_id`] names
    /// them; `None` when the envelope does not exist.
    pub async fn data_key_recipients(&self, id: &KeyId) -> Result<Option<Vec<String>>> {
        let key = layout::data_key(id);
        match self.storage.get(&key).await {
            Ok(env) => {
                Ok(Some(ibs_keys::envelope_recipients(&env).map_err(|e| {
                    RepoError::corrupt(key.to_string(), e.to_string())
                })?))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Names each recipient by the thumbprint and subject of the repository's certificate it
    /// designates (`<thumbprint> (subject "<subject>")`), or as the envelope names it when the
    /// repository holds no such certificate.
    async fn describe_recipients(&self, recipients: &[String]) -> String {
        let mut known = Vec::new();
        if let Encryption::Certificate { certificates, .. } = &self.config.encryption {
            for t in certificates {
                if let Ok(c) = self.certificate(t).await {
                    known.push(c);
                }
            }
        }
        recipients
            .iter()
            .map(
                |r| match known.iter().find(|c| &crate::keyring::recipient_id(c) == r) {
                    Some(c) => format!("{} (subject \"{}\")", c.thumbprint(), c.subject()),
                    None => format!("({r})"),
                },
            )
            .collect::<Vec<_>>()
            .join(" or ")
    }

    fn describe_identities(&self, ids: &[ibs_keys::PrivateIdentity]) -> String {
        ids.iter()
            .map(|i| {
                let c = i.certificate();
                format!("{} (subject \"{}\")", c.thumbprint(), c.subject())
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    // ---- index and packs ----

    /// Loads every index segment. Returns the index and the segment names. The index knows the
    /// damaged packs (markers listed first), so it prefers healthy copies of every chunk. Segments
    /// are read one at a time, so only one segment's records are held beside the index.
    pub async fn load_index(&self, metadata_key: &SymKey) -> Result<(Index, Vec<String>)> {
        let mut index = Index::with_damaged(self.damaged_packs().await?);
        let names = self
            .for_each_segment(metadata_key, |_, records| {
                records.iter().for_each(|rec| index.add_pack(rec))
            })
            .await?;
        Ok((index, names))
    }

    /// Loads every index segment as records, by segment name.
    pub async fn load_segments(
        &self,
        metadata_key: &SymKey,
    ) -> Result<Vec<(String, Vec<PackRecord>)>> {
        let mut out = Vec::new();
        self.for_each_segment(metadata_key, |name, records| {
            out.push((name.to_owned(), records))
        })
        .await?;
        Ok(out)
    }

    /// Reads the index segments one at a time in name order, handing each one's records to `f`.
    /// Returns the segment names.
    ///
    /// A segment listed and gone when read was retired by a prune's sweep running beside this
    /// reader (a backup, §19); the sweep wrote the full segment replacing it first, so the listing
    /// is taken again and the segments not yet read are read (until a listing shows no segment
    /// that vanished). Readers holding the shared or prune lock never see this.
    pub async fn for_each_segment(
        &self,
        metadata_key: &SymKey,
        mut f: impl FnMut(&str, Vec<PackRecord>),
    ) -> Result<Vec<String>> {
        let mut done: Vec<String> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        for attempt in 0.. {
            let mut names: Vec<_> = self
                .storage
                .list(layout::INDEX)
                .await?
                .into_iter()
                .map(|o| o.key)
                .filter(|k| !seen.contains(k.name()))
                .collect();
            names.sort_by(|a, b| a.name().cmp(b.name()));
            let mut vanished = 0;
            for key in &names {
                let bytes = match self.storage.get(key).await {
                    Ok(b) => b,
                    Err(e) if e.is_not_found() && attempt < 10 => {
                        vanished += 1;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                let records = decode_segment(key.name(), &bytes, metadata_key)?;
                drop(bytes);
                seen.insert(key.name().to_owned());
                done.push(key.name().to_owned());
                f(key.name(), records);
            }
            if vanished == 0 {
                break;
            }
            tracing::info!(
                "{vanished} index segments were replaced while being read; reading the new ones"
            );
        }
        Ok(done)
    }

    /// Writes one index segment; returns its name and size.
    pub async fn write_index(
        &self,
        packs: &[PackRecord],
        metadata_key: &SymKey,
    ) -> Result<(String, u64)> {
        let (name, obj) = encode_segment(packs, metadata_key);
        let len = obj.len() as u64;
        self.storage.put(&layout::index(&name), obj.into()).await?;
        Ok((name, len))
    }

    /// Every pack on storage, with its size.
    pub async fn list_packs(&self) -> Result<std::collections::HashMap<PackId, u64>> {
        Ok(self
            .storage
            .list(layout::PACKS)
            .await?
            .into_iter()
            .filter_map(|o| layout::parse_pack(&o.key).map(|id| (id, o.size)))
            .collect())
    }

    pub async fn put_pack(&self, id: &PackId, bytes: Bytes) -> Result<()> {
        Ok(self.storage.put(&layout::pack(id), bytes).await?)
    }

    // ---- damage markers ----

    /// The packs that carry a damage marker (names only; no marker body is read).
    pub async fn damaged_packs(&self) -> Result<HashSet<PackId>> {
        Ok(self
            .storage
            .list(layout::DAMAGED)
            .await?
            .iter()
            .filter_map(|o| layout::parse_damaged(&o.key))
            .collect())
    }

    /// Every damage marker with its body (a marker whose body does not parse is returned as an
    /// error beside its pack, so one bad object does not hide the others).
    pub async fn damage_markers(&self) -> Result<Vec<(PackId, Result<DamageMarker>)>> {
        let mut out = Vec::new();
        for id in self.damaged_packs().await? {
            let m = match self.storage.get(&layout::damaged(&id)).await {
                Ok(b) => DamageMarker::from_bytes(&id, &b),
                Err(e) => Err(e.into()),
            };
            out.push((id, m));
        }
        out.sort_by_key(|a| a.0);
        Ok(out)
    }

    /// Writes (or overwrites) the damage marker of one pack.
    pub async fn put_damage_marker(&self, id: &PackId, m: &DamageMarker) -> Result<()> {
        Ok(self
            .storage
            .put(&layout::damaged(id), m.to_bytes().into())
            .await?)
    }

    /// Removes a pack's damage marker; a marker already gone is fine.
    pub async fn delete_damage_marker(&self, id: &PackId) -> Result<()> {
        match self.storage.delete(&layout::damaged(id)).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    // ---- manifests ----

    pub async fn list_backup_ids(&self) -> Result<Vec<String>> {
        let mut ids: Vec<String> = self
            .storage
            .list(layout::BACKUPS)
            .await?
            .into_iter()
            .map(|o| o.key.name().to_owned())
            .filter(|n| layout::is_backup_id(n))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Reads just the catalog of a backup (a ranged read of the manifest's head when possible).
    /// A malformed id is `NotABackupId` and a missing backup `NoSuchBackup`, as for
    /// [`Repository::read_manifest`].
    pub async fn read_catalog(&self, id: &str) -> Result<Catalog> {
        if !layout::is_backup_id(id) {
            return Err(RepoError::NotABackupId { id: id.to_owned() });
        }
        let key = layout::backup(id);
        let size = match self.storage.stat(&key).await {
            Ok(m) => m.size,
            Err(e) if e.is_not_found() => {
                return Err(RepoError::NoSuchBackup { id: id.to_owned() })
            }
            Err(e) => return Err(e.into()),
        };
        let head = self.storage.get_range(&key, 0, size.min(64 << 10)).await?;
        match Manifest::parse_catalog(id, &head)? {
            Ok(c) => Ok(c),
            Err(need) if (need as u64) <= size => {
                let head = self.storage.get_range(&key, 0, need as u64).await?;
                Manifest::parse_catalog(id, &head)?
                    .map_err(|_| RepoError::corrupt(key.to_string(), "truncated catalog"))
            }
            Err(_) => Err(RepoError::corrupt(key.to_string(), "truncated catalog")),
        }
    }

    pub async fn read_manifest(&self, id: &str) -> Result<Manifest> {
        if !layout::is_backup_id(id) {
            return Err(RepoError::NotABackupId { id: id.to_owned() });
        }
        let bytes = match self.storage.get(&layout::backup(id)).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                return Err(RepoError::NoSuchBackup { id: id.to_owned() })
            }
            Err(e) => return Err(e.into()),
        };
        Manifest::from_bytes(id, &bytes)
    }

    /// Writes a manifest: the commit point of a backup. Returns the bytes written.
    pub async fn put_manifest(&self, m: &Manifest) -> Result<u64> {
        let bytes = m.to_bytes();
        let len = bytes.len() as u64;
        self.storage
            .put(&layout::backup(&m.catalog.backup_id), bytes.into())
            .await?;
        Ok(len)
    }
}
