//! A tampering man in the middle for the attack tests: a TCP proxy on 127.0.0.1:0 between the client
//! and the private smbd that rewrites frames on the way according to the armed [`Tamper`] mode.
//! It speaks only direct-TCP framing (4-byte length) and the plain SMB2 header; it knows no key, so
//! every forgery it makes is one a real attacker on the path could make.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const CMD_NEGOTIATE: u16 = 0x00;
pub const CMD_SESSION_SETUP: u16 = 0x01;
pub const CMD_CREATE: u16 = 0x05;
pub const CMD_READ: u16 = 0x08;
pub const CMD_QUERY_DIRECTORY: u16 = 0x0E;
pub const STATUS_NO_MORE_FILES: u32 = 0x8000_0006;
pub const STATUS_OBJECT_NAME_NOT_FOUND: u32 = 0xC000_0034;
const FLAG_SIGNED: u32 = 0x8;

/// What the man in the middle does to the traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tamper {
    /// Pass everything through.
    Off,
    /// (a) Replace every successful QUERY_DIRECTORY reply with an unsigned STATUS_NO_MORE_FILES.
    QueryDirectoryAsNoMoreFiles,
    /// (b) Rewrite every CREATE reply into STATUS_OBJECT_NAME_NOT_FOUND, signed flag cleared and
    /// signature zeroed (`keep_signed_flag`: the flag stays and the old signature with it).
    CreateAsNotFound { keep_signed_flag: bool },
    /// (c) Flip the last byte of every signed reply of this command.
    FlipSignedReply { command: u16 },
    /// (d) Rewrite the client's NEGOTIATE request: every offered dialect in `from` becomes `to`.
    DowngradeOffer { from: &'static [u16], to: u16 },
    /// (d) Flip a byte of the server's GUID in the NEGOTIATE reply (3.1.1: the pre-auth hash).
    FlipNegotiateReply,
    /// (2) Strip the signature off the final (successful) SESSION_SETUP reply.
    StripFinalSessionSetupSignature,
    /// Flip a byte of the nonce in every encrypted (TRANSFORM_HEADER) reply.
    FlipTransformHeader,
    /// Flip the last ciphertext byte of every encrypted reply of at least `min_len` bytes (READ
    /// replies with data); smaller replies pass unaltered.
    FlipLargeEncryptedReply { min_len: usize },
    /// Replace every encrypted reply with plaintext, unsigned error replies carrying `status`, one
    /// for each MessageId below 4096 (the attacker cannot see which one the request has).
    PlaintextForEncrypted { status: u32 },
}

/// A running proxy. Arm it with [`Proxy::set`]; `hits` counts the frames it actually altered.
pub struct Proxy {
    pub port: u16,
    mode: Arc<Mutex<Tamper>>,
    hook: Hook,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Starts a proxy in front of 127.0.0.1:`upstream`.
    pub async fn start(upstream: u16, mode: Tamper) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(Mutex::new(mode));
        let hits = Arc::new(AtomicUsize::new(0));
        let hook: Hook = Arc::new(Mutex::new(None));
        let (m, h, k) = (mode.clone(), hits.clone(), hook.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (m, h, k) = (m.clone(), h.clone(), k.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up =
                        tokio::spawn(pump(cr, sw, m.clone(), h.clone(), k.clone(), Dir::ToServer));
                    pump(sr, cw, m, h, k, Dir::ToClient).await;
                    up.abort();
                });
            }
        });
        Proxy {
            port,
            mode,
            hook,
            hits,
            task,
        }
    }

    /// Runs `f(command, status)` on every plain reply before it is forwarded (the proxy as a
    /// witness of the exchange, e.g. to change the share at an exact moment).
    pub fn on_reply(&self, f: impl FnMut(u16, u32) + Send + 'static) {
        *self.hook.lock().unwrap() = Some(Box::new(f));
    }

    pub fn set(&self, t: Tamper) {
        *self.mode.lock().unwrap() = t;
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Called with (command, status) for every plain SMB2 reply before it is forwarded.
type Hook = Arc<Mutex<Option<Box<dyn FnMut(u16, u32) + Send>>>>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    ToServer,
    ToClient,
}

