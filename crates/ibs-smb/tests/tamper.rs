//! Attacks by a man in the middle on the SMB path (a tampering proxy on loopback, `common::proxy`):
//! a forged end of listing, a forged "not found", a flipped byte in a signed reply, a downgraded
//! or altered negotiation, a stripped session-setup signature, a tampered TRANSFORM_HEADER. Each
//! storage operation must fail with the integrity error (kind `Connectivity`, "integrity check" in
//! the message), never return a shortened listing, a false `NotFound` or a downgraded session.

mod common;

use bytes::Bytes;
use common::proxy::{
    Proxy, Tamper, CMD_QUERY_DIRECTORY, CMD_READ, STATUS_NO_MORE_FILES,
    STATUS_OBJECT_NAME_NOT_FOUND,
};
use common::*;
use ibs_smb::{SmbOptions, SmbStorage};
use ibs_storage::{ErrorKind, ObjectKey, Storage, StorageError};

const DIALECTS_3X: &[u16] = &[0x0300, 0x0302, 0x0311];

/// A storage in a fresh folder of `share`, connected through a proxy that starts in `mode`.
async fn through_proxy(
    share: &str,
    tag: &str,
    mode: Tamper,
    opts: SmbOptions,
) -> (Proxy, Result<SmbStorage, StorageError>) {
    shared_server();
    let proxy = Proxy::start(SHARED_PORT, mode).await;
    let loc = location(proxy.port, share, &["ibs-tests", &unique(tag)]);
    let s = SmbStorage::connect(&loc, creds(), opts).await;
    (proxy, s)
}

/// Three objects under `backups/` (two in a sub-folder), written before the attack starts.
async fn populated(share: &str, tag: &str) -> (Proxy, SmbStorage) {
    let (proxy, s) = through_proxy(share, tag, Tamper::Off, options()).await;
    let s = s.unwrap_or_else(|e| panic!("connect through the idle proxy: {e}"));
    for k in ["backups/a", "backups/sub/b", "backups/sub/c"] {
        s.put(&ObjectKey::new(k).unwrap(), Bytes::from(vec![7u8; 3000]))
            .await
            .unwrap();
    }
    assert_eq!(s.list("backups/").await.unwrap().len(), 3);
    (proxy, s)
}

#[track_caller]
fn assert_integrity<T: std::fmt::Debug>(r: Result<T, StorageError>, what: &str) -> StorageError {
    let e = match r {
        Ok(v) => panic!("{what}: the tampered operation succeeded with {v:?}"),
        Err(e) => e,
    };
    assert_eq!(
        e.kind,
        ErrorKind::Connectivity,
        "{what}: wrong kind ({:?}): {e}",
        e.kind
    );
    assert!(
        e.message.contains("integrity check"),
        "{what}: not reported as an integrity failure: {e}"
    );
    eprintln!("{what}: {e}");
    e
}

fn key(k: &str) -> ObjectKey {
    ObjectKey::new(k).unwrap()
}

#[tokio::test]
async fn forged_end_of_listing_fails_the_listing() {
    let (proxy, s) = populated("backup", "mitm-nomore").await;
    let attacked = s.client().session().await.unwrap();
    proxy.set(Tamper::QueryDirectoryAsNoMoreFiles);
    let r = s.list("backups/").await;
    assert!(proxy.hits() > 0, "the proxy never forged a reply");
    let r = r.map(|v| format!("{} of 3 objects listed", v.len()));
    assert_integrity(r, "list with a forged STATUS_NO_MORE_FILES");
    assert!(
        !attacked.is_alive(),
        "the connection that carried a forged reply must never be used again"
    );
    proxy.set(Tamper::Off);
    assert_eq!(s.list("backups/").await.unwrap().len(), 3, "recovers");
    let fresh = s.client().session().await.unwrap();
    assert!(!std::sync::Arc::ptr_eq(&attacked, &fresh), "a new session");
}

#[tokio::test]
async fn forged_not_found_is_never_a_not_found() {
    let (proxy, s) = populated("backup", "mitm-notfound").await;
    proxy.set(Tamper::CreateAsNotFound {
        keep_signed_flag: false,
    });
    assert_integrity(s.stat(&key("backups/a")).await, "stat");
    assert_integrity(s.get(&key("backups/a")).await, "get");
    assert_integrity(s.get_range(&key("backups/a"), 0, 10).await, "get_range");
    assert_integrity(s.delete(&key("backups/a")).await, "delete");
    assert_integrity(s.list("backups/").await, "list");
    proxy.set(Tamper::CreateAsNotFound {
        keep_signed_flag: true,
    });
    assert_integrity(s.stat(&key("backups/a")).await, "stat (stale signature)");
    assert!(proxy.hits() >= 6);
    proxy.set(Tamper::Off);
    assert_eq!(s.stat(&key("backups/a")).await.unwrap().size, 3000);
}

