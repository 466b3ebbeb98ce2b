//! The files cache: for every file of the last committed backup, its size, mtime, ctime and inode and
//! its chunk ids. A file whose four values are unchanged is not read again. The cache of a backup is
//! written to a new SQLite file beside the old one and renamed over it only when that backup commits,
//! so a killed backup leaves the previous cache intact.
//!
//! The cache is an optimisation only: an entry is used only if every chunk it names is in the index
//! (prune may have removed some), otherwise the file is read again.
//!
//! Layout (format version 3, `docs/design/repository-format.md` §20, ADR 0047): rows are kept in
//! the order the walk meets folders, so that the lookups of an unchanged tree read the old cache
//! front to back and the new cache is written by appending. `folders` maps a folder to its walk
//! number (`seq`: the order in which the backup that wrote the cache first recorded a file of it);
//! `files` is keyed by `(seq, name)`, so one folder's files share pages. A lookup or a record costs
//! a `folders` lookup only when the walk changes folder, then one `files` access next to the
//! previous one. (Keying rows by a hash of the path alone puts each access on a random page.) A
//! file moved to another folder is not found (its path differs) and is read again; its chunks
//! deduplicate.
//!
//! Names: the cache holds no file or folder name and no source name. A folder is stored as the keyed
//! BLAKE3 hash of its source name and path ([`PathKey`], 16 bytes), a file as the keyed hash of its
//! source name and full path (16 bytes: a false match would also need the same folder, size, times
//! and inode), under keys derived from the writer's dedup key. Whoever reads the file without the
//! writer state's `writer.json` learns how many files there are, their sizes and times, which files
//! share a folder and in which order the walk met the folders (no names, not which folder is inside
//! which); with it, names can only be guessed and tested one by one. The file is created 0600.
//! A cache of another version (version 1 held paths in clear, version 2 keyed every row by the hash
//! of its path alone) is deleted: the first backup after an upgrade reads every file once.

use crate::{EngineError, StateError};
use ibs_repo::crypto::SymKey;
use ibs_repo::ids::ChunkId;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::path::{Path, PathBuf};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS folders (folder BLOB PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER NOT NULL, name BLOB NOT NULL, size INTEGER NOT NULL, mtime INTEGER NOT NULL,
    ctime INTEGER NOT NULL, ino INTEGER NOT NULL, chunks BLOB NOT NULL,
    PRIMARY KEY (seq, name)) WITHOUT ROWID;";

/// SQLite's page cache of the old (read) cache, in KiB (passed negated: a size, not a page count).
/// The whole file is in the kernel's page cache already (`open_old` reads it ahead), so a miss
/// costs a `pread`, not a disk read. What must stay cached is the `folders` table, looked up
/// whenever the walk changes folder: ~27 bytes a folder with files (1.8 MB for the 66,713 of the
/// 600 k bench tree); the `files` rows are read front to back and need only the current pages.
const OLD_CACHE_KIB: i64 = 3072;
/// The new (written) cache's page cache, in KiB: rows are appended in key order, so only the
/// right-hand path of each B-tree is touched, and full pages are written out (no journal).
/// Together with [`OLD_CACHE_KIB`], 4 MiB of a backup's resident memory (it was 16 MiB, two
/// 8 MiB caches: `docs/design/memory.md`).
const NEW_CACHE_KIB: i64 = 1024;

/// The identity of a file's contents as far as the cache is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
}

const VERSION: &str = "3";

/// Bytes of a keyed hash kept for a folder or a file.
const HASH_LEN: usize = 16;

/// The keys of the cache's folder and path hashes (derived from the dedup key; never stored).
#[derive(Clone)]
pub struct PathKey {
    folder: SymKey,
    file: SymKey,
}

impl PathKey {
    pub fn derive(dedup_key: &SymKey) -> Self {
        let derive = |ctx: &[u8]| SymKey::from_bytes(&dedup_key.chunk_id(ctx).0).expect("32 bytes");
        PathKey {
            folder: derive(b"ibs files cache folder key v1"),
            file: derive(b"ibs files cache path key v2"),
        }
    }

    fn hash(key: &SymKey, source: &str, path: &[u8]) -> [u8; HASH_LEN] {
        let mut input = Vec::with_capacity(source.len() + 1 + path.len());
        input.extend_from_slice(source.as_bytes());
        input.push(0);
        input.extend_from_slice(path);
        let mut out = [0u8; HASH_LEN];
        out.copy_from_slice(&key.chunk_id(&input).0[..HASH_LEN]);
        out
    }
}

/// The folder part of a source-relative path (empty for an entry at the source's top).
fn parent(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => &path[..i],
        None => &[],
    }
}

