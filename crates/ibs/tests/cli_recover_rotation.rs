//! Recovery across a certificate rotation, through the real binary on a local-folder repository.
//!
//! The source is the realistic tree (`ibs_testing::realistic_tree`: symlinks of every sort, hard
//! links, a sparse file, a FIFO, a socket, odd names, xattrs and ACLs) plus a few files that change.
//! The repository is initialised with certificate 1 and backup b1 is written; `ibs repo set-cert`
//! switches new backups to certificate 2 (whose .pfx has ANOTHER password), the data changes, and
//! b2 is written. Then:
//! - b2 with only .pfx 1 fails, naming certificate 2's thumbprint;
//! - b1 with both .pfx files (`--pfx-password-file` repeated, matched by position) restores
//!   identical to the source (`ibs_testing::assert_restored`: contents, kinds, link targets,
//!   modes, owners, mtimes, hard-link groups, xattrs), and so does b2;
//! - after `ibs repo rewrap --pfx pfx1 --cert cert2`, b1 restores with .pfx 2 alone, byte-identical;
//! - after each recover the adopted state's next backup deduplicates against the chain.

mod common;
use common::*;
use std::path::{Path, PathBuf};

const PASSWORD2: &str = "another pfx password, for certificate 2";

struct World {
    fx: Fx,
    /// (.pfx, its password file) for certificates 1 and 2.
    keys: [(PathBuf, PathBuf); 2],
    plan: PathBuf,
    target: PathBuf,
}

impl World {
    /// `ibs recover --location REPO --backup ID --plan PLAN --state STATE` with `--pfx` and
    /// `--pfx-password-file` for each of `which` (indexes into `keys`), in that order.
    fn recover(&self, id: &str, which: &[usize], state: &Path) -> Out {
        let _ = std::fs::remove_dir_all(&self.target);
        let mut c = ibs(["recover", "--json", "--location"])
            .arg(&self.fx.repo)
            .args(["--backup", id, "--plan"])
            .arg(&self.plan)
            .arg("--state")
            .arg(state);
        for &i in which {
            c = c.arg("--pfx").arg(&self.keys[i].0);
        }
        for &i in which {
            c = c.arg("--pfx-password-file").arg(&self.keys[i].1);
        }
        c.run()
    }

    /// A backup of the recovered target with the adopted state: its catalog.
    fn backup_after(&self, state: &Path) -> serde_json::Value {
        let out = ibs(["repo", "backup", "--json", "--state"])
            .arg(state)
            .arg("--repo")
            .arg(&self.fx.repo)
            .arg("--source")
            .arg(format!("files={}", self.target.display()))
            .run()
            .ok();
        let first = out.stdout.lines().next().unwrap().to_string();
        serde_json::from_str::<serde_json::Value>(&first).unwrap()["catalog"].clone()
    }

    /// Recovers `id` with `which`, asserts every component restored byte-identical to `expected`,
    /// then that the next backup from the adopted state stores almost nothing new.
    fn recover_ok(&self, id: &str, which: &[usize], expected: &ibs_testing::Snapshot, what: &str) {
        let state = self.fx.path(&format!("state-{}", rand::random::<u32>()));
        let out = self.recover(id, which, &state).ok();
        let j = out.json();
        assert_eq!(j["report"]["backup_id"], id, "{what}: {j:#}");
        let comps = j["report"]["components"].as_array().unwrap();
        assert!(
            !comps.is_empty()
                && comps
                    .iter()
                    .all(|c| c["outcome"] == "restored" && c["verified"] == true),
            "{what}: {j:#}"
        );
        ibs_testing::assert_restored(expected, &self.target, what);
        next_second();
        let next = self.backup_after(&state);
        let new = next["bytes_new"].as_u64().unwrap();
        assert!(
            new < 64 * 1024,
            "{what}: the next backup from the adopted state stored {new} new bytes: not deduplicated ({next:#})"
        );
    }
}

