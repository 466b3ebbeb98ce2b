//! Keys at the repository level: openssl interoperability (certificates, .pfx files and CMS
//! envelopes), the key model (what the writer can and cannot read), legacy key files and the switch
//! to certificates, certificate rotation and rewrap, and adopting a repository after losing the state.

mod common;

use common::*;
use std::path::{Path, PathBuf};

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Decrypts a CMS envelope with openssl and the private key in `key_pem`.
fn cms_decrypt(p7m: &Path, key_pem: &Path, out: &Path) -> Vec<u8> {
    openssl([
        "cms",
        "-decrypt",
        "-inform",
        "DER",
        "-in",
        p(p7m),
        "-inkey",
        p(key_pem),
        "-binary",
        "-out",
        p(out),
    ]);
    std::fs::read(out).unwrap()
}

fn make_source(dir: &Path, seed: u64) {
    write(&dir.join("a.txt"), format!("version {seed}\n").as_bytes());
    write(&dir.join("sub/b.bin"), &pseudo_random(seed, 700_000));
    write(&dir.join("sub/c.log"), &b"log line\n".repeat(20_000));
}

fn restore_and_compare(fx: &Fx, id: &str, want: &Snapshot, unlock: &[&str], tag: &str) {
    let t = fx.path(&format!("restore-{tag}"));
    fx.repo_cmd("restore")
        .args(["--backup", id, "--source", "data"])
        .arg("--target")
        .arg(&t)
        .args(unlock)
        .pw()
        .run()
        .ok();
    assert_tree(want, &t, tag);
}

#[test]
fn openssl_made_rsa3072_certificate_and_pfx_round_trip() {
    let fx = Fx::new();
    let key = fx.path("k.pem");
    let pem = fx.path("c.pem");
    let cer = fx.path("c.cer");
    let pfx = fx.path("c.pfx");
    openssl([
        "req",
        "-x509",
        "-newkey",
        "rsa:3072",
        "-nodes",
        "-keyout",
        p(&key),
        "-out",
        p(&pem),
        "-subj",
        "/CN=openssl made backup cert",
        "-days",
        "60",
    ]);
    openssl(["x509", "-in", p(&pem), "-outform", "DER", "-out", p(&cer)]);
    openssl([
        "pkcs12",
        "-export",
        "-inkey",
        p(&key),
        "-in",
        p(&pem),
        "-out",
        p(&pfx),
        "-passout",
        "env:IBS_PFX_PASSWORD",
    ]);
    let tp = thumbprint(&cer);

    fx.init_cert(&cer);
    let src = fx.path("src");
    make_source(&src, 1);
    let want = snapshot(&src);
    let id = fx.backup(&[("data", &src)]);
    assert_eq!(fx.catalog(&id)["certificate_thumbprint"], tp.as_str());
    assert!(fx.mas().join(format!("keys/certs/{tp}.cer")).is_file());
    restore_and_compare(&fx, &id, &want, &["--pfx", p(&pfx)], "openssl-pfx");
    fx.check_full(&pfx);
}

