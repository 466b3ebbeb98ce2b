//! `ibs-smb`: our own async SMB2/3 client and the SMB share storage backend of ibs.
//!
//! Layers, bottom up (each module's docs state what it owns and its invariants):
//! - [`wire`] byte helpers and the SMB2 header; [`messages`] request/response bodies;
//! - [`ntlm`] NTLMv2 in SPNEGO; [`crypto`] key derivation, signing, encryption;
//! - [`transport`] one TCP connection: framing, MessageId dispatch, credits, deadlines;
//! - [`session`] negotiate + session setup + tree connect; [`ops`] file operations;
//! - [`client`] reconnection and [`SmbOptions`]; [`storage`] the `Storage` implementation;
//! - [`location`] `\\host\share\folder` / `smb://` parsing and credentials; [`error`] typed errors
//!   and their classification into the five alert classes.
//!
//! Not covered: Kerberos, DFS referrals, multichannel, compression, durable/persistent handles,
//! oplocks/leases.

pub mod client;
pub mod crypto;
pub mod error;
pub mod handles;
pub mod location;
pub mod messages;
pub mod ntlm;
pub mod ntstatus;
pub mod ops;
pub mod session;
pub mod storage;
pub mod transport;
pub mod wire;

pub use client::{SmbClient, SmbOptions};
pub use crypto::Dialect;
pub use error::{SmbError, Stage};
pub use location::{LocationError, SmbCredentials, SmbLocation};
pub use ntlm::Secret;
pub use ntstatus::NtStatus;
pub use storage::SmbStorage;
