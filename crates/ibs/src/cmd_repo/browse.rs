//! `ibs repo ls|find`, and what `dump` and `diff` share: browsing backups read-only with the .pfx
//! through the engine's [`Reader`] (no decoding of its own). A backup is seen as one tree: its top
//! level holds one folder per source (`SOURCE/PATH`), or, when the backup is given as
//! `ID:SOURCE` / `latest:SOURCE`, that source's folder is the top. Names are shown escaped
//! ([`escape`]): printable UTF-8 as is, everything else as `\xNN`, `\n`, `\t` or `\\`, so a name is
//! never mangled and never breaks a line. The commands hold a shared repository lock while they
//! read, as restore does, so a concurrent prune cannot remove what they read.

use super::{open_repo, unlock, Ctx};
use crate::cli::{Location, UnlockArgs};
use crate::errors::{coded, usage};
use crate::output::{exit, table};
use anyhow::Result;
use ibs_engine::browse::{BackupView, Reader};
use ibs_repo::lock::LockKind;
use ibs_repo::manifest::BackupStatus;
use ibs_repo::tree::{EntryKind, TreeEntry};
use ibs_repo::Repository;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

/// A backup named on the command line, resolved: its id and the source it is scoped to.
pub(super) struct Named {
    pub id: String,
    pub source: Option<String>,
}

/// An entry with its path in the backup's one tree (`SOURCE/PATH`, or `PATH` when scoped).
pub(super) struct Found {
    pub vpath: Vec<u8>,
    pub entry: TreeEntry,
}

/// A `--backup` value as a backup id: an id as is; `latest` is the newest backup that did not
/// fail; `latest:NAME` the newest such backup with source NAME (then restored alone, unless
/// `--source` says otherwise).
pub(super) async fn resolve_backup(
    repo: &Repository,
    spec: &str,
) -> Result<(String, Option<String>)> {
    let Some(rest) = spec.strip_prefix("latest") else {
        return Ok((spec.to_string(), None));
    };
    let source = match rest {
        "" => None,
        r => match r.strip_prefix(':') {
            Some(name) if !name.is_empty() => Some(name.to_string()),
            _ => {
                return Err(crate::errors::usage(format!(
                    "--backup {spec:?}: expected an id, latest or latest:SOURCE"
                )))
            }
        },
    };
    let mut ids = repo.list_backup_ids().await?;
    ids.sort();
    for id in ids.iter().rev() {
        let Ok(c) = repo.read_catalog(id).await else {
            continue;
        };
        let has = source
            .as_deref()
            .is_none_or(|n| c.sources.iter().any(|s| s.name == n));
        if c.status != BackupStatus::Failed && has {
            return Ok((id.clone(), source));
        }
    }
    Err(crate::errors::coded(
        exit::NOT_FOUND,
        match &source {
            Some(n) => format!("no backup with source {n:?} in this repository"),
            None => "no backup in this repository".to_string(),
        },
        "list them with `ibs repo list`",
    ))
}

/// Resolves `ID`, `ID:SOURCE`, `latest` or `latest:SOURCE`.
pub(super) async fn name(repo: &Repository, spec: &str) -> Result<Named> {
    let (id, source) = match spec.split_once(':') {
        Some((id, src)) if id != "latest" => {
            if src.is_empty() {
                return Err(usage(format!(
                    "{spec:?}: expected ID, ID:SOURCE, latest or latest:SOURCE"
                )));
            }
            (id.to_string(), Some(src.to_string()))
        }
        _ => resolve_backup(repo, spec).await?,
    };
    Ok(Named { id, source })
}

/// The repository and a reader opened with the .pfx.
pub(super) async fn open(loc: &Location, u: &UnlockArgs) -> Result<(Arc<Repository>, Arc<Reader>)> {
    let repo = Arc::new(open_repo(loc).await?);
    let unlock = Arc::new(unlock(u)?);
    let reader = Arc::new(Reader::open(repo.clone(), unlock).await?);
    Ok((repo, reader))
}

