//! Reading sources: walking a directory tree in a fixed order (parents before children, siblings in
//! byte order of their names), and turning files, symlinks and directories into tree entries. Chunk
//! data goes to the [`crate::backup`] pipeline through an [`Emitter`].
//!
//! A directory tree is walked by a [`Walker`] on its own thread, which hands [`Item`]s in tree
//! order over a bounded queue to the reading thread; the tree's entries are therefore written in
//! exactly the order a single thread would write them.

use crate::cache::{FileStamp, FilesCache, OldCache};
use crate::chunker::Chunker;
use crate::delta::{DeltaSession, PendingStore};
use crate::fileio::HoleSkipping;
use crate::progress::Progress;
use crate::EngineError;
use ibs_repo::config::ChunkerParams;
use ibs_repo::crypto::SymKey;
use ibs_repo::ids::ChunkId;
use ibs_repo::index::Index;
use ibs_repo::tree::{header_line, EntryKind, TreeEntry};
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::Metadata;
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A chunk of plaintext that the repository does not have yet, on its way to be sealed.
pub struct Work {
    pub id: ChunkId,
    pub data: Vec<u8>,
    /// `data` is a delta recipe (`ibs_repo::delta`), sealed as encoding 2.
    pub recipe: bool,
}

/// Hashes chunks, records every reference, and forwards chunks new to the repository.
pub struct Emitter {
    pub dedup: SymKey,
    pub index: Arc<Index>,
    pub refs: HashSet<ChunkId>,
    /// The chunks the source being read references (taken after each source: per-source refs).
    pub source_refs: HashSet<ChunkId>,
    pub tx: crossbeam_channel::Sender<Work>,
    pub bytes_new: u64,
    pub closed: bool,
    /// Set while a stream source is read: changed chunks may be stored as delta recipes.
    pub delta: Option<DeltaSession>,
    /// The first failure of the delta session (it is then dropped; the backup goes on without).
    pub delta_error: Option<String>,
    /// New signature stores, committed with the manifest.
    pub delta_pending: Vec<PendingStore>,
}

impl Emitter {
    pub fn emit(&mut self, data: &[u8], ids: &mut Vec<ChunkId>) {
        let id = self.dedup.chunk_id(data);
        if self.delta.is_some() {
            match self.emit_delta(data, id, ids) {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    self.delta = None;
                    self.delta_error = Some(e.to_string());
                }
            }
        }
        ids.push(id);
        self.source_refs.insert(id);
        if self.refs.insert(id) && !self.index.contains(&id) {
            self.send(id, data.to_vec(), false);
        }
    }

    fn send(&mut self, id: ChunkId, data: Vec<u8>, recipe: bool) {
        self.bytes_new += data.len() as u64;
        if self.tx.send(Work { id, data, recipe }).is_err() {
            self.closed = true;
        }
    }

    /// With a delta session: a chunk the repository lacks is stored as a recipe when a base is
    /// found (returns true); otherwise the chunk's signatures are kept for the next backup and the
    /// caller stores it whole.
    fn emit_delta(
        &mut self,
        data: &[u8],
        id: ChunkId,
        ids: &mut Vec<ChunkId>,
    ) -> std::io::Result<bool> {
        let d = self.delta.as_mut().expect("checked by the caller");
        d.prepare(data);
        let known = self.refs.contains(&id) || self.index.contains(&id);
        if !known {
            if let Some((base, recipe)) = d.diff(data, id, &self.index)? {
                let rid = self.dedup.chunk_id(&recipe);
                ids.push(rid);
                // The recipe needs its base: both are referenced, so prune keeps both.
                for c in [rid, base] {
                    self.source_refs.insert(c);
                }
                self.refs.insert(base);
                if self.refs.insert(rid) && !self.index.contains(&rid) {
                    self.send(rid, recipe, true);
                }
                return Ok(true);
            }
        }
        d.record_full(id)?;
        Ok(false)
    }

    /// True if the repository has, or this backup is storing, every chunk of `ids`.
    fn has_all(&self, ids: &[ChunkId]) -> bool {
        ids.iter()
            .all(|c| self.index.contains(c) || self.refs.contains(c))
    }
}

