//! The Debian package (issue 17 "what to add" 3, ADR 0033), installed as an operator installs it.
//! `packaging/build-deb.sh dev` packs the debug binary this test run already built (no release
//! build: CI time), then `apt-get install ./ibs_*.deb` installs it for real; the test checks what
//! `dpkg -L ibs` lists, the `ibs` system user and the modes of /etc/ibs and /var/lib/ibs, that
//! `systemd-analyze verify` accepts the installed unit, then starts the service as the unit would
//! and runs `ibs backup list` against it with a token from `ibs token create --data /var/lib/ibs`.
//! The package is purged at the end, so a rerun starts clean.
//!
//! **systemd itself is not exercised here**: this machine (and CI's) runs without systemd as
//! PID 1, so `systemctl start ibs` cannot work. The test reads the installed unit instead and runs
//! its `ExecStart` command line verbatim with its `User`, `Group`, `UMask`, `Environment` and the
//! working directory `/`, via `setpriv` — what systemd would do, minus the sandboxing
//! (`ProtectSystem`, `PrivateTmp`, capabilities …), which only a real systemd applies. The one
//! addition is `IBS_LISTEN` (a free loopback port instead of the default 9440), as an operator's
//! `systemctl edit ibs` drop-in would set it.
//!
//! It installs a package system-wide, so it runs as root on a throw-away machine, alone in its
//! own test binary. A `/var/lib/ibs` that this test did not make is never touched: the test fails.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Written before the install and removed after the purge: the /var/lib/ibs and the `ibs` user
/// present while it exists were made by this test.
const MARKER: &str = "/var/tmp/ibs-deb-test.owned";

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} exited {}:\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn apt() -> Command {
    let mut c = Command::new("apt-get");
    c.env("DEBIAN_FRONTEND", "noninteractive");
    c
}

fn installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "ibs"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Removes what an earlier run of this test left (package, data, user); refuses a real install.
fn clean_slate() {
    let ours = Path::new(MARKER).exists();
    if !ours {
        assert!(
            !installed() && !Path::new("/var/lib/ibs").exists(),
            "ibs is installed here, or /var/lib/ibs exists, and this test did not make it: \
             refusing to touch it (run this test on a throw-away machine)"
        );
        return;
    }
    if installed() {
        run(apt().args(["purge", "-y", "-qq", "ibs"]));
    }
    let _ = std::fs::remove_dir_all("/var/lib/ibs");
    let _ = Command::new("userdel").arg("ibs").output();
    let _ = Command::new("groupdel").arg("ibs").output();
    std::fs::remove_file(MARKER).unwrap();
}

/// `getent passwd ibs` as its fields.
fn passwd_entry() -> Vec<String> {
    let out = run(Command::new("getent").args(["passwd", "ibs"]));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .split(':')
        .map(str::to_owned)
        .collect()
}

fn gid_of(group: &str) -> u32 {
    let out = run(Command::new("getent").args(["group", group]));
    String::from_utf8_lossy(&out.stdout)
        .split(':')
        .nth(2)
        .unwrap()
        .parse()
        .unwrap()
}

/// The `[Service]` settings of a unit file (every value of a key repeated, in order).
fn service_section(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut section = "";
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if section == "[Service]" {
            let (k, v) = line.split_once('=').unwrap();
            out.entry(k.trim().into())
                .or_default()
                .push(v.trim().into());
        }
    }
    out
}

