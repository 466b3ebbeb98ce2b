//! Byte buffers handed back along a pipeline instead of freed.
//!
//! A chunk buffer of 1 MiB or more is mapped on its own by the allocator (`ibs::malloc`), so a
//! fresh one costs a page fault and a zeroed page for every 4 KiB, and freeing it unmaps it again.
//! A backup of 10 GiB made ~10 GiB of such pages twice over (the chunk's bytes, then its sealed
//! form): `clear_page_erms` alone was 5.7 % of the machine's CPU samples (`bench/README.md`,
//! "Buffers handed back"). Buffers that come back through a [`BufPool`] keep their pages.
//!
//! Only buffers for at least `min_len` bytes (the allocator's own mapping threshold) go through a
//! pool: a small chunk in a pooled buffer would hold that buffer's pages resident for a few bytes,
//! and every buffer in the pipeline's queues would become a large one.
//!
//! Invariants: a pool holds at most `slots` buffers, each of `min_len` to `max_capacity` bytes, so
//! the memory it keeps is bounded whatever passes through it; a buffer taken from it is empty.

/// A bounded free list of byte buffers shared by the threads of one pipeline (cheap to clone).
#[derive(Clone)]
pub(crate) struct BufPool {
    tx: crossbeam_channel::Sender<Vec<u8>>,
    rx: crossbeam_channel::Receiver<Vec<u8>>,
    min_len: usize,
    max_capacity: usize,
}

impl BufPool {
    pub(crate) fn new(slots: usize, min_len: usize, max_capacity: usize) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(slots);
        BufPool {
            tx,
            rx,
            min_len,
            max_capacity,
        }
    }

    /// An empty buffer for about `len` bytes: one given back earlier when `len` is at least the
    /// pool's `min_len`, else a new one.
    pub(crate) fn take_for(&self, len: usize) -> Vec<u8> {
        if len < self.min_len {
            return Vec::new();
        }
        self.rx.try_recv().unwrap_or_default()
    }

    /// A buffer holding a copy of `data`.
    pub(crate) fn copy_of(&self, data: &[u8]) -> Vec<u8> {
        let mut v = self.take_for(data.len());
        v.extend_from_slice(data);
        v
    }

    /// Keeps `buf` for a later [`BufPool::take_for`], unless the pool is full or `buf` is outside
    /// the pool's sizes.
    pub(crate) fn give(&self, mut buf: Vec<u8>) {
        if (self.min_len..=self.max_capacity).contains(&buf.capacity()) {
            buf.clear();
            let _ = self.tx.try_send(buf);
        }
    }

    /// Buffers held now.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.rx.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_taken_again_empty_with_its_memory() {
        let pool = BufPool::new(2, 1000, 1 << 20);
        let b = pool.copy_of(&[7u8; 1000]);
        assert_eq!(b.len(), 1000);
        let (ptr, cap) = (b.as_ptr(), b.capacity());
        pool.give(b);
        let again = pool.take_for(1000);
        assert!(again.is_empty());
        assert_eq!((again.as_ptr(), again.capacity()), (ptr, cap));
    }

    #[test]
    fn the_pool_keeps_at_most_its_slots_and_only_buffers_within_its_sizes() {
        let pool = BufPool::new(2, 100, 4096);
        for _ in 0..5 {
            pool.give(Vec::with_capacity(100));
        }
        assert_eq!(pool.held(), 2);
        // A small request never takes a pooled buffer.
        assert_eq!(pool.copy_of(&[1u8; 10]).capacity(), 10);
        assert_eq!(pool.held(), 2);
        let _ = (pool.take_for(100), pool.take_for(100));
        pool.give(Vec::with_capacity(8192));
        pool.give(Vec::with_capacity(99));
        pool.give(Vec::new());
        assert_eq!(pool.held(), 0);
        assert_eq!(pool.take_for(100).capacity(), 0);
    }
}
