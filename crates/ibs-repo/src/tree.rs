//! The tree stream of one source: a header line, then one JSON line per entry, parents before their
//! children, siblings in byte order of their names. The stream is chunked and stored like file data
//! (so unchanged parts of a tree deduplicate) and sealed under the backup's data key, because names
//! and metadata are as sensitive as contents.
//!
//! ```text
//! {"tree_format":2}
//! {"p":"etc/hosts","t":"f","m":33188,"mt":1732627200000000000,"u":0,"g":0,"s":220,"c":["<chunk id>",…]}
//! {"p":"etc/link","t":"l","m":41471,"mt":…,"u":0,"g":0,"s":0,"l":"hosts"}
//! {"p":"bin/ping","t":"f",…,"xa":[{"n":"security.capability","v":"AQAAAgAgAAAAAAAAAAAAAAAAAAA="}]}
//! {"p":"etc/hosts.bak","t":"h",…,"l":"etc/hosts"}
//! ```
//! `p` is the path relative to the source root (`""` is the root itself); a name that is not UTF-8 is
//! stored as base64 in `pb` instead. `t` is `f` (file), `d` (directory) or `l` (symlink), and from
//! format 2 also `h` (another name of an earlier file: `l`/`lb` is that file's path), `p` (FIFO),
//! `c`/`b` (character/block device: `rd` is `st_rdev`). Optional: `c` chunk ids, `l`/`lb` link
//! target, `e` an error that kept the file from being read, `x` true when the file changed while it
//! was read, `sp` true when the file is sparse; from format 2 `hl` true on a file with more than
//! one name (later `h` entries may name it), and `xa` the extended attributes, sorted by name, each
//! `{"n": name | "nb": base64 name, "v": base64 value}`.
//!
//! Readers accept formats 1 and 2; a format-1 stream holding a format-2 kind or key is corrupt.

use crate::error::{RepoError, Result};
use crate::ids::ChunkId;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The format this code writes.
pub const TREE_FORMAT: u32 = 2;
/// The oldest format this code reads.
pub const TREE_FORMAT_MIN: u32 = 1;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    #[default]
    #[serde(rename = "f")]
    File,
    #[serde(rename = "d")]
    Dir,
    #[serde(rename = "l")]
    Symlink,
    /// Another name of an earlier [`EntryKind::File`] entry (a hard link); format 2.
    #[serde(rename = "h")]
    HardLink,
    /// A named pipe; format 2.
    #[serde(rename = "p")]
    Fifo,
    /// Format 2.
    #[serde(rename = "c")]
    CharDevice,
    /// Format 2.
    #[serde(rename = "b")]
    BlockDevice,
}

impl EntryKind {
    /// The tree format that introduced this kind.
    fn since(self) -> u32 {
        match self {
            EntryKind::File | EntryKind::Dir | EntryKind::Symlink => 1,
            _ => 2,
        }
    }
}

/// One extended attribute (ACLs, file capabilities and SELinux labels included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Xattr {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
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
    /// A symlink's target; for a [`EntryKind::HardLink`], the path of the file it is a name of.
    pub target: Option<Vec<u8>>,
    pub error: Option<String>,
    pub changed: bool,
    pub sparse: bool,
    /// A file with more than one name at backup time: later hard-link entries may name it.
    pub link_leader: bool,
    /// `st_rdev` of a device node.
    pub rdev: u64,
    /// Sorted by name.
    pub xattrs: Vec<Xattr>,
}

/// How a source's entries are counted. This is the one definition behind a catalog's `files` and
/// `dirs` (counted as the backup writes its tree) and a restore's verification (counted as the
/// restore puts entries in place): a folder is a dir; every other entry (file, hard-link name,
/// symlink, FIFO, device) is a file; an entry recorded with an error holds nothing to restore and
/// is not counted (the catalog's `errors` counts it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryCounts {
    pub files: u64,
    pub dirs: u64,
}

