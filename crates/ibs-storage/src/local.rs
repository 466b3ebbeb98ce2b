//! The local-folder backend. It publishes every object by writing a temporary file in the target
//! directory, `fsync`ing it, renaming it over the final name and `fsync`ing the directory, so an object
//! is either absent or whole after a crash or power loss (on filesystems that honour fsync: ext4, xfs,
//! btrfs, zfs). All blocking filesystem calls run on tokio's blocking pool.

use crate::key::TEMP_PREFIX;
use crate::local_reads::ReadFiles;
use crate::recycle::Recycler;
use crate::{
    check_deletable_foreign, is_deletable_foreign, Capabilities, ErrorKind, ForeignFile,
    ObjectInfo, ObjectKey, Result, SpaceInfo, Storage, StorageError,
};
use async_trait::async_trait;
use bytes::Bytes;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A repository in a local (or locally mounted) folder.
#[derive(Debug)]
pub struct LocalStorage {
    root: PathBuf,
    /// Buffers of large reads, reused once their `Bytes` are dropped (`recycle`).
    recycler: Arc<Recycler>,
    /// Files kept open between ranged reads (`local_reads`).
    reads: Arc<ReadFiles>,
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl LocalStorage {
    /// Opens a folder that must already exist. A missing folder or a file in its place is a `Path`
    /// error; use [`LocalStorage::create`] to make it.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        match fs::metadata(&root) {
            Ok(m) if m.is_dir() => Ok(LocalStorage {
                root,
                recycler: Arc::default(),
                reads: Arc::default(),
            }),
            Ok(_) => Err(StorageError::new(
                ErrorKind::Path,
                "open",
                None,
                format!("{} is not a directory", root.display()),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StorageError::new(
                ErrorKind::Path,
                "open",
                None,
                format!("folder {} does not exist", root.display()),
            )),
            Err(e) => Err(StorageError::from_io("open", None, &e)),
        }
    }

    /// Creates the folder (and parents) if needed, then opens it.
    pub fn create(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|e| {
            let mut err = StorageError::from_io("create", None, &e);
            if err.kind == ErrorKind::NotFound {
                err.kind = ErrorKind::Path;
            }
            err.message = format!("cannot create {}: {}", root.display(), err.message);
            err
        })?;
        Self::open(root)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.as_str())
    }

    /// Reads the whole object at `key`, into a buffer of `recycler` if given (ADR 0054).
    async fn read_whole(&self, key: &ObjectKey, recycler: Option<Arc<Recycler>>) -> Result<Bytes> {
        let op = "get";
        let path = self.path_of(key);
        let key = key.clone();
        let root = self.root.clone();
        self.blocking(op, move || {
            let mut f = File::open(&path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound && !root.is_dir() {
                    return StorageError::new(
                        ErrorKind::Path,
                        op,
                        Some(key.as_str()),
                        "repository folder is gone",
                    );
                }
                StorageError::from_io(op, Some(key.as_str()), &e)
            })?;
            let size = f.metadata().map(|m| m.len() as usize).unwrap_or(0);
            let mut buf = match &recycler {
                Some(r) => r.buffer(size),
                None => Vec::with_capacity(size),
            };
            f.read_to_end(&mut buf).map_err(io_err(op, &key))?;
            Ok(match &recycler {
                Some(r) => Recycler::bytes(r, buf),
                None => Bytes::from(buf),
            })
        })
        .await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        tokio::task::spawn_blocking(f).await.map_err(|e| {
            StorageError::new(ErrorKind::Other, op, None, format!("worker failed: {e}"))
        })?
    }

    fn check_root(root: &Path, op: &'static str) -> Result<()> {
        if root.is_dir() {
            Ok(())
        } else {
            Err(StorageError::new(
                ErrorKind::Path,
                op,
                None,
                format!("folder {} is gone", root.display()),
            ))
        }
    }
}

fn io_err<'a>(
    op: &'static str,
    key: &'a ObjectKey,
) -> impl Fn(std::io::Error) -> StorageError + 'a {
    move |e| StorageError::from_io(op, Some(key.as_str()), &e)
}

