//! Optional TLS for the controller's API: a certificate chain and key in PEM files (`--tls-cert`,
//! `--tls-key`, or `tls_cert`/`tls_key` in the config, or `$IBS_TLS_CERT`/`$IBS_TLS_KEY`).
//! Handshakes are done by [`crate::listen`], each on its connection's own task with a deadline.

use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;

/// Loads a PEM certificate chain and private key into a server configuration.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("TLS certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("TLS certificate {}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!(
            "TLS certificate {}: no CERTIFICATE block found",
            cert.display()
        );
    }
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("TLS key {}", key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS key does not match the certificate")?;
    Ok(Arc::new(config))
}
