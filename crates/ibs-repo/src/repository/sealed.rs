//! Reading sealed chunks out of packs: one chunk by its location, or a span of chunks that lie one
//! after another in one pack with a single range read.
//!
//! Invariants: a location whose raw length is out of range is refused before any read; a range
//! past the pack's end or a missing pack is corruption naming the pack, never a storage error the
//! caller could retry as transient; a span is read only when its chunks are in one pack, in
//! ascending order and without overlap, and each chunk handed back is exactly its `length` bytes.

use super::Repository;
use crate::chunk::MAX_CHUNK;
use crate::error::{RepoError, Result};
use crate::ids::PackId;
use crate::index::ChunkLocation;
use crate::layout;
use bytes::Bytes;

impl Repository {
    /// Fetches one sealed chunk by its location.
    pub async fn read_sealed(&self, loc: &ChunkLocation) -> Result<Bytes> {
        check_location(loc)?;
        let got = self
            .storage
            .get_range(
                &layout::pack(&loc.pack),
                loc.offset as u64,
                loc.length as u64,
            )
            .await;
        sealed_result(loc, got)
    }

    /// [`Repository::read_sealed`] on the calling thread, when the storage can read without the
    /// async runtime (`Storage::get_range_blocking`); otherwise `None`.
    pub fn read_sealed_blocking(&self, loc: &ChunkLocation) -> Option<Result<Bytes>> {
        if let Err(e) = check_location(loc) {
            return Some(Err(e));
        }
        let got = self.storage.get_range_blocking(
            &layout::pack(&loc.pack),
            loc.offset as u64,
            loc.length as u64,
        )?;
        Some(sealed_result(loc, got))
    }

    /// Fetches the sealed chunks `locs` with one range read, from the first one's offset to the
    /// last one's end (gaps between them are read and dropped). `locs` must be one pack's chunks
    /// in ascending, non-overlapping order ([`span_ok`]); returns one slice per location.
    pub async fn read_sealed_span(&self, locs: &[ChunkLocation]) -> Result<Vec<Bytes>> {
        let (Some(first), Some(last)) = (locs.first(), locs.last()) else {
            return Ok(Vec::new());
        };
        if !span_ok(locs) {
            return Err(RepoError::corrupt(
                format!("pack {}", first.pack),
                "chunks read as one span are not in order in one pack",
            ));
        }
        for loc in locs {
            check_location(loc)?;
        }
        let start = first.offset as u64;
        let len = last.offset as u64 + last.length as u64 - start;
        let got = self
            .storage
            .get_range(&layout::pack(&first.pack), start, len)
            .await;
        let span = sealed_result(first, got)?;
        if span.len() as u64 != len {
            return Err(RepoError::corrupt(
                format!("pack {}", first.pack),
                format!("a range read returned {} of {len} bytes", span.len()),
            ));
        }
        Ok(locs
            .iter()
            .map(|l| {
                let at = (l.offset as u64 - start) as usize;
                span.slice(at..at + l.length as usize)
            })
            .collect())
    }
}

impl Repository {
    /// Reads `len` bytes of pack `pack` at `offset` with one range read, exactly: a short answer,
    /// a range past the pack's end or a missing pack is corruption naming the pack. For a reader
    /// that cuts chunks out of larger stretches of a pack itself (a restore's shared blocks).
    pub async fn read_pack_range(&self, pack: &PackId, offset: u64, len: u64) -> Result<Bytes> {
        let got = self
            .storage
            .get_range(&layout::pack(pack), offset, len)
            .await
            .map_err(|e| read_error(pack, e))?;
        if got.len() as u64 != len {
            return Err(RepoError::corrupt(
                format!("pack {pack}"),
                format!("a range read returned {} of {len} bytes", got.len()),
            ));
        }
        Ok(got)
    }
}

/// Whether `locs` can be read as one span: all in the first one's pack, each starting at or after
/// the previous one's end.
pub fn span_ok(locs: &[ChunkLocation]) -> bool {
    locs.windows(2).all(|w| {
        w[0].pack == w[1].pack && w[1].offset as u64 >= w[0].offset as u64 + w[0].length as u64
    })
}

fn check_location(loc: &ChunkLocation) -> Result<()> {
    if loc.raw_length > MAX_CHUNK {
        return Err(RepoError::corrupt(
            format!("pack {}", loc.pack),
            "chunk length out of range",
        ));
    }
    Ok(())
}

/// A read of a chunk's bytes: a range past the pack's end or a missing pack is corruption.
fn sealed_result(loc: &ChunkLocation, got: ibs_storage::Result<Bytes>) -> Result<Bytes> {
    got.map_err(|e| read_error(&loc.pack, e))
}

/// A failed read of a pack's bytes: a range past its end or a missing pack is corruption.
fn read_error(pack: &PackId, e: ibs_storage::StorageError) -> RepoError {
    if e.kind == ibs_storage::ErrorKind::Invalid || e.is_not_found() {
        RepoError::corrupt(format!("pack {pack}"), e.to_string())
    } else {
        e.into()
    }
}
