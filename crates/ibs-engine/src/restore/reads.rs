//! How a restore reads its chunks ([`Reads`], from the storage's capabilities) and the sizes that
//! follow from it: file workers, shared chunk openers, and the read budget.

/// How a restore reads its chunks, from the storage's capabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reads {
    /// A local folder: each worker reads its chunks one by one on its own thread.
    Local,
    /// A share (SMB): each worker's adjacent chunks of a pack coalesced into range reads, small
    /// files in batches (ADR 0041).
    Ranges,
    /// An object store, where a request costs far more than its bytes: workers cut their chunks
    /// from shared pack blocks ([`PackBlocks`](crate::blocks::PackBlocks), ADR 0056).
    Blocks,
}

impl Reads {
    pub(super) fn of(c: ibs_storage::Capabilities) -> Self {
        match (c.local, c.prefers_large_reads) {
            (true, _) => Reads::Local,
            (false, false) => Reads::Ranges,
            (false, true) => Reads::Blocks,
        }
    }
}

/// File workers of a restore without `--threads`:
/// - a local folder: two per core, at least four;
/// - range reads (a share): at least sixteen. A worker spends most of its time waiting for its
///   own range reads; with reads coalesced and small files batched (ADR 0041) the 1 GiB bench
///   tree takes ~600 of them, and the workers keep enough in flight;
/// - shared blocks (an object store): three per core, 6 to 24. The waiting happens in block
///   reads, [`crate::blocks::READS_AT_ONCE`] at once whatever the worker count; more workers only
///   reach into more blocks at once. From loopback Ceph RGW (2 cores), 6 workers restored the
///   bench tree as fast as 8 and 16, with 13 MiB less peak memory than 8.
///
/// Memory does not grow with the count beyond one block per worker: the sealed bytes in flight
/// are bounded by [`READ_BUDGET`] in all.
pub(super) fn default_threads(reads: Reads, cores: usize) -> usize {
    match reads {
        Reads::Local => 4.max(2 * cores),
        Reads::Ranges => 16.max(2 * cores),
        Reads::Blocks => (3 * cores).clamp(6, 24),
    }
}

/// Chunk openers the workers of a restore from remote storage share ([`OpenerPool`](crate::openers::OpenerPool)): two per
/// core, 2 to 8. Opening chunks (decrypting, decompressing, hashing) and writing them is the part
/// of a worker's time that uses a core; the rest waits for range reads.
pub(super) fn openers_at_once(cores: usize) -> usize {
    (2 * cores).clamp(2, 8)
}

/// Sealed bytes a restore from such storage holds in flight across all its workers
/// ([`ReadBudget`](crate::chunkread::ReadBudget)).
pub(super) const READ_BUDGET: u32 = 32 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_storage_gets_more_workers_than_a_local_folder_within_bounds() {
        assert_eq!(default_threads(Reads::Local, 1), 4);
        assert_eq!(default_threads(Reads::Local, 2), 4);
        assert_eq!(default_threads(Reads::Local, 8), 16);
        assert_eq!(default_threads(Reads::Ranges, 2), 16);
        assert_eq!(default_threads(Reads::Ranges, 16), 32);
        assert_eq!(default_threads(Reads::Blocks, 1), 6);
        assert_eq!(default_threads(Reads::Blocks, 2), 6);
        assert_eq!(default_threads(Reads::Blocks, 4), 12);
        assert_eq!(default_threads(Reads::Blocks, 16), 24);
    }

    #[test]
    fn only_storage_that_prefers_large_reads_gets_shared_blocks() {
        let caps = |local, prefers_large_reads| ibs_storage::Capabilities {
            list_after_write: true,
            verifies_writes: false,
            max_object_size: u64::MAX,
            ranged_reads: true,
            prefers_large_reads,
            local,
            put_size_hint: None,
        };
        assert_eq!(Reads::of(caps(true, false)), Reads::Local);
        assert_eq!(Reads::of(caps(true, true)), Reads::Local);
        assert_eq!(Reads::of(caps(false, false)), Reads::Ranges);
        assert_eq!(Reads::of(caps(false, true)), Reads::Blocks);
    }

    #[test]
    fn remote_workers_share_two_openers_per_core() {
        assert_eq!(openers_at_once(1), 2);
        assert_eq!(openers_at_once(2), 4);
        assert_eq!(openers_at_once(64), 8);
    }
}
