//! An authenticated SMB session with one tree connect, over one [`Connection`]: dialect negotiation
//! (2.1, 3.0.2, 3.1.1 with the pre-auth integrity hash and cipher contexts), NTLMv2 session setup,
//! key derivation, and `call`, which signs or encrypts each request and checks each response.
//!
//! Invariants: once the session is established every request is signed (or encrypted, when the
//! session or share requires it or the options ask for it) and every non-encrypted response must
//! carry a valid signature; a session is never downgraded after setup.

use crate::crypto::{preauth_update, Cipher, Dialect, Keys};
use crate::error::{SmbError, SmbResult, Stage};
use crate::messages as m;
use crate::ntlm::{self, Secret};
use crate::ntstatus::NtStatus;
use crate::transport::{Connection, Outgoing, Response};
use crate::wire::{Command, FLAG_SIGNED};
use std::sync::Arc;
use std::time::Duration;

/// Everything needed to open a session.
#[derive(Clone, Debug)]
pub struct SessionParams {
    pub host: String,
    pub port: u16,
    pub share: String,
    /// `user` or `DOMAIN\user`.
    pub username: String,
    pub password: Secret,
    /// Dialects offered, any order.
    pub dialects: Vec<Dialect>,
    pub require_encryption: bool,
    pub connect_timeout: Duration,
    pub op_timeout: Duration,
    /// Offer AES-GMAC signing in 3.1.1 (much faster than AES-CMAC); AES-CMAC otherwise.
    pub gmac_signing: bool,
}

/// An established session with its tree.
#[derive(Debug)]
pub struct Session {
    conn: Connection,
    pub dialect: Dialect,
    pub max_read: u32,
    pub max_write: u32,
    large_mtu: bool,
    session_id: u64,
    keys: Arc<Keys>,
    encrypt: bool,
    tree_id: u32,
    pub op_timeout: Duration,
}

/// Largest single READ/WRITE this client issues.
pub const MAX_IO: u32 = 1 << 20;

impl Session {
    /// Connects, negotiates, authenticates and connects the tree, all within `connect_timeout`.
    pub async fn open(p: &SessionParams) -> SmbResult<Session> {
        match tokio::time::timeout(p.connect_timeout, Self::open_inner(p)).await {
            Ok(r) => r,
            Err(_) => Err(SmbError::Timeout {
                op: "connect",
                after: p.connect_timeout,
            }),
        }
    }

