//! Buffers of large reads, kept for the next read once the last `Bytes` over them is dropped.
//!
//! A whole-pack read (prune's repack, `check --read-data`) fills a fresh buffer of up to a pack's
//! size. Above glibc's mmap threshold (fixed at 1 MiB by the binary) a fresh buffer is a fresh
//! mapping, and the kernel's copy into it faults in every 4 KiB page: about half of prune's CPU
//! samples at the 60 k bench point went to those copies and faults. A [`Recycler`] hands such a
//! buffer back when the last `Bytes` over it is dropped, so the next read lands in pages already
//! mapped.
//!
//! Invariant: a recycler keeps at most [`KEEP`] spare buffers of at most [`KEEP_MAX`] bytes each.
//! What it keeps is bounded, and a buffer that is still referenced is never handed out.

use bytes::Bytes;
use std::sync::{Arc, Mutex, Weak};

/// Reads of fewer bytes than this use the allocator as usual (its heap reuses them cheaply).
pub(crate) const MIN: usize = 1 << 20;
/// Spare buffers kept.
const KEEP: usize = 2;
/// Buffers with more capacity than this are freed, not kept.
const KEEP_MAX: usize = 32 << 20;

#[derive(Debug, Default)]
pub(crate) struct Recycler {
    spare: Mutex<Vec<Vec<u8>>>,
}

impl Recycler {
    /// An empty buffer with room for `len` bytes: a kept one when there is one, else a new one.
    pub(crate) fn buffer(&self, len: usize) -> Vec<u8> {
        if len < MIN {
            return Vec::with_capacity(len);
        }
        let kept = {
            let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
            // The smallest kept buffer that is large enough, else any.
            let fit = (0..spare.len())
                .filter(|&i| spare[i].capacity() >= len)
                .min_by_key(|&i| spare[i].capacity());
            match fit {
                Some(i) => Some(spare.swap_remove(i)),
                None => spare.pop(),
            }
        };
        let mut buf = kept.unwrap_or_default();
        buf.clear();
        buf.reserve_exact(len);
        buf
    }

    /// `buf` as `Bytes`; a buffer of at least [`MIN`] bytes' capacity comes back to `this` when the
    /// last `Bytes` over it is dropped (if `this` still exists).
    pub(crate) fn bytes(this: &Arc<Recycler>, buf: Vec<u8>) -> Bytes {
        if buf.capacity() < MIN {
            return Bytes::from(buf);
        }
        Bytes::from_owner(Owned {
            buf,
            home: Arc::downgrade(this),
        })
    }

    fn give_back(&self, buf: Vec<u8>) {
        if buf.capacity() > KEEP_MAX {
            return;
        }
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < KEEP {
            spare.push(buf);
        }
    }

    #[cfg(test)]
    fn kept(&self) -> usize {
        self.spare.lock().unwrap().len()
    }
}

/// A read's buffer behind `Bytes`, handed back to its recycler on drop.
struct Owned {
    buf: Vec<u8>,
    home: Weak<Recycler>,
}

impl AsRef<[u8]> for Owned {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if let Some(home) = self.home.upgrade() {
            home.give_back(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(r: &Recycler, len: usize, byte: u8) -> Vec<u8> {
        let mut b = r.buffer(len);
        b.resize(len, byte);
        b
    }

    #[test]
    fn a_large_buffer_is_reused_once_every_slice_is_dropped() {
        let r = Arc::new(Recycler::default());
        let first = Recycler::bytes(&r, filled(&r, 2 << 20, 1));
        let at = first.as_ptr();
        let slice = first.slice(10..20);
        drop(first);
        assert_eq!(r.kept(), 0, "a slice still holds the buffer");
        let other = r.buffer(2 << 20);
        assert_ne!(
            other.as_ptr(),
            at,
            "a buffer still referenced was handed out"
        );
        drop(other);
        assert_eq!(&slice[..], &[1u8; 10]);
        drop(slice);
        assert_eq!(r.kept(), 1);
        let again = r.buffer(2 << 20);
        assert_eq!(again.as_ptr(), at, "the kept buffer is handed out again");
        assert!(again.is_empty(), "a handed-out buffer starts empty");
    }

    #[test]
    fn small_and_huge_buffers_are_not_kept_and_at_most_two_are() {
        let r = Arc::new(Recycler::default());
        drop(Recycler::bytes(&r, filled(&r, 1000, 0)));
        drop(Recycler::bytes(&r, filled(&r, KEEP_MAX + 1, 0)));
        assert_eq!(r.kept(), 0);
        let held: Vec<Bytes> = (0..4)
            .map(|i| Recycler::bytes(&r, filled(&r, MIN + i, 0)))
            .collect();
        drop(held);
        assert_eq!(r.kept(), KEEP);
    }

    #[test]
    fn a_buffer_outliving_its_recycler_is_freed() {
        let r = Arc::new(Recycler::default());
        let b = Recycler::bytes(&r, filled(&r, 2 << 20, 7));
        drop(r);
        assert_eq!(b[0], 7);
        drop(b);
    }
}