/// Per-source figures collected while walking.
#[derive(Default, Debug, Clone)]
pub struct SourceStats {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    pub errors: u64,
    pub changed: u64,
    pub skipped_special: u64,
    pub error_messages: Vec<String>,
}

impl SourceStats {
    /// Adds the counts and errors of `o` (the walker's share of a source).
    fn merge(&mut self, o: SourceStats) {
        self.files += o.files;
        self.dirs += o.dirs;
        self.bytes += o.bytes;
        self.changed += o.changed;
        self.skipped_special += o.skipped_special;
        self.errors += o.errors;
        let room = 1000usize.saturating_sub(self.error_messages.len());
        self.error_messages
            .extend(o.error_messages.into_iter().take(room));
    }

    fn error(&mut self, msg: String) {
        self.errors += 1;
        if self.error_messages.len() < 1000 {
            self.error_messages.push(msg);
        }
    }
}

/// Writes one source's tree stream through the chunker.
pub struct TreeWriter {
    chunker: Chunker,
    pub chunks: Vec<ChunkId>,
}

impl TreeWriter {
    pub fn new(params: &ChunkerParams, em: &mut Emitter) -> Self {
        let mut t = TreeWriter {
            chunker: Chunker::new(params),
            chunks: Vec::new(),
        };
        t.chunker.push(&header_line());
        t.flush(false, em);
        t
    }

    pub fn add(&mut self, e: &TreeEntry, em: &mut Emitter) {
        self.chunker.push(&e.to_line());
        self.flush(false, em);
    }

    fn flush(&mut self, end: bool, em: &mut Emitter) {
        let chunks = &mut self.chunks;
        self.chunker.drain(end, |c| em.emit(c, chunks));
    }

    pub fn finish(mut self, em: &mut Emitter) -> Vec<ChunkId> {
        self.flush(true, em);
        self.chunks
    }
}

pub fn mtime_ns(m: &Metadata) -> i64 {
    m.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(m.mtime_nsec())
}

fn stamp(m: &Metadata) -> FileStamp {
    FileStamp {
        size: m.len(),
        mtime_ns: mtime_ns(m),
        ctime_ns: m
            .ctime()
            .saturating_mul(1_000_000_000)
            .saturating_add(m.ctime_nsec()),
        ino: m.ino(),
    }
}

fn base_entry(path: Vec<u8>, kind: EntryKind, m: &Metadata) -> TreeEntry {
    TreeEntry {
        path,
        kind,
        mode: m.mode(),
        mtime_ns: mtime_ns(m),
        uid: m.uid(),
        gid: m.gid(),
        size: 0,
        chunks: Vec::new(),
        target: None,
        error: None,
        changed: false,
        sparse: false,
    }
}

/// Walks and reads one source.
pub struct SourceReader<'a> {
    pub name: &'a str,
    pub params: &'a ChunkerParams,
    pub em: &'a mut Emitter,
    pub cache: &'a mut FilesCache,
    pub progress: &'a Progress,
    pub stats: SourceStats,
    pub read_buf: usize,
    /// Reused for every file of the source.
    pub chunker: Chunker,
    /// Entries of a folder source to leave out.
    pub exclude: crate::exclude::Excludes,
    /// Where stream sources keep their delta signature stores; `None` turns deltas off.
    pub delta_dir: Option<&'a Path>,
}