async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    mode: Arc<Mutex<Tamper>>,
    hits: Arc<AtomicUsize>,
    hook: Hook,
    dir: Dir,
) {
    loop {
        let mut len = [0u8; 4];
        if r.read_exact(&mut len).await.is_err() {
            return;
        }
        let n = u32::from_be_bytes(len) as usize & 0x00FF_FFFF;
        let mut body = vec![0u8; n];
        if r.read_exact(&mut body).await.is_err() {
            return;
        }
        if dir == Dir::ToClient && body.len() >= 64 && body[..4] == [0xFE, b'S', b'M', b'B'] {
            if let Some(f) = hook.lock().unwrap().as_mut() {
                f(u16_at(&body, 12), u32_at(&body, 8));
            }
        }
        let t = *mode.lock().unwrap();
        if let Some(frames) = replace_encrypted(t, dir, &body) {
            hits.fetch_add(1, Ordering::SeqCst);
            if w.write_all(&frames).await.is_err() {
                return;
            }
            continue;
        }
        if rewrite(t, dir, &mut body) {
            hits.fetch_add(1, Ordering::SeqCst);
        }
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        if w.write_all(&frame).await.is_err() {
            return;
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Turns a reply into an error reply with `status` (an ERROR body of 9 bytes); the length prefix is
/// recomputed by the caller from the new body.
fn forge_error(body: &mut Vec<u8>, status: u32, keep_signed_flag: bool) {
    body.truncate(64);
    body[8..12].copy_from_slice(&status.to_le_bytes());
    if !keep_signed_flag {
        let flags = u32_at(body, 16) & !FLAG_SIGNED;
        body[16..20].copy_from_slice(&flags.to_le_bytes());
        body[48..64].fill(0);
    }
    body.extend_from_slice(&[9, 0, 0, 0, 0, 0, 0, 0, 0]);
}

/// For [`Tamper::PlaintextForEncrypted`]: the framed forged replies that replace an encrypted one.
fn replace_encrypted(t: Tamper, dir: Dir, body: &[u8]) -> Option<Vec<u8>> {
    let Tamper::PlaintextForEncrypted { status } = t else {
        return None;
    };
    if dir != Dir::ToClient || body.len() < 52 || body[..4] != [0xFD, b'S', b'M', b'B'] {
        return None;
    }
    let session_id = &body[44..52];
    let mut out = Vec::new();
    for mid in 0u64..4096 {
        let mut m = vec![0u8; 64];
        m[..4].copy_from_slice(&[0xFE, b'S', b'M', b'B']);
        m[4] = 64;
        m[8..12].copy_from_slice(&status.to_le_bytes());
        m[12..14].copy_from_slice(&CMD_CREATE.to_le_bytes());
        m[16..20].copy_from_slice(&1u32.to_le_bytes()); // SERVER_TO_REDIR, not signed
        m[24..32].copy_from_slice(&mid.to_le_bytes());
        m[40..48].copy_from_slice(session_id);
        m.extend_from_slice(&[9, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&(m.len() as u32).to_be_bytes());
        out.extend_from_slice(&m);
    }
    Some(out)
}

/// Applies `t` to one frame body; true when the frame was altered.
fn rewrite(t: Tamper, dir: Dir, body: &mut Vec<u8>) -> bool {
    if body.len() >= 52 && body[..4] == [0xFD, b'S', b'M', b'B'] {
        if t == Tamper::FlipTransformHeader && dir == Dir::ToClient {
            body[20] ^= 0x01; // first nonce byte: authenticated data of the AEAD
            return true;
        }
        if let (Tamper::FlipLargeEncryptedReply { min_len }, Dir::ToClient) = (t, dir) {
            if body.len() >= min_len {
                let last = body.len() - 1;
                body[last] ^= 0x01;
                return true;
            }
        }
        return false;
    }
    if body.len() < 64 || body[..4] != [0xFE, b'S', b'M', b'B'] {
        return false;
    }
    let cmd = u16_at(body, 12);
    let status = u32_at(body, 8);
    let flags = u32_at(body, 16);
    match (t, dir) {
        (Tamper::QueryDirectoryAsNoMoreFiles, Dir::ToClient)
            if cmd == CMD_QUERY_DIRECTORY && status == 0 =>
        {
            forge_error(body, STATUS_NO_MORE_FILES, false);
            true
        }
        (Tamper::CreateAsNotFound { keep_signed_flag }, Dir::ToClient) if cmd == CMD_CREATE => {
            forge_error(body, STATUS_OBJECT_NAME_NOT_FOUND, keep_signed_flag);
            true
        }
        (Tamper::FlipSignedReply { command }, Dir::ToClient)
            if cmd == command && flags & FLAG_SIGNED != 0 =>
        {
            let last = body.len() - 1;
            body[last] ^= 0x01;
            true
        }
        (Tamper::DowngradeOffer { from, to }, Dir::ToServer) if cmd == CMD_NEGOTIATE => {
            let count = u16_at(body, 64 + 2) as usize;
            let mut changed = false;
            for i in 0..count {
                let at = 64 + 36 + 2 * i;
                if from.contains(&u16_at(body, at)) {
                    body[at..at + 2].copy_from_slice(&to.to_le_bytes());
                    changed = true;
                }
            }
            changed
        }
        (Tamper::FlipNegotiateReply, Dir::ToClient) if cmd == CMD_NEGOTIATE => {
            body[64 + 8] ^= 0x01; // ServerGuid
            true
        }
        (Tamper::StripFinalSessionSetupSignature, Dir::ToClient)
            if cmd == CMD_SESSION_SETUP && status == 0 =>
        {
            let flags = flags & !FLAG_SIGNED;
            body[16..20].copy_from_slice(&flags.to_le_bytes());
            body[48..64].fill(0);
            true
        }
        _ => false,
    }
}
