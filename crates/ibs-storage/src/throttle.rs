//! Bandwidth limits as a decorator: uploads (`put`) and downloads (`get`, `get_range`) each draw
//! from their own token bucket ([`Bucket`]), so a backup or restore moves object data no faster
//! than the operator's limit, on any backend (local folder, SMB, later others) alike.
//!
//! The bucket works in bytes and lends: an operation takes its bytes' worth of tokens at once,
//! possibly into debt, and waits until the debt is paid back at the limited rate before it goes on
//! (`put` waits before it sends; a download before it asks, its length being known from the
//! request or a `stat`). The bucket holds at most [`BURST_SECONDS`] of the rate, so over any window
//! of `T` seconds at most `rate × (T + BURST_SECONDS)` bytes plus one request start: with requests
//! no larger than half a second's worth, no one-second window sees more than twice the limit.
//! Downloads keep to that for objects of any size: one larger than half a second's worth (a
//! 16 MiB pack under a 1 MiB/s limit) is read as paced ranges of that size. Uploads cannot be
//! sliced (`put` takes a whole object, which a backend writes at its own speed), so the throttle
//! asks writers for smaller objects instead: its [`Capabilities::put_size_hint`] is a quarter
//! second of the limit (at least [`MIN_PUT_HINT`]), and a backup and prune's repacking close
//! their packs there. A pack still ends with the chunk that crosses the hint, and a put larger
//! than half a second's worth (a pack with a large chunk under a low limit) is one burst, paid
//! for before it is sent, so the average holds. Time comes from a [`PaceClock`], so tests drive it deterministically.
//! Metadata operations (`stat`, `list`, `delete`, …) are not limited. `get_range_blocking` is
//! declined while a download limit is set (callers then use the async `get_range`, which waits).

use crate::{Capabilities, ObjectInfo, ObjectKey, Result, SpaceInfo, Storage};
use async_trait::async_trait;
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How many seconds of the rate the bucket holds when full.
pub const BURST_SECONDS: f64 = 0.5;

/// The smallest pack size the upload throttle asks writers for ([`Capabilities::put_size_hint`]):
/// a quarter of a second of the limit, but no less than this, so a very low limit does not make
/// a pack of every chunk.
pub const MIN_PUT_HINT: u64 = 256 << 10;

/// The smallest slice a large download is read in (a limit below 32 KiB/s reads 16 KiB slices,
/// each more than half a second's worth).
pub const MIN_SLICE: u64 = 16 << 10;

/// Where a throttle reads the time and how it waits.
#[async_trait]
pub trait PaceClock: Send + Sync + std::fmt::Debug {
    /// Time since an arbitrary fixed start (monotonic).
    fn now(&self) -> Duration;
    async fn sleep(&self, d: Duration);
}

/// The real clock: tokio's monotonic time and sleep.
#[derive(Debug)]
pub struct TokioPaceClock {
    start: tokio::time::Instant,
}

impl Default for TokioPaceClock {
    fn default() -> Self {
        TokioPaceClock {
            start: tokio::time::Instant::now(),
        }
    }
}

#[async_trait]
impl PaceClock for TokioPaceClock {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }
    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await
    }
}

/// A token bucket in bytes.
#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    capacity: f64,
    /// Tokens (negative: debt) as of the time beside them.
    state: Mutex<(f64, Duration)>,
}

impl Bucket {
    /// A full bucket for `bytes_per_second` (at least 1) at time `now`.
    pub fn new(bytes_per_second: u64, now: Duration) -> Self {
        let rate = bytes_per_second.max(1) as f64;
        let capacity = rate * BURST_SECONDS;
        Bucket {
            rate,
            capacity,
            state: Mutex::new((capacity, now)),
        }
    }

    /// Takes `bytes` at `now`; returns how long the taker waits before it may go on.
    pub fn take(&self, bytes: u64, now: Duration) -> Duration {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.saturating_sub(s.1).as_secs_f64();
        let tokens = (s.0 + elapsed * self.rate).min(self.capacity) - bytes as f64;
        *s = (tokens, now.max(s.1));
        if tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-tokens / self.rate)
        }
    }
}

