//! `ReadHandles`: open read handles kept between ranged reads of the same object.
//!
//! A restore or a `check --pfx` reads a pack chunk by chunk. Without a cache every chunk costs a
//! CREATE, a READ and a CLOSE; with it, one READ. Repository objects are immutable once published
//! (a pack's name is the hash of its bytes), so a handle stays valid for as long as the object lives.
//!
//! Invariants:
//! - A cached handle belongs to the session it was opened on; it is used only while that session is
//!   the current live one, so a reconnect never reuses a dead handle.
//! - At most [`CAPACITY`] handles are open; the least recently used one goes first. A handle is
//!   closed when its last user drops it (a reader in the middle of a READ keeps it open).
//! - Before `delete` or `put` of a path, its handle is taken out and closed first (awaited when
//!   no read is using it), so this process never keeps a name it is replacing in delete-pending
//!   state.
//! - Handles are opened with full sharing (read, write, delete): another process can still delete
//!   or rename the object; an idle handle is dropped after [`IDLE`].

use crate::error::SmbResult;
use crate::messages::FileId;
use crate::session::Session;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most handles kept open at once.
pub const CAPACITY: usize = 16;
/// An unused handle is closed at the next access after this long.
pub const IDLE: Duration = Duration::from_secs(20);

/// One open read handle.
#[derive(Debug)]
pub struct ReadHandle {
    /// `None` once closed explicitly (then Drop has nothing to do).
    session: Option<Arc<Session>>,
    pub file_id: FileId,
    pub end_of_file: u64,
}

impl Drop for ReadHandle {
    fn drop(&mut self) {
        // Closing is a network round trip; do it in the background when a runtime is around. Without
        // one, the server closes the handle with the session.
        let Some(s) = self.session.take() else {
            return;
        };
        if !s.is_alive() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let id = self.file_id;
            rt.spawn(async move {
                if let Err(e) = s.close(id).await {
                    tracing::debug!(error = %e, "closing a cached read handle failed");
                }
            });
        }
    }
}

struct Entry {
    path: String,
    handle: Arc<ReadHandle>,
    used: Instant,
}

/// The cache; see the module doc.
#[derive(Default)]
pub struct ReadHandles {
    entries: Mutex<Vec<Entry>>,
}

impl std::fmt::Debug for ReadHandles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadHandles")
            .field("open", &self.len())
            .finish()
    }
}

impl ReadHandles {
    /// Handles currently cached.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached handle of `path` on session `s`, or a new one from `open`.
    pub async fn get_or_open<F, Fut>(
        &self,
        s: &Arc<Session>,
        path: &str,
        open: F,
    ) -> SmbResult<Arc<ReadHandle>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = SmbResult<(FileId, u64)>>,
    {
        let now = Instant::now();
        let dropped: Vec<Entry>;
        {
            let mut e = self.lock();
            // Entries of another (dead or replaced) session, and idle ones, go.
            let (keep, old): (Vec<Entry>, Vec<Entry>) = e.drain(..).partition(|x| {
                x.handle.session.as_ref().is_some_and(|h| Arc::ptr_eq(h, s))
                    && now.duration_since(x.used) < IDLE
            });
            *e = keep;
            dropped = old;
            if let Some(x) = e.iter_mut().find(|x| x.path == path) {
                x.used = now;
                return Ok(x.handle.clone());
            }
        }
        drop(dropped);
        let (file_id, end_of_file) = open().await?;
        let handle = Arc::new(ReadHandle {
            session: Some(s.clone()),
            file_id,
            end_of_file,
        });
        let evicted = {
            let mut e = self.lock();
            if let Some(x) = e.iter_mut().find(|x| x.path == path) {
                // Another reader opened it meanwhile: use theirs, ours closes on drop.
                x.used = now;
                return Ok(x.handle.clone());
            }
            e.push(Entry {
                path: path.to_owned(),
                handle: handle.clone(),
                used: now,
            });
            if e.len() > CAPACITY {
                let oldest = e
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, x)| x.used)
                    .map(|(i, _)| i)
                    .unwrap_or(0);
                Some(e.swap_remove(oldest))
            } else {
                None
            }
        };
        drop(evicted);
        Ok(handle)
    }

    /// Takes the handle of `path` out of the cache and closes it (awaited when no read holds it).
    pub async fn forget(&self, path: &str) {
        let taken = {
            let mut e = self.lock();
            e.iter()
                .position(|x| x.path == path)
                .map(|i| e.swap_remove(i))
        };
        if let Some(x) = taken {
            if let Ok(mut h) = Arc::try_unwrap(x.handle) {
                // Closed here and awaited; Drop then finds no session and does nothing.
                let s = h.session.take();
                if let Some(s) = s.filter(|s| s.is_alive()) {
                    if let Err(e) = s.close(h.file_id).await {
                        tracing::debug!(error = %e, "closing a cached read handle failed");
                    }
                }
            }
        }
    }

    /// Closes every cached handle (in the background).
    pub fn clear(&self) {
        let all: Vec<Entry> = self.lock().drain(..).collect();
        drop(all);
    }
}
