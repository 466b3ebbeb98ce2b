//! How the process's C allocator (glibc malloc) treats large buffers. ibs allocates and frees
//! buffers of megabytes all the time (packs being filled, range reads, chunker windows, restore
//! batches) on many threads. glibc maps an allocation of at least its mmap threshold on its own and
//! unmaps it when freed, but by default it raises that threshold to the size of each such buffer
//! freed (up to 32 MiB), after which buffers of that size come from the per-thread arenas and stay
//! resident once freed: on the 1 GiB bench tree the restore from S3 peaked at 164 MiB that way,
//! 118 MiB with the threshold fixed (`bench/README.md`, "S3"; ADR 0041).
//!
//! Invariant: after [`bound_freed_buffers`], every allocation of at least [`THRESHOLD`] is mapped
//! on its own and returned to the system when freed, unless the operator set
//! `MALLOC_MMAP_THRESHOLD_` (glibc's own tunable), which is then left to decide.

/// Allocations of this size and larger are mapped on their own.
pub const THRESHOLD: usize = 1 << 20;

/// Fixes glibc's mmap threshold at [`THRESHOLD`] (which also stops it from moving). Call before
/// any thread starts. Does nothing on other C libraries or when `MALLOC_MMAP_THRESHOLD_` is set.
pub fn bound_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: mallopt only changes a malloc parameter and takes no pointers; it is called
        // before other threads run. The only unsafe code of ibs (see Cargo.toml's lints).
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD as libc::c_int);
        }
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Resident bytes of this process (`/proc/self/statm`, second field, in pages).
    fn resident() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096
    }

    fn touch_and_free(n: usize) {
        let v = std::hint::black_box(vec![1u8; n]);
        drop(v);
    }

    /// Without the fixed threshold, the first 8 MiB buffer freed raises glibc's threshold, so the
    /// second comes from the heap and stays resident after it is freed. (nextest runs each test in
    /// a process of its own, so no other test's allocations interfere.)
    #[test]
    fn a_freed_large_buffer_does_not_stay_resident() {
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some() {
            panic!("unset MALLOC_MMAP_THRESHOLD_ to run this test: it checks ibs's own setting");
        }
        bound_freed_buffers();
        touch_and_free(8 << 20);
        let before = resident();
        for _ in 0..4 {
            touch_and_free(8 << 20);
        }
        let after = resident();
        assert!(
            after < before + (2 << 20),
            "resident grew from {before} to {after} bytes after freeing 8 MiB buffers"
        );
    }
}