/// The folder the previous lookup or record was in: consecutive files of one folder (the common
/// case in walk order) cost no `folders` lookup.
#[derive(Default)]
struct CurrentFolder {
    source: String,
    path: Vec<u8>,
    /// `None` before the first file, or (old cache) for a folder the old cache does not have.
    seq: Option<Option<i64>>,
}

impl CurrentFolder {
    fn get(&self, source: &str, folder: &[u8]) -> Option<Option<i64>> {
        self.seq
            .filter(|_| self.path == folder && self.source == source)
    }

    fn set(&mut self, source: &str, folder: &[u8], seq: Option<i64>) {
        self.source.clear();
        self.source.push_str(source);
        self.path.clear();
        self.path.extend_from_slice(folder);
        self.seq = Some(seq);
    }
}

/// Read access to the cache of the last committed backup. The walker takes it to its own thread
/// for a directory tree ([`FilesCache::take_old`]) and gives it back when the tree is done.
#[derive(Default)]
pub struct OldCache(Option<Old>);

struct Old {
    db: Connection,
    key: PathKey,
    folder: CurrentFolder,
}

pub struct FilesCache {
    key: PathKey,
    old: OldCache,
    new: Connection,
    /// The walk number the next new folder gets.
    next_seq: i64,
    folder: CurrentFolder,
    new_path: PathBuf,
    final_path: PathBuf,
}

impl Old {
    /// The walk number of `folder` in the old cache (`None`: it had no file there).
    fn seq(&mut self, source: &str, folder: &[u8]) -> Option<i64> {
        if let Some(seq) = self.folder.get(source, folder) {
            return seq;
        }
        let h = PathKey::hash(&self.key.folder, source, folder);
        let seq = self
            .db
            .prepare_cached("SELECT seq FROM folders WHERE folder = ?1")
            .and_then(|mut s| s.query_row([&h[..]], |r| r.get::<_, i64>(0)).optional())
            .ok()
            .flatten();
        self.folder.set(source, folder, seq);
        seq
    }