#[test]
fn recovery_works_across_a_certificate_rotation_and_after_rewrap() {
    let fx = Fx::new();
    let cert1 = new_cert(&fx.root, "cert1");
    let cert2 = new_cert_with_password(&fx.root, "cert2", PASSWORD2);
    assert_ne!(cert1.thumbprint, cert2.thumbprint);
    let pw1 = fx.path("pw1");
    let pw2 = fx.path("pw2");
    std::fs::write(&pw1, format!("{PASSWORD}\n")).unwrap();
    std::fs::write(&pw2, format!("{PASSWORD2}\n")).unwrap();

    // b1 under certificate 1.
    fx.init_cert(&cert1.cer);
    let data = fx.path("data");
    ibs_testing::realistic_tree(&data);
    write(&data.join("big.bin"), &pseudo_random(11, 3 << 20));
    write(&data.join("etc/app.conf"), &b"mode = one\n".repeat(300));
    let b1 = fx.backup(&[("files", &data)]);
    let at_b1 = ibs_testing::snapshot(&data);
    assert_eq!(fx.catalog(&b1)["certificate_thumbprint"], cert1.thumbprint);

    // Switch to certificate 2, change the data, b2.
    fx.repo_cmd("set-cert")
        .arg("--cert")
        .arg(&cert2.cer)
        .run()
        .ok();
    next_second();
    write(&data.join("etc/app.conf"), &b"mode = two\n".repeat(300));
    write(&data.join("new/added.bin"), &pseudo_random(12, 200_000));
    let b2 = fx.backup(&[("files", &data)]);
    let at_b2 = ibs_testing::snapshot(&data);
    assert_eq!(fx.catalog(&b2)["certificate_thumbprint"], cert2.thumbprint);

    let target = fx.path("restore/files");
    let plan = fx.path("plan.toml");
    std::fs::write(
        &plan,
        format!(
            "[[component]]\nname = \"files\"\ntarget = \"{}\"\n",
            target.display()
        ),
    )
    .unwrap();
    let w = World {
        keys: [(cert1.pfx.clone(), pw1), (cert2.pfx.clone(), pw2)],
        fx,
        plan,
        target,
    };

    // b2 with only .pfx 1: refused, naming the certificate it needs (and the one given).
    let r = w.recover(&b2, &[0], &w.fx.path("state-refused")).code(5);
    assert!(
        r.stderr.contains(&cert2.thumbprint) && r.stderr.contains(&cert1.thumbprint),
        "{r}"
    );
    assert!(
        !w.target.exists() || std::fs::read_dir(&w.target).unwrap().next().is_none(),
        "nothing is restored with the wrong .pfx"
    );

    // One password file for two .pfx files of different passwords: the wrong-password error names
    // the file; a count that is neither 1 nor the .pfx count is a usage error.
    let r = ibs(["recover", "--location"])
        .arg(&w.fx.repo)
        .args(["--backup", &b1, "--plan"])
        .arg(&w.plan)
        .arg("--state")
        .arg(w.fx.path("state-miscount"))
        .arg("--pfx")
        .arg(&w.keys[0].0)
        .arg("--pfx")
        .arg(&w.keys[1].0)
        .arg("--pfx")
        .arg(&w.keys[1].0)
        .arg("--pfx-password-file")
        .arg(&w.keys[0].1)
        .arg("--pfx-password-file")
        .arg(&w.keys[1].1)
        .run();
    assert_ne!(r.code, 0, "{r}");
    assert!(r.stderr.contains("--pfx-password-file"), "{r}");

    // With both .pfx files (each with its own password), b1 and b2 recover byte-identical.
    w.recover_ok(&b1, &[0, 1], &at_b1, "b1 with both .pfx");
    w.recover_ok(&b2, &[0, 1], &at_b2, "b2 with both .pfx");
    // The order of the .pfx files does not matter.
    w.recover_ok(&b1, &[1, 0], &at_b1, "b1 with both .pfx, reversed");

    // Rewrap certificate 1's envelopes for certificate 2: then .pfx 2 alone recovers b1.
    ibs(["repo", "rewrap", "--state"])
        .arg(w.fx.path("state-rewrap"))
        .arg("--repo")
        .arg(&w.fx.repo)
        .arg("--pfx")
        .arg(&w.keys[0].0)
        .arg("--pfx-password-file")
        .arg(&w.keys[0].1)
        .arg("--cert")
        .arg(&cert2.cer)
        .run()
        .ok();
    w.recover_ok(&b1, &[1], &at_b1, "b1 with .pfx 2 after rewrap");
    w.recover_ok(&b2, &[1], &at_b2, "b2 with .pfx 2 after rewrap");
}

