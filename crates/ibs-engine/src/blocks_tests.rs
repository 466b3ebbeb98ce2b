use super::*;
use ibs_repo::ids::KeyId;
use ibs_repo::pack::encoding;
use std::sync::atomic::AtomicU64;

const B: u64 = 1000;

fn loc(offset: u32, length: u32) -> ChunkLocation {
    ChunkLocation {
        pack: PackId([7; PackId::LEN]),
        offset,
        length,
        raw_length: length,
        encoding: encoding::RAW,
        key_id: KeyId([0; KeyId::LEN]),
    }
}

/// A pack of `len` bytes whose every byte differs from its neighbours', and the reads made of it
/// (offset and length each).
struct Pack {
    bytes: Bytes,
    reads: Mutex<Vec<(u64, u64)>>,
    fail: AtomicU64,
}

impl Pack {
    fn new(len: usize) -> Self {
        Pack {
            bytes: (0..len).map(|i| (i * 7 % 251) as u8).collect(),
            reads: Mutex::new(Vec::new()),
            fail: AtomicU64::new(0),
        }
    }

    /// Reads exactly, after yielding so that concurrent callers overlap; the next `fail` reads fail.
    async fn read(&self, offset: u64, len: u64) -> Result<Bytes, Miss> {
        self.reads.lock().unwrap().push((offset, len));
        tokio::task::yield_now().await;
        if self
            .fail
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(Miss::Failed("injected".into()));
        }
        Ok(self
            .bytes
            .slice(offset as usize..(offset + len).min(self.bytes.len() as u64) as usize))
    }

    fn want(&self, locs: &[ChunkLocation]) -> Vec<Bytes> {
        locs.iter()
            .map(|l| {
                self.bytes
                    .slice(l.offset as usize..(l.offset + l.length) as usize)
            })
            .collect()
    }

    fn reads(&self) -> Vec<(u64, u64)> {
        self.reads.lock().unwrap().clone()
    }
}

async fn span(
    blocks: &PackBlocks,
    pack: &Pack,
    locs: &[ChunkLocation],
) -> Result<Vec<Bytes>, Miss> {
    let len = pack.bytes.len() as u64;
    blocks.span(locs, len, |o, n| pack.read(o, n)).await
}

#[tokio::test]
async fn chunks_of_one_block_wanted_apart_are_read_with_one_block_read() {
    let (blocks, pack) = (PackBlocks::with_sizes(B, 10 * B), Pack::new(3500));
    let a = [loc(10, 100), loc(300, 50)];
    let b = [loc(600, 200)];
    assert_eq!(span(&blocks, &pack, &a).await.unwrap(), pack.want(&a));
    assert_eq!(span(&blocks, &pack, &b).await.unwrap(), pack.want(&b));
    assert_eq!(pack.reads(), vec![(0, B)]);
    assert_eq!(blocks.reads(), 1);
}

#[tokio::test]
async fn a_chunk_across_blocks_is_assembled_and_the_last_block_ends_with_the_pack() {
    let (blocks, pack) = (PackBlocks::with_sizes(B, 10 * B), Pack::new(3500));
    let locs = [loc(900, 250), loc(1150, 2300), loc(3450, 50)];
    assert_eq!(span(&blocks, &pack, &locs).await.unwrap(), pack.want(&locs));
    let mut reads = pack.reads();
    reads.sort();
    assert_eq!(reads, vec![(0, B), (B, B), (2 * B, B), (3 * B, 500)]);
}

#[tokio::test]
async fn workers_wanting_one_block_at_once_share_a_single_read() {
    let (blocks, pack) = (PackBlocks::with_sizes(B, 10 * B), Pack::new(3500));
    let spans: Vec<[ChunkLocation; 1]> = (0..8).map(|i| [loc(1000 + i * 100, 90)]).collect();
    let got = futures::future::join_all(spans.iter().map(|s| span(&blocks, &pack, s))).await;
    for (s, g) in spans.iter().zip(got) {
        assert_eq!(g.unwrap(), pack.want(s));
    }
    assert_eq!(pack.reads(), vec![(B, B)]);
}