    async fn open_inner(p: &SessionParams) -> SmbResult<Session> {
        let conn = Connection::connect(&p.host, p.port, p.connect_timeout).await?;
        let t = p.connect_timeout;
        let mut dialects = p.dialects.clone();
        dialects.sort();
        dialects.dedup();
        if dialects.is_empty() {
            return Err(SmbError::Invalid("no SMB dialect allowed".into()));
        }

        // NEGOTIATE
        let guid: [u8; 16] = rand::random();
        let salt: [u8; 32] = rand::random();
        let body = m::negotiate(&dialects, &guid, &salt, p.gmac_signing);
        let out = Outgoing {
            command: Command::Negotiate,
            body: &[&body],
            tree_id: 0,
            session_id: 0,
            charge: 1,
            sign: None,
            encrypt: None,
            keep_sent: true,
        };
        let (resp, sent) = conn.request(out, t).await?;
        expect_ok(&resp, "negotiate", Stage::Negotiate)?;
        let neg = m::parse_negotiate(&resp.msg)?;
        let dialect = Dialect::from_u16(neg.dialect)
            .filter(|d| dialects.contains(d))
            .ok_or_else(|| {
                SmbError::Protocol(format!(
                    "server chose unsupported dialect 0x{:04x}",
                    neg.dialect
                ))
            })?;
        let mut preauth = [0u8; 64];
        if dialect == Dialect::Smb311 {
            preauth_update(&mut preauth, sent.as_deref().unwrap_or_default());
            preauth_update(&mut preauth, &resp.msg);
        }
        let cipher = match dialect {
            Dialect::Smb311 => neg.cipher,
            Dialect::Smb300 | Dialect::Smb302 if neg.capabilities & m::CAP_ENCRYPTION != 0 => {
                Some(Cipher::Aes128Ccm)
            }
            _ => None,
        };
        tracing::debug!(
            ?dialect,
            ?cipher,
            max_read = neg.max_read,
            max_write = neg.max_write,
            "negotiated"
        );

        // SESSION_SETUP, leg 1: NTLM NEGOTIATE.
        let (user, domain) = ntlm::split_user(&p.username);
        let negotiate_msg = ntlm::negotiate_message();
        let body = m::session_setup(&ntlm::spnego_init(&negotiate_msg));
        let out = Outgoing {
            command: Command::SessionSetup,
            body: &[&body],
            tree_id: 0,
            session_id: 0,
            charge: 1,
            sign: None,
            encrypt: None,
            keep_sent: true,
        };
        let (resp, sent) = conn.request(out, t).await?;
        if resp.header.status() != NtStatus::MORE_PROCESSING_REQUIRED {
            expect_ok(&resp, "session setup", Stage::SessionSetup)?;
            return Err(SmbError::Protocol(
                "session setup finished without authentication".into(),
            ));
        }
        let session_id = resp.header.session_id;
        if dialect == Dialect::Smb311 {
            preauth_update(&mut preauth, sent.as_deref().unwrap_or_default());
            preauth_update(&mut preauth, &resp.msg);
        }
        let (_, blob) = m::parse_session_setup(&resp.msg)?;
        let challenge_msg = ntlm::spnego_response_token(&blob)?
            .ok_or_else(|| SmbError::Auth("the server offered no NTLM challenge".into()))?;
        let challenge = ntlm::parse_challenge(&challenge_msg)?;

        // SESSION_SETUP, leg 2: NTLM AUTHENTICATE.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| (d.as_secs() + 11_644_473_600) * 10_000_000)
            .unwrap_or(0);
        let mic = ntlm::MicInput {
            negotiate: &negotiate_msg,
            challenge: &challenge_msg,
            exported_session_key: rand::random(),
        };
        let auth = ntlm::authenticate(
            &challenge,
            user,
            domain,
            &p.password,
            rand::random(),
            now,
            Some(mic),
        );
        let mech_list_mic = auth.mech_list_mic(&ntlm::mech_types());
        let body = m::session_setup(&ntlm::spnego_resp(&auth.message, Some(&mech_list_mic)));
        let out = Outgoing {
            command: Command::SessionSetup,
            body: &[&body],
            tree_id: 0,
            session_id,
            charge: 1,
            sign: None,
            encrypt: None,
            keep_sent: true,
        };
        let (mut resp, sent) = conn.request(out, t).await?;
        expect_ok(&resp, "session setup", Stage::SessionSetup)?;
        if dialect == Dialect::Smb311 {
            preauth_update(&mut preauth, sent.as_deref().unwrap_or_default());
        }
        let (flags, _) = m::parse_session_setup(&resp.msg)?;
        if flags & (m::SESSION_FLAG_IS_GUEST | m::SESSION_FLAG_IS_NULL) != 0 {
            return Err(SmbError::Auth(
                "the server mapped the credentials to a guest session".into(),
            ));
        }
        let keys = Arc::new(Keys::derive(
            dialect,
            cipher,
            neg.gmac && p.gmac_signing,
            &auth.session_key,
            &preauth,
        ));
        if resp.header.flags & FLAG_SIGNED != 0 && !keys.verify(&mut resp.msg) {
            return Err(SmbError::Protocol(
                "bad signature on the session setup response".into(),
            ));
        }
        conn.set_decryption(session_id, keys.clone());
        let mut encrypt = flags & m::SESSION_FLAG_ENCRYPT_DATA != 0 || p.require_encryption;
        if encrypt && !keys.can_encrypt() {
            return Err(SmbError::Protocol(format!(
                "encryption required but not available with {dialect:?}"
            )));
        }
        let mut s = Session {
            conn,
            dialect,
            max_read: neg.max_read.clamp(64 << 10, MAX_IO),
            max_write: neg.max_write.clamp(64 << 10, MAX_IO),
            large_mtu: neg.capabilities & m::CAP_LARGE_MTU != 0,
            session_id,
            keys,
            encrypt,
            tree_id: 0,
            op_timeout: p.op_timeout,
        };
        if !s.large_mtu {
            s.max_read = 64 << 10;
            s.max_write = 64 << 10;
        }

        // TREE_CONNECT
        let unc = format!("\\\\{}\\{}", p.host, p.share);
        let body = m::tree_connect(&unc);
        let resp = s
            .call_with_timeout(
                Command::TreeConnect,
                &[&body],
                1,
                "tree connect",
                Stage::TreeConnect,
                t,
            )
            .await?;
        s.tree_id = resp.header.tree_id;
        let share_flags = m::parse_tree_connect(&resp.msg)?;
        if share_flags & m::SHARE_FLAG_ENCRYPT_DATA != 0 {
            if !s.keys.can_encrypt() {
                return Err(SmbError::Protocol(
                    "the share requires encryption, which this dialect lacks".into(),
                ));
            }
            encrypt = true;
        }
        s.encrypt = encrypt;
        Ok(s)
    }

