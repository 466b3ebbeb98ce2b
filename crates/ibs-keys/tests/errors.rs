//! Every documented failure gives its specific `KeyError`, with an operator-readable
//! message that contains no secrets.

mod common;

use common::*;
use ibs_keys::{
    envelope_recipients, generate_self_signed, open_envelope, seal_envelope, Certificate, KeyError,
    LegacyKey, PrivateIdentity,
};

const PASSWORD: &str = "s3cret-pfx-password";

#[test]
fn wrong_pfx_password_is_reported_as_such() {
    let id = generate_self_signed("ibs", 2048, 30, now_unix()).unwrap();
    let pfx = id.to_pfx(PASSWORD).unwrap();
    let err = PrivateIdentity::from_pfx(&pfx, "not the password").unwrap_err();
    assert!(matches!(err, KeyError::WrongPfxPassword), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("password is wrong"), "{msg}");
    assert!(!msg.contains("not the password") && !format!("{err:?}").contains("not the"));

    // Same for an openssl-made file.
    let dir = tempdir();
    let c = openssl_rsa_cert(dir.path(), "w", 2048, "wrong pw");
    assert!(openssl_pfx(dir.path(), &c, PASSWORD, &[]).status.success());
    let pfx = read(&dir.path().join("export.pfx"));
    assert!(matches!(
        PrivateIdentity::from_pfx(&pfx, "nope"),
        Err(KeyError::WrongPfxPassword)
    ));
}

