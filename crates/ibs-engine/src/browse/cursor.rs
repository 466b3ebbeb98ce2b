//! Reading one backed-up file at any offset, as a file system serving `read(offset, len)` needs
//! (`ibs repo mount`): a [`FileCursor`] learns where each chunk starts as reads reach it, and keeps
//! the last chunk it opened, so a sequential reader in blocks smaller than a chunk opens every
//! chunk once. Memory per open cursor: its chunk list, one offset per chunk reached, and one
//! chunk's plaintext.
//!
//! Invariant: `bounds[0] == 0` and `bounds[i + 1]` is the end of chunk `i`, for every chunk whose
//! length is known; a full chunk's length comes from the index (its `raw_length`, which the opener
//! checks), a delta chunk's only from rebuilding it, so a read past delta chunks rebuilds them in
//! order once. Every byte handed out was authenticated and re-hashed to its chunk id.

use super::Reader;
use crate::chunkread::read_chunks;
use crate::{EngineError, RestoreError};
use ibs_repo::chunk::ChunkOpener;
use ibs_repo::ids::ChunkId;
use ibs_repo::pack::encoding;
use ibs_repo::tree::{EntryKind, TreeEntry};

/// One regular file of a backup, open for reads at any offset.
pub struct FileCursor {
    name: String,
    chunks: Vec<ChunkId>,
    size: u64,
    bounds: Vec<u64>,
    /// The last chunk opened: its index and plaintext.
    cached: Option<(usize, Vec<u8>)>,
    opener: ChunkOpener,
}

impl FileCursor {
    /// The file's size as recorded in the tree.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn fail(&self, detail: String) -> EngineError {
        RestoreError::FileUnreadable {
            path: self.name.clone(),
            detail,
        }
        .into()
    }
}

impl Reader {
    /// Opens `entry` (a regular file recorded without error) for [`Reader::read_at`].
    pub fn open_file(&self, entry: &TreeEntry) -> Result<FileCursor, EngineError> {
        let name = String::from_utf8_lossy(&entry.path).into_owned();
        let fail = |detail: &str| {
            EngineError::from(RestoreError::FileUnreadable {
                path: name.clone(),
                detail: detail.to_string(),
            })
        };
        if entry.kind != EntryKind::File {
            return Err(fail("not a regular file"));
        }
        if let Some(e) = &entry.error {
            return Err(fail(&format!("unreadable at backup time: {e}")));
        }
        Ok(FileCursor {
            name: name.clone(),
            chunks: entry.chunks.clone(),
            size: entry.size,
            bounds: vec![0],
            cached: None,
            opener: ChunkOpener::default(),
        })
    }

    /// Up to `len` bytes of the file from `offset` (fewer only at its end; none past it).
    /// Blocking, like [`Reader::read_file`]; fails when a chunk cannot be read or the chunks do not
    /// add up to the recorded size.
    pub fn read_at(
        &self,
        f: &mut FileCursor,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, EngineError> {
        let end = offset.saturating_add(len as u64).min(f.size);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut pos = offset;
        while pos < end {
            self.learn_until(f, pos)?;
            let i = f.bounds.partition_point(|b| *b <= pos) - 1;
            let (start, stop) = (f.bounds[i], f.bounds[i + 1]);
            let data = self.chunk(f, i)?;
            let from = (pos - start) as usize;
            let to = (end.min(stop) - start) as usize;
            out.extend_from_slice(&data[from..to]);
            pos = start + to as u64;
        }
        Ok(out)
    }

    /// Learns chunk lengths until the chunk holding byte `pos` is known.
    fn learn_until(&self, f: &mut FileCursor, pos: u64) -> Result<(), EngineError> {
        while *f.bounds.last().expect("bounds start with 0") <= pos {
            let i = f.bounds.len() - 1;
            if i == f.chunks.len() {
                let held = f.bounds[i];
                return Err(f.fail(format!(
                    "its chunks hold {held} bytes, the tree records {}",
                    f.size
                )));
            }
            let loc = self.index.get(&f.chunks[i]).ok_or_else(|| {
                f.fail(format!("chunk {} is missing from the index", f.chunks[i]))
            })?;
            let len = if loc.encoding == encoding::DELTA {
                self.chunk(f, i)?.len() as u64
            } else {
                u64::from(loc.raw_length)
            };
            f.bounds.push(f.bounds[i] + len);
            if f.bounds.len() == f.chunks.len() + 1 && f.bounds[f.chunks.len()] != f.size {
                let held = f.bounds[f.chunks.len()];
                return Err(f.fail(format!(
                    "its chunks hold {held} bytes, the tree records {}",
                    f.size
                )));
            }
        }
        Ok(())
    }

    /// Chunk `i`'s plaintext, from the cursor's cache or read now (and cached).
    fn chunk<'f>(&self, f: &'f mut FileCursor, i: usize) -> Result<&'f [u8], EngineError> {
        if f.cached.as_ref().is_none_or(|(c, _)| *c != i) {
            let mut data = Vec::new();
            read_chunks(
                &self.rt,
                &self.repo,
                &self.keys,
                &self.index,
                &f.chunks[i..=i],
                &mut f.opener,
                |d| {
                    data.extend_from_slice(d);
                    Ok(())
                },
            )
            .map_err(|detail| f.fail(detail))?;
            if let Some(&end) = f.bounds.get(i + 1) {
                if end - f.bounds[i] != data.len() as u64 {
                    return Err(f.fail(format!(
                        "chunk {} holds {} bytes, the index records {}",
                        f.chunks[i],
                        data.len(),
                        end - f.bounds[i]
                    )));
                }
            }
            f.cached = Some((i, data));
        }
        Ok(&f.cached.as_ref().expect("just cached").1)
    }
}
