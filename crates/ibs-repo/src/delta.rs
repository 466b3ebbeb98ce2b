//! Delta chunks (chunk encoding 2, `docs/design/repository-format.md` §7.1): a chunk stored as a
//! *recipe* that rebuilds its content from one *base* chunk plus inserted bytes.
//!
//! A database export changes a little everywhere: one row in a hundred is enough to alter every
//! 1 MiB chunk of a dump, and whole-chunk deduplication then stores the dump again. A recipe stores
//! only the changed blocks. The writer cannot read the base (it is sealed under an older backup's
//! data key), so it diffs against the base's *block signatures*, keyed hashes it kept locally when
//! it last saw the base's plaintext ([`SigKey`], [`split_blocks`]).
//!
//! Recipe plaintext (version 1; integers little-endian, `varint` is unsigned LEB128):
//! ```text
//! u8 version=1 | base chunk id[32] | target chunk id[32] | u32 target_length
//! ops until the end: u8 0 (copy) varint base_offset varint length
//!                  | u8 1 (insert) varint length, that many bytes
//! ```
//! Invariants a reader enforces: the version is known; every copy lies inside the base; the ops
//! produce exactly `target_length` bytes; the keyed hash of the result is the target id. The
//! recipe itself is a chunk: its id is the keyed hash of the recipe bytes, it is zstd-compressed
//! and sealed like any other. A base is never a delta chunk itself (no chains).

use crate::crypto::SymKey;
use crate::error::{RepoError, Result};
use crate::ids::ChunkId;

pub const RECIPE_VERSION: u8 = 1;
const HEADER_LEN: usize = 1 + 32 + 32 + 4;
const OP_COPY: u8 = 0;
const OP_INSERT: u8 = 1;

/// The fixed part of a recipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecipeHeader {
    pub base: ChunkId,
    pub target: ChunkId,
    pub target_length: u32,
}

fn corrupt(msg: impl Into<String>) -> RepoError {
    RepoError::corrupt("delta recipe", msg)
}

/// Reads the header of a recipe.
pub fn header(recipe: &[u8]) -> Result<RecipeHeader> {
    if recipe.len() < HEADER_LEN {
        return Err(corrupt("shorter than its header"));
    }
    if recipe[0] != RECIPE_VERSION {
        return Err(RepoError::UnsupportedVersion {
            object: "delta recipe".into(),
            found: recipe[0] as u32,
            supported: RECIPE_VERSION as u32,
        });
    }
    Ok(RecipeHeader {
        base: ChunkId::from_slice(&recipe[1..33]).expect("32 bytes"),
        target: ChunkId::from_slice(&recipe[33..65]).expect("32 bytes"),
        target_length: u32::from_le_bytes(recipe[65..69].try_into().expect("4 bytes")),
    })
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(b: &[u8], pos: &mut usize) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos).ok_or_else(|| corrupt("truncated varint"))?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(corrupt("varint longer than 64 bits"))
}

/// One op of a recipe, as [`walk`] hands it out.
enum Piece<'a> {
    Copy(usize, usize),
    Insert(&'a [u8]),
}

/// Walks the ops of a recipe, checking every invariant except the final hash; `f` receives the
/// ops in order. `base_length` bounds the copies.
fn walk<'a>(
    recipe: &'a [u8],
    base_length: usize,
    mut f: impl FnMut(Piece<'a>),
) -> Result<RecipeHeader> {
    let h = header(recipe)?;
    let target = h.target_length as usize;
    if h.target_length > crate::chunk::MAX_CHUNK {
        return Err(corrupt("target length out of range"));
    }
    let mut pos = HEADER_LEN;
    let mut produced = 0usize;
    while pos < recipe.len() {
        let tag = recipe[pos];
        pos += 1;
        let a = get_varint(recipe, &mut pos)?;
        let len = match tag {
            OP_COPY => {
                let (off, len) = (a, get_varint(recipe, &mut pos)?);
                if off
                    .checked_add(len)
                    .is_none_or(|end| end > base_length as u64)
                {
                    return Err(corrupt("a copy reaches past the end of the base"));
                }
                if produced as u64 + len > target as u64 {
                    return Err(corrupt("the ops produce more than the target length"));
                }
                f(Piece::Copy(off as usize, len as usize));
                len as usize
            }
            OP_INSERT => {
                let len = a;
                if len > (recipe.len() - pos) as u64 {
                    return Err(corrupt("an insert reaches past the end of the recipe"));
                }
                if produced as u64 + len > target as u64 {
                    return Err(corrupt("the ops produce more than the target length"));
                }
                f(Piece::Insert(&recipe[pos..pos + len as usize]));
                pos += len as usize;
                len as usize
            }
            other => return Err(corrupt(format!("unknown op {other}"))),
        };
        produced += len;
    }
    if produced != target {
        return Err(corrupt(format!(
            "the ops produce {produced} bytes, the target has {target}"
        )));
    }
    Ok(h)
}

