//! Turns a configured backup location into opened storage: a local folder becomes `LocalStorage`
//! on `<folder>/MASBackup`, an SMB location (`\\host.fqdn\share\folder…`, `smb://host[:port]/…`)
//! becomes `SmbStorage` through ibs's own client, an S3 location (`s3://host/bucket/prefix`,
//! `s3+http://…`, parsed in [`s3`]) becomes `S3Storage` on `prefix/MASBackup`. Every backend is wrapped here, the one place ibs
//! assembles storage decorators: `RetryStorage(TimeoutStorage(backend))`, so each attempt of an
//! operation is bounded by its kind's timeout ([`OpTimeouts`]) and a timed-out attempt is retried.
//!
//! The configured folder itself must exist; ibs creates only `MASBackup` in it. Failures are a
//! [`LocationError`], whose [`LocationError::class`] is the operator alert class: the CLI maps it to
//! an exit code and the controller to an alert, neither by inspecting message text.
//!
//! Credentials are handed over in memory by the caller (a prompt, a password file, the controller's
//! sealed setting); this crate reads no files and no environment. For S3 the `username` is the
//! access key id and the `password` the secret access key.

pub mod s3;

use ibs_repo::layout::{self, ROOT_FOLDER};
use ibs_s3::{S3Credentials, S3Storage};
use ibs_smb::{SmbCredentials, SmbLocation, SmbOptions, SmbStorage};
pub use ibs_storage::OpTimeouts;
use ibs_storage::{
    AlertClass, DynStorage, ErrorKind, LocalStorage, LockedWrites, RetryPolicy, RetryStorage,
    Storage, StorageError, TimeoutStorage,
};
pub use s3::{is_s3, LockOptions, S3Location, S3LocationError, DEFAULT_LOCK_RETENTION};
use std::path::PathBuf;
use std::sync::Arc;

/// Key prefixes of objects the repository writes exactly once ([`layout::WRITE_ONCE`]): on an
/// object-lock bucket their reads take the first version, so an overwrite by a writer key is never
/// read (ADR 0035, ADR 0038).
pub const WRITE_ONCE: [&str; 6] = layout::WRITE_ONCE;

/// Names of the controller's accessibility probe objects (written and deleted at once: never
/// locked).
pub const PROBE_PREFIX: &str = "ibs-probe-";

/// Why a location could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocationError {
    /// The storage refused or failed: an unreachable host, rejected credentials, a missing or
    /// malformed path, a full share. Its kind decides the alert class.
    #[error(transparent)]
    Storage(#[from] StorageError),

    /// The location is reachable but holds no repository (no `MASBackup` folder).
    #[error("{location} is not an ibs repository (no MASBackup/config object); run `ibs repo init` first")]
    NotARepository { location: String },

    /// An SMB location was given without a user name.
    #[error("{location}: an SMB location needs --username (user or DOMAIN\\user)")]
    MissingUsername { location: String },

    /// An SMB location was given without a share password.
    #[error("{location}: no share password (set $IBS_SHARE_PASSWORD or --password-file)")]
    MissingPassword { location: String },

    /// Lock options were given for a bucket that has no object lock.
    #[error("{location}: lock options were given, but the bucket has no object lock (create it with object lock enabled, or drop the lock_* options)")]
    NoObjectLock { location: String },

    /// An S3 location was given without an access key id or without its secret.
    #[error("{location}: no S3 credentials (set $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY, or give a credentials file)")]
    MissingS3Credentials { location: String },
}

impl LocationError {
    /// The operator alert class: the storage error's class, else `General`.
    pub fn class(&self) -> AlertClass {
        match self {
            LocationError::Storage(e) => e.class(),
            LocationError::NotARepository { .. }
            | LocationError::MissingUsername { .. }
            | LocationError::MissingPassword { .. }
            | LocationError::MissingS3Credentials { .. }
            | LocationError::NoObjectLock { .. } => AlertClass::General,
        }
    }

    /// True when the location is reachable but holds no repository yet.
    pub fn is_not_a_repository(&self) -> bool {
        matches!(self, LocationError::NotARepository { .. })
    }

    /// The storage error inside, if this is one.
    pub fn storage(&self) -> Option<&StorageError> {
        match self {
            LocationError::Storage(e) => Some(e),
            _ => None,
        }
    }
}

/// Whether `location` names an SMB share rather than a local folder.
pub fn is_smb(location: &str) -> bool {
    location.starts_with("\\\\") || location.starts_with("smb://") || location.starts_with("//")
}

/// Whether `location` needs credentials (an SMB share or an S3 bucket), unlike a local folder.
pub fn is_remote(location: &str) -> bool {
    is_smb(location) || is_s3(location)
}

