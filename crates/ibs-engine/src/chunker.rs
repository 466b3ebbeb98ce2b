//! Content-defined chunking over a byte stream fed in pieces. FastCDC 2020 decides every cut from the
//! data after the previous cut only, so cutting a buffer, keeping the unfinished tail and continuing
//! gives exactly the cuts of one pass over the whole stream. A chunk is emitted only once at least
//! `max_size` bytes follow its start (or the stream ended), so every cut had the full look-ahead.

use fastcdc::v2020::FastCDC;
use ibs_repo::config::ChunkerParams;

pub struct Chunker {
    buf: Vec<u8>,
    min: u32,
    avg: u32,
    max: u32,
}

impl Chunker {
    pub fn new(p: &ChunkerParams) -> Self {
        Chunker {
            buf: Vec::with_capacity(2 * p.max_size as usize),
            min: p.min_size,
            avg: p.avg_size,
            max: p.max_size,
        }
    }

    /// Bytes buffered but not yet emitted.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The buffer to read new data into; call [`Chunker::push_filled`] with the count read.
    pub fn spare(&mut self, want: usize) -> &mut [u8] {
        let len = self.buf.len();
        self.buf.resize(len + want, 0);
        &mut self.buf[len..]
    }

    /// Accounts for `filled` bytes written into the slice returned by `spare(want)`.
    pub fn push_filled(&mut self, want: usize, filled: usize) {
        let len = self.buf.len();
        self.buf.truncate(len - want + filled);
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Emits every chunk that is final. With `end`, emits the rest too.
    pub fn drain(&mut self, end: bool, mut emit: impl FnMut(&[u8])) {
        let max = self.max as usize;
        if !end && self.buf.len() < 2 * max {
            return;
        }
        let mut consumed = 0;
        for c in FastCDC::new(
            &self.buf,
            self.min as usize,
            self.avg as usize,
            self.max as usize,
        ) {
            if !end && c.offset + max > self.buf.len() {
                break;
            }
            emit(&self.buf[c.offset..c.offset + c.length]);
            consumed = c.offset + c.length;
        }
        self.buf.drain(..consumed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for piece in [1000, 65536, 3 << 20] {
            let mut ch = Chunker::new(&p);
            let mut got = Vec::new();
            for part in d.chunks(piece) {
                ch.push(part);
                ch.drain(false, |c| got.push(c.len()));
            }
            ch.drain(true, |c| got.push(c.len()));
            assert_eq!(got, whole, "piece size {piece}");
        }
    }
}
