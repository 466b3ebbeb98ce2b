//! The storage conformance suite against the real Samba server: plain, encrypted and slow shares.

mod common;

use common::*;
use ibs_storage::conformance::{foreign_files, run_all};
use ibs_storage::Storage;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_share_passes_conformance() {
    let (s, folder) = storage("backup", "conf", options()).await;
    run_all(&s, 24 << 20).await;
    // The share `backup` is the server's folder SHARED_DIR/share.
    let root = std::path::Path::new(SHARED_DIR)
        .join("share/ibs-tests")
        .join(folder);
    foreign_files(&s, &|rel, data| {
        // Written as root behind Samba's back; the folders are opened up so the share user (like
        // an operator's colleague on a real share) may delete inside them.
        use std::os::unix::fs::PermissionsExt;
        let p = root.join(rel);
        let dir = p.parent().unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(&p, data).unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_share_passes_conformance() {
    let (s, _) = storage("enc", "enc", options()).await;
    let (dialect, encrypted) = s.session_info().await.unwrap();
    assert!(
        encrypted,
        "the enc share requires encryption, so the session must encrypt"
    );
    assert_eq!(dialect, ibs_smb::Dialect::Smb311);
    run_all(&s, 8 << 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_encryption_on_a_plain_share_works() {
    let opts = ibs_smb::SmbOptions {
        require_encryption: true,
        ..options()
    };
    let (s, _) = storage("backup", "fenc", opts).await;
    assert!(s.session_info().await.unwrap().1);
    let k = ibs_storage::ObjectKey::new("x/y").unwrap();
    s.put(&k, bytes::Bytes::from(vec![5u8; 3 << 20]))
        .await
        .unwrap();
    assert_eq!(s.get(&k).await.unwrap().len(), 3 << 20);
}

/// `[slow]` fsyncs every write, so smbd answers with STATUS_PENDING interim responses that carry the
/// credits. 64 MiB in 1 MiB writes with 8 in flight only completes if interim grants are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_share_interim_credits_are_counted() {
    let opts = ibs_smb::SmbOptions {
        max_in_flight: 8,
        verify_writes: false,
        ..options()
    };
    let (s, _) = storage("slow", "slow", opts).await;
    let data = bytes::Bytes::from(
        (0..64u32 << 20)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let k = ibs_storage::ObjectKey::new("big").unwrap();
    for round in 0..2 {
        let t = std::time::Instant::now();
        s.put(&k, data.clone())
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        eprintln!("slow put of 64 MiB: {:?}", t.elapsed());
    }
    let session = s.client().session().await.unwrap();
    eprintln!(
        "interim responses: {}, credits: {}",
        session.interim_responses(),
        session.available_credits()
    );
    assert!(
        session.interim_responses() > 0,
        "the slow share must have produced interim responses"
    );
    assert!(session.available_credits() >= 64, "credits must not leak");
    assert_eq!(s.get(&k).await.unwrap(), data);
    s.delete(&k).await.unwrap();
    run_all(&s_empty("slow").await, 2 << 20).await;
}

async fn s_empty(share: &str) -> ibs_smb::SmbStorage {
    storage(share, "slowconf", options()).await.0
}
