//! .pfx files (received base64 in `POST /backups/{id}/restore` and read by `ibs` from disk):
//! `PrivateIdentity::from_pfx`.
#![no_main]
use ibs_keys::PrivateIdentity;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = PrivateIdentity::from_pfx(data, "fuzz");
});
