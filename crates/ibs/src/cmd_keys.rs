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

pub fn load_cert(path: &Path) -> Result<Certificate> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading certificate {}", path.display()))?;
    let cert = Certificate::from_bytes(&bytes)
        .with_context(|| format!("certificate {}", path.display()))?;
    let now = SystemClock.now_unix();
    if cert.is_expired_at(now) {
        eprintln!(
            "warning: certificate {} ({}) expired on {}; it still encrypts, but rotate it (ibs cert new, then ibs repo set-cert)",
            cert.thumbprint(),
            cert.subject(),
            rfc3339(cert.not_after())
        );
    }
    Ok(cert)
}

pub fn cert(cmd: CertCmd, json: bool) -> Result<i32> {
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
            let ident =
                ibs_keys::generate_self_signed(&subject, bits, days, SystemClock.now_unix())?;
            let pfx_bytes = ident.to_pfx(&password)?;
            write_new(&cer, ident.certificate().der(), 0o644)?;
            write_new(&pfx, &pfx_bytes, 0o600)?;
            let c = ident.certificate();
            if json {
                println!(
                    "{}",
                    serde_json::json!({"thumbprint": c.thumbprint(), "subject": c.subject(), "not_after": rfc3339(c.not_after()), "bits": c.key_bits(), "cer": cer, "pfx": pfx})
                );
            } else {
                println!(
                    "certificate {} ({}, RSA {} bits, expires {})",
                    c.thumbprint(),
                    c.subject(),
                    c.key_bits(),
                    rfc3339(c.not_after())
                );
                println!(
                    "  public  .cer: {}   (give this to the backup controller)",
                    cer.display()
                );
                println!("  private .pfx: {}   (store it OFF this host, e.g. in a vault; recovery needs it)", pfx.display());
            }
            Ok(0)
        }
        CertCmd::Show { cer } => {
            let c = load_cert(&cer)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"thumbprint": c.thumbprint(), "subject": c.subject(), "not_before": rfc3339(c.not_before()), "not_after": rfc3339(c.not_after()), "bits": c.key_bits()})
                );
            } else {
                println!(
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
            println!(
                "wrote a new legacy key to {} — store it OFF this host; recovery needs it",
                out.display()
            );
            Ok(0)
        }
    }
}
