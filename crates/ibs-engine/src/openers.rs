//! A pool of chunk openers that keep their buffers ([`ChunkOpener::reusing`]), shared by the
//! workers of a restore or a check.
//!
//! An opener that drops its buffers between chunks decompresses every large chunk into freshly
//! mapped memory (above glibc's mmap threshold, fixed at 1 MiB by the binary): a page fault per
//! 4 KiB written and an unmap per chunk, with the workers contending for the process's mmap lock.
//! One reusing opener per worker would instead keep up to two of the largest chunk per worker,
//! and a restore from remote storage runs many workers that mostly wait for range reads. The pool
//! keeps reusing openers for the few workers opening chunks at any moment; with a cap, a worker
//! waits for one of them, so the buffers kept are bounded by the cap, not the worker count.
//!
//! Invariant for callers: an opener is held only while opening chunks and handing their plaintext
//! on, never while waiting for anything the other holders may need (a read budget, a queue), so
//! waiting for an opener cannot close a circle.

use ibs_repo::chunk::ChunkOpener;
use std::sync::{Condvar, Mutex};

pub(crate) struct OpenerPool {
    state: Mutex<State>,
    freed: Condvar,
    /// The most openers out at once; `None` for no bound (the caller bounds its concurrency).
    cap: Option<usize>,
}

#[derive(Default)]
struct State {
    spare: Vec<ChunkOpener>,
    out: usize,
}

impl OpenerPool {
    /// A pool handing out at most `cap` openers at once (`None`: as many as are asked for).
    pub(crate) fn new(cap: Option<usize>) -> Self {
        OpenerPool {
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
            cap: cap.map(|c| c.max(1)),
        }
    }

    /// An opener, kept by the pool again when the lease is dropped. Blocks while `cap` are out.
    pub(crate) fn lease(&self) -> Lease<'_> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while self.cap.is_some_and(|cap| st.out >= cap) {
            st = self.freed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.out += 1;
        let opener = st.spare.pop().unwrap_or_else(ChunkOpener::reusing);
        Lease {
            pool: self,
            opener: Some(opener),
        }
    }

    /// Openers currently kept or out (for tests).
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let st = self.state.lock().unwrap();
        (st.spare.len(), st.out)
    }
}

/// An opener leased from an [`OpenerPool`].
pub(crate) struct Lease<'a> {
    pool: &'a OpenerPool,
    opener: Option<ChunkOpener>,
}

impl std::ops::Deref for Lease<'_> {
    type Target = ChunkOpener;
    fn deref(&self) -> &ChunkOpener {
        self.opener
            .as_ref()
            .expect("a lease holds its opener until dropped")
    }
}

impl std::ops::DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut ChunkOpener {
        self.opener
            .as_mut()
            .expect("a lease holds its opener until dropped")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut st = self.pool.state.lock().unwrap_or_else(|p| p.into_inner());
        st.out -= 1;
        if let Some(o) = self.opener.take() {
            st.spare.push(o);
        }
        drop(st);
        self.pool.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn openers_are_kept_and_handed_out_again() {
        let pool = OpenerPool::new(None);
        {
            let _a = pool.lease();
            let _b = pool.lease();
            assert_eq!(pool.counts(), (0, 2));
        }
        assert_eq!(pool.counts(), (2, 0));
        let _c = pool.lease();
        assert_eq!(
            pool.counts(),
            (1, 1),
            "a kept opener is reused, not a new one made"
        );
    }

    #[test]
    fn a_capped_pool_never_has_more_than_cap_out() {
        let pool = Arc::new(OpenerPool::new(Some(2)));
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (pool, now, most) = (pool.clone(), now.clone(), most.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let _l = pool.lease();
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        std::thread::yield_now();
                        now.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let most = most.load(Ordering::SeqCst);
        assert!(most <= 2, "{most} openers out at once with a cap of 2");
        let (spare, out) = pool.counts();
        assert_eq!(out, 0);
        assert!(spare <= 2, "{spare} openers kept with a cap of 2");
    }

    #[test]
    fn a_lease_beyond_the_cap_waits_for_one_to_be_dropped() {
        let pool = Arc::new(OpenerPool::new(Some(2)));
        let (a, b) = (pool.lease(), pool.lease());
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let pool = pool.clone();
            std::thread::spawn(move || {
                let _c = pool.lease();
                tx.send(()).unwrap();
            })
        };
        let waited = rx.recv_timeout(std::time::Duration::from_millis(200));
        assert!(
            waited.is_err(),
            "a third lease was granted with two of two out"
        );
        drop(a);
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the third lease is granted once one is dropped");
        waiter.join().unwrap();
        drop(b);
        assert_eq!(pool.counts(), (2, 0));
    }
}
