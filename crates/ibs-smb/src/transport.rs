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
//! - One reader task reads frames in order and handles small ones itself. A frame of
//!   [`OFFLOAD_MIN`] bytes or more (a READ reply with data) goes to one of the connection's worker
//!   threads (2-4 by core count, at most one frame queued per worker), which decrypts it, or for a
//!   signed plaintext reply checks its signature under the session's keys and marks it `verified`,
//!   then grants its credits and dispatches it exactly as the reader would. Replies may thus be
//!   dispatched out of order (MessageIds route them). A worker that finds a frame tampered kills
//!   the connection and wakes the reader, which stops. The workers are the connection's own
//!   threads, not the runtime's blocking pool, so callers blocked waiting for replies cannot
//!   starve the replies.

use crate::crypto::{Keys, TRANSFORM_LEN};
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
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio::time::Instant;

/// Largest frame accepted from the server (8 MiB payload plus headers).
const MAX_FRAME: usize = 16 << 20;

/// Frames at least this large are decrypted / verified on a worker thread, off the reader.
pub const OFFLOAD_MIN: usize = 64 << 10;

/// A received response.
#[derive(Debug)]
pub struct Response {
    pub header: Header,
    /// The whole SMB2 message (header included), decrypted if it came encrypted.
    pub msg: bytes::BytesMut,
    pub encrypted: bool,
    /// A plaintext reply whose signature the transport already checked under the session's keys
    /// (large replies, on a worker). `false` means "not checked here", never "bad".
    pub verified: bool,
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
    /// Keys to decrypt TRANSFORM_HEADER messages and check signatures (set once the session is
    /// established).
    keys: RwLock<Option<(u64, Arc<Keys>)>>,
    /// STATUS_PENDING interim responses seen (diagnostics and tests).
    interims: AtomicU64,
    /// Woken by `kill`, so that a reader blocked on the socket stops when a worker (or the owner)
    /// killed the connection.
    closed: Notify,
    /// Bounds the frames queued for or being decrypted / verified on worker threads.
    workers: Arc<Semaphore>,
    /// Frames handed to workers so far (diagnostics and tests).
    offloaded: AtomicU64,
}

impl Shared {
    fn kill(&self, death: Death) {
        let (waiters, death): (Vec<Waiter>, Death) = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let d = st.dead.get_or_insert(death).clone();
            (st.pending.drain().map(|(_, w)| w).collect(), d)
        };
        self.credits.close();
        self.closed.notify_one();
        for w in waiters {
            let _ = w.send(Err(death.error()));
        }
    }

    fn is_dead(&self) -> bool {
        self.state.lock().map(|s| s.dead.is_some()).unwrap_or(true)
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
            keys: RwLock::new(None),
            interims: AtomicU64::new(0),
            closed: Notify::new(),
            workers: Arc::new(Semaphore::new(worker_count())),
            offloaded: AtomicU64::new(0),
        });
        let jobs = spawn_workers(&shared);
        let reader = tokio::spawn(read_loop(r, jobs, shared.clone()));
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
        !self.shared.is_dead()
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
        *self.shared.keys.write().unwrap_or_else(|p| p.into_inner()) = Some((session_id, keys));
    }

    /// STATUS_PENDING interim responses received so far.
    pub fn interim_responses(&self) -> u64 {
        self.shared.interims.load(Ordering::Relaxed)
    }

    /// Frames decrypted / verified on a worker so far.
    pub fn offloaded_frames(&self) -> u64 {
        self.shared.offloaded.load(Ordering::Relaxed)
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
        // An encrypted frame keeps room for the TRANSFORM_HEADER in front of the message, which is
        // then encrypted in place: the payload is copied once, into this buffer.
        let room = if out.encrypt.is_some() {
            TRANSFORM_LEN
        } else {
            0
        };
        let mut msg = crate::wire::W::with_capacity(4 + room + HEADER_LEN + body_len);
        msg.u32(0);
        msg.zeros(room);
        h.encode(&mut msg);
        for b in out.body {
            msg.bytes(b);
        }
        let mut frame = msg.0;
        let start = 4 + room;
        if let (Some(k), None) = (out.sign, out.encrypt) {
            k.sign(&mut frame[start..]);
        }
        let sent = out.keep_sent.then(|| frame[start..].to_vec());
        if let Some(k) = out.encrypt {
            if let Err(e) = k.encrypt_in_place(out.session_id, &mut frame[4..]) {
                self.kill("encryption failed");
                return Err(e);
            }
        }
        let len = (frame.len() - 4) as u32;
        frame[..4].copy_from_slice(&len.to_be_bytes());
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

fn worker_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 4)
}

