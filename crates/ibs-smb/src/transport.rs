//! One TCP connection to an SMB server: framing (4-byte direct-TCP length prefix), a reader task
//! that dispatches responses by MessageId to the waiting requests, and credit accounting.
//!
//! Invariants:
//! - TCP_NODELAY is set; every frame goes out with one `write_all`, from one writer task.
//! - Credits are a semaphore: a request takes `charge` permits before it gets its MessageId; every
//!   response adds the credits it grants, INCLUDING STATUS_PENDING interim responses (the request
//!   stays registered and keeps waiting for its final response).
//! - Every request is bounded by a deadline. On a timeout, a read/write error or EOF the connection is
//!   killed: the semaphore closes and every pending request fails at once with `Disconnected`;
//!   nothing can wait forever. A killed connection is never revived; the owner replaces it.
//! - An encrypted frame that does not decrypt under the session key (or arrives before there is
//!   one) kills the connection as tampered: every pending and later request fails with
//!   `SmbError::Integrity`. Only interim STATUS_PENDING replies are consumed here unverified (they
//!   carry credits, no result); every other reply goes to its request, whose session verifies it.

use crate::crypto::Keys;
use crate::error::{SmbError, SmbResult};
use crate::ntstatus::NtStatus;
use crate::wire::{Command, Header, FLAG_ASYNC, FLAG_SIGNED, HEADER_LEN, PROTO_TRANSFORM};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

/// Largest frame accepted from the server (8 MiB payload plus headers).
const MAX_FRAME: usize = 16 << 20;

/// A received response.
#[derive(Debug)]
pub struct Response {
    pub header: Header,
    /// The whole SMB2 message (header included), decrypted if it came encrypted.
    pub msg: bytes::BytesMut,
    pub encrypted: bool,
}

/// How to send one request.
pub struct Outgoing<'a> {
    pub command: Command,
    pub body: &'a [&'a [u8]],
    pub tree_id: u32,
    pub session_id: u64,
    /// Number of 64 KiB credits the request is charged (1 for small requests).
    pub charge: u16,
    pub sign: Option<&'a Keys>,
    pub encrypt: Option<&'a Keys>,
    /// Return a copy of the plaintext message as sent (pre-auth integrity hash).
    pub keep_sent: bool,
}

type Waiter = oneshot::Sender<SmbResult<Response>>;

struct State {
    next_id: u64,
    pending: HashMap<u64, Waiter>,
    dead: Option<Death>,
}

/// Why a connection died; decides the error every pending and later request gets.
#[derive(Clone, Debug)]
enum Death {
    /// Reset, EOF, timeout, a malformed frame, or killed by its owner.
    Lost(String),
    /// A reply failed authentication (a TRANSFORM_HEADER that does not decrypt, a bad signature).
    Tampered(String),
}

impl Death {
    fn error(&self) -> SmbError {
        match self {
            Death::Lost(r) => SmbError::Disconnected(r.clone()),
            Death::Tampered(r) => SmbError::integrity("receive", r.clone()),
        }
    }
}

struct Shared {
    state: Mutex<State>,
    credits: Semaphore,
    /// Keys to decrypt TRANSFORM_HEADER messages (set once the session is established).
    decrypt: RwLock<Option<(u64, Arc<Keys>)>>,
    /// STATUS_PENDING interim responses seen (diagnostics and tests).
    interims: AtomicU64,
}

impl Shared {
    fn kill(&self, death: Death) {
        let (waiters, death): (Vec<Waiter>, Death) = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let d = st.dead.get_or_insert(death).clone();
            (st.pending.drain().map(|(_, w)| w).collect(), d)
        };
        self.credits.close();
        for w in waiters {
            let _ = w.send(Err(death.error()));
        }
    }

    fn dead_error(&self) -> SmbError {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.dead
            .as_ref()
            .map(Death::error)
            .unwrap_or_else(|| SmbError::Disconnected("connection closed".into()))
    }
}

/// A live connection. Dropping it kills the reader task and closes the socket.
pub struct Connection {
    shared: Arc<Shared>,
    /// Frames go to the writer task; enqueueing is synchronous, so a MessageId, once taken, is always
    /// sent (a cancelled caller cannot leave a hole in the server's sequence window).
    writer: mpsc::UnboundedSender<Vec<u8>>,
    writer_task: tokio::task::JoinHandle<()>,
    reader: tokio::task::JoinHandle<()>,
    pub peer: String,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.kill(Death::Lost("connection dropped".into()));
        self.reader.abort();
        self.writer_task.abort();
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .field("alive", &self.is_alive())
            .finish()
    }
}

