//! Bodies of the SMB2 requests this client sends and parsers for their responses (MS-SMB2 2.2).
//! A request body is everything after the 64-byte header; offsets inside bodies are relative to the
//! start of the header, as the protocol defines. Parsers take the whole message (header included).

use crate::crypto::{Cipher, Dialect};
use crate::error::{SmbError, SmbResult};
use crate::wire::{from_utf16, rd_slice, rd_u16, rd_u32, rd_u64, utf16, HEADER_LEN, W};

pub const SECURITY_SIGNING_ENABLED: u16 = 1;
pub const SECURITY_SIGNING_REQUIRED: u16 = 2;
/// The client's SecurityMode in NEGOTIATE and SESSION_SETUP: signing enabled AND required, so the
/// server signs every reply of the session (MS-SMB2 3.3.4.1.1).
pub const CLIENT_SECURITY_MODE: u16 = SECURITY_SIGNING_ENABLED | SECURITY_SIGNING_REQUIRED;
pub const CAP_DFS: u32 = 0x1;
pub const CAP_LARGE_MTU: u32 = 0x4;
pub const CAP_ENCRYPTION: u32 = 0x40;
pub const SESSION_FLAG_IS_GUEST: u16 = 0x1;
pub const SESSION_FLAG_IS_NULL: u16 = 0x2;
pub const SESSION_FLAG_ENCRYPT_DATA: u16 = 0x4;
pub const SHARE_FLAG_ENCRYPT_DATA: u32 = 0x8000;

// Access masks and create parameters.
pub const GENERIC_READ: u32 = 0x8000_0000;
pub const GENERIC_WRITE: u32 = 0x4000_0000;
pub const DELETE: u32 = 0x0001_0000;
pub const SYNCHRONIZE: u32 = 0x0010_0000;
pub const FILE_READ_DATA: u32 = 0x1;
pub const FILE_READ_ATTRIBUTES: u32 = 0x80;
pub const SHARE_ALL: u32 = 0x7;
pub const DISPOSITION_OPEN: u32 = 1;
pub const DISPOSITION_CREATE: u32 = 2;
pub const DISPOSITION_OPEN_IF: u32 = 3;
pub const DISPOSITION_OVERWRITE_IF: u32 = 5;
pub const OPT_DIRECTORY: u32 = 0x1;
pub const OPT_NON_DIRECTORY: u32 = 0x40;
pub const ATTR_DIRECTORY: u32 = 0x10;
pub const ATTR_NORMAL: u32 = 0x80;

// Info classes.
pub const INFO_FILE: u8 = 1;
pub const INFO_FILESYSTEM: u8 = 2;
pub const FILE_BASIC_INFORMATION: u8 = 4;
pub const FILE_STANDARD_INFORMATION: u8 = 5;
pub const FILE_RENAME_INFORMATION: u8 = 10;
pub const FILE_DISPOSITION_INFORMATION: u8 = 13;
pub const FILE_FS_FULL_SIZE_INFORMATION: u8 = 7;
pub const FILE_DIRECTORY_INFORMATION: u8 = 1;

/// A server file handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId(pub [u8; 16]);

fn body(m: &[u8]) -> SmbResult<&[u8]> {
    m.get(HEADER_LEN..)
        .ok_or_else(|| SmbError::Protocol("message shorter than its header".into()))
}

// ---- NEGOTIATE ----

