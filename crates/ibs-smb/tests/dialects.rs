//! Each dialect (2.1 through the location's opt-in, 3.0.2, 3.1.1) negotiates, signs and moves
//! data; 2.1 is never offered without the opt-in; `DOMAIN\user` works.

mod common;

use bytes::Bytes;
use common::*;
use ibs_smb::crypto::SigningAlg;
use ibs_smb::{Dialect, SmbCredentials, SmbOptions, SmbStorage};
use ibs_storage::{ObjectKey, Storage};

async fn roundtrip(s: &SmbStorage) {
    let data = Bytes::from(
        (0..(3u32 << 20) + 17)
            .map(|i| (i * 7) as u8)
            .collect::<Vec<u8>>(),
    );
    let k = ObjectKey::new("d/obj").unwrap();
    s.put(&k, data.clone()).await.unwrap();
    assert_eq!(s.get(&k).await.unwrap(), data);
    assert_eq!(s.list("").await.unwrap().len(), 1);
    s.delete(&k).await.unwrap();
}

#[tokio::test]
async fn every_dialect_negotiates_signs_and_moves_data() {
    for d in [Dialect::Smb210, Dialect::Smb302, Dialect::Smb311] {
        let opts = SmbOptions {
            dialects: vec![d],
            ..options()
        };
        // 2.1 only through the location's explicit opt-in (`?min-dialect=2.1`).
        let (s, _) = storage_min("backup", "dialect", opts, d).await;
        let (got, encrypted) = s.session_info().await.unwrap();
        assert_eq!(got, d);
        assert!(!encrypted);
        let session = s.client().session().await.unwrap();
        let expected = match d {
            Dialect::Smb210 => SigningAlg::HmacSha256,
            Dialect::Smb311 => SigningAlg::AesGmac,
            _ => SigningAlg::AesCmac,
        };
        assert_eq!(session.signing_alg(), expected, "{d:?}");
        assert!(
            session.is_signed(),
            "{d:?}: every response must carry a verified signature"
        );
        roundtrip(&s).await;
    }
}

#[tokio::test]
async fn smb2_1_is_refused_without_the_location_opt_in() {
    shared_server();
    let opts = SmbOptions {
        dialects: vec![Dialect::Smb210],
        ..options()
    };
    let loc = location(SHARED_PORT, "backup", &["ibs-tests", &unique("no21")]);
    let e = SmbStorage::connect(&loc, creds(), opts)
        .await
        .expect_err("2.1 without the opt-in");
    assert_eq!(e.kind, ibs_storage::ErrorKind::Invalid, "{e}");
    assert!(e.message.contains("?min-dialect=2.1"), "{e}");
    // The default offer has no 2.1 in it, so a 3.x server still gets 3.1.1.
    let (s, _) = storage("backup", "default3", options()).await;
    assert_eq!(s.session_info().await.unwrap().0, Dialect::Smb311);
}

#[tokio::test]
async fn max_dialect_caps_the_offer() {
    let opts = options().with_max_dialect(Dialect::Smb302);
    let (s, _) = storage("backup", "maxd", opts).await;
    assert_eq!(s.session_info().await.unwrap().0, Dialect::Smb302);
}

#[tokio::test]
async fn encryption_works_on_3_0_2_with_ccm() {
    let opts = SmbOptions {
        dialects: vec![Dialect::Smb302],
        ..options()
    };
    let (s, _) = storage("enc", "enc302", opts).await;
    assert_eq!(s.session_info().await.unwrap(), (Dialect::Smb302, true));
    roundtrip(&s).await;
}

#[tokio::test]
async fn domain_backslash_user_form_works() {
    shared_server();
    let creds = SmbCredentials::new("WORKGROUP\\ibsuser", password());
    let loc = location(SHARED_PORT, "backup", &["ibs-tests", &unique("domain")]);
    let s = SmbStorage::connect(&loc, creds, options())
        .await
        .expect("DOMAIN\\user connects");
    roundtrip(&s).await;
}

#[tokio::test]
async fn aes_cmac_signing_on_3_1_1_when_gmac_is_off() {
    let opts = SmbOptions {
        dialects: vec![Dialect::Smb311],
        gmac_signing: false,
        ..options()
    };
    let (s, _) = storage("backup", "cmac311", opts).await;
    assert_eq!(
        s.client().session().await.unwrap().signing_alg(),
        SigningAlg::AesCmac
    );
    roundtrip(&s).await;
}

/// A legacy server that speaks nothing newer than SMB 2.1 (a second private smbd, capped at
/// SMB2_10): refused without the opt-in, with a message naming it; served with it.
#[tokio::test]
async fn a_2_1_only_server_needs_the_opt_in() {
    let server =
        ibs_testing::samba::Server::start("smb21", &[("IBS_TEST_SMB_MAX_PROTOCOL", "SMB2_10")]);
    let port = server.port;
    let mut loc = location(port, "backup", &[]);
    let e = SmbStorage::connect(&loc, creds(), options())
        .await
        .expect_err("a 2.1-only server without the opt-in");
    eprintln!("legacy server without the opt-in: {e}");
    assert!(e.message.contains("?min-dialect=2.1"), "{e}");
    loc.min_dialect = Dialect::Smb210;
    let s = SmbStorage::connect(&loc, creds(), options())
        .await
        .unwrap_or_else(|e| panic!("opted in: {e}"));
    assert_eq!(s.session_info().await.unwrap(), (Dialect::Smb210, false));
    roundtrip(&s).await;
}