/// A ranged read of the object `key` at `path` (`get_range` and `get_range_blocking`), through
/// a file kept open in `reads`.
fn read_range(
    reads: &ReadFiles,
    path: &Path,
    key: &ObjectKey,
    offset: u64,
    len: u64,
) -> Result<Bytes> {
    let (f, size) = reads
        .get_or_open(key.as_str(), path)
        .map_err(io_err("get_range", key))?;
    if offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(StorageError::new(
            ErrorKind::Invalid,
            "get_range",
            Some(key.as_str()),
            format!("range {offset}+{len} is past the end ({size} bytes)"),
        ));
    }
    // Positioned reads: the file is shared. (`calloc` hands large buffers out as fresh zero pages,
    // so the zeroed buffer costs no extra pass.)
    let mut buf = vec![0u8; len as usize];
    if let Err(e) = f.read_exact_at(&mut buf, offset) {
        if e.kind() != std::io::ErrorKind::UnexpectedEof {
            return Err(io_err("get_range", key)(e));
        }
        reads.forget(key.as_str());
        return Err(StorageError::new(
            ErrorKind::Invalid,
            "get_range",
            Some(key.as_str()),
            "object shrank while it was read",
        ));
    }
    Ok(Bytes::from(buf))
}

/// Objects at least this large (packs) are written past the page cache (see [`write_direct`]).
const DIRECT_MIN: usize = 1 << 20;

/// Writes `data` to the empty file `f` with O_DIRECT where the file system allows it
/// ([`crate::direct`]): the whole blocks past the page cache, the tail (and everything, if O_DIRECT
/// is refused at any point) through it. The caller still `fsync`s.
fn write_direct(f: &mut File, data: &[u8]) -> std::io::Result<()> {
    write_direct_skewed(f, data, 0).map(|_| ())
}

/// [`write_direct`] with the bounce buffer `skew` bytes off alignment (see
/// [`crate::direct::write_at`]). Returns how many bytes went past the page cache.
fn write_direct_skewed(f: &mut File, data: &[u8], skew: usize) -> std::io::Result<usize> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    let fd = f.as_raw_fd();
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    let set = |direct: bool| {
        let mut fl = flags;
        fl.set(OFlag::O_DIRECT, direct);
        fcntl(fd, FcntlArg::F_SETFL(fl))
    };
    let mut done = 0;
    if set(true).is_ok() {
        done = crate::direct::write_at(f, 0, data, skew)?;
        set(false)?;
    }
    f.write_all_at(&data[done..], done as u64)?;
    Ok(done)
}

fn put_blocking(root: &Path, key: &ObjectKey, data: &[u8]) -> Result<()> {
    LocalStorage::check_root(root, "put")?;
    let target = root.join(key.as_str());
    let dir = target.parent().unwrap_or(root).to_path_buf();
    fs::create_dir_all(&dir).map_err(io_err("put", key))?;
    let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(
        "{TEMP_PREFIX}{}-{seq}-{}",
        std::process::id(),
        key.name()
    ));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        if data.len() >= DIRECT_MIN {
            write_direct(&mut f, data)?;
        } else {
            f.write_all(data)?;
        }
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &target)?;
        // Make the rename itself durable.
        File::open(&dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(StorageError::from_io("put", Some(key.as_str()), &e));
    }
    Ok(())
}

/// Every regular file under `root/<dir part of prefix>` whose relative path starts with `prefix`,
/// as (relative `/`-path, size, modification time in Unix seconds). Names that are not UTF-8 are skipped (they cannot be keys, and a
/// lossy name could not be deleted by name).
fn walk_files(
    root: &Path,
    prefix: &str,
    op: &'static str,
) -> Result<Vec<(String, u64, Option<i64>)>> {
    LocalStorage::check_root(root, op)?;
    // Start at the deepest directory named by the prefix, then filter by the full prefix.
    let dir_part = match prefix.rfind('/') {
        Some(i) => &prefix[..i],
        None => "",
    };
    let start = if dir_part.is_empty() {
        root.to_path_buf()
    } else {
        root.join(dir_part)
    };
    let mut out = Vec::new();
    let mut stack = vec![start.clone()];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            // Nothing was ever put under this prefix.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir == start => continue,
            // A folder this walk saw is gone: the listing would come back shorter than the
            // store; fail it (transient) rather than skip (storage contract, `list`).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut err = StorageError::new(
                    ErrorKind::Other,
                    op,
                    Some(prefix),
                    format!(
                        "folder {} vanished during the listing; list again",
                        dir.display()
                    ),
                );
                err.transient = true;
                return Err(err);
            }
            Err(e) => return Err(StorageError::from_io(op, Some(prefix), &e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::from_io(op, Some(prefix), &e))?;
            // An entry removed or renamed (a put's temporary becoming its object, a released lock)
            // between the directory read and its stat is not part of the listing.
            let ft = match entry.file_type() {
                Ok(ft) => ft,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StorageError::from_io(op, Some(prefix), &e)),
            };
            let path = entry.path();
            if ft.is_dir() {
                stack.push(path);
                continue;
            }
            if !ft.is_file() {
                continue;
            }
            let Ok(rel) = path.strip_prefix(root) else {
                continue;
            };
            let Some(rel) = rel.to_str() else { continue };
            if !rel.starts_with(prefix) {
                continue;
            }
            let m = match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StorageError::from_io(op, Some(rel), &e)),
            };
            out.push((rel.to_owned(), m.len(), modified_secs(&m)));
        }
    }
    Ok(out)
}

