//! Browsing backups without restoring them (issue 17 "what to add" 1, ADR 0029): `ibs repo ls`,
//! `find`, `dump` (a file's bytes; a folder as tar) and `diff`, run as an operator runs them, on a
//! tree with hostile names (a newline, bytes that are not UTF-8, a leading `..`, a backslash), a
//! symlink pointing out of the tree, and a hard link; plus the exit codes of the one table.

mod common;

use common::*;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::Stdio;

/// The non-UTF-8 name of the tree (`café` in Latin-1).
const LATIN1: &[u8] = b"caf\xe9.txt";

struct World {
    fx: Fx,
    cert: &'static Cert,
    /// The first backup, then the second (after edits).
    a: String,
    b: String,
    deep: Vec<u8>,
}

/// A repository with two backups of source `data`. The second changes `plain.txt`, removes
/// `..evil`, adds `added.txt` and only touches `meta.txt`'s mode.
fn world() -> World {
    let fx = Fx::new();
    let cert = shared_cert(0);
    fx.init_cert(&cert.cer);
    let src = fx.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    write(&src.join("plain.txt"), b"hello\n");
    set_mode(&src.join("plain.txt"), 0o640);
    set_mtime(&src.join("plain.txt"), 1_700_000_000);
    write(&src.join("new\nline"), b"newline name\n");
    write(&src.join(OsStr::from_bytes(LATIN1)), b"latin-1 name\n");
    write(&src.join("..evil"), b"dots\n");
    write(&src.join("back\\slash"), b"backslash\n");
    write(&src.join("meta.txt"), b"mode only\n");
    let deep: Vec<u8> = (0..300 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    write(&src.join("sub/deep.bin"), &deep);
    std::fs::hard_link(src.join("sub/deep.bin"), src.join("sub/twin.bin")).unwrap();
    std::os::unix::fs::symlink("../../etc/passwd", src.join("link")).unwrap();
    let a = fx.backup(&[("data", &src)]);
    next_second();
    write(&src.join("plain.txt"), b"hello, changed\n");
    std::fs::remove_file(src.join("..evil")).unwrap();
    write(&src.join("added.txt"), b"new file\n");
    set_mode(&src.join("meta.txt"), 0o600);
    let b = fx.backup(&[("data", &src)]);
    World {
        fx,
        cert,
        a,
        b,
        deep,
    }
}

impl World {
    /// `ibs repo SUB … --pfx PFX` with the password in the environment.
    fn cmd(&self, sub: &str) -> Ibs {
        self.fx.repo_cmd(sub).arg("--pfx").arg(&self.cert.pfx).pw()
    }

    /// Runs `ibs repo SUB ARGS… --pfx PFX` with raw (byte) arguments; returns (code, stdout, stderr).
    fn raw(&self, sub: &str, args: &[&[u8]]) -> (i32, Vec<u8>, String) {
        let mut c = self.cmd(sub).command();
        for a in args {
            c.arg(OsStr::from_bytes(a));
        }
        let out = c.stdin(Stdio::null()).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// The table rows of an `ls`/`find` output: every line after the header, split on runs of spaces
/// into at most `cols` cells (the last, the name, keeps its spaces).
fn rows(out: &Out, cols: usize) -> Vec<Vec<String>> {
    out.stdout
        .lines()
        .skip(1)
        .map(|l| {
            let mut cells = Vec::new();
            let mut rest = l;
            for _ in 0..cols - 1 {
                let t = rest.trim_start();
                let end = t.find("  ").unwrap_or(t.len());
                cells.push(t[..end].to_string());
                rest = &t[end..];
            }
            cells.push(rest.trim().to_string());
            cells
        })
        .collect()
}

#[test]
fn ls_lists_long_with_escaped_names_symlinks_and_hard_links() {
    let w = world();
    let out = w.cmd("ls").arg(format!("{}:data", w.a)).run().ok();
    let r = rows(&out, 5);
    let names: Vec<&str> = r.iter().map(|c| c[4].as_str()).collect();
    assert_eq!(
        names,
        [
            "..evil",
            "back\\\\slash",
            "caf\\xe9.txt",
            "link -> ../../etc/passwd",
            "meta.txt",
            "new\\nline",
            "plain.txt",
            "sub",
        ],
        "one line per entry, names escaped, in byte order:\n{out}"
    );
    let plain = &r[6];
    assert_eq!(plain[0], "-rw-r-----", "{out}");
    assert_eq!(plain[2], "6", "{out}");
    assert_eq!(plain[3], "2023-11-14T22:13:20Z", "{out}");
    assert!(plain[1].contains(':'), "owner is uid:gid: {out}");
    assert!(
        r[3][0].starts_with('l') && r[7][0].starts_with('d'),
        "{out}"
    );

    // The hard link's second name, in a subfolder, recursively.
    let out = w.cmd("ls").arg(&w.a).arg("data/sub").run().ok();
    let r = rows(&out, 5);
    assert_eq!(r.len(), 2, "{out}");
    assert_eq!(r[0][2], (300 * 1024).to_string(), "{out}");
    assert!(
        r.iter().any(|c| c[4].contains(" => ")),
        "one name of the hard-linked pair is shown as `NAME => FIRST`:\n{out}"
    );
    // The whole backup's top: one folder per source; `latest` works; -R goes all the way down.
    let out = w.cmd("ls").arg("latest").run().ok();
    assert_eq!(
        rows(&out, 5)
            .iter()
            .map(|c| c[4].clone())
            .collect::<Vec<_>>(),
        ["data"]
    );
    let out = w.cmd("ls").arg("latest").arg("-R").run().ok();
    assert!(out.stdout.contains("data/sub/deep.bin"), "{out}");
    assert!(out.stdout.contains("data/added.txt"), "{out}");
    // A file lists itself.
    let out = w.cmd("ls").arg(&w.a).arg("data/plain.txt").run().ok();
    assert_eq!(rows(&out, 5).len(), 1, "{out}");
    // JSON keeps the escaped path and the raw facts.
    let out = w.cmd("ls").arg(&w.a).arg("data").arg("--json").run().ok();
    let v = out.json();
    let latin = v
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "data/caf\\xe9.txt")
        .unwrap_or_else(|| panic!("no escaped Latin-1 path in {v}"));
    assert_eq!(latin["type"], "file");
    assert_eq!(latin["size"], 13);
}

#[test]
fn ls_refuses_dotdot_and_names_what_is_missing_with_the_table_codes() {
    let w = world();
    w.cmd("ls").arg(&w.a).arg("../etc").run().code(2);
    w.cmd("ls").arg(&w.a).arg("data/../../etc").run().code(2);
    w.cmd("ls")
        .arg(&w.a)
        .arg("data/nope")
        .run()
        .code(8)
        .stderr_has("has no data/nope");
    w.cmd("ls").arg("20200101T000000Z-00000000").run().code(8);
    w.cmd("ls")
        .arg(format!("{}:nosuch", w.a))
        .run()
        .code(8)
        .stderr_has("has no source");
    w.cmd("ls").arg("not-an-id").run().code(2);
    // Without the .pfx there is nothing to read names with.
    w.fx.repo_cmd("ls").arg(&w.a).run().code(5);
}

#[test]
fn dump_writes_exact_bytes_of_a_file_even_a_non_utf8_name() {
    let w = world();
    let (code, out, err) = w.raw("dump", &[w.a.as_bytes(), b"data/sub/deep.bin"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out == w.deep,
        "dumped bytes differ ({} vs {})",
        out.len(),
        w.deep.len()
    );
    // The second name of the hard-linked file gives the same bytes.
    let (code, out, err) = w.raw("dump", &[w.a.as_bytes(), b"data/sub/twin.bin"]);
    assert_eq!((code, out == w.deep), (0, true), "{err}");
    let name = [b"data/".as_slice(), LATIN1].concat();
    let (code, out, err) = w.raw("dump", &[w.a.as_bytes(), &name]);
    assert_eq!(
        (code, out.as_slice()),
        (0, b"latin-1 name\n".as_slice()),
        "{err}"
    );
    let (code, out, err) = w.raw("dump", &[b"latest:data", b"plain.txt"]);
    assert_eq!(
        (code, out.as_slice()),
        (0, b"hello, changed\n".as_slice()),
        "{err}"
    );
    let (code, out, err) = w.raw("dump", &[w.a.as_bytes(), b"data/new\nline"]);
    assert_eq!(
        (code, out.as_slice()),
        (0, b"newline name\n".as_slice()),
        "{err}"
    );
    // A symlink is not followed (not dumped); `..` never leaves the backup; missing is 8.
    let (code, out, _) = w.raw("dump", &[w.a.as_bytes(), b"data/link"]);
    assert_eq!((code, out.len()), (2, 0));
    let (code, _, _) = w.raw("dump", &[w.a.as_bytes(), b"data/../../etc/passwd"]);
    assert_eq!(code, 2);
    let (code, _, err) = w.raw("dump", &[w.a.as_bytes(), b"data/missing"]);
    assert_eq!(code, 8, "{err}");
}

#[test]
fn dump_of_a_folder_is_a_tar_with_names_links_and_bytes_kept() {
    let w = world();
    let (code, out, err) = w.raw("dump", &[format!("{}:data", w.a).as_bytes(), b"/"]);
    assert_eq!(code, 0, "{err}");
    let mut archive = tar::Archive::new(out.as_slice());
    let mut seen = std::collections::BTreeMap::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path_bytes().into_owned();
        let kind = e.header().entry_type();
        let link = e.link_name_bytes().map(|l| l.into_owned());
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        seen.insert(name, (kind, link, data));
    }
    let get = |n: &[u8]| {
        seen.get(n).unwrap_or_else(|| {
            panic!(
                "{:?} not in the tar: {:?}",
                String::from_utf8_lossy(n),
                seen.keys()
                    .map(|k| String::from_utf8_lossy(k))
                    .collect::<Vec<_>>()
            )
        })
    };
    assert_eq!(get(b"data/plain.txt").2, b"hello\n");
    assert_eq!(get(b"data/new\nline").2, b"newline name\n");
    assert_eq!(
        get(&[b"data/".as_slice(), LATIN1].concat()).2,
        b"latin-1 name\n"
    );
    assert_eq!(get(b"data/..evil").2, b"dots\n");
    let link = get(b"data/link");
    assert!(link.0.is_symlink(), "the symlink stays a symlink");
    assert_eq!(link.1.as_deref(), Some(b"../../etc/passwd".as_slice()));
    assert!(get(b"data/sub").0.is_dir());
    // One name of the hard-linked pair holds the bytes; the other is a link to it.
    let (deep, twin) = (get(b"data/sub/deep.bin"), get(b"data/sub/twin.bin"));
    let (first, second, first_name) = if deep.0.is_hard_link() {
        (twin, deep, b"data/sub/twin.bin".as_slice())
    } else {
        (deep, twin, b"data/sub/deep.bin".as_slice())
    };
    assert!(first.2 == w.deep, "the first name holds the file's bytes");
    assert!(second.0.is_hard_link());
    assert_eq!(second.1.as_deref(), Some(first_name));

    // A subfolder is named after itself; unpacking the tar recreates it under that name only.
    let (code, out, err) = w.raw("dump", &[w.a.as_bytes(), b"data/sub"]);
    assert_eq!(code, 0, "{err}");
    let dest = w.fx.path("unpacked");
    std::fs::create_dir(&dest).unwrap();
    tar::Archive::new(out.as_slice()).unpack(&dest).unwrap();
    assert!(std::fs::read(dest.join("sub/deep.bin")).unwrap() == w.deep);
    assert!(std::fs::read(dest.join("sub/twin.bin")).unwrap() == w.deep);
    let names: Vec<PathBuf> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(names, [dest.join("sub")]);
}

#[test]
fn dump_into_a_closed_pipe_ends_quietly() {
    let w = world();
    let mut c = w.cmd("dump").arg(&w.a).arg("data").command();
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 10];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    // Its shared lock was released: a prune (exclusive lock, no waiting) is not refused.
    w.fx.repo_cmd("prune")
        .args(["--dry-run", "--trust-listing"])
        .run()
        .ok();
}

#[test]
fn find_matches_names_or_paths_across_backups() {
    let w = world();
    let out = w.cmd("find").arg("*.txt").run().ok();
    let r = rows(&out, 5);
    let hits: Vec<(String, String)> = r.iter().map(|c| (c[0].clone(), c[4].clone())).collect();
    for (id, name) in [
        (&w.a, "data/plain.txt"),
        (&w.b, "data/plain.txt"),
        (&w.b, "data/added.txt"),
        (&w.a, "data/caf\\xe9.txt"),
    ] {
        assert!(
            hits.contains(&(id.clone(), name.to_string())),
            "{id} {name} not found:\n{out}"
        );
    }
    assert!(
        !hits.contains(&(w.a.clone(), "data/added.txt".into())),
        "{out}"
    );
    // A pattern with `/` is a path; `*` stops at folders, `**` crosses them.
    let out = w.cmd("find").arg("data/*.bin").run().ok();
    assert_eq!(rows(&out, 5).len(), 0, "{out}");
    let out = w
        .cmd("find")
        .arg("data/**/*.bin")
        .args(["--backup", &w.b])
        .run()
        .ok();
    assert_eq!(rows(&out, 5).len(), 2, "{out}");
    // Names with a newline are found and printed on one line.
    let out = w
        .cmd("find")
        .arg("new?line")
        .args(["--backup", "latest"])
        .run()
        .ok();
    assert_eq!(rows(&out, 5)[0][4], "data/new\\nline", "{out}");
    let out = w.cmd("find").arg("nothing-like-this").run().ok();
    assert_eq!(out.stdout, "", "{out}");
    w.cmd("find").arg("[").run().code(2);
    w.cmd("find")
        .arg("*")
        .args(["--backup", "20200101T000000Z-00000000"])
        .run()
        .code(8);
}

#[test]
fn diff_names_added_removed_modified_and_metadata_changes() {
    let w = world();
    let out = w.cmd("diff").arg(&w.a).arg(&w.b).arg("--json").run().ok();
    let mut got: Vec<(String, String)> = out
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["change"].as_str().unwrap().into(),
                c["path"].as_str().unwrap().into(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("added".to_string(), "data/added.txt".to_string()),
            ("metadata".into(), "data/meta.txt".into()),
            ("modified".into(), "data/plain.txt".into()),
            ("removed".into(), "data/..evil".into()),
        ],
        "{out}"
    );
    let out = w.cmd("diff").arg(&w.a).arg(&w.b).run().ok();
    assert!(
        out.stdout
            .contains("1 added, 1 removed, 1 modified, 1 changed in metadata only"),
        "{out}"
    );
    let modified = out
        .stdout
        .lines()
        .find(|l| l.contains("plain.txt"))
        .unwrap();
    assert!(
        modified.contains("6 B") && modified.contains("15 B"),
        "{out}"
    );
    // The same backup twice: nothing changed.
    let out = w.cmd("diff").arg(&w.b).arg("latest").run().ok();
    assert!(
        out.stdout.contains("0 added, 0 removed, 0 modified"),
        "{out}"
    );
    w.cmd("diff")
        .arg(format!("{}:data", w.a))
        .arg(&w.b)
        .run()
        .code(2);
    w.cmd("diff")
        .arg(&w.a)
        .arg("20200101T000000Z-00000000")
        .run()
        .code(8);
}

#[test]
fn a_backup_under_another_certificate_is_a_key_error() {
    let w = world();
    let other = shared_cert(1);
    w.fx.repo_cmd("ls")
        .arg(&w.a)
        .arg("--pfx")
        .arg(&other.pfx)
        .pw()
        .run()
        .code(5);
}