    pub fn is_alive(&self) -> bool {
        self.conn.is_alive()
    }

    pub fn kill(&self, reason: &str) {
        self.conn.kill(reason);
    }

    pub fn signing_alg(&self) -> crate::crypto::SigningAlg {
        self.keys.signing_alg()
    }

    pub fn is_encrypted(&self) -> bool {
        self.encrypt
    }

    pub fn interim_responses(&self) -> u64 {
        self.conn.interim_responses()
    }

    /// Requests are signed (not encrypted) and responses' signatures are verified.
    pub fn is_signed(&self) -> bool {
        !self.encrypt
    }

    pub fn available_credits(&self) -> usize {
        self.conn.available_credits()
    }

    /// Credit charge for a request moving `bytes` of payload.
    pub fn charge_for(&self, bytes: u32) -> u16 {
        if self.large_mtu {
            bytes.max(1).div_ceil(65536) as u16
        } else {
            1
        }
    }

    /// Sends a request in this session's tree; any status other than SUCCESS is an error.
    pub async fn call(
        &self,
        cmd: Command,
        body: &[&[u8]],
        charge: u16,
        op: &'static str,
        stage: Stage,
    ) -> SmbResult<Response> {
        self.call_with_timeout(cmd, body, charge, op, stage, self.op_timeout)
            .await
    }

    /// Like [`Session::call`] but returns responses whose status is in `allowed` as well.
    pub async fn call_allow(
        &self,
        cmd: Command,
        body: &[&[u8]],
        op: &'static str,
        stage: Stage,
        allowed: &[NtStatus],
    ) -> SmbResult<Response> {
        let resp = self.send(cmd, body, 1, self.op_timeout).await?;
        if allowed.contains(&resp.header.status()) {
            return Ok(resp);
        }
        expect_ok(&resp, op, stage)?;
        Ok(resp)
    }

    async fn call_with_timeout(
        &self,
        cmd: Command,
        body: &[&[u8]],
        charge: u16,
        op: &'static str,
        stage: Stage,
        timeout: Duration,
    ) -> SmbResult<Response> {
        let resp = self.send(cmd, body, charge, timeout).await?;
        expect_ok(&resp, op, stage)?;
        Ok(resp)
    }

    async fn send(
        &self,
        cmd: Command,
        body: &[&[u8]],
        charge: u16,
        timeout: Duration,
    ) -> SmbResult<Response> {
        let out = Outgoing {
            command: cmd,
            body,
            tree_id: self.tree_id,
            session_id: self.session_id,
            charge,
            sign: (!self.encrypt).then_some(&*self.keys),
            encrypt: self.encrypt.then_some(&*self.keys),
            keep_sent: false,
        };
        let (mut resp, _) = self.conn.request(out, timeout).await?;
        let unsigned_session_error = self.encrypt
            && resp.header.status() != NtStatus::SUCCESS
            && resp.header.session_id == 0;
        let valid = resp.header.flags & FLAG_SIGNED != 0 && self.keys.verify(&mut resp.msg);
        // Unsigned error responses are tolerated (servers do not sign some of them); a success, or
        // anything claiming a signature, must verify.
        let must_verify =
            resp.header.status() == NtStatus::SUCCESS || resp.header.flags & FLAG_SIGNED != 0;
        if !resp.encrypted && !unsigned_session_error && !valid && must_verify {
            self.conn.kill("response signature missing or invalid");
            return Err(SmbError::Protocol(format!(
                "{}: response signature missing or invalid",
                crate::transport::command_name(cmd)
            )));
        }
        Ok(resp)
    }
}

fn expect_ok(resp: &Response, op: &'static str, stage: Stage) -> SmbResult<()> {
    let st = resp.header.status();
    if st == NtStatus::SUCCESS {
        Ok(())
    } else {
        Err(SmbError::status(op, stage, st))
    }
}
