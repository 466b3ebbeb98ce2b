//! An authenticated SMB session with one tree connect, over one [`Connection`]: dialect negotiation
//! (3.0, 3.0.2, 3.1.1 with the pre-auth integrity hash and cipher contexts; 2.1 only when the
//! location opts in), NTLMv2 session setup, key derivation, VALIDATE_NEGOTIATE, and `call`, which
//! signs or encrypts each request and authenticates each response.
//!
//! Invariants (MS-SMB2 3.2.5.1.3; ADR 0011):
//! - Once the session is established every request is signed (or encrypted, when the session or
//!   share requires it or the options ask for it), and EVERY reply, whatever its status, is
//!   authenticated: it decrypted from a TRANSFORM_HEADER under this session's key, or (on a
//!   session that does not encrypt) it carries the SIGNED flag and a valid signature. The only
//!   replies exempt are interim STATUS_PENDING ones, which carry no result (the transport counts
//!   their credits and keeps waiting). A reply that fails is [`SmbError::Integrity`] and kills the
//!   connection, which is never used again.
//! - The final SESSION_SETUP reply must be signed with the derived key (3.1.1: keyed by the
//!   pre-auth integrity hash over the whole negotiation), so a tampered negotiation fails there.
//! - On every dialect but 3.1.1 the negotiation is confirmed by a signed FSCTL_VALIDATE_NEGOTIATE_INFO
//!   right after the tree connect; 3.1.1 relies on the pre-auth hash instead (its servers drop
//!   the connection on VALIDATE_NEGOTIATE).
//! - The server must choose a dialect the client offered; a session is never downgraded after setup.

