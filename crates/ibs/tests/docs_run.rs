//! The docs' command blocks are run, not only read (issue 17, item 12): every shell block of
//! README.md and every shell block under the `## Quick reference` heading of the two operator
//! guides is executed, in order, by `bash` in a fresh sandbox, with this build's `ibs` first on
//! `PATH`. Each command must exit 0, or the code its comment documents (`# exit 6: …`). A failure
//! names the file, the block, the line and the command, with the command's output.
//!
//! What a block may say about itself, on the line before its fence (visible in the Markdown):
//! - `<!-- docs-test: skip: REASON -->`: not run (systemd, an operator's SMB share, a release
//!   build); every skipped block is counted and printed with its reason, never skipped silently;
//! - `<!-- docs-test: serve -->`: run against a real `ibs serve` on embedded defaults (data in
//!   `~/.local/share/ibs` of the sandbox's HOME), listening on a free port given to the block as
//!   `IBS_SERVER`, after its first backup has ended.
//!
//! The sandbox: HOME and the working folder are scratch folders, no `IBS_*` variable is inherited,
//! and the example paths `/srv`, `/etc` and `/restore` of the blocks are folders of the sandbox
//! (`/etc` a small tree made here: `hosts`, `ssh/sshd_config`, `app.conf`); `127.0.0.1:9440`
//! becomes the daemon's port. Nothing else of a block is changed. Blocks of one file share one
//! shell, so a variable set in one block (`ID=$(…)`) is seen by the next.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ibs");
/// The example paths that live inside the sandbox.
const MAPPED: [&str; 3] = ["/srv", "/etc", "/restore"];
/// The longest one file's blocks may take together.
const FILE_TIMEOUT: Duration = Duration::from_secs(420);

#[derive(Debug, Clone, PartialEq)]
enum Mode {
    Run,
    Serve,
    Skip(String),
}

#[derive(Debug)]
struct Cmd {
    /// 1-based line in the Markdown file.
    line: usize,
    text: String,
    expect: i32,
}

#[derive(Debug)]
struct Block {
    /// 1-based, counting the blocks in scope of this file.
    number: usize,
    /// 1-based line of the opening fence.
    line: usize,
    heading: String,
    mode: Mode,
    commands: Vec<Cmd>,
}

fn is_shell_fence(info: &str) -> bool {
    matches!(info.trim(), "sh" | "bash" | "shell" | "console")
}

/// The blocks in scope of a Markdown text: every shell block when `whole` is set, else those
/// under `## Quick reference`. A marker that is malformed, or that stands before no block in
/// scope, is an error (so a typo cannot turn a block off).
fn blocks(text: &str, whole: bool) -> Result<Vec<Block>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut heading = String::new();
    let mut marker: Option<(usize, Mode)> = None;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let t = line.trim();
        if let Some(h) = line.strip_prefix("## ") {
            heading = h.trim().to_string();
        }
        if let Some(m) = t.strip_prefix("<!-- docs-test:") {
            let m = m
                .strip_suffix("-->")
                .ok_or_else(|| format!("line {}: unterminated docs-test marker", i + 1))?
                .trim();
            let mode = if m == "serve" {
                Mode::Serve
            } else if let Some(reason) = m.strip_prefix("skip:") {
                if reason.trim().is_empty() {
                    return Err(format!("line {}: a skip needs a reason", i + 1));
                }
                Mode::Skip(reason.trim().to_string())
            } else {
                return Err(format!("line {}: unknown docs-test marker {m:?}", i + 1));
            };
            marker = Some((i + 1, mode));
            i += 1;
            continue;
        }
        if let Some(info) = t.strip_prefix("```") {
            let start = i;
            let mut body = Vec::new();
            i += 1;
            while i < lines.len() && !lines[i].trim().starts_with("```") {
                body.push((i + 1, lines[i]));
                i += 1;
            }
            let in_scope = is_shell_fence(info) && (whole || heading == "Quick reference");
            match (in_scope, marker.take()) {
                (true, m) => out.push(Block {
                    number: out.len() + 1,
                    line: start + 1,
                    heading: heading.clone(),
                    mode: m.map(|(_, m)| m).unwrap_or(Mode::Run),
                    commands: commands(&body),
                }),
                (false, Some((at, _))) => {
                    return Err(format!(
                        "line {at}: docs-test marker before a block that is not run"
                    ))
                }
                (false, None) => {}
            }
            i += 1;
            continue;
        }
        if !t.is_empty() {
            if let Some((at, _)) = marker {
                return Err(format!(
                    "line {at}: docs-test marker not followed by a block"
                ));
            }
        }
        i += 1;
    }
    Ok(out)
}