/// Operator warnings about `location` (an SMB host given as an IP address, plain http to a remote
/// S3 gateway); none for a local
/// folder or a location that does not parse (opening it reports that).
pub fn warnings(location: &str) -> Vec<String> {
    if is_s3(location) {
        return S3Location::parse(location)
            .map(|l| l.warnings())
            .unwrap_or_default();
    }
    if !is_smb(location) {
        return Vec::new();
    }
    SmbLocation::parse(location)
        .map(|l| l.warnings())
        .unwrap_or_default()
}

/// Opens (or with `create`, creates `MASBackup` in) the storage behind `location`, wrapped in the
/// retry decorator. `username` and `password` are used for an SMB location only, where both are
/// required. Without `create`, a reachable location without `MASBackup` is
/// [`LocationError::NotARepository`].
pub async fn open(
    location: &str,
    username: Option<&str>,
    password: Option<String>,
    create: bool,
) -> Result<DynStorage, LocationError> {
    open_with(location, username, password, create, OpTimeouts::default()).await
}

/// [`open`] with per-operation timeouts `timeouts` instead of the defaults.
pub async fn open_with(
    location: &str,
    username: Option<&str>,
    password: Option<String>,
    create: bool,
    timeouts: OpTimeouts,
) -> Result<DynStorage, LocationError> {
    let inner: Arc<dyn Storage> = if is_s3(location) {
        let opening = open_s3(location, username, password, create);
        bound_opening(location, timeouts, opening).await?
    } else if is_smb(location) {
        let opening = open_smb(location, username, password, create);
        bound_opening(location, timeouts, opening).await?
    } else {
        Arc::new(open_local(location, create)?)
    };
    let bounded: Arc<dyn Storage> = Arc::new(TimeoutStorage::new(inner, timeouts));
    Ok(Arc::new(RetryStorage::new(bounded, RetryPolicy::default())))
}

/// Opening a remote location (its probes, the SMB session) within the small-request bound: a
/// server that accepts a connection and never answers fails the open as `TimedOut`
/// (Connectivity) instead of hanging it.
async fn bound_opening<T>(
    location: &str,
    timeouts: OpTimeouts,
    opening: impl std::future::Future<Output = Result<T, LocationError>>,
) -> Result<T, LocationError> {
    let limit = timeouts.metadata;
    tokio::time::timeout(limit, opening)
        .await
        .unwrap_or_else(|_| {
            Err(StorageError::new(
                ErrorKind::TimedOut,
                "open",
                None,
                format!(
                    "no answer from {location} within {} s while opening it",
                    limit.as_secs_f64()
                ),
            )
            .transient()
            .into())
        })
}

/// A local folder: the folder must exist; `MASBackup` under it is created or must exist.
fn open_local(folder: &str, create: bool) -> Result<LocalStorage, LocationError> {
    let root = PathBuf::from(folder).join(ROOT_FOLDER);
    LocalStorage::open(folder)?;
    if create {
        return Ok(LocalStorage::create(root)?);
    }
    LocalStorage::open(&root).map_err(|_| LocationError::NotARepository {
        location: folder.to_owned(),
    })
}

fn path_error(e: impl ToString) -> StorageError {
    StorageError::new(ErrorKind::Path, "location", None, e.to_string())
}

async fn connect(
    at: &SmbLocation,
    creds: &SmbCredentials,
    create_folder: bool,
) -> Result<SmbStorage, StorageError> {
    let options = SmbOptions {
        create_folder,
        ..SmbOptions::default()
    };
    SmbStorage::connect(at, creds.clone(), options).await
}

/// An S3 location: the bucket must exist and the credentials list it; `PREFIX/MASBackup` holds the
/// repository (S3 has no folders: without `create`, an empty `MASBackup` prefix is no repository).
async fn open_s3(
    location: &str,
    access_key: Option<&str>,
    secret: Option<String>,
    create: bool,
) -> Result<Arc<dyn Storage>, LocationError> {
    let at = S3Location::parse(location).map_err(path_error)?;
    let (Some(access_key), Some(secret)) = (access_key, secret) else {
        return Err(LocationError::MissingS3Credentials {
            location: location.to_owned(),
        });
    };
    let creds = S3Credentials::new(access_key, secret);
    S3Storage::new(at.config(), &creds).probe().await?;
    let mut config = at.config().join(ROOT_FOLDER);
    config.write_once = WRITE_ONCE.iter().map(|p| p.to_string()).collect();
    let root = S3Storage::new(config, &creds);
    if !create && root.is_empty().await? {
        return Err(LocationError::NotARepository {
            location: location.to_owned(),
        });
    }
    if !root.object_lock_enabled().await? {
        if !at.lock.is_empty() {
            return Err(LocationError::NoObjectLock {
                location: location.to_owned(),
            });
        }
        return Ok(Arc::new(root));
    }
    // Every object ibs writes is locked, except repository locks, damage markers, prune plans and
    // accessibility probes, which ibs deletes itself (markers are hints that prune removes with
    // their pack; a plan is dropped by the sweep that retires what it marks, ADR 0044: a lock on
    // it would protect nothing, since deleting a plan only makes backups deduplicate more and the
    // next mark start over, and would keep swept plans, and their marks, for the whole horizon).
    let exempt = vec![
        layout::LOCKS.to_owned(),
        layout::DAMAGED.to_owned(),
        layout::PLANS.to_owned(),
        PROBE_PREFIX.to_owned(),
    ];
    Ok(Arc::new(LockedWrites::new(
        Arc::new(root),
        at.lock.policy(),
        exempt,
    )))
}