/// The NEGOTIATE request body; for 3.1.1 with the preauth and encryption negotiate contexts.
pub fn negotiate(
    dialects: &[Dialect],
    client_guid: &[u8; 16],
    salt: &[u8; 32],
    gmac: bool,
) -> Vec<u8> {
    let has311 = dialects.contains(&Dialect::Smb311);
    let mut w = W::with_capacity(256);
    w.u16(36)
        .u16(dialects.len() as u16)
        .u16(CLIENT_SECURITY_MODE)
        .u16(0);
    w.u32(client_capabilities(dialects)).bytes(client_guid);
    let ctx_offset_at = w.len();
    w.u32(0).u16(0).u16(0); // context offset/count, or ClientStartTime
    for d in dialects {
        w.u16(*d as u16);
    }
    if has311 {
        w.align(8);
        let off = (HEADER_LEN + w.len()) as u32;
        w.put_u32_at(ctx_offset_at, off);
        w.put_u16_at(ctx_offset_at + 4, if gmac { 3 } else { 2 });
        // SMB2_PREAUTH_INTEGRITY_CAPABILITIES: SHA-512 with a 32-byte salt.
        w.u16(1).u16(38).u32(0).u16(1).u16(32).u16(1).bytes(salt);
        w.align(8);
        // SMB2_ENCRYPTION_CAPABILITIES: AES-128-GCM preferred, AES-128-CCM.
        w.u16(2)
            .u16(6)
            .u32(0)
            .u16(2)
            .u16(Cipher::Aes128Gcm as u16)
            .u16(Cipher::Aes128Ccm as u16);
        if gmac {
            // SMB2_SIGNING_CAPABILITIES: AES-GMAC preferred, AES-CMAC.
            w.align(8);
            w.u16(8).u16(6).u32(0).u16(2).u16(2).u16(1);
        }
    }
    w.0
}

/// The Capabilities this client sends in NEGOTIATE (and repeats in VALIDATE_NEGOTIATE).
pub fn client_capabilities(dialects: &[Dialect]) -> u32 {
    if dialects.iter().any(|d| d.is_smb3()) {
        CAP_LARGE_MTU | CAP_ENCRYPTION
    } else {
        CAP_LARGE_MTU
    }
}

#[derive(Debug)]
pub struct NegotiateResponse {
    pub security_mode: u16,
    pub server_guid: [u8; 16],
    pub dialect: u16,
    pub capabilities: u32,
    pub max_transact: u32,
    pub max_read: u32,
    pub max_write: u32,
    pub security_blob: Vec<u8>,
    pub cipher: Option<Cipher>,
    /// The server chose AES-GMAC signing (3.1.1 signing capabilities context).
    pub gmac: bool,
}

pub fn parse_negotiate(m: &[u8]) -> SmbResult<NegotiateResponse> {
    let b = body(m)?;
    let dialect = rd_u16(b, 4)?;
    let ctx_count = rd_u16(b, 6)? as usize;
    let sec_off = rd_u16(b, 56)? as usize;
    let sec_len = rd_u16(b, 58)? as usize;
    let mut cipher = None;
    let mut gmac = false;
    if dialect == 0x0311 {
        let mut off = rd_u32(b, 60)? as usize;
        for _ in 0..ctx_count {
            let ty = rd_u16(m, off)?;
            let len = rd_u16(m, off + 2)? as usize;
            let data = rd_slice(m, off + 8, len)?;
            if ty == 2 && rd_u16(data, 0)? >= 1 {
                cipher = match rd_u16(data, 2)? {
                    1 => Some(Cipher::Aes128Ccm),
                    2 => Some(Cipher::Aes128Gcm),
                    _ => None,
                };
            }
            if ty == 8 && rd_u16(data, 0)? >= 1 {
                gmac = rd_u16(data, 2)? == 2;
            }
            off = (off + 8 + len).div_ceil(8) * 8;
        }
    }
    let mut server_guid = [0u8; 16];
    server_guid.copy_from_slice(rd_slice(b, 8, 16)?);
    Ok(NegotiateResponse {
        security_mode: rd_u16(b, 2)?,
        server_guid,
        dialect,
        capabilities: rd_u32(b, 24)?,
        max_transact: rd_u32(b, 28)?,
        max_read: rd_u32(b, 32)?,
        max_write: rd_u32(b, 36)?,
        security_blob: if sec_len == 0 {
            Vec::new()
        } else {
            rd_slice(m, sec_off, sec_len)?.to_vec()
        },
        cipher,
        gmac,
    })
}

// ---- SESSION_SETUP / TREE_CONNECT ----

