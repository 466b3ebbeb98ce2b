//! `SmbStorage`: the `ibs_storage::Storage` backend over [`SmbClient`].
//!
//! Invariants:
//! - `put` publishes atomically: it writes `.ibs-tmp-<unique>-<name>` in the target folder, flushes,
//!   optionally reads it back (size + BLAKE3), then renames it over the final name (replace) and
//!   closes it. On any failure after the temporary exists it is deleted (best effort).
//! - `list` never returns temporaries or foreign names (only valid `ObjectKey`s), and never comes
//!   back shorter than the share ([`listing`]: authenticated replies, a vanished sub-folder fails).
//! - A missing repository root is `Path`; a missing object is `NotFound`.
//! - `get_range` reuses open read handles ([`crate::handles`]): a restore reading a pack chunk by
//!   chunk pays one READ per chunk, not CREATE + READ + CLOSE; `put` and `delete` close the
//!   object's cached handle first.
//! - Errors are classified once, from typed SMB errors ([`SmbError::into_storage`]).

mod listing;

use crate::client::{SmbClient, SmbOptions};
use crate::error::{SmbError, SmbResult, Stage};
use crate::handles::ReadHandles;
use crate::location::{SmbCredentials, SmbLocation};
use crate::messages::{self as m, CreateParams, FileId};
use crate::ntstatus::NtStatus;
use crate::ops::FsSize;
use crate::session::{Session, SessionParams};
use async_trait::async_trait;
use bytes::Bytes;
use ibs_storage::{
    check_deletable_foreign, is_deletable_foreign, Capabilities, ErrorKind, ForeignFile,
    ObjectInfo, ObjectKey, Result, SpaceInfo, Storage, StorageError, TEMP_PREFIX,
};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Longest extra time a failed `put` spends removing its temporary on a fresh session.
const CLEANUP_BUDGET: Duration = Duration::from_secs(2);

/// A repository folder on an SMB share.
#[derive(Debug)]
pub struct SmbStorage {
    client: SmbClient,
    location: SmbLocation,
    options: SmbOptions,
    /// Share-relative path of the repository root (`a\b`, empty for the share root).
    root: String,
    /// Read handles kept open between ranged reads of the same object.
    handles: ReadHandles,
}

impl SmbStorage {
    /// Connects, authenticates, connects the share and creates the folder path if missing.
    pub async fn connect(
        location: &SmbLocation,
        creds: SmbCredentials,
        options: SmbOptions,
    ) -> Result<SmbStorage> {
        // The location's floor (SMB 3.0 unless it opts into 2.1) bounds what the options offer.
        let dialects: Vec<_> = options
            .dialects
            .iter()
            .copied()
            .filter(|d| *d >= location.min_dialect)
            .collect();
        if dialects.is_empty() {
            return Err(StorageError::new(
                ErrorKind::Invalid,
                "connect",
                None,
                format!(
                    "no SMB dialect left to offer: the options allow {:?}, the location {} accepts \
                     {:?} and up (SMB 2.1 needs ?min-dialect=2.1 at the end of the location)",
                    options.dialects, location, location.min_dialect
                ),
            ));
        }
        let params = SessionParams {
            host: location.host.clone(),
            port: options.port.unwrap_or(location.port),
            share: location.share.clone(),
            username: creds.username.clone(),
            password: creds.password.clone(),
            dialects,
            require_encryption: options.require_encryption,
            connect_timeout: options.connect_timeout,
            op_timeout: options.op_timeout,
            gmac_signing: options.gmac_signing,
        };
        let client = SmbClient::connect(params)
            .await
            .map_err(|e| e.into_storage("connect", None))?;
        let s = SmbStorage {
            client,
            location: location.clone(),
            root: location.folder_path(),
            options,
            handles: ReadHandles::default(),
        };
        let session = s
            .client
            .session()
            .await
            .map_err(|e| e.into_storage("connect", None))?;
        let mut path = String::new();
        for c in &location.folder {
            if !path.is_empty() {
                path.push('\\');
            }
            path.push_str(c);
            if s.options.create_folder {
                let r = session.mkdir_if_missing(&path, Stage::Root).await;
                s.client.note(&session, &r);
                r.map_err(|e| e.into_storage("connect", None))?;
            }
        }
        if !s.options.create_folder && !path.is_empty() {
            // The folder must already exist: a missing one is a Path fault, not something to create.
            let r = session
                .open_existing(&path, m::GENERIC_READ, Stage::Root)
                .await;
            s.client.note(&session, &r);
            let opened = r.map_err(|e| e.into_storage("connect", None))?;
            let r = session.close(opened.file_id).await;
            s.client.note(&session, &r);
        }
        Ok(s)
    }