/// The limits of one throttle, in bytes per second (`None`: unlimited).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub upload: Option<u64>,
    pub download: Option<u64>,
}

/// Wraps a backend and limits its data transfer rates.
#[derive(Debug)]
pub struct ThrottleStorage {
    inner: Arc<dyn Storage>,
    clock: Arc<dyn PaceClock>,
    up: Option<Bucket>,
    down: Option<Bucket>,
}

impl ThrottleStorage {
    pub fn new(inner: Arc<dyn Storage>, limits: Limits, clock: Arc<dyn PaceClock>) -> Self {
        let now = clock.now();
        ThrottleStorage {
            up: limits.upload.map(|r| Bucket::new(r, now)),
            down: limits.download.map(|r| Bucket::new(r, now)),
            inner,
            clock,
        }
    }

    /// `inner` limited by `limits`, or `inner` itself when there is no limit.
    pub fn wrap(inner: Arc<dyn Storage>, limits: Limits) -> Arc<dyn Storage> {
        if limits == Limits::default() {
            return inner;
        }
        Arc::new(Self::new(
            inner,
            limits,
            Arc::new(TokioPaceClock::default()),
        ))
    }

    /// The largest download a single request may move under the download limit: half a second
    /// of the rate (the bucket's capacity), at least [`MIN_SLICE`].
    fn download_slice(&self) -> Option<u64> {
        self.down
            .as_ref()
            .map(|b| (b.capacity as u64).max(MIN_SLICE))
    }

    /// Reads `len` bytes at `offset` in slices of at most `slice` bytes, each paced before it is
    /// asked for, so no one request moves more than half a second's worth.
    async fn get_sliced(
        &self,
        key: &ObjectKey,
        offset: u64,
        len: u64,
        slice: u64,
    ) -> Result<Bytes> {
        let mut out = bytes::BytesMut::with_capacity(len as usize);
        let mut at = 0;
        while at < len {
            let n = slice.min(len - at);
            self.pace(&self.down, n).await;
            out.extend_from_slice(&self.inner.get_range(key, offset + at, n).await?);
            at += n;
        }
        Ok(out.freeze())
    }

    async fn pace(&self, bucket: &Option<Bucket>, bytes: u64) {
        if let Some(b) = bucket {
            let wait = b.take(bytes, self.clock.now());
            if !wait.is_zero() {
                self.clock.sleep(wait).await;
            }
        }
    }
}

#[async_trait]
impl Storage for ThrottleStorage {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn capabilities(&self) -> Capabilities {
        let mut c = self.inner.capabilities();
        if let Some(b) = &self.up {
            let hint = ((b.capacity / 2.0) as u64).max(MIN_PUT_HINT);
            c.put_size_hint = Some(c.put_size_hint.map_or(hint, |h| h.min(hint)));
        }
        c
    }

    async fn put(&self, key: &ObjectKey, data: Bytes) -> Result<()> {
        self.pace(&self.up, data.len() as u64).await;
        self.inner.put(key, data).await
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        let Some(slice) = self.download_slice() else {
            return self.inner.get(key).await;
        };
        // The size decides: an object of more than one slice is read in paced ranges (objects
        // that large are packs and index segments, which never change once published).
        let size = self.inner.stat(key).await?.size;
        if size > slice {
            return self.get_sliced(key, 0, size, slice).await;
        }
        self.pace(&self.down, size).await;
        let data = self.inner.get(key).await?;
        // An object rewritten since the stat (a lock) is paid for in full.
        if data.len() as u64 > size {
            self.pace(&self.down, data.len() as u64 - size).await;
        }
        Ok(data)
    }

    async fn get_range(&self, key: &ObjectKey, offset: u64, len: u64) -> Result<Bytes> {
        match self.download_slice() {
            Some(slice) if len > slice => self.get_sliced(key, offset, len, slice).await,
            _ => {
                self.pace(&self.down, len).await;
                self.inner.get_range(key, offset, len).await
            }
        }
    }

    fn get_range_blocking(&self, key: &ObjectKey, offset: u64, len: u64) -> Option<Result<Bytes>> {
        if self.down.is_some() {
            return None;
        }
        self.inner.get_range_blocking(key, offset, len)
    }