pub fn session_setup(token: &[u8]) -> Vec<u8> {
    let mut w = W::with_capacity(24 + token.len());
    w.u16(25)
        .u8(0)
        .u8(CLIENT_SECURITY_MODE as u8)
        .u32(CAP_DFS)
        .u32(0);
    w.u16((HEADER_LEN + 24) as u16)
        .u16(token.len() as u16)
        .u64(0)
        .bytes(token);
    w.0
}

/// (session flags, security blob)
pub fn parse_session_setup(m: &[u8]) -> SmbResult<(u16, Vec<u8>)> {
    let b = body(m)?;
    let flags = rd_u16(b, 2)?;
    let off = rd_u16(b, 4)? as usize;
    let len = rd_u16(b, 6)? as usize;
    let blob = if len == 0 {
        Vec::new()
    } else {
        rd_slice(m, off, len)?.to_vec()
    };
    Ok((flags, blob))
}

pub fn tree_connect(unc: &str) -> Vec<u8> {
    let path = utf16(unc);
    let mut w = W::with_capacity(8 + path.len());
    w.u16(9)
        .u16(0)
        .u16((HEADER_LEN + 8) as u16)
        .u16(path.len() as u16)
        .bytes(&path);
    w.0
}

/// Share flags of a TREE_CONNECT response.
pub fn parse_tree_connect(m: &[u8]) -> SmbResult<u32> {
    rd_u32(body(m)?, 4)
}

// ---- CREATE / CLOSE / FLUSH ----

#[derive(Clone, Copy, Debug)]
pub struct CreateParams {
    pub access: u32,
    pub attributes: u32,
    pub share: u32,
    pub disposition: u32,
    pub options: u32,
}

pub fn create(name: &str, p: &CreateParams) -> Vec<u8> {
    let n = utf16(name);
    let mut w = W::with_capacity(56 + n.len().max(1));
    w.u16(57).u8(0).u8(0).u32(2).u64(0).u64(0);
    w.u32(p.access)
        .u32(p.attributes)
        .u32(p.share)
        .u32(p.disposition)
        .u32(p.options);
    w.u16((HEADER_LEN + 56) as u16)
        .u16(n.len() as u16)
        .u32(0)
        .u32(0);
    if n.is_empty() {
        w.u8(0);
    } else {
        w.bytes(&n);
    }
    w.0
}

#[derive(Clone, Copy, Debug)]
pub struct CreateResponse {
    pub file_id: FileId,
    pub last_write_time: u64,
    pub end_of_file: u64,
    pub attributes: u32,
}

pub fn parse_create(m: &[u8]) -> SmbResult<CreateResponse> {
    let b = body(m)?;
    let mut id = [0u8; 16];
    id.copy_from_slice(rd_slice(b, 64, 16)?);
    Ok(CreateResponse {
        file_id: FileId(id),
        last_write_time: rd_u64(b, 24)?,
        end_of_file: rd_u64(b, 48)?,
        attributes: rd_u32(b, 56)?,
    })
}

pub fn close(id: FileId) -> Vec<u8> {
    let mut w = W::with_capacity(24);
    w.u16(24).u16(0).u32(0).bytes(&id.0);
    w.0
}

pub fn flush(id: FileId) -> Vec<u8> {
    let mut w = W::with_capacity(24);
    w.u16(24).u16(0).u32(0).bytes(&id.0);
    w.0
}

// ---- READ / WRITE ----

pub fn read(id: FileId, offset: u64, len: u32) -> Vec<u8> {
    let mut w = W::with_capacity(49);
    w.u16(49).u8(0x50).u8(0).u32(len).u64(offset).bytes(&id.0);
    w.u32(0).u32(0).u32(0).u16(0).u16(0).u8(0);
    w.0
}

/// The data range (offset, length) of a READ response, bounds-checked.
pub fn parse_read(m: &[u8]) -> SmbResult<(usize, usize)> {
    let b = body(m)?;
    let off = b
        .get(2)
        .copied()
        .ok_or_else(|| SmbError::Protocol("short read response".into()))? as usize;
    let len = rd_u32(b, 4)? as usize;
    if len == 0 {
        return Ok((0, 0));
    }
    rd_slice(m, off, len)?;
    Ok((off, len))
}

