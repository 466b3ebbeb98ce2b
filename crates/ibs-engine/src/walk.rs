//! Reading sources: walking a directory tree in a fixed order (parents before children, siblings in
//! byte order of their names), and turning files, symlinks and directories into tree entries. Chunk
//! data goes to the [`crate::backup`] pipeline through an [`Emitter`].

use crate::cache::{FileStamp, FilesCache};
use crate::chunker::Chunker;
use crate::delta::{DeltaSession, PendingStore};
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

    /// Reads a regular file into chunks; returns its entry.
    fn file(&mut self, rel: Vec<u8>, full: &Path, m: &Metadata) -> TreeEntry {
        let mut e = base_entry(rel, EntryKind::File, m);
        e.size = m.len();
        e.sparse = m.blocks().saturating_mul(512) < m.len();
        self.stats.files += 1;
        let st = stamp(m);
        if let Some(ids) = self
            .cache
            .lookup(self.name, &e.path, &st)
            .filter(|ids| self.em.has_all(ids))
        {
            for id in &ids {
                self.em.refs.insert(*id);
                self.em.source_refs.insert(*id);
            }
            let _ = self.cache.record(self.name, &e.path, &st, &ids);
            e.chunks = ids;
            self.stats.bytes += e.size;
            self.progress.add_bytes(e.size);
            self.progress.add_file();
            return e;
        }
        let result = std::fs::File::open(full).and_then(|mut f| {
            let (ids, total) = self.read_chunks(&mut f)?;
            let after = f.metadata()?;
            Ok((ids, total, stamp(&after)))
        });
        self.progress.add_file();
        match result {
            Ok((ids, total, after)) => {
                self.stats.bytes += total;
                e.size = total;
                if after != st || total != st.size {
                    e.changed = true;
                    self.stats.changed += 1;
                    tracing::warn!(
                        "{}: {} changed while it was read",
                        self.name,
                        full.display()
                    );
                } else {
                    let _ = self.cache.record(self.name, &e.path, &st, &ids);
                }
                e.chunks = ids;
            }
            Err(err) => {
                self.stats.error(format!(
                    "{}/{}: {err}",
                    self.name,
                    String::from_utf8_lossy(&e.path)
                ));
                e.error = Some(err.to_string());
                e.size = 0;
            }
        }
        e
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

    fn entry_for(&mut self, rel: Vec<u8>, full: &Path, m: &Metadata) -> Option<TreeEntry> {
        let ft = m.file_type();
        if ft.is_file() {
            Some(self.file(rel, full, m))
        } else if ft.is_symlink() {
            let mut e = base_entry(rel, EntryKind::Symlink, m);
            match std::fs::read_link(full) {
                Ok(t) => e.target = Some(t.into_os_string().into_vec()),
                Err(err) => {
                    self.stats.error(format!(
                        "{}/{}: {err}",
                        self.name,
                        String::from_utf8_lossy(&e.path)
                    ));
                    e.error = Some(err.to_string());
                }
            }
            self.stats.files += 1;
            Some(e)
        } else if ft.is_dir() {
            self.stats.dirs += 1;
            Some(base_entry(rel, EntryKind::Dir, m))
        } else {
            self.stats.skipped_special += 1;
            None
        }
    }

    /// Backs up a directory tree or a single file at `root`. Returns the tree's chunk ids.
    pub fn path(&mut self, root: &Path) -> Result<Vec<ChunkId>, EngineError> {
        let mut tree = TreeWriter::new(self.params, self.em);
        let m = std::fs::symlink_metadata(root).map_err(|e| {
            EngineError::Source(format!("source {}: {}: {e}", self.name, root.display()))
        })?;
        if !m.is_dir() {
            let name = root
                .file_name()
                .map(|n| n.as_bytes().to_vec())
                .unwrap_or_else(|| self.name.as_bytes().to_vec());
            if let Some(e) = self.entry_for(name, root, &m) {
                tree.add(&e, self.em);
            }
            self.cancelled()?;
            return Ok(tree.finish(self.em));
        }
        self.stats.dirs += 1;
        tree.add(&base_entry(Vec::new(), EntryKind::Dir, &m), self.em);
        // Stack of (directory path, its relative path, remaining child names in reverse order).
        let mut stack: Vec<(PathBuf, Vec<u8>, Vec<OsString>)> = Vec::new();
        match sorted_names(root) {
            Ok(names) => stack.push((root.to_owned(), Vec::new(), names)),
            Err(err) => {
                return Err(EngineError::Source(format!(
                    "source {}: cannot list {}: {err}",
                    self.name,
                    root.display()
                )));
            }
        }
        while let Some((dir, rel, names)) = stack.last_mut() {
            let Some(name) = names.pop() else {
                stack.pop();
                continue;
            };
            self.cancelled()?;
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
                        self.stats.error(format!(
                            "{}/{}: {err}",
                            self.name,
                            String::from_utf8_lossy(&child_rel)
                        ));
                    }
                    continue;
                }
            };
            let Some(mut e) = self.entry_for(child_rel.clone(), &full, &m) else {
                continue;
            };
            if e.kind == EntryKind::Dir {
                match sorted_names(&full) {
                    Ok(names) => {
                        tree.add(&e, self.em);
                        stack.push((full, child_rel, names));
                    }
                    Err(err) => {
                        self.stats.error(format!(
                            "{}/{}: {err}",
                            self.name,
                            String::from_utf8_lossy(&child_rel)
                        ));
                        e.error = Some(err.to_string());
                        tree.add(&e, self.em);
                    }
                }
            } else {
                tree.add(&e, self.em);
            }
        }
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

/// A directory's entry names, sorted by bytes, reversed (so `pop` yields them in order).
fn sorted_names(dir: &Path) -> std::io::Result<Vec<OsString>> {
    let mut names = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<Vec<_>>>()?;
    names.sort_by(|a, b| b.as_bytes().cmp(a.as_bytes()));
    Ok(names)
}