    async fn stat(&self, key: &ObjectKey) -> Result<ObjectInfo> {
        self.inner.stat(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.inner.list(prefix).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.inner.delete(key).await
    }

    /// A move on the server transfers no object bytes over the throttled link.
    async fn rename(&self, from: &ObjectKey, to: &ObjectKey) -> Result<()> {
        self.inner.rename(from, to).await
    }

    async fn space(&self) -> Result<Option<SpaceInfo>> {
        self.inner.space().await
    }

    async fn remove_stale_temporaries(&self, older_than: Duration) -> Result<usize> {
        self.inner.remove_stale_temporaries(older_than).await
    }

    async fn list_foreign(&self) -> Result<Vec<crate::ForeignFile>> {
        self.inner.list_foreign().await
    }

    async fn delete_foreign(&self, path: &str) -> Result<()> {
        self.inner.delete_foreign(path).await
    }

    async fn object_lock_enabled(&self) -> Result<bool> {
        self.inner.object_lock_enabled().await
    }

    fn lock_policy(&self) -> Option<crate::LockPolicy> {
        self.inner.lock_policy()
    }

    async fn put_locked(&self, key: &ObjectKey, data: Bytes, r: crate::Retention) -> Result<()> {
        self.pace(&self.up, data.len() as u64).await;
        self.inner.put_locked(key, data, r).await
    }

    async fn extend_lock(&self, key: &ObjectKey, r: crate::Retention) -> Result<()> {
        self.inner.extend_lock(key, r).await
    }

    async fn lock_until(&self, key: &ObjectKey) -> Result<Option<i64>> {
        self.inner.lock_until(key).await
    }

    async fn rewritten(&self, prefix: &str) -> Result<Vec<ObjectKey>> {
        self.inner.rewritten(prefix).await
    }

    async fn history(&self, key: &ObjectKey) -> Result<Vec<Option<Bytes>>> {
        self.inner.history(key).await
    }
}

#[cfg(test)]
mod tests {
    //! The throttle measured on a virtual clock: every sleep advances it by exactly the time
    //! asked, and transfers take no time, so the rates below are the throttle's alone.
    use super::*;

    #[derive(Debug, Default)]
    struct VirtualClock(Mutex<Duration>);

    #[async_trait]
    impl PaceClock for VirtualClock {
        fn now(&self) -> Duration {
            *self.0.lock().unwrap()
        }
        async fn sleep(&self, d: Duration) {
            *self.0.lock().unwrap() += d;
        }
    }

    fn key(i: usize) -> ObjectKey {
        ObjectKey::new(format!("packs/{i:04}")).unwrap()
    }

    /// Puts `n` objects of `size` bytes through a throttle of `rate` and returns (the start time
    /// of each put, the virtual time at the end).
    async fn run_puts(rate: u64, size: usize, n: usize) -> (Vec<Duration>, Duration) {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Storage> = Arc::new(crate::LocalStorage::create(dir.path()).unwrap());
        let clock = Arc::new(VirtualClock::default());
        let t = ThrottleStorage::new(
            inner,
            Limits {
                upload: Some(rate),
                download: None,
            },
            clock.clone(),
        );
        let mut starts = Vec::new();
        for i in 0..n {
            // The put itself takes no virtual time: the clock after it is when it was sent.
            t.put(&key(i), Bytes::from(vec![7u8; size])).await.unwrap();
            starts.push(clock.now());
        }
        (starts, clock.now())
    }

    #[tokio::test]
    async fn the_achieved_upload_rate_is_within_ten_percent_of_the_limit() {
        let rate = 1 << 20;
        let (_, end) = run_puts(rate, 64 << 10, 320).await;
        let achieved = (320u64 * (64 << 10)) as f64 / end.as_secs_f64();
        let ratio = achieved / rate as f64;
        assert!(
            (0.9..=1.1).contains(&ratio),
            "achieved {achieved} B/s for a limit of {rate}: {ratio}"
        );
    }