#[test]
fn envelopes_open_with_openssl_and_the_writer_cannot_read_backups() {
    let fx = Fx::new();
    let cert = shared_cert(0);
    fx.init_cert(&cert.cer);
    let src = fx.path("src");
    make_source(&src, 2);
    let id = fx.backup(&[("data", &src)]);
    let cat = fx.catalog(&id);
    let key_id = cat["data_key_id"].as_str().unwrap().to_owned();
    assert_eq!(key_id.len(), 32);

    let key_pem = fx.path("key.pem");
    let pem = openssl([
        "pkcs12",
        "-in",
        p(&cert.pfx),
        "-nocerts",
        "-nodes",
        "-passin",
        "env:IBS_PFX_PASSWORD",
    ]);
    std::fs::write(&key_pem, &pem).unwrap();

    // The data key envelope.
    let p7m = fx.mas().join(format!("keys/data/{key_id}.p7m"));
    let plain = cms_decrypt(&p7m, &key_pem, &fx.path("dk.bin"));
    assert_eq!(plain.len(), 54, "data key payload length");
    assert_eq!(&plain[..5], b"IBSDK");
    assert_eq!(plain[5], 1, "payload version");
    assert_eq!(
        hex_lower(&plain[6..22]),
        key_id,
        "key id bound into the payload"
    );
    let data_key = plain[22..54].to_vec();

    // The repository key envelope.
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fx.mas().join("config")).unwrap()).unwrap();
    let repo_id = cfg["id"].as_str().unwrap();
    let rk = cms_decrypt(
        &fx.mas().join(format!("keys/repo-{}.p7m", cert.thumbprint)),
        &key_pem,
        &fx.path("rk.bin"),
    );
    assert_eq!(rk.len(), 86, "repository key payload length");
    assert_eq!(&rk[..5], b"IBSRK");
    assert_eq!(rk[5], 1);
    assert_eq!(hex_lower(&rk[6..22]), repo_id);

    // The data key exists nowhere else, in any encoding.
    let needles: Vec<(String, Vec<u8>)> = vec![
        ("raw".into(), data_key.clone()),
        ("hex".into(), hex_lower(&data_key).into_bytes()),
        (
            "HEX".into(),
            hex_lower(&data_key).to_uppercase().into_bytes(),
        ),
        ("base64".into(), b64(&data_key).into_bytes()),
    ];
    let mut scanned = 0;
    for dir in [&fx.state, &fx.mas()] {
        for f in files_under(dir) {
            let bytes = std::fs::read(&f).unwrap();
            scanned += 1;
            for (what, n) in &needles {
                assert!(
                    !contains(&bytes, n),
                    "the data key ({what}) is readable in {}",
                    f.display()
                );
            }
        }
    }
    assert!(scanned >= 8, "too few files scanned ({scanned})");

    // The writer state holds no private key.
    let pkcs8 = openssl(["pkey", "-in", p(&key_pem), "-outform", "DER"]);
    let pkcs1 = openssl(["rsa", "-in", p(&key_pem), "-traditional", "-outform", "DER"]);
    assert!(pkcs8.len() > 1000 && pkcs1.len() > 1000);
    let exponent_window = pkcs1[300..332].to_vec();
    let pem_text = String::from_utf8(openssl(["pkey", "-in", p(&key_pem)])).unwrap();
    let pem_line = pem_text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .nth(7)
        .unwrap()
        .to_owned();
    // The needles are real: each is found in the key material it was taken from.
    assert!(contains(&pkcs8, &exponent_window) && contains(&pkcs1, &exponent_window));
    assert!(contains(&pem, pem_line.as_bytes()) && pem_line.len() == 64);
    assert_eq!(b64(b"foob"), "Zm9vYg==");
    let state_files = files_under(&fx.state);
    assert!(
        state_files.iter().any(|f| f.ends_with("writer.json")),
        "no writer.json in {state_files:?}"
    );
    for f in &state_files {
        let bytes = std::fs::read(f).unwrap();
        for (what, n) in [
            ("PRIVATE KEY text", b"PRIVATE KEY".to_vec()),
            ("PKCS#8 DER", pkcs8.clone()),
            ("PKCS#1 DER", pkcs1.clone()),
            ("private exponent bytes", exponent_window.clone()),
            ("PEM private key line", pem_line.clone().into_bytes()),
        ] {
            assert!(
                !contains(&bytes, &n),
                "writer state file {} holds the private key ({what})",
                f.display()
            );
        }
    }
    // ... and so, with the state alone, restore is refused.
    fx.repo_cmd("restore")
        .args(["--backup", &id])
        .arg("--target")
        .arg(fx.path("t"))
        .run()
        .code(5);
}

#[test]
fn legacy_key_then_switch_to_certificate() {
    let fx = Fx::new();
    let key = fx.path("legacy.key");
    ibs(["key", "new", "--out"]).arg(&key).run().ok();
    fx.repo_cmd("init")
        .arg("--key-file")
        .arg(&key)
        .run()
        .ok()
        .stderr_has("legacy");
    let cfg = |fx: &Fx| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(fx.mas().join("config")).unwrap()).unwrap()
    };
    assert_eq!(cfg(&fx)["encryption"]["mode"], "legacy-key");

    let src = fx.path("src");
    make_source(&src, 3);
    let want_old = snapshot(&src);
    let old = fx.backup(&[("data", &src)]);
    let c = fx.catalog(&old);
    assert_eq!(c["encryption_mode"], "legacy-key");
    assert!(c["certificate_thumbprint"].is_null());
    restore_and_compare(&fx, &old, &want_old, &["--key-file", p(&key)], "legacy");

    let cert = shared_cert(0);
    fx.repo_cmd("set-cert")
        .arg("--cert")
        .arg(&cert.cer)
        .run()
        .ok();
    let after = cfg(&fx);
    assert_eq!(
        after["encryption"]["mode"], "certificate",
        "config: {after}"
    );
    assert_eq!(after["encryption"]["current"], cert.thumbprint.as_str());

    write(&src.join("a.txt"), b"after the switch\n");
    let want_new = snapshot(&src);
    let new = fx.backup(&[("data", &src)]);
    let c = fx.catalog(&new);
    assert_eq!(c["certificate_thumbprint"], cert.thumbprint.as_str());
    assert_eq!(c["encryption_mode"], "certificate");

    // The .pfx alone now reads the old legacy backup and the new one.
    let pfx = p(&cert.pfx).to_owned();
    restore_and_compare(&fx, &old, &want_old, &["--pfx", &pfx], "old-with-pfx");
    restore_and_compare(&fx, &new, &want_new, &["--pfx", &pfx], "new-with-pfx");
    // The key file cannot open a certificate-wrapped data key.
    fx.repo_cmd("restore")
        .args(["--backup", &new])
        .arg("--target")
        .arg(fx.path("t-key"))
        .arg("--key-file")
        .arg(&key)
        .run()
        .code(5)
        .stderr_has("--pfx");
    fx.check_full(&cert.pfx);
}

