//! Reading sources: the files of a directory tree (walked by [`crate::walker`]), a single file, or
//! a byte stream, chunked into the source's tree stream. Chunk data goes to the [`crate::backup`]
//! pipeline through an [`Emitter`].
//!
//! A directory tree is walked by a [`Walker`] on its own thread, which hands [`Item`]s in tree
//! order over a bounded queue to the reading thread; the tree's entries are therefore written in
//! exactly the order a single thread would write them. The [`TreeWriter`] counts the entries it
//! writes ([`EntryCounts`]): those counts are the catalog's `files` and `dirs`.

use crate::cache::FilesCache;
use crate::chunker::Chunker;
use crate::delta::{DeltaSession, PendingStore};
use crate::fileio::HoleSkipping;
use crate::progress::Progress;
use crate::refs::BackupRefs;
use crate::walker::{base_entry, stamp, At, FileItem, Item, Meta, Walker, WALK_AHEAD};
use crate::{EngineError, SourceError};
use ibs_repo::config::ChunkerParams;
use ibs_repo::crypto::SymKey;
use ibs_repo::dedup::DedupSet;
use ibs_repo::ids::ChunkId;
use ibs_repo::tree::{header_line, EntryCounts, EntryKind, TreeEntry};
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
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
    /// What the repository holds, as far as this writer may rely on.
    pub index: Arc<DedupSet>,
    /// Every chunk each source of the backup references (see [`BackupRefs`]).
    pub refs: BackupRefs,
    pub tx: crossbeam_channel::Sender<Work>,
    /// Taken for each chunk sent (`crate::inflight`); closed when the stages downstream end.
    pub(crate) budget: Arc<crate::inflight::ByteBudget>,
    pub bytes_new: u64,
    pub closed: bool,
    /// Cancelling it closes the emitter at its next chunk or check ([`Emitter::stopped`]).
    pub cancel: Option<crate::cancel::CancelToken>,
    /// Set while a stream source is read: changed chunks may be stored as delta recipes.
    pub delta: Option<DeltaSession>,
    /// The first failure of the delta session (it is then dropped; the backup goes on without).
    pub delta_error: Option<String>,
    /// New signature stores, committed with the manifest.
    pub delta_pending: Vec<PendingStore>,
}