/// Where an unquoted `#` comment starts in a shell line, if it has one.
fn comment_start(line: &str) -> Option<usize> {
    let (mut single, mut double, mut prev_space) = (false, false, true);
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev_space => return Some(i),
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    None
}

/// The commands of a block: one per line, lines ending in `\` joined to the next; blank and
/// comment lines are none. A comment starting `exit N` is the exit code the command must end with.
fn commands(body: &[(usize, &str)]) -> Vec<Cmd> {
    let mut out: Vec<Cmd> = Vec::new();
    let mut open = false;
    for (n, line) in body {
        let code = &line[..comment_start(line).unwrap_or(line.len())];
        let expect = comment_start(line).and_then(|c| {
            let words: Vec<&str> = line[c + 1..].split_whitespace().take(2).collect();
            match words.as_slice() {
                ["exit", code] => code.trim_end_matches([':', ',', ';']).parse().ok(),
                _ => None,
            }
        });
        if open {
            let last = out.last_mut().unwrap();
            last.text.push('\n');
            last.text.push_str(line);
            if let Some(e) = expect {
                last.expect = e;
            }
        } else if !code.trim().is_empty() {
            out.push(Cmd {
                line: *n,
                text: line.to_string(),
                expect: expect.unwrap_or(0),
            });
        }
        open = !code.trim().is_empty() && code.trim_end().ends_with('\\')
            || (open && code.trim_end().ends_with('\\'));
    }
    out
}

/// `text` with the example paths moved into `sandbox` and the default API port replaced.
fn map_paths(text: &str, sandbox: &Path, port: Option<u16>) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    'scan: while i < text.len() {
        let starts_word = i == 0 || b" \t='\"(\n".contains(&b[i - 1]);
        if starts_word {
            for p in MAPPED {
                if text[i..].starts_with(p) {
                    let after = b.get(i + p.len());
                    if after.is_none_or(|c| b"/ \t'\")\n".contains(c)) {
                        out.push_str(&sandbox.display().to_string());
                        out.push_str(p);
                        i += p.len();
                        continue 'scan;
                    }
                }
            }
        }
        let c = text[i..].chars().next().unwrap();
        out.push(c);
        i += c.len_utf8();
    }
    match port {
        Some(p) => out.replace("127.0.0.1:9440", &format!("127.0.0.1:{p}")),
        None => out,
    }
}

/// The sandbox of one file: scratch HOME, working folder and the mapped example folders.
struct Sandbox {
    _dir: tempfile::TempDir,
    root: PathBuf,
    home: PathBuf,
    work: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let (home, work) = (root.join("home"), root.join("work"));
        for d in [&home, &work, &root.join("srv"), &root.join("etc/ssh")] {
            std::fs::create_dir_all(d).unwrap();
        }
        let etc = root.join("etc");
        std::fs::write(etc.join("hosts"), "127.0.0.1 localhost\n::1 localhost\n").unwrap();
        std::fs::write(
            etc.join("ssh/sshd_config"),
            "PermitRootLogin no\nPasswordAuthentication no\n",
        )
        .unwrap();
        std::fs::write(etc.join("app.conf"), "[app]\nlisten = 127.0.0.1:8080\n").unwrap();
        Sandbox {
            _dir: dir,
            root,
            home,
            work,
        }
    }

    /// A command with the sandbox's environment: no inherited `IBS_*`, `AWS_*` or `XDG_*`.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        for (k, _) in std::env::vars() {
            if k.starts_with("IBS_") || k.starts_with("AWS_") || k.starts_with("XDG_") {
                c.env_remove(k);
            }
        }
        let bin_dir = Path::new(BIN).parent().unwrap();
        let path = std::env::var("PATH").unwrap_or_default();
        c.env("HOME", &self.home)
            .env("PATH", format!("{}:{path}", bin_dir.display()))
            .current_dir(&self.work)
            .stdin(Stdio::null());
        c
    }
}

