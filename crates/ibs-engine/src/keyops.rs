//! Key lifecycle operations: `init`, `adopt` (rebuild a lost writer state from the repository and a
//! .pfx), `set-cert` (new backups use another certificate; also the one-way switch from a legacy key
//! to certificates) and `rewrap` (re-wrap every old envelope for a new certificate, so the old .pfx is
//! no longer needed). Each is idempotent: re-running it after a crash completes it.

use crate::state::WriterState;
use crate::{EngineError, StateError};
use ibs_keys::{Certificate, KeyError, LegacyKey, PrivateIdentity};
use ibs_repo::clock::Clock;
use ibs_repo::config::Encryption;
use ibs_repo::ids::KeyId;
use ibs_repo::keyring::{decode_data_key, Unlock};
use ibs_repo::lock::LockKind;
use ibs_repo::{layout, InitKeys, Repository};
use ibs_storage::DynStorage;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Creates a repository (default pack size) and the writer state that goes with it.
pub async fn init(
    storage: DynStorage,
    clock: Arc<dyn Clock>,
    state_root: &Path,
    keys: InitKeys<'_>,
) -> Result<(Repository, WriterState), EngineError> {
    init_with(storage, clock, state_root, keys, None).await
}

/// [`init`] with a pack target size in bytes (`None`: the default; see
/// `RepoConfig::set_pack_target_size`).
pub async fn init_with(
    storage: DynStorage,
    clock: Arc<dyn Clock>,
    state_root: &Path,
    keys: InitKeys<'_>,
    pack_target_size: Option<u32>,
) -> Result<(Repository, WriterState), EngineError> {
    let (cert, legacy) = match &keys {
        InitKeys::Certificate(c) => (Some((*c).clone()), None),
        InitKeys::Legacy(k) => (None, Some(LegacyKey::from_file_text(&k.to_file_text())?)),
    };
    // The writer state is saved before the config is written: a process killed in between leaves a
    // state for a repository that never came to be (harmless; the next init draws a new id), never a
    // repository whose writer keys were lost with the process.
    let mut pending = Repository::prepare_init(storage, clock, keys).await?;
    if let Some(size) = pack_target_size {
        pending.set_pack_target_size(size)?;
    }
    let state = WriterState::new(
        state_root,
        &pending.config().id,
        pending.keys().clone(),
        cert,
        legacy,
    );
    state.save()?;
    // The new writer has written no backup yet, and knows it: prune may run before its first one.
    crate::ledger::Ledger::of(&state).start()?;
    let repo = pending.commit().await?;
    Ok((repo, state))
}

/// Rebuilds the writer state from the repository with a .pfx (or the legacy key file).
pub async fn adopt(
    repo: &Repository,
    unlock: &Unlock,
    state_root: &Path,
) -> Result<WriterState, EngineError> {
    let keys = repo.open_repo_keys(unlock).await?;
    let (cert, legacy) = match (&repo.config().encryption, unlock) {
        (Encryption::Certificate { .. }, _) => (repo.current_certificate().await?, None),
        (Encryption::LegacyKey, Unlock::Legacy(k)) => {
            (None, Some(LegacyKey::from_file_text(&k.to_file_text())?))
        }
        (Encryption::LegacyKey, Unlock::Identities(_)) => {
            return Err(StateError::LegacyNeedsKeyFile.into())
        }
    };
    let state = WriterState::new(state_root, &repo.config().id, keys, cert, legacy);
    // A fresh state has no files cache: the next backup reads every file once, then dedups as usual.
    let _ = std::fs::remove_file(state.files_cache_path());
    crate::keysel::forget(&state);
    state.save()?;
    Ok(state)
}

/// Every data key id the repository still needs: those of manifests and those of indexed chunks.
async fn data_key_ids(
    repo: &Repository,
    state: &WriterState,
) -> Result<BTreeSet<KeyId>, EngineError> {
    let mut ids: BTreeSet<KeyId> = BTreeSet::new();
    for obj in repo.storage().list(layout::DATA_KEYS).await? {
        if let Some(id) = layout::parse_data_key(&obj.key) {
            ids.insert(id);
        }
    }
    let (index, _) = repo.load_index(&state.keys.metadata).await?;
    ids.extend(index.key_ids().iter().copied());
    for id in repo.list_backup_ids().await? {
        if let Ok(c) = repo.read_catalog(&id).await {
            ids.insert(KeyId::from_hex(&c.data_key_id)?);
        }
    }
    Ok(ids)
}