use crate::crypto::{preauth_update, Cipher, Dialect, Keys};
use crate::error::{SmbError, SmbResult, Stage};
use crate::messages as m;
use crate::ntlm::{self, Secret};
use crate::ntstatus::NtStatus;
use crate::transport::{command_name, Connection, Outgoing, Response};
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
        let offer = m::NegotiateOffer {
            capabilities: m::client_capabilities(&dialects),
            guid: rand::random(),
            security_mode: m::CLIENT_SECURITY_MODE,
            dialects: dialects.clone(),
        };
        let salt: [u8; 32] = rand::random();
        let body = m::negotiate(&dialects, &offer.guid, &salt, p.gmac_signing);
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
        let op = if dialects.contains(&Dialect::Smb210) {
            "negotiate"
        } else {
            // The usual cause: a server that speaks no SMB 3.x.
            "negotiate (SMB 3.x only; a 2.1-only server needs ?min-dialect=2.1 on the location)"
        };
        expect_ok(&resp, op, Stage::Negotiate)?;
        let neg = m::parse_negotiate(&resp.msg)?;
        let dialect = Dialect::from_u16(neg.dialect)
            .filter(|d| dialects.contains(d))
            .ok_or_else(|| {
                // Either the offer was rewritten on the way (a downgrade) or the server is broken;
                // neither may get a session.
                SmbError::integrity(
                    "negotiate",
                    format!(
                        "the server chose dialect 0x{:04x}, which was not offered ({})",
                        neg.dialect,
                        offered(&dialects)
                    ),
                )
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
        // The final reply is always signed with the new key (MS-SMB2 3.3.5.5.3, as we ask for
        // signing); with 3.1.1 that key depends on the pre-auth hash of everything exchanged so
        // far, so this check also proves the negotiation unaltered.
        if resp.header.flags & FLAG_SIGNED == 0 {
            return Err(SmbError::integrity(
                "session setup",
                "the final session setup reply is not signed",
            ));
        }
        if !keys.verify(&mut resp.msg) {
            return Err(SmbError::integrity(
                "session setup",
                "bad signature on the final session setup reply (the negotiation was altered, \
                 or the reply was)",
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
        if dialect != Dialect::Smb311 {
            s.validate_negotiate(&offer, &neg, t).await?;
        }
        Ok(s)
    }

    /// FSCTL_VALIDATE_NEGOTIATE_INFO (MS-SMB2 2.2.31.4, 3.3.5.15.12): repeats the offer inside the
    /// signed session and compares the server's view of the negotiation with what this client
    /// received. A server that saw a different offer drops the connection; any failure here is an
    /// integrity failure, since the negotiation it confirms was not protected.
    async fn validate_negotiate(
        &self,
        offer: &m::NegotiateOffer,
        neg: &m::NegotiateResponse,
        t: Duration,
    ) -> SmbResult<()> {
        let body = m::validate_negotiate(offer);
        let resp = match self.send(Command::Ioctl, &[&body], 1, t).await {
            Ok(r) => r,
            Err(e @ SmbError::Integrity { .. }) => return Err(e),
            Err(e) => {
                self.conn.kill_tampered("VALIDATE_NEGOTIATE failed");
                return Err(SmbError::integrity(
                    "validate negotiate",
                    format!("the server refused to confirm the negotiation: {e}"),
                ));
            }
        };
        let st = resp.header.status();
        if st != NtStatus::SUCCESS {
            // A genuine 2.1-only server may not know the FSCTL (signed reply, so it is the
            // server's answer); a 3.x server must confirm.
            let legacy = self.dialect == Dialect::Smb210
                && matches!(
                    st,
                    NtStatus::NOT_SUPPORTED
                        | NtStatus::INVALID_DEVICE_REQUEST
                        | NtStatus::FILE_CLOSED
                );
            if legacy {
                return Ok(());
            }
            self.conn.kill_tampered("VALIDATE_NEGOTIATE failed");
            return Err(SmbError::integrity(
                "validate negotiate",
                format!("the server answered {st}"),
            ));
        }
        let v = m::parse_validate_negotiate(&resp.msg)?;
        let expected = m::ValidateNegotiateResponse {
            capabilities: neg.capabilities,
            guid: neg.server_guid,
            security_mode: neg.security_mode,
            dialect: neg.dialect,
        };
        if v != expected {
            self.conn.kill_tampered("VALIDATE_NEGOTIATE mismatch");
            return Err(SmbError::integrity(
                "validate negotiate",
                format!(
                    "the server negotiated dialect 0x{:04x} / capabilities 0x{:x} / security mode \
                     {}, this client received 0x{:04x} / 0x{:x} / {}",
                    v.dialect,
                    v.capabilities,
                    v.security_mode,
                    neg.dialect,
                    neg.capabilities,
                    neg.security_mode
                ),
            ));
        }
        Ok(())
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

    /// Replies decrypted / verified on a transport worker so far (large READ replies).
    pub fn offloaded_frames(&self) -> u64 {
        self.conn.offloaded_frames()
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
        if let Err(reason) = self.authenticate(&mut resp) {
            self.conn.kill_tampered(&reason);
            return Err(SmbError::integrity(command_name(cmd), reason));
        }
        Ok(resp)
    }

    /// MS-SMB2 3.2.5.1.3 with signing required: a reply is authentic when it was decrypted under
    /// this session's key, or (on a session that does not encrypt) carries a valid signature.
    /// Error statuses get no exemption: a forged STATUS_NO_MORE_FILES or NOT_FOUND is exactly what
    /// an attacker on the path would send.
    fn authenticate(&self, resp: &mut Response) -> Result<(), String> {
        let status = resp.header.status();
        if resp.encrypted {
            return Ok(());
        }
        if self.encrypt {
            return Err(format!(
                "plaintext reply ({status}) on an encrypted session"
            ));
        }
        if resp.header.flags & FLAG_SIGNED == 0 {
            return Err(format!("unsigned reply ({status})"));
        }
        // `verified`: the transport checked this signature under these same keys (large replies,
        // on a worker); otherwise it is checked here.
        if !resp.verified && !self.keys.verify(&mut resp.msg) {
            return Err(format!("bad signature on a reply ({status})"));
        }
        Ok(())
    }
}

fn offered(dialects: &[Dialect]) -> String {
    let v: Vec<String> = dialects.iter().map(|d| format!("{d:?}")).collect();
    v.join(", ")
}

fn expect_ok(resp: &Response, op: &'static str, stage: Stage) -> SmbResult<()> {
    let st = resp.header.status();
    if st == NtStatus::SUCCESS {
        Ok(())
    } else {
        Err(SmbError::status(op, stage, st))
    }
}