/// Content that differs at every offset of a 1 MiB read (a shifted copy would not match).
fn pattern(len: usize, seed: u32) -> Bytes {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 11) as u8)
        .collect::<Vec<u8>>()
        .into()
}

const BIG: usize = (3 << 20) + 12_345;

/// A large READ reply is verified on a transport worker, not by the requester: a flipped byte
/// there must fail the read all the same, and the connection must not be used again.
#[tokio::test]
async fn flipped_byte_in_a_large_signed_read_fails_on_the_worker() {
    let (proxy, s) = populated("backup", "mitm-flip-big").await;
    let data = pattern(BIG, 1);
    s.put(&key("backups/big"), data.clone()).await.unwrap();
    let attacked = s.client().session().await.unwrap();
    assert!(!attacked.is_encrypted());
    let before = attacked.offloaded_frames();
    proxy.set(Tamper::FlipSignedReply { command: CMD_READ });
    assert_integrity(
        s.get(&key("backups/big")).await,
        "get with a flipped large READ reply",
    );
    assert!(proxy.hits() > 0);
    assert!(
        attacked.offloaded_frames() > before,
        "the large READ replies were not verified on a worker"
    );
    assert!(
        !attacked.is_alive(),
        "the tampered connection is still used"
    );
    proxy.set(Tamper::Off);
    assert!(s.get(&key("backups/big")).await.unwrap() == data);
}

/// A large encrypted READ reply is decrypted on a transport worker: one that does not decrypt
/// kills the connection as tampered (Integrity), exactly as on the reader.
#[tokio::test]
async fn tampered_large_encrypted_read_fails_on_the_worker() {
    let (proxy, s) = populated("enc", "mitm-enc-big").await;
    let data = pattern(BIG, 2);
    s.put(&key("backups/big"), data.clone()).await.unwrap();
    let attacked = s.client().session().await.unwrap();
    assert!(attacked.is_encrypted(), "the enc share encrypts");
    let before = attacked.offloaded_frames();
    proxy.set(Tamper::FlipLargeEncryptedReply { min_len: 64 << 10 });
    assert_integrity(
        s.get(&key("backups/big")).await,
        "get with a tampered large encrypted READ reply",
    );
    assert!(proxy.hits() > 0, "the proxy never altered a large reply");
    assert!(attacked.offloaded_frames() > before);
    assert!(
        !attacked.is_alive(),
        "the tampered connection is still used"
    );
    proxy.set(Tamper::Off);
    assert!(s.get(&key("backups/big")).await.unwrap() == data);
    assert_eq!(s.list("backups/").await.unwrap().len(), 4);
}

#[tokio::test]
async fn flipped_byte_in_a_signed_reply_fails_the_operation() {
    let (proxy, s) = populated("backup", "mitm-flip").await;
    proxy.set(Tamper::FlipSignedReply { command: CMD_READ });
    assert_integrity(
        s.get(&key("backups/a")).await,
        "get with a flipped READ reply",
    );
    proxy.set(Tamper::FlipSignedReply {
        command: CMD_QUERY_DIRECTORY,
    });
    assert_integrity(s.list("backups/").await, "list with a flipped reply");
    assert!(proxy.hits() >= 2);
}

#[tokio::test]
async fn downgrade_to_smb2_1_is_refused() {
    let (proxy, s) = through_proxy(
        "backup",
        "mitm-21",
        Tamper::DowngradeOffer {
            from: DIALECTS_3X,
            to: 0x0210,
        },
        options(),
    )
    .await;
    assert!(proxy.hits() > 0, "the proxy never saw the NEGOTIATE");
    let info = match &s {
        Ok(s) => format!("{:?}", s.session_info().await),
        Err(e) => e.to_string(),
    };
    assert_integrity(
        s.map(|_| info.clone()),
        "connect with 3.x stripped from the offer",
    );
}

/// Opted into 2.1, the client offers it; an attacker who strips 3.x from the offer gets a genuine
/// 2.1 session from the server, and VALIDATE_NEGOTIATE inside it exposes the rewritten offer.
#[tokio::test]
async fn downgrade_to_smb2_1_is_caught_even_when_opted_in() {
    shared_server();
    let proxy = Proxy::start(
        SHARED_PORT,
        Tamper::DowngradeOffer {
            from: DIALECTS_3X,
            to: 0x0210,
        },
    )
    .await;
    let mut loc = location(proxy.port, "backup", &["ibs-tests", &unique("mitm-21opt")]);
    loc.min_dialect = ibs_smb::Dialect::Smb210;
    let s = SmbStorage::connect(&loc, creds(), options()).await;
    assert!(proxy.hits() > 0);
    let s = match s {
        Ok(s) => Ok(s.session_info().await),
        Err(e) => Err(e),
    };
    assert_integrity(s, "opted-in 2.1 with 3.x stripped from the offer");
    // Without the attacker the same location gets 3.1.1.
    proxy.set(Tamper::Off);
    let s = SmbStorage::connect(&loc, creds(), options()).await.unwrap();
    assert_eq!(s.session_info().await.unwrap().0, ibs_smb::Dialect::Smb311);
}

