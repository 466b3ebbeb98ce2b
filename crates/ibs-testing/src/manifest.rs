//! A [`Snapshot`] as JSON, to commit the expected contents of a fixture next to it (the format
//! compatibility fixtures) and to compare a restore with them later.
//!
//! Each entry is keyed by its path, escaped with [`escape`] (printable ASCII as is, a backslash
//! doubled, every other byte as `\xNN`), so non-UTF-8 names survive JSON. Owners are left out:
//! they depend on who restores, not on the repository. Content hashes are [`Node::hash`], stable
//! across builds.

use crate::snapshot::{report, snapshot, Kind, Node, Snapshot};
use serde_json::{json, Map, Value};
use std::fmt::Write as _;
use std::path::Path;

/// `bytes` with printable ASCII kept, `\` doubled and every other byte as `\xNN`.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => write!(s, "\\x{b:02x}").unwrap(),
        }
    }
    s
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        write!(s, "{b:02x}").unwrap();
        s
    })
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::File => "file",
        Kind::Dir => "dir",
        Kind::Symlink => "symlink",
        Kind::Fifo => "fifo",
        Kind::CharDevice => "char-device",
        Kind::BlockDevice => "block-device",
        Kind::Socket => "socket",
    }
}

fn node_json(n: &Node) -> Value {
    let mut o = Map::new();
    o.insert("kind".into(), json!(kind_name(n.kind)));
    o.insert("perm".into(), json!(format!("{:04o}", n.perm)));
    o.insert("mtime_ns".into(), json!(n.mtime_ns.to_string()));
    match n.kind {
        Kind::File => {
            o.insert("size".into(), json!(n.size));
            o.insert("hash".into(), json!(format!("{:016x}", n.hash)));
            o.insert("sparse".into(), json!(n.sparse));
        }
        Kind::Symlink => {
            let t = n.target.as_deref().unwrap_or_default();
            o.insert("target".into(), json!(escape(t)));
        }
        Kind::CharDevice | Kind::BlockDevice => {
            o.insert("rdev".into(), json!(n.rdev));
        }
        _ => {}
    }
    if let Some(g) = &n.link_group {
        o.insert("link_group".into(), json!(escape(g)));
    }
    if !n.xattrs.is_empty() {
        let x: Map<String, Value> = n
            .xattrs
            .iter()
            .map(|(k, v)| (escape(k), json!(hex(v))))
            .collect();
        o.insert("xattrs".into(), Value::Object(x));
    }
    Value::Object(o)
}

/// The snapshot as a JSON object: escaped path → entry (owners left out).
pub fn to_json(s: &Snapshot) -> Value {
    Value::Object(s.iter().map(|(k, n)| (escape(k), node_json(n))).collect())
}

/// Asserts the tree at `restored` matches `expected` (a [`to_json`] object) entry by entry;
/// panics listing up to 40 differences.
pub fn assert_matches_json(expected: &Value, restored: &Path, what: &str) {
    let got = to_json(&snapshot(restored));
    let (Some(want), Some(got)) = (expected.as_object(), got.as_object()) else {
        panic!("{what}: the expected contents are not a JSON object");
    };
    let mut diffs = Vec::new();
    for (k, v) in want {
        match got.get(k) {
            None => diffs.push(format!("missing {k:?} (expected {v})")),
            Some(g) if g != v => diffs.push(format!("{k:?}:\n    expected {v}\n    got      {g}")),
            _ => {}
        }
    }
    for (k, g) in got {
        if !want.contains_key(k) {
            diffs.push(format!("unexpected {k:?}: {g}"));
        }
    }
    report(what, restored, "the expected contents", &diffs);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ibs-testing-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn escape_keeps_printable_ascii_and_escapes_everything_else() {
        assert_eq!(escape(b"plain/name.txt"), "plain/name.txt");
        assert_eq!(escape(b"a\\b"), "a\\\\b");
        assert_eq!(escape(b"n-\xff\xe9\n"), "n-\\xff\\xe9\\x0a");
    }

    #[test]
    fn a_tree_matches_its_own_json_and_a_changed_file_does_not() {
        let d = scratch("manifest");
        std::fs::write(d.join("f"), b"one").unwrap();
        std::os::unix::fs::symlink("f", d.join("l")).unwrap();
        let want = to_json(&snapshot(&d));
        assert_eq!(want["l"]["target"], "f");
        assert_eq!(want["f"]["size"], 3);
        assert_matches_json(&want, &d, "unchanged");
        std::fs::write(d.join("f"), b"two").unwrap();
        let changed = std::panic::catch_unwind(|| assert_matches_json(&want, &d, "changed"));
        std::fs::remove_dir_all(&d).unwrap();
        let msg = *changed.unwrap_err().downcast::<String>().unwrap();
        assert!(msg.contains("\"f\""), "{msg}");
    }
}
