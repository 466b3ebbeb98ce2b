//! Pack files: many sealed chunks in one object, followed by a sealed header that lists them, so the
//! index can be rebuilt from packs alone. A pack is named by the BLAKE3 hash of all its bytes, so its
//! integrity is checkable with no key.
//!
//! Layout (format v1, all integers little-endian):
//! ```text
//! "IBSPAK" u16 version=1                      8 bytes
//! blob 0 … blob n-1                            each a chunk sealed under its data key
//! sealed header                                sealed under the metadata key, aad "ibs.packheader.v1"
//! u32 sealed_header_len  "IBPT"               8-byte trailer
//! header plaintext: u16 version=1, u32 count, count × entry (61 bytes):
//!   chunk_id[32] offset:u32 length:u32 raw_length:u32 encoding:u8 key_id[16]
//! ```
//! Invariants checked on read: every blob lies between the 8-byte prefix and the sealed header, and
//! blobs do not overlap.

use crate::crypto::SymKey;
use crate::error::{RepoError, Result};
use crate::ids::{ChunkId, KeyId, PackId};
use bytes::Bytes;

pub const PACK_MAGIC: &[u8; 6] = b"IBSPAK";
pub const PACK_VERSION: u16 = 1;
pub const TRAILER_MAGIC: &[u8; 4] = b"IBPT";
pub const PREFIX_LEN: usize = 8;
pub const TRAILER_LEN: usize = 8;
pub const ENTRY_LEN: usize = 61;
/// Associated data of the sealed pack header (public so fuzz targets can seal crafted headers).
pub const HEADER_AAD: &[u8] = b"ibs.packheader.v1";

/// Chunk payload encodings (a closed set; values are stable).
pub mod encoding {
    pub const RAW: u8 = 0;
    pub const ZSTD: u8 = 1;
    /// A zstd frame of a delta recipe (`crate::delta`); the id is the recipe's keyed hash.
    pub const DELTA: u8 = 2;
}

/// One chunk inside a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    pub id: ChunkId,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
    pub encoding: u8,
    pub key_id: KeyId,
}

impl PackEntry {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.0);
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        out.extend_from_slice(&self.raw_length.to_le_bytes());
        out.push(self.encoding);
        out.extend_from_slice(&self.key_id.0);
    }

    /// Decodes one 61-byte entry. The caller guarantees the length.
    pub fn decode(b: &[u8]) -> Result<Self> {
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let e = PackEntry {
            id: ChunkId::from_slice(&b[0..32]).expect("32 bytes"),
            offset: u32_at(32),
            length: u32_at(36),
            raw_length: u32_at(40),
            encoding: b[44],
            key_id: KeyId::from_slice(&b[45..61]).expect("16 bytes"),
        };
        if e.encoding > encoding::DELTA {
            return Err(RepoError::corrupt(
                "pack entry",
                format!("unknown encoding {}", e.encoding),
            ));
        }
        Ok(e)
    }
}

/// Accumulates sealed chunks into one pack.
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
}

impl Default for PackBuilder {
    fn default() -> Self {
        Self::new(0)
    }
}

impl PackBuilder {
    pub fn new(capacity: usize) -> Self {
        Self::reuse(Vec::with_capacity(capacity))
    }

    /// A builder writing into `buf` (cleared first): a writer recycles the buffers of packs it has
    /// stored, so their memory is neither returned to the allocator nor touched fresh per pack.
    pub fn reuse(mut buf: Vec<u8>) -> Self {
        buf.clear();
        buf.extend_from_slice(PACK_MAGIC);
        buf.extend_from_slice(&PACK_VERSION.to_le_bytes());
        PackBuilder {
            buf,
            entries: Vec::new(),
        }
    }

    pub fn add(
        &mut self,
        id: ChunkId,
        encoding: u8,
        raw_length: u32,
        key_id: KeyId,
        sealed: &[u8],
    ) {
        let offset = self.buf.len() as u32;
        self.buf.extend_from_slice(sealed);
        self.entries.push(PackEntry {
            id,
            offset,
            length: sealed.len() as u32,
            raw_length,
            encoding,
            key_id,
        });
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The size of the pack [`PackBuilder::finish`] would give now, to within the header's sealing
    /// overhead (less than 64 bytes): the chunks plus `ENTRY_LEN` bytes of header per chunk. A
    /// pack of small chunks has a large header (~110,000 entries, 6.7 MB, beside 16 MiB of chunks
    /// of ~150 bytes), so a writer bounds this, not [`PackBuilder::len`], by its target.
    pub fn finished_len(&self) -> usize {
        self.buf.len() + 6 + self.entries.len() * ENTRY_LEN + 64 + TRAILER_LEN
    }

    pub fn entries(&self) -> &[PackEntry] {
        &self.entries
    }

    /// Seals the header, appends the trailer and names the pack.
    pub fn finish(mut self, metadata_key: &SymKey) -> (PackId, Bytes, Vec<PackEntry>) {
        let mut header = Vec::with_capacity(6 + self.entries.len() * ENTRY_LEN);
        header.extend_from_slice(&PACK_VERSION.to_le_bytes());
        header.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            e.encode(&mut header);
        }
        let sealed = metadata_key.seal(HEADER_AAD, &header);
        self.buf.extend_from_slice(&sealed);
        self.buf
            .extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(TRAILER_MAGIC);
        let id = PackId(*blake3::hash(&self.buf).as_bytes());
        (id, Bytes::from(self.buf), self.entries)
    }
}

