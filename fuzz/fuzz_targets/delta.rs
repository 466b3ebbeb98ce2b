//! Delta recipes (`ibs_repo::delta`): `validate` and `apply` on arbitrary recipes against an
//! arbitrary base. Input: u16le base length ‖ base ‖ recipe. Neither may panic, over-read, or
//! allocate beyond the target bound; `apply` returns bytes only when they hash to the target id.
#![no_main]
use ibs_repo::crypto::SymKey;
use ibs_repo::delta;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let n = (u16::from_le_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
    let (base, recipe) = data[2..].split_at(n);
    let key = SymKey::from_bytes(&[7u8; 32]).expect("32 bytes");
    let _ = delta::header(recipe);
    let _ = delta::validate(recipe, base.len());
    if let Ok(out) = delta::apply(recipe, base, &key) {
        let h = delta::header(recipe).expect("applied recipes have a header");
        assert_eq!(key.chunk_id(&out), h.target);
    }
});
