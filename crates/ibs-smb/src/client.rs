//! `SmbClient`: the reconnecting owner of the current [`Session`], plus [`SmbOptions`].
//! Invariants: callers get the current live session or a fresh one (never a dead one); an error that
//! breaks the connection (timeout, reset, lost session) kills the session so the next call opens a
//! new connection and session. Reconnecting is bounded by the connect timeout.

use crate::crypto::Dialect;
use crate::error::SmbResult;
use crate::session::{Session, SessionParams};
use std::sync::Arc;
use std::time::Duration;

/// Tunables of the SMB backend.
#[derive(Clone, Debug)]
pub struct SmbOptions {
    /// Overrides the location's port.
    pub port: Option<u16>,
    /// Bound on TCP connect + negotiate + authenticate + tree connect.
    pub connect_timeout: Duration,
    /// Bound on every single request.
    pub op_timeout: Duration,
    /// Read every object back and compare size and BLAKE3 before publishing it.
    pub verify_writes: bool,
    /// Read/write requests in flight per object.
    pub max_in_flight: usize,
    /// Encrypt everything even when the share does not require it (fails on servers without
    /// SMB 3 encryption).
    pub require_encryption: bool,
    /// Dialects the client may offer; the server picks the highest common one. Those below the
    /// location's `min_dialect` (SMB 3.0 unless the location opts into 2.1) are never offered.
    pub dialects: Vec<Dialect>,
    /// Offer AES-GMAC signing with 3.1.1 (AES-CMAC is used when off or not chosen by the server).
    pub gmac_signing: bool,
    /// Create the location's folder path when missing (otherwise a missing folder is a Path error).
    pub create_folder: bool,
}

impl Default for SmbOptions {
    fn default() -> Self {
        SmbOptions {
            port: None,
            connect_timeout: Duration::from_secs(10),
            op_timeout: Duration::from_secs(30),
            verify_writes: true,
            max_in_flight: 8,
            require_encryption: false,
            dialects: vec![
                Dialect::Smb210,
                Dialect::Smb300,
                Dialect::Smb302,
                Dialect::Smb311,
            ],
            gmac_signing: true,
            create_folder: true,
        }
    }
}

impl SmbOptions {
    /// Offers dialects up to and including `max` only.
    pub fn with_max_dialect(mut self, max: Dialect) -> Self {
        self.dialects.retain(|d| *d <= max);
        self
    }
}

/// Holds the current session and replaces it when it dies.
#[derive(Debug)]
pub struct SmbClient {
    params: SessionParams,
    current: tokio::sync::Mutex<Option<Arc<Session>>>,
}

impl SmbClient {
    /// Opens the first session (so configuration errors surface at once).
    pub async fn connect(params: SessionParams) -> SmbResult<SmbClient> {
        let s = Session::open(&params).await?;
        Ok(SmbClient {
            params,
            current: tokio::sync::Mutex::new(Some(Arc::new(s))),
        })
    }

    /// The live session, reconnecting if the previous one died.
    pub async fn session(&self) -> SmbResult<Arc<Session>> {
        let mut cur = self.current.lock().await;
        if let Some(s) = cur.as_ref() {
            if s.is_alive() {
                return Ok(s.clone());
            }
        }
        *cur = None;
        tracing::info!(host = %self.params.host, share = %self.params.share, "opening a new SMB session");
        let s = Arc::new(Session::open(&self.params).await?);
        *cur = Some(s.clone());
        Ok(s)
    }

    /// Records the outcome of a call made on `s`: a connection-breaking error kills the session.
    pub fn note<T>(&self, s: &Session, r: &SmbResult<T>) {
        if let Err(e) = r {
            if e.breaks_connection() {
                s.kill(&e.to_string());
            }
        }
    }

    pub fn params(&self) -> &SessionParams {
        &self.params
    }

    /// Kills the current session (tests and shutdown).
    pub async fn disconnect(&self) {
        if let Some(s) = self.current.lock().await.take() {
            s.kill("disconnected by the client");
        }
    }
}
