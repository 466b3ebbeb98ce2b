//! `ibs repo dump` (a file's bytes, or a folder as a tar stream, to stdout) and `ibs repo diff`
//! (what changed between two backups), over the browsing helpers of [`super::browse`].
//!
//! The tar stream (the `tar` crate, GNU format, long and non-UTF-8 names kept byte for byte) holds
//! the folder under its own name: folders, files with their bytes, symlinks, FIFOs and devices,
//! and hard links as links to the first name when that name is in the stream too (else the data
//! again). Mode, owner ids and modification time are kept. Entries unreadable at backup time are
//! left out, named on stderr, and the exit code is 3. A closed stdout ends the dump quietly.

use super::browse::{collect, escape, kind_name, locked, name, open, relative, within, Found};
use super::Ctx;
use crate::cli::{Location, UnlockArgs};
use crate::errors::coded;
use crate::output::{exit, human, stdout_closed, table, RawStdout};
use anyhow::{anyhow, Result};
use ibs_engine::browse::{BackupView, Reader};
use ibs_repo::tree::{EntryKind, TreeEntry};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::io::{BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver};

/// `ibs repo dump`.
pub(super) async fn dump(
    ctx: &Ctx,
    loc: Location,
    backup: String,
    path: std::path::PathBuf,
    u: UnlockArgs,
) -> Result<i32> {
    let dir = super::browse::clean(Some(path.as_path()))?;
    let (repo, reader) = open(&loc, &u).await?;
    let named = name(&repo, &backup).await?;
    let view = reader.backup(&named.id).await?;
    let source = named.source.clone();
    // The tar names: the folder's own name, then the path below it; the top of a scoped backup is
    // named after its source; the top of a whole backup holds the sources' folders.
    let base: Vec<u8> = match (dir.rsplit(|b| *b == b'/').next(), &source) {
        (Some(b), _) if !b.is_empty() => b.to_vec(),
        (_, Some(s)) => s.as_bytes().to_vec(),
        _ => Vec::new(),
    };
    let (d, r) = (dir.clone(), reader.clone());
    let id = named.id.clone();
    locked(ctx, &repo, move || {
        // Every hard-linked file's first name, wherever it is: a link in the stream may name it.
        let mut leaders: HashMap<Vec<u8>, TreeEntry> = HashMap::new();
        let found = collect(&r, &view, source.as_deref(), |vpath, e| {
            if e.link_leader {
                leaders.insert(vpath.to_vec(), e.clone());
            }
            within(vpath, &d)
        })?;
        let Some(top) = found.first().filter(|f| f.vpath == d || d.is_empty()) else {
            return Err(coded(
                exit::NOT_FOUND,
                format!("backup {id} has no {}", escape(&d)),
                format!("list the backup's folders with `ibs repo ls {backup}`"),
            ));
        };
        match top.entry.kind {
            EntryKind::File if top.vpath == d => file(&r, &top.entry),
            EntryKind::HardLink if top.vpath == d => {
                match leaders.get(&link_vpath(top, source.is_some())) {
                    Some(l) => file(&r, l),
                    None => Err(anyhow!("{}: its file is not in the backup", escape(&d))),
                }
            }
            EntryKind::Dir => tar(&r, &found, &d, &base, &leaders, source.is_some()),
            EntryKind::File | EntryKind::HardLink if d.is_empty() => {
                tar(&r, &found, &d, &base, &leaders, source.is_some())
            }
            k => Err(coded(
                exit::USAGE,
                format!(
                    "{} is a {}: only files and folders are dumped",
                    escape(&d),
                    kind_name(k)
                ),
                format!("see it with `ibs repo ls {backup} PATH`"),
            )),
        }
    })
    .await
}

/// One file's bytes to stdout.
fn file(r: &Reader, e: &TreeEntry) -> Result<i32> {
    let mut out = BufWriter::with_capacity(1 << 16, RawStdout);
    let done = r.read_file(e, |data| out.write_all(data).map_err(|e| e.to_string()));
    let flushed = out.flush();
    if stdout_closed() {
        return Ok(exit::OK);
    }
    done?;
    flushed?;
    Ok(exit::OK)
}

/// A file's bytes, pulled by the tar writer while another thread reads them from the repository.
struct Pipe(Receiver<Vec<u8>>, Vec<u8>, usize);

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.2 == self.1.len() {
            match self.0.recv() {
                Ok(next) => (self.1, self.2) = (next, 0),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.1.len() - self.2);
        buf[..n].copy_from_slice(&self.1[self.2..self.2 + n]);
        self.2 += n;
        Ok(n)
    }
}