fn list_blocking(root: &Path, prefix: &str) -> Result<Vec<ObjectInfo>> {
    walk_files(root, prefix, "list")?
        .into_iter()
        // Temporaries and foreign names are not objects.
        .filter(|(rel, _, _)| ObjectKey::is_valid(rel))
        .map(|(rel, size, modified)| {
            Ok(ObjectInfo {
                key: ObjectKey::new(rel)?,
                size,
                modified,
            })
        })
        .collect()
}

/// A file's modification time in Unix seconds.
fn modified_secs(m: &fs::Metadata) -> Option<i64> {
    m.modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs() as i64)
}

fn list_foreign_blocking(root: &Path) -> Result<Vec<ForeignFile>> {
    Ok(walk_files(root, "", "list_foreign")?
        .into_iter()
        .filter(|(rel, _, _)| is_deletable_foreign(rel))
        .map(|(path, size, _)| ForeignFile { path, size })
        .collect())
}

fn remove_temps_blocking(root: &Path, older_than: Duration) -> Result<usize> {
    let now = SystemTime::now();
    let mut removed = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                let age = meta
                    .modified()
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .unwrap_or_default();
                if age >= older_than && fs::remove_file(&path).is_ok() {
                    removed += 1;
                }
            }
        }
    }
    Ok(removed)
}