/// Makes `cert` the certificate new backups are wrapped for. In legacy-key mode this is the one-way
/// switch to certificates: every existing data key (derived from the key file) is wrapped for `cert`,
/// so the .pfx alone then reads every backup, old and new.
pub async fn set_cert(
    repo: &mut Repository,
    state: &mut WriterState,
    cert: &Certificate,
    lock_wait: Duration,
) -> Result<(), EngineError> {
    crate::backup::check_state(repo, state)?;
    let guard = repo
        .lock(LockKind::Exclusive, "set-cert", lock_wait)
        .await?;
    let result = async {
        repo.put_certificate(cert).await?;
        repo.put_repo_envelope(&state.keys, &[cert]).await?;
        let certificates = match &repo.config().encryption {
            Encryption::Certificate { certificates, .. } => certificates.clone(),
            Encryption::LegacyKey => {
                let legacy = state.legacy.clone().ok_or(StateError::LegacyKeyMissing)?;
                for id in data_key_ids(repo, state).await? {
                    let k = ibs_repo::crypto::derive_legacy_data_key(legacy.material(), &id);
                    repo.put_data_key(&id, &k, &[cert]).await?;
                }
                Vec::new()
            }
        };
        let mut certificates = certificates;
        if !certificates.iter().any(|t| t == cert.thumbprint()) {
            certificates.push(cert.thumbprint().into());
        }
        repo.set_encryption(Encryption::Certificate {
            current: cert.thumbprint().into(),
            certificates,
        });
        repo.write_config().await?;
        state.certificate = Some(cert.clone());
        state.legacy = None;
        state.save()?;
        Ok::<_, EngineError>(())
    }
    .await;
    guard.finish(result).await
}

#[derive(Debug, Default, serde::Serialize)]
pub struct RewrapReport {
    pub rewrapped: u64,
    pub already_new: u64,
    pub not_for_old: Vec<String>,
}

fn rid(c: &Certificate) -> String {
    format!("issuer={}, serial={}", c.issuer(), c.serial_hex())
}

/// Re-wraps every envelope that `old` can open for `new`. With `keep_old`, `old` stays a recipient;
/// otherwise it is replaced. Other recipients are kept when their certificates are in the repository.
pub async fn rewrap(
    repo: &mut Repository,
    old: &PrivateIdentity,
    new: &Certificate,
    keep_old: bool,
    lock_wait: Duration,
) -> Result<RewrapReport, EngineError> {
    let guard = repo.lock(LockKind::Exclusive, "rewrap", lock_wait).await?;
    let result = rewrap_locked(repo, old, new, keep_old).await;
    guard.finish(result).await
}

async fn rewrap_locked(
    repo: &mut Repository,
    old: &PrivateIdentity,
    new: &Certificate,
    keep_old: bool,
) -> Result<RewrapReport, EngineError> {
    let Encryption::Certificate { certificates, .. } = repo.config().encryption.clone() else {
        return Err(StateError::NoEnvelopes.into());
    };
    let unlock = Unlock::Identities(vec![old.clone()]);
    // An earlier, interrupted run may already have moved the repository keys to the new
    // certificate and removed the old envelope: then there is nothing left to move for them.
    let keys = match repo.open_repo_keys(&unlock).await {
        Ok(k) => Some(k),
        Err(ibs_repo::RepoError::WrongCertificate { .. })
            if repo
                .storage()
                .stat(&layout::repo_key(new.thumbprint()))
                .await
                .is_ok() =>
        {
            None
        }
        Err(e) => return Err(e.into()),
    };
    repo.put_certificate(new).await?;
    let mut known: Vec<Certificate> = Vec::new();
    for t in &certificates {
        if let Ok(c) = repo.certificate(t).await {
            known.push(c);
        }
    }
    let old_rid = rid(old.certificate());
    let mut report = RewrapReport::default();
    for obj in repo.storage().list(layout::DATA_KEYS).await? {
        let Some(id) = layout::parse_data_key(&obj.key) else {
            continue;
        };
        let env = match repo.storage().get(&obj.key).await {
            Ok(env) => env,
            Err(e) if e.is_not_found() => continue, // removed since the listing: nothing to rewrap
            Err(e) => return Err(e.into()),
        };
        let current = ibs_keys::envelope_recipients(&env)?;
        if current.contains(&rid(new)) && !current.contains(&old_rid) {
            report.already_new += 1;
            continue;
        }
        let payload = match ibs_keys::open_envelope(old, &env) {
            Ok(p) => p,
            Err(KeyError::NoMatchingRecipient { .. }) => {
                report.not_for_old.push(id.to_hex());
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let key = decode_data_key(&payload, &id, obj.key.as_str())?;
        let mut recipients: Vec<&Certificate> = known
            .iter()
            .filter(|c| {
                current.contains(&rid(c))
                    && (keep_old || rid(c) != old_rid)
                    && c.thumbprint() != new.thumbprint()
            })
            .collect();
        recipients.push(new);
        repo.put_data_key(&id, &key, &recipients).await?;
        report.rewrapped += 1;
    }
    // Order matters for a kill at any point: the new envelope exists before the config names the
    // new certificate, and the old envelope goes only after the config no longer names it as
    // current, so the current certificate's envelope always exists.
    if let Some(keys) = &keys {
        repo.put_repo_envelope(keys, &[new]).await?;
    }
    let mut certificates = certificates;
    if !certificates.iter().any(|t| t == new.thumbprint()) {
        certificates.push(new.thumbprint().into());
    }
    repo.set_encryption(Encryption::Certificate {
        current: new.thumbprint().into(),
        certificates,
    });
    repo.write_config().await?;
    if !keep_old && old.certificate().thumbprint() != new.thumbprint() {
        let _ = repo
            .storage()
            .delete(&layout::repo_key(old.certificate().thumbprint()))
            .await;
    }
    Ok(report)
}