    fn lookup(&mut self, source: &str, path: &[u8], stamp: &FileStamp) -> Option<Vec<ChunkId>> {
        let seq = self.seq(source, parent(path))?;
        let name = PathKey::hash(&self.key.file, source, path);
        let mut stmt = self
            .db
            .prepare_cached(
                "SELECT size, mtime, ctime, ino, chunks FROM files WHERE seq = ?1 AND name = ?2",
            )
            .ok()?;
        let row = stmt
            .query_row(params![seq, &name[..]], |r| {
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

impl OldCache {
    /// The chunk ids of an unchanged file, if the cache knows it.
    pub fn lookup(&mut self, source: &str, path: &[u8], stamp: &FileStamp) -> Option<Vec<ChunkId>> {
        self.0.as_mut()?.lookup(source, path, stamp)
    }
}

fn db_err(e: rusqlite::Error) -> EngineError {
    StateError::FilesCache(e).into()
}

/// Opens the last backup's cache for reading, if it is of this version. The whole file is read
/// ahead first (`POSIX_FADV_WILLNEED`): the walk reads it front to back but interleaved with
/// the tree's own metadata reads, and on a cold page cache one sequential read-ahead costs less
/// than a disk read per page.
fn open_old(path: &Path) -> Option<Connection> {
    if !path.is_file() {
        return None;
    }
    if let Ok(f) = std::fs::File::open(path) {
        let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::WillNeed);
    }
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    let version = c
        .query_row("SELECT v FROM meta WHERE k='version'", [], |r| {
            r.get::<_, String>(0)
        })
        .ok();
    if version.as_deref() != Some(VERSION) {
        return None;
    }
    // One read transaction for the whole backup: SQLite then takes its shared lock and checks
    // for a hot journal once, not around every lookup (that was about eight system calls per
    // file of an unchanged tree).
    c.execute_batch(&format!("PRAGMA cache_size=-{OLD_CACHE_KIB}; BEGIN"))
        .ok()?;
    Some(c)
}

impl FilesCache {
    pub fn open(final_path: &Path, key: PathKey) -> Result<Self, EngineError> {
        if let Some(dir) = final_path.parent() {
            crate::state::private_dir(dir)?;
        }
        let old = open_old(final_path);
        if old.is_none() {
            // Another version, or unreadable.
            let _ = std::fs::remove_file(final_path);
        } else {
            crate::state::tighten(final_path);
        }
        let new_path = final_path.with_extension("sqlite.new");
        let _ = std::fs::remove_file(&new_path);
        // Created 0600 before SQLite opens it (SQLite keeps an existing file's mode).
        crate::state::write_private_new(&new_path)?;
        let new = Connection::open(&new_path).map_err(db_err)?;
        new.execute_batch(&format!(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-{NEW_CACHE_KIB};"
        ))
        .map_err(db_err)?;
        new.execute_batch(SCHEMA).map_err(db_err)?;
        new.execute(
            "INSERT OR REPLACE INTO meta VALUES ('version', ?1)",
            [VERSION],
        )
        .map_err(db_err)?;
        new.execute_batch("BEGIN").map_err(db_err)?;
        Ok(FilesCache {
            old: OldCache(old.map(|db| Old {
                db,
                key: key.clone(),
                folder: CurrentFolder::default(),
            })),
            key,
            new,
            next_seq: 0,
            folder: CurrentFolder::default(),
            new_path,
            final_path: final_path.to_owned(),
        })
    }

    /// The chunk ids of an unchanged file, if the cache knows it.
    pub fn lookup(&mut self, source: &str, path: &[u8], stamp: &FileStamp) -> Option<Vec<ChunkId>> {
        self.old.lookup(source, path, stamp)
    }

    /// Lends the old cache out (lookups through `self` find nothing until it is given back).
    pub fn take_old(&mut self) -> OldCache {
        std::mem::take(&mut self.old)
    }

    pub fn give_back_old(&mut self, old: OldCache) {
        self.old = old;
    }

    /// The walk number of `folder` in the new cache, numbering it if it is new.
    fn new_seq(&mut self, source: &str, folder: &[u8]) -> Result<i64, EngineError> {
        if let Some(Some(seq)) = self.folder.get(source, folder) {
            return Ok(seq);
        }
        let h = PathKey::hash(&self.key.folder, source, folder);
        let known = self
            .new
            .prepare_cached("SELECT seq FROM folders WHERE folder = ?1")
            .and_then(|mut s| s.query_row([&h[..]], |r| r.get::<_, i64>(0)).optional())
            .map_err(db_err)?;
        let seq = match known {
            Some(seq) => seq,
            None => {
                let seq = self.next_seq;
                self.new
                    .prepare_cached("INSERT INTO folders VALUES (?1, ?2)")
                    .and_then(|mut s| s.execute(params![&h[..], seq]))
                    .map_err(db_err)?;
                self.next_seq += 1;
                seq
            }
        };
        self.folder.set(source, folder, Some(seq));
        Ok(seq)
    }

    pub fn record(
        &mut self,
        source: &str,
        path: &[u8],
        stamp: &FileStamp,
        chunks: &[ChunkId],
    ) -> Result<(), EngineError> {
        let seq = self.new_seq(source, parent(path))?;
        let flat: Vec<u8> = chunks.iter().flat_map(|c| c.0).collect();
        let name = PathKey::hash(&self.key.file, source, path);
        self.new
            .prepare_cached("INSERT OR REPLACE INTO files VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
            .and_then(|mut s| {
                s.execute(params![
                    seq,
                    &name[..],
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PathKey {
        PathKey::derive(&SymKey::from_bytes(&[7u8; 32]).unwrap())
    }

    fn stamp(n: u64) -> FileStamp {
        FileStamp {
            size: 100 + n,
            mtime_ns: 1_000 + n as i64,
            ctime_ns: 2_000 + n as i64,
            ino: 50 + n,
        }
    }

    fn ids(n: u8) -> Vec<ChunkId> {
        vec![ChunkId([n; 32]), ChunkId([n.wrapping_add(1); 32])]
    }

    /// One backup: records `files` (source, path, n) in the given order and commits.
    fn backup(path: &Path, files: &[(&str, &str, u8)]) {
        let mut c = FilesCache::open(path, key()).unwrap();
        for (source, p, n) in files {
            c.record(source, p.as_bytes(), &stamp(*n as u64), &ids(*n))
                .unwrap();
        }
        c.commit().unwrap();
    }

    /// Walk order of a tree with a folder revisited after its subfolder (`a/1`, `a/b/…`, `a/3`).
    const TREE: &[(&str, &str, u8)] = &[
        ("data", "top", 1),
        ("data", "a/1", 2),
        ("data", "a/b/2", 3),
        ("data", "a/b/c/4", 4),
        ("data", "a/3", 5),
        ("data", "z/9", 6),
    ];

    #[test]
    fn the_next_backup_finds_unchanged_files_and_not_changed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("files-cache.sqlite");
        backup(&path, TREE);
        let mut c = FilesCache::open(&path, key()).unwrap();
        for (source, p, n) in TREE {
            let found = c.lookup(source, p.as_bytes(), &stamp(*n as u64));
            assert_eq!(found, Some(ids(*n)), "{p}");
        }
        let mut changed = stamp(2);
        changed.mtime_ns += 1;
        assert_eq!(c.lookup("data", b"a/1", &changed), None);
        let mut replaced = stamp(2);
        replaced.ino += 1;
        assert_eq!(c.lookup("data", b"a/1", &replaced), None);
        assert_eq!(c.lookup("data", b"a/new", &stamp(2)), None);
    }

    #[test]
    fn a_file_moved_to_another_folder_or_source_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("files-cache.sqlite");
        backup(&path, TREE);
        let mut c = FilesCache::open(&path, key()).unwrap();
        assert_eq!(c.lookup("data", b"z/1", &stamp(2)), None);
        assert_eq!(c.lookup("data", b"1", &stamp(2)), None);
        assert_eq!(c.lookup("data", b"a/b/1", &stamp(2)), None);
        assert_eq!(c.lookup("other", b"a/1", &stamp(2)), None);
        // And the folder lookups it made do not hide the files that did stay.
        assert_eq!(c.lookup("data", b"a/3", &stamp(5)), Some(ids(5)));
    }

    #[test]
    fn a_cache_rewritten_by_unchanged_backups_stays_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("files-cache.sqlite");
        backup(&path, TREE);
        for _ in 0..2 {
            // What a no-change backup does: look each file up, then record what it found.
            let mut c = FilesCache::open(&path, key()).unwrap();
            let mut old = c.take_old();
            let found: Vec<_> = TREE
                .iter()
                .map(|(s, p, n)| old.lookup(s, p.as_bytes(), &stamp(*n as u64)).unwrap())
                .collect();
            c.give_back_old(old);
            for ((s, p, n), chunks) in TREE.iter().zip(found) {
                c.record(s, p.as_bytes(), &stamp(*n as u64), &chunks)
                    .unwrap();
            }
            c.commit().unwrap();
        }
        let mut c = FilesCache::open(&path, key()).unwrap();
        for (s, p, n) in TREE {
            assert_eq!(c.lookup(s, p.as_bytes(), &stamp(*n as u64)), Some(ids(*n)));
        }
    }

    #[test]
    fn rows_are_stored_in_the_order_the_walk_met_their_folders() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("files-cache.sqlite");
        // Folder names whose hashes are in no particular order; walked z, a, m.
        backup(
            &path,
            &[
                ("d", "z/1", 1),
                ("d", "z/2", 2),
                ("d", "a/1", 3),
                ("d", "m/1", 4),
                ("d", "z/3", 5),
            ],
        );
        let db = Connection::open(&path).unwrap();
        let sizes: Vec<i64> = db
            .prepare("SELECT size FROM files")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let folder_of = |size: i64| match size - 100 {
            1 | 2 | 5 => 'z',
            3 => 'a',
            _ => 'm',
        };
        let order: Vec<char> = sizes.into_iter().map(folder_of).collect();
        assert_eq!(order, ['z', 'z', 'z', 'a', 'm']);
    }

    #[test]
    fn a_backup_that_does_not_commit_leaves_the_previous_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("files-cache.sqlite");
        backup(&path, TREE);
        let mut c = FilesCache::open(&path, key()).unwrap();
        c.record("data", b"a/1", &stamp(40), &ids(40)).unwrap();
        c.abandon();
        let mut c = FilesCache::open(&path, key()).unwrap();
        assert_eq!(c.lookup("data", b"a/1", &stamp(2)), Some(ids(2)));
        assert_eq!(c.lookup("data", b"a/1", &stamp(40)), None);
    }

    #[test]
    fn a_cache_of_another_version_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("files-cache.sqlite");
        {
            // The version 2 layout: one row per file keyed by (source, path hash).
            let db = Connection::open(&path).unwrap();
            db.execute_batch(
                "CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID;
                 INSERT INTO meta VALUES ('version', '2');
                 CREATE TABLE files (source TEXT NOT NULL, path BLOB NOT NULL, size INTEGER,
                   mtime INTEGER, ctime INTEGER, ino INTEGER, chunks BLOB,
                   PRIMARY KEY (source, path)) WITHOUT ROWID;",
            )
            .unwrap();
        }
        let mut c = FilesCache::open(&path, key()).unwrap();
        assert!(!path.exists(), "the old cache is deleted");
        assert_eq!(c.lookup("data", b"a/1", &stamp(2)), None);
        c.record("data", b"a/1", &stamp(2), &ids(2)).unwrap();
        c.commit().unwrap();
        let mut c = FilesCache::open(&path, key()).unwrap();
        assert_eq!(c.lookup("data", b"a/1", &stamp(2)), Some(ids(2)));
    }

    #[test]
    fn the_cache_holds_no_source_folder_or_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("files-cache.sqlite");
        backup(&path, &[("sourcename", "foldername/filename", 1)]);
        let bytes = std::fs::read(&path).unwrap();
        for name in [&b"sourcename"[..], b"foldername", b"filename"] {
            assert!(!bytes.windows(name.len()).any(|w| w == name));
        }
    }
}