/// A large frame for a worker, with the permit it holds until it is dispatched.
type Job = (bytes::BytesMut, tokio::sync::OwnedSemaphorePermit);

/// Starts the connection's worker threads. They end when the reader drops the sender (the reader
/// stopped or was aborted). If no thread can be started, sends fail and the reader does the work.
fn spawn_workers(shared: &Arc<Shared>) -> std::sync::mpsc::Sender<Job> {
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..worker_count() {
        let (rx, shared) = (rx.clone(), shared.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("ibs-smb-rx{i}"))
            .spawn(move || loop {
                let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                let Ok((frame, permit)) = job else { return };
                if let Err(death) = process(&shared, frame, true) {
                    tracing::debug!(?death, "SMB connection closed by a worker");
                    shared.kill(death);
                }
                drop(permit);
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start an SMB receive worker: {e}");
        }
    }
    tx
}

async fn read_loop(mut r: OwnedReadHalf, jobs: std::sync::mpsc::Sender<Job>, shared: Arc<Shared>) {
    let death = loop {
        let frame = tokio::select! {
            biased;
            // Killed elsewhere (a worker found a tampered frame, or the owner): nothing more is
            // read or dispatched.
            _ = shared.closed.notified() => return,
            f = read_frame(&mut r) => f,
        };
        let frame = match frame {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break Death::Lost("server closed the connection".to_owned())
            }
            Err(e) => break Death::Lost(format!("receive failed: {e}")),
        };
        if shared.is_dead() {
            return;
        }
        if frame.len() < OFFLOAD_MIN {
            if let Err(death) = process(&shared, frame, false) {
                break death;
            }
            continue;
        }
        let Ok(permit) = shared.workers.clone().acquire_owned().await else {
            return;
        };
        shared.offloaded.fetch_add(1, Ordering::Relaxed);
        if let Err(std::sync::mpsc::SendError((frame, _permit))) = jobs.send((frame, permit)) {
            // No worker thread: verify and dispatch here.
            if let Err(death) = process(&shared, frame, true) {
                break death;
            }
        }
    };
    tracing::debug!(?death, "SMB connection closed");
    shared.kill(death);
}

/// Decrypts (or, when `verify`, checks the signature of) one received frame, grants its credits
/// and hands it to its request. An error is the reason the connection must die.
fn process(shared: &Shared, frame: bytes::BytesMut, verify: bool) -> Result<(), Death> {
    let keys = shared
        .keys
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let (mut msg, encrypted) = if frame.starts_with(&PROTO_TRANSFORM) {
        let Some((sid, keys)) = &keys else {
            return Err(Death::Tampered(
                "encrypted message before session keys".to_owned(),
            ));
        };
        match keys.decrypt(*sid, frame) {
            Ok(m) => (m, true),
            // Nothing but the server holds the key: a message that does not decrypt was
            // forged or altered on the way.
            Err(e) => return Err(Death::Tampered(format!("encrypted reply rejected: {e}"))),
        }
    } else {
        (frame, false)
    };
    let header = Header::decode(&msg).map_err(|e| Death::Lost(e.to_string()))?;
    if header.next_command != 0 {
        return Err(Death::Lost(
            "compound responses are not supported".to_owned(),
        ));
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
        return Ok(()); // the final response follows; the request keeps waiting
    }
    if header.message_id == u64::MAX {
        return Ok(()); // unsolicited (oplock/lease break): we never ask for oplocks
    }
    // The session still decides whether a reply had to be signed; a failed check here only
    // leaves `verified` false, and the session's own check then fails the request.
    let verified = verify
        && !encrypted
        && header.flags & FLAG_SIGNED != 0
        && keys.is_some_and(|(_, k)| k.verify(&mut msg));
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
                verified,
            }));
        }
        None => tracing::debug!(
            mid = header.message_id,
            "response for an unknown request ignored"
        ),
    }
    Ok(())
}
