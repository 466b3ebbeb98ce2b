//! End to end through the real binary against `ibs serve` (ADR 0024): `ibs operations` shows the
//! first backup Running and then Succeeded, the retention cleanup that follows it, and a
//! maintenance window; the list commands (`jobs list`, `operations`, `audit`, `components`,
//! `backup list`, `verification packs`) print `--limit N` rows, follow every page with `--all`
//! (the same rows, once each, as one big page), continue from `--cursor`; a bad `--limit` or
//! `--cursor` exits 2 naming the problem; `jobs show`, `verification status|start` and
//! `backup validate` work.

mod common;

use common::daemon::{free_port, last_line, Server};
use serde_json::Value;
use std::process::Output;
use std::time::{Duration, Instant};

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `args` again while it exits 6 (409): the controller's own jobs hold the gate for moments.
fn retry_while_busy(s: &Server, args: &[&str]) -> Output {
    let end = Instant::now() + Duration::from_secs(90);
    loop {
        let out = s.ibs(args, &[]);
        if out.status.code() != Some(6) || Instant::now() > end {
            return out;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn ids(v: &Value, key: &str) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| match &r[key] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

fn wait_ops(s: &Server, args: &[&str], what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + Duration::from_secs(180);
    loop {
        let v = s.json(args);
        if f(&v) {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}: {v}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn operations_and_paged_lists_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let sample = tmp.path().join("sample");
    std::fs::create_dir_all(&sample).unwrap();
    std::fs::write(sample.join("hello.txt"), b"hello ibs\n").unwrap();
    let config = tmp.path().join("ibs.toml");
    let mut toml = format!(
        "tick_seconds = 1\n\
         [[component]]\nname = \"sample\"\nkind = \"files\"\npaths = [{:?}]\n\
         [[component]]\nname = \"slow\"\nkind = \"command\"\nbackup = \"sleep 5; echo slow\"\n\
         essential_for_recovery = false\n",
        sample.display().to_string()
    );
    for i in 0..5 {
        toml.push_str(&format!(
            "[[component]]\nname = \"extra{i}\"\nkind = \"command\"\nbackup = \"echo {i}\"\n\
             essential_for_recovery = false\n"
        ));
    }
    std::fs::write(&config, toml).unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(&data, free_port(), &["--config", config.to_str().unwrap()]);

    // The first scheduled backup runs at once: Running in `ibs operations --running`.
    let running = wait_ops(&s, &["operations", "--running"], "a running backup", |v| {
        v.as_array().unwrap().iter().any(|o| o["kind"] == "backup")
    });
    let backup = running
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "backup")
        .unwrap()
        .clone();
    assert_eq!(backup["status"], "Running", "{running}");
    let id = backup["id"].as_str().unwrap().to_string();
    let table = ok(&s.ibs(&["operations", "--running"], &[]));
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains(&id) && l.contains("Running")),
        "{table}"
    );
    // … then finished, and the retention cleanup after it.
    wait_ops(
        &s,
        &["operations", "--kind", "backup"],
        "the backup to end",
        |v| {
            v.as_array()
                .unwrap()
                .iter()
                .any(|o| o["id"] == id.as_str() && o["status"] == "Succeeded")
        },
    );
    let cleanup = wait_ops(
        &s,
        &["operations", "--kind", "retention-cleanup"],
        "the retention cleanup",
        |v| {
            v.as_array()
                .unwrap()
                .iter()
                .any(|o| o["status"] == "Succeeded")
        },
    );
    assert_eq!(cleanup[0]["trigger"], "scheduler", "{cleanup}");

    // A maintenance window: Running, then Succeeded; three of them make audit rows to page.
    for round in 0..3 {
        ok(&retry_while_busy(
            &s,
            &["maintenance", "begin", "--operation", "update"],
        ));
        let m = s.json(&["operations", "--running", "--kind", "maintenance"]);
        assert_eq!(m.as_array().unwrap().len(), 1, "round {round}: {m}");
        assert_eq!(m[0]["status"], "Running");
        assert_eq!(m[0]["detail"], "update");
        ok(&s.ibs(&["maintenance", "end", "--outcome", "succeeded"], &[]));
    }
    let m = s.json(&["operations", "--kind", "maintenance"]);
    assert_eq!(ids(&m, "status"), vec!["Succeeded"; 3], "{m}");
    let table = ok(&s.ibs(&["operations"], &[]));
    for kind in ["backup", "retention-cleanup", "maintenance"] {
        assert!(table.contains(kind), "{kind} missing:\n{table}");
    }

    // A verification, so that pack records exist to page.
    let v = s.json(&["verification", "status"]);
    assert!(v["verify_sample_percent"].is_u64(), "{v}");
    let out = retry_while_busy(&s, &["verification", "start", "--wait"]);
    let vid = last_line(&out);
    ok(&out);
    assert_eq!(s.json(&["jobs", "show", &vid])["kind"], "verify");

    // Every list: --limit N prints N, --all follows every page, --cursor continues.
    let lists: [(&[&str], &str); 6] = [
        (&["jobs", "list"], "id"),
        (&["operations"], "id"),
        (&["audit"], "id"),
        (&["components"], "name"),
        (&["backup", "list"], "id"),
        (&["verification", "packs"], "pack"),
    ];
    for (cmd, key) in lists {
        let mut one: Vec<&str> = cmd.to_vec();
        one.extend(["--limit", "1000"]);
        let everything = ids(&s.json(&one), key);
        let mut paged: Vec<&str> = cmd.to_vec();
        paged.extend(["--all", "--limit", "2"]);
        let walked = ids(&s.json(&paged), key);
        assert_eq!(walked, everything, "{cmd:?}");
        if everything.len() > 2 {
            let mut two: Vec<&str> = cmd.to_vec();
            two.extend(["--limit", "2"]);
            let out = s.ibs(&[two.clone(), vec!["--json"]].concat(), &[]);
            let page: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(page.as_array().unwrap().len(), 2, "{cmd:?} --limit 2");
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            let cursor = err
                .split("--cursor ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .unwrap_or_else(|| panic!("{cmd:?}: no cursor on stderr: {err}"));
            let mut next: Vec<&str> = two.clone();
            next.extend(["--cursor", cursor]);
            let second = ids(&s.json(&next), key);
            assert!(!second.is_empty());
            assert!(
                !second.iter().any(|r| ids(&page, key).contains(r)),
                "{cmd:?}: the next page repeats a row"
            );
            // A table too, one header line and two rows.
            let t = ok(&s.ibs(&two, &[]));
            assert_eq!(t.lines().count(), 3, "{cmd:?}:\n{t}");
        }
    }
    assert_eq!(
        ids(&s.json(&["components", "--all", "--limit", "3"]), "name"),
        vec!["sample", "slow", "extra0", "extra1", "extra2", "extra3", "extra4"]
    );
    assert!(ids(&s.json(&["audit", "--limit", "1000"]), "id").len() >= 6);

    // Bad input: exit 2 with the problem named.
    let out = s.ibs(&["jobs", "list", "--limit", "0"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--limit"));
    let out = s.ibs(&["audit", "--limit", "1001"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = s.ibs(&["operations", "--cursor", "not-a-cursor"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid cursor"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // jobs show, verification status and start, backup validate.
    let shown = s.json(&["jobs", "show", &id]);
    assert_eq!(shown["id"], id.as_str());
    let table = ok(&s.ibs(&["jobs", "show", &id], &[]));
    assert!(table.contains("Succeeded"), "{table}");
    let pw = std::fs::read_to_string(data.join("certs/ibs-backup.pfx.password")).unwrap();
    let pfx = data.join("certs/ibs-backup.pfx");
    let out = {
        let end = Instant::now() + Duration::from_secs(90);
        loop {
            let out = s.ibs(
                &["backup", "validate", &id, "--pfx", pfx.to_str().unwrap()],
                &[("IBS_PFX_PASSWORD", pw.trim())],
            );
            if out.status.code() != Some(6) || Instant::now() > end {
                break out;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    ok(&out);
    let val = last_line(&out);
    let j = s.json(&["jobs", "show", &val]);
    assert_eq!(
        (&j["kind"], &j["status"]),
        (&Value::from("validate"), &Value::from("Succeeded")),
        "{j}"
    );
    let ops = s.json(&["operations", "--kind", "validate"]);
    assert_eq!(ops[0]["id"], val.as_str(), "{ops}");
}
