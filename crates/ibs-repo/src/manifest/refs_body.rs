//! The refs part's bodies (format §10): version 2 (every reference, with per-source positions),
//! version 3 (per source, the reference segments that hold its references) and version 4 (per
//! source, base segments and an inline delta of added and removed ids, ADR 0046). Decoders check
//! every count against the bytes that remain before allocating, so a hostile body cannot make a
//! reader allocate more than its own size.

use super::{Refs, SourceRefs, SourceSegments};
use crate::ids::{ChunkId, SegmentId};

pub const REFS_V2: u16 = 2;
pub const REFS_V3: u16 = 3;
pub const REFS_V4: u16 = 4;

pub(super) fn encode_refs_v3(sources: &[SourceSegments]) -> Vec<u8> {
    let mut b = REFS_V3.to_le_bytes().to_vec();
    b.extend_from_slice(&(sources.len() as u32).to_le_bytes());
    for s in sources {
        let name = &s.name.as_bytes()[..s.name.len().min(u16::MAX as usize)];
        b.extend_from_slice(&(name.len() as u16).to_le_bytes());
        b.extend_from_slice(name);
        b.extend_from_slice(&s.chunks.to_le_bytes());
        b.extend_from_slice(&(s.segments.len() as u32).to_le_bytes());
        s.segments.iter().for_each(|g| b.extend_from_slice(&g.0));
    }
    b
}

pub(super) fn decode_refs_v3(b: &[u8]) -> std::result::Result<Vec<SourceSegments>, String> {
    let mut cur = Cursor { b, pos: 0 };
    let mut take = |n: usize| cur.take(n);
    let version = u16::from_le_bytes(take(2)?.try_into().expect("2"));
    if version != REFS_V3 {
        return Err(format!("unknown refs version {version}"));
    }
    let s = u32::from_le_bytes(take(4)?.try_into().expect("4")) as usize;
    if s > b.len() / 14 {
        return Err("source count exceeds the part".into());
    }
    let mut sources = Vec::with_capacity(s);
    for _ in 0..s {
        let len = u16::from_le_bytes(take(2)?.try_into().expect("2")) as usize;
        let name =
            String::from_utf8(take(len)?.to_vec()).map_err(|_| "source name is not UTF-8")?;
        let chunks = u64::from_le_bytes(take(8)?.try_into().expect("8"));
        let k = u32::from_le_bytes(take(4)?.try_into().expect("4")) as usize;
        if k > b.len() / 32 {
            return Err("segment count exceeds the part".into());
        }
        let segments = take(k * 32)?
            .chunks_exact(32)
            .map(|c| SegmentId::from_slice(c).expect("32 bytes"))
            .collect();
        sources.push(SourceSegments {
            name,
            chunks,
            segments,
            ..SourceSegments::default()
        });
    }
    if cur.pos != b.len() {
        return Err("trailing bytes".into());
    }
    Ok(sources)
}

fn put_ids(b: &mut Vec<u8>, ids: &[ChunkId]) {
    b.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    ids.iter().for_each(|c| b.extend_from_slice(&c.0));
}

/// Encodes a version-4 refs body. Writers pass deltas that meet §10 (ascending, disjoint from
/// each other); tests pass others on purpose, to check that readers refuse them.
pub fn encode_refs_v4(sources: &[SourceSegments]) -> Vec<u8> {
    let mut b = REFS_V4.to_le_bytes().to_vec();
    b.extend_from_slice(&(sources.len() as u32).to_le_bytes());
    for s in sources {
        let name = &s.name.as_bytes()[..s.name.len().min(u16::MAX as usize)];
        b.extend_from_slice(&(name.len() as u16).to_le_bytes());
        b.extend_from_slice(name);
        b.extend_from_slice(&s.chunks.to_le_bytes());
        b.extend_from_slice(&(s.segments.len() as u32).to_le_bytes());
        s.segments.iter().for_each(|g| b.extend_from_slice(&g.0));
        put_ids(&mut b, &s.added);
        put_ids(&mut b, &s.removed);
    }
    b
}