#[test]
fn pfx_structure_errors_are_specific() {
    assert!(matches!(
        PrivateIdentity::from_pfx(b"definitely not pkcs12", "x"),
        Err(KeyError::PfxParse { .. })
    ));
    assert!(matches!(
        PrivateIdentity::from_pfx(&[], "x"),
        Err(KeyError::PfxParse { .. })
    ));

    // Certificate-only PFX.
    let dir = tempdir();
    let c = openssl_rsa_cert(dir.path(), "nokey", 2048, "no key");
    let out = openssl_pfx(dir.path(), &c, PASSWORD, &["-nokeys"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pfx = read(&dir.path().join("export.pfx"));
    let err = PrivateIdentity::from_pfx(&pfx, PASSWORD).unwrap_err();
    assert!(matches!(err, KeyError::PfxNoPrivateKey), "{err:?}");

    // Key without certificate, and key with someone else's certificate (built with the
    // same PKCS#12 library, since openssl refuses to write a mismatched pair).
    let a = generate_self_signed("a", 2048, 30, now_unix()).unwrap();
    let b = generate_self_signed("b", 2048, 30, now_unix()).unwrap();
    let a_pfx = a.to_pfx(PASSWORD).unwrap();
    let b_pfx = b.to_pfx(PASSWORD).unwrap();
    let ks_a = p12_keystore::KeyStore::from_pkcs12(&a_pfx, PASSWORD, Default::default()).unwrap();
    let ks_b = p12_keystore::KeyStore::from_pkcs12(&b_pfx, PASSWORD, Default::default()).unwrap();
    let (_, chain_a) = ks_a.private_key_chain().unwrap();
    let (_, chain_b) = ks_b.private_key_chain().unwrap();

    let mixed = p12_keystore::PrivateKeyChain::new(
        chain_a.local_key_id().as_ref(),
        chain_a.key().clone(),
        chain_b.certs().to_vec(),
    );
    let mut ks = p12_keystore::KeyStore::new();
    ks.add_entry("mixed", p12_keystore::KeyStoreEntry::PrivateKeyChain(mixed));
    let pfx = ks.writer(PASSWORD).write().unwrap();
    let err = PrivateIdentity::from_pfx(&pfx, PASSWORD).unwrap_err();
    assert!(matches!(err, KeyError::PfxKeyMismatch), "{err:?}");

    let lonely = p12_keystore::PrivateKeyChain::new(
        chain_a.local_key_id().as_ref(),
        chain_a.key().clone(),
        Vec::new(),
    );
    let mut ks = p12_keystore::KeyStore::new();
    ks.add_entry(
        "lonely",
        p12_keystore::KeyStoreEntry::PrivateKeyChain(lonely),
    );
    let pfx = ks.writer(PASSWORD).write().unwrap();
    let err = PrivateIdentity::from_pfx(&pfx, PASSWORD).unwrap_err();
    assert!(matches!(err, KeyError::PfxNoCertificate), "{err:?}");
}

#[test]
fn envelope_for_a_opened_by_b_names_the_recipients() {
    let now = now_unix();
    let a = generate_self_signed("recipient a", 2048, 30, now).unwrap();
    let b = generate_self_signed("recipient b", 2048, 30, now).unwrap();
    let env = seal_envelope(&[a.certificate()], b"key").unwrap();
    match open_envelope(&b, &env) {
        Err(KeyError::NoMatchingRecipient { recipients }) => {
            let expected = format!(
                "issuer=CN=recipient a, serial={}",
                a.certificate().serial_hex()
            );
            assert_eq!(recipients, vec![expected]);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(open_envelope(&a, &env).unwrap().as_slice(), b"key");
}

#[test]
fn small_and_non_rsa_keys_are_rejected() {
    let dir = tempdir();
    let small = openssl_rsa_cert(dir.path(), "small", 1024, "small");
    let err = Certificate::from_bytes(&read(&small.cert)).unwrap_err();
    assert!(
        matches!(err, KeyError::KeyTooSmall { bits: 1024 }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "certificate key is 1024-bit RSA; at least 2048 bits are required"
    );
    // The same key inside a .pfx.
    assert!(openssl_pfx(dir.path(), &small, PASSWORD, &[])
        .status
        .success());
    let err =
        PrivateIdentity::from_pfx(&read(&dir.path().join("export.pfx")), PASSWORD).unwrap_err();
    assert!(
        matches!(err, KeyError::KeyTooSmall { bits: 1024 }),
        "{err:?}"
    );

    let ec = openssl_cert(
        dir.path(),
        "ec",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "ec",
    );
    match Certificate::from_bytes(&read(&ec.cert)) {
        Err(e @ KeyError::NotRsa { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("1.2.840.10045.2.1"), "{msg}");
            assert!(msg.contains("only RSA"), "{msg}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(openssl_pfx(dir.path(), &ec, PASSWORD, &[]).status.success());
    let err =
        PrivateIdentity::from_pfx(&read(&dir.path().join("export.pfx")), PASSWORD).unwrap_err();
    assert!(matches!(err, KeyError::NotRsa { .. }), "{err:?}");

    let err = generate_self_signed("ibs", 1024, 30, now_unix()).unwrap_err();
    assert!(
        matches!(err, KeyError::KeyTooSmall { bits: 1024 }),
        "{err:?}"
    );
}

#[test]
fn generation_arguments_are_validated() {
    let now = now_unix();
    assert!(matches!(
        generate_self_signed("", 2048, 30, now),
        Err(KeyError::InvalidSubject { .. })
    ));
    assert!(matches!(
        generate_self_signed("ibs", 2048, 0, now),
        Err(KeyError::InvalidValidity { .. })
    ));
    assert!(matches!(
        generate_self_signed("ibs", 2048, 30, 0),
        Err(KeyError::InvalidValidity { .. })
    ));
    assert!(matches!(
        generate_self_signed("ibs", 16384, 30, now),
        Err(KeyError::KeyTooLarge { bits: 16384 })
    ));
}

#[test]
fn garbage_certificates_are_parse_errors() {
    for input in [
        &b""[..],
        b"\x30\x82\x01",
        b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
    ] {
        assert!(matches!(
            Certificate::from_bytes(input),
            Err(KeyError::CertificateParse { .. })
        ));
    }
}

#[test]
fn damaged_envelopes_are_errors_not_panics() {
    let id = generate_self_signed("ibs", 2048, 30, now_unix()).unwrap();
    let data = [0x42u8; 32];
    let env = seal_envelope(&[id.certificate()], &data).unwrap();

    // Every truncation fails.
    for len in 0..env.len() {
        let r = open_envelope(&id, &env[..len]);
        assert!(matches!(r, Err(KeyError::Envelope(_))), "len {len}: {r:?}");
        assert!(envelope_recipients(&env[..len]).is_err());
    }
    // Trailing garbage fails.
    let mut longer = env.clone();
    longer.push(0);
    assert!(open_envelope(&id, &longer).is_err());

    // A flipped bit in the last cipher block never gives the payload back. It garbles the last
    // plaintext block, so the padding check fails, except when the garbled block happens to end
    // in valid padding (about 1 in 256 keys): then the bytes differ (CBC has no integrity; the
    // caller's key check value catches that).
    let mut last = env.clone();
    *last.last_mut().unwrap() ^= 0x01;
    match open_envelope(&id, &last) {
        Err(KeyError::Envelope(_)) => {}
        Ok(opened) => assert_ne!(opened.as_slice(), &data[..]),
        Err(other) => panic!("flipped last block: {other:?}"),
    }
    // A flipped bit in the wrapped key (RSA ciphertext) fails: OAEP/PKCS#1 unwrapping checks it.
    let wrapped_at = find_wrapped_key(&env);
    let mut wrapped = env.clone();
    wrapped[wrapped_at + 100] ^= 0x80;
    assert!(matches!(
        open_envelope(&id, &wrapped),
        Err(KeyError::Envelope(_))
    ));

    // Flipping any single byte never panics. (CBC is malleable: a flip inside the IV or
    // an early cipher block can still "decrypt", to different bytes. Integrity of the
    // payload is the caller's business, e.g. a key check value.)
    for i in 0..env.len() {
        let mut bad = env.clone();
        bad[i] ^= 0xff;
        let _ = envelope_recipients(&bad);
        let _ = open_envelope(&id, &bad);
    }

    assert!(matches!(
        seal_envelope(&[], b"x"),
        Err(KeyError::NoRecipients)
    ));
}

/// Offset of the 256-byte RSA-2048 ciphertext inside the envelope (after `04 82 01 00`).
fn find_wrapped_key(env: &[u8]) -> usize {
    env.windows(4)
        .position(|w| w == [0x04, 0x82, 0x01, 0x00])
        .map(|p| p + 4)
        .expect("wrapped key present")
}

#[test]
fn legacy_key_file_round_trip_and_errors() {
    let key = LegacyKey::generate();
    let text = key.to_file_text();
    assert!(text.ends_with('\n'));
    let back = LegacyKey::from_file_text(&format!("\n  {text}  \n")).unwrap();
    assert_eq!(back.material(), key.material());
    assert_eq!(key.material().len(), 64);
    assert!(!format!("{key:?}").contains(text.trim()));

    let short = "AAAA".repeat(10); // 30 bytes
    match LegacyKey::from_file_text(&short) {
        Err(e @ KeyError::LegacyKeyTooShort { bytes: 30 }) => {
            assert!(e.to_string().contains("30 bytes"), "{e}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        LegacyKey::from_file_text("this is not base64 %%%"),
        Err(KeyError::LegacyKeyNotBase64 { .. })
    ));
}