/// A WRITE request body header (48 bytes); the caller appends the data.
pub fn write_header(id: FileId, offset: u64, len: u32) -> W {
    let mut w = W::with_capacity(48 + len as usize);
    w.u16(49)
        .u16((HEADER_LEN + 48) as u16)
        .u32(len)
        .u64(offset)
        .bytes(&id.0);
    w.u32(0).u32(0).u16(0).u16(0).u32(0);
    w
}

/// Bytes written according to a WRITE response.
pub fn parse_write(m: &[u8]) -> SmbResult<u32> {
    rd_u32(body(m)?, 4)
}

// ---- QUERY_DIRECTORY ----

pub fn query_directory(id: FileId, restart: bool, out_len: u32) -> Vec<u8> {
    let pattern = utf16("*");
    let mut w = W::with_capacity(40);
    w.u16(33)
        .u8(FILE_DIRECTORY_INFORMATION)
        .u8(if restart { 1 } else { 0 })
        .u32(0)
        .bytes(&id.0);
    w.u16((HEADER_LEN + 32) as u16)
        .u16(pattern.len() as u16)
        .u32(out_len)
        .bytes(&pattern);
    w.0
}

#[derive(Clone, Debug)]
pub struct DirEntry {
    pub name: String,
    pub size: u64,
    pub last_write_time: u64,
    pub is_dir: bool,
}

pub fn parse_query_directory(m: &[u8]) -> SmbResult<Vec<DirEntry>> {
    let b = body(m)?;
    let off = rd_u16(b, 2)? as usize;
    let len = rd_u32(b, 4)? as usize;
    let buf = rd_slice(m, off, len)?;
    let mut out = Vec::new();
    let mut i = 0usize;
    loop {
        let e = buf
            .get(i..)
            .ok_or_else(|| SmbError::Protocol("bad directory entry offset".into()))?;
        let next = rd_u32(e, 0)? as usize;
        let name_len = rd_u32(e, 60)? as usize;
        out.push(DirEntry {
            name: from_utf16(rd_slice(e, 64, name_len)?)?,
            size: rd_u64(e, 40)?,
            last_write_time: rd_u64(e, 24)?,
            is_dir: rd_u32(e, 56)? & ATTR_DIRECTORY != 0,
        });
        if next == 0 {
            break;
        }
        i += next;
    }
    Ok(out)
}

// ---- IOCTL: FSCTL_VALIDATE_NEGOTIATE_INFO ----

pub const FSCTL_VALIDATE_NEGOTIATE_INFO: u32 = 0x0014_0204;
const IOCTL_IS_FSCTL: u32 = 1;
/// Size of a VALIDATE_NEGOTIATE_INFO response (MS-SMB2 2.2.32.6).
pub const VALIDATE_NEGOTIATE_LEN: usize = 24;

/// What this client sent in its NEGOTIATE request, repeated in VALIDATE_NEGOTIATE (2.2.31.4).
#[derive(Clone, Debug)]
pub struct NegotiateOffer {
    pub capabilities: u32,
    pub guid: [u8; 16],
    pub security_mode: u16,
    pub dialects: Vec<Dialect>,
}

/// The IOCTL request body carrying FSCTL_VALIDATE_NEGOTIATE_INFO (2.2.31, 2.2.31.4).
pub fn validate_negotiate(offer: &NegotiateOffer) -> Vec<u8> {
    let mut input = W::with_capacity(24 + 2 * offer.dialects.len());
    input
        .u32(offer.capabilities)
        .bytes(&offer.guid)
        .u16(offer.security_mode)
        .u16(offer.dialects.len() as u16);
    for d in &offer.dialects {
        input.u16(*d as u16);
    }
    let mut w = W::with_capacity(56 + input.len());
    w.u16(57)
        .u16(0)
        .u32(FSCTL_VALIDATE_NEGOTIATE_INFO)
        .bytes(&[0xFF; 16]);
    w.u32((HEADER_LEN + 56) as u32)
        .u32(input.len() as u32)
        .u32(0) // MaxInputResponse
        .u32(0) // OutputOffset
        .u32(0) // OutputCount
        .u32(VALIDATE_NEGOTIATE_LEN as u32)
        .u32(IOCTL_IS_FSCTL)
        .u32(0)
        .bytes(&input.0);
    w.0
}