/// Runs `f` under a shared repository lock, on a blocking thread (the reader's walks block).
pub(super) async fn locked<T: Send + 'static>(
    ctx: &Ctx,
    repo: &Repository,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let lock = repo.lock(LockKind::Shared, "browse", ctx.lock_wait).await?;
    let result = tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow::anyhow!("internal error: {e}"))
        .and_then(|r| r);
    lock.finish(result.map_err(Wrapped)).await.map_err(|w| w.0)
}

/// An anyhow error carried through [`ibs_repo::lock::LockGuard::finish`], which wants a
/// `From<RepoError>` error type.
struct Wrapped(anyhow::Error);
impl From<ibs_repo::RepoError> for Wrapped {
    fn from(e: ibs_repo::RepoError) -> Self {
        Wrapped(e.into())
    }
}

/// A PATH argument as checked components joined by `/`: empty, `.` and trailing `/` parts are
/// dropped; `..` is refused (exit 2): paths are always inside the backup.
pub(super) fn clean(path: Option<&Path>) -> Result<Vec<u8>> {
    let Some(p) = path else {
        return Ok(Vec::new());
    };
    let mut out: Vec<u8> = Vec::new();
    for c in p.as_os_str().as_bytes().split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                return Err(usage(format!(
                    "path {}: `..` is not allowed; paths are inside the backup",
                    escape(p.as_os_str().as_bytes())
                )))
            }
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Ok(out)
}

/// Whether `vpath` is `dir` itself or below it.
pub(super) fn within(vpath: &[u8], dir: &[u8]) -> bool {
    dir.is_empty()
        || vpath == dir
        || (vpath.len() > dir.len() && vpath.starts_with(dir) && vpath[dir.len()] == b'/')
}

/// `vpath` relative to `dir` (empty for `dir` itself).
pub(super) fn relative<'a>(vpath: &'a [u8], dir: &[u8]) -> &'a [u8] {
    if dir.is_empty() {
        vpath
    } else if vpath.len() > dir.len() {
        &vpath[dir.len() + 1..]
    } else {
        &[]
    }
}

/// Walks every source of `view` (or the one `named` is scoped to), calling `keep` with each
/// entry's path in the backup's one tree; the entries it accepts are returned in tree order.
/// Blocking.
pub(super) fn collect(
    reader: &Reader,
    view: &BackupView,
    source: Option<&str>,
    mut keep: impl FnMut(&[u8], &TreeEntry) -> bool,
) -> Result<Vec<Found>> {
    let sources: Vec<_> = match source {
        Some(n) => vec![view.source(n)?],
        None => view.sources.iter().collect(),
    };
    let mut out = Vec::new();
    for s in sources {
        reader.walk(s, |entry| {
            let vpath = match source {
                Some(_) => entry.path.clone(),
                None if entry.path.is_empty() => s.name.as_bytes().to_vec(),
                None => [s.name.as_bytes(), b"/", &entry.path].concat(),
            };
            if keep(&vpath, &entry) {
                out.push(Found { vpath, entry });
            }
            Ok(true)
        })?;
    }
    Ok(out)
}