#[async_trait]
impl Storage for LocalStorage {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            list_after_write: true,
            verifies_writes: false,
            max_object_size: u64::MAX,
            ranged_reads: true,
            prefers_large_reads: false,
            put_size_hint: None,
            local: true,
        }
    }

    async fn put(&self, key: &ObjectKey, data: Bytes) -> Result<()> {
        self.reads.forget(key.as_str());
        let root = self.root.clone();
        let key = key.clone();
        self.blocking("put", move || put_blocking(&root, &key, &data))
            .await
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        self.read_whole(key, None).await
    }

    async fn get_reusable(&self, key: &ObjectKey) -> Result<Bytes> {
        self.read_whole(key, Some(self.recycler.clone())).await
    }

    async fn get_range(&self, key: &ObjectKey, offset: u64, len: u64) -> Result<Bytes> {
        let path = self.path_of(key);
        let key = key.clone();
        let reads = self.reads.clone();
        self.blocking("get_range", move || {
            read_range(&reads, &path, &key, offset, len)
        })
        .await
    }

    fn get_range_blocking(&self, key: &ObjectKey, offset: u64, len: u64) -> Option<Result<Bytes>> {
        Some(read_range(
            &self.reads,
            &self.path_of(key),
            key,
            offset,
            len,
        ))
    }

    async fn stat(&self, key: &ObjectKey) -> Result<ObjectInfo> {
        let path = self.path_of(key);
        let key = key.clone();
        self.blocking("stat", move || {
            let m = fs::metadata(&path).map_err(io_err("stat", &key))?;
            if !m.is_file() {
                return Err(StorageError::not_found("stat", key.as_str()));
            }
            Ok(ObjectInfo {
                key,
                size: m.len(),
                modified: modified_secs(&m),
            })
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        self.blocking("list", move || list_blocking(&root, &prefix))
            .await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.reads.forget(key.as_str());
        let path = self.path_of(key);
        let key = key.clone();
        self.blocking("delete", move || {
            fs::remove_file(&path).map_err(io_err("delete", &key))
        })
        .await
    }

    async fn rename(&self, from: &ObjectKey, to: &ObjectKey) -> Result<()> {
        self.reads.forget(from.as_str());
        self.reads.forget(to.as_str());
        let (src, dst) = (self.path_of(from), self.path_of(to));
        let (from, to) = (from.clone(), to.clone());
        let root = self.root.clone();
        self.blocking("rename", move || {
            LocalStorage::check_root(&root, "rename")?;
            if !fs::metadata(&src)
                .map_err(io_err("rename", &from))?
                .is_file()
            {
                return Err(StorageError::not_found("rename", from.as_str()));
            }
            let dir = dst.parent().unwrap_or(&root).to_path_buf();
            fs::create_dir_all(&dir).map_err(io_err("rename", &to))?;
            fs::rename(&src, &dst).map_err(io_err("rename", &from))?;
            // Both folders' entries must be durable: the new name, and the old one gone.
            for d in [dir.as_path(), src.parent().unwrap_or(&root)] {
                File::open(d)
                    .and_then(|f| f.sync_all())
                    .map_err(io_err("rename", &to))?;
            }
            Ok(())
        })
        .await
    }

    async fn space(&self) -> Result<Option<SpaceInfo>> {
        let root = self.root.clone();
        self.blocking("space", move || {
            let st = nix::sys::statvfs::statvfs(&root).map_err(|e| {
                StorageError::from_io("space", None, &std::io::Error::from_raw_os_error(e as i32))
            })?;
            let frag = st.fragment_size() as u64;
            Ok(Some(SpaceInfo {
                available: st.blocks_available() as u64 * frag,
                total: st.blocks() as u64 * frag,
            }))
        })
        .await
    }

    async fn remove_stale_temporaries(&self, older_than: Duration) -> Result<usize> {
        let root = self.root.clone();
        self.blocking("remove_stale_temporaries", move || {
            remove_temps_blocking(&root, older_than)
        })
        .await
    }

    async fn list_foreign(&self) -> Result<Vec<ForeignFile>> {
        let root = self.root.clone();
        self.blocking("list_foreign", move || list_foreign_blocking(&root))
            .await
    }

    async fn delete_foreign(&self, path: &str) -> Result<()> {
        check_deletable_foreign(path)?;
        let root = self.root.clone();
        let rel = path.to_owned();
        self.blocking("delete_foreign", move || {
            let io = |e: std::io::Error| StorageError::from_io("delete_foreign", Some(&rel), &e);
            let full = root.join(&rel);
            // Never reach outside the root through a symlinked folder, and never delete a link's
            // target: the parent must resolve inside the root and the file itself be a regular file.
            let parent = full.parent().unwrap_or(&root).canonicalize().map_err(io)?;
            if !parent.starts_with(root.canonicalize().map_err(io)?) {
                return Err(StorageError::new(
                    ErrorKind::Invalid,
                    "delete_foreign",
                    Some(&rel),
                    "path leads outside the repository folder",
                ));
            }
            match fs::symlink_metadata(&full).map_err(io)? {
                m if m.is_file() => fs::remove_file(&full).map_err(io),
                _ => Err(StorageError::not_found("delete_foreign", &rel)),
            }
        })
        .await
    }
}

#[cfg(test)]
mod direct_tests {
    use super::*;

    #[test]
    fn large_objects_written_past_the_page_cache_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        // Unaligned lengths around the O_DIRECT threshold and bounce size, and one far above.
        for (i, len) in [
            DIRECT_MIN - 1,
            DIRECT_MIN,
            DIRECT_MIN + 4097,
            (3 << 20) + 123,
        ]
        .into_iter()
        .enumerate()
        {
            let data: Vec<u8> = (0..len).map(|j| (j * 31 + i) as u8).collect();
            let key = ObjectKey::new(format!("packs/obj{i}")).unwrap();
            put_blocking(dir.path(), &key, &data).unwrap();
            let got = std::fs::read(dir.path().join(key.as_str())).unwrap();
            assert!(got == data, "object of {len} bytes reads back exactly");
        }
    }

    #[test]
    fn a_refused_direct_write_falls_back_to_the_page_cache_with_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(3 << 20) + 777).map(|j| (j * 7) as u8).collect();
        let path = dir.path().join("skewed");
        let mut f = File::create(&path).unwrap();
        // A misaligned buffer: the kernel answers O_DIRECT writes with EINVAL.
        let direct = write_direct_skewed(&mut f, &data, 1).unwrap();
        drop(f);
        assert_eq!(direct, 0, "a misaligned buffer never goes direct");
        assert!(std::fs::read(&path).unwrap() == data);
    }
}