/// The server's answer to VALIDATE_NEGOTIATE (2.2.32.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidateNegotiateResponse {
    pub capabilities: u32,
    pub guid: [u8; 16],
    pub security_mode: u16,
    pub dialect: u16,
}

pub fn parse_validate_negotiate(m: &[u8]) -> SmbResult<ValidateNegotiateResponse> {
    let b = body(m)?;
    let off = rd_u32(b, 32)? as usize;
    let len = rd_u32(b, 36)? as usize;
    if len < VALIDATE_NEGOTIATE_LEN {
        return Err(SmbError::Protocol(format!(
            "VALIDATE_NEGOTIATE response of {len} bytes"
        )));
    }
    let out = rd_slice(m, off, VALIDATE_NEGOTIATE_LEN)?;
    let mut guid = [0u8; 16];
    guid.copy_from_slice(&out[4..20]);
    Ok(ValidateNegotiateResponse {
        capabilities: rd_u32(out, 0)?,
        guid,
        security_mode: rd_u16(out, 20)?,
        dialect: rd_u16(out, 22)?,
    })
}

// ---- QUERY_INFO / SET_INFO ----

pub fn query_info(id: FileId, info_type: u8, class: u8, out_len: u32) -> Vec<u8> {
    let mut w = W::with_capacity(41);
    w.u16(41)
        .u8(info_type)
        .u8(class)
        .u32(out_len)
        .u16(0)
        .u16(0)
        .u32(0)
        .u32(0)
        .u32(0)
        .bytes(&id.0)
        .u8(0);
    w.0
}

pub fn parse_query_info(m: &[u8]) -> SmbResult<&[u8]> {
    let b = body(m)?;
    let off = rd_u16(b, 2)? as usize;
    let len = rd_u32(b, 4)? as usize;
    rd_slice(m, off, len)
}

pub fn set_info(id: FileId, class: u8, data: &[u8]) -> Vec<u8> {
    let mut w = W::with_capacity(32 + data.len());
    w.u16(33)
        .u8(INFO_FILE)
        .u8(class)
        .u32(data.len() as u32)
        .u16((HEADER_LEN + 32) as u16)
        .u16(0)
        .u32(0);
    w.bytes(&id.0).bytes(data);
    w.0
}

/// FileRenameInformation (SMB2 form); `target` is relative to the share root.
pub fn rename_info(target: &str, replace: bool) -> Vec<u8> {
    let n = utf16(target);
    let mut w = W::with_capacity(20 + n.len());
    w.u8(replace as u8)
        .zeros(7)
        .u64(0)
        .u32(n.len() as u32)
        .bytes(&n);
    w.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bodies_have_the_documented_fixed_sizes() {
        let id = FileId([1; 16]);
        assert_eq!(close(id).len(), 24);
        assert_eq!(read(id, 0, 1).len(), 49);
        assert_eq!(write_header(id, 0, 0).len(), 48);
        assert_eq!(
            create(
                "",
                &CreateParams {
                    access: 0,
                    attributes: 0,
                    share: 0,
                    disposition: 0,
                    options: 0
                }
            )
            .len(),
            57
        );
        assert_eq!(query_info(id, 1, 5, 100).len(), 41);
        assert_eq!(rename_info("a", true).len(), 22);
        let offer = NegotiateOffer {
            capabilities: 0,
            guid: [0; 16],
            security_mode: CLIENT_SECURITY_MODE,
            dialects: vec![Dialect::Smb300, Dialect::Smb302],
        };
        assert_eq!(validate_negotiate(&offer).len(), 56 + 24 + 4);
        let n = negotiate(
            &[Dialect::Smb210, Dialect::Smb311],
            &[0; 16],
            &[0; 32],
            true,
        );
        assert_eq!(n.len() % 2, 0);
    }
}