#[tokio::test]
async fn a_storage_failure_fails_every_want_of_that_block_without_reading_it_again() {
    let (blocks, pack) = (PackBlocks::with_sizes(B, 10 * B), Pack::new(3500));
    pack.fail.store(1, Ordering::Relaxed);
    // Eight workers want block 0 at once: one read, and it fails for all of them.
    let spans: Vec<[ChunkLocation; 1]> = (0..8).map(|i| [loc(i * 100, 90)]).collect();
    let got = futures::future::join_all(spans.iter().map(|s| span(&blocks, &pack, s))).await;
    let failed = Err(Miss::Failed("injected".into()));
    assert!(got.iter().all(|g| *g == failed), "{got:?}");
    // Later wants fail at once with the storage's error; other blocks still work.
    assert_eq!(span(&blocks, &pack, &[loc(10, 100)]).await, failed);
    let other = [loc(1010, 100)];
    assert_eq!(
        span(&blocks, &pack, &other).await.unwrap(),
        pack.want(&other)
    );
    assert_eq!(pack.reads(), vec![(0, B), (B, B)]);
}

#[tokio::test]
async fn a_short_read_or_a_chunk_past_the_indexed_end_says_to_read_the_chunks_alone() {
    let blocks = PackBlocks::with_sizes(B, 10 * B);
    // The index says 3,500 bytes, the stored pack has 2,500: the last block comes back short.
    let pack = Pack::new(2500);
    let short = [loc(2100, 300)];
    let got = blocks.span(&short, 3500, |o, n| pack.read(o, n)).await;
    assert_eq!(got, Err(Miss::ReadAlone));
    // A chunk ending past the indexed length is not read at all.
    let before = pack.reads().len();
    let got = blocks
        .span(&[loc(3400, 200)], 3500, |o, n| pack.read(o, n))
        .await;
    assert_eq!(got, Err(Miss::ReadAlone));
    assert_eq!(pack.reads().len(), before);
}

#[tokio::test]
async fn kept_blocks_stay_within_capacity_least_recently_wanted_leaving_first() {
    let (blocks, pack) = (PackBlocks::with_sizes(B, 2 * B), Pack::new(5000));
    for k in [0u32, 1, 0, 2] {
        let l = [loc(k * 1000 + 5, 10)];
        assert_eq!(span(&blocks, &pack, &l).await.unwrap(), pack.want(&l));
    }
    assert!(blocks.lock().bytes <= 2 * B);
    // Block 1 was wanted least recently and left; 0 and 2 are kept.
    for k in [0u32, 2, 1] {
        span(&blocks, &pack, &[loc(k * 1000 + 50, 10)])
            .await
            .unwrap();
    }
    let reads: Vec<u64> = pack.reads().iter().map(|r| r.0 / B).collect();
    assert_eq!(reads, vec![0, 1, 2, 1]);
}

#[tokio::test]
async fn a_small_chunk_is_copied_out_and_a_large_one_shares_its_block() {
    let (blocks, pack) = (PackBlocks::with_sizes(B, 10 * B), Pack::new(3500));
    let got = span(&blocks, &pack, &[loc(0, 100), loc(100, 600)])
        .await
        .unwrap();
    let block = blocks.lock().blocks[&(PackId([7; PackId::LEN]), 0)]
        .cell
        .get()
        .cloned()
        .expect("block 0 was read")
        .expect("block 0 was read whole");
    let inside = |b: &Bytes| {
        let (p, s) = (b.as_ptr() as usize, block.as_ptr() as usize);
        p >= s && p < s + block.len()
    };
    assert!(
        !inside(&got[0]),
        "a 100-byte chunk keeps its 1,000-byte block alive"
    );
    assert!(inside(&got[1]), "a 600-byte chunk was copied");
}

#[test]
fn more_workers_keep_more_blocks_between_the_floor_and_the_ceiling() {
    assert_eq!(PackBlocks::for_workers(2).capacity, CAPACITY);
    assert_eq!(PackBlocks::for_workers(8).capacity, CAPACITY.max(8 * BLOCK));
    assert_eq!(PackBlocks::for_workers(24).capacity, 24 * BLOCK);
    // `--threads 100000` does not make the blocks kept grow with it.
    assert_eq!(PackBlocks::for_workers(100_000).capacity, CAPACITY_MAX);
    assert_eq!(PackBlocks::for_workers(usize::MAX).capacity, CAPACITY_MAX);
}
