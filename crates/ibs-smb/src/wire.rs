//! Byte-level framing: little-endian writer/reader helpers, UTF-16LE strings, and the 64-byte SMB2
//! header. Invariant: every parser here is bounds-checked and returns `SmbError::Protocol` on short or
//! malformed input; nothing in this module can panic on server data.

use crate::error::{SmbError, SmbResult};
use crate::ntstatus::NtStatus;

pub const HEADER_LEN: usize = 64;
pub const PROTO_SMB2: [u8; 4] = [0xFE, b'S', b'M', b'B'];
pub const PROTO_TRANSFORM: [u8; 4] = [0xFD, b'S', b'M', b'B'];

pub const FLAG_SERVER_TO_REDIR: u32 = 0x1;
pub const FLAG_ASYNC: u32 = 0x2;
pub const FLAG_SIGNED: u32 = 0x8;

/// SMB2 command codes used by this client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Command {
    Negotiate = 0,
    SessionSetup = 1,
    Logoff = 2,
    TreeConnect = 3,
    TreeDisconnect = 4,
    Create = 5,
    Close = 6,
    Flush = 7,
    Read = 8,
    Write = 9,
    Ioctl = 0xB,
    Echo = 0xD,
    QueryDirectory = 0xE,
    QueryInfo = 0x10,
    SetInfo = 0x11,
    OplockBreak = 0x12,
}

/// A little-endian byte builder.
#[derive(Default)]
pub struct W(pub Vec<u8>);

impl W {
    pub fn with_capacity(n: usize) -> Self {
        W(Vec::with_capacity(n))
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    pub fn zeros(&mut self, n: usize) -> &mut Self {
        self.0.resize(self.0.len() + n, 0);
        self
    }
    pub fn align(&mut self, a: usize) -> &mut Self {
        let pad = (a - self.0.len() % a) % a;
        self.zeros(pad)
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn put_u16_at(&mut self, at: usize, v: u16) {
        self.0[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }
    pub fn put_u32_at(&mut self, at: usize, v: u32) {
        self.0[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
}

fn short(what: &str) -> SmbError {
    SmbError::Protocol(format!("truncated {what}"))
}

pub fn rd_u16(b: &[u8], at: usize) -> SmbResult<u16> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| short("u16"))
}
pub fn rd_u32(b: &[u8], at: usize) -> SmbResult<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| short("u32"))
}
pub fn rd_u64(b: &[u8], at: usize) -> SmbResult<u64> {
    b.get(at..at + 8)
        .map(|s| {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            u64::from_le_bytes(a)
        })
        .ok_or_else(|| short("u64"))
}
pub fn rd_slice(b: &[u8], at: usize, len: usize) -> SmbResult<&[u8]> {
    at.checked_add(len)
        .and_then(|end| b.get(at..end))
        .ok_or_else(|| short("buffer"))
}

pub fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

pub fn from_utf16(b: &[u8]) -> SmbResult<String> {
    if b.len() & 1 == 1 {
        return Err(SmbError::Protocol("odd UTF-16 length".into()));
    }
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16(&units).map_err(|_| SmbError::Protocol("invalid UTF-16 name".into()))
}

/// The fields of an SMB2 header this client reads or writes.
#[derive(Clone, Debug, Default)]
pub struct Header {
    pub credit_charge: u16,
    pub status: u32,
    pub command: u16,
    pub credits: u16,
    pub flags: u32,
    pub next_command: u32,
    pub message_id: u64,
    pub async_id: u64,
    pub tree_id: u32,
    pub session_id: u64,
    pub signature: [u8; 16],
}

impl Header {
    pub fn request(command: Command, message_id: u64, credit_charge: u16, credits: u16) -> Self {
        Header {
            command: command as u16,
            message_id,
            credit_charge,
            credits,
            ..Default::default()
        }
    }

    pub fn status(&self) -> NtStatus {
        NtStatus(self.status)
    }

    pub fn encode(&self, w: &mut W) {
        w.bytes(&PROTO_SMB2)
            .u16(64)
            .u16(self.credit_charge)
            .u32(self.status)
            .u16(self.command)
            .u16(self.credits)
            .u32(self.flags)
            .u32(self.next_command)
            .u64(self.message_id);
        if self.flags & FLAG_ASYNC != 0 {
            w.u64(self.async_id);
        } else {
            w.u32(0).u32(self.tree_id);
        }
        w.u64(self.session_id).bytes(&self.signature);
    }

    pub fn decode(b: &[u8]) -> SmbResult<Self> {
        if b.len() < HEADER_LEN || b[0..4] != PROTO_SMB2 {
            return Err(SmbError::Protocol("not an SMB2 message".into()));
        }
        let flags = rd_u32(b, 16)?;
        let mut signature = [0u8; 16];
        signature.copy_from_slice(&b[48..64]);
        Ok(Header {
            credit_charge: rd_u16(b, 6)?,
            status: rd_u32(b, 8)?,
            command: rd_u16(b, 12)?,
            credits: rd_u16(b, 14)?,
            flags,
            next_command: rd_u32(b, 20)?,
            message_id: rd_u64(b, 24)?,
            async_id: if flags & FLAG_ASYNC != 0 {
                rd_u64(b, 32)?
            } else {
                0
            },
            tree_id: if flags & FLAG_ASYNC != 0 {
                0
            } else {
                rd_u32(b, 36)?
            },
            session_id: rd_u64(b, 40)?,
            signature,
        })
    }
}

/// Windows FILETIME (100 ns since 1601) to Unix seconds.
pub fn filetime_to_unix_secs(ft: u64) -> i64 {
    (ft / 10_000_000) as i64 - 11_644_473_600
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip() {
        let mut h = Header::request(Command::Write, 42, 16, 64);
        h.tree_id = 7;
        h.session_id = 0x1122334455667788;
        let mut w = W::default();
        h.encode(&mut w);
        assert_eq!(w.len(), HEADER_LEN);
        let d = Header::decode(&w.0).unwrap();
        assert_eq!(
            (
                d.message_id,
                d.credit_charge,
                d.credits,
                d.tree_id,
                d.session_id
            ),
            (42, 16, 64, 7, h.session_id)
        );
        assert!(Header::decode(&w.0[..40]).is_err());
    }

    #[test]
    fn utf16_roundtrip() {
        assert_eq!(from_utf16(&utf16("dir\\ä.bin")).unwrap(), "dir\\ä.bin");
        assert!(from_utf16(&[1]).is_err());
    }
}
