//! Bandwidth limits as an operator uses them (issue 17 "what to add" 2): `ibs repo backup
//! --limit-upload` closes packs at the throttle's size hint (a quarter second of the limit), so
//! no upload is one large burst, and takes at least as long as the limit allows; `ibs repo restore
//! --limit-download` reads at the limit and restores the same bytes; `ibs repo prune
//! --limit-upload` repacks into packs of the same small size. Only lower bounds on time are
//! asserted (the throttle guarantees them; a slow machine can only take longer).

mod common;

use common::*;
use std::path::Path;
use std::time::Instant;

/// Pseudo-random bytes (xorshift): they neither compress nor deduplicate.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Sizes of the pack files of the repository under `mas`.
fn packs(mas: &Path) -> Vec<u64> {
    let mut out = Vec::new();
    let mut stack = vec![mas.join("packs")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.metadata().unwrap().len());
            }
        }
    }
    out
}

#[test]
fn limited_backups_write_small_packs_and_limited_transfers_keep_to_the_rate() {
    const MIB: u64 = 1 << 20;
    let cert = shared_cert(0);
    let src = tempfile::tempdir().unwrap();
    for i in 0..4 {
        write(
            &src.path().join(format!("f{i}.bin")),
            &noise(MIB as usize, 2 * i + 7),
        );
    }

    // Unlimited: one pack (the repository's 16 MiB target holds it all).
    let free = Fx::new();
    free.init_cert(&cert.cer);
    free.backup(&[("data", src.path())]);
    assert_eq!(packs(&free.mas()).len(), 1, "{:?}", packs(&free.mas()));

    // 2 MiB/s: packs close at 512 KiB (plus the chunk that crosses it), and 4 MiB take at least
    // (4 MiB - the bucket's 1 MiB) / 2 MiB/s = 1.5 s.
    let fx = Fx::new();
    fx.init_cert(&cert.cer);
    let began = Instant::now();
    let out = fx
        .backup_cmd(&[("data", src.path())])
        .args(["--limit-upload", "2MiB/s"])
        .run()
        .ok();
    let took = began.elapsed().as_secs_f64();
    let id = out.last_line();
    let sizes = packs(&fx.mas());
    let total: u64 = sizes.iter().sum();
    println!(
        "backup of 4 MiB at 2 MiB/s: {took:.2} s, {} packs, largest {} KiB",
        sizes.len(),
        sizes.iter().max().unwrap() >> 10
    );
    assert!(total >= 4 * MIB, "{sizes:?}");
    assert!(sizes.len() >= 4, "packs were not closed early: {sizes:?}");
    assert!(
        sizes.iter().all(|s| *s <= 2 * MIB),
        "a pack above one second of the limit: {sizes:?}"
    );
    assert!(took >= 1.4, "4 MiB went up in {took:.2} s at 2 MiB/s");

    // Restore at 2 MiB/s: the same bytes, and no faster than the limit allows.
    let target = fx.path("restored");
    let began = Instant::now();
    fx.restore_cmd(&id, &target, &[&cert.pfx])
        .args(["--limit-download", "2MiB/s"])
        .run()
        .ok();
    let took = began.elapsed().as_secs_f64();
    println!("restore of 4 MiB at 2 MiB/s: {took:.2} s");
    for i in 0..4 {
        let name = format!("f{i}.bin");
        assert_eq!(
            std::fs::read(target.join("data").join(&name)).unwrap(),
            std::fs::read(src.path().join(&name)).unwrap(),
            "{name}"
        );
    }
    assert!(took >= 1.4, "4 MiB came down in {took:.2} s at 2 MiB/s");

    // Prune under the limit repacks into packs of the same small size: the unlimited repository's
    // one 4 MiB pack, half unused once only f0 and f1 are kept, becomes small packs, not one of
    // 2 MiB.
    std::fs::remove_file(src.path().join("f2.bin")).unwrap();
    std::fs::remove_file(src.path().join("f3.bin")).unwrap();
    next_second();
    free.backup(&[("data", src.path())]);
    free.repo_cmd("forget")
        .args(["--keep-days", "0"])
        .run()
        .ok();
    free.repo_cmd("prune")
        .args(["--grace-hours", "0", "--delete-delay-hours", "0"])
        .args(["--limit-upload", "2MiB/s"])
        .run()
        .ok();
    let sizes = packs(&free.mas());
    println!("after a prune at 2 MiB/s: packs of {sizes:?} bytes");
    assert!(sizes.iter().sum::<u64>() >= 2 * MIB, "{sizes:?}");
    assert!(
        sizes.len() >= 2 && sizes.iter().all(|s| *s <= 2 * MIB - (256 << 10)),
        "prune did not repack into small packs: {sizes:?}"
    );
}
