//! Content-defined chunking over a byte stream fed in pieces. FastCDC 2020 decides every cut from the
//! data after the previous cut only, so cutting a buffer, keeping the unfinished tail and continuing
//! gives exactly the cuts of one pass over the whole stream. A chunk is emitted only once at least
//! `max_size` bytes follow its start (or the stream ended), so every cut had the full look-ahead.

use fastcdc::v2020::{cut, select_masks, Normalization};
use ibs_repo::config::ChunkerParams;

pub struct Chunker {
    /// Working buffer; bytes `start..end` are pending. Allocated once, then reused for every file
    /// of a source, so reading costs no allocation and no zero-fill; its pages become resident as
    /// they are first written (only the first few for a source of small files).
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Room kept beyond `max` pending bytes: the buffer is `max + room` plus the largest read.
    room: usize,
    min: u32,
    avg: u32,
    max: u32,
    /// FastCDC's normalisation masks (level 1, as `FastCDC::new` uses), computed once.
    mask_s: u64,
    mask_l: u64,
}

impl Chunker {
    /// A chunker for file data: room for `max` bytes beyond the pending ones, so pending bytes
    /// are moved to the front at most once per `max` bytes read.
    pub fn new(p: &ChunkerParams) -> Self {
        Self::with_room(p, p.max_size as usize)
    }

    /// A chunker for a tree stream, fed a line at a time: a smaller buffer (`max` plus 1 MiB),
    /// whose pending bytes are moved more often, which costs little at the tree's rate.
    pub fn for_lines(p: &ChunkerParams) -> Self {
        Self::with_room(p, 1 << 20)
    }

    fn with_room(p: &ChunkerParams, room: usize) -> Self {
        let (mask_s, mask_l) = select_masks(p.avg_size as usize, Normalization::Level1);
        Chunker {
            mask_s,
            mask_l,
            buf: Vec::new(),
            start: 0,
            end: 0,
            room,
            min: p.min_size,
            avg: p.avg_size,
            max: p.max_size,
        }
    }

    /// Forgets pending bytes (the buffer is kept for the next stream).
    pub fn reset(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Bytes buffered but not yet emitted.
    pub fn pending(&self) -> usize {
        self.end - self.start
    }

    /// Makes room for `want` more bytes after the pending ones.
    fn reserve(&mut self, want: usize) {
        if self.end + want <= self.buf.len() {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end + want > self.buf.len() {
            let size = (self.end + want).max(self.max as usize + self.room + want);
            // Zeroed by the allocator (fresh pages, mapped on first touch), not written here: a
            // chunker that only ever sees small files keeps only its first pages resident.
            let mut buf = vec![0u8; size];
            buf[..self.end].copy_from_slice(&self.buf[..self.end]);
            self.buf = buf;
        }
    }

    /// The buffer to read up to `want` new bytes into; call [`Chunker::filled`] with the count read.
    pub fn spare(&mut self, want: usize) -> &mut [u8] {
        self.reserve(want);
        &mut self.buf[self.end..self.end + want]
    }

    /// Accounts for `n` bytes written into the slice returned by `spare`.
    pub fn filled(&mut self, n: usize) {
        self.end += n;
    }

    pub fn push(&mut self, data: &[u8]) {
        self.reserve(data.len());
        self.buf[self.end..self.end + data.len()].copy_from_slice(data);
        self.end += data.len();
    }

    /// Emits every chunk that is final. With `end`, emits the rest too.
    ///
    /// A cut is final once `max` bytes follow the chunk's start (FastCDC never looks further), so
    /// each cut is computed exactly once: nothing is scanned and then thrown away for want of
    /// look-ahead.
    pub fn drain(&mut self, end: bool, mut emit: impl FnMut(&[u8])) {
        let (min, avg, max) = (self.min as usize, self.avg as usize, self.max as usize);
        while self.start < self.end {
            let pending = &self.buf[self.start..self.end];
            if !end && pending.len() < max {
                break;
            }
            let (_, n) = cut(
                pending,
                min,
                avg,
                max,
                self.mask_s,
                self.mask_l,
                self.mask_s << 1,
                self.mask_l << 1,
            );
            emit(&pending[..n]);
            self.start += n;
        }
        if self.start == self.end {
            self.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastcdc::v2020::FastCDC;

    fn data(n: usize) -> Vec<u8> {
        let mut x = 0x1234_5678_u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn streaming_cuts_equal_one_pass_cuts() {
        let p = ChunkerParams {
            min_size: 64 << 10,
            avg_size: 256 << 10,
            max_size: 1 << 20,
            ..ChunkerParams::default()
        };
        let d = data(7_654_321);
        let whole: Vec<usize> = FastCDC::new(
            &d,
            p.min_size as usize,
            p.avg_size as usize,
            p.max_size as usize,
        )
        .map(|c| c.length)
        .collect();
        // The tree stream's smaller buffer moves pending bytes more often: the same cuts.
        for (piece, lines) in [
            (1000, false),
            (65536, false),
            (3 << 20, false),
            (100, true),
            (3 << 20, true),
        ] {
            let mut ch = if lines {
                Chunker::for_lines(&p)
            } else {
                Chunker::new(&p)
            };
            let mut got = Vec::new();
            for part in d.chunks(piece) {
                ch.push(part);
                ch.drain(false, |c| got.push(c.len()));
            }
            ch.drain(true, |c| got.push(c.len()));
            assert_eq!(got, whole, "piece size {piece}, lines {lines}");
            // The same chunker, reused through spare/filled, cuts a second stream identically.
            ch.reset();
            let mut again = Vec::new();
            for part in d.chunks(piece) {
                ch.spare(part.len()).copy_from_slice(part);
                ch.filled(part.len());
                ch.drain(false, |c| again.push(c.len()));
            }
            ch.drain(true, |c| again.push(c.len()));
            assert_eq!(again, whole, "reused, piece size {piece}");
            assert_eq!(ch.pending(), 0);
        }
    }
}