    /// The dialect and encryption state of the current session (tests, diagnostics).
    pub async fn session_info(&self) -> Result<(crate::crypto::Dialect, bool)> {
        let s = self
            .client
            .session()
            .await
            .map_err(|e| e.into_storage("session", None))?;
        Ok((s.dialect, s.is_encrypted()))
    }

    /// The reconnecting client (for tests).
    pub fn client(&self) -> &SmbClient {
        &self.client
    }

    fn path(&self, rel: &str) -> String {
        let rel = rel.replace('/', "\\");
        match (self.root.is_empty(), rel.is_empty()) {
            (true, _) => rel,
            (false, true) => self.root.clone(),
            (false, false) => format!("{}\\{rel}", self.root),
        }
    }

    /// Runs `f` on the live session; connection-breaking errors kill it so the next call reconnects.
    async fn run<T, F, Fut>(&self, op: &'static str, key: Option<&str>, f: F) -> Result<T>
    where
        F: FnOnce(Arc<Session>) -> Fut,
        Fut: Future<Output = SmbResult<T>>,
    {
        let s = self
            .client
            .session()
            .await
            .map_err(|e| e.into_storage(op, key))?;
        let r = f(s.clone()).await;
        self.client.note(&s, &r);
        match r {
            Ok(v) => Ok(v),
            Err(e) => {
                let mut err = e.into_storage(op, key);
                if err.kind == ErrorKind::NotFound && !self.root_exists(&s).await {
                    err.kind = ErrorKind::Path;
                    err.message = format!(
                        "repository folder {} is gone: {}",
                        self.location, err.message
                    );
                }
                Err(err)
            }
        }
    }

    async fn root_exists(&self, s: &Session) -> bool {
        if self.root.is_empty() {
            return true;
        }
        match s
            .open_existing(&self.root, m::FILE_READ_ATTRIBUTES, Stage::Root)
            .await
        {
            Ok(r) => {
                let _ = s.close(r.file_id).await;
                true
            }
            Err(e) => !matches!(
                e.nt_status(),
                Some(
                    NtStatus::OBJECT_NAME_NOT_FOUND
                        | NtStatus::OBJECT_PATH_NOT_FOUND
                        | NtStatus::NOT_A_DIRECTORY
                )
            ),
        }
    }

    fn temp_name(name: &str) -> String {
        let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let r: u32 = rand::random();
        let mut t = format!("{TEMP_PREFIX}{}-{seq}-{r:08x}-", std::process::id());
        let room = 250usize.saturating_sub(t.len());
        t.push_str(&name[..name.len().min(room)]);
        t
    }

    async fn put_inner(&self, s: &Session, key: &ObjectKey, data: &Bytes) -> SmbResult<()> {
        let (dir, name) = match key.as_str().rsplit_once('/') {
            Some((d, n)) => (d, n),
            None => ("", key.as_str()),
        };
        let final_path = self.path(key.as_str());
        let tmp_rel = if dir.is_empty() {
            Self::temp_name(name)
        } else {
            format!("{dir}/{}", Self::temp_name(name))
        };
        let tmp_path = self.path(&tmp_rel);
        let params = CreateParams {
            access: m::GENERIC_READ | m::GENERIC_WRITE | m::DELETE,
            attributes: m::ATTR_NORMAL,
            share: m::SHARE_ALL,
            disposition: m::DISPOSITION_CREATE,
            options: m::OPT_NON_DIRECTORY,
        };
        let created = match s.create(&tmp_path, &params, Stage::Object).await {
            Err(e) if e.nt_status() == Some(NtStatus::OBJECT_PATH_NOT_FOUND) && !dir.is_empty() => {
                self.mkdirs(s, dir).await?;
                s.create(&tmp_path, &params, Stage::Object).await?
            }
            Err(e) if e.nt_status() == Some(NtStatus::OBJECT_PATH_NOT_FOUND) => {
                return Err(SmbError::status(
                    "create",
                    Stage::Root,
                    NtStatus::OBJECT_PATH_NOT_FOUND,
                ))
            }
            r => r?,
        };
        let id = created.file_id;
        let r = self.write_verify_publish(s, id, data, &final_path).await;
        match r {
            Ok(()) => {
                // Published under the final name; a failing close cannot undo that.
                if let Err(e) = s.close(id).await {
                    tracing::warn!(error = %e, "close after publishing failed");
                }
                Ok(())
            }
            Err(e) => {
                self.discard_temp(s, id, &tmp_path, &e).await;
                Err(e)
            }
        }
    }

    /// Creates the missing folders of `dir` (a `/`-separated key folder) one by one. A missing
    /// root is a path fault, not an object one.
    async fn mkdirs(&self, s: &Session, dir: &str) -> SmbResult<()> {
        let mut p = String::new();
        for c in dir.split('/') {
            if !p.is_empty() {
                p.push('/');
            }
            p.push_str(c);
            match s.mkdir_if_missing(&self.path(&p), Stage::Object).await {
                Err(e) if e.nt_status() == Some(NtStatus::OBJECT_PATH_NOT_FOUND) => {
                    return Err(SmbError::status(
                        "create folder",
                        Stage::Root,
                        NtStatus::OBJECT_PATH_NOT_FOUND,
                    ))
                }
                r => r?,
            }
        }
        Ok(())
    }

    /// Renames `from` over `to` on the server (one SET_INFO), creating `to`'s folders when the
    /// server says they are missing.
    async fn rename_inner(&self, s: &Session, from: &ObjectKey, to: &ObjectKey) -> SmbResult<()> {
        let p = CreateParams {
            access: m::DELETE | m::FILE_READ_ATTRIBUTES,
            attributes: 0,
            share: m::SHARE_ALL,
            disposition: m::DISPOSITION_OPEN,
            options: m::OPT_NON_DIRECTORY,
        };
        let f = s
            .create(&self.path(from.as_str()), &p, Stage::Object)
            .await?;
        let target = self.path(to.as_str());
        let mut r = s.rename(f.file_id, &target, true).await;
        if let (Err(e), Some((dir, _))) = (&r, to.as_str().rsplit_once('/')) {
            if e.nt_status() == Some(NtStatus::OBJECT_PATH_NOT_FOUND) {
                r = match self.mkdirs(s, dir).await {
                    Ok(()) => s.rename(f.file_id, &target, true).await,
                    Err(e) => Err(e),
                };
            }
        }
        let c = s.close(f.file_id).await;
        r?;
        c
    }

    async fn write_verify_publish(
        &self,
        s: &Session,
        id: FileId,
        data: &Bytes,
        final_path: &str,
    ) -> SmbResult<()> {
        s.write_all(id, data, self.options.max_in_flight).await?;
        s.flush(id).await?;
        if self.options.verify_writes {
            let (size, _) = s.query_standard(id).await?;
            if size != data.len() as u64 {
                return Err(SmbError::Protocol(format!(
                    "verify: server has {size} bytes, wrote {}",
                    data.len()
                )));
            }
            let back = s
                .read_exact(id, 0, size, self.options.max_in_flight)
                .await?;
            if blake3::hash(&back) != blake3::hash(data) {
                return Err(SmbError::Protocol(
                    "verify: read-back content differs from what was written".into(),
                ));
            }
        }
        s.rename(id, final_path, true).await
    }

    /// Best-effort removal of a temporary: through the open handle, or on a fresh session.
    async fn discard_temp(&self, s: &Session, id: FileId, tmp_path: &str, cause: &SmbError) {
        if s.is_alive() && s.set_delete_pending(id).await.is_ok() && s.close(id).await.is_ok() {
            return;
        }
        if s.is_alive() {
            let _ = s.close(id).await;
        }
        if matches!(cause, SmbError::Timeout { .. }) {
            // An unresponsive server: a fresh session would most likely hang too.
            tracing::warn!(
                "temporary left behind after a timeout; remove_stale_temporaries will remove it"
            );
            return;
        }
        // The connection is gone: try once on a fresh session, briefly, so a hung server cannot
        // delay the caller's error by more than CLEANUP_BUDGET. What is left over is removed later
        // by `remove_stale_temporaries`.
        let attempt = async {
            let s2 = self.client.session().await?;
            let r = delete_path(&s2, tmp_path).await;
            self.client.note(&s2, &r);
            r
        };
        match tokio::time::timeout(CLEANUP_BUDGET, attempt).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not remove a temporary; remove_stale_temporaries will")
            }
            Err(_) => {
                tracing::warn!("removing a temporary timed out; remove_stale_temporaries will")
            }
        }
    }
}

