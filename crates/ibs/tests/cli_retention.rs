//! Retention: `forget` (by age, never the newest successful backup) and `prune` (frees what no
//! backup references), each with `--dry-run` that changes nothing.

mod common;

use common::*;

#[test]
fn forget_dry_run_then_forget_keeps_only_the_newest_successful() {
    let fx = Fx::new();
    let cert = shared_cert(0);
    fx.init_cert(&cert.cer);
    let src = fx.path("src");
    write(&src.join("common.txt"), b"shared\n");
    write(&src.join("u1.bin"), &pseudo_random(101, 1 << 20));
    let s1 = fx.backup(&[("data", &src)]);
    next_second();
    std::fs::remove_file(src.join("u1.bin")).unwrap();
    write(&src.join("u2.bin"), &pseudo_random(102, 1 << 20));
    let want2 = snapshot(&src);
    let s2 = fx.backup(&[("data", &src)]);
    next_second();
    // The newest backup is only PartialSucceeded (an unreadable file): it is not the protected one.
    let out = fx
        .backup_cmd(&[
            ("data", &src),
            ("bad", std::path::Path::new("/proc/self/mem")),
        ])
        .run()
        .code(3);
    let p3 = out.last_line();
    assert!(is_backup_id(&p3), "{out}");
    assert_eq!(fx.catalog(&p3)["status"], "PartialSucceeded");
    assert_eq!(fx.catalog(&s2)["status"], "Succeeded");
    next_second();
    let all = fx.list_ids();
    assert_eq!(all.len(), 3);

    // Nothing is older than a day.
    let keep1 = fx.repo_cmd("forget").args(["--keep-days", "1"]).run().ok();
    assert!(
        keep1.stdout.contains("removed 0 backups, kept 3"),
        "{keep1}"
    );
    assert_eq!(fx.list_ids(), all);

    let before = listing(&fx.mas());
    let dry = fx
        .repo_cmd("forget")
        .args(["--keep-days", "0", "--dry-run"])
        .run()
        .ok();
    for id in [&s1, &p3] {
        assert!(
            dry.stdout.contains(&format!("would remove {id}")),
            "dry run must list {id}:\n{dry}"
        );
    }
    assert!(!dry.stdout.contains(&format!("would remove {s2}")), "{dry}");
    assert!(dry.stdout.contains(&format!("kept {s2}")), "{dry}");
    assert!(
        dry.stdout.contains("would remove 2 backups, kept 1"),
        "{dry}"
    );
    assert_eq!(fx.list_ids(), all, "a dry run removed backups");
    assert_eq!(
        listing(&fx.mas()),
        before,
        "a dry run changed the repository"
    );

    let real = fx.repo_cmd("forget").args(["--keep-days", "0"]).run().ok();
    assert!(real.stdout.contains(&format!("removed {s1}")), "{real}");
    assert!(real.stdout.contains(&format!("removed {p3}")), "{real}");
    assert_eq!(fx.list_ids(), [s2.as_str()]);
    // Again: the newest successful backup is never removed, however old.
    next_second();
    fx.repo_cmd("forget").args(["--keep-days", "0"]).run().ok();
    assert_eq!(fx.list_ids(), [s2.as_str()]);

    let t = fx.path("t");
    fx.restore_cmd(&s2, &t, &[&cert.pfx])
        .args(["--source", "data"])
        .run()
        .ok();
    assert_tree(&want2, &t, "kept backup");
}

/// A repository with two backups of `files` (under `src/`), the last file removed before the
/// second, and the first backup forgotten: the fixture, its certificate, the second backup's tree
/// and id.
fn forgotten_first(files: &[(&str, Vec<u8>)]) -> (Fx, &'static Cert, Snapshot, String) {
    let fx = Fx::new();
    let cert = shared_cert(0);
    fx.init_cert(&cert.cer);
    let src = fx.path("src");
    for (name, bytes) in files {
        write(&src.join(name), bytes);
    }
    let _s1 = fx.backup(&[("data", &src)]);
    next_second();
    std::fs::remove_file(src.join(files.last().unwrap().0)).unwrap();
    let want = snapshot(&src);
    let s2 = fx.backup(&[("data", &src)]);
    next_second();
    fx.repo_cmd("forget").args(["--keep-days", "0"]).run().ok();
    (fx, cert, want, s2)
}

