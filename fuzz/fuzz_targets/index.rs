//! Index segments: `decode_segment` on the raw object (name = content hash), on an object whose body
//! is the input sealed as-is (zstd frame parsing), and on one whose body is the input compressed and
//! sealed (the record parser and its count checks).
#![no_main]
use ibs_repo::crypto::SymKey;
use ibs_repo::index;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = SymKey::from_bytes(&[7u8; 32]).expect("32 bytes");
    let name = blake3::hash(data).to_hex();
    let _ = index::decode_segment(&name, data, &key);
    let compressed = zstd::bulk::compress(data, 1).expect("zstd");
    for body in [data, &compressed[..]] {
        let mut obj = index::INDEX_MAGIC.to_vec();
        obj.extend_from_slice(&index::INDEX_VERSION.to_le_bytes());
        obj.extend_from_slice(&key.seal(index::INDEX_AAD, body));
        let name = blake3::hash(&obj).to_hex();
        let _ = index::decode_segment(&name, &obj, &key);
    }
});