/// A name for people: printable UTF-8 as is; `\`, control characters and bytes that are not UTF-8
/// escaped (`\\`, `\n`, `\t`, `\r`, `\xNN`), so the shown name maps back to exactly one byte string.
pub(super) fn escape(name: &[u8]) -> String {
    let mut s = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '\n' => s.push_str("\\n"),
                '\t' => s.push_str("\\t"),
                '\r' => s.push_str("\\r"),
                c if c.is_control() => {
                    let mut b = [0; 4];
                    for x in c.encode_utf8(&mut b).bytes() {
                        s.push_str(&format!("\\x{x:02x}"));
                    }
                }
                c => s.push(c),
            }
        }
        for b in chunk.invalid() {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

/// `ls -l`'s mode column: the type, then `rwx` triples with setuid, setgid and sticky bits.
pub(super) fn mode_string(e: &TreeEntry) -> String {
    let t = match e.kind {
        EntryKind::Dir => 'd',
        EntryKind::Symlink => 'l',
        EntryKind::Fifo => 'p',
        EntryKind::CharDevice => 'c',
        EntryKind::BlockDevice => 'b',
        EntryKind::File | EntryKind::HardLink => '-',
    };
    let m = e.mode;
    let bit = |mask: u32, c: char| if m & mask != 0 { c } else { '-' };
    let special =
        |x: u32, special: u32, lower: char, upper: char| match (m & x != 0, m & special != 0) {
            (true, true) => lower,
            (false, true) => upper,
            (true, false) => 'x',
            (false, false) => '-',
        };
    [
        t,
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        special(0o100, 0o4000, 's', 'S'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        special(0o010, 0o2000, 's', 'S'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        special(0o001, 0o1000, 't', 'T'),
    ]
    .iter()
    .collect()
}

/// The entry's type as JSON names it.
pub(super) fn kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::File => "file",
        EntryKind::Dir => "dir",
        EntryKind::Symlink => "symlink",
        EntryKind::HardLink => "hardlink",
        EntryKind::Fifo => "fifo",
        EntryKind::CharDevice => "chardev",
        EntryKind::BlockDevice => "blockdev",
    }
}

/// A modification time in UTC, RFC 3339, to the second.
pub(super) fn mtime(e: &TreeEntry) -> String {
    ibs_repo::clock::rfc3339(e.mtime_ns.div_euclid(1_000_000_000))
}

/// The name column: the escaped name, `-> TARGET` for a symlink, `=> FILE` for another name of a
/// hard-linked file, and `(unreadable at backup time)` for an entry without contents.
fn shown_name(name: &[u8], e: &TreeEntry) -> String {
    let mut s = escape(name);
    match (e.kind, &e.target) {
        (EntryKind::Symlink, Some(t)) => s.push_str(&format!(" -> {}", escape(t))),
        (EntryKind::HardLink, Some(t)) => s.push_str(&format!(" => {}", escape(t))),
        _ => {}
    }
    if e.error.is_some() {
        s.push_str(" (unreadable at backup time)");
    }
    s
}

fn json_entry(backup: &str, vpath: &[u8], e: &TreeEntry) -> serde_json::Value {
    serde_json::json!({
        "backup_id": backup,
        "path": escape(vpath),
        "type": kind_name(e.kind),
        "mode": format!("{:o}", e.mode & 0o7777),
        "uid": e.uid,
        "gid": e.gid,
        "size": e.size,
        "mtime": mtime(e),
        "mtime_ns": e.mtime_ns,
        "target": e.target.as_deref().map(escape),
        "error": e.error,
    })
}

/// `ibs repo ls`.
pub(super) async fn ls(
    ctx: &Ctx,
    loc: Location,
    backup: String,
    path: Option<std::path::PathBuf>,
    recursive: bool,
    u: UnlockArgs,
) -> Result<i32> {
    let dir = clean(path.as_deref())?;
    let (repo, reader) = open(&loc, &u).await?;
    let named = name(&repo, &backup).await?;
    let view = reader.backup(&named.id).await?;
    let (d, r) = (dir.clone(), reader.clone());
    let source = named.source.clone();
    let found = locked(ctx, &repo, move || {
        collect(&r, &view, source.as_deref(), |vpath, _| {
            within(vpath, &d) && (recursive || vpath == d || !relative(vpath, &d).contains(&b'/'))
        })
    })
    .await?;
    // The folder itself is shown only when it is a file (ls of a file shows that file).
    let me = found.iter().find(|f| f.vpath == dir);
    let rows: Vec<&Found> = match me {
        Some(f) if f.entry.kind != EntryKind::Dir => vec![f],
        _ => found.iter().filter(|f| f.vpath != dir).collect(),
    };
    if me.is_none() && rows.is_empty() {
        return Err(coded(
            exit::NOT_FOUND,
            format!(
                "backup {} has no {}",
                named.id,
                if dir.is_empty() {
                    "entries".to_string()
                } else {
                    escape(&dir)
                }
            ),
            format!("list the backup's folders with `ibs repo ls {backup}`"),
        ));
    }
    if ctx.json {
        let v: Vec<_> = rows
            .iter()
            .map(|f| json_entry(&named.id, &f.vpath, &f.entry))
            .collect();
        outln!("{}", serde_json::Value::Array(v));
        return Ok(exit::OK);
    }
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|f| {
            let e = &f.entry;
            let name = if f.vpath == dir {
                f.vpath.rsplit(|b| *b == b'/').next().unwrap_or_default()
            } else {
                relative(&f.vpath, &dir)
            };
            vec![
                mode_string(e),
                format!("{}:{}", e.uid, e.gid),
                e.size.to_string(),
                mtime(e),
                shown_name(name, e),
            ]
        })
        .collect();
    table(&["MODE", "OWNER", "SIZE", "MODIFIED", "NAME"], &table_rows);
    Ok(exit::OK)
}