/// Decodes a version-4 refs body and checks what it can without the segments: every count fits
/// the bytes that remain, the added and removed ids are strictly ascending, and `chunks` is
/// consistent with the segment count (the base, `chunks` − added + removed ids, is at least one
/// id per segment and at most [`crate::refseg::MAX_SEGMENT_IDS`] per segment). That the removed
/// ids are in the base and the added ones are not is checked when the segments are read.
pub fn decode_refs_v4(b: &[u8]) -> std::result::Result<Vec<SourceSegments>, String> {
    let mut cur = Cursor { b, pos: 0 };
    let version = u16::from_le_bytes(cur.take(2)?.try_into().expect("2"));
    if version != REFS_V4 {
        return Err(format!("unknown refs version {version}"));
    }
    let s = u32::from_le_bytes(cur.take(4)?.try_into().expect("4")) as usize;
    if s > b.len() / 22 {
        return Err("source count exceeds the part".into());
    }
    let mut sources = Vec::with_capacity(s);
    for _ in 0..s {
        let len = u16::from_le_bytes(cur.take(2)?.try_into().expect("2")) as usize;
        let name =
            String::from_utf8(cur.take(len)?.to_vec()).map_err(|_| "source name is not UTF-8")?;
        let chunks = u64::from_le_bytes(cur.take(8)?.try_into().expect("8"));
        let k = u32::from_le_bytes(cur.take(4)?.try_into().expect("4")) as usize;
        if k > b.len() / 32 {
            return Err("segment count exceeds the part".into());
        }
        let segments = cur
            .take(k * 32)?
            .chunks_exact(32)
            .map(|c| SegmentId::from_slice(c).expect("32 bytes"))
            .collect();
        let added = take_ids(&mut cur, &name, "added")?;
        let removed = take_ids(&mut cur, &name, "removed")?;
        let base = (chunks as u128 + removed.len() as u128)
            .checked_sub(added.len() as u128)
            .ok_or_else(|| format!("source {name:?}: more added ids than references"))?;
        if base < k as u128 || base > (k * crate::refseg::MAX_SEGMENT_IDS) as u128 {
            return Err(format!(
                "source {name:?}: {chunks} references with {} added and {} removed ids do not fit {k} segments",
                added.len(),
                removed.len()
            ));
        }
        sources.push(SourceSegments {
            name,
            chunks,
            segments,
            added,
            removed,
        });
    }
    if cur.pos != b.len() {
        return Err("trailing bytes".into());
    }
    Ok(sources)
}

/// A `u32 n ‖ n × id` list that must be strictly ascending.
fn take_ids(
    cur: &mut Cursor,
    source: &str,
    what: &str,
) -> std::result::Result<Vec<ChunkId>, String> {
    let n = u32::from_le_bytes(cur.take(4)?.try_into().expect("4")) as usize;
    if n > cur.b.len() / 32 {
        return Err(format!("{what} id count exceeds the part"));
    }
    let ids: Vec<ChunkId> = cur
        .take(n * 32)?
        .chunks_exact(32)
        .map(|c| ChunkId::from_slice(c).expect("32 bytes"))
        .collect();
    if ids.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!(
            "source {source:?}: the {what} ids are not strictly ascending"
        ));
    }
    Ok(ids)
}

pub(super) fn encode_refs_v2(sources: &[(String, Vec<ChunkId>)]) -> Vec<u8> {
    let mut all: Vec<ChunkId> = sources
        .iter()
        .flat_map(|(_, c)| c.iter().copied())
        .collect();
    all.sort_unstable();
    all.dedup();
    let mut b = REFS_V2.to_le_bytes().to_vec();
    b.extend_from_slice(&(all.len() as u32).to_le_bytes());
    all.iter().for_each(|c| b.extend_from_slice(&c.0));
    b.extend_from_slice(&(sources.len() as u32).to_le_bytes());
    for (name, chunks) in sources {
        let name = &name.as_bytes()[..name.len().min(u16::MAX as usize)];
        b.extend_from_slice(&(name.len() as u16).to_le_bytes());
        b.extend_from_slice(name);
        let mut pos: Vec<u32> = chunks
            .iter()
            .map(|c| all.binary_search(c).expect("every chunk is in the list") as u32)
            .collect();
        pos.sort_unstable();
        pos.dedup();
        b.extend_from_slice(&(pos.len() as u32).to_le_bytes());
        pos.iter()
            .for_each(|p| b.extend_from_slice(&p.to_le_bytes()));
    }
    b
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let s = self.b.get(self.pos..self.pos + n).ok_or("truncated")?;
        self.pos += n;
        Ok(s)
    }
}

pub(super) fn decode_refs_v2(b: &[u8]) -> std::result::Result<Refs, String> {
    let mut cur = Cursor { b, pos: 0 };
    let mut take = |n: usize| cur.take(n);
    let version = u16::from_le_bytes(take(2)?.try_into().expect("2"));
    if version != REFS_V2 {
        return Err(format!("unknown refs version {version}"));
    }
    let n = u32::from_le_bytes(take(4)?.try_into().expect("4")) as usize;
    if n > b.len() / 32 {
        return Err("chunk count exceeds the part".into());
    }
    let all: Vec<ChunkId> = take(n * 32)?
        .chunks_exact(32)
        .map(|c| ChunkId::from_slice(c).expect("32 bytes"))
        .collect();
    let s = u32::from_le_bytes(take(4)?.try_into().expect("4")) as usize;
    if s > b.len() / 6 {
        return Err("source count exceeds the part".into());
    }
    let mut sources = Vec::with_capacity(s);
    for _ in 0..s {
        let len = u16::from_le_bytes(take(2)?.try_into().expect("2")) as usize;
        let name =
            String::from_utf8(take(len)?.to_vec()).map_err(|_| "source name is not UTF-8")?;
        let k = u32::from_le_bytes(take(4)?.try_into().expect("4")) as usize;
        if k > b.len() / 4 {
            return Err("reference count exceeds the part".into());
        }
        let mut chunks = Vec::with_capacity(k);
        for p in take(k * 4)?.chunks_exact(4) {
            let p = u32::from_le_bytes(p.try_into().expect("4")) as usize;
            chunks.push(*all.get(p).ok_or("reference position out of range")?);
        }
        sources.push(SourceRefs { name, chunks });
    }
    if cur.pos != b.len() {
        return Err("trailing bytes".into());
    }
    Ok(Refs {
        all,
        sources: Some(sources),
    })
}