/// `ibs serve` on embedded defaults in the sandbox, stopped when dropped.
struct Daemon {
    child: Child,
    port: u16,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Starts it and waits until its first backup has ended, as an operator following the guide
    /// would before the next command.
    fn start(sb: &Sandbox) -> Daemon {
        let port = ibs_testing::free_port();
        let log = std::fs::File::create(sb.root.join("serve.log")).unwrap();
        let child = sb
            .command(BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("IBS_LOG", "warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let d = Daemon { child, port };
        let token_file = sb.home.join(".local/share/ibs/first-start-admin-token");
        let end = Instant::now() + Duration::from_secs(180);
        let log = || std::fs::read_to_string(sb.root.join("serve.log")).unwrap_or_default();
        while !token_file.exists() {
            assert!(Instant::now() < end, "ibs serve did not start:\n{}", log());
            std::thread::sleep(Duration::from_millis(200));
        }
        let token = std::fs::read_to_string(&token_file).unwrap();
        loop {
            let out = sb
                .command(BIN)
                .args(["backup", "list", "--json"])
                .env("IBS_SERVER", format!("http://127.0.0.1:{port}"))
                .env("IBS_TOKEN", token.trim())
                .output()
                .unwrap();
            let list: serde_json::Value =
                serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
            let ended = list
                .as_array()
                .is_some_and(|a| !a.is_empty() && a.iter().all(|j| j["status"] != "Running"));
            if ended {
                return d;
            }
            assert!(
                Instant::now() < end,
                "the first backup did not end: {list}\n{}",
                log()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// What running one file's blocks found.
#[derive(Debug)]
struct Report {
    run: Vec<(usize, usize)>,
    skipped: Vec<(usize, String)>,
}

/// Runs the blocks in scope of `text` (named `file` in messages); `Err` names the first command
/// that ended with another exit code than the block documents, with its output.
fn run_blocks(file: &str, text: &str, whole: bool) -> Result<Report, String> {
    let blocks = blocks(text, whole).map_err(|e| format!("{file}: {e}"))?;
    let sb = Sandbox::new();
    let daemon = blocks
        .iter()
        .any(|b| b.mode == Mode::Serve)
        .then(|| Daemon::start(&sb));
    let port = daemon.as_ref().map(|d| d.port);
    let mut script = String::from("set -o pipefail\nexec 2>&1\n");
    let mut index: Vec<(&Block, &Cmd)> = Vec::new();
    let mut report = Report {
        run: Vec::new(),
        skipped: Vec::new(),
    };
    for b in &blocks {
        match &b.mode {
            Mode::Skip(reason) => {
                report.skipped.push((b.number, reason.clone()));
                continue;
            }
            Mode::Serve => script.push_str(&format!(
                "export IBS_SERVER=http://127.0.0.1:{}\n",
                port.unwrap()
            )),
            Mode::Run => script.push_str("unset IBS_SERVER\n"),
        }
        report.run.push((b.number, b.commands.len()));
        for c in &b.commands {
            let k = index.len();
            index.push((b, c));
            script.push_str(&format!(
                "echo '__DOCS_CMD__ {k}'\n__rc=0\n{{\n{}\n}} || __rc=$?\n\
                 if [ \"$__rc\" != {} ]; then echo \"__DOCS_FAILED__ {k} $__rc\"; exit 97; fi\n",
                map_paths(&c.text, &sb.root, port),
                c.expect
            ));
        }
    }
    script.push_str("echo __DOCS_DONE__\n");
    let log_path = sb.root.join("docs-run.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = sb
        .command("bash")
        .arg("-c")
        .arg(&script)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let end = Instant::now() + FILE_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    // The output of each command, by index.
    let mut per: BTreeMap<usize, String> = BTreeMap::new();
    let mut current = None;
    let mut failed = None;
    for line in output.lines() {
        if let Some(k) = line.strip_prefix("__DOCS_CMD__ ") {
            current = k.parse().ok();
            continue;
        }
        if let Some(rest) = line.strip_prefix("__DOCS_FAILED__ ") {
            let mut w = rest.split_whitespace();
            let k: usize = w.next().unwrap().parse().unwrap();
            failed = Some((k, w.next().unwrap_or("?").to_string()));
            continue;
        }
        if let Some(k) = current {
            let e = per.entry(k).or_default();
            e.push_str(line);
            e.push('\n');
        }
    }
    let describe = |k: usize| {
        let (b, c) = index[k];
        format!(
            "{file}:{} (block {} at line {}, under \"{}\"): `{}`",
            c.line,
            b.number,
            b.line,
            b.heading,
            c.text.replace('\n', " ")
        )
    };
    let tail = |k: usize| {
        let o = per.get(&k).map(String::as_str).unwrap_or("");
        let lines: Vec<&str> = o.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    if let Some((k, rc)) = failed {
        return Err(format!(
            "{} exited {rc}, the docs say {}\n--- its output:\n{}",
            describe(k),
            index[k].1.expect,
            tail(k)
        ));
    }
    match status {
        None => {
            let k = current.unwrap_or(0);
            Err(format!(
                "{file}: the blocks did not end within {FILE_TIMEOUT:?}; running {}\n--- its output:\n{}",
                describe(k),
                tail(k)
            ))
        }
        Some(_) if !output.contains("__DOCS_DONE__") => Err(format!(
            "{file}: the shell ended early (a block ran `exit`?) after {}\n{output}",
            current.map(describe).unwrap_or_default()
        )),
        Some(_) => Ok(report),
    }
}

fn run_doc(rel: &str, whole: bool, min_commands: usize) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join(rel)).unwrap();
    let report = run_blocks(rel, &text, whole).unwrap_or_else(|e| panic!("{e}"));
    let commands: usize = report.run.iter().map(|(_, n)| n).sum();
    // Written to the process's stderr itself, not through the test harness's capture, so the
    // counts and every skipped block show in CI's log also when the test passes.
    let mut line = format!(
        "docs test: {rel}: {} block(s) run ({commands} commands), {} not run\n",
        report.run.len(),
        report.skipped.len()
    );
    for (n, reason) in &report.skipped {
        line.push_str(&format!("docs test: {rel}: block {n} not run: {reason}\n"));
    }
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    assert!(
        commands >= min_commands,
        "{rel}: only {commands} commands run; the blocks in scope are missing or not found"
    );
}

#[test]
fn readme_blocks_run() {
    run_doc("README.md", true, 15);
}

#[test]
fn operator_guide_quick_reference_runs() {
    run_doc("docs/operator-guide.md", false, 15);
}

#[test]
fn controller_guide_quick_reference_runs() {
    run_doc("docs/operator-guide-controller.md", false, 15);
}

#[test]
fn the_runner_reports_the_failing_command_and_honours_markers() {
    let md = "# t\n\n## Quick reference\n\n```sh\ntrue\nfalse   # exit 1: documented\n\
              ls /srv/x # exit 2\n```\n\n<!-- docs-test: skip: needs a tape drive -->\n```sh\n\
              exit 1\n```\n\n```sh\nX=1\necho \"$X\" \\\n  two\nfalse\n```\n";
    let b = blocks(md, false).unwrap();
    assert_eq!(b.len(), 3);
    assert_eq!(b[0].commands.len(), 3);
    assert_eq!(b[0].commands[1].expect, 1);
    assert_eq!(b[1].mode, Mode::Skip("needs a tape drive".into()));
    assert_eq!(b[2].commands.len(), 3, "{:?}", b[2].commands);
    let e = run_blocks("t.md", md, false).unwrap_err();
    assert!(
        e.contains("t.md:20 (block 3 at line 16") && e.contains("`false` exited 1, the docs say 0"),
        "{e}"
    );
    // Outside the quick reference nothing runs; a marker there is an error, as is a typo.
    assert!(blocks("```sh\nfalse\n```\n", false).unwrap().is_empty());
    assert!(blocks("<!-- docs-test: skip: x -->\n```sh\nfalse\n```\n", false).is_err());
    assert!(blocks(
        "## Quick reference\n<!-- docs-test: skipp -->\n```sh\n```\n",
        false
    )
    .is_err());
    assert!(blocks(
        "## Quick reference\n<!-- docs-test: skip: -->\n```sh\n```\n",
        false
    )
    .is_err());
}

#[test]
fn example_paths_map_into_the_sandbox_only_as_whole_paths() {
    let sb = Path::new("/tmp/sb");
    assert_eq!(
        map_paths(
            "ibs repo backup --repo /srv/backup --source etc=/etc --target '/restore'",
            sb,
            None
        ),
        "ibs repo backup --repo /tmp/sb/srv/backup --source etc=/tmp/sb/etc --target '/tmp/sb/restore'"
    );
    assert_eq!(
        map_paths("/etcetera /usr/srv x/etc", sb, None),
        "/etcetera /usr/srv x/etc"
    );
    assert_eq!(
        map_paths("http://127.0.0.1:9440/api", sb, Some(5)),
        "http://127.0.0.1:5/api"
    );
}
