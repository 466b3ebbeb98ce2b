//! The tree stream of one source: a header line, then one JSON line per entry, parents before their
//! children, siblings in byte order of their names. The stream is chunked and stored like file data
//! (so unchanged parts of a tree deduplicate) and sealed under the backup's data key, because names
//! and metadata are as sensitive as contents.
//!
//! ```text
//! {"tree_format":1}
//! {"p":"etc/hosts","t":"f","m":33188,"mt":1732627200000000000,"u":0,"g":0,"s":220,"c":["<chunk id>",…]}
//! {"p":"etc/link","t":"l","m":41471,"mt":…,"u":0,"g":0,"s":0,"l":"hosts"}
//! ```
//! `p` is the path relative to the source root (`""` is the root itself); a name that is not UTF-8 is
//! stored as base64 in `pb` instead. `t` is `f` (file), `d` (directory) or `l` (symlink). Optional:
//! `c` chunk ids, `l`/`lb` link target, `e` an error that kept the file from being read, `x` true when
//! the file changed while it was read, `sp` true when the file is sparse.

use crate::error::{RepoError, Result};
use crate::ids::ChunkId;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

pub const TREE_FORMAT: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    #[serde(rename = "f")]
    File,
    #[serde(rename = "d")]
    Dir,
    #[serde(rename = "l")]
    Symlink,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeEntry {
    /// Relative path bytes, `/`-separated; empty for the source root.
    pub path: Vec<u8>,
    pub kind: EntryKind,
    pub mode: u32,
    pub mtime_ns: i64,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub chunks: Vec<ChunkId>,
    pub target: Option<Vec<u8>>,
    pub error: Option<String>,
    pub changed: bool,
    pub sparse: bool,
}

#[derive(Serialize, Deserialize)]
struct Line {
    #[serde(skip_serializing_if = "Option::is_none")]
    p: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pb: Option<String>,
    t: EntryKind,
    m: u32,
    mt: i64,
    u: u32,
    g: u32,
    s: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    c: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    l: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lb: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    e: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    x: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    sp: bool,
}

fn split_bytes(b: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(b) {
        Ok(s) => (Some(s.to_owned()), None),
        Err(_) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(b)),
        ),
    }
}

fn join_bytes(
    text: Option<String>,
    b64: Option<String>,
) -> std::result::Result<Option<Vec<u8>>, String> {
    match (text, b64) {
        (Some(t), None) => Ok(Some(t.into_bytes())),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map(Some)
            .map_err(|e| e.to_string()),
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err("both text and base64 forms present".into()),
    }
}

pub fn header_line() -> Vec<u8> {
    format!("{{\"tree_format\":{TREE_FORMAT}}}\n").into_bytes()
}

/// Checks the first line of a tree stream.
pub fn parse_header(line: &[u8]) -> Result<()> {
    #[derive(Deserialize)]
    struct H {
        tree_format: u32,
    }
    let h: H = serde_json::from_slice(line)
        .map_err(|e| RepoError::corrupt("tree", format!("header: {e}")))?;
    if h.tree_format != TREE_FORMAT {
        return Err(RepoError::UnsupportedVersion {
            object: "tree".into(),
            found: h.tree_format,
            supported: TREE_FORMAT,
        });
    }
    Ok(())
}

impl TreeEntry {
    /// Serializes the entry as one line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let (p, pb) = split_bytes(&self.path);
        let (l, lb) = match &self.target {
            Some(t) => split_bytes(t),
            None => (None, None),
        };
        let line = Line {
            p,
            pb,
            t: self.kind,
            m: self.mode,
            mt: self.mtime_ns,
            u: self.uid,
            g: self.gid,
            s: self.size,
            c: self.chunks.iter().map(ChunkId::to_hex).collect(),
            l,
            lb,
            e: self.error.clone(),
            x: self.changed,
            sp: self.sparse,
        };
        let mut v = serde_json::to_vec(&line).expect("tree entry serializes");
        v.push(b'\n');
        v
    }

    pub fn parse_line(line: &[u8]) -> Result<Self> {
        let l: Line = serde_json::from_slice(line)
            .map_err(|e| RepoError::corrupt("tree", format!("entry: {e}")))?;
        let path = join_bytes(l.p, l.pb)
            .map_err(|e| RepoError::corrupt("tree", e))?
            .ok_or_else(|| RepoError::corrupt("tree", "entry without a path"))?;
        let target = join_bytes(l.l, l.lb).map_err(|e| RepoError::corrupt("tree", e))?;
        let chunks =
            l.c.iter()
                .map(|h| ChunkId::from_hex(h))
                .collect::<Result<Vec<_>>>()?;
        Ok(TreeEntry {
            path,
            kind: l.t,
            mode: l.m,
            mtime_ns: l.mt,
            uid: l.u,
            gid: l.g,
            size: l.s,
            chunks,
            target,
            error: l.e,
            changed: l.x,
            sparse: l.sp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_including_non_utf8_names() {
        let e = TreeEntry {
            path: b"dir/\xffname".to_vec(),
            kind: EntryKind::Symlink,
            mode: 0o120777,
            mtime_ns: -5,
            uid: 1,
            gid: 2,
            size: 0,
            chunks: vec![ChunkId([4; 32])],
            target: Some("t\u{e9}".as_bytes().to_vec()),
            error: None,
            changed: true,
            sparse: false,
        };
        let line = e.to_line();
        assert_eq!(TreeEntry::parse_line(&line[..line.len() - 1]).unwrap(), e);
        parse_header(&header_line()[..header_line().len() - 1]).unwrap();
        assert!(parse_header(b"{\"tree_format\":9}").is_err());
    }
}