impl Connection {
    /// Resolves `host` and connects within `timeout` (every address is tried until the deadline).
    pub async fn connect(host: &str, port: u16, timeout: Duration) -> SmbResult<Connection> {
        let deadline = Instant::now() + timeout;
        let target = format!("{host}:{port}");
        let addrs: Vec<_> =
            match tokio::time::timeout_at(deadline, tokio::net::lookup_host(target.as_str())).await
            {
                Err(_) => {
                    return Err(SmbError::Timeout {
                        op: "resolve",
                        after: timeout,
                    })
                }
                Ok(Err(e)) => {
                    return Err(SmbError::Resolve {
                        host: host.to_owned(),
                        source: e,
                    })
                }
                Ok(Ok(a)) => a.collect(),
            };
        let mut last = None;
        for addr in addrs {
            match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
                Err(_) => {
                    return Err(SmbError::Timeout {
                        op: "connect",
                        after: timeout,
                    })
                }
                Ok(Ok(s)) => {
                    s.set_nodelay(true).map_err(|e| SmbError::Connect {
                        addr: addr.to_string(),
                        source: e,
                    })?;
                    return Ok(Self::start(s, addr.to_string()));
                }
                Ok(Err(e)) => {
                    last = Some(SmbError::Connect {
                        addr: addr.to_string(),
                        source: e,
                    })
                }
            }
        }
        Err(last.unwrap_or_else(|| SmbError::Resolve {
            host: host.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
        }))
    }

    fn start(stream: TcpStream, peer: String) -> Connection {
        let (r, w) = stream.into_split();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_id: 0,
                pending: HashMap::new(),
                dead: None,
            }),
            credits: Semaphore::new(1),
            decrypt: RwLock::new(None),
            interims: AtomicU64::new(0),
        });
        let reader = tokio::spawn(read_loop(r, shared.clone()));
        let (tx, rx) = mpsc::unbounded_channel();
        let writer_task = tokio::spawn(write_loop(w, rx, shared.clone()));
        Connection {
            shared,
            writer: tx,
            writer_task,
            reader,
            peer,
        }
    }

    pub fn is_alive(&self) -> bool {
        self.shared
            .state
            .lock()
            .map(|s| s.dead.is_none())
            .unwrap_or(false)
    }

    /// Fails every pending request and makes the connection unusable.
    pub fn kill(&self, reason: &str) {
        self.shared.kill(Death::Lost(reason.to_owned()));
        self.reader.abort();
        self.writer_task.abort();
    }

    /// Like [`Connection::kill`], for a reply that failed authentication: every pending and later
    /// request fails with [`SmbError::Integrity`].
    pub fn kill_tampered(&self, reason: &str) {
        self.shared.kill(Death::Tampered(reason.to_owned()));
        self.reader.abort();
        self.writer_task.abort();
    }

    pub fn set_decryption(&self, session_id: u64, keys: Arc<Keys>) {
        *self
            .shared
            .decrypt
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some((session_id, keys));
    }

    /// STATUS_PENDING interim responses received so far.
    pub fn interim_responses(&self) -> u64 {
        self.shared.interims.load(Ordering::Relaxed)
    }

    /// Currently available credits (for tests and diagnostics).
    pub fn available_credits(&self) -> usize {
        self.shared.credits.available_permits()
    }

    /// Sends one request and waits for its final response, all within `timeout`.
    /// A timeout kills the connection. Returns the response and (if asked) the plaintext sent.
    pub async fn request(
        &self,
        out: Outgoing<'_>,
        timeout: Duration,
    ) -> SmbResult<(Response, Option<Vec<u8>>)> {
        let op = command_name(out.command);
        match tokio::time::timeout(timeout, self.request_inner(out)).await {
            Ok(r) => r,
            Err(_) => {
                self.kill(&format!("{op} timed out after {timeout:?}"));
                Err(SmbError::Timeout { op, after: timeout })
            }
        }
    }

    async fn request_inner(&self, out: Outgoing<'_>) -> SmbResult<(Response, Option<Vec<u8>>)> {
        let charge = out.charge.max(1);
        let permits = match self.shared.credits.acquire_many(u32::from(charge)).await {
            Ok(p) => p,
            Err(_) => return Err(self.shared.dead_error()),
        };
        permits.forget();
        let available = self.shared.credits.available_permits();
        let ask = charge + if available < 512 { 64 } else { 1 };
        let (tx, rx) = oneshot::channel();
        let message_id = {
            let mut st = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
            if st.dead.is_some() {
                drop(st);
                return Err(self.shared.dead_error());
            }
            let id = st.next_id;
            st.next_id += u64::from(charge);
            st.pending.insert(id, tx);
            id
        };
        let mut h = Header::request(
            out.command,
            message_id,
            if message_id == 0 { 0 } else { charge },
            ask,
        );
        h.tree_id = out.tree_id;
        h.session_id = out.session_id;
        if out.sign.is_some() && out.encrypt.is_none() {
            h.flags |= FLAG_SIGNED;
        }
        let body_len: usize = out.body.iter().map(|b| b.len()).sum();
        let mut msg = crate::wire::W::with_capacity(4 + HEADER_LEN + body_len);
        msg.u32(0);
        h.encode(&mut msg);
        for b in out.body {
            msg.bytes(b);
        }
        let mut frame = msg.0;
        if let (Some(k), None) = (out.sign, out.encrypt) {
            k.sign(&mut frame[4..]);
        }
        let sent = out.keep_sent.then(|| frame[4..].to_vec());
        if let Some(k) = out.encrypt {
            let mut enc = match k.encrypt(out.session_id, frame[4..].to_vec()) {
                Ok(e) => e,
                Err(e) => {
                    self.kill("encryption failed");
                    return Err(e);
                }
            };
            let mut f = Vec::with_capacity(4 + enc.len());
            f.extend_from_slice(&(enc.len() as u32).to_be_bytes());
            f.append(&mut enc);
            frame = f;
        } else {
            let len = (frame.len() - 4) as u32;
            frame[..4].copy_from_slice(&len.to_be_bytes());
        }
        if self.writer.send(frame).is_err() {
            return Err(self.shared.dead_error());
        }
        match rx.await {
            Ok(r) => r.map(|resp| (resp, sent)),
            Err(_) => Err(self.shared.dead_error()),
        }
    }
}

