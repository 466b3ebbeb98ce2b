//! Sealing and opening single chunks. A chunk is compressed with zstd when that saves at least 1/32 of
//! its size, otherwise stored raw (see [`ChunkSealer`] for how the level is chosen); then sealed with AES-256-GCM under the data key of the backup that
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

/// Chunks smaller than this are compressed at the configured level without probing.
const PROBE_MIN: usize = 256 << 10;
/// The probe: this many evenly spaced slices of this size.
const PROBE_PARTS: usize = 4;
const PROBE_PART: usize = 16 << 10;

/// How a chunk is to be encoded, decided by [`ChunkSealer::choose`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Compress at the configured level.
    Full,
    /// Compress at level 1.
    Fast,
    /// Store raw without trying: the probe did not compress.
    Raw,
}

/// A per-thread sealer that reuses its zstd contexts and its compression buffers.
///
/// The level is chosen per chunk. A chunk of at least 256 KiB is probed first: four evenly spaced
/// 16 KiB slices are compressed at level 1 and at the configured level. If level 1 saves less than
/// 3 % of the probe, the chunk is stored raw without compressing it (already compressed archives,
/// encrypted data). If the configured level compresses the probe no smaller than level 1 does
/// (literal-heavy data such as VM images and binaries, where longer match searches find nothing),
/// the chunk is compressed at level 1, which is about twice as fast and no larger. Otherwise
/// (text, dumps, logs) it is compressed at the configured level. The probe costs about a tenth of
/// compressing the chunk. On the benchmark dataset this cut zstd's time by a quarter and the
/// stored size by 1 % (`bench/README.md`). Readers do not care: zstd frames decode the same
/// whatever the level.
pub struct ChunkSealer {
    zstd: zstd::bulk::Compressor<'static>,
    /// Level 1, when the configured level is higher.
    fast: Option<zstd::bulk::Compressor<'static>>,
    scratch: Vec<u8>,
    probe: Vec<u8>,
    probe_out: Vec<u8>,
}

impl ChunkSealer {
    pub fn new(level: i32) -> Self {
        ChunkSealer {
            zstd: zstd::bulk::Compressor::new(level).expect("valid zstd level"),
            fast: (level > 1).then(|| zstd::bulk::Compressor::new(1).expect("valid zstd level")),
            scratch: Vec::new(),
            probe: Vec::new(),
            probe_out: Vec::new(),
        }
    }

    pub fn seal(&mut self, id: ChunkId, data: &[u8], data_key: &SymKey) -> SealedChunk {
        self.seal_into(id, data, data_key, Vec::new())
    }

    /// Decides how to encode `data` (see the type's doc).
    pub fn choose(&mut self, data: &[u8]) -> Plan {
        let Some(fast) = self.fast.as_mut() else {
            return Plan::Full;
        };
        if data.len() < PROBE_MIN {
            return Plan::Full;
        }
        self.probe.clear();
        let step = (data.len() - PROBE_PART) / (PROBE_PARTS - 1);
        for i in 0..PROBE_PARTS {
            self.probe
                .extend_from_slice(&data[i * step..i * step + PROBE_PART]);
        }
        let total = self.probe.len();
        self.probe_out.clear();
        self.probe_out
            .reserve(zstd::zstd_safe::compress_bound(total));
        let Ok(n1) = fast.compress_to_buffer(&self.probe, &mut self.probe_out) else {
            return Plan::Full;
        };
        if n1 * 100 > total * 97 {
            return Plan::Raw;
        }
        self.probe_out.clear();
        let Ok(nf) = self
            .zstd
            .compress_to_buffer(&self.probe, &mut self.probe_out)
        else {
            return Plan::Full;
        };
        if nf >= n1 {
            Plan::Fast
        } else {
            Plan::Full
        }
    }

