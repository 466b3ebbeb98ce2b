//! NTLMv2 authentication (MS-NLMP) wrapped in SPNEGO (RFC 4178) tokens. Owns the three NTLM messages,
//! the NTOWFv2/NTProofStr computation and the session base key.
//! Invariants: the password only lives in `Secret` (zeroized on drop, redacted in Debug); no key
//! material is ever logged; the server's target info is echoed back verbatim (MS-NLMP 3.1.5.1.2).

use crate::error::{SmbError, SmbResult};
use crate::wire::{rd_slice, rd_u16, rd_u32, utf16};
use hmac::{Hmac, KeyInit, Mac};
use md4::{Digest, Md4};
use md5::Md5;
use zeroize::{Zeroize, Zeroizing};

type HmacMd5 = Hmac<Md5>;

const SIG: &[u8; 8] = b"NTLMSSP\0";
const NTLMSSP_OID: [u8; 10] = [0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x02, 0x0a];
const SPNEGO_OID: [u8; 6] = [0x2b, 0x06, 0x01, 0x05, 0x05, 0x02];

const F_UNICODE: u32 = 0x1;
const F_REQUEST_TARGET: u32 = 0x4;
const F_SIGN: u32 = 0x10;
const F_NTLM: u32 = 0x200;
const F_ALWAYS_SIGN: u32 = 0x8000;
const F_EXTENDED_SESSIONSECURITY: u32 = 0x8_0000;
const F_TARGET_INFO: u32 = 0x80_0000;
const F_128: u32 = 0x2000_0000;
const F_56: u32 = 0x8000_0000;
const F_VERSION: u32 = 0x0200_0000;
const F_KEY_EXCH: u32 = 0x4000_0000;
const CLIENT_FLAGS: u32 = F_UNICODE
    | F_REQUEST_TARGET
    | F_SIGN
    | F_NTLM
    | F_ALWAYS_SIGN
    | F_EXTENDED_SESSIONSECURITY
    | F_TARGET_INFO
    | F_VERSION
    | F_128
    | F_KEY_EXCH
    | F_56;
/// Windows 6.1 build 7601, NTLM revision 15 (the VERSION structure, informational only).
const VERSION: [u8; 8] = [6, 1, 0xb1, 0x1d, 0, 0, 0, 0x0f];
const AV_FLAGS: u16 = 6;
const AV_FLAG_MIC_PRESENT: u32 = 0x2;

const AV_EOL: u16 = 0;
const AV_TIMESTAMP: u16 = 7;

/// A password (or other secret) that is zeroized on drop and never printed.
#[derive(Clone, Zeroize, zeroize::ZeroizeOnDrop)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The NTLM NEGOTIATE_MESSAGE.
pub fn negotiate_message() -> Vec<u8> {
    let mut m = Vec::with_capacity(32);
    m.extend_from_slice(SIG);
    m.extend_from_slice(&1u32.to_le_bytes());
    m.extend_from_slice(&CLIENT_FLAGS.to_le_bytes());
    m.extend_from_slice(&[0u8; 16]); // domain and workstation fields: empty
    m.extend_from_slice(&VERSION);
    m
}

/// What the client needs from the CHALLENGE_MESSAGE.
#[derive(Debug)]
pub struct Challenge {
    pub flags: u32,
    pub server_challenge: [u8; 8],
    pub target_info: Vec<u8>,
    pub timestamp: Option<u64>,
}

