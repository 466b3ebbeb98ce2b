//! The byte budget of a backup's pipeline: how many bytes of chunks may be between the producer
//! and the packer at once (queued for sealing, being sealed, or sealed and queued for the packer).
//!
//! The queues between the stages are deep in items, so that runs of small chunks (small files,
//! the tree stream) or runs of chunks the repository already has (sent nowhere) do not leave the
//! sealers waiting on the reader or the reader on the sealers; this budget bounds their bytes, so
//! a run of large chunks cannot hold more memory than it.
//!
//! The budget counts what is held: a chunk's plaintext until it is sealed, then its sealed bytes
//! (at most the plaintext's length: [`held_once_sealed`]). The sealing thread gives back the
//! difference as soon as it has sealed a chunk, and the packer the rest when the chunk reaches it,
//! so a run of well-compressing chunks (dumps, logs) lets more of them be in flight.
//!
//! Invariants: every byte taken is given back exactly once (the producer takes a chunk's
//! plaintext length, which is the sealed chunk's `raw_length`; the sealing thread gives back
//! `raw_length - held_once_sealed`, the packer `held_once_sealed`); a chunk larger than the whole
//! budget is let through when nothing else is in flight, so no chunk waits forever; once closed (a
//! sealing thread or the packer ended), nothing waits again and [`ByteBudget::take`] says so, which
//! the producer treats like a closed queue.

use std::sync::{Arc, Condvar, Mutex};

/// Bytes of chunks in flight between the producer and the packer: plaintext until sealed, then
/// sealed bytes.
pub(crate) const PIPELINE_BYTES: u64 = 16 << 20;

/// Items each queue of the pipeline holds at most (the byte budget is the tighter bound for
/// chunks over [`PIPELINE_BYTES`] / this).
pub(crate) const QUEUE_ITEMS: usize = 64;

/// Of a chunk of `raw` plaintext bytes sealed into `sealed` bytes, what the budget still counts
/// once it is sealed: its sealed bytes, or its plaintext length when sealing made it larger (a
/// chunk stored raw gains a nonce and a tag), so that nothing is given back twice.
pub(crate) fn held_once_sealed(raw: u32, sealed: usize) -> u64 {
    (raw as u64).min(sealed as u64)
}

#[derive(Default)]
struct State {
    used: u64,
    closed: bool,
}

pub(crate) struct ByteBudget {
    cap: u64,
    state: Mutex<State>,
    freed: Condvar,
}

impl ByteBudget {
    pub(crate) fn new(cap: u64) -> Arc<Self> {
        Arc::new(ByteBudget {
            cap,
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
        })
    }

    /// Waits until `n` bytes fit (or nothing else is in flight) and takes them. False once the
    /// budget is closed: the stages downstream are gone and nothing more can be sent.
    pub(crate) fn take(&self, n: u64) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while !st.closed && st.used > 0 && st.used + n > self.cap {
            st = self.freed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        if st.closed {
            return false;
        }
        st.used += n;
        true
    }

    /// Gives back `n` bytes taken before.
    pub(crate) fn give(&self, n: u64) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.used = st.used.saturating_sub(n);
        drop(st);
        self.freed.notify_all();
    }

    pub(crate) fn close(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        self.freed.notify_all();
    }

    /// Closes the budget when dropped: held by each stage downstream of the producer, so that a
    /// stage that ends (finished, failed or panicked) never leaves the producer waiting.
    pub(crate) fn closer(self: &Arc<Self>) -> CloseOnDrop {
        CloseOnDrop(self.clone())
    }
}

pub(crate) struct CloseOnDrop(Arc<ByteBudget>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_take_waits_until_enough_is_given_back() {
        let b = ByteBudget::new(10);
        assert!(b.take(6));
        let b2 = b.clone();
        let waiter = std::thread::spawn(move || b2.take(6));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!waiter.is_finished(), "6 + 6 bytes exceed a budget of 10");
        b.give(6);
        assert!(waiter.join().unwrap());
        assert_eq!(b.state.lock().unwrap().used, 6);
    }

    #[test]
    fn a_chunk_larger_than_the_budget_passes_alone() {
        let b = ByteBudget::new(10);
        assert!(
            b.take(25),
            "nothing in flight: a large chunk must not wait forever"
        );
        let b2 = b.clone();
        let waiter = std::thread::spawn(move || b2.take(1));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!waiter.is_finished());
        b.give(25);
        assert!(waiter.join().unwrap());
    }

    #[test]
    fn what_is_held_once_sealed_never_exceeds_what_was_taken() {
        assert_eq!(
            held_once_sealed(1000, 300),
            300,
            "compressed: the sealed bytes"
        );
        assert_eq!(
            held_once_sealed(1000, 1028),
            1000,
            "stored raw: no more than taken"
        );
        assert_eq!(held_once_sealed(0, 28), 0);
    }

    #[test]
    fn a_stage_that_ends_releases_a_waiting_producer() {
        let b = ByteBudget::new(10);
        assert!(b.take(10));
        let closer = b.closer();
        let b2 = b.clone();
        let waiter = std::thread::spawn(move || b2.take(5));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!waiter.is_finished());
        drop(closer);
        assert!(!waiter.join().unwrap(), "a closed budget refuses the take");
        assert!(!b.take(1));
    }
}
