//! The timeout decorator: over a backend that really hangs (the fault injector holding every
//! request for an hour), each operation fails within its tiny bound with the typed
//! `ErrorKind::TimedOut`, transient, alert class Connectivity; over a backend that answers it is
//! invisible (it passes the conformance suite).

use ibs_storage::conformance::run_all;
use ibs_storage::faulty::FaultyStorage;
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
        },
    );
    let e = retried.stat(&key).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::TimedOut, "{e}");

    // The backend answers again: so does the decorator.
    hanging.set_latency(None);
    s.put(&key, bytes::Bytes::from_static(b"x")).await.unwrap();
    assert_eq!(&s.get(&key).await.unwrap()[..], b"x");
}
