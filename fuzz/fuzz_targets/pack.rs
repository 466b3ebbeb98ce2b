//! Pack objects: `verify_pack` (name = content hash, prefix, trailer, sealed header), `parse_trailer`
//! against arbitrary pack lengths, and `open_header` on plaintexts sealed with the fixed key (so the
//! entry parser behind the AEAD is reached).
#![no_main]
use ibs_repo::crypto::SymKey;
use ibs_repo::ids::PackId;
use ibs_repo::pack;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = SymKey::from_bytes(&[7u8; 32]).expect("32 bytes");
    let id = PackId(*blake3::hash(data).as_bytes());
    let _ = pack::verify_pack(&id, data, Some(&key));
    let _ = pack::verify_pack(&id, data, None);
    if data.len() >= 16 {
        let len = u64::from_le_bytes(data[8..16].try_into().expect("8 bytes"));
        let _ = pack::parse_trailer(&data[..8], len);
        let _ = pack::parse_trailer(&data[..8], data.len() as u64);
    }
    if data.len() >= 4 {
        let off = u32::from_le_bytes(data[..4].try_into().expect("4 bytes")) as u64;
        let sealed = key.seal(pack::HEADER_AAD, &data[4..]);
        let _ = pack::open_header(&sealed, off, &key);
    }
});
