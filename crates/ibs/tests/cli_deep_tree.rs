//! A tree deeper than the soft limit on open files, backed up and restored by the real binary
//! started with a low soft limit (as systemd starts services: 1024 soft, a high hard limit).
//!
//! The backup walks through open folder descriptors, one per depth (ADR 0061); ibs raises its soft
//! limit to the hard one at start (`crates/ibs/src/limits.rs`), so the walk reaches the bottom.
//! Run with the soft limit left as it was, the walk could not open the folders past ~240 levels and
//! the backup ended partial (exit 3).

mod common;

use common::{shared_cert, Fx, Ibs, Out};
use std::process::Command;

const DEPTH: usize = 400;
const SOFT: u32 = 256;

/// Runs the command `c` builds under `prlimit --nofile=SOFT:` (the soft limit only; util-linux,
/// installed on every Debian machine), with the same arguments and environment.
fn under_low_soft_limit(c: Ibs) -> Out {
    let inner = c.command();
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={SOFT}:"))
        .arg("--")
        .arg(inner.get_program())
        .args(inner.get_args());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output().expect("prlimit (util-linux) runs");
    Out {
        args: inner
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn a_tree_deeper_than_the_soft_open_file_limit_backs_up_and_restores_whole() {
    let fx = Fx::new();
    let cert = shared_cert(0);
    fx.init_cert(&cert.cer);
    let src = fx.path("src");
    let mut dir = src.clone();
    for i in 0..DEPTH {
        dir.push("d");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("level"), format!("{i}\n")).unwrap();
    }
    std::fs::write(dir.join("bottom.conf"), b"reached\n").unwrap();

    let id = under_low_soft_limit(fx.backup_cmd(&[("deep", &src)]))
        .ok()
        .last_line();
    let target = fx.path("restored");
    under_low_soft_limit(fx.restore_cmd(&id, &target, &[&cert.pfx])).ok();
    let mut restored = target.join("deep");
    for i in 0..DEPTH {
        restored.push("d");
        assert_eq!(
            std::fs::read_to_string(restored.join("level")).unwrap(),
            format!("{i}\n")
        );
    }
    assert_eq!(
        std::fs::read(restored.join("bottom.conf")).unwrap(),
        b"reached\n"
    );
}