/// Appends a file entry whose bytes come from the repository as they are read.
fn append_file(
    r: &Reader,
    b: &mut tar::Builder<impl Write>,
    h: &mut tar::Header,
    name: &Path,
    e: &TreeEntry,
) -> Result<()> {
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(e.size);
    std::thread::scope(|s| {
        let (tx, rx) = sync_channel::<Vec<u8>>(4);
        let reading = s.spawn(move || {
            r.read_file(e, |d| {
                tx.send(d.to_vec()).map_err(|_| "stopped".to_string())
            })
        });
        let written = b.append_data(h, name, Pipe(rx, Vec::new(), 0));
        let read = reading
            .join()
            .map_err(|_| anyhow!("internal error: reader panicked"))?;
        read?;
        Ok(written?)
    })
}

/// A folder (or the whole backup) as a tar stream to stdout.
fn tar(
    r: &Reader,
    found: &[Found],
    dir: &[u8],
    base: &[u8],
    leaders: &HashMap<Vec<u8>, TreeEntry>,
    scoped: bool,
) -> Result<i32> {
    let mut b = tar::Builder::new(BufWriter::with_capacity(1 << 16, RawStdout));
    b.follow_symlinks(false);
    let tar_name = |vpath: &[u8]| -> Vec<u8> {
        let rel = relative(vpath, dir);
        match (base.is_empty(), rel.is_empty()) {
            (true, _) => rel.to_vec(),
            (false, true) => base.to_vec(),
            (false, false) => [base, b"/", rel].concat(),
        }
    };
    // First names of hard-linked files already in the stream, by their path in the tree.
    let mut in_stream: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut skipped = 0;
    for f in found {
        let e = &f.entry;
        let name_bytes = tar_name(&f.vpath);
        if name_bytes.is_empty() {
            continue;
        }
        if let Some(err) = &e.error {
            errln!(
                "skipped {}: unreadable at backup time: {err}",
                escape(&f.vpath)
            );
            skipped += 1;
            continue;
        }
        let name = Path::new(OsStr::from_bytes(&name_bytes));
        let mut h = tar::Header::new_gnu();
        h.set_mode(e.mode & 0o7777);
        h.set_uid(e.uid as u64);
        h.set_gid(e.gid as u64);
        h.set_mtime(e.mtime_ns.div_euclid(1_000_000_000).max(0) as u64);
        h.set_size(0);
        let written: Result<()> = match e.kind {
            EntryKind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                b.append_data(&mut h, name, std::io::empty())
                    .map_err(Into::into)
            }
            EntryKind::File => {
                if e.link_leader {
                    in_stream.insert(f.vpath.clone(), name_bytes.clone());
                }
                append_file(r, &mut b, &mut h, name, e)
            }
            EntryKind::Symlink => {
                h.set_entry_type(tar::EntryType::Symlink);
                let t = e.target.clone().unwrap_or_default();
                b.append_link(&mut h, name, Path::new(OsStr::from_bytes(&t)))
                    .map_err(Into::into)
            }
            EntryKind::HardLink => {
                let t = link_vpath(f, scoped);
                match (in_stream.get(&t), leaders.get(&t)) {
                    (Some(first), _) => {
                        h.set_entry_type(tar::EntryType::Link);
                        b.append_link(&mut h, name, Path::new(OsStr::from_bytes(first)))
                            .map_err(Into::into)
                    }
                    (None, Some(l)) => append_file(r, &mut b, &mut h, name, l),
                    (None, None) => Err(anyhow!(
                        "{}: its file is not in the backup",
                        escape(&f.vpath)
                    )),
                }
            }
            EntryKind::Fifo | EntryKind::CharDevice | EntryKind::BlockDevice => {
                h.set_entry_type(match e.kind {
                    EntryKind::Fifo => tar::EntryType::Fifo,
                    EntryKind::CharDevice => tar::EntryType::Char,
                    _ => tar::EntryType::Block,
                });
                let (major, minor) = (libc_major(e.rdev), libc_minor(e.rdev));
                h.set_device_major(major)?;
                h.set_device_minor(minor)?;
                b.append_data(&mut h, name, std::io::empty())
                    .map_err(Into::into)
            }
        };
        if stdout_closed() {
            return Ok(exit::OK);
        }
        written?;
    }
    let finished = b.into_inner().and_then(|mut w| w.flush());
    if stdout_closed() {
        return Ok(exit::OK);
    }
    finished?;
    Ok(if skipped > 0 { exit::PARTIAL } else { exit::OK })
}