/// `--max-unused` bounds what prune repacks: 100 repacks nothing (and only removes unused packs),
/// 0 leaves no dead byte in the packs that stay; a value past 100 is a usage error that names it.
#[test]
fn max_unused_bounds_the_repack_and_a_bad_value_is_a_usage_error() {
    // One pack of ~3 MiB, a third of which the forgotten backup alone held.
    let (fx, cert, want, s2) = forgotten_first(&[
        ("keep.bin", pseudo_random(211, 2 << 20)),
        ("gone.bin", pseudo_random(212, 1 << 20)),
    ]);

    let plan_at = |percent: &str| {
        let out = fx
            .repo_cmd("prune")
            .args([
                "--grace-hours",
                "0",
                "--dry-run",
                "--json",
                "--max-unused",
                percent,
            ])
            .run()
            .ok();
        out.json()["plan"].clone()
    };
    let none = plan_at("100");
    assert_eq!(none["repack"].as_array().unwrap().len(), 0, "{none}");
    assert_eq!(none["repack_bytes"], 0);
    assert!(
        none["unused_bytes_after"].as_u64().unwrap() >= 1 << 20,
        "{none}"
    );
    let all = plan_at("0");
    assert!(!all["repack"].as_array().unwrap().is_empty(), "{all}");
    assert!(all["repack_bytes"].as_u64().unwrap() >= 2 << 20, "{all}");
    assert_eq!(all["unused_bytes_after"], 0, "{all}");
    // The text summary states the budget and what is left.
    let text = fx
        .repo_cmd("prune")
        .args(["--grace-hours", "0", "--dry-run", "--max-unused", "0"])
        .run()
        .ok();
    assert!(
        text.stdout.contains("unused in the packs that stay")
            && text.stdout.contains("at most 0 %"),
        "{text}"
    );
    for bad in ["101", "-1", "ten"] {
        fx.repo_cmd("prune")
            .args(["--grace-hours", "0", "--max-unused", bad])
            .run()
            .code(2)
            .stderr_has("--max-unused");
    }
    // A real prune with no repack still frees nothing live: the kept backup restores.
    let before = listing(&fx.mas());
    fx.repo_cmd("prune")
        .args([
            "--grace-hours",
            "0",
            "--delete-delay-hours",
            "0",
            "--max-unused",
            "100",
        ])
        .run()
        .ok();
    assert_ne!(listing(&fx.mas()), before, "prune removed nothing");
    let t = fx.path("t");
    fx.restore_cmd(&s2, &t, &[&cert.pfx])
        .args(["--source", "data"])
        .run()
        .ok();
    assert_tree(&want, &t, "after prune --max-unused 100");
    fx.check_full(&cert.pfx);
}

#[test]
fn prune_dry_run_changes_nothing_and_prune_frees_forgotten_data() {
    let (fx, cert, want2, s2) = forgotten_first(&[
        ("keep/shared.bin", pseudo_random(201, 2 << 20)),
        ("keep/notes.txt", b"notes\n".repeat(10_000)),
        ("unique.bin", pseudo_random(202, 6 << 20)),
    ]);
    assert_eq!(fx.list_ids(), [s2.as_str()]);

    let before = listing(&fx.mas());
    let size_before = dir_size(&fx.mas());
    let dry = fx
        .repo_cmd("prune")
        .args(["--grace-hours", "0"])
        .arg("--dry-run")
        .run()
        .ok();
    assert!(dry.stdout.contains("would "), "{dry}");
    assert_eq!(
        listing(&fx.mas()),
        before,
        "prune --dry-run changed the repository"
    );

    // By default what prune removes waits in the grace area for a day: the packs leave packs/,
    // the repository keeps their bytes under trash/.
    let packs_before = dir_size(&fx.mas().join("packs"));
    let out = fx.repo_cmd("prune").args(["--grace-hours", "0"]).run().ok();
    assert!(out.stdout.contains("grace area"), "{out}");
    let packs_after = dir_size(&fx.mas().join("packs"));
    assert!(
        packs_after + (5 << 20) < packs_before,
        "prune freed too little: {packs_before} -> {packs_after} bytes (6 MiB of unique data was forgotten)"
    );
    assert!(dir_size(&fx.mas().join("trash")) > 5 << 20);
    // A zero delete delay deletes at once and empties the grace area.
    fx.repo_cmd("prune")
        .args(["--grace-hours", "0", "--delete-delay-hours", "0"])
        .run()
        .ok();
    assert_eq!(dir_size(&fx.mas().join("trash")), 0);
    let size_after = dir_size(&fx.mas());
    assert!(
        size_after + (5 << 20) < size_before,
        "prune freed too little: {size_before} -> {size_after} bytes"
    );
    let t = fx.path("t");
    fx.restore_cmd(&s2, &t, &[&cert.pfx])
        .args(["--source", "data"])
        .run()
        .ok();
    assert_tree(&want2, &t, "after prune");
    fx.check_full(&cert.pfx);

    // A second prune finds nothing left to do.
    let again = fx
        .repo_cmd("prune")
        .args(["--grace-hours", "0"])
        .args(["--dry-run", "--json"])
        .run()
        .ok();
    let plan = &again.json()["plan"];
    for k in ["delete", "repack", "unindexed", "delete_keys"] {
        assert_eq!(
            plan[k].as_array().unwrap().len(),
            0,
            "{k} after a full prune:\n{again}"
        );
    }
}

