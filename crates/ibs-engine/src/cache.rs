//! The files cache: for every file of the last committed backup, its size, mtime, ctime and inode and
//! its chunk ids. A file whose four values are unchanged is not read again. The cache of a backup is
//! written to a new SQLite file beside the old one and renamed over it only when that backup commits,
//! so a killed backup leaves the previous cache intact.
//!
//! The cache is an optimisation only: an entry is used only if every chunk it names is in the index
//! (prune may have removed some), otherwise the file is read again.
//!
//! Names: the cache holds no file name. A file is found by the keyed BLAKE3 hash of its source name
//! and path, under a key derived from the writer's dedup key ([`PathKey`]): whoever reads the file
//! without the writer state's `writer.json` learns how many files there are and their sizes and
//! times, not their names; with it, names can only be guessed and tested one by one. The file is
//! created 0600 (format version 2; a version 1 cache, which held paths in clear, is deleted).

use crate::{EngineError, StateError};
use ibs_repo::crypto::SymKey;
use ibs_repo::ids::ChunkId;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::path::{Path, PathBuf};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS files (
    source TEXT NOT NULL, path BLOB NOT NULL, size INTEGER NOT NULL, mtime INTEGER NOT NULL,
    ctime INTEGER NOT NULL, ino INTEGER NOT NULL, chunks BLOB NOT NULL,
    PRIMARY KEY (source, path)) WITHOUT ROWID;";

/// The identity of a file's contents as far as the cache is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
}

const VERSION: &str = "2";

/// The key of the cache's path hashes (derived from the dedup key; never stored).
#[derive(Clone)]
pub struct PathKey(SymKey);

impl PathKey {
    pub fn derive(dedup_key: &SymKey) -> Self {
        let k = dedup_key.chunk_id(b"ibs files cache path key v1");
        PathKey(SymKey::from_bytes(&k.0).expect("32 bytes"))
    }

    /// The 32-byte keyed hash standing for `path` of `source`.
    fn hash(&self, source: &str, path: &[u8]) -> [u8; 32] {
        let mut input = Vec::with_capacity(source.len() + 1 + path.len());
        input.extend_from_slice(source.as_bytes());
        input.push(0);
        input.extend_from_slice(path);
        self.0.chunk_id(&input).0
    }
}

/// Read access to the cache of the last committed backup. The walker takes it to its own thread
/// for a directory tree ([`FilesCache::take_old`]) and gives it back when the tree is done.
#[derive(Default)]
pub struct OldCache(Option<(Connection, PathKey)>);

pub struct FilesCache {
    key: PathKey,
    old: OldCache,
    new: Connection,
    new_path: PathBuf,
    final_path: PathBuf,
}

impl OldCache {
    /// The chunk ids of an unchanged file, if the cache knows it.
    pub fn lookup(&self, source: &str, path: &[u8], stamp: &FileStamp) -> Option<Vec<ChunkId>> {
        let (old, key) = self.0.as_ref()?;
        let path = key.hash(source, path);
        let mut stmt = old
            .prepare_cached(
                "SELECT size, mtime, ctime, ino, chunks FROM files WHERE source = ?1 AND path = ?2",
            )
            .ok()?;
        let row = stmt
            .query_row(params![source, &path[..]], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                ))
            })
            .optional()
            .ok()??;
        let same = row.0 as u64 == stamp.size
            && row.1 == stamp.mtime_ns
            && row.2 == stamp.ctime_ns
            && row.3 as u64 == stamp.ino;
        if !same || row.4.len() % 32 != 0 {
            return None;
        }
        Some(
            row.4
                .chunks_exact(32)
                .map(|c| ChunkId::from_slice(c).expect("32 bytes"))
                .collect(),
        )
    }
}

fn db_err(e: rusqlite::Error) -> EngineError {
    StateError::FilesCache(e).into()
}

impl FilesCache {
    pub fn open(final_path: &Path, key: PathKey) -> Result<Self, EngineError> {
        if let Some(dir) = final_path.parent() {
            crate::state::private_dir(dir)?;
        }
        let old = if final_path.is_file() {
            Connection::open_with_flags(final_path, OpenFlags::SQLITE_OPEN_READ_ONLY)
                .ok()
                .filter(|c| {
                    c.query_row("SELECT v FROM meta WHERE k='version'", [], |r| {
                        r.get::<_, String>(0)
                    })
                    .ok()
                    .as_deref()
                        == Some(VERSION)
                })
                // One read transaction for the whole backup: SQLite then takes its shared lock
                // and checks for a hot journal once, not around every lookup (that was about
                // eight system calls per file of an unchanged tree).
                .filter(|c| c.execute_batch("BEGIN").is_ok())
        } else {
            None
        };
        if old.is_none() {
            // Another version (a version 1 cache names every file in clear) or unreadable.
            let _ = std::fs::remove_file(final_path);
        } else {
            crate::state::tighten(final_path);
        }
        let new_path = final_path.with_extension("sqlite.new");
        let _ = std::fs::remove_file(&new_path);
        // Created 0600 before SQLite opens it (SQLite keeps an existing file's mode).
        crate::state::write_private_new(&new_path)?;
        let new = Connection::open(&new_path).map_err(db_err)?;
        new.execute_batch("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;")
            .map_err(db_err)?;
        new.execute_batch(SCHEMA).map_err(db_err)?;
        new.execute(
            "INSERT OR REPLACE INTO meta VALUES ('version', ?1)",
            [VERSION],
        )
        .map_err(db_err)?;
        new.execute_batch("BEGIN").map_err(db_err)?;
        Ok(FilesCache {
            old: OldCache(old.map(|c| (c, key.clone()))),
            key,
            new,
            new_path,
            final_path: final_path.to_owned(),
        })
    }

    /// The chunk ids of an unchanged file, if the cache knows it.
    pub fn lookup(&self, source: &str, path: &[u8], stamp: &FileStamp) -> Option<Vec<ChunkId>> {
        self.old.lookup(source, path, stamp)
    }

    /// Lends the old cache out (lookups through `self` find nothing until it is given back).
    pub fn take_old(&mut self) -> OldCache {
        std::mem::take(&mut self.old)
    }

    pub fn give_back_old(&mut self, old: OldCache) {
        self.old = old;
    }

    pub fn record(
        &mut self,
        source: &str,
        path: &[u8],
        stamp: &FileStamp,
        chunks: &[ChunkId],
    ) -> Result<(), EngineError> {
        let flat: Vec<u8> = chunks.iter().flat_map(|c| c.0).collect();
        let path = self.key.hash(source, path);
        self.new
            .prepare_cached("INSERT OR REPLACE INTO files VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
            .and_then(|mut s| {
                s.execute(params![
                    source,
                    &path[..],
                    stamp.size as i64,
                    stamp.mtime_ns,
                    stamp.ctime_ns,
                    stamp.ino as i64,
                    flat
                ])
            })
            .map_err(db_err)?;
        Ok(())
    }

    /// Makes the new cache the current one (called after the backup's manifest is committed).
    pub fn commit(self) -> Result<(), EngineError> {
        self.new.execute_batch("COMMIT").map_err(db_err)?;
        drop(self.old);
        self.new.close().map_err(|(_, e)| db_err(e))?;
        std::fs::rename(&self.new_path, &self.final_path)
            .map_err(|e| StateError::FilesCacheIo(e).into())
    }

    /// Drops the new cache (the backup did not commit).
    pub fn abandon(self) {
        drop(self.new);
        let _ = std::fs::remove_file(&self.new_path);
    }
}