fn restore_fails(fx: &Fx, id: &str, pfx: &[&Path], tag: &str) -> Out {
    let t: PathBuf = fx.path(&format!("fail-{tag}"));
    fx.restore_cmd(id, &t, pfx).run().code(5)
}

#[test]
fn rotation_set_cert_then_rewrap() {
    let fx = Fx::new();
    let a = shared_cert(0);
    let b = shared_cert(1);
    fx.init_cert(&a.cer);
    let src = fx.path("src");
    make_source(&src, 4);
    let want1 = snapshot(&src);
    let b1 = fx.backup(&[("data", &src)]);

    let out = fx.repo_cmd("set-cert").arg("--cert").arg(&b.cer).run().ok();
    assert!(
        out.stdout.contains(&b.thumbprint),
        "set-cert names the new certificate:\n{out}"
    );
    write(&src.join("sub/new.bin"), &pseudo_random(44, 200_000));
    let want2 = snapshot(&src);
    let b2 = fx.backup(&[("data", &src)]);
    assert_eq!(
        fx.catalog(&b1)["certificate_thumbprint"],
        a.thumbprint.as_str()
    );
    assert_eq!(
        fx.catalog(&b2)["certificate_thumbprint"],
        b.thumbprint.as_str()
    );

    // Backup 1 is wrapped for A only.
    restore_fails(&fx, &b1, &[&b.pfx], "b1-with-b").stderr_has(&a.thumbprint);
    // Both .pfx files (same password) read both backups.
    let (pa, pb) = (p(&a.pfx).to_owned(), p(&b.pfx).to_owned());
    restore_and_compare(&fx, &b1, &want1, &["--pfx", &pa, "--pfx", &pb], "b1-ab");
    restore_and_compare(&fx, &b2, &want2, &["--pfx", &pa, "--pfx", &pb], "b2-ab");

    fx.repo_cmd("rewrap")
        .arg("--pfx")
        .arg(&a.pfx)
        .arg("--cert")
        .arg(&b.cer)
        .pw()
        .run()
        .ok();
    // Now B alone reads everything; A (replaced, no --keep-old) reads nothing.
    restore_and_compare(&fx, &b1, &want1, &["--pfx", &pb], "b1-b");
    restore_and_compare(&fx, &b2, &want2, &["--pfx", &pb], "b2-b");
    restore_fails(&fx, &b1, &[&a.pfx], "b1-with-a");
    fx.check_full(&b.pfx);
}

#[test]
fn adopt_rebuilds_a_lost_writer_state() {
    let fx = Fx::new();
    let a = shared_cert(0);
    fx.init_cert(&a.cer);
    let src = fx.path("src");
    make_source(&src, 5);
    write(&src.join("big.bin"), &pseudo_random(55, 4 << 20));
    let want = snapshot(&src);
    let first = fx.backup(&[("data", &src)]);
    let stored1 = fx.catalog(&first)["bytes_stored"].as_u64().unwrap();
    assert!(stored1 > 4 << 20, "first backup stored {stored1}");

    std::fs::remove_dir_all(&fx.state).unwrap();
    let out = fx.backup_cmd(&[("data", &src)]).run();
    assert_ne!(
        out.code, 0,
        "a backup without writer state must fail:\n{out}"
    );
    out.stderr_has("ibs repo adopt");
    assert_eq!(fx.list_ids(), [first.as_str()]);

    fx.repo_cmd("adopt")
        .arg("--pfx")
        .arg(&a.pfx)
        .pw()
        .run()
        .ok();
    assert!(files_under(&fx.state)
        .iter()
        .any(|f| f.ends_with("writer.json")));
    let second = fx.backup(&[("data", &src)]);
    let stored2 = fx.catalog(&second)["bytes_stored"].as_u64().unwrap();
    assert!(
        stored2 * 100 < stored1,
        "after adopt, a backup of the unchanged source stored {stored2} bytes (first: {stored1}); dedup was lost"
    );
    restore_and_compare(&fx, &second, &want, &["--pfx", p(&a.pfx)], "adopted");
    fx.check_full(&a.pfx);
}
