//! CMS key envelopes exchanged with the real `openssl cms` in both directions.

mod common;

use std::path::Path;

use common::*;
use ibs_keys::{
    envelope_recipients, generate_self_signed, open_envelope, seal_envelope, Certificate,
    PrivateIdentity,
};

const PASSWORD: &str = "pfx-pass";

fn payload() -> Vec<u8> {
    (0u8..=255).cycle().take(1000).collect()
}

/// Loads an openssl-made key/cert pair as a Rust identity (via an openssl PFX).
fn identity_from_openssl(dir: &Path, c: &OpensslCert) -> PrivateIdentity {
    let out = openssl_pfx(dir, c, PASSWORD, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PrivateIdentity::from_pfx(&read(&dir.join("export.pfx")), PASSWORD).unwrap()
}

#[test]
fn sealed_envelope_decrypts_with_openssl() {
    let dir = tempdir();
    let c = openssl_rsa_cert(dir.path(), "a", 2048, "recipient a");
    let cert = Certificate::from_bytes(&read(&c.cert)).unwrap();
    let data = payload();
    let env = seal_envelope(&[&cert], &data).unwrap();
    assert_eq!(openssl_cms_decrypt(dir.path(), &env, &c.key), data);

    // Empty and 32-byte payloads too.
    for p in [&b""[..], &[0x5a; 32][..]] {
        let env = seal_envelope(&[&cert], p).unwrap();
        assert_eq!(openssl_cms_decrypt(dir.path(), &env, &c.key), p);
    }

    // The structure is what we promise: OAEP SHA-256 / MGF1-SHA-256, AES-256-CBC, id-data.
    write(&dir.path().join("s.p7m"), &env);
    let printed = String::from_utf8(openssl(
        &["cms", "-cmsout", "-print", "-inform", "DER", "-in", "s.p7m"],
        None,
        dir.path(),
    ))
    .unwrap();
    for needle in [
        "contentType: pkcs7-envelopedData",
        "rsaesOaep",
        "sha256",
        "mgf1",
        "aes-256-cbc",
        "contentType: pkcs7-data",
        "issuerAndSerialNumber",
    ] {
        assert!(
            printed.contains(needle),
            "missing {needle:?} in:\n{printed}"
        );
    }
}

#[test]
fn sealed_envelope_for_generated_identity_decrypts_with_openssl() {
    let dir = tempdir();
    let id = generate_self_signed("ibs gen", 2048, 10, now_unix()).unwrap();
    write(&dir.path().join("id.pfx"), &id.to_pfx(PASSWORD).unwrap());
    openssl(
        &[
            "pkcs12",
            "-in",
            "id.pfx",
            "-nodes",
            "-nocerts",
            "-out",
            "id.key.pem",
            "-passin",
            "env:IBS_KEYS_TEST_PASS",
        ],
        Some(PASSWORD),
        dir.path(),
    );
    let data = payload();
    let env = seal_envelope(&[id.certificate()], &data).unwrap();
    assert_eq!(
        openssl_cms_decrypt(dir.path(), &env, &dir.path().join("id.key.pem")),
        data
    );
}

#[test]
fn two_recipient_envelope_opens_for_each_with_openssl_and_rust() {
    let dir = tempdir();
    let a = openssl_rsa_cert(dir.path(), "a", 2048, "recipient a");
    let b = openssl_rsa_cert(dir.path(), "b", 2048, "recipient b");
    let cert_a = Certificate::from_bytes(&read(&a.cert)).unwrap();
    let cert_b = Certificate::from_bytes(&read(&b.cert)).unwrap();
    let data = payload();
    let env = seal_envelope(&[&cert_a, &cert_b], &data).unwrap();

    assert_eq!(openssl_cms_decrypt(dir.path(), &env, &a.key), data);
    assert_eq!(openssl_cms_decrypt(dir.path(), &env, &b.key), data);

    let recipients = envelope_recipients(&env).unwrap();
    assert_eq!(recipients.len(), 2);
    for cert in [&cert_a, &cert_b] {
        let expected = format!("issuer={}, serial={}", cert.subject(), cert.serial_hex());
        assert!(
            recipients.contains(&expected),
            "{recipients:?} lacks {expected}"
        );
    }

    let id_a = identity_from_openssl(dir.path(), &a);
    let id_b = identity_from_openssl(dir.path(), &b);
    assert_eq!(open_envelope(&id_a, &env).unwrap().as_slice(), data);
    assert_eq!(open_envelope(&id_b, &env).unwrap().as_slice(), data);
}

/// `openssl cms -encrypt` with the given extra options; returns the DER envelope.
fn openssl_encrypt(dir: &Path, cert_pem: &Path, data: &[u8], extra: &[&str]) -> Vec<u8> {
    write(&dir.join("plain.bin"), data);
    let mut args = vec![
        "cms",
        "-encrypt",
        "-binary",
        "-outform",
        "DER",
        "-in",
        "plain.bin",
        "-out",
        "enc.p7m",
        "-recip",
        cert_pem.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    openssl(&args, None, dir);
    read(&dir.join("enc.p7m"))
}

#[test]
fn openssl_envelopes_open_in_rust() {
    let dir = tempdir();
    let c = openssl_rsa_cert(dir.path(), "r", 2048, "rust opener");
    let id = identity_from_openssl(dir.path(), &c);
    let data = payload();

    let variants: [(&str, &[&str]); 7] = [
        (
            "OAEP SHA-256 / MGF1 SHA-256",
            &[
                "-aes256",
                "-keyopt",
                "rsa_padding_mode:oaep",
                "-keyopt",
                "rsa_oaep_md:sha256",
                "-keyopt",
                "rsa_mgf1_md:sha256",
            ],
        ),
        ("PKCS#1 v1.5 (default padding)", &["-aes256"]),
        (
            "OAEP SHA-1 (openssl's default OAEP)",
            &["-aes256", "-keyopt", "rsa_padding_mode:oaep"],
        ),
        (
            "OAEP SHA-256 / MGF1 SHA-1",
            &[
                "-aes256",
                "-keyopt",
                "rsa_padding_mode:oaep",
                "-keyopt",
                "rsa_oaep_md:sha256",
                "-keyopt",
                "rsa_mgf1_md:sha1",
            ],
        ),
        ("AES-128-CBC content", &["-aes128"]),
        (
            "recipient by subject key identifier",
            &["-aes256", "-keyid"],
        ),
        ("openssl defaults (3DES content, PKCS#1 v1.5)", &[]),
    ];
    for (what, extra) in variants {
        let env = openssl_encrypt(dir.path(), &c.cert, &data, extra);
        let opened = open_envelope(&id, &env).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(opened.as_slice(), data.as_slice(), "{what}");
    }
}
