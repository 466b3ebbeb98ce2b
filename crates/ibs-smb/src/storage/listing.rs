//! Listing a repository folder on the share: the recursive walk behind `list`, `list_foreign`
//! and `remove_stale_temporaries`.
//!
//! Invariant: a listing is never silently shorter than the share. Every reply it rests on is
//! authenticated by the session (an unsigned STATUS_NO_MORE_FILES or NOT_FOUND never gets here), a
//! missing start folder is an empty listing (nothing was put under that prefix), and a sub-folder
//! the walk saw that is gone when it is opened fails the listing with
//! [`SmbError::ListingChanged`] instead of being skipped.

use super::{delete_path, SmbStorage};
use crate::error::{SmbError, SmbResult, Stage};
use crate::messages::{self as m, CreateParams};
use crate::ntstatus::NtStatus;
use crate::session::Session;
use ibs_storage::{ObjectInfo, ObjectKey, TEMP_PREFIX};
use std::time::Duration;

impl SmbStorage {
    /// Every file (not folder) under the folder named by `prefix`'s directory part whose relative
    /// `/`-path starts with `prefix`, with its directory entry. Every reply is authenticated (see
    /// [`crate::session`]), so "no more files" and "not found" are the server's word. A missing
    /// start folder is an empty listing (nothing was ever put under that prefix); a sub-folder
    /// that the walk saw and that is gone when it is opened is [`SmbError::ListingChanged`], never
    /// skipped, so a listing cannot come back shorter than the share. A failure at the root is a
    /// `Root`-stage error.
    pub(super) async fn walk_files(
        &self,
        s: &Session,
        prefix: &str,
    ) -> SmbResult<Vec<(String, m::DirEntry)>> {
        let dir_part = prefix.rfind('/').map(|i| &prefix[..i]).unwrap_or("");
        let mut out = Vec::new();
        let mut stack = vec![dir_part.to_owned()];
        while let Some(rel) = stack.pop() {
            let entries = match list_path(s, &self.path(&rel)).await {
                Ok(e) => e,
                Err(e)
                    if rel != dir_part
                        && matches!(
                            e.nt_status(),
                            Some(
                                NtStatus::OBJECT_NAME_NOT_FOUND
                                    | NtStatus::OBJECT_PATH_NOT_FOUND
                                    | NtStatus::NOT_A_DIRECTORY
                            )
                        ) =>
                {
                    return Err(SmbError::ListingChanged { path: rel })
                }
                Err(e)
                    if !rel.is_empty()
                        && matches!(
                            e.nt_status(),
                            Some(
                                NtStatus::OBJECT_NAME_NOT_FOUND
                                    | NtStatus::OBJECT_PATH_NOT_FOUND
                                    | NtStatus::NOT_A_DIRECTORY
                            )
                        ) =>
                {
                    continue
                }
                Err(SmbError::Status { op, status, .. }) if rel.is_empty() => {
                    return Err(SmbError::Status {
                        op,
                        stage: Stage::Root,
                        status,
                    })
                }
                Err(e) => return Err(e),
            };
            for e in entries {
                let k = if rel.is_empty() {
                    e.name.clone()
                } else {
                    format!("{rel}/{}", e.name)
                };
                if e.is_dir {
                    stack.push(k);
                } else if k.starts_with(prefix) {
                    out.push((k, e));
                }
            }
        }
        Ok(out)
    }

    pub(super) async fn list_inner(&self, s: &Session, prefix: &str) -> SmbResult<Vec<ObjectInfo>> {
        self.walk_files(s, prefix)
            .await?
            .into_iter()
            // Temporaries and foreign names are not objects.
            .filter(|(k, _)| ObjectKey::is_valid(k))
            .map(|(k, e)| {
                Ok(ObjectInfo {
                    key: ObjectKey::new(k).map_err(|e| SmbError::Invalid(e.message))?,
                    size: e.size,
                    modified: Some(crate::wire::filetime_to_unix_secs(e.last_write_time)),
                })
            })
            .collect()
    }

    pub(super) async fn remove_temps_inner(
        &self,
        s: &Session,
        older_than: Duration,
    ) -> SmbResult<usize> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut removed = 0;
        for (k, e) in self.walk_files(s, "").await? {
            if e.name.starts_with(TEMP_PREFIX) {
                let age = now - crate::wire::filetime_to_unix_secs(e.last_write_time);
                if age >= older_than.as_secs() as i64
                    && delete_path(s, &self.path(&k)).await.is_ok()
                {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

async fn list_path(s: &Session, path: &str) -> SmbResult<Vec<m::DirEntry>> {
    let p = CreateParams {
        access: m::FILE_READ_DATA | m::FILE_READ_ATTRIBUTES | m::SYNCHRONIZE,
        attributes: 0,
        share: m::SHARE_ALL,
        disposition: m::DISPOSITION_OPEN,
        options: m::OPT_DIRECTORY,
    };
    let d = s.create(path, &p, Stage::Object).await?;
    let r = s.list_dir(d.file_id).await;
    let c = s.close(d.file_id).await;
    let entries = r?;
    c?;
    Ok(entries)
}
