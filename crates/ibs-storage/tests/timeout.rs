//! The timeout decorator: over a backend that really hangs (the fault injector holding every
//! request for an hour), each operation fails within its tiny bound with the typed
//! `ErrorKind::TimedOut`, transient, alert class Connectivity; over a backend that answers it is
//! invisible (it passes the conformance suite).

use ibs_storage::conformance::run_all;
use ibs_storage::faulty::{Fault, FaultyStorage, Op};
use ibs_storage::memory::MemoryStorage;
use ibs_storage::{
    AlertClass, ErrorKind, ObjectKey, OpTimeouts, RetryPolicy, RetryStorage, Storage,
    TimeoutStorage,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test]
async fn timeout_decorator_passes_conformance_over_an_answering_backend() {
    let s = TimeoutStorage::new(Arc::new(MemoryStorage::new()), OpTimeouts::default());
    run_all(&s, 4 << 20).await;
}

#[tokio::test]
async fn a_hanging_backend_times_out_with_a_typed_connectivity_error() {
    let hanging = Arc::new(FaultyStorage::new(Arc::new(MemoryStorage::new())));
    hanging.set_latency(Some(Duration::from_secs(3600)));
    let limits = OpTimeouts {
        data: Duration::from_millis(300),
        listing: Duration::from_millis(200),
        metadata: Duration::from_millis(100),
        ..OpTimeouts::default()
    };
    let s = TimeoutStorage::new(hanging.clone(), limits);
    let key = ObjectKey::new("packs/00/aa").unwrap();
    let began = Instant::now();
    let errors = [
        (
            "put",
            s.put(&key, bytes::Bytes::from_static(b"x"))
                .await
                .unwrap_err(),
        ),
        ("get", s.get(&key).await.unwrap_err()),
        ("list", s.list("packs/").await.map(|_| ()).unwrap_err()),
        ("stat", s.stat(&key).await.map(|_| ()).unwrap_err()),
        ("delete", s.delete(&key).await.unwrap_err()),
    ];
    // Well under the backend's hour: every operation was abandoned at its bound.
    assert!(
        began.elapsed() < Duration::from_secs(60),
        "{:?}",
        began.elapsed()
    );
    for (op, e) in &errors {
        assert_eq!(e.kind, ErrorKind::TimedOut, "{op}: {e}");
        assert_eq!(e.op, *op);
        assert!(e.transient, "{op}: a timed-out operation may be retried");
        assert_eq!(e.class(), AlertClass::Connectivity, "{op}");
        assert!(e.to_string().contains("within"), "{e}");
    }

    // Beneath the retry decorator (as `ibs-location` assembles it) each attempt is bounded and
    // the last attempt's timeout is what the caller sees.
    let retried = RetryStorage::new(
        Arc::new(TimeoutStorage::new(hanging.clone(), limits)),
        RetryPolicy {
            attempts: 2,
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(10),
            timed_out_attempts: 2,
        },
    );
    let e = retried.stat(&key).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::TimedOut, "{e}");

    // The backend answers again: so does the decorator.
    hanging.set_latency(None);
    s.put(&key, bytes::Bytes::from_static(b"x")).await.unwrap();
    assert_eq!(&s.get(&key).await.unwrap()[..], b"x");
}

/// A backend that holds every request for an hour, under bounds of 10 s for a small request,
/// 1 MiB/s beyond it and 40 s at most (time is paused, so the test waits for nothing).
fn stalled() -> (Arc<FaultyStorage>, OpTimeouts) {
    let hanging = Arc::new(FaultyStorage::new(Arc::new(MemoryStorage::new())));
    hanging.set_latency(Some(Duration::from_secs(3600)));
    let limits = OpTimeouts {
        data: Duration::from_secs(40),
        listing: Duration::from_secs(40),
        metadata: Duration::from_secs(10),
        min_rate: 1 << 20,
        warn_after: Duration::from_secs(5),
    };
    (hanging, limits)
}

#[tokio::test(start_paused = true)]
async fn a_sized_operation_is_bounded_by_its_bytes_at_the_minimum_rate() {
    let (hanging, limits) = stalled();
    let s = TimeoutStorage::new(hanging, limits);
    let key = ObjectKey::new("packs/00/aa").unwrap();
    let cases: [(&str, u64, u64); 5] = [
        ("put", 1, 10),
        ("put", 20 << 20, 30),
        ("put", 64 << 20, 40),
        ("get_range", 20 << 20, 30),
        ("get", 0, 40),
    ];
    for (op, bytes, secs) in cases {
        let began = tokio::time::Instant::now();
        let e = match op {
            "put" => s
                .put(&key, vec![0u8; bytes as usize].into())
                .await
                .unwrap_err(),
            "get_range" => s.get_range(&key, 0, bytes).await.unwrap_err(),
            _ => s.get(&key).await.unwrap_err(),
        };
        let waited = began.elapsed();
        assert_eq!(e.kind, ErrorKind::TimedOut, "{op} {bytes}: {e}");
        assert!(
            waited >= Duration::from_secs(secs)
                && waited < Duration::from_secs(secs) + Duration::from_millis(50),
            "{op} of {bytes} bytes: bound {secs} s, waited {waited:?}"
        );
        assert!(e.to_string().contains(&format!("within {secs} s")), "{e}");
        // Only a write is explained as a possibly full storage that holds writes.
        assert_eq!(
            e.to_string().contains("full and holding writes"),
            op == "put",
            "{e}"
        );
    }
    assert_eq!(limits.sized(0), Duration::from_secs(10));
    assert_eq!(
        OpTimeouts::uniform(Duration::from_secs(7)).sized(1 << 30),
        Duration::from_secs(7)
    );
}

#[tokio::test(start_paused = true)]
async fn a_stalled_write_is_tried_twice_not_six_times() {
    let (hanging, limits) = stalled();
    let s = RetryStorage::new(
        Arc::new(TimeoutStorage::new(hanging.clone(), limits)),
        RetryPolicy::default(),
    );
    let key = ObjectKey::new("packs/00/aa").unwrap();
    let began = tokio::time::Instant::now();
    let e = s.put(&key, vec![0u8; 16 << 20].into()).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::TimedOut, "{e}");
    assert_eq!(e.class(), AlertClass::Connectivity);
    assert_eq!(
        hanging.count(Op::Put),
        2,
        "one retry of a timed-out attempt, not five"
    );
    // Two bounds of 26 s and one backoff of 0.2 s.
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_millis(52_200) && waited < Duration::from_secs(53),
        "{waited:?}"
    );

    // A transient error that is not a timeout keeps the full allowance.
    hanging.set_latency(None);
    for n in 1..=5 {
        hanging.fail_nth(
            Op::Stat,
            n,
            Fault::Error {
                kind: ErrorKind::Connectivity,
                transient: true,
            },
        );
    }
    let e = s.stat(&key).await.unwrap_err();
    assert_eq!(
        e.kind,
        ErrorKind::NotFound,
        "the sixth attempt answers: {e}"
    );
    assert_eq!(hanging.count(Op::Stat), 6);
}