#[tokio::test]
async fn downgrade_from_3_1_1_to_3_0_2_is_caught() {
    let (proxy, s) = through_proxy(
        "backup",
        "mitm-302",
        Tamper::DowngradeOffer {
            from: &[0x0311],
            to: 0x0302,
        },
        options(),
    )
    .await;
    assert!(proxy.hits() > 0);
    let s = match s {
        Ok(s) => Ok(s.session_info().await),
        Err(e) => Err(e),
    };
    assert_integrity(s, "connect with 3.1.1 stripped from the offer");
}

#[tokio::test]
async fn altered_negotiate_reply_is_caught_by_the_preauth_hash() {
    let (proxy, s) =
        through_proxy("backup", "mitm-neg", Tamper::FlipNegotiateReply, options()).await;
    assert!(proxy.hits() > 0);
    assert_integrity(s.map(|_| ()), "connect with an altered NEGOTIATE reply");
}

#[tokio::test]
async fn unsigned_final_session_setup_reply_is_refused() {
    for d in [ibs_smb::Dialect::Smb302, ibs_smb::Dialect::Smb311] {
        let opts = SmbOptions {
            dialects: vec![d],
            ..options()
        };
        let (proxy, s) = through_proxy(
            "backup",
            "mitm-setup",
            Tamper::StripFinalSessionSetupSignature,
            opts,
        )
        .await;
        assert!(proxy.hits() > 0, "{d:?}");
        assert_integrity(
            s.map(|_| ()),
            &format!("{d:?}: unsigned final session setup"),
        );
    }
}

#[tokio::test]
async fn tampered_transform_header_fails_on_an_encrypted_share() {
    let (proxy, s) = populated("enc", "mitm-enc").await;
    assert!(s.session_info().await.unwrap().1, "the enc share encrypts");
    proxy.set(Tamper::FlipTransformHeader);
    assert_integrity(
        s.list("backups/").await,
        "list with a tampered transform header",
    );
    assert_integrity(s.stat(&key("backups/a")).await, "stat");
    assert!(proxy.hits() >= 2);
    proxy.set(Tamper::Off);
    assert_eq!(s.list("backups/").await.unwrap().len(), 3);
}

/// Encryption stripped: on an encrypted session a plaintext, unsigned "not found" or "no more
/// files" is no answer.
#[tokio::test]
async fn plaintext_replies_on_an_encrypted_session_are_refused() {
    let (proxy, s) = populated("enc", "mitm-strip").await;
    assert!(s.session_info().await.unwrap().1, "the enc share encrypts");
    for status in [STATUS_OBJECT_NAME_NOT_FOUND, STATUS_NO_MORE_FILES] {
        proxy.set(Tamper::PlaintextForEncrypted { status });
        assert_integrity(s.stat(&key("backups/a")).await, "stat, plaintext reply");
        assert_integrity(s.delete(&key("backups/a")).await, "delete, plaintext reply");
        assert_integrity(s.list("backups/").await, "list, plaintext reply");
    }
    proxy.set(Tamper::Off);
    assert_eq!(s.list("backups/").await.unwrap().len(), 3);
}

/// A sub-folder that the walk has seen but that is gone when it is opened (here removed behind
/// Samba's back at the exact moment the parent's listing arrives) fails the listing: a listing
/// never comes back silently shorter than the share.
#[tokio::test]
async fn subfolder_vanishing_during_a_listing_fails_it() {
    shared_server();
    let proxy = Proxy::start(SHARED_PORT, Tamper::Off).await;
    let folder = unique("vanish");
    let loc = location(proxy.port, "backup", &["ibs-tests", &folder]);
    let s = SmbStorage::connect(&loc, creds(), options()).await.unwrap();
    for k in ["backups/a", "backups/sub/b"] {
        s.put(&key(k), Bytes::from_static(b"x")).await.unwrap();
    }
    let sub = std::path::Path::new(SHARED_DIR)
        .join("share/ibs-tests")
        .join(&folder)
        .join("backups/sub");
    let mut done = false;
    proxy.on_reply(move |cmd, status| {
        if cmd == CMD_QUERY_DIRECTORY && status == 0 && !done {
            std::fs::remove_dir_all(&sub).unwrap();
            done = true;
        }
    });
    let r = s.list("backups/").await;
    let e = match r {
        Ok(v) => panic!(
            "listing came back with {} objects instead of failing",
            v.len()
        ),
        Err(e) => e,
    };
    assert_eq!(e.kind, ErrorKind::Other, "{e}");
    assert!(e.transient, "a fresh listing may succeed: {e}");
    assert!(e.message.contains("vanished during the listing"), "{e}");
    // The next listing sees the share as it now is.
    assert_eq!(s.list("backups/").await.unwrap().len(), 1);
}
