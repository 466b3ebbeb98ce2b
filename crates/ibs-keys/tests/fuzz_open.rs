//! `open_envelope` and `envelope_recipients` never panic, whatever bytes they get:
//! random data, random DER-looking data, and mutations of a valid envelope. A seeded
//! loop (no proptest) keeps failures reproducible.

mod common;

use common::{now_unix, TestRng};
use ibs_keys::{envelope_recipients, generate_self_signed, open_envelope, seal_envelope};

#[test]
fn open_envelope_never_panics_on_random_input() {
    let id = generate_self_signed("fuzz", 2048, 30, now_unix()).unwrap();
    let mut rng = TestRng::new(0x001b_56e7_0001);
    for round in 0..3000 {
        let len = rng.below(700);
        let mut bytes = rng.bytes(len);
        if round % 2 == 0 && !bytes.is_empty() {
            // Look like a DER SEQUENCE so parsing goes deeper.
            bytes[0] = 0x30;
        }
        assert!(open_envelope(&id, &bytes).is_err(), "round {round}");
        let _ = envelope_recipients(&bytes);
    }
}

#[test]
fn open_envelope_never_panics_on_mutated_envelopes() {
    let now = now_unix();
    let id = generate_self_signed("fuzz", 2048, 30, now).unwrap();
    let other = generate_self_signed("other", 2048, 30, now).unwrap();
    let payload = [0x33u8; 48];
    let env = seal_envelope(&[id.certificate(), other.certificate()], &payload).unwrap();
    let mut rng = TestRng::new(0xdead_beef);
    for round in 0..1500 {
        let mut bad = env.clone();
        match round % 4 {
            0 => {
                // A few random byte changes.
                for _ in 0..=rng.below(4) {
                    let i = rng.below(bad.len());
                    bad[i] = rng.next_u64() as u8;
                }
            }
            1 => bad.truncate(rng.below(env.len())),
            2 => {
                // Insert random bytes.
                let i = rng.below(bad.len());
                let n = 1 + rng.below(8);
                let extra = rng.bytes(n);
                bad.splice(i..i, extra);
            }
            _ => {
                // Remove a random range.
                let i = rng.below(bad.len());
                let j = (i + 1 + rng.below(16)).min(bad.len());
                bad.drain(i..j);
            }
        }
        let _ = envelope_recipients(&bad);
        let _ = open_envelope(&id, &bad);
    }
    // The unmodified envelope still opens for both recipients.
    assert_eq!(open_envelope(&id, &env).unwrap().as_slice(), payload);
    assert_eq!(open_envelope(&other, &env).unwrap().as_slice(), payload);
}