/// A listing that does not show a backup this writer committed (here: its manifest moved out of
/// `backups/`, as a lying server would hide it) makes prune refuse and delete nothing; a writer
/// state without a ledger needs the operator's `--trust-listing`.
#[test]
fn prune_refuses_when_a_known_backup_is_not_listed_or_the_ledger_is_missing() {
    let fx = Fx::new();
    fx.init_cert(&shared_cert(0).cer);
    let src = fx.path("src");
    write(&src.join("a.bin"), &pseudo_random(7, 1 << 20));
    let id = fx.backup(&[("data", &src)]);
    let manifest = fx.mas().join("backups").join(&id);
    let aside = fx.path("hidden-manifest");
    std::fs::rename(&manifest, &aside).unwrap();
    let before = listing(&fx.mas());
    let out = fx
        .repo_cmd("prune")
        .args(["--grace-hours", "0"])
        .run()
        .code(1);
    assert!(
        out.stderr.contains("prune refused") && out.stderr.contains(&id),
        "{out}"
    );
    assert_eq!(
        listing(&fx.mas()),
        before,
        "a refused prune changed the repository"
    );
    std::fs::rename(&aside, &manifest).unwrap();

    // The repository's folder of the state (beside files such as `deployment-id`).
    let repo_id = std::fs::read_dir(&fx.state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();
    std::fs::remove_file(repo_id.join("backups.ledger")).unwrap();
    let before = listing(&fx.mas());
    fx.repo_cmd("prune")
        .args(["--grace-hours", "0"])
        .run()
        .code(1)
        .stderr_has("--trust-listing");
    assert_eq!(listing(&fx.mas()), before);
    fx.repo_cmd("prune")
        .args(["--grace-hours", "0", "--trust-listing"])
        .run()
        .ok();
    let t = fx.path("t");
    fx.restore_cmd(&id, &t, &[&shared_cert(0).pfx])
        .args(["--source", "data"])
        .run()
        .ok();
}

#[test]
fn forget_keep_last_keeps_the_newest_n_and_a_missing_rule_is_a_usage_error() {
    let fx = Fx::new();
    let cert = shared_cert(0);
    fx.init_cert(&cert.cer);
    let src = fx.path("src");
    let mut ids = Vec::new();
    for i in 0..3u64 {
        write(&src.join("f.bin"), &pseudo_random(300 + i, 64 << 10));
        ids.push(fx.backup(&[("data", &src)]));
        next_second();
    }
    // No rule at all: refused before anything is opened, naming both options.
    let none = fx.repo_cmd("forget").run().code(2);
    assert!(
        none.stderr.contains("--keep-days") && none.stderr.contains("--keep-last"),
        "{none}"
    );
    assert_eq!(fx.list_ids().len(), 3);

    let out = fx.repo_cmd("forget").args(["--keep-last", "2"]).run().ok();
    assert!(out.stdout.contains(&format!("removed {}", ids[0])), "{out}");
    assert!(out.stdout.contains("removed 1 backups, kept 2"), "{out}");
    let mut want = vec![ids[1].clone(), ids[2].clone()];
    want.sort();
    let mut have = fx.list_ids();
    have.sort();
    assert_eq!(have, want);
    // Either rule keeps: a day of age keeps both, whatever the count says.
    let out = fx
        .repo_cmd("forget")
        .args(["--keep-last", "1", "--keep-days", "1"])
        .run()
        .ok();
    assert!(out.stdout.contains("removed 0 backups, kept 2"), "{out}");
}