pub fn parse_challenge(m: &[u8]) -> SmbResult<Challenge> {
    if m.len() < 48 || &m[..8] != SIG || rd_u32(m, 8)? != 2 {
        return Err(SmbError::Protocol("not an NTLM challenge".into()));
    }
    let flags = rd_u32(m, 20)?;
    let mut server_challenge = [0u8; 8];
    server_challenge.copy_from_slice(&m[24..32]);
    let ti_len = rd_u16(m, 40)? as usize;
    let ti_off = rd_u32(m, 44)? as usize;
    let target_info = rd_slice(m, ti_off, ti_len)?.to_vec();
    let mut timestamp = None;
    let mut i = 0;
    while i + 4 <= target_info.len() {
        let id = rd_u16(&target_info, i)?;
        let len = rd_u16(&target_info, i + 2)? as usize;
        if id == AV_EOL {
            break;
        }
        if id == AV_TIMESTAMP && len == 8 {
            let b = rd_slice(&target_info, i + 4, 8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            timestamp = Some(u64::from_le_bytes(a));
        }
        i += 4 + len;
    }
    Ok(Challenge {
        flags,
        server_challenge,
        target_info,
        timestamp,
    })
}

fn hmac_md5(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    let mut m = <HmacMd5 as KeyInit>::new_from_slice(key).expect("any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// NTOWFv2 (MS-NLMP 3.3.2).
pub fn ntowf_v2(user: &str, domain: &str, password: &Secret) -> Zeroizing<[u8; 16]> {
    let pw = Zeroizing::new(utf16(password.expose()));
    let nt_hash: Zeroizing<[u8; 16]> = Zeroizing::new(Md4::digest(&*pw).into());
    let ud = utf16(&format!("{}{}", user.to_uppercase(), domain));
    Zeroizing::new(hmac_md5(&*nt_hash, &[&ud]))
}

/// The AUTHENTICATE_MESSAGE, the 16-byte session key and what SPNEGO's mechListMIC needs.
pub struct Authenticate {
    pub message: Vec<u8>,
    pub session_key: Zeroizing<[u8; 16]>,
    flags: u32,
}

/// Inputs of the message integrity code (MS-NLMP 3.1.5.1.2): the two earlier messages verbatim and
/// the random session key the client exports through key exchange.
pub struct MicInput<'a> {
    pub negotiate: &'a [u8],
    pub challenge: &'a [u8],
    pub exported_session_key: [u8; 16],
}

/// Adds MsvAvFlags = MIC present to the server's AV pairs (merging an existing MsvAvFlags).
fn with_mic_flag(target_info: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(target_info.len() + 8);
    let mut flags = AV_FLAG_MIC_PRESENT;
    let mut i = 0;
    while i + 4 <= target_info.len() {
        let id = u16::from_le_bytes([target_info[i], target_info[i + 1]]);
        let len = u16::from_le_bytes([target_info[i + 2], target_info[i + 3]]) as usize;
        if id == AV_EOL || i + 4 + len > target_info.len() {
            break;
        }
        if id == AV_FLAGS && len == 4 {
            let v = &target_info[i + 4..i + 8];
            flags |= u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
        } else {
            out.extend_from_slice(&target_info[i..i + 4 + len]);
        }
        i += 4 + len;
    }
    out.extend_from_slice(&AV_FLAGS.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // MsvAvEOL
    out
}

/// Builds the NTLMv2 AUTHENTICATE_MESSAGE for `user` in `domain`. With `mic`, the message carries a
/// MIC and (when the server agreed to key exchange) an encrypted random session key.
pub fn authenticate(
    ch: &Challenge,
    user: &str,
    domain: &str,
    password: &Secret,
    client_challenge: [u8; 8],
    now_filetime: u64,
    mic: Option<MicInput<'_>>,
) -> Authenticate {
    let key = ntowf_v2(user, domain, password);
    let time = ch.timestamp.unwrap_or(now_filetime);
    let target_info = if mic.is_some() {
        with_mic_flag(&ch.target_info)
    } else {
        ch.target_info.clone()
    };
    let mut temp = Vec::with_capacity(32 + target_info.len());
    temp.extend_from_slice(&[1, 1, 0, 0, 0, 0, 0, 0]);
    temp.extend_from_slice(&time.to_le_bytes());
    temp.extend_from_slice(&client_challenge);
    temp.extend_from_slice(&[0; 4]);
    temp.extend_from_slice(&target_info);
    temp.extend_from_slice(&[0; 4]);
    let nt_proof = hmac_md5(&*key, &[&ch.server_challenge, &temp]);
    let mut nt_response = nt_proof.to_vec();
    nt_response.extend_from_slice(&temp);
    let lm_response = if ch.timestamp.is_some() {
        vec![0u8; 24]
    } else {
        let mut v = hmac_md5(&*key, &[&ch.server_challenge, &client_challenge]).to_vec();
        v.extend_from_slice(&client_challenge);
        v
    };
    let base_key = Zeroizing::new(hmac_md5(&*key, &[&nt_proof]));

    let mut flags = CLIENT_FLAGS & (ch.flags | F_UNICODE | F_NTLM);
    if mic.is_none() {
        flags &= !(F_KEY_EXCH | F_VERSION);
    }
    let (session_key, encrypted_key) = match &mic {
        Some(m) if flags & F_KEY_EXCH != 0 => {
            let mut enc = m.exported_session_key;
            Rc4::new(&*base_key).apply(&mut enc);
            (Zeroizing::new(m.exported_session_key), enc.to_vec())
        }
        _ => (base_key, Vec::new()),
    };
    let domain_b = utf16(domain);
    let user_b = utf16(user);
    let ws_b = utf16("IBS");
    // MS-NLMP 2.2.1.3: LM, NT, domain, user, workstation, encrypted session key.
    let fields: [&[u8]; 6] = [
        &lm_response,
        &nt_response,
        &domain_b,
        &user_b,
        &ws_b,
        &encrypted_key,
    ];
    let header = if mic.is_some() { 88 } else { 64 };
    let mut m = Vec::with_capacity(header + fields.iter().map(|f| f.len()).sum::<usize>());
    m.extend_from_slice(SIG);
    m.extend_from_slice(&3u32.to_le_bytes());
    let mut offset = header as u32;
    for f in fields {
        m.extend_from_slice(&(f.len() as u16).to_le_bytes());
        m.extend_from_slice(&(f.len() as u16).to_le_bytes());
        m.extend_from_slice(&offset.to_le_bytes());
        offset += f.len() as u32;
    }
    m.extend_from_slice(&flags.to_le_bytes());
    if mic.is_some() {
        m.extend_from_slice(&VERSION);
        m.extend_from_slice(&[0u8; 16]); // MIC, filled below
    }
    for f in fields {
        m.extend_from_slice(f);
    }
    if let Some(mi) = &mic {
        let code = hmac_md5(&*session_key, &[mi.negotiate, mi.challenge, &m]);
        m[72..88].copy_from_slice(&code);
    }
    Authenticate {
        message: m,
        session_key,
        flags,
    }
}

impl Authenticate {
    /// The SPNEGO mechListMIC: the NTLMSSP signature (sequence 0) of the DER mechTypes list.
    pub fn mech_list_mic(&self, mech_types: &[u8]) -> [u8; 16] {
        let sign_key = md5_parts(&[
            &*self.session_key,
            b"session key to client-to-server signing key magic constant\0",
        ]);
        let seal_key = md5_parts(&[
            &*self.session_key,
            b"session key to client-to-server sealing key magic constant\0",
        ]);
        let seq = 0u32.to_le_bytes();
        let mut checksum = [0u8; 8];
        checksum.copy_from_slice(&hmac_md5(&sign_key, &[&seq, mech_types])[..8]);
        if self.flags & F_KEY_EXCH != 0 {
            Rc4::new(&seal_key).apply(&mut checksum);
        }
        let mut out = [0u8; 16];
        out[..4].copy_from_slice(&1u32.to_le_bytes());
        out[4..12].copy_from_slice(&checksum);
        out[12..].copy_from_slice(&seq);
        out
    }
}

fn md5_parts(parts: &[&[u8]]) -> [u8; 16] {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// RC4, only for the NTLM key exchange and the signature checksum (as MS-NLMP requires).
struct Rc4 {
    s: [u8; 256],
    i: u8,
    j: u8,
}

impl Rc4 {
    fn new(key: &[u8]) -> Self {
        let mut s = [0u8; 256];
        for (i, v) in s.iter_mut().enumerate() {
            *v = i as u8;
        }
        let mut j = 0u8;
        for i in 0..256 {
            j = j.wrapping_add(s[i]).wrapping_add(key[i % key.len()]);
            s.swap(i, j as usize);
        }
        Rc4 { s, i: 0, j: 0 }
    }

    fn apply(&mut self, data: &mut [u8]) {
        for b in data {
            self.i = self.i.wrapping_add(1);
            self.j = self.j.wrapping_add(self.s[self.i as usize]);
            self.s.swap(self.i as usize, self.j as usize);
            let idx = self.s[self.i as usize].wrapping_add(self.s[self.j as usize]);
            *b ^= self.s[idx as usize];
        }
    }
}

/// Splits `DOMAIN\user` into (user, domain); a bare `user` (or `user@realm`) has an empty domain.
pub fn split_user(username: &str) -> (&str, &str) {
    match username.split_once('\\') {
        Some((d, u)) => (u, d),
        None => (username, ""),
    }
}

// ---- SPNEGO (DER) ----

fn der_len(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend_from_slice(&[0x81, len as u8]);
    } else if len < 0x1_0000 {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    } else {
        out.extend_from_slice(&[0x83, (len >> 16) as u8, (len >> 8) as u8, len as u8]);
    }
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(content.len() + 5);
    v.push(tag);
    der_len(content.len(), &mut v);
    v.extend_from_slice(content);
    v
}

/// The DER mechTypes list sent in the NegTokenInit (input of the mechListMIC).
pub fn mech_types() -> Vec<u8> {
    der(0x30, &der(0x06, &NTLMSSP_OID))
}

/// GSS-API InitialContextToken with a NegTokenInit offering NTLMSSP and carrying `mech_token`.
pub fn spnego_init(mech_token: &[u8]) -> Vec<u8> {
    let mech_list = mech_types();
    let mut seq = der(0xa0, &mech_list);
    seq.extend(der(0xa2, &der(0x04, mech_token)));
    let mut inner = der(0x06, &SPNEGO_OID);
    inner.extend(der(0xa0, &der(0x30, &seq)));
    der(0x60, &inner)
}

/// NegTokenResp carrying `mech_token` and, optionally, the mechListMIC.
pub fn spnego_resp(mech_token: &[u8], mech_list_mic: Option<&[u8]>) -> Vec<u8> {
    let mut seq = der(0xa2, &der(0x04, mech_token));
    if let Some(mic) = mech_list_mic {
        seq.extend(der(0xa3, &der(0x04, mic)));
    }
    der(0xa1, &der(0x30, &seq))
}

/// Reads one DER TLV at `b`, returning (tag, content, rest).
fn tlv(b: &[u8]) -> SmbResult<(u8, &[u8], &[u8])> {
    let bad = || SmbError::Protocol("malformed SPNEGO token".into());
    let (&tag, rest) = b.split_first().ok_or_else(bad)?;
    let (&l0, rest) = rest.split_first().ok_or_else(bad)?;
    let (len, rest) = if l0 < 0x80 {
        (l0 as usize, rest)
    } else {
        let n = (l0 & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return Err(bad());
        }
        (
            rest[..n].iter().fold(0usize, |a, &x| (a << 8) | x as usize),
            &rest[n..],
        )
    };
    if rest.len() < len {
        return Err(bad());
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// The responseToken of a server NegTokenResp (None if absent, e.g. in the final accept).
pub fn spnego_response_token(b: &[u8]) -> SmbResult<Option<Vec<u8>>> {
    let (tag, content, _) = tlv(b)?;
    if tag != 0xa1 {
        return Err(SmbError::Protocol(format!(
            "unexpected SPNEGO token tag 0x{tag:02x}"
        )));
    }
    let (tag, mut seq, _) = tlv(content)?;
    if tag != 0x30 {
        return Err(SmbError::Protocol("malformed NegTokenResp".into()));
    }
    while !seq.is_empty() {
        let (t, c, rest) = tlv(seq)?;
        if t == 0xa2 {
            let (t2, tok, _) = tlv(c)?;
            if t2 == 0x04 {
                return Ok(Some(tok.to_vec()));
            }
        }
        seq = rest;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// MS-NLMP 4.2.4.1.1: NTOWFv2("Password", "User", "Domain").
    #[test]
    fn ntowf_v2_matches_the_spec_vector() {
        let k = ntowf_v2("User", "Domain", &Secret::new("Password"));
        assert_eq!(k.to_vec(), hex("0c868a403bfd7a93a3001ef22ef02e3f"));
    }

    /// MS-NLMP 4.2.4.2.2: NTProofStr and session base key for the spec's challenge.
    #[test]
    fn ntlmv2_response_matches_the_spec_vector() {
        let ti = hex("02000c0044006f006d00610069006e0001000c0053006500720076006500720000000000");
        let ch = Challenge {
            flags: CLIENT_FLAGS,
            server_challenge: hex("0123456789abcdef").try_into().unwrap(),
            target_info: ti,
            timestamp: None,
        };
        let a = authenticate(
            &ch,
            "User",
            "Domain",
            &Secret::new("Password"),
            [0xaa; 8],
            0,
            None,
        );
        // NtChallengeResponse starts at the offset in the NtChallengeResponseFields.
        let off = rd_u32(&a.message, 24).unwrap() as usize;
        assert_eq!(
            a.message[off..off + 16].to_vec(),
            hex("68cd0ab851e51c96aabc927bebef6a1c")
        );
        assert_eq!(
            a.session_key.to_vec(),
            hex("8de40ccadbc14a82f15cb0ad0de95ca3")
        );
    }

    /// RFC 6229 test vector: key 0102030405, first keystream bytes.
    #[test]
    fn rc4_keystream() {
        let mut b = [0u8; 8];
        Rc4::new(&[1, 2, 3, 4, 5]).apply(&mut b);
        assert_eq!(b.to_vec(), hex("b2396305f03dc027"));
    }

    #[test]
    fn mic_message_layout() {
        let ch = Challenge {
            flags: CLIENT_FLAGS,
            server_challenge: [1; 8],
            target_info: vec![0; 4],
            timestamp: Some(5),
        };
        let mi = MicInput {
            negotiate: b"n",
            challenge: b"c",
            exported_session_key: [9; 16],
        };
        let a = authenticate(&ch, "u", "", &Secret::new("p"), [2; 8], 0, Some(mi));
        assert_eq!(
            *a.session_key, [9; 16],
            "key exchange exports the random key"
        );
        assert_eq!(
            rd_u32(&a.message, 16).unwrap(),
            88,
            "payload starts after version and MIC"
        );
        assert_ne!(a.message[72..88], [0; 16], "MIC filled");
        assert_eq!(
            rd_u16(&a.message, 52).unwrap(),
            16,
            "encrypted session key present"
        );
    }

    #[test]
    fn spnego_roundtrip_and_split_user() {
        let tok = vec![7u8; 300];
        assert_eq!(
            spnego_response_token(&spnego_resp(&tok, Some(&[1; 16]))).unwrap(),
            Some(tok)
        );
        assert!(spnego_init(b"x").starts_with(&[0x60]));
        assert_eq!(split_user("DOM\\bob"), ("bob", "DOM"));
        assert_eq!(split_user("bob"), ("bob", ""));
        assert_eq!(format!("{:?}", Secret::new("pw")), "<redacted>");
    }
}
