//! Shared helpers for the interop tests: running the real `openssl` CLI (a missing binary
//! fails the test), scratch directories and key/certificate fixtures made by openssl.
//! Passwords reach openssl only through the environment (`env:VAR`), never on argv.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

pub const OPENSSL: &str = "/usr/bin/openssl";

/// Name of the environment variable used to hand passwords to openssl.
pub const PASS_VAR: &str = "IBS_KEYS_TEST_PASS";

pub fn now_unix() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    i64::try_from(secs).expect("fits i64")
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create temp dir")
}

/// Runs openssl with `args` and optional password env; returns the raw output.
/// Panics (fails the test) if the binary cannot be started.
pub fn openssl_raw(args: &[&str], password: Option<&str>, dir: &Path) -> Output {
    assert!(
        Path::new(OPENSSL).exists(),
        "{OPENSSL} is missing: these interop tests need the openssl CLI"
    );
    let mut cmd = Command::new(OPENSSL);
    cmd.args(args).current_dir(dir);
    cmd.env_remove(PASS_VAR);
    if let Some(p) = password {
        cmd.env(PASS_VAR, p);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {OPENSSL} {args:?}: {e}"))
}

/// Runs openssl and asserts success; returns stdout.
pub fn openssl(args: &[&str], password: Option<&str>, dir: &Path) -> Vec<u8> {
    let out = openssl_raw(args, password, dir);
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

pub fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// An openssl-made key pair and self-signed certificate (PEM files in `dir`).
pub struct OpensslCert {
    pub key: PathBuf,
    pub cert: PathBuf,
}

/// `openssl req -x509 -newkey <newkey>`; `name` prefixes the file names.
pub fn openssl_cert(dir: &Path, name: &str, newkey: &[&str], cn: &str) -> OpensslCert {
    let key = dir.join(format!("{name}.key.pem"));
    let cert = dir.join(format!("{name}.cert.pem"));
    let subj = format!("/CN={cn}");
    let mut args = vec!["req", "-x509"];
    args.extend_from_slice(newkey);
    args.extend_from_slice(&[
        "-noenc",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
        "-subj",
        &subj,
        "-days",
        "30",
    ]);
    openssl(&args, None, dir);
    OpensslCert { key, cert }
}

/// An RSA key + certificate made by openssl.
pub fn openssl_rsa_cert(dir: &Path, name: &str, bits: u32, cn: &str) -> OpensslCert {
    let newkey = format!("rsa:{bits}");
    openssl_cert(dir, name, &["-newkey", &newkey], cn)
}

/// `openssl pkcs12 -export` of an openssl-made key/cert (extra args e.g. `-legacy`).
pub fn openssl_pfx(dir: &Path, c: &OpensslCert, password: &str, extra: &[&str]) -> Output {
    let out = dir.join("export.pfx");
    let mut args = vec![
        "pkcs12",
        "-export",
        "-inkey",
        c.key.to_str().unwrap(),
        "-in",
        c.cert.to_str().unwrap(),
        "-out",
        out.to_str().unwrap(),
        "-passout",
        "env:IBS_KEYS_TEST_PASS",
    ];
    args.extend_from_slice(extra);
    openssl_raw(&args, Some(password), dir)
}

/// SHA-1 fingerprint as openssl prints it, colons removed (uppercase hex).
pub fn openssl_sha1_fingerprint(dir: &Path, cert_pem: &Path) -> String {
    let out = openssl(
        &[
            "x509",
            "-in",
            cert_pem.to_str().unwrap(),
            "-noout",
            "-fingerprint",
            "-sha1",
        ],
        None,
        dir,
    );
    let text = String::from_utf8(out).unwrap();
    let value = text.trim().rsplit('=').next().unwrap();
    value.replace(':', "").to_uppercase()
}

/// Decrypts a DER envelope with openssl; returns the plaintext.
pub fn openssl_cms_decrypt(dir: &Path, envelope: &[u8], key_pem: &Path) -> Vec<u8> {
    let p7m = dir.join(format!("env-{}.p7m", rand_suffix(envelope)));
    write(&p7m, envelope);
    openssl(
        &[
            "cms",
            "-decrypt",
            "-inform",
            "DER",
            "-in",
            p7m.to_str().unwrap(),
            "-inkey",
            key_pem.to_str().unwrap(),
            "-binary",
        ],
        None,
        dir,
    )
}

fn rand_suffix(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Small deterministic PRNG (xorshift64*) for the no-panic loops.
pub struct TestRng(u64);

impl TestRng {
    pub fn new(seed: u64) -> Self {
        TestRng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next_u64() % u64::try_from(n.max(1)).unwrap()).unwrap()
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}
