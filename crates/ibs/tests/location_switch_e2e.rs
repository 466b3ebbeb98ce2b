//! End to end through the real binary: after `ibs location set --path` to a new folder, backups at
//! the old location are shown with their location and marked as at a previous location (CLI table,
//! `backup show`, `--json`), the controller refuses to restore or validate them (exit 6) with an
//! error that names the location they need and both ways to reach it, nothing is written, and the
//! way the error names works: `ibs repo restore --repo OLD` restores the backup, and setting the
//! location back makes it restorable from the controller (and marks the other one instead).

mod common;

use common::daemon::{free_port, statuses, tree, Server};
use serde_json::Value;
use std::process::Output;

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn backup<'a>(list: &'a Value, id: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == id)
        .unwrap_or_else(|| panic!("backup {id} not listed: {list}"))
}

/// The table row of `ibs backup list` that starts with `id`.
fn row(table: &str, id: &str) -> String {
    table
        .lines()
        .find(|l| l.starts_with(id))
        .unwrap_or_else(|| panic!("no row for {id}:\n{table}"))
        .to_string()
}

#[test]
fn backups_at_a_previous_location_are_marked_and_restore_names_the_location_it_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let sample = tmp.path().join("sample");
    std::fs::create_dir_all(&sample).unwrap();
    std::fs::write(sample.join("hello.txt"), b"hello ibs\n").unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(&data, free_port(), &["--sample", sample.to_str().unwrap()]);
    let list = s.wait_for("the first backup", |v| {
        statuses(v).iter().any(|x| x == "Succeeded")
    });
    let first = list[0]["id"].as_str().unwrap().to_string();
    let old = s.json(&["location", "show"])["path"]
        .as_str()
        .expect("bootstrap location")
        .to_string();
    assert_eq!(backup(&list, &first)["location"], old.as_str(), "{list}");
    assert_eq!(backup(&list, &first)["previous_location"], false, "{list}");

    // A new location: the next backup goes there.
    let new = tmp.path().join("second-location");
    std::fs::create_dir(&new).unwrap();
    let out = s.ibs_when_idle(&["location", "set", "--path", new.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", text(&out));
    // Before any backup reaches the new location, the old one's backups are already marked.
    let list = s.json(&["backup", "list"]);
    assert_eq!(backup(&list, &first)["previous_location"], true, "{list}");
    let out = s.ibs_when_idle(&["backup", "start", "--wait"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let second = common::daemon::last_line(&out);

    let list = s.json(&["backup", "list"]);
    let (b1, b2) = (backup(&list, &first), backup(&list, &second));
    assert_eq!(b1["location"], old.as_str(), "{list}");
    assert_eq!(b1["previous_location"], true, "{list}");
    assert_eq!(b2["location"], new.to_str().unwrap(), "{list}");
    assert_eq!(b2["previous_location"], false, "{list}");
    assert_ne!(b1["repository_id"], b2["repository_id"], "{list}");
    // Status and recovery readiness stay: the backup is whole where it is.
    assert_eq!(b1["status"], "Succeeded");
    assert_eq!(b1["recovery_ready"], true);

    // The table shows each backup's location and marks only the old one.
    let out = s.ibs(&["backup", "list"], &[]);
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        table.lines().next().unwrap().contains("LOCATION"),
        "{table}"
    );
    let (r1, r2) = (row(&table, &first), row(&table, &second));
    assert!(
        r1.contains(&old) && r1.contains("(previous location)"),
        "{table}"
    );
    assert!(
        r2.contains(new.to_str().unwrap()) && !r2.contains("previous"),
        "{table}"
    );
    let out = s.ibs(&["backup", "show", &first], &[]);
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        shown.contains(&format!("{old} (previous location)")),
        "{shown}"
    );

    // Restore and validation of the old backup are refused, naming the location it needs.
    let pfx = data.join("certs/ibs-backup.pfx");
    let pw = std::fs::read_to_string(data.join("certs/ibs-backup.pfx.password")).unwrap();
    let pw = pw.trim();
    let target = std::env::temp_dir().join(format!("ibs-switch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&target);
    // A refused restore exits 6 like a busy controller: only one expected to run is retried.
    let restore = |id: &str, refused: bool| {
        let run = if refused {
            Server::ibs
        } else {
            Server::ibs_when_idle
        };
        run(
            &s,
            &[
                "restore",
                id,
                "--component",
                "sample",
                "--target",
                target.to_str().unwrap(),
                "--pfx",
                pfx.to_str().unwrap(),
            ],
            &[("IBS_PFX_PASSWORD", pw)],
        )
    };
    let out = restore(&first, true);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    for needle in [
        "previous location",
        old.as_str(),
        new.to_str().unwrap(),
        "ibs location set --path",
        "ibs repo restore --repo",
    ] {
        assert!(err.contains(needle), "missing {needle:?}: {err}");
    }
    assert!(!err.contains("does not exist"), "{err}");
    assert!(!target.exists(), "a refused restore created the target");
    let out = s.ibs(
        &["backup", "validate", &first, "--pfx", pfx.to_str().unwrap()],
        &[("IBS_PFX_PASSWORD", pw)],
    );
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(old.as_str()),
        "{}",
        text(&out)
    );
    // The JSON error carries the location for scripts.
    let out = s.ibs(
        &[
            "backup",
            "validate",
            &first,
            "--pfx",
            pfx.to_str().unwrap(),
            "--json",
        ],
        &[("IBS_PFX_PASSWORD", pw)],
    );
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(old.as_str()),
        "{}",
        text(&out)
    );

    // The first way out the error names: restore it on any host from the old location.
    let repo_target = tmp.path().join("from-repo");
    let out = common::ibs(["repo", "restore", "--repo", &old, "--backup", &first])
        .arg("--target")
        .arg(&repo_target)
        .arg("--pfx")
        .arg(&pfx)
        .env("IBS_PFX_PASSWORD", pw)
        .run();
    out.ok();
    let restored = tree(&repo_target);
    assert!(
        restored
            .iter()
            .any(|(p, b)| p.ends_with("hello.txt") && b == b"hello ibs\n"),
        "{restored:?}"
    );

    // The second: set the location back; the old backup restores, the new one is marked instead.
    let out = s.ibs_when_idle(&["location", "set", "--path", &old], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let list = s.json(&["backup", "list"]);
    assert_eq!(backup(&list, &first)["previous_location"], false, "{list}");
    assert_eq!(backup(&list, &second)["previous_location"], true, "{list}");
    let out = restore(&first, false);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        tree(&target),
        vec![("hello.txt".to_string(), b"hello ibs\n".to_vec())]
    );
    let out = restore(&second, true);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(new.to_str().unwrap()),
        "{}",
        text(&out)
    );
    let _ = std::fs::remove_dir_all(&target);
}
