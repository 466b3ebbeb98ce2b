//! Installing ibs (issue 17 "what to add" 2 and 3, ADR 0029): shell completions and man pages
//! generated from the CLI definition, and the systemd unit `packaging/ibs.service`.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn unit_text() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/ibs.service");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn bash_completion_is_valid_bash_and_completes_subcommands_and_flags() {
    let out = ibs(["completions", "bash"]).run().ok();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("ibs.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let st = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(st.success(), "bash -n rejects the completion script");
    // Complete `ibs repo l` and `ibs repo ls --p` as bash would.
    let probe = format!(
        r#"source {s}
COMP_WORDS=(ibs repo l); COMP_CWORD=2; COMP_LINE="ibs repo l"; COMP_POINT=${{#COMP_LINE}}
_ibs ibs l repo; echo "A:${{COMPREPLY[*]}}"
COMP_WORDS=(ibs repo ls --p); COMP_CWORD=3; COMP_LINE="ibs repo ls --p"; COMP_POINT=${{#COMP_LINE}}
_ibs ibs --p ls; echo "B:${{COMPREPLY[*]}}""#,
        s = script.display()
    );
    let res = Command::new("bash").arg("-c").arg(&probe).output().unwrap();
    let text = String::from_utf8_lossy(&res.stdout);
    let line = |p: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(p))
            .unwrap_or_else(|| {
                panic!(
                    "no {p} line: {text} {}",
                    String::from_utf8_lossy(&res.stderr)
                )
            })
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let a = line("A:");
    assert!(
        a.contains(&"ls".to_string()) && a.contains(&"list".to_string()),
        "{a:?}"
    );
    let b = line("B:");
    assert!(
        b.contains(&"--pfx".to_string()) && b.contains(&"--pfx-password-file".to_string()),
        "{b:?}"
    );
}

#[test]
fn zsh_and_fish_completions_name_every_top_level_command() {
    for shell in ["zsh", "fish"] {
        let out = ibs(["completions", shell]).run().ok();
        for cmd in [
            "repo",
            "serve",
            "backup",
            "restore",
            "completions",
            "manpage",
        ] {
            assert!(out.stdout.contains(cmd), "{shell} script lacks {cmd}");
        }
    }
    ibs(["completions", "powershell"]).run().code(2);
}

#[test]
fn man_pages_are_generated_for_every_command() {
    let out = ibs(["manpage"]).run().ok();
    assert!(
        out.stdout.contains(".TH ibs 1"),
        "{}",
        &out.stdout[..200.min(out.stdout.len())]
    );
    assert!(out.stdout.contains("SYNOPSIS"));
    // groff renders it without warnings.
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("ibs.1");
    std::fs::write(&page, &out.stdout).unwrap();
    let r = Command::new("groff")
        .args(["-K", "utf8", "-man", "-Tutf8", "-ww", "-z"])
        .arg(&page)
        .output()
        .expect("groff must be installed (apt-get install groff-base)");
    assert!(
        r.status.success() && r.stderr.is_empty(),
        "groff: {}",
        String::from_utf8_lossy(&r.stderr)
    );

    let pages = dir.path().join("man1");
    let out = ibs(["manpage", "--dir"]).arg(&pages).run().ok();
    assert!(out.stdout.contains("man pages into"), "{out}");
    for p in [
        "ibs.1",
        "ibs-repo.1",
        "ibs-repo-ls.1",
        "ibs-repo-dump.1",
        "ibs-serve.1",
        "ibs-completions.1",
    ] {
        let text = std::fs::read_to_string(pages.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert!(text.contains(".TH"), "{p}");
    }
    let ls = std::fs::read_to_string(pages.join("ibs-repo-ls.1")).unwrap();
    assert!(ls.contains("recursive") && ls.contains("pfx"), "{ls}");
}

/// The unit's `[Service]` keys (a key given twice keeps its last value, as systemd reads it).
fn service_keys(text: &str) -> BTreeMap<String, String> {
    let mut section = String::new();
    let mut out = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not KEY=VALUE: {line:?}"));
        if section == "Service" {
            out.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    out
}

#[test]
fn systemd_unit_runs_serve_hardened_with_only_the_read_capability() {
    let keys = service_keys(&unit_text());
    let want = [
        ("User", "ibs"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("StateDirectory", "ibs"),
        ("ReadWritePaths", "/var/lib/ibs"),
        ("CapabilityBoundingSet", "CAP_DAC_READ_SEARCH"),
        ("AmbientCapabilities", "CAP_DAC_READ_SEARCH"),
    ];
    for (k, v) in want {
        assert_eq!(keys.get(k).map(String::as_str), Some(v), "{k}");
    }
    let exec = &keys["ExecStart"];
    assert!(
        exec.contains(" serve ")
            && exec.contains("--config /etc/ibs/ibs.toml")
            && exec.contains("--data /var/lib/ibs"),
        "{exec}"
    );
    // The flags the unit passes exist in this build.
    let args: Vec<&str> = exec.split_whitespace().skip(1).collect();
    let mut help = args.clone();
    help.truncate(1);
    let out = ibs(help).arg("--help").run().ok();
    for a in args.iter().filter(|a| a.starts_with("--")) {
        assert!(out.stdout.contains(a), "ibs serve has no {a}");
    }
}

/// `systemd-analyze verify` accepts the unit (with ExecStart pointing at this build, since the
/// installed path does not exist here) and prints no warning at all (an unknown key is only a
/// warning to systemd, and a failure here).
#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    // scripts/ensure-deps.sh installs it (Debian's `systemd`); missing, this test fails.
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .expect("systemd-analyze (Debian package systemd) is installed by scripts/ensure-deps.sh");
    assert!(found.status.success());
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("ibs.service");
    std::fs::write(&unit, unit_text().replace("/usr/bin/ibs", ibs_bin())).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify failed: {err}");
    assert!(err.trim().is_empty(), "systemd-analyze verify warns: {err}");
}
