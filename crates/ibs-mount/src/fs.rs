//! The FUSE file system over a [`Reader`]: lookups, attributes, folder listings, symlink targets,
//! extended attributes and reads of file contents, every one answered from the backups as they
//! were recorded; every request that would change anything is answered `EROFS` (the mount is
//! also read-only to the kernel, which refuses most of them before they reach us).
//!
//! Requests arrive on one session thread (fuser's default), so one mutex over the state never
//! waits; a folder is filled (a manifest opened, a tree walked) by the request that first needs
//! it. A file's bytes are read on demand through a [`FileCursor`] per open handle, never whole.

use crate::tree::{Body, Table};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use ibs_engine::browse::{BackupView, FileCursor, Reader};
use ibs_repo::tree::{EntryKind, TreeEntry};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// How long the kernel may cache answers: a backup never changes while it is mounted.
const TTL: Duration = Duration::from_secs(3600);

struct State {
    table: Table,
    /// Opened manifests, by backup id (their sources' tree chunk lists).
    views: HashMap<String, Arc<BackupView>>,
    files: HashMap<u64, FileCursor>,
    next_fh: u64,
}

pub(crate) struct BackupFs {
    rt: tokio::runtime::Handle,
    reader: Arc<Reader>,
    state: Mutex<State>,
}

impl BackupFs {
    pub fn new(rt: tokio::runtime::Handle, reader: Arc<Reader>, table: Table) -> Self {
        BackupFs {
            rt,
            reader,
            state: Mutex::new(State {
                table,
                views: HashMap::new(),
                files: HashMap::new(),
                next_fh: 1,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The manifest of backup `id`, opened once.
    fn view(&self, st: &mut State, id: &str) -> Result<Arc<BackupView>, Errno> {
        if let Some(v) = st.views.get(id) {
            return Ok(v.clone());
        }
        let v = self
            .rt
            .block_on(self.reader.backup(id))
            .map_err(|e| io_error(&format!("backup {id}"), &e))?;
        let v = Arc::new(v);
        st.views.insert(id.to_string(), v.clone());
        Ok(v)
    }

    /// Fills inode `ino` if it is a backup or source folder not filled yet.
    fn fill(&self, st: &mut State, ino: u64) -> Result<(), Errno> {
        let node = st.table.get(ino).ok_or(Errno::ENOENT)?;
        if node.children.is_some() {
            return Ok(());
        }
        match &node.body {
            Body::Backup { id } => {
                let id = id.clone();
                let view = self.view(st, &id)?;
                let names: Vec<String> = view.sources.iter().map(|s| s.name.clone()).collect();
                st.table.fill_backup(ino, &names);
            }
            Body::Source { backup, name } => {
                let (backup, name) = (backup.clone(), name.clone());
                let view = self.view(st, &backup)?;
                let what = format!("backup {backup} source {name}");
                let source = view.source(&name).map_err(|e| io_error(&what, &e))?;
                let mut entries: Vec<TreeEntry> = Vec::new();
                self.reader
                    .walk(source, |e| {
                        entries.push(e);
                        Ok(true)
                    })
                    .map_err(|e| io_error(&what, &e))?;
                st.table.fill_source(ino, entries);
            }
            _ => {}
        }
        Ok(())
    }

    /// The attributes of `ino`, filling a source folder first (its top's attributes come from
    /// its tree).
    fn attr(&self, st: &mut State, ino: u64) -> Result<FileAttr, Errno> {
        if matches!(
            st.table.get(ino).map(|n| &n.body),
            Some(Body::Source { .. })
        ) {
            self.fill(st, ino)?;
        }
        st.table.get(ino).map(|n| n.attr).ok_or(Errno::ENOENT)
    }

    fn entry(st: &State, ino: u64) -> Result<&TreeEntry, Errno> {
        match st.table.get(ino).map(|n| &n.body) {
            Some(Body::Entry(e)) => Ok(e),
            Some(_) => Err(Errno::ENODATA),
            None => Err(Errno::ENOENT),
        }
    }
}

/// Logs an engine error (the operator sees it on the mount's stderr) and answers `EIO`.
fn io_error(what: &str, e: &dyn std::fmt::Display) -> Errno {
    tracing::warn!("{what}: {e}");
    Errno::EIO
}

/// Answers a size query (`size == 0`) or the bytes, `ERANGE` when they do not fit.
fn xattr_reply(reply: ReplyXattr, size: u32, data: &[u8]) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if data.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}

impl Filesystem for BackupFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // ACLs are extended attributes of the backup; the kernel asks for them (and, with
        // default_permissions, enforces them) only when the file system says it serves them.
        let _ = config.add_capabilities(InitFlags::FUSE_POSIX_ACL);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut st = self.state();
        let found = self.fill(&mut st, parent.0).and_then(|()| {
            let ino = st
                .table
                .child(parent.0, name.as_bytes())
                .ok_or(Errno::ENOENT)?;
            self.attr(&mut st, ino)
        });
        match found {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let mut st = self.state();
        match self.attr(&mut st, ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let st = self.state();
        match st.table.get(ino.0).map(|n| &n.body) {
            Some(Body::Link(t)) => reply.data(t),
            Some(Body::Entry(e)) if e.kind == EntryKind::Symlink => {
                reply.data(e.target.as_deref().unwrap_or_default())
            }
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let mut st = self.state();
        let opened = Self::entry(&st, ino.0).and_then(|e| {
            if e.kind != EntryKind::File {
                return Err(Errno::EISDIR);
            }
            let what = String::from_utf8_lossy(&e.path).into_owned();
            self.reader.open_file(e).map_err(|e| io_error(&what, &e))
        });
        match opened {
            Ok(cursor) => {
                let fh = st.next_fh;
                st.next_fh += 1;
                st.files.insert(fh, cursor);
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut st = self.state();
        let Some(cursor) = st.files.get_mut(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        match self.reader.read_at(cursor, offset, size as usize) {
            Ok(bytes) => reply.data(&bytes),
            Err(e) => reply.error(io_error("read", &e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.state().files.remove(&fh.0);
        reply.ok();
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut st = self.state();
        if let Err(e) = self.fill(&mut st, ino.0) {
            return reply.error(e);
        }
        let Some(node) = st.table.get(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let Some(kids) = node.children.as_ref() else {
            return reply.error(Errno::ENOTDIR);
        };
        let dots = [(ino.0, &b"."[..]), (node.parent, &b".."[..])];
        let all = dots
            .iter()
            .map(|(i, n)| (*i, *n))
            .chain(kids.iter().map(|(n, i)| (*i, n.as_slice())));
        for (k, (child, name)) in all.enumerate().skip(offset as usize) {
            let kind = st
                .table
                .get(child)
                .map_or(FileType::RegularFile, |n| n.attr.kind);
            if reply.add(INodeNo(child), k as u64 + 1, kind, OsStr::from_bytes(name)) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let files = self.state().table.nodes.len() as u64;
        reply.statfs(0, 0, 0, files, 0, 4096, 255, 4096);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let st = self.state();
        let found = Self::entry(&st, ino.0).and_then(|e| {
            e.xattrs
                .iter()
                .find(|x| x.name == name.as_bytes())
                .ok_or(Errno::ENODATA)
        });
        match found {
            Ok(x) => xattr_reply(reply, size, &x.value),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let st = self.state();
        let mut list = Vec::new();
        if let Ok(e) = Self::entry(&st, ino.0) {
            for x in &e.xattrs {
                list.extend_from_slice(&x.name);
                list.push(0);
            }
        }
        xattr_reply(reply, size, &list);
    }

    // Everything below would change the backup: refused.

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }
}
