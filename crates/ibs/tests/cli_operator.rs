//! The operator's view of the CLI without the controller (issue 17, ADR 0027): output that ends
//! quietly on a closed pipe, `-q`, one duration format and correct plurals, JSON errors with a
//! stable shape, help for every flag, the shared exit-code table, and `repo restore` refusing to
//! overwrite differing files.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `ibs ARGS` with stdout a pipe whose reader is already gone (as in `ibs … | head -1` once
/// head has exited), and returns (exit code, stderr). The reader (`true`) ends before ibs starts,
/// so every write to stdout fails with EPIPE.
fn with_closed_stdout(args: &[&str], envs: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(r#"{ sleep 0.3; exec "$0" "$@"; } | true; echo "exit=${PIPESTATUS[0]}" >&2"#)
        .arg(ibs_bin())
        .args(args)
        .env("HOME", "/nonexistent/ibs-test-home")
        .env_remove("IBS_PFX_PASSWORD")
        .env_remove("IBS_LOG")
        .stdin(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("bash");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("exit="))
        .next_back()
        .unwrap_or_else(|| panic!("no exit status: {stderr}"))
        .parse()
        .unwrap();
    (code, stderr)
}

fn repo_with_backup() -> (Fx, std::path::PathBuf, String) {
    let fx = Fx::new();
    fx.init_cert(&shared_cert(0).cer);
    let src = fx.path("src");
    write(&src.join("a.txt"), b"alpha\n");
    write(&src.join("d/b.txt"), b"bravo\n");
    let id = fx.backup(&[("data", &src)]);
    (fx, src, id)
}

#[test]
fn a_closed_stdout_ends_every_printing_command_quietly_with_its_own_exit_code() {
    let (fx, _src, id) = repo_with_backup();
    let repo = fx.repo.to_str().unwrap().to_owned();
    let state = fx.state.to_str().unwrap().to_owned();
    let target = fx.path("piped-restore");
    let pfx = shared_cert(0).pfx.to_str().unwrap().to_owned();
    let cases: Vec<Vec<&str>> = vec![
        vec!["repo", "list", "--repo", &repo],
        vec!["repo", "list", "--repo", &repo, "--json"],
        vec!["repo", "check", "--repo", &repo, "--state", &state],
        vec![
            "repo",
            "forget",
            "--repo",
            &repo,
            "--state",
            &state,
            "--keep-days",
            "30",
            "--dry-run",
        ],
        vec![
            "repo",
            "restore",
            "--repo",
            &repo,
            "--state",
            &state,
            "--backup",
            &id,
            "--target",
            target.to_str().unwrap(),
            "--pfx",
            &pfx,
        ],
        vec!["cert", "show", shared_cert(0).cer.to_str().unwrap()],
        vec!["--help"],
        vec!["repo", "--help"],
        vec!["--version"],
    ];
    for args in cases {
        let (code, stderr) = with_closed_stdout(&args, &[("IBS_PFX_PASSWORD", PASSWORD)]);
        assert_eq!(code, 0, "ibs {args:?} on a closed pipe:\n{stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "ibs {args:?} on a closed pipe:\n{stderr}"
        );
    }
    // The restore really ran (its output went nowhere, its work did not).
    assert_eq!(
        std::fs::read(target.join("data/a.txt")).unwrap(),
        b"alpha\n"
    );
    // A failing command keeps its own code on a closed pipe.
    let (code, stderr) = with_closed_stdout(
        &[
            "repo",
            "list",
            "--repo",
            fx.path("nowhere").to_str().unwrap(),
        ],
        &[],
    );
    assert_ne!(code, 0, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn quiet_cert_new_and_repo_init_print_only_their_ids() {
    let fx = Fx::new();
    let cer = fx.path("q.cer");
    let out = ibs([
        "-q",
        "cert",
        "new",
        "--subject",
        "CN=quiet",
        "--bits",
        "2048",
    ])
    .arg("--cer")
    .arg(&cer)
    .arg("--pfx")
    .arg(fx.path("q.pfx"))
    .pw()
    .run()
    .ok();
    assert_eq!(out.stdout.lines().count(), 1, "{out}");
    assert_eq!(out.last_line(), thumbprint(&cer), "{out}");
    assert_eq!(out.stderr, "", "{out}");
    // `CN=quiet` is the common name `quiet`, not `CN=CN=quiet`.
    let shown = ibs(["cert", "show"])
        .arg(&cer)
        .arg("--json")
        .run()
        .ok()
        .json();
    assert_eq!(shown["subject"], "CN=quiet", "{shown}");

    let out = fx
        .repo_cmd("init")
        .arg("--cert")
        .arg(&cer)
        .arg("-q")
        .run()
        .ok();
    assert_eq!(out.stdout.lines().count(), 1, "{out}");
    assert_eq!(out.stderr, "", "{out}");
    let id = out.last_line();
    assert!(
        fx.list().is_empty() && id.len() >= 16 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "{out}"
    );
}

#[test]
fn summaries_use_one_duration_format_and_correct_plurals() {
    let fx = Fx::new();
    fx.init_cert(&shared_cert(0).cer);
    let src = fx.path("one");
    write(&src.join("only.txt"), b"one file\n");
    let out = fx.backup_cmd(&[("one", &src)]).run().ok();
    assert!(out.stdout.contains("1 file,"), "{out}");
    assert!(out.stdout.contains("1 dir,"), "{out}");
    assert!(out.stdout.contains("0 errors"), "{out}");
    assert!(
        !out.stdout.contains("1 files") && !out.stdout.contains("1 dirs"),
        "{out}"
    );
    let id = out.last_line();
    let list = fx.repo_cmd("list").run().ok();
    // Durations: `4.2s`, `3m 04s` or `2h 03m 04s`, never `0:00:04`.
    let row = list.stdout.lines().find(|l| l.starts_with(&id)).unwrap();
    assert!(
        row.split_whitespace()
            .any(|w| w.ends_with('s') && w[..w.len() - 1].parse::<f64>().is_ok()),
        "{list}"
    );
    assert!(!row.contains("0:00:"), "{list}");
    let t = fx.path("r");
    let out = fx.restore_cmd(&id, &t, &[&shared_cert(0).pfx]).run().ok();
    assert!(
        out.stdout.contains(&format!(
            "restored into {}: 1 file, 1 directory, 0 symlinks",
            t.display()
        )),
        "{out}"
    );
}

#[test]
fn json_errors_are_one_object_on_stderr_with_a_stable_shape() {
    let fx = Fx::new();
    // A runtime failure: not a repository (exit 7).
    let out = ibs(["repo", "list", "--json", "--repo"])
        .arg(&fx.repo)
        .run()
        .code(7);
    assert_eq!(out.stdout, "", "{out}");
    let v: serde_json::Value =
        serde_json::from_str(out.stderr.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["error"]["code"], "not-a-repository", "{v}");
    assert_eq!(v["error"]["exit_code"], 7, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not an ibs repository"),
        "{v}"
    );
    assert!(v["error"].get("hint").is_some(), "{v}");
    // A usage error clap finds (exit 2), in the same shape.
    let out = ibs(["repo", "list", "--json", "--no-such-flag"])
        .run()
        .code(2);
    let v: serde_json::Value =
        serde_json::from_str(out.stderr.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["error"]["code"], "usage", "{v}");
    assert_eq!(v["error"]["exit_code"], 2, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--no-such-flag"),
        "{v}"
    );
    // Without --json, errors stay text.
    let out = ibs(["repo", "list", "--repo"]).arg(&fx.repo).run().code(7);
    assert!(out.stderr.starts_with("error: "), "{out}");
}

/// Every command's `--help` lists each option with a description (the unit test
/// `cli::tests::every_argument_of_every_command_has_help_text` walks the clap tree itself).
#[test]
fn help_describes_every_option_and_server_is_optional_with_one_default() {
    let out = ibs(["backup", "list", "--help"]).run().ok();
    let server: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains("--server"))
        .collect();
    assert_eq!(server.len(), 1, "{out}");
    assert_eq!(
        out.stdout.matches("127.0.0.1:9440").count(),
        1,
        "the default is shown once:\n{out}"
    );
    let usage = out
        .stdout
        .lines()
        .find(|l| l.starts_with("Usage:"))
        .unwrap();
    assert!(
        !usage.contains("--server"),
        "--server looks required: {usage}"
    );
    for (cmd, flag) in [
        (&["repo", "restore"][..], "--target"),
        (&["repo", "check"], "--read-data"),
        (&["location", "set"], "--retention-days"),
        (&["token", "create"], "--role"),
        (&["maintenance", "end"], "--outcome"),
    ] {
        let out = ibs(cmd).arg("--help").run().ok();
        let lines: Vec<&str> = out.stdout.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.trim_start().starts_with(flag))
            .unwrap();
        // The description follows on the flag's line, or (long help) on the next one.
        let same = lines[at]
            .split_once('>')
            .map(|(_, d)| d)
            .unwrap_or("")
            .trim();
        let described = if same.is_empty() {
            lines[at + 1].trim()
        } else {
            same
        };
        assert!(
            described.len() > flag.len() + 5,
            "{cmd:?} {flag} has no description:\n{out}"
        );
    }
}

#[test]
fn the_same_mistake_exits_with_the_same_code_in_repo_commands() {
    let (fx, _src, id) = repo_with_backup();
    // Wrong .pfx password: 5.
    fx.restore_cmd(&id, &fx.path("t1"), &[&shared_cert(0).pfx])
        .env("IBS_PFX_PASSWORD", "not the password")
        .run()
        .code(5);
    // A .pfx of another certificate: 5.
    fx.restore_cmd(&id, &fx.path("t2"), &[&shared_cert(1).pfx])
        .run()
        .code(5);
    // A backup that is not there: 8.
    fx.restore_cmd(
        "20200101T000000Z-0a1b2c3d",
        &fx.path("t3"),
        &[&shared_cert(0).pfx],
    )
    .run()
    .code(8);
    // No .pfx password anywhere: 5, naming a flag that exists.
    let out = fx
        .repo_cmd("restore")
        .args(["--backup", &id])
        .arg("--target")
        .arg(fx.path("t4"))
        .arg("--pfx")
        .arg(&shared_cert(0).pfx)
        .run()
        .code(5)
        .stderr_has("--pfx-password-file FILE");
    assert!(!out.stderr.contains('…'), "{out}");
    for t in ["t1", "t2", "t3", "t4"] {
        assert!(!fx.path(t).exists(), "a refused restore created {t}");
    }
}

#[test]
fn repo_restore_refuses_to_overwrite_differing_files_unless_told() {
    let (fx, _src, id) = repo_with_backup();
    let t = fx.path("t");
    let pfx: &Path = &shared_cert(0).pfx;
    fx.restore_cmd(&id, &t, &[pfx]).run().ok();
    // Restoring again over an untouched restore: nothing differs, so it runs.
    fx.restore_cmd(&id, &t, &[pfx]).run().ok();
    // An edited file: refused, exit 6, naming the file and the flag; nothing written.
    write(&t.join("data/d/b.txt"), b"edited by the operator\n");
    std::fs::remove_file(t.join("data/a.txt")).unwrap();
    let before = snapshot(&t);
    let out = fx
        .restore_cmd(&id, &t, &[pfx])
        .run()
        .code(6)
        .stderr_has(&format!("{}", t.join("data/d/b.txt").display()))
        .stderr_has("--overwrite");
    assert_eq!(
        snapshot(&t),
        before,
        "a refused restore changed the target:\n{out}"
    );
    // With --overwrite it restores and says where and how much.
    let out = fx
        .restore_cmd(&id, &t, &[pfx])
        .arg("--overwrite")
        .run()
        .ok();
    assert!(
        out.stdout
            .contains(&format!("restored into {}: 2 files", t.display())),
        "{out}"
    );
    assert_eq!(std::fs::read(t.join("data/d/b.txt")).unwrap(), b"bravo\n");
    assert_eq!(std::fs::read(t.join("data/a.txt")).unwrap(), b"alpha\n");
}

#[test]
fn no_println_in_the_binary_crate() {
    // Every line goes through outln!/errln!, which end quietly on a closed pipe.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut bad = Vec::new();
    let mut stack = vec![src];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            for (n, line) in std::fs::read_to_string(&p).unwrap().lines().enumerate() {
                let code = line.split("//").next().unwrap();
                for m in ["println!(", "print!(", "eprintln!(", "eprint!("] {
                    if code.contains(m) {
                        bad.push(format!("{}:{}: {}", p.display(), n + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "use outln!/errln! instead:\n{}",
        bad.join("\n")
    );
}

#[test]
fn mistakes_get_an_error_with_a_next_step() {
    let (fx, src, id) = repo_with_backup();
    // A .pfx where the .cer belongs: named as such, exit 5, nothing created.
    let other = Fx::new();
    let out = other
        .repo_cmd("init")
        .arg("--cert")
        .arg(&shared_cert(0).pfx)
        .run()
        .code(5)
        .stderr_has("is a .pfx (private key)")
        .stderr_has("give the .cer");
    assert!(!out.stderr.contains("ASN.1"), "{out}");
    assert!(!other.mas().exists());
    // --repo naming MASBackup itself: use the parent (exit 2), not `init`.
    let out = ibs(["repo", "list", "--repo"]).arg(fx.mas()).run().code(2);
    assert!(
        out.stderr
            .contains(&format!("--repo {}", fx.repo.display())),
        "{out}"
    );
    assert!(!out.stderr.contains("repo init"), "{out}");
    // init on a folder that does not exist creates it, and does not speak of a failed backup.
    let missing = fx.path("no-such-folder");
    let out = ibs(["repo", "init", "--state"])
        .arg(fx.path("state-missing"))
        .arg("--repo")
        .arg(&missing)
        .arg("--cert")
        .arg(&shared_cert(0).cer)
        .run()
        .ok();
    assert!(!out.stderr.contains("Backup failed"), "{out}");
    assert!(missing.join("MASBackup").is_dir(), "{out}");
    // --backup latest and latest:SOURCE.
    write(&src.join("a.txt"), b"alpha, later\n");
    next_second();
    let id2 = fx.backup(&[("data", &src), ("more", &src.join("d"))]);
    assert_ne!(id, id2);
    let t = fx.path("latest");
    fx.restore_cmd("latest", &t, &[&shared_cert(0).pfx])
        .run()
        .ok();
    assert_eq!(
        std::fs::read(t.join("data/a.txt")).unwrap(),
        b"alpha, later\n"
    );
    let t = fx.path("latest-more");
    fx.restore_cmd("latest:more", &t, &[&shared_cert(0).pfx])
        .run()
        .ok();
    assert_eq!(std::fs::read(t.join("b.txt")).unwrap(), b"bravo\n");
    fx.restore_cmd("latest:nope", &fx.path("x"), &[&shared_cert(0).pfx])
        .run()
        .code(8)
        .stderr_has("no backup with source \"nope\"");
}