pub fn command_name(c: Command) -> &'static str {
    match c {
        Command::Negotiate => "negotiate",
        Command::SessionSetup => "session setup",
        Command::Logoff => "logoff",
        Command::TreeConnect => "tree connect",
        Command::TreeDisconnect => "tree disconnect",
        Command::Create => "create",
        Command::Close => "close",
        Command::Flush => "flush",
        Command::Read => "read",
        Command::Write => "write",
        Command::Ioctl => "ioctl",
        Command::Echo => "echo",
        Command::QueryDirectory => "query directory",
        Command::QueryInfo => "query info",
        Command::SetInfo => "set info",
        Command::OplockBreak => "oplock break",
    }
}

async fn write_loop(
    mut w: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    shared: Arc<Shared>,
) {
    while let Some(frame) = rx.recv().await {
        if let Err(e) = w.write_all(&frame).await {
            shared.kill(Death::Lost(format!("send failed: {e}")));
            return;
        }
    }
}

async fn read_frame(r: &mut OwnedReadHalf) -> std::io::Result<bytes::BytesMut> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let n = u32::from_be_bytes(len) as usize & 0x00FF_FFFF;
    if len[0] != 0 || n > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "bad frame length",
        ));
    }
    // No zero-fill and no regrowth: read straight into exactly n bytes of spare capacity.
    let mut buf = bytes::BytesMut::with_capacity(n);
    while buf.len() < n {
        let want = n - buf.len();
        if r.read_buf(&mut bytes::BufMut::limit(&mut buf, want))
            .await?
            == 0
        {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(buf)
}

async fn read_loop(mut r: OwnedReadHalf, shared: Arc<Shared>) {
    let death = loop {
        let frame = match read_frame(&mut r).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break Death::Lost("server closed the connection".to_owned())
            }
            Err(e) => break Death::Lost(format!("receive failed: {e}")),
        };
        let (msg, encrypted) = if frame.starts_with(&PROTO_TRANSFORM) {
            let keys = shared
                .decrypt
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let Some((sid, keys)) = keys else {
                break Death::Tampered("encrypted message before session keys".to_owned());
            };
            match keys.decrypt(sid, frame) {
                Ok(m) => (m, true),
                // Nothing but the server holds the key: a message that does not decrypt was
                // forged or altered on the way.
                Err(e) => break Death::Tampered(format!("encrypted reply rejected: {e}")),
            }
        } else {
            (frame, false)
        };
        let header = match Header::decode(&msg) {
            Ok(h) => h,
            Err(e) => break Death::Lost(e.to_string()),
        };
        if header.next_command != 0 {
            break Death::Lost("compound responses are not supported".to_owned());
        }
        // Credits granted by ANY response, interim ones included, go back into the pool.
        if header.credits > 0 {
            shared.credits.add_permits(usize::from(header.credits));
        }
        if header.status() == NtStatus::PENDING && header.flags & FLAG_ASYNC != 0 {
            shared.interims.fetch_add(1, Ordering::Relaxed);
            tracing::trace!(
                mid = header.message_id,
                granted = header.credits,
                "interim response"
            );
            continue; // the final response follows; the request keeps waiting
        }
        if header.message_id == u64::MAX {
            continue; // unsolicited (oplock/lease break): we never ask for oplocks
        }
        let waiter = shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pending
            .remove(&header.message_id);
        match waiter {
            Some(w) => {
                let _ = w.send(Ok(Response {
                    header,
                    msg,
                    encrypted,
                }));
            }
            None => tracing::debug!(
                mid = header.message_id,
                "response for an unknown request ignored"
            ),
        }
    };
    tracing::debug!(?death, "SMB connection closed");
    shared.kill(death);
}