async fn delete_path(s: &Session, path: &str) -> SmbResult<()> {
    let p = CreateParams {
        access: m::DELETE | m::FILE_READ_ATTRIBUTES,
        attributes: 0,
        share: m::SHARE_ALL,
        disposition: m::DISPOSITION_OPEN,
        options: m::OPT_NON_DIRECTORY,
    };
    let f = s.create(path, &p, Stage::Object).await?;
    let r = s.set_delete_pending(f.file_id).await;
    let c = s.close(f.file_id).await;
    r?;
    c
}

async fn open_read(s: &Session, path: &str) -> SmbResult<m::CreateResponse> {
    let p = CreateParams {
        access: m::GENERIC_READ,
        attributes: 0,
        share: m::SHARE_ALL,
        disposition: m::DISPOSITION_OPEN,
        options: m::OPT_NON_DIRECTORY,
    };
    s.create(path, &p, Stage::Object).await
}

fn not_a_file(e: SmbError) -> SmbError {
    match e {
        SmbError::Status {
            op,
            stage,
            status: NtStatus::FILE_IS_A_DIRECTORY,
        } => SmbError::Status {
            op,
            stage,
            status: NtStatus::OBJECT_NAME_NOT_FOUND,
        },
        e => e,
    }
}

#[async_trait]
impl Storage for SmbStorage {
    fn location(&self) -> String {
        self.location.to_string()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            list_after_write: true,
            verifies_writes: self.options.verify_writes,
            max_object_size: 1 << 40,
            ranged_reads: true,
            prefers_large_reads: false,
            put_size_hint: None,
            local: false,
        }
    }

    async fn put(&self, key: &ObjectKey, data: Bytes) -> Result<()> {
        self.handles.forget(&self.path(key.as_str())).await;
        self.run("put", Some(key.as_str()), |s| async move {
            self.put_inner(&s, key, &data).await
        })
        .await
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        let path = self.path(key.as_str());
        self.run("get", Some(key.as_str()), |s| async move {
            let f = open_read(&s, &path).await.map_err(not_a_file)?;
            let r = s
                .read_exact(f.file_id, 0, f.end_of_file, self.options.max_in_flight)
                .await;
            let c = s.close(f.file_id).await;
            let data = r?;
            c?;
            Ok(data)
        })
        .await
    }

    async fn get_range(&self, key: &ObjectKey, offset: u64, len: u64) -> Result<Bytes> {
        let path = self.path(key.as_str());
        let r = self
            .run("get_range", Some(key.as_str()), |s| async move {
                let f = self
                    .handles
                    .get_or_open(&s, &path, || async {
                        let f = open_read(&s, &path).await.map_err(not_a_file)?;
                        Ok((f.file_id, f.end_of_file))
                    })
                    .await?;
                if offset
                    .checked_add(len)
                    .is_none_or(|end| end > f.end_of_file)
                {
                    return Err(SmbError::Invalid(format!(
                        "range {offset}+{len} is past the end ({} bytes)",
                        f.end_of_file
                    )));
                }
                s.read_exact(f.file_id, offset, len, self.options.max_in_flight)
                    .await
            })
            .await;
        if r.is_err() {
            // Whatever went wrong, the next read of this object starts from a fresh open.
            self.handles.forget(&self.path(key.as_str())).await;
        }
        r
    }

    async fn stat(&self, key: &ObjectKey) -> Result<ObjectInfo> {
        let path = self.path(key.as_str());
        self.run("stat", Some(key.as_str()), |s| async move {
            let f = s
                .open_existing(&path, m::FILE_READ_ATTRIBUTES, Stage::Object)
                .await?;
            s.close(f.file_id).await?;
            if f.attributes & m::ATTR_DIRECTORY != 0 {
                return Err(SmbError::status(
                    "stat",
                    Stage::Object,
                    NtStatus::OBJECT_NAME_NOT_FOUND,
                ));
            }
            Ok(ObjectInfo {
                key: key.clone(),
                size: f.end_of_file,
                modified: Some(crate::wire::filetime_to_unix_secs(f.last_write_time)),
            })
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.run("list", Some(prefix), |s| async move {
            self.list_inner(&s, prefix).await
        })
        .await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        let path = self.path(key.as_str());
        self.handles.forget(&path).await;
        self.run("delete", Some(key.as_str()), |s| async move {
            delete_path(&s, &path).await.map_err(not_a_file)
        })
        .await
    }

    async fn rename(&self, from: &ObjectKey, to: &ObjectKey) -> Result<()> {
        self.handles.forget(&self.path(from.as_str())).await;
        self.handles.forget(&self.path(to.as_str())).await;
        self.run("rename", Some(from.as_str()), |s| async move {
            self.rename_inner(&s, from, to).await.map_err(not_a_file)
        })
        .await
    }

    async fn space(&self) -> Result<Option<SpaceInfo>> {
        let root = self.root.clone();
        let fs: FsSize = self
            .run("space", None, |s| async move {
                let d = s
                    .open_existing(&root, m::FILE_READ_ATTRIBUTES, Stage::Root)
                    .await?;
                let r = s.fs_full_size(d.file_id).await;
                let c = s.close(d.file_id).await;
                let fs = r?;
                c?;
                Ok(fs)
            })
            .await?;
        Ok(Some(SpaceInfo {
            available: fs.available,
            total: fs.total,
        }))
    }

    async fn remove_stale_temporaries(&self, older_than: Duration) -> Result<usize> {
        self.run("remove_stale_temporaries", None, |s| async move {
            self.remove_temps_inner(&s, older_than).await
        })
        .await
    }

    async fn list_foreign(&self) -> Result<Vec<ForeignFile>> {
        self.run("list_foreign", None, |s| async move {
            Ok(self
                .walk_files(&s, "")
                .await?
                .into_iter()
                .filter(|(k, _)| is_deletable_foreign(k))
                .map(|(path, e)| ForeignFile { path, size: e.size })
                .collect())
        })
        .await
    }

    async fn delete_foreign(&self, path: &str) -> Result<()> {
        check_deletable_foreign(path)?;
        let full = self.path(path);
        self.run("delete_foreign", Some(path), |s| async move {
            delete_path(&s, &full).await.map_err(not_a_file)
        })
        .await
    }
}

impl From<SmbError> for StorageError {
    fn from(e: SmbError) -> Self {
        e.into_storage("smb", None)
    }
}
