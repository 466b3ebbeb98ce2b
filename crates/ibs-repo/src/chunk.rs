//! Sealing and opening single chunks. A chunk is compressed with zstd when that saves at least 1/32 of
//! its size, otherwise stored raw; then sealed with AES-256-GCM under the data key of the backup that
//! first wrote it, with its id and encoding as associated data. Opening re-derives the id from the
//! plaintext (keyed BLAKE3), so a chunk that decrypts but is not the chunk asked for is still caught.

use crate::crypto::{chunk_aad, SymKey};
use crate::error::{RepoError, Result};
use crate::ids::ChunkId;
use crate::pack::encoding;

/// Largest plaintext chunk any reader accepts (the chunker's maximum is at most 16 MiB).
pub const MAX_CHUNK: u32 = 16 << 20;

pub struct SealedChunk {
    pub id: ChunkId,
    pub encoding: u8,
    pub raw_length: u32,
    pub sealed: Vec<u8>,
}

/// A per-thread sealer that reuses its zstd context and its compression buffer.
pub struct ChunkSealer {
    zstd: zstd::bulk::Compressor<'static>,
    scratch: Vec<u8>,
}

impl ChunkSealer {
    pub fn new(level: i32) -> Self {
        ChunkSealer {
            zstd: zstd::bulk::Compressor::new(level).expect("valid zstd level"),
            scratch: Vec::new(),
        }
    }

    pub fn seal(&mut self, id: ChunkId, data: &[u8], data_key: &SymKey) -> SealedChunk {
        self.seal_into(id, data, data_key, Vec::new())
    }

    /// Seals into `out` (a recycled buffer; its contents are replaced).
    pub fn seal_into(
        &mut self,
        id: ChunkId,
        data: &[u8],
        data_key: &SymKey,
        mut out: Vec<u8>,
    ) -> SealedChunk {
        self.scratch.clear();
        self.scratch
            .reserve(zstd::zstd_safe::compress_bound(data.len()));
        let compressed = self
            .zstd
            .compress_to_buffer(data, &mut self.scratch)
            .is_ok_and(|n| n + data.len() / 32 < data.len());
        let (enc, payload) = if compressed {
            (encoding::ZSTD, self.scratch.as_slice())
        } else {
            (encoding::RAW, data)
        };
        data_key.seal_into(&chunk_aad(&id, enc), payload, &mut out);
        SealedChunk {
            id,
            encoding: enc,
            raw_length: data.len() as u32,
            sealed: out,
        }
    }
}

/// A per-thread opener that reuses its zstd context.
pub struct ChunkOpener {
    zstd: zstd::bulk::Decompressor<'static>,
}

impl Default for ChunkOpener {
    fn default() -> Self {
        ChunkOpener {
            zstd: zstd::bulk::Decompressor::new().expect("zstd decompressor"),
        }
    }
}

impl ChunkOpener {
    /// Decrypts, decompresses and verifies one chunk. Errors name the chunk.
    pub fn open(
        &mut self,
        id: &ChunkId,
        enc: u8,
        raw_length: u32,
        sealed: &[u8],
        data_key: &SymKey,
        dedup_key: &SymKey,
    ) -> Result<Vec<u8>> {
        let what = || format!("chunk {id}");
        if raw_length > MAX_CHUNK {
            return Err(RepoError::corrupt(what(), "raw length out of range"));
        }
        let payload = data_key.open(&chunk_aad(id, enc), sealed).ok_or_else(|| {
            RepoError::corrupt(
                what(),
                "authentication failed (damaged data, or wrong data key)",
            )
        })?;
        let data = match enc {
            encoding::RAW => payload,
            encoding::ZSTD => self
                .zstd
                .decompress(&payload, raw_length as usize)
                .map_err(|e| RepoError::corrupt(what(), format!("decompression: {e}")))?,
            other => {
                return Err(RepoError::corrupt(
                    what(),
                    format!("unknown encoding {other}"),
                ))
            }
        };
        if data.len() != raw_length as usize {
            return Err(RepoError::corrupt(what(), "length differs from the index"));
        }
        if dedup_key.chunk_id(&data) != *id {
            return Err(RepoError::corrupt(
                what(),
                "content does not hash to the chunk's id",
            ));
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressible_and_incompressible_round_trip() {
        let (dk, dedup) = (SymKey::random(), SymKey::random());
        let mut s = ChunkSealer::new(3);
        let mut o = ChunkOpener::default();
        let text = b"hello hello hello hello hello hello hello hello".repeat(100);
        let random: Vec<u8> = (0..10_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for data in [&text[..], &random[..], &[][..]] {
            let id = dedup.chunk_id(data);
            let c = s.seal(id, data, &dk);
            assert_eq!(
                o.open(&id, c.encoding, c.raw_length, &c.sealed, &dk, &dedup)
                    .unwrap(),
                data
            );
            assert!(o
                .open(
                    &ChunkId([0; 32]),
                    c.encoding,
                    c.raw_length,
                    &c.sealed,
                    &dk,
                    &dedup
                )
                .is_err());
        }
        assert_eq!(
            s.seal(dedup.chunk_id(&text), &text, &dk).encoding,
            encoding::ZSTD
        );
    }
}