/// Checks a recipe's structure against its base's length (no base bytes needed).
pub fn validate(recipe: &[u8], base_length: usize) -> Result<RecipeHeader> {
    walk(recipe, base_length, |_| {})
}

/// Rebuilds the target from `recipe` and the base's plaintext, and verifies it against the target
/// id under the dedup key.
pub fn apply(recipe: &[u8], base: &[u8], dedup_key: &SymKey) -> Result<Vec<u8>> {
    let h = header(recipe)?;
    let mut out =
        Vec::with_capacity((h.target_length as usize).min(crate::chunk::MAX_CHUNK as usize));
    walk(recipe, base.len(), |p| match p {
        Piece::Copy(off, len) => out.extend_from_slice(&base[off..off + len]),
        Piece::Insert(bytes) => out.extend_from_slice(bytes),
    })?;
    if dedup_key.chunk_id(&out) != h.target {
        return Err(RepoError::corrupt(
            format!("chunk {}", h.target),
            "rebuilt from its delta recipe, the content does not hash to the chunk's id",
        ));
    }
    Ok(out)
}

/// Builds a recipe, merging a copy that continues the previous one and consecutive inserts.
pub struct RecipeBuilder {
    out: Vec<u8>,
    /// A copy not yet written: (base offset, length).
    copy: Option<(u64, u64)>,
    /// Inserted bytes not yet written.
    insert: Vec<u8>,
    inserted: usize,
}

impl RecipeBuilder {
    pub fn new(h: RecipeHeader) -> Self {
        let mut out = Vec::with_capacity(4096);
        out.push(RECIPE_VERSION);
        out.extend_from_slice(&h.base.0);
        out.extend_from_slice(&h.target.0);
        out.extend_from_slice(&h.target_length.to_le_bytes());
        RecipeBuilder {
            out,
            copy: None,
            insert: Vec::new(),
            inserted: 0,
        }
    }

    fn flush(&mut self) {
        if let Some((off, len)) = self.copy.take() {
            self.out.push(OP_COPY);
            put_varint(&mut self.out, off);
            put_varint(&mut self.out, len);
        }
        if !self.insert.is_empty() {
            self.out.push(OP_INSERT);
            put_varint(&mut self.out, self.insert.len() as u64);
            self.out.extend_from_slice(&self.insert);
            self.insert.clear();
        }
    }

    pub fn copy(&mut self, offset: u64, len: u64) {
        if !self.insert.is_empty() {
            self.flush();
        }
        match &mut self.copy {
            Some((o, l)) if *o + *l == offset => *l += len,
            _ => {
                self.flush();
                self.copy = Some((offset, len));
            }
        }
    }

    pub fn insert(&mut self, bytes: &[u8]) {
        if self.copy.is_some() {
            self.flush();
        }
        self.insert.extend_from_slice(bytes);
        self.inserted += bytes.len();
    }

    /// Bytes inserted so far (what the recipe does not take from the base).
    pub fn inserted(&self) -> usize {
        self.inserted
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.flush();
        self.out
    }
}

/// The key of block signatures, derived from the dedup key (signatures reveal what chunk ids
/// reveal, per block: equality, to a holder of the writer state).
///
/// A signature is SipHash-2-4 with 128-bit output: a keyed pseudo-random function made for short
/// inputs, over twice as fast as keyed BLAKE3 on 100-byte lines (the writer signs every line of
/// every stream chunk; ADR 0007 has the measurement). Signatures never leave the writer, so this
/// is not a format choice.
pub struct SigKey([u8; 16]);

impl SigKey {
    pub fn derive(dedup_key: &SymKey) -> Self {
        let k = blake3::derive_key("ibs delta block signature v1", dedup_key.bytes());
        SigKey(k[..16].try_into().expect("16 bytes"))
    }

    /// The 128-bit keyed signature of one block.
    pub fn block(&self, data: &[u8]) -> u128 {
        use siphasher::sip128::Hasher128 as _;
        use std::hash::Hasher as _;
        let mut h = siphasher::sip128::SipHasher24::new_with_key(&self.0);
        h.write(data);
        h.finish128().as_u128()
    }
}

/// A block ends after a newline once it holds at least this many bytes (short lines join the next).
pub const BLOCK_MIN: usize = 32;
/// No block is longer than this. Where no newline comes within it (long lines such as
/// `mariadb-dump`'s multi-row INSERTs, binary data), blocks are cut content-defined instead
/// (FastCDC, 64 B / 256 B / 4 KiB), so an insertion shifts only the blocks around it.
pub const BLOCK_MAX: usize = 4096;
const CDC_MIN: usize = 64;
const CDC_AVG: usize = 256;

