//! The guides are part of the product: every `ibs …` command that README.md and `docs/*.md` show
//! (inline code and shell blocks) must name subcommands that exist and flags those subcommands
//! accept. Each distinct command is checked against `ibs SUBCOMMAND… --help` of this build, so a
//! renamed subcommand or flag fails here, not in an operator's terminal.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ibs");

/// `ibs …` command lines in a Markdown text: inline code spans and lines of fenced blocks.
fn commands_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            out.extend(command_of(line.trim()));
            continue;
        }
        for (i, span) in line.split('`').enumerate() {
            if i % 2 == 1 {
                out.extend(command_of(span));
            }
        }
    }
    out
}

/// The `ibs …` part of one shell line, after a `$ ` prompt, environment assignments or
/// `cargo run … -p ibs --`.
fn command_of(line: &str) -> Option<String> {
    let line = line.trim_start_matches("$ ");
    let line = match line.find("-p ibs -- ") {
        Some(i) if line.starts_with("cargo run") => format!("ibs {}", &line[i + 10..]),
        _ => line.to_string(),
    };
    let mut words = line.split_whitespace().peekable();
    while let Some(w) = words.peek() {
        let is_env = w.split_once('=').is_some_and(|(k, _)| {
            !k.is_empty() && k.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        });
        if !is_env {
            break;
        }
        words.next();
    }
    let rest: Vec<&str> = words.collect();
    (rest.first() == Some(&"ibs") && rest.len() > 1).then(|| rest.join(" "))
}

/// (subcommand path, flags) of a command line: the leading lowercase words, then every `--flag`.
fn parse(cmd: &str) -> (Vec<String>, BTreeSet<String>) {
    let words: Vec<&str> = cmd.split_whitespace().skip(1).collect();
    let path: Vec<String> = words
        .iter()
        .take_while(|w| {
            w.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !w.starts_with('-')
        })
        .take(2)
        .map(|w| w.to_string())
        .collect();
    let flags = words
        .iter()
        .map(|w| w.trim_start_matches('['))
        .filter(|w| w.starts_with("--"))
        .map(|w| w.split(['=', ']', '|', ',']).next().unwrap().to_string())
        .filter(|f| f.len() > 2)
        .collect();
    (path, flags)
}

fn help(path: &[String]) -> Result<String, String> {
    let out = Command::new(BIN).args(path).arg("--help").output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn every_ibs_command_in_the_docs_exists_with_its_flags() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = vec![root.join("README.md")];
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(p);
        }
    }
    // subcommand path -> (where it is first shown, flag -> where it is first shown)
    type Wanted = BTreeMap<Vec<String>, (String, BTreeMap<String, String>)>;
    let mut wanted: Wanted = BTreeMap::new();
    let mut seen = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for cmd in commands_in(&text) {
            let (path, flags) = parse(&cmd);
            if path.is_empty() {
                continue;
            }
            seen += 1;
            let at = format!("{}: `{cmd}`", f.display());
            let e = wanted
                .entry(path)
                .or_insert_with(|| (at.clone(), BTreeMap::new()));
            for flag in flags {
                e.1.entry(flag).or_insert_with(|| at.clone());
            }
        }
    }
    assert!(
        seen >= 40,
        "only {seen} ibs commands found in the docs: the scanner is broken"
    );
    let mut problems = Vec::new();
    for (path, (where_, flags)) in &wanted {
        match help(path) {
            Err(e) => problems.push(format!(
                "{where_}: `ibs {}` does not exist: {e}",
                path.join(" ")
            )),
            Ok(text) => {
                for (flag, where_) in flags {
                    if !text.contains(flag.as_str()) {
                        problems.push(format!(
                            "{where_}: `ibs {}` has no flag {flag}",
                            path.join(" ")
                        ));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_scanner_finds_commands_and_a_wrong_flag_would_fail() {
    let cmds = commands_in(
        "Run `ibs repo prune --dry-run` or:\n```sh\n$ IBS_TOKEN=x ibs backup start --wait\ncargo run --release -p ibs -- serve\n```\n",
    );
    assert_eq!(
        cmds,
        [
            "ibs repo prune --dry-run",
            "ibs backup start --wait",
            "ibs serve"
        ]
    );
    let (path, flags) = parse("ibs restore ID [--component NAME] --target DIR");
    assert_eq!(path, ["restore"]);
    assert_eq!(
        flags.into_iter().collect::<Vec<_>>(),
        ["--component", "--target"]
    );
    let text = help(&["repo".into(), "prune".into()]).unwrap();
    assert!(text.contains("--dry-run"));
    assert!(!text.contains("--no-such-flag"));
    assert!(help(&["no-such-command".into()]).is_err());
}