/// Reads the trailer (the last 8 bytes of a pack of `pack_len` bytes) and returns the sealed header's
/// offset and length.
pub fn parse_trailer(trailer: &[u8], pack_len: u64) -> Result<(u64, u64)> {
    if trailer.len() != TRAILER_LEN || &trailer[4..] != TRAILER_MAGIC {
        return Err(RepoError::corrupt("pack", "bad trailer"));
    }
    let header_len = u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes")) as u64;
    let min = (PREFIX_LEN + TRAILER_LEN) as u64 + header_len;
    if pack_len < min {
        return Err(RepoError::corrupt("pack", "header length exceeds the pack"));
    }
    Ok((pack_len - TRAILER_LEN as u64 - header_len, header_len))
}

/// Opens a sealed pack header and validates its entries against the header's offset.
pub fn open_header(
    sealed: &[u8],
    header_offset: u64,
    metadata_key: &SymKey,
) -> Result<Vec<PackEntry>> {
    let plain = metadata_key.open(HEADER_AAD, sealed).ok_or_else(|| {
        RepoError::corrupt(
            "pack header",
            "authentication failed (damaged, or another repository's metadata key)",
        )
    })?;
    if plain.len() < 6 || u16::from_le_bytes([plain[0], plain[1]]) != PACK_VERSION {
        return Err(RepoError::corrupt("pack header", "unknown header version"));
    }
    let count = u32::from_le_bytes(plain[2..6].try_into().expect("4 bytes")) as usize;
    if plain.len()
        != 6 + count
            .checked_mul(ENTRY_LEN)
            .ok_or_else(|| RepoError::corrupt("pack header", "count overflow"))?
    {
        return Err(RepoError::corrupt(
            "pack header",
            "entry count does not match the header length",
        ));
    }
    let mut entries: Vec<PackEntry> = plain[6..]
        .chunks_exact(ENTRY_LEN)
        .map(PackEntry::decode)
        .collect::<Result<_>>()?;
    entries.sort_by_key(|e| e.offset);
    let mut next = PREFIX_LEN as u64;
    for e in &entries {
        let end = e.offset as u64 + e.length as u64;
        if (e.offset as u64) < next || end > header_offset {
            return Err(RepoError::corrupt(
                "pack header",
                "entries overlap or exceed the pack",
            ));
        }
        next = end;
    }
    Ok(entries)
}

/// Checks a whole pack's bytes: the name matches the hash, the prefix and trailer are sound, and (with
/// the metadata key) the header opens and is consistent. Returns the entries if the key was given.
pub fn verify_pack(
    id: &PackId,
    bytes: &[u8],
    metadata_key: Option<&SymKey>,
) -> Result<Option<Vec<PackEntry>>> {
    let obj = format!("pack {id}");
    if blake3::hash(bytes).as_bytes() != &id.0 {
        return Err(RepoError::corrupt(
            obj,
            "content hash does not match the pack's name",
        ));
    }
    if bytes.len() < PREFIX_LEN + TRAILER_LEN || &bytes[..6] != PACK_MAGIC {
        return Err(RepoError::corrupt(obj, "missing pack magic"));
    }
    let version = u16::from_le_bytes([bytes[6], bytes[7]]);
    if version != PACK_VERSION {
        return Err(RepoError::UnsupportedVersion {
            object: obj,
            found: version as u32,
            supported: PACK_VERSION as u32,
        });
    }
    let (off, len) = parse_trailer(&bytes[bytes.len() - TRAILER_LEN..], bytes.len() as u64)
        .map_err(|e| RepoError::corrupt(obj.clone(), e.to_string()))?;
    match metadata_key {
        None => Ok(None),
        Some(k) => open_header(&bytes[off as usize..(off + len) as usize], off, k)
            .map(Some)
            .map_err(|e| RepoError::corrupt(obj, e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_and_verify() {
        let mk = SymKey::random();
        let mut b = PackBuilder::new(0);
        b.add(
            ChunkId([1; 32]),
            encoding::RAW,
            3,
            KeyId([9; 16]),
            b"abcdef",
        );
        b.add(ChunkId([2; 32]), encoding::ZSTD, 10, KeyId([9; 16]), b"xyz");
        let expect = b.finished_len();
        let (id, bytes, entries) = b.finish(&mk);
        // The estimate covers the header: exact but for the sealing overhead.
        assert!(
            expect >= bytes.len() && expect - bytes.len() < 64,
            "{expect} {}",
            bytes.len()
        );
        let got = verify_pack(&id, &bytes, Some(&mk)).unwrap().unwrap();
        assert_eq!(got, entries);
        assert_eq!(&bytes[got[1].offset as usize..][..3], b"xyz");
        let mut bad = bytes.to_vec();
        bad[9] ^= 1;
        assert!(verify_pack(&id, &bad, Some(&mk)).is_err());
        assert!(
            verify_pack(&id, &bytes, Some(&SymKey::random())).is_err(),
            "another repository's key"
        );
    }
}