impl SourceReader<'_> {
    fn cancelled(&self) -> Result<(), EngineError> {
        if self.em.closed {
            Err(EngineError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Reads a regular file into chunks (unless the files cache knows it unchanged and every chunk
    /// it names is present); returns its entry.
    fn file(&mut self, f: FileItem) -> TreeEntry {
        let FileItem {
            mut entry,
            full,
            stamp: st,
            cached,
            opened,
        } = f;
        if let Some(ids) = cached.filter(|ids| self.em.has_all(ids)) {
            for id in &ids {
                self.em.refs.insert(*id);
                self.em.source_refs.insert(*id);
            }
            let _ = self.cache.record(self.name, &entry.path, &st, &ids);
            entry.chunks = ids;
            self.stats.bytes += entry.size;
            self.progress.add_bytes(entry.size);
            self.progress.add_file();
            return entry;
        }
        let sparse = entry.sparse;
        let result = opened
            .unwrap_or_else(|| std::fs::File::open(&full))
            .and_then(|mut f| {
                let (ids, total) = if sparse {
                    self.read_chunks(&mut HoleSkipping::new(&f))?
                } else {
                    self.read_chunks(&mut f)?
                };
                let after = f.metadata()?;
                Ok((ids, total, stamp(&after)))
            });
        self.progress.add_file();
        match result {
            Ok((ids, total, after)) => {
                self.stats.bytes += total;
                entry.size = total;
                if after != st || total != st.size {
                    entry.changed = true;
                    self.stats.changed += 1;
                    tracing::warn!(
                        "{}: {} changed while it was read",
                        self.name,
                        full.display()
                    );
                } else {
                    let _ = self.cache.record(self.name, &entry.path, &st, &ids);
                }
                entry.chunks = ids;
            }
            Err(err) => {
                self.stats.error(format!(
                    "{}/{}: {err}",
                    self.name,
                    String::from_utf8_lossy(&entry.path)
                ));
                entry.error = Some(err.to_string());
                entry.size = 0;
            }
        }
        entry
    }

    /// Reads `r` to its end through the chunker, emitting chunks; returns the ids and the byte count.
    /// Stops early (without error) when the pipeline was cancelled; callers check `cancelled()`.
    fn read_chunks(&mut self, r: &mut dyn Read) -> std::io::Result<(Vec<ChunkId>, u64)> {
        self.chunker.reset();
        let mut ids = Vec::new();
        let mut total = 0u64;
        loop {
            let n = match r.read(self.chunker.spare(self.read_buf)) {
                Ok(n) => n,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            self.chunker.filled(n);
            total += n as u64;
            self.progress.add_bytes(n as u64);
            let end = n == 0;
            let em = &mut *self.em;
            self.chunker.drain(end, |c| em.emit(c, &mut ids));
            if end || self.em.closed {
                return Ok((ids, total));
            }
        }
    }

    /// Closes the stream's delta session: its new store waits for the manifest.
    fn end_delta(&mut self) {
        if let Some(e) = self.em.delta_error.take() {
            tracing::warn!(
                "source {}: delta signatures failed ({e}); the rest of the stream was stored without deltas",
                self.name
            );
        }
        let Some(d) = self.em.delta.take() else {
            return;
        };
        let st = d.stats;
        if st.chunks > 0 {
            tracing::info!(
                "source {}: {} changed chunks ({} bytes) stored as delta recipes of {} bytes",
                self.name,
                st.chunks,
                st.content_bytes,
                st.recipe_bytes
            );
        }
        match d.finish() {
            Ok(p) => self.em.delta_pending.push(p),
            Err(e) => tracing::warn!(
                "source {}: the new delta signature store could not be written ({e})",
                self.name
            ),
        }
    }

    /// Adds one walked item to the tree, reading it if it is a file to read.
    fn add(&mut self, item: Item, tree: &mut TreeWriter) {
        let e = match item {
            Item::Ready(e) => e,
            Item::File(f) => self.file(f),
        };
        tree.add(&e, self.em);
    }

    /// Backs up a directory tree or a single file at `root`. Returns the tree's chunk ids.
    ///
    /// A directory tree is walked on a second thread (listing, stat, symlinks, files-cache
    /// lookups, and opening each file to read with a read-ahead hint) a bounded number of items
    /// ahead of this one, which reads, chunks and hashes the files in the walk's order. So the disk
    /// reads of the next small files overlap the chunking of the current one.
    pub fn path(&mut self, root: &Path) -> Result<Vec<ChunkId>, EngineError> {
        let mut tree = TreeWriter::new(self.params, self.em);
        let m = std::fs::symlink_metadata(root).map_err(|e| {
            EngineError::Source(format!("source {}: {}: {e}", self.name, root.display()))
        })?;
        let names = if m.is_dir() {
            Some(sorted_names(root).map_err(|err| {
                EngineError::Source(format!(
                    "source {}: cannot list {}: {err}",
                    self.name,
                    root.display()
                ))
            })?)
        } else {
            None
        };
        let mut walker = Walker {
            name: self.name,
            old: self.cache.take_old(),
            exclude: self.exclude.clone(),
            stats: SourceStats::default(),
        };
        let Some(names) = names else {
            let name = root
                .file_name()
                .map(|n| n.as_bytes().to_vec())
                .unwrap_or_else(|| self.name.as_bytes().to_vec());
            let item = walker.item(name, root, &m);
            let (old, stats) = (walker.old, walker.stats);
            self.cache.give_back_old(old);
            self.stats.merge(stats);
            if let Some(item) = item {
                self.add(item, &mut tree);
            }
            self.cancelled()?;
            return Ok(tree.finish(self.em));
        };
        self.stats.dirs += 1;
        tree.add(&base_entry(Vec::new(), EntryKind::Dir, &m), self.em);
        let (tx, rx) = crossbeam_channel::bounded::<Vec<Item>>(WALK_AHEAD);
        let walker = std::thread::scope(|s| {
            let walking = s.spawn(move || {
                walker.tree(root, names, &tx);
                walker
            });
            'read: for batch in rx.iter() {
                for item in batch {
                    if self.em.closed {
                        break 'read;
                    }
                    self.add(item, &mut tree);
                }
            }
            // Dropping the receiver stops a walker that is still going (cancellation).
            drop(rx);
            walking.join()
        });
        let walker =
            walker.map_err(|_| EngineError::Internal("the tree walker panicked".into()))?;
        self.cache.give_back_old(walker.old);
        self.stats.merge(walker.stats);
        self.cancelled()?;
        Ok(tree.finish(self.em))
    }

    /// Backs up a byte stream (stdin, or a command's or database's export) as one file named `name`.
    pub fn stream(
        &mut self,
        file_name: &str,
        reader: &mut dyn Read,
        now_ns: i64,
    ) -> Result<Vec<ChunkId>, EngineError> {
        let mut tree = TreeWriter::new(self.params, self.em);
        if let Some(dir) = self.delta_dir {
            match DeltaSession::open(dir, self.name, &self.em.dedup) {
                Ok(d) => self.em.delta = Some(d),
                Err(e) => tracing::warn!(
                    "source {}: delta signatures unavailable ({e}); changed chunks are stored in full",
                    self.name
                ),
            }
        }
        let read = self.read_chunks(reader);
        self.end_delta();
        let (ids, total) = read.map_err(|err| {
            EngineError::Source(format!(
                "source {}: reading the stream failed: {err}",
                self.name
            ))
        })?;
        self.cancelled()?;
        self.stats.files += 1;
        self.stats.bytes += total;
        let e = TreeEntry {
            path: file_name.as_bytes().to_vec(),
            kind: EntryKind::File,
            mode: 0o100600,
            mtime_ns: now_ns,
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            size: total,
            chunks: ids,
            target: None,
            error: None,
            changed: false,
            sparse: false,
        };
        tree.add(&e, self.em);
        Ok(tree.finish(self.em))
    }
}

/// How many batches of walked items may wait for the reader: the read-ahead distance in files
/// (a batch ends with each file to read).
const WALK_AHEAD: usize = 32;
/// Items that need no reading (directories, symlinks, files the cache knows) go to the reader in
/// batches of up to this many: one wake-up of the reading thread per batch, not per item (an
/// unchanged tree is all such items, and its backup is bound by the walk).
const BATCH: usize = 64;

/// A regular file as the walker hands it to the reader.
pub struct FileItem {
    entry: TreeEntry,
    full: PathBuf,
    stamp: FileStamp,
    /// The chunk ids the files cache has for this file, unchanged since the last backup.
    cached: Option<Vec<ChunkId>>,
    /// The file opened for reading (with a read-ahead hint) when the cache does not know it.
    opened: Option<std::io::Result<std::fs::File>>,
}

/// What the walker hands the reader, in tree order.
pub enum Item {
    /// A directory, a symlink or an unreadable entry: added to the tree as it is.
    Ready(TreeEntry),
    File(FileItem),
}

/// Walks a source's directory tree in tree order (parents before children, siblings in byte
/// order of their names), on its own thread.
struct Walker<'a> {
    name: &'a str,
    old: OldCache,
    exclude: crate::exclude::Excludes,
    /// Entries counted and errors met while walking (merged into the source's).
    stats: SourceStats,
}

impl Walker<'_> {
    fn error(&mut self, rel: &[u8], err: impl std::fmt::Display) -> String {
        let msg = err.to_string();
        self.stats.error(format!(
            "{}/{}: {msg}",
            self.name,
            String::from_utf8_lossy(rel)
        ));
        msg
    }

    /// The item for one entry, or `None` for a special file (device, socket, FIFO), skipped.
    fn item(&mut self, rel: Vec<u8>, full: &Path, m: &Metadata) -> Option<Item> {
        let ft = m.file_type();
        if ft.is_file() {
            self.stats.files += 1;
            let mut entry = base_entry(rel, EntryKind::File, m);
            entry.size = m.len();
            entry.sparse = m.blocks().saturating_mul(512) < m.len();
            let stamp = stamp(m);
            let cached = self.old.lookup(self.name, &entry.path, &stamp);
            let opened = cached.is_none().then(|| {
                std::fs::File::open(full).inspect(|f| crate::fileio::prefetch(f, m.len()))
            });
            Some(Item::File(FileItem {
                entry,
                full: full.to_owned(),
                stamp,
                cached,
                opened,
            }))
        } else if ft.is_symlink() {
            self.stats.files += 1;
            let mut e = base_entry(rel, EntryKind::Symlink, m);
            match std::fs::read_link(full) {
                Ok(t) => e.target = Some(t.into_os_string().into_vec()),
                Err(err) => e.error = Some(self.error(&e.path, err)),
            }
            Some(Item::Ready(e))
        } else if ft.is_dir() {
            self.stats.dirs += 1;
            Some(Item::Ready(base_entry(rel, EntryKind::Dir, m)))
        } else {
            self.stats.skipped_special += 1;
            None
        }
    }

    /// Walks below `root` (whose sorted child names are `names`), sending every item to `tx` in
    /// order, in batches (see [`BATCH`]); stops early when the receiver is gone.
    fn tree(
        &mut self,
        root: &Path,
        names: Vec<OsString>,
        tx: &crossbeam_channel::Sender<Vec<Item>>,
    ) {
        let mut batch = Vec::with_capacity(BATCH);
        // Stack of (directory path, its relative path, remaining child names in reverse order).
        let mut stack: Vec<(PathBuf, Vec<u8>, Vec<OsString>)> =
            vec![(root.to_owned(), Vec::new(), names)];
        while let Some((dir, rel, names)) = stack.last_mut() {
            let Some(name) = names.pop() else {
                stack.pop();
                continue;
            };
            let full = dir.join(&name);
            let mut child_rel = rel.clone();
            if !child_rel.is_empty() {
                child_rel.push(b'/');
            }
            child_rel.extend_from_slice(name.as_bytes());
            if self.exclude.matches(&child_rel, &name) {
                continue;
            }
            let m = match std::fs::symlink_metadata(&full) {
                Ok(m) => m,
                Err(err) => {
                    // Vanished between listing and stat: not an error of the backup.
                    if err.kind() != std::io::ErrorKind::NotFound {
                        self.error(&child_rel, err);
                    }
                    continue;
                }
            };
            let Some(mut item) = self.item(child_rel.clone(), &full, &m) else {
                continue;
            };
            if let Item::Ready(e) = &mut item {
                if e.kind == EntryKind::Dir {
                    match sorted_names(&full) {
                        Ok(names) => stack.push((full, child_rel, names)),
                        Err(err) => e.error = Some(self.error(&child_rel, err)),
                    }
                }
            }
            let to_read = matches!(&item, Item::File(f) if f.opened.is_some());
            batch.push(item);
            if (to_read || batch.len() >= BATCH)
                && tx
                    .send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))
                    .is_err()
            {
                return;
            }
        }
        if !batch.is_empty() {
            let _ = tx.send(batch);
        }
    }
}

/// A directory's entry names, sorted by bytes, reversed (so `pop` yields them in order).
fn sorted_names(dir: &Path) -> std::io::Result<Vec<OsString>> {
    let mut names = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<Vec<_>>>()?;
    names.sort_by(|a, b| b.as_bytes().cmp(a.as_bytes()));
    Ok(names)
}