#[test]
fn the_deb_installs_the_service_that_answers_backup_list() {
    for (tool, package) in [
        ("cargo-deb", "cargo install cargo-deb --locked"),
        ("apt-get", "apt"),
        ("dpkg-shlibdeps", "Debian's dpkg-dev"),
        ("setpriv", "Debian's util-linux"),
        ("systemd-analyze", "Debian's systemd"),
    ] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success()),
            "{tool} is missing ({package}; scripts/ensure-deps.sh installs it)"
        );
    }
    let id = run(Command::new("id").arg("-u"));
    assert_eq!(
        String::from_utf8_lossy(&id.stdout).trim(),
        "0",
        "installing a package needs root"
    );
    clean_slate();

    // Build the .deb from this run's debug binary.
    let bin = Path::new(env!("CARGO_BIN_EXE_ibs"));
    let target_dir = bin.parent().unwrap().parent().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out_dir = tempfile::tempdir().unwrap();
    let built = run(Command::new(root.join("packaging/build-deb.sh"))
        .args(["dev"])
        .arg(out_dir.path())
        .env("CARGO_TARGET_DIR", target_dir));
    let deb = PathBuf::from(
        String::from_utf8_lossy(&built.stdout)
            .trim()
            .lines()
            .last()
            .unwrap(),
    );
    assert!(
        deb.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("ibs_")
            && deb.exists(),
        "{deb:?}"
    );

    // Install it as an operator would.
    std::fs::write(MARKER, "made by crates/ibs/tests/deb_package.rs\n").unwrap();
    run(apt().args(["install", "-y", "-qq"]).arg(&deb));
    assert!(installed());

    let listed =
        String::from_utf8_lossy(&run(Command::new("dpkg").args(["-L", "ibs"])).stdout).into_owned();
    for path in [
        "/usr/bin/ibs",
        "/lib/systemd/system/ibs.service",
        "/etc/ibs/ibs.toml",
        "/usr/share/man/man1/ibs.1.gz",
        "/usr/share/man/man1/ibs-serve.1.gz",
        "/usr/share/man/man1/ibs-repo-mount.1.gz",
        "/usr/share/bash-completion/completions/ibs",
        "/usr/share/zsh/vendor-completions/_ibs",
        "/usr/share/fish/vendor_completions.d/ibs.fish",
    ] {
        assert!(
            listed.lines().any(|l| l == path),
            "dpkg -L ibs lacks {path}:\n{listed}"
        );
        assert!(Path::new(path).exists(), "{path} is listed but not there");
    }
    let version = run(Command::new("/usr/bin/ibs").arg("--version"));
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));

    // The system user and the folders, with the modes the unit expects.
    let user = passwd_entry();
    assert_eq!(user[5], "/var/lib/ibs", "home: {user:?}");
    assert!(user[6].ends_with("nologin"), "shell: {user:?}");
    let uid: u32 = user[2].parse().unwrap();
    assert!(uid < 1000, "ibs must be a system user: {user:?}");
    let ibs_gid = gid_of("ibs");
    for (path, mode, owner, group) in [
        ("/etc/ibs", 0o750, 0, ibs_gid),
        ("/etc/ibs/ibs.toml", 0o640, 0, ibs_gid),
        ("/var/lib/ibs", 0o700, uid, ibs_gid),
    ] {
        let m = std::fs::metadata(path).unwrap();
        assert_eq!(
            (m.mode() & 0o7777, m.uid(), m.gid()),
            (mode, owner, group),
            "{path}: mode, owner, group"
        );
    }

    // systemd accepts the installed unit as it is (no warning either).
    let unit = std::fs::read_to_string("/lib/systemd/system/ibs.service").unwrap();
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "/lib/systemd/system/ibs.service"])
        .output()
        .unwrap();
    let warn = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "systemd-analyze verify: {warn}");
    assert!(
        warn.trim().is_empty(),
        "systemd-analyze verify warns: {warn}"
    );

    // Start the service as the unit would (see the module doc: no systemd here).
    let svc = service_section(&unit);
    let one = |k: &str| {
        svc.get(k)
            .and_then(|v| v.last())
            .cloned()
            .unwrap_or_default()
    };
    let exec: Vec<String> = one("ExecStart")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        exec[0], "/usr/bin/ibs",
        "ExecStart runs the packaged binary"
    );
    let port = ibs_testing::free_port();
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={}", one("User")))
        .arg(format!("--regid={}", one("Group")))
        .arg("--init-groups")
        .args([
            "--",
            "sh",
            "-c",
            "umask \"$1\" && shift && exec \"$@\"",
            "sh",
        ])
        .arg(one("UMask"))
        .args(&exec)
        .current_dir("/")
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", "/var/lib/ibs")
        .env("IBS_LISTEN", format!("127.0.0.1:{port}"));
    for e in svc.get("Environment").into_iter().flatten() {
        for pair in e.split_whitespace() {
            let (k, v) = pair.split_once('=').unwrap();
            cmd.env(k, v);
        }
    }
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut serve = Service(
        cmd.stdin(Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap(),
    );
    let end = Instant::now() + Duration::from_secs(180);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(st) = serve.0.try_wait().unwrap() {
            panic!(
                "the service exited {st}:\n{}",
                std::fs::read_to_string(log.path()).unwrap()
            );
        }
        assert!(Instant::now() < end, "the service did not start listening");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Wait for its first-start bootstrap (it writes the admin token file last).
    while !Path::new("/var/lib/ibs/first-start-admin-token").exists() {
        assert!(
            Instant::now() < end,
            "the service did not finish its first start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The server's files belong to the ibs user.
    let db_owner: Vec<u32> = std::fs::read_dir("/var/lib/ibs")
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().uid())
        .collect();
    assert!(db_owner.iter().all(|o| *o == uid), "{db_owner:?}");

    // A token made as the guide says, then the client against the service.
    let token = run(Command::new("/usr/bin/ibs")
        .args([
            "token",
            "create",
            "--role",
            "reader",
            "--data",
            "/var/lib/ibs",
        ])
        .env_clear()
        .env("PATH", "/usr/bin:/bin"));
    let token = String::from_utf8_lossy(&token.stdout)
        .trim()
        .lines()
        .last()
        .unwrap()
        .to_string();
    let list = |json: bool| {
        let mut c = Command::new("/usr/bin/ibs");
        c.args(["backup", "list"])
            .env_clear()
            .env("IBS_SERVER", format!("http://127.0.0.1:{port}"))
            .env("IBS_TOKEN", &token);
        if json {
            c.arg("--json");
        }
        run(&mut c).stdout
    };
    let table = String::from_utf8_lossy(&list(false)).into_owned();
    assert!(table.starts_with("ID"), "{table}");
    // The service runs as the ibs user and writes its own repository in /var/lib/ibs (after root
    // used the database for the token): its first-start backup succeeds.
    loop {
        let v: serde_json::Value = serde_json::from_slice(&list(true)).unwrap();
        let done = v
            .as_array()
            .unwrap_or_else(|| panic!("not a list: {v}"))
            .iter()
            .any(|b| b["status"] == "Succeeded");
        if done {
            break;
        }
        assert!(Instant::now() < end, "no backup succeeded: {v}");
        std::thread::sleep(Duration::from_millis(300));
    }

    serve.stop();
    run(apt().args(["purge", "-y", "-qq", "ibs"]));
    assert!(!installed() && !Path::new("/usr/bin/ibs").exists());
    assert!(!Path::new("/etc/ibs").exists(), "purge leaves /etc/ibs");
    clean_slate();
}

/// The started service; killed if the test fails before stopping it.
struct Service(std::process::Child);

impl Service {
    fn stop(&mut self) {
        run(Command::new("kill").args(["-TERM", &self.0.id().to_string()]));
        let st = self.0.wait().unwrap();
        assert!(st.success(), "the service exited {st} on SIGTERM");
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
