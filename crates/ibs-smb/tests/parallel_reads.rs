//! Many reads at once on one session, against the real Samba server: large READ replies are
//! decrypted (encrypted session) or verified (signed session) on the transport's workers and
//! dispatched out of order; every read must still return exactly its own bytes.

mod common;

use bytes::Bytes;
use common::*;
use ibs_storage::{ObjectKey, Storage};

/// Content that differs at every offset and between objects (a misrouted or shifted reply would
/// not match).
fn pattern(len: usize, seed: u32) -> Bytes {
    (0..len)
        .map(|i| {
            ((i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed.wrapping_mul(97)))
                >> 11
        } as u8)
        .collect::<Vec<u8>>()
        .into()
}

async fn many_reads(share: &str, tag: &str, want_encrypted: bool) {
    let (s, _) = storage(share, tag, options()).await;
    assert_eq!(s.session_info().await.unwrap().1, want_encrypted);
    // Object 6 is above the size from which a read lands in a mapping populated part by part.
    let objects: Vec<(ObjectKey, Bytes)> = (0..7u32)
        .map(|i| {
            let len = if i == 6 {
                (9 << 20) + 777
            } else {
                (1 << 20) + 400_000 * i as usize + 4_321
            };
            (ObjectKey::new(format!("p/o{i}")).unwrap(), pattern(len, i))
        })
        .collect();
    for (k, d) in &objects {
        s.put(k, d.clone()).await.unwrap();
    }
    let session = s.client().session().await.unwrap();
    let before = session.offloaded_frames();
    // Every object twice, plus an unaligned range of each, all at once.
    let gets = objects
        .iter()
        .chain(objects.iter())
        .map(|(k, d)| async { (s.get(k).await.unwrap(), d.clone()) });
    let ranges = objects.iter().map(|(k, d)| async {
        let (off, len) = (70_001u64, d.len() as u64 - 70_001 - 3);
        let got = s.get_range(k, off, len).await.unwrap();
        (got, d.slice(off as usize..(off + len) as usize))
    });
    let (a, b) = futures::join!(
        futures::future::join_all(gets),
        futures::future::join_all(ranges)
    );
    for (i, (got, want)) in a.into_iter().chain(b).enumerate() {
        assert_eq!(got.len(), want.len(), "read {i}: wrong length");
        assert!(got == want, "read {i}: wrong bytes");
    }
    assert!(
        session.offloaded_frames() > before + 12,
        "the large replies were not handled on workers ({} offloaded)",
        session.offloaded_frames() - before
    );
    assert!(session.is_alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_reads_on_an_encrypted_session_return_their_own_bytes() {
    many_reads("enc", "par-enc", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_reads_on_a_signed_session_return_their_own_bytes() {
    many_reads("backup", "par-sign", false).await;
}

/// The same on a current-thread runtime (as `#[tokio::test]` and small tools use): the workers
/// are the connection's own threads, so decryption still runs beside the runtime's one thread.
#[tokio::test]
async fn concurrent_encrypted_reads_work_on_a_current_thread_runtime() {
    many_reads("enc", "par-ct", true).await;
}