impl Emitter {
    /// Whether the pipeline was cancelled (downstream gone, or the cancel token set).
    pub fn stopped(&mut self) -> bool {
        if !self.closed && self.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
            self.closed = true;
        }
        self.closed
    }

    pub fn emit(&mut self, data: &[u8], ids: &mut Vec<ChunkId>) {
        if self.stopped() {
            return;
        }
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
        if self.refs.insert(id) && !self.index.contains(&id) {
            self.send(id, data.to_vec(), false);
        }
    }

    fn send(&mut self, id: ChunkId, data: Vec<u8>, recipe: bool) {
        self.bytes_new += data.len() as u64;
        if !self.budget.take(data.len() as u64) || self.tx.send(Work { id, data, recipe }).is_err()
        {
            self.closed = true;
        }
    }

    /// With a delta session: a chunk the repository lacks is stored as a recipe when a base is
    /// found (returns true); otherwise the chunk's signatures are kept for the next backup (carried
    /// from the previous store when it is already held whole) and the caller stores it whole.
    fn emit_delta(
        &mut self,
        data: &[u8],
        id: ChunkId,
        ids: &mut Vec<ChunkId>,
    ) -> std::io::Result<bool> {
        let d = self.delta.as_mut().expect("checked by the caller");
        let known = self.refs.contains(&id) || self.index.contains(&id);
        if known {
            if !d.carry(id)? {
                d.prepare(data);
                d.record_full(id)?;
            }
            return Ok(false);
        }
        d.prepare(data);
        if let Some((base, recipe)) = d.diff(data, id, &self.index)? {
            let rid = self.dedup.chunk_id(&recipe);
            ids.push(rid);
            // The recipe needs its base: both are referenced, so prune keeps both.
            self.refs.insert(base);
            if self.refs.insert(rid) && !self.index.contains(&rid) {
                self.send(rid, recipe, true);
            }
            return Ok(true);
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

/// Ends a delta session (of `what`): logs what it stored as recipes and queues its new signature
/// store, which replaces the old one once the manifest is committed.
fn close_delta(d: DeltaSession, what: &str, pending: &mut Vec<PendingStore>) {
    let st = d.stats;
    if st.chunks > 0 {
        tracing::info!(
            "{what}: {} changed chunks ({} bytes) stored as delta recipes of {} bytes",
            st.chunks,
            st.content_bytes,
            st.recipe_bytes
        );
    }
    match d.finish() {
        Ok(p) => pending.push(p),
        Err(e) => {
            tracing::warn!("{what}: the new delta signature store could not be written ({e})")
        }
    }
}

/// Per-source figures collected while walking.
#[derive(Default, Debug, Clone)]
pub struct SourceStats {
    /// The entries of the source's tree, as [`EntryCounts`] defines them.
    pub entries: EntryCounts,
    pub bytes: u64,
    pub errors: u64,
    pub changed: u64,
    /// Entries that cannot be backed up (sockets), left out of the tree.
    pub skipped: u64,
    pub error_messages: Vec<String>,
    /// One message per skipped entry (up to 1000).
    pub warnings: Vec<String>,
}

impl SourceStats {
    /// Adds the counts and messages of `o` (the walker's share of a source).
    fn merge(&mut self, o: SourceStats) {
        self.entries.files += o.entries.files;
        self.entries.dirs += o.entries.dirs;
        self.bytes += o.bytes;
        self.changed += o.changed;
        self.skipped += o.skipped;
        self.errors += o.errors;
        let room = 1000usize.saturating_sub(self.error_messages.len());
        self.error_messages
            .extend(o.error_messages.into_iter().take(room));
        let room = 1000usize.saturating_sub(self.warnings.len());
        self.warnings.extend(o.warnings.into_iter().take(room));
    }

    pub(crate) fn error(&mut self, msg: String) {
        self.errors += 1;
        if self.error_messages.len() < 1000 {
            self.error_messages.push(msg);
        }
    }

    pub(crate) fn skip(&mut self, msg: String) {
        self.skipped += 1;
        if self.warnings.len() < 1000 {
            self.warnings.push(msg);
        }
    }
}

/// Writes one source's tree stream through the chunker.
pub struct TreeWriter {
    chunker: Chunker,
    pub chunks: Vec<ChunkId>,
    /// The entries written so far.
    pub counts: EntryCounts,
    /// The tree's delta session (a folder source's; `crate::delta`, ADR 0049): changed tree
    /// chunks are stored as recipes against the previous backup's.
    delta: Option<DeltaSession>,
    /// Names the tree in the delta session's messages.
    delta_label: String,
}

impl TreeWriter {
    pub fn new(params: &ChunkerParams, em: &mut Emitter) -> Self {
        let mut t = TreeWriter {
            chunker: Chunker::for_lines(params),
            chunks: Vec::new(),
            counts: EntryCounts::default(),
            delta: None,
            delta_label: String::new(),
        };
        t.chunker.push(&header_line());
        t.flush(false, em);
        t
    }

    pub fn add(&mut self, e: &TreeEntry, em: &mut Emitter) {
        self.counts.add(e);
        self.chunker.push(&e.to_line());
        self.flush(false, em);
    }

    fn flush(&mut self, end: bool, em: &mut Emitter) {
        let chunks = &mut self.chunks;
        if self.delta.is_none() {
            self.chunker.drain(end, |c| em.emit(c, chunks));
            return;
        }
        // The emitter's session is a stream source's, which is never open while a tree is
        // written; the tree's own session stands in for the drain.
        let saved = std::mem::replace(&mut em.delta, self.delta.take());
        let saved_error = em.delta_error.take();
        self.chunker.drain(end, |c| em.emit(c, chunks));
        self.delta = std::mem::replace(&mut em.delta, saved);
        if let Some(e) = std::mem::replace(&mut em.delta_error, saved_error) {
            tracing::warn!(
                "{}: delta signatures failed ({e}); the rest of the tree is stored without deltas",
                self.delta_label
            );
        }
    }

    /// Ends the stream: its chunk ids and the entries it holds. A delta session's new signature
    /// store waits for the manifest in `em.delta_pending`.
    pub fn finish(mut self, em: &mut Emitter) -> (Vec<ChunkId>, EntryCounts) {
        self.flush(true, em);
        if let Some(d) = self.delta.take() {
            close_delta(d, &self.delta_label, &mut em.delta_pending);
        }
        (self.chunks, self.counts)
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
    fn cancelled(&mut self) -> Result<(), EngineError> {
        if self.em.stopped() {
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
            dev,
            stamp: st,
            cached,
            opened,
        } = f;
        if let Some(ids) = cached.filter(|ids| self.em.has_all(ids)) {
            for id in &ids {
                self.em.refs.insert(*id);
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
            .unwrap_or_else(|| {
                let f = crate::fileio::open_source(&full)?;
                let m = f.metadata()?;
                if (m.dev(), m.ino()) != (dev, st.ino) {
                    return Err(std::io::Error::other(
                        "replaced by another file while the backup walked it (not read)",
                    ));
                }
                Ok(f)
            })
            .and_then(|mut f| {
                let (ids, total) = if sparse {
                    self.read_chunks(&mut HoleSkipping::new(&f))?
                } else {
                    self.read_chunks(&mut f)?
                };
                let after = f.metadata()?;
                Ok((ids, total, stamp(&Meta::from(&after))))
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
            if end || self.em.stopped() {
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
        if let Some(d) = self.em.delta.take() {
            close_delta(
                d,
                &format!("source {}", self.name),
                &mut self.em.delta_pending,
            );
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
        let m = std::fs::symlink_metadata(root).map_err(|cause| SourceError::Root {
            name: self.name.to_owned(),
            path: root.to_owned(),
            cause,
        })?;
        let listed = if m.is_dir() {
            let fd_names = crate::walker::open_listed(rustix::fs::CWD, root.as_os_str());
            Some(fd_names.map_err(|cause| SourceError::List {
                name: self.name.to_owned(),
                path: root.to_owned(),
                cause,
            })?)
        } else {
            None
        };
        let m = Meta::from(&m);
        let mut walker = Walker::new(self.name, self.cache.take_old(), self.exclude.clone());
        let Some((root_fd, names)) = listed else {
            let name = root
                .file_name()
                .map(|n| n.as_bytes().to_vec())
                .unwrap_or_else(|| self.name.as_bytes().to_vec());
            let item = walker.item(name, &At::Root(root), &m);
            let (old, stats) = (walker.old, walker.stats);
            self.cache.give_back_old(old);
            self.stats.merge(stats);
            if let Some(item) = item {
                self.add(item, &mut tree);
            }
            self.cancelled()?;
            return Ok(self.finish(tree));
        };
        walker.ahead = Some(crate::statahead::StatAhead::start(
            root.to_owned(),
            self.exclude.clone(),
        ));
        if let Some(dir) = self.delta_dir {
            match DeltaSession::open_tree(dir, self.name, &self.em.dedup) {
                Ok(d) => {
                    tree.delta = Some(d);
                    tree.delta_label = format!("source {} (its tree)", self.name);
                }
                Err(e) => tracing::warn!(
                    "source {}: tree delta signatures unavailable ({e}); changed tree chunks are stored in full",
                    self.name
                ),
            }
        }
        let mut top = base_entry(Vec::new(), EntryKind::Dir, &m);
        match crate::xattrs::read_fd(root_fd.as_fd()) {
            Ok(x) => top.xattrs = x,
            Err(err) => self.stats.error(format!("{}: {err}", self.name)),
        }
        tree.add(&top, self.em);
        let (tx, rx) = crossbeam_channel::bounded::<Vec<Item>>(WALK_AHEAD);
        let walker = std::thread::scope(|s| {
            let walking = s.spawn(move || {
                walker.tree(root, root_fd, names, &tx);
                walker
            });
            'read: for batch in rx.iter() {
                for item in batch {
                    if self.em.stopped() {
                        break 'read;
                    }
                    self.add(item, &mut tree);
                }
            }
            // Dropping the receiver stops a walker that is still going (cancellation).
            drop(rx);
            walking.join()
        });
        let walker = walker.map_err(|_| EngineError::WalkerPanicked)?;
        self.cache.give_back_old(walker.old);
        self.stats.merge(walker.stats);
        self.cancelled()?;
        Ok(self.finish(tree))
    }

    /// Ends the source's tree stream, taking its entry counts into the source's figures.
    fn finish(&mut self, tree: TreeWriter) -> Vec<ChunkId> {
        let (ids, counts) = tree.finish(self.em);
        self.stats.entries = counts;
        ids
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
        // A cancelled source's reader may fail as it is stopped (a killed export): cancelled.
        self.cancelled()?;
        let (ids, total) = read.map_err(|cause| SourceError::Stream {
            name: self.name.to_owned(),
            cause,
        })?;
        self.cancelled()?;
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
            ..Default::default()
        };
        tree.add(&e, self.em);
        Ok(self.finish(tree))
    }
}