/// Issue 13 finding 14 through the binary: `ibs repo set-cert`, `ibs repo backup` of unchanged
/// and changed data, then `ibs repo restore --pfx new.pfx` alone restores the new backup
/// byte-identical; the old backup with the new .pfx alone is refused naming the OLD certificate
/// (thumbprint and subject), not the .pfx that was given.
#[test]
fn after_set_cert_the_new_backup_restores_with_the_new_pfx_alone() {
    let fx = Fx::new();
    let cert1 = shared_cert(0);
    let cert2 = shared_cert(1);
    fx.init_cert(&cert1.cer);
    let data = fx.path("data");
    write(&data.join("big.bin"), &pseudo_random(21, 3 << 20));
    write(&data.join("etc/app.conf"), &b"mode = one\n".repeat(300));
    let b1 = fx.backup(&[("files", &data)]);
    let at_b1 = snapshot(&data);
    fx.repo_cmd("set-cert")
        .arg("--cert")
        .arg(&cert2.cer)
        .run()
        .ok();
    next_second();
    write(&data.join("etc/app.conf"), &b"mode = two\n".repeat(300));
    let b2 = fx.backup(&[("files", &data)]);
    let at_b2 = snapshot(&data);

    let t2 = fx.path("restore-b2");
    fx.restore_cmd(&b2, &t2, &[&cert2.pfx]).run().ok();
    assert_tree(&at_b2, &t2.join("files"), "b2 with the new .pfx alone");

    let r = fx
        .restore_cmd(&b1, &fx.path("restore-b1-new"), &[&cert2.pfx])
        .run()
        .code(5);
    assert!(r.stderr.contains(&cert1.thumbprint), "{r}");
    assert!(
        r.stderr.contains("ibs test shared0"),
        "names the subject: {r}"
    );
    let t1 = fx.path("restore-b1");
    fx.restore_cmd(&b1, &t1, &[&cert2.pfx, &cert1.pfx])
        .run()
        .ok();
    assert_tree(&at_b1, &t1.join("files"), "b1 with both .pfx");
}

/// `ibs recover` of a realistic tree (relative, absolute, dangling and folder symlinks, hard links,
/// a sparse file, a FIFO, a socket, 255-byte and non-UTF-8 names, xattrs and ACLs; as root also
/// foreign owners, a file capability, an SELinux label, `trusted.*` and device nodes): the
/// catalog's counts are the tree's, every component verifies, and the restored tree equals the
/// source entry by entry.
#[test]
fn recovery_of_a_realistic_tree_verifies_and_restores_every_entry() {
    let fx = Fx::new();
    let cert = new_cert(&fx.root, "realistic");
    fx.init_cert(&cert.cer);
    let data = fx.path("data");
    ibs_testing::realistic_tree(&data);
    let expected = ibs_testing::snapshot(&data);
    let out = fx.backup_cmd(&[("files", &data)]).run().ok();
    let id = out.last_line();

    let target = fx.path("restore/files");
    let plan = fx.path("plan.toml");
    std::fs::write(
        &plan,
        format!(
            "[[component]]\nname = \"files\"\ntarget = \"{}\"\n",
            target.display()
        ),
    )
    .unwrap();
    let r = ibs(["recover", "--location"])
        .arg(&fx.repo)
        .args(["--backup", &id, "--plan"])
        .arg(&plan)
        .arg("--state")
        .arg(fx.path("state-recovered"))
        .arg("--pfx")
        .arg(&cert.pfx)
        .pw()
        .run();
    assert!(
        r.code == 0 && r.stdout.contains("1 of 1 components restored"),
        "{r}"
    );
    ibs_testing::assert_restored(&expected, &target, "recovered realistic tree");

    // The catalog counts what the tree holds; the socket is counted as skipped and named.
    let want = ibs_testing::counts(&expected);
    let src = &fx.catalog(&id)["sources"][0];
    assert_eq!(
        (&src["files"], &src["dirs"], &src["status"]),
        (
            &serde_json::json!(want.files),
            &serde_json::json!(want.dirs),
            &serde_json::json!("Succeeded")
        ),
        "catalog counts: {src:#}"
    );
    assert_eq!(
        src["skipped"], want.skipped,
        "the socket is counted as skipped: {src:#}"
    );
    assert!(
        out.stdout.contains("1 skipped") && out.stderr.contains("run/socket"),
        "the skipped socket reaches the CLI output: {out}"
    );
}