/// An SMB location: the region folder must exist; `MASBackup` in it is created or must exist.
async fn open_smb(
    location: &str,
    username: Option<&str>,
    password: Option<String>,
    create: bool,
) -> Result<Arc<dyn Storage>, LocationError> {
    let region = SmbLocation::parse(location).map_err(path_error)?;
    let Some(username) = username else {
        return Err(LocationError::MissingUsername {
            location: location.to_owned(),
        });
    };
    let Some(password) = password else {
        return Err(LocationError::MissingPassword {
            location: location.to_owned(),
        });
    };
    let creds = SmbCredentials::new(username, password);
    let root = region.join(ROOT_FOLDER).map_err(path_error)?;
    if create {
        drop(connect(&region, &creds, false).await?);
        return Ok(Arc::new(connect(&root, &creds, true).await?));
    }
    match connect(&root, &creds, false).await {
        Ok(s) => Ok(Arc::new(s)),
        Err(e) if e.kind == ErrorKind::Path => {
            // Tell a missing region folder (Path) from a folder without a repository.
            connect(&region, &creds, false).await?;
            Err(LocationError::NotARepository {
                location: location.to_owned(),
            })
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_a_repository_reads_as_the_repository_layers_message() {
        let location = "/srv/backups".to_owned();
        let ours = LocationError::NotARepository {
            location: location.clone(),
        };
        let repo = ibs_repo::RepoError::NotARepository { location };
        assert_eq!(ours.to_string(), repo.to_string());
        assert!(ours.is_not_a_repository());
        assert_eq!(ours.class(), AlertClass::General);
    }

    #[tokio::test]
    async fn a_missing_folder_is_a_path_error_and_an_empty_one_is_not_a_repository() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent");
        let e = open(missing.to_str().unwrap(), None, None, false)
            .await
            .expect_err("a missing folder does not open");
        assert_eq!(e.class(), AlertClass::Path, "{e}");
        assert!(!e.is_not_a_repository());

        let here = dir.path().to_str().unwrap();
        let e = open(here, None, None, false)
            .await
            .expect_err("a folder without MASBackup is no repository");
        assert!(e.is_not_a_repository(), "{e}");

        open(here, None, None, true)
            .await
            .expect("create MASBackup");
        assert!(dir.path().join(ROOT_FOLDER).is_dir());
        open(here, None, None, false)
            .await
            .expect("opens once created");
    }

    #[tokio::test]
    async fn smb_locations_need_a_user_and_a_password_and_a_valid_path() {
        let e = open(
            r"\\files.example.com\share\ibs",
            None,
            Some("pw".into()),
            false,
        )
        .await
        .err()
        .unwrap();
        assert!(matches!(e, LocationError::MissingUsername { .. }), "{e}");
        let e = open(r"\\files.example.com\share\ibs", Some("u"), None, false)
            .await
            .err()
            .unwrap();
        assert!(matches!(e, LocationError::MissingPassword { .. }), "{e}");
        let e = open(r"\\files.example.com", Some("u"), Some("pw".into()), false)
            .await
            .err()
            .unwrap();
        assert_eq!(e.class(), AlertClass::Path, "{e}");
    }

    #[tokio::test]
    async fn s3_locations_need_credentials_and_a_valid_form() {
        let e = open("s3://s3.example.com/bucket/p", Some("AKID"), None, false)
            .await
            .err()
            .unwrap();
        assert!(
            matches!(e, LocationError::MissingS3Credentials { .. }),
            "{e}"
        );
        let e = open(
            "s3://s3.example.com/Bad_Bucket",
            Some("AKID"),
            Some("s".into()),
            false,
        )
        .await
        .err()
        .unwrap();
        assert_eq!(e.class(), AlertClass::Path, "{e}");
        assert!(e.to_string().contains("bucket name"), "{e}");
        assert!(is_remote("s3+http://h/b") && is_remote("smb://h/s") && !is_remote("/srv/x"));
    }
}