    /// Seals a delta recipe (`crate::delta`) whose id is its keyed hash: always a zstd frame at
    /// the configured level (a recipe is mostly inserted text), encoding [`encoding::DELTA`].
    pub fn seal_recipe_into(
        &mut self,
        id: ChunkId,
        recipe: &[u8],
        data_key: &SymKey,
        mut out: Vec<u8>,
    ) -> SealedChunk {
        self.scratch.clear();
        self.scratch
            .reserve(zstd::zstd_safe::compress_bound(recipe.len()));
        self.zstd
            .compress_to_buffer(recipe, &mut self.scratch)
            .expect("the buffer holds zstd's bound");
        data_key.seal_into(&chunk_aad(&id, encoding::DELTA), &self.scratch, &mut out);
        SealedChunk {
            id,
            encoding: encoding::DELTA,
            raw_length: recipe.len() as u32,
            sealed: out,
        }
    }

    /// Seals into `out` (a recycled buffer; its contents are replaced).
    pub fn seal_into(
        &mut self,
        id: ChunkId,
        data: &[u8],
        data_key: &SymKey,
        mut out: Vec<u8>,
    ) -> SealedChunk {
        let plan = self.choose(data);
        self.scratch.clear();
        let compressed = plan != Plan::Raw && {
            self.scratch
                .reserve(zstd::zstd_safe::compress_bound(data.len()));
            let z = match (plan, self.fast.as_mut()) {
                (Plan::Fast, Some(fast)) => fast,
                _ => &mut self.zstd,
            };
            z.compress_to_buffer(data, &mut self.scratch)
                .is_ok_and(|n| n + data.len() / 32 < data.len())
        };
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

/// A per-thread opener that reuses its zstd context and, when made with
/// [`ChunkOpener::reusing`], its buffers.
///
/// A chunk of 1 MiB or more lives in memory the allocator maps for it alone; opening one into fresh
/// buffers faults in and zeroes every page of its decrypted and of its decompressed form, which
/// was 5 % of a restore's CPU samples at 600,000 files (`bench/README.md`, "Buffers handed
/// back"). A reusing opener keeps both buffers between chunks: at most two of the largest chunk it
/// opened, so it suits a bounded number of workers.
#[derive(Default)]
pub struct ChunkOpener {
    zstd: Decompressor,
    /// The decrypted payload (a zstd frame, or the chunk itself when stored raw).
    payload: Vec<u8>,
    /// The chunk as [`ChunkOpener::open_buf`] returns it.
    out: Vec<u8>,
    reuse: bool,
}

/// zstd's decompression context (a newtype so [`ChunkOpener`] can derive `Default`).
struct Decompressor(zstd::bulk::Decompressor<'static>);

impl Default for Decompressor {
    fn default() -> Self {
        Decompressor(zstd::bulk::Decompressor::new().expect("zstd decompressor"))
    }
}

/// Buffers at least this large are dropped between chunks by an opener that does not reuse them
/// (smaller ones come from the allocator's heap, where reuse costs nothing either way).
const KEEP_ALWAYS: usize = 1 << 20;

impl ChunkOpener {
    /// An opener that keeps its buffers between chunks whatever their size.
    pub fn reusing() -> Self {
        ChunkOpener {
            reuse: true,
            ..Default::default()
        }
    }

    /// Decrypts, decompresses and verifies one chunk. Errors name the chunk. For a delta chunk
    /// ([`encoding::DELTA`]) this is the recipe; `crate::delta::apply` rebuilds the content.
    pub fn open(
        &mut self,
        id: &ChunkId,
        enc: u8,
        raw_length: u32,
        sealed: &[u8],
        data_key: &SymKey,
        dedup_key: &SymKey,
    ) -> Result<Vec<u8>> {
        self.open_buf(id, enc, raw_length, sealed, data_key, dedup_key)?;
        Ok(std::mem::take(&mut self.out))
    }

    /// [`ChunkOpener::open`] into the opener's own buffer, valid until its next call.
    pub fn open_buf(
        &mut self,
        id: &ChunkId,
        enc: u8,
        raw_length: u32,
        sealed: &[u8],
        data_key: &SymKey,
        dedup_key: &SymKey,
    ) -> Result<&[u8]> {
        let what = || format!("chunk {id}");
        if raw_length > MAX_CHUNK {
            return Err(RepoError::corrupt(what(), "raw length out of range"));
        }
        if !self.reuse {
            for b in [&mut self.payload, &mut self.out] {
                if b.capacity() >= KEEP_ALWAYS {
                    *b = Vec::new();
                }
            }
        }
        if !data_key.open_into(&chunk_aad(id, enc), sealed, &mut self.payload) {
            return Err(RepoError::corrupt(
                what(),
                "authentication failed (damaged data, or wrong data key)",
            ));
        }
        match enc {
            encoding::RAW => std::mem::swap(&mut self.payload, &mut self.out),
            encoding::ZSTD | encoding::DELTA => {
                self.out.clear();
                self.out.reserve(raw_length as usize);
                self.zstd
                    .0
                    .decompress_to_buffer(&self.payload, &mut self.out)
                    .map_err(|e| RepoError::corrupt(what(), format!("decompression: {e}")))?;
            }
            other => {
                return Err(RepoError::corrupt(
                    what(),
                    format!("unknown encoding {other}"),
                ))
            }
        }
        if self.out.len() != raw_length as usize {
            return Err(RepoError::corrupt(what(), "length differs from the index"));
        }
        if dedup_key.chunk_id(&self.out) != *id {
            return Err(RepoError::corrupt(
                what(),
                "content does not hash to the chunk's id",
            ));
        }
        Ok(&self.out)
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

    fn xorshift(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn the_probe_picks_raw_fast_and_full_and_every_plan_round_trips() {
        let (dk, dedup) = (SymKey::random(), SymKey::random());
        let mut s = ChunkSealer::new(3);
        let mut o = ChunkOpener::default();
        let n = 1 << 20;
        // Uniformly random bytes: nothing to gain, stored raw without a full attempt.
        let random = xorshift(n, 7);
        // Skewed random bytes (few distinct symbols, no repeats): entropy coding only, where
        // level 1 does as well as level 3.
        let skewed: Vec<u8> = xorshift(n, 9).iter().map(|b| b % 7 + b'a').collect();
        // Text with long repeats at varying distances: level 3 finds much more.
        let mut text = Vec::new();
        let words = [
            "select", "from", "accounts", "where", "id", "=", "and", "balance",
        ];
        let mut r = xorshift(n, 11).into_iter();
        while text.len() < n {
            let a = r.next().unwrap_or(0) as usize;
            text.extend_from_slice(words[a % words.len()].as_bytes());
            text.push(if a.is_multiple_of(13) { b'\n' } else { b' ' });
            if a.is_multiple_of(5) {
                text.extend_from_slice(format!("{};", a * 7919).as_bytes());
            }
        }
        text.truncate(n);
        assert_eq!(s.choose(&random), Plan::Raw);
        assert_eq!(s.choose(&skewed), Plan::Fast);
        assert_eq!(s.choose(&text), Plan::Full);
        assert_eq!(
            s.choose(&text[..1000]),
            Plan::Full,
            "small chunks are not probed"
        );
        assert_eq!(
            ChunkSealer::new(1).choose(&skewed),
            Plan::Full,
            "level 1 needs no probe"
        );
        for (data, enc) in [
            (&random, encoding::RAW),
            (&skewed, encoding::ZSTD),
            (&text, encoding::ZSTD),
        ] {
            let id = dedup.chunk_id(data);
            let c = s.seal(id, data, &dk);
            assert_eq!(c.encoding, enc);
            assert_eq!(
                o.open(&id, c.encoding, c.raw_length, &c.sealed, &dk, &dedup)
                    .unwrap(),
                *data
            );
        }
    }
}
