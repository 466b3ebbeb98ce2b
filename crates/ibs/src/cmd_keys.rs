//! `ibs cert …` and `ibs key …`.

use crate::cli::{CertCmd, KeyCmd};
use crate::secrets;
use anyhow::{bail, Context, Result};
use ibs_keys::{Certificate, LegacyKey};
use ibs_repo::clock::{rfc3339, Clock, SystemClock};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes a new file; refuses to overwrite (a lost .pfx or key file cannot be recreated).
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| {
            format!(
                "cannot create {} (refusing to overwrite an existing file)",
                path.display()
            )
        })?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Whether `bytes` are a PKCS#12 (.pfx) file: it parses as one, whatever its password.
fn is_pfx(bytes: &[u8]) -> bool {
    use ibs_keys::KeyError as K;
    !matches!(
        ibs_keys::PrivateIdentity::from_pfx(bytes, ""),
        Err(K::PfxParse { .. })
    )
}

pub fn load_cert(path: &Path) -> Result<Certificate> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading certificate {}", path.display()))?;
    let cert = match Certificate::from_bytes(&bytes) {
        Ok(c) => c,
        // A private key where the public certificate belongs: say so, and go no further (the
        // caller never sends or stores it).
        Err(_) if is_pfx(&bytes) => {
            return Err(crate::errors::coded(
                crate::output::exit::KEY,
                format!(
                    "{} is a .pfx (private key), not a certificate",
                    path.display()
                ),
                "give the .cer (public key only); keep the .pfx off this host",
            ))
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("certificate {}", path.display())))
        }
    };
    let now = SystemClock.now_unix();
    if cert.is_expired_at(now) {
        errln!(
            "warning: certificate {} ({}) expired on {}; it still encrypts, but rotate it (ibs cert new, then ibs repo set-cert)",
            cert.thumbprint(),
            cert.subject(),
            rfc3339(cert.not_after())
        );
    }
    Ok(cert)
}

pub fn cert(cmd: CertCmd, json: bool, quiet: bool) -> Result<i32> {
    match cmd {
        CertCmd::New {
            subject,
            cer,
            pfx,
            days,
            bits,
            pfx_password_file,
        } => {
            for p in [&cer, &pfx] {
                if p.exists() {
                    bail!("{} already exists; refusing to overwrite", p.display());
                }
            }
            let password = secrets::pfx_password(pfx_password_file.as_deref(), true)?;
            if password.is_empty() {
                bail!("the .pfx password must not be empty");
            }
            // The subject is a common name; `CN=x` (as other tools take it) means the same.
            let subject = match subject.get(..3) {
                Some(p) if p.eq_ignore_ascii_case("cn=") => subject[3..].to_string(),
                _ => subject,
            };
            let ident =
                ibs_keys::generate_self_signed(&subject, bits, days, SystemClock.now_unix())?;
            let pfx_bytes = ident.to_pfx(&password)?;
            write_new(&cer, ident.certificate().der(), 0o644)?;
            write_new(&pfx, &pfx_bytes, 0o600)?;
            let c = ident.certificate();
            if json {
                outln!(
                    "{}",
                    serde_json::json!({"thumbprint": c.thumbprint(), "subject": c.subject(), "not_after": rfc3339(c.not_after()), "bits": c.key_bits(), "cer": cer, "pfx": pfx})
                );
            } else if quiet {
                outln!("{}", c.thumbprint());
            } else {
                outln!(
                    "certificate {} ({}, RSA {} bits, expires {})",
                    c.thumbprint(),
                    c.subject(),
                    c.key_bits(),
                    rfc3339(c.not_after())
                );
                outln!(
                    "  public  .cer: {}   (give this to the backup controller)",
                    cer.display()
                );
                outln!("  private .pfx: {}   (store it OFF this host, e.g. in a vault; recovery needs it)", pfx.display());
            }
            Ok(0)
        }
        CertCmd::Show { cer } => {
            let c = load_cert(&cer)?;
            if json {
                outln!(
                    "{}",
                    serde_json::json!({"thumbprint": c.thumbprint(), "subject": c.subject(), "not_before": rfc3339(c.not_before()), "not_after": rfc3339(c.not_after()), "bits": c.key_bits()})
                );
            } else {
                outln!(
                    "thumbprint {}\nsubject    {}\nvalid      {} .. {}\nkey        RSA {} bits",
                    c.thumbprint(),
                    c.subject(),
                    rfc3339(c.not_before()),
                    rfc3339(c.not_after()),
                    c.key_bits()
                );
            }
            Ok(0)
        }
    }
}

pub fn key(cmd: KeyCmd) -> Result<i32> {
    match cmd {
        KeyCmd::New { out } => {
            let k = LegacyKey::generate();
            write_new(&out, k.to_file_text().as_bytes(), 0o600)?;
            outln!(
                "wrote a new legacy key to {} — store it OFF this host; recovery needs it",
                out.display()
            );
            Ok(0)
        }
    }
}