/// Splits `data` into blocks (see [`BLOCK_MIN`], [`BLOCK_MAX`]), calling `f(start, len)`. Only the
/// writer splits (to diff); readers never need the rule, so it may change without a format change.
pub fn split_blocks(data: &[u8], mut f: impl FnMut(usize, usize)) {
    use fastcdc::v2020::{cut, select_masks, Normalization};
    let (ms, ml) = select_masks(CDC_AVG, Normalization::Level1);
    let mut start = 0;
    while start < data.len() {
        let limit = (start + BLOCK_MAX).min(data.len());
        let from = (start + BLOCK_MIN - 1).min(limit);
        let end = match memchr::memchr(b'\n', &data[from..limit]) {
            Some(i) => from + i + 1,
            None => {
                let piece = &data[start..limit];
                start + cut(piece, CDC_MIN, CDC_AVG, BLOCK_MAX, ms, ml, ms << 1, ml << 1).1
            }
        };
        f(start, end - start);
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, changed: impl Fn(usize) -> bool) -> Vec<u8> {
        let mut v = Vec::new();
        for i in 0..n {
            let bal = if changed(i) { 7 } else { 0 };
            v.extend_from_slice(format!("{i}\t{}\t{bal}\t{:>60}\n", i / 100, "").as_bytes());
        }
        v
    }

    /// The writer's diff, done here with the base's plaintext at hand.
    fn diff(base: &[u8], target: &[u8], dedup: &SymKey) -> Vec<u8> {
        let key = SigKey::derive(dedup);
        let mut at = std::collections::HashMap::new();
        split_blocks(base, |s, l| {
            at.entry(key.block(&base[s..s + l])).or_insert(s);
        });
        let mut b = RecipeBuilder::new(RecipeHeader {
            base: dedup.chunk_id(base),
            target: dedup.chunk_id(target),
            target_length: target.len() as u32,
        });
        split_blocks(target, |s, l| match at.get(&key.block(&target[s..s + l])) {
            Some(&off) => b.copy(off as u64, l as u64),
            None => b.insert(&target[s..s + l]),
        });
        b.finish()
    }

    #[test]
    fn a_recipe_rebuilds_the_target_and_stores_only_the_changed_blocks() {
        let dedup = SymKey::random();
        let base = rows(5000, |_| false);
        let target = rows(5000, |i| i % 100 == 0);
        let recipe = diff(&base, &target, &dedup);
        assert!(
            recipe.len() * 50 < target.len(),
            "recipe {} bytes for a target of {}",
            recipe.len(),
            target.len()
        );
        assert_eq!(apply(&recipe, &base, &dedup).unwrap(), target);
        let h = validate(&recipe, base.len()).unwrap();
        assert_eq!(h.base, dedup.chunk_id(&base));
        // The wrong base, a shorter base, or damage is an error, never wrong bytes.
        let other = rows(5000, |i| i % 7 == 0);
        assert!(apply(&recipe, &other, &dedup).is_err());
        assert!(apply(&recipe, &base[..base.len() / 2], &dedup).is_err());
        for i in [0, 40, 70, recipe.len() / 2, recipe.len() - 1] {
            let mut bad = recipe.clone();
            bad[i] ^= 0x55;
            assert!(apply(&bad, &base, &dedup).is_err(), "flipped byte {i}");
        }
        assert!(apply(&recipe[..recipe.len() - 1], &base, &dedup).is_err());
        assert!(header(&recipe[..10]).is_err());
    }

    #[test]
    fn blocks_end_at_newlines_and_long_lines_are_cut_content_defined() {
        let text = b"a\nbb\ncccccccccccccccccccccccccccccccccccccccc\nd";
        let mut got = Vec::new();
        split_blocks(text, |s, l| got.push(&text[s..s + l]));
        assert_eq!(got.concat(), text.to_vec());
        assert!(got[0].ends_with(b"\n") && got[0].len() >= BLOCK_MIN);
        let mut none = 0;
        split_blocks(b"", |_, _| none += 1);
        assert_eq!(none, 0);
        // A long line without newlines (or binary data): bounded blocks that resynchronise after
        // an insertion, so most blocks of the edited data are blocks of the original.
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let line: Vec<u8> = (0..200_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b"0123456789(),'abc"[(x % 17) as usize]
            })
            .collect();
        let blocks = |d: &[u8]| {
            let mut v = Vec::new();
            split_blocks(d, |s, l| v.push(d[s..s + l].to_vec()));
            v
        };
        let a = blocks(&line);
        assert_eq!(a.concat(), line);
        assert!(a.iter().all(|b| b.len() <= BLOCK_MAX));
        assert!(a.len() > 200_000 / 1024, "{} blocks", a.len());
        let mut edited = line.clone();
        edited.splice(1000..1000, b"(42,'x'),".iter().copied());
        let b = blocks(&edited);
        let old: std::collections::HashSet<_> = a.iter().collect();
        let same = b.iter().filter(|blk| old.contains(blk)).count();
        assert!(
            same + 3 >= b.len(),
            "{same} of {} blocks survive the insertion",
            b.len()
        );
    }
}
