//! CMS key envelopes (data-key and repository-key objects): `envelope_recipients` and
//! `open_envelope` with a fixed test identity (fuzz/fixtures/identity.pfx, password `fuzz`), so seeds
//! addressed to it reach key unwrapping and content decryption.
#![no_main]
use ibs_keys::{envelope_recipients, open_envelope, PrivateIdentity};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn identity() -> &'static PrivateIdentity {
    static ID: OnceLock<PrivateIdentity> = OnceLock::new();
    ID.get_or_init(|| {
        PrivateIdentity::from_pfx(include_bytes!("../fixtures/identity.pfx"), "fuzz")
            .expect("fixture identity")
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = envelope_recipients(data);
    let _ = open_envelope(identity(), data);
});