impl EntryCounts {
    pub fn add(&mut self, e: &TreeEntry) {
        if e.error.is_some() {
            return;
        }
        match e.kind {
            EntryKind::Dir => self.dirs += 1,
            _ => self.files += 1,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct XattrLine {
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nb: Option<String>,
    v: String,
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
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    hl: bool,
    #[serde(default, skip_serializing_if = "is_zero")]
    rd: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    xa: Vec<XattrLine>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn split_bytes(b: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(b) {
        Ok(s) => (Some(s.to_owned()), None),
        Err(_) => (None, Some(b64().encode(b))),
    }
}

fn join_bytes(
    text: Option<String>,
    b64_text: Option<String>,
) -> std::result::Result<Option<Vec<u8>>, String> {
    match (text, b64_text) {
        (Some(t), None) => Ok(Some(t.into_bytes())),
        (None, Some(b)) => b64().decode(b).map(Some).map_err(|e| e.to_string()),
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err("both text and base64 forms present".into()),
    }
}

pub fn header_line() -> Vec<u8> {
    format!("{{\"tree_format\":{TREE_FORMAT}}}\n").into_bytes()
}

/// Checks the first line of a tree stream; returns its format (1 or 2), which the entry lines
/// are then parsed under ([`TreeEntry::parse_line_in`]).
pub fn parse_header(line: &[u8]) -> Result<u32> {
    #[derive(Deserialize)]
    struct H {
        tree_format: u32,
    }
    let h: H = serde_json::from_slice(line)
        .map_err(|e| RepoError::corrupt("tree", format!("header: {e}")))?;
    if !(TREE_FORMAT_MIN..=TREE_FORMAT).contains(&h.tree_format) {
        return Err(RepoError::UnsupportedVersion {
            object: "tree".into(),
            found: h.tree_format,
            supported: TREE_FORMAT,
        });
    }
    Ok(h.tree_format)
}

impl TreeEntry {
    /// Serializes the entry as one line (current format), newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let (p, pb) = split_bytes(&self.path);
        let (l, lb) = match &self.target {
            Some(t) => split_bytes(t),
            None => (None, None),
        };
        let xa = self
            .xattrs
            .iter()
            .map(|x| {
                let (n, nb) = split_bytes(&x.name);
                XattrLine {
                    n,
                    nb,
                    v: b64().encode(&x.value),
                }
            })
            .collect();
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
            hl: self.link_leader,
            rd: self.rdev,
            xa,
        };
        let mut v = serde_json::to_vec(&line).expect("tree entry serializes");
        v.push(b'\n');
        v
    }

    /// Parses a line of a stream in the current format.
    pub fn parse_line(line: &[u8]) -> Result<Self> {
        Self::parse_line_in(line, TREE_FORMAT)
    }

    /// Parses a line of a stream whose header said `format`: a kind or key newer than `format` is
    /// corrupt, as is an `xa` name that is empty or holds a NUL.
    pub fn parse_line_in(line: &[u8], format: u32) -> Result<Self> {
        let corrupt = |d: String| RepoError::corrupt("tree", d);
        let l: Line = serde_json::from_slice(line).map_err(|e| corrupt(format!("entry: {e}")))?;
        if l.t.since() > format {
            return Err(corrupt(format!(
                "entry kind {:?} is not part of tree format {format}",
                l.t
            )));
        }
        if format < 2 && (l.hl || l.rd != 0 || !l.xa.is_empty()) {
            return Err(corrupt(format!(
                "keys hl/rd/xa are not part of tree format {format}"
            )));
        }
        let path = join_bytes(l.p, l.pb)
            .map_err(corrupt)?
            .ok_or_else(|| corrupt("entry without a path".into()))?;
        let target = join_bytes(l.l, l.lb).map_err(corrupt)?;
        let chunks =
            l.c.iter()
                .map(|h| ChunkId::from_hex(h))
                .collect::<Result<Vec<_>>>()?;
        let mut xattrs = Vec::with_capacity(l.xa.len());
        for x in l.xa {
            let name = join_bytes(x.n, x.nb)
                .map_err(corrupt)?
                .filter(|n| !n.is_empty() && !n.contains(&0))
                .ok_or_else(|| corrupt("an extended attribute without a valid name".into()))?;
            let value = b64()
                .decode(x.v)
                .map_err(|e| corrupt(format!("extended attribute value: {e}")))?;
            xattrs.push(Xattr { name, value });
        }
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
            link_leader: l.hl,
            rdev: l.rd,
            xattrs,
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
            chunks: vec![ChunkId([4; 32])],
            target: Some("t\u{e9}".as_bytes().to_vec()),
            changed: true,
            xattrs: vec![
                Xattr {
                    name: b"trusted.\xff".to_vec(),
                    value: vec![0, 1, 2],
                },
                Xattr {
                    name: b"user.note".to_vec(),
                    value: Vec::new(),
                },
            ],
            ..Default::default()
        };
        let line = e.to_line();
        assert_eq!(TreeEntry::parse_line(&line[..line.len() - 1]).unwrap(), e);
        assert_eq!(
            parse_header(&header_line()[..header_line().len() - 1]).unwrap(),
            2
        );
        assert_eq!(parse_header(b"{\"tree_format\":1}").unwrap(), 1);
        assert!(parse_header(b"{\"tree_format\":9}").is_err());
        assert!(parse_header(b"{\"tree_format\":0}").is_err());
    }

    #[test]
    fn format_2_kinds_and_keys_round_trip() {
        for (kind, rdev, leader) in [
            (EntryKind::HardLink, 0, false),
            (EntryKind::Fifo, 0, false),
            (EntryKind::CharDevice, 0x103, false),
            (EntryKind::BlockDevice, 0x7c8, false),
            (EntryKind::File, 0, true),
        ] {
            let e = TreeEntry {
                path: b"x".to_vec(),
                kind,
                rdev,
                link_leader: leader,
                target: (kind == EntryKind::HardLink).then(|| b"y".to_vec()),
                ..Default::default()
            };
            let line = e.to_line();
            assert_eq!(TreeEntry::parse_line(&line[..line.len() - 1]).unwrap(), e);
        }
    }

    #[test]
    fn a_format_1_stream_cannot_carry_format_2_kinds_or_keys() {
        for line in [
            r#"{"p":"f","t":"p","m":4480,"mt":0,"u":0,"g":0,"s":0}"#,
            r#"{"p":"d","t":"c","m":8624,"mt":0,"u":0,"g":0,"s":0,"rd":259}"#,
            r#"{"p":"h","t":"h","m":33188,"mt":0,"u":0,"g":0,"s":0,"l":"f"}"#,
            r#"{"p":"f","t":"f","m":33188,"mt":0,"u":0,"g":0,"s":0,"hl":true}"#,
            r#"{"p":"f","t":"f","m":33188,"mt":0,"u":0,"g":0,"s":0,"xa":[{"n":"user.a","v":""}]}"#,
        ] {
            let err = TreeEntry::parse_line_in(line.as_bytes(), 1).unwrap_err();
            assert!(err.to_string().contains("tree format 1"), "{line}: {err}");
            TreeEntry::parse_line_in(line.as_bytes(), 2).unwrap();
        }
    }

    #[test]
    fn bad_xattr_names_are_corrupt() {
        for xa in [
            r#"{"n":"","v":""}"#,
            r#"{"nb":"YQBi","v":""}"#,
            r#"{"v":""}"#,
        ] {
            let line = format!(r#"{{"p":"f","t":"f","m":0,"mt":0,"u":0,"g":0,"s":0,"xa":[{xa}]}}"#);
            assert!(TreeEntry::parse_line(line.as_bytes()).is_err(), "{xa}");
        }
    }

    #[test]
    fn counts_have_one_definition() {
        let mut c = EntryCounts::default();
        for kind in [
            EntryKind::Dir,
            EntryKind::File,
            EntryKind::Symlink,
            EntryKind::HardLink,
            EntryKind::Fifo,
            EntryKind::CharDevice,
        ] {
            c.add(&TreeEntry {
                kind,
                ..Default::default()
            });
        }
        c.add(&TreeEntry {
            error: Some("unreadable".into()),
            ..Default::default()
        });
        assert_eq!(c, EntryCounts { files: 5, dirs: 1 });
    }
}