    #[tokio::test]
    async fn no_one_second_window_carries_more_than_twice_the_limit() {
        let rate = 1 << 20;
        let size = 256 << 10;
        let (starts, _) = run_puts(rate, size, 80).await;
        for (i, s) in starts.iter().enumerate() {
            let in_window = starts[i..]
                .iter()
                .take_while(|t| **t < *s + Duration::from_secs(1))
                .count();
            let bytes = (in_window * size) as u64;
            assert!(bytes <= 2 * rate, "{bytes} bytes start within 1 s of {s:?}");
        }
    }

    /// Records when (on the virtual clock) each transfer reached the backend and how many bytes
    /// it moved; everything else goes straight to the local folder below.
    #[derive(Debug)]
    struct Recorder {
        inner: crate::LocalStorage,
        clock: Arc<VirtualClock>,
        moved: Mutex<Vec<(Duration, u64)>>,
    }

    impl Recorder {
        fn note(&self, bytes: u64) {
            self.moved.lock().unwrap().push((self.clock.now(), bytes));
        }
    }

    #[async_trait]
    impl Storage for Recorder {
        fn location(&self) -> String {
            self.inner.location()
        }
        fn capabilities(&self) -> Capabilities {
            self.inner.capabilities()
        }
        async fn put(&self, key: &ObjectKey, data: Bytes) -> Result<()> {
            self.note(data.len() as u64);
            self.inner.put(key, data).await
        }
        async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
            let d = self.inner.get(key).await?;
            self.note(d.len() as u64);
            Ok(d)
        }
        async fn get_range(&self, key: &ObjectKey, offset: u64, len: u64) -> Result<Bytes> {
            self.note(len);
            self.inner.get_range(key, offset, len).await
        }
        async fn stat(&self, key: &ObjectKey) -> Result<ObjectInfo> {
            self.inner.stat(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &ObjectKey) -> Result<()> {
            self.inner.delete(key).await
        }
        async fn space(&self) -> Result<Option<SpaceInfo>> {
            self.inner.space().await
        }
        async fn remove_stale_temporaries(&self, older_than: Duration) -> Result<usize> {
            self.inner.remove_stale_temporaries(older_than).await
        }
        async fn list_foreign(&self) -> Result<Vec<crate::ForeignFile>> {
            self.inner.list_foreign().await
        }
        async fn delete_foreign(&self, path: &str) -> Result<()> {
            self.inner.delete_foreign(path).await
        }
    }

    /// Moves `n` objects of `size` bytes up (put) or down (get) through a limit of `rate`;
    /// returns (achieved bytes per second, the most bytes any 1 s window moved).
    async fn measure(upload: bool, rate: u64, size: usize, n: usize) -> (f64, u64) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(VirtualClock::default());
        let rec = Arc::new(Recorder {
            inner: crate::LocalStorage::create(dir.path()).unwrap(),
            clock: clock.clone(),
            moved: Mutex::new(Vec::new()),
        });
        for i in 0..n {
            if !upload {
                rec.inner
                    .put(&key(i), Bytes::from(vec![3u8; size]))
                    .await
                    .unwrap();
            }
        }
        let limits = match upload {
            true => Limits {
                upload: Some(rate),
                download: None,
            },
            false => Limits {
                upload: None,
                download: Some(rate),
            },
        };
        let t = ThrottleStorage::new(rec.clone(), limits, clock.clone());
        for i in 0..n {
            if upload {
                t.put(&key(i), Bytes::from(vec![7u8; size])).await.unwrap();
            } else {
                assert_eq!(t.get(&key(i)).await.unwrap().len(), size);
            }
        }
        // Transfers take no virtual time: the last one ends when it starts.
        let moved = rec.moved.lock().unwrap().clone();
        let total: u64 = moved.iter().map(|m| m.1).sum();
        assert_eq!(total, (size * n) as u64);
        let end = moved.last().unwrap().0.max(clock.now()).as_secs_f64();
        let max_window = moved
            .iter()
            .map(|(s, _)| {
                moved
                    .iter()
                    .filter(|(t, _)| t >= s && *t < *s + Duration::from_secs(1))
                    .map(|m| m.1)
                    .sum::<u64>()
            })
            .max()
            .unwrap();
        (total as f64 / end.max(1.0), max_window)
    }