/// `ibs repo find`: one row per matching entry, per backup, oldest backup first. A backup that
/// cannot be read (another certificate's, damaged) is named on stderr and makes the exit code 3.
pub(super) async fn find(
    ctx: &Ctx,
    loc: Location,
    pattern: String,
    backup: Option<String>,
    u: UnlockArgs,
) -> Result<i32> {
    let glob = globset::GlobBuilder::new(&pattern)
        .literal_separator(true)
        .build()
        .map_err(|e| usage(format!("pattern {pattern:?}: {e}")))?
        .compile_matcher();
    let by_name = !pattern.contains('/');
    let (repo, reader) = open(&loc, &u).await?;
    let mut targets = Vec::new();
    match &backup {
        Some(spec) => targets.push(name(&repo, spec).await?),
        None => {
            let mut ids = repo.list_backup_ids().await?;
            ids.sort();
            for id in ids {
                match repo.read_catalog(&id).await {
                    Ok(c) if c.status == BackupStatus::Failed => {}
                    Err(e) if e.is_not_found() => {}
                    _ => targets.push(Named { id, source: None }),
                }
            }
        }
    }
    let mut hits = Vec::new();
    let mut unreadable = 0;
    for t in targets {
        let view = match reader.backup(&t.id).await {
            Ok(v) => v,
            Err(e) if backup.is_none() => {
                errln!("warning: backup {} not searched: {e}", t.id);
                unreadable += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let (g, r) = (glob.clone(), reader.clone());
        let source = t.source.clone();
        let found = locked(ctx, &repo, move || {
            collect(&r, &view, source.as_deref(), |vpath, _| {
                let subject = if by_name {
                    vpath.rsplit(|b| *b == b'/').next().unwrap_or_default()
                } else {
                    vpath
                };
                g.is_match(Path::new(std::ffi::OsStr::from_bytes(subject)))
            })
        })
        .await;
        match found {
            Ok(f) => hits.extend(f.into_iter().map(|f| (t.id.clone(), f))),
            Err(e) if backup.is_none() => {
                errln!("warning: backup {} not searched: {e:#}", t.id);
                unreadable += 1;
            }
            Err(e) => return Err(e),
        }
    }
    if ctx.json {
        let v: Vec<_> = hits
            .iter()
            .map(|(id, f)| json_entry(id, &f.vpath, &f.entry))
            .collect();
        outln!("{}", serde_json::Value::Array(v));
    } else if hits.is_empty() {
        if !ctx.quiet {
            errln!("no entry matches {pattern:?}");
        }
    } else {
        let rows: Vec<Vec<String>> = hits
            .iter()
            .map(|(id, f)| {
                vec![
                    id.clone(),
                    mode_string(&f.entry),
                    f.entry.size.to_string(),
                    mtime(&f.entry),
                    shown_name(&f.vpath, &f.entry),
                ]
            })
            .collect();
        table(&["BACKUP", "MODE", "SIZE", "MODIFIED", "PATH"], &rows);
    }
    Ok(if unreadable > 0 {
        exit::PARTIAL
    } else {
        exit::OK
    })
}
