//! The refs part's bodies (format §10): version 2 (every reference, with per-source positions),
//! version 3 (per source, the reference segments that hold its references) and version 4 (per
//! source, base segments and the segments of a delta of added and removed ids, ADR 0046). Decoders check
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

fn put_segments(b: &mut Vec<u8>, ids: &[SegmentId]) {
    b.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    ids.iter().for_each(|g| b.extend_from_slice(&g.0));
}

/// Encodes a version-4 refs body. Writers pass delta segments that meet §10 (each list's ids
/// ascending, disjoint from each other); tests pass others on purpose, to check that readers
/// refuse them.
pub fn encode_refs_v4(sources: &[SourceSegments]) -> Vec<u8> {
    let mut b = REFS_V4.to_le_bytes().to_vec();
    b.extend_from_slice(&(sources.len() as u32).to_le_bytes());
    for s in sources {
        let name = &s.name.as_bytes()[..s.name.len().min(u16::MAX as usize)];
        b.extend_from_slice(&(name.len() as u16).to_le_bytes());
        b.extend_from_slice(name);
        b.extend_from_slice(&s.chunks.to_le_bytes());
        put_segments(&mut b, &s.segments);
        put_segments(&mut b, &s.added_segments);
        put_segments(&mut b, &s.removed_segments);
    }
    b
}

/// Decodes a version-4 refs body and checks what it can without the segments: every count fits
/// the bytes that remain, and the delta lists no more segments than
/// [`crate::repository::DELTA_MAX_IDS`] (each segment holds at least one id). That the delta's
/// lists are ascending, the removed ids are in the base, the added ones are not, and the count
/// is `chunks` is checked when the segments are read.
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
        let segments = take_segments(&mut cur, &name, "base")?;
        let added_segments = take_segments(&mut cur, &name, "added")?;
        let removed_segments = take_segments(&mut cur, &name, "removed")?;
        let delta = added_segments.len() + removed_segments.len();
        if delta > crate::repository::DELTA_MAX_IDS {
            return Err(format!(
                "source {name:?}: the delta lists {delta} segments, more than its bound of {} ids allows",
                crate::repository::DELTA_MAX_IDS
            ));
        }
        sources.push(SourceSegments {
            name,
            chunks,
            segments,
            added_segments,
            removed_segments,
        });
    }
    if cur.pos != b.len() {
        return Err("trailing bytes".into());
    }
    Ok(sources)
}

/// A `u32 n ‖ n × segment id` list.
fn take_segments(
    cur: &mut Cursor,
    source: &str,
    what: &str,
) -> std::result::Result<Vec<SegmentId>, String> {
    let n = u32::from_le_bytes(cur.take(4)?.try_into().expect("4")) as usize;
    if n > cur.b.len() / 32 {
        return Err(format!(
            "source {source:?}: {what} segment count exceeds the part"
        ));
    }
    Ok(cur
        .take(n * 32)?
        .chunks_exact(32)
        .map(|c| SegmentId::from_slice(c).expect("32 bytes"))
        .collect())
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