    /// The bandwidth benchmark (virtual clock, so it measures the throttle, not the disk): the
    /// achieved rate and the busiest 1 s window, for objects below and far above half a second of
    /// the limit. Downloads hold both bounds for any size; an upload of a large object is one
    /// burst (see the module doc), which the table shows and the test does not hide.
    #[tokio::test]
    async fn bandwidth_benchmark_table() {
        const MIB: u64 = 1 << 20;
        // The pack a backup writes under `rate`: closed at the throttle's hint, plus the chunk
        // that crosses it (1 MiB on average).
        let pack = |rate: u64| {
            let dir = tempfile::tempdir().unwrap();
            let inner: Arc<dyn Storage> =
                Arc::new(crate::LocalStorage::create(dir.path()).unwrap());
            let limits = Limits {
                upload: Some(rate),
                download: None,
            };
            let t = ThrottleStorage::new(inner, limits, Arc::new(VirtualClock::default()));
            (t.capabilities().put_size_hint.unwrap() + MIB) as usize
        };
        println!("| direction | object | limit | achieved / limit | max 1 s window / limit |");
        println!("|---|---:|---:|---:|---:|");
        for (upload, rate, size, n) in [
            (false, MIB, 256usize << 10, 40usize),
            (false, MIB, 16 << 20, 3),
            (true, 8 * MIB, pack(8 * MIB), 40),
            (true, MIB, pack(MIB), 12),
            (true, MIB, 16 << 20, 3),
        ] {
            let (achieved, window) = measure(upload, rate, size, n).await;
            let (a, w) = (achieved / rate as f64, window as f64 / rate as f64);
            println!(
                "| {} | {} KiB | {} MiB/s | {a:.2} | {w:.2} |",
                if upload { "upload" } else { "download" },
                size >> 10,
                rate / MIB
            );
            // The bound holds for downloads of any size, and for uploads of objects of at
            // most half a second's worth; the average holds always.
            if !upload || size as u64 <= rate / 2 {
                assert!(w <= 2.0, "a 1 s window moved {w:.2}× the limit");
                assert!((0.9..=1.1).contains(&a), "achieved {a:.2}× the limit");
            } else {
                assert!(a <= 1.1, "achieved {a:.2}× the limit");
            }
        }
    }

    #[test]
    fn the_bucket_lends_and_is_paid_back_at_the_rate() {
        let b = Bucket::new(1000, Duration::ZERO);
        // Full: half a second's worth goes at once.
        assert_eq!(b.take(500, Duration::ZERO), Duration::ZERO);
        // Empty: 1000 more bytes wait one second.
        assert_eq!(b.take(1000, Duration::ZERO), Duration::from_secs(1));
        // After paying, and two idle seconds, the bucket holds only its capacity again.
        assert_eq!(b.take(0, Duration::from_secs(1)), Duration::ZERO);
        assert_eq!(b.take(500, Duration::from_secs(3)), Duration::ZERO);
        assert_eq!(
            b.take(100, Duration::from_secs(3)),
            Duration::from_millis(100)
        );
    }

    #[tokio::test]
    async fn downloads_are_paced_and_skip_the_blocking_path() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Storage> = Arc::new(crate::LocalStorage::create(dir.path()).unwrap());
        inner
            .put(&key(0), Bytes::from(vec![1u8; 3000]))
            .await
            .unwrap();
        let clock = Arc::new(VirtualClock::default());
        let t = ThrottleStorage::new(
            inner,
            Limits {
                upload: None,
                download: Some(1000),
            },
            clock.clone(),
        );
        assert!(t.get_range_blocking(&key(0), 0, 10).is_none());
        assert_eq!(t.get(&key(0)).await.unwrap().len(), 3000);
        assert_eq!(clock.now(), Duration::from_millis(2500));
        assert_eq!(t.get_range(&key(0), 0, 1000).await.unwrap().len(), 1000);
        assert_eq!(clock.now(), Duration::from_millis(3500));
        // Uploads are not limited by a download limit.
        t.put(&key(1), Bytes::from(vec![2u8; 100_000]))
            .await
            .unwrap();
        assert_eq!(clock.now(), Duration::from_millis(3500));
    }
}