/// The path in the backup's one tree of the file a hard-link entry names (its target is relative
/// to its source).
fn link_vpath(f: &Found, scoped: bool) -> Vec<u8> {
    let t = f.entry.target.as_deref().unwrap_or_default();
    if scoped {
        return t.to_vec();
    }
    let source = f.vpath.split(|b| *b == b'/').next().unwrap_or_default();
    [source, b"/", t].concat()
}

/// `major(3)` of a Linux `dev_t`.
fn libc_major(dev: u64) -> u32 {
    (((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff)) as u32
}

/// `minor(3)` of a Linux `dev_t`.
fn libc_minor(dev: u64) -> u32 {
    (((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff)) as u32
}

/// What `diff` compares of an entry.
#[derive(PartialEq)]
struct Sig {
    kind: EntryKind,
    size: u64,
    chunks: Vec<ibs_repo::ids::ChunkId>,
    target: Option<Vec<u8>>,
    meta: (u32, u32, u32, i64),
}

fn sig(e: TreeEntry) -> Sig {
    Sig {
        kind: e.kind,
        size: e.size,
        chunks: e.chunks,
        target: e.target,
        meta: (e.mode, e.uid, e.gid, e.mtime_ns),
    }
}

/// `ibs repo diff A B`: entries added, removed, modified (type, content or link target) and
/// changed in metadata only (mode, owner or time of a non-folder), sorted by path.
pub(super) async fn diff(
    ctx: &Ctx,
    loc: Location,
    a: String,
    b: String,
    u: UnlockArgs,
) -> Result<i32> {
    let (repo, reader) = open(&loc, &u).await?;
    let (na, nb) = (name(&repo, &a).await?, name(&repo, &b).await?);
    if na.source.is_some() != nb.source.is_some() {
        return Err(crate::errors::usage(
            "give a source on both backups (ID:SOURCE) or on neither",
        ));
    }
    let (va, vb) = (reader.backup(&na.id).await?, reader.backup(&nb.id).await?);
    let r = reader.clone();
    let (sa, sb) = (na.source.clone(), nb.source.clone());
    let (before, after) = locked(ctx, &repo, move || {
        let map = |v: &BackupView, s: Option<&str>| -> Result<BTreeMap<Vec<u8>, Sig>> {
            Ok(collect(&r, v, s, |_, _| true)?
                .into_iter()
                .map(|f| (f.vpath, sig(f.entry)))
                .collect())
        };
        Ok((map(&va, sa.as_deref())?, map(&vb, sb.as_deref())?))
    })
    .await?;
    let mut rows = Vec::new();
    let mut json = Vec::new();
    let (mut added, mut removed, mut modified, mut meta) = (0u64, 0u64, 0u64, 0u64);
    let mut change = |what: &'static str, path: &[u8], old: Option<&Sig>, new: Option<&Sig>| {
        let size = |s: Option<&Sig>| s.map(|s| human(s.size)).unwrap_or_else(|| "-".into());
        rows.push(vec![what.to_string(), size(old), size(new), escape(path)]);
        json.push(serde_json::json!({
            "change": what,
            "path": escape(path),
            "type": kind_name(new.or(old).map(|s| s.kind).unwrap_or_default()),
            "size_before": old.map(|s| s.size),
            "size_after": new.map(|s| s.size),
        }));
    };
    let mut paths: Vec<&Vec<u8>> = before.keys().chain(after.keys()).collect();
    paths.sort();
    paths.dedup();
    for p in paths {
        match (before.get(p), after.get(p)) {
            (None, Some(n)) => {
                added += 1;
                change("added", p, None, Some(n));
            }
            (Some(o), None) => {
                removed += 1;
                change("removed", p, Some(o), None);
            }
            (Some(o), Some(n)) if o == n => {}
            (Some(o), Some(n)) => {
                let content = o.kind != n.kind
                    || o.size != n.size
                    || o.chunks != n.chunks
                    || o.target != n.target;
                if content {
                    modified += 1;
                    change("modified", p, Some(o), Some(n));
                } else if n.kind != EntryKind::Dir {
                    meta += 1;
                    change("metadata", p, Some(o), Some(n));
                }
            }
            (None, None) => {}
        }
    }
    if ctx.json {
        outln!("{}", serde_json::Value::Array(json));
        return Ok(exit::OK);
    }
    if !rows.is_empty() {
        table(&["CHANGE", "BEFORE", "AFTER", "PATH"], &rows);
    }
    if !ctx.quiet {
        outln!("{added} added, {removed} removed, {modified} modified, {meta} changed in metadata only");
    }
    Ok(exit::OK)
}
