//! The disaster drill, through the real binary, a real Samba share on loopback and the real
//! PostgreSQL server: machine A backs up a folder (the realistic tree of `ibs_testing`: symlinks
//! of every sort, hard links, a sparse file, a FIFO, a socket, odd names, xattrs, ACLs, and as
//! root owners, a file capability and device nodes) and a PostgreSQL export (`pg_dump --format=plain`
//! piped as a stream source) twice with changes in between; A's state, its private certificate copy,
//! its data and its database are destroyed; machine B recovers from the share and the .pfx alone
//! (`ibs recover`), every entry (contents, kinds, link targets, modes, owners, mtimes, hard-link
//! groups, xattrs) and row is compared with A's at the recovered backup, `ibs validate`
//! proves the backup restorable, and B's next backup deduplicates against A's chain. The failure
//! paths (wrong .pfx, missing backup id, damaged pack, unreachable share) each assert their message
//! and exit code. A missing Samba or PostgreSQL fails these tests; they never skip.

mod common;
use common::*;
use std::path::{Path, PathBuf};

// The table dumps are compared exactly as `psql -At` printed them.
use ibs_testing::db::{pg_dump, psql_raw as psql, PgDrop};
use ibs_testing::samba::{DIR, PORT, USER};

const TABLES: [&str; 2] = ["items", "notes"];

fn smb_password() -> String {
    ibs_testing::samba::password()
}

fn setup() {
    ibs_testing::db::ensure_services();
    ibs_testing::samba::shared_server();
}

/// A fresh region folder on the share (owned by the share user) and its smb:// location.
fn region() -> (PathBuf, String) {
    ibs_testing::samba::region(&Path::new(DIR).join("share"), "backup", PORT)
}

fn table_dumps(db: &str) -> Vec<String> {
    TABLES
        .iter()
        .map(|t| psql(db, &format!("SELECT * FROM {t} ORDER BY id")))
        .collect()
}

fn temp_databases() -> String {
    psql(
        "postgres",
        "SELECT datname FROM pg_database WHERE datname LIKE 'ibs_validate_%'",
    )
}

fn repo_cmd(sub: &str, loc: &str, state: &Path) -> Ibs {
    ibs(["repo", sub, "--repo", loc, "--username", USER])
        .arg("--state")
        .arg(state)
        .env("IBS_SHARE_PASSWORD", &smb_password())
}

/// A backup of `files=DIR` and `pg=-` (the dump on stdin); returns the catalog.
fn backup(loc: &str, state: &Path, dir: &Path, dump: Vec<u8>) -> serde_json::Value {
    let out = repo_cmd("backup", loc, state)
        .arg("--source")
        .arg(format!("files={}", dir.display()))
        .args(["--source", "pg=-", "--json"])
        .stdin(dump)
        .run()
        .ok();
    let first = out.stdout.lines().next().unwrap().to_string();
    serde_json::from_str::<serde_json::Value>(&first).unwrap()["catalog"].clone()
}

fn recover_cmd(loc: &str, pfx: &Path, plan: &Path, state: &Path) -> Ibs {
    ibs(["recover", "--location", loc, "--username", USER, "--pfx"])
        .arg(pfx)
        .arg("--plan")
        .arg(plan)
        .arg("--state")
        .arg(state)
        .env("IBS_SHARE_PASSWORD", &smb_password())
        .pw()
}

#[test]
fn disaster_drill_recovers_everything_from_the_share_and_the_pfx() {
    setup();
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, vault) = (
        tmp.path().join("A"),
        tmp.path().join("B"),
        tmp.path().join("vault"),
    );
    for d in [&a, &b, &vault] {
        std::fs::create_dir_all(d).unwrap();
    }
    let db = format!("ibs_drill_{:08x}", rand::random::<u32>());
    let db_b = format!("{db}_b");
    let _dbs = PgDrop(vec![db.clone(), db_b.clone()]);

    // Machine A: certificate (its .pfx also kept in the vault), repository, data, database.
    let cert = new_cert(&a, "drill");
    std::fs::copy(&cert.pfx, vault.join("drill.pfx")).unwrap();
    let (_region_dir, loc) = region();
    let state_a = a.join("state");
    repo_cmd("init", &loc, &state_a)
        .arg("--cert")
        .arg(&cert.cer)
        .run()
        .ok();
    let data = a.join("data");
    ibs_testing::realistic_tree(&data);
    write(&data.join("blob.bin"), &pseudo_random(1, 4 << 20));
    write(
        &data.join("etc/app.conf"),
        &b"listen = 0.0.0.0:443\n".repeat(200),
    );
    write(&data.join("etc/empty"), b"");
    psql("postgres", &format!("CREATE DATABASE {db}"));
    psql(
        &db,
        "CREATE TABLE items AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 5000) g",
    );
    psql(&db, "CREATE TABLE notes (id int PRIMARY KEY, body text)");
    psql(
        &db,
        "INSERT INTO notes VALUES (1, 'first'), (2, 'tab\there')",
    );
    let first = backup(&loc, &state_a, &data, pg_dump(&db));

    // Changes, then backup 2: what B must get back.
    next_second();
    write(
        &data.join("etc/app.conf"),
        &b"listen = 0.0.0.0:8443\n".repeat(200),
    );
    write(&data.join("new/report.txt"), &pseudo_random(2, 70_000));
    psql(
        &db,
        "UPDATE items SET v = 'changed' WHERE id % 7 = 0; DELETE FROM items WHERE id > 4900",
    );
    psql(&db, "INSERT INTO notes VALUES (3, 'after backup 1')");
    let second = backup(&loc, &state_a, &data, pg_dump(&db));
    let b2 = second["backup_id"].as_str().unwrap().to_string();
    let tree_at_b2 = ibs_testing::snapshot(&data);
    let rows_at_b2 = table_dumps(&db);

    // Catastrophe: A's state, certificate copy, data and database are gone.
    std::fs::remove_dir_all(&a).unwrap();
    psql("postgres", &format!("DROP DATABASE {db} WITH (FORCE)"));

    // Machine B: a fresh state, the share and the .pfx from the vault.
    let plan = b.join("plan.toml");
    let target = b.join("restore/files");
    std::fs::write(
        &plan,
        format!(
            "[[component]]\nname = \"pg\"\ntarget = \"postgresql://postgres@127.0.0.1:5432/{db_b}\"\npriority = 1\n\n\
             [[component]]\nname = \"files\"\ntarget = \"{}\"\n",
            target.display()
        ),
    )
    .unwrap();
    let pfx = vault.join("drill.pfx");
    let state_b = b.join("state");
    // The human report first (then undone), the JSON one for the comparisons.
    let human = recover_cmd(&loc, &pfx, &plan, &b.join("state-human"))
        .run()
        .ok();
    for needle in [
        "READY",
        "VERIFIED",
        "adopted repository",
        "2 of 2 components restored",
    ] {
        assert!(human.stdout.contains(needle), "{needle}: {human}");
    }
    psql(
        "postgres",
        &format!("DROP DATABASE IF EXISTS {db_b} WITH (FORCE)"),
    );
    std::fs::remove_dir_all(&target).unwrap();
    let out = recover_cmd(&loc, &pfx, &plan, &state_b)
        .arg("--json")
        .run()
        .ok();
    let j = out.json();
    let report = &j["report"];
    assert_eq!(
        report["backup_id"],
        b2.as_str(),
        "the newest recovery-ready backup"
    );
    let comps = report["components"].as_array().unwrap();
    assert_eq!(comps[0]["name"], "pg", "priority order");
    assert!(
        comps
            .iter()
            .all(|c| c["outcome"] == "restored" && c["verified"] == true),
        "{j:#}"
    );
    assert!(j["backups"].as_array().unwrap().len() == 2);

    ibs_testing::assert_restored(&tree_at_b2, &target, "recovered files");
    assert_eq!(table_dumps(&db_b), rows_at_b2, "every row as at backup 2");

    // Validation: with a database server in the plan (temporary database, dropped afterwards) …
    let vplan = b.join("validate.toml");
    std::fs::write(
        &vplan,
        "[[component]]\nname = \"pg\"\ntarget = \"postgresql://postgres@127.0.0.1:5432/postgres\"\n",
    )
    .unwrap();
    let html = b.join("reports/validate.html");
    std::fs::create_dir_all(html.parent().unwrap()).unwrap();
    let v = ibs([
        "validate",
        "--location",
        &loc,
        "--username",
        USER,
        "--backup",
        &b2,
        "--pfx",
    ])
    .arg(&pfx)
    .arg("--report")
    .arg(&html)
    .arg("--plan")
    .arg(&vplan)
    .env("IBS_SHARE_PASSWORD", &smb_password())
    .pw()
    .run()
    .ok();
    assert!(v.stdout.contains("verdict PASS"), "{v}");
    let vj: serde_json::Value =
        serde_json::from_slice(&std::fs::read(html.with_extension("json")).unwrap()).unwrap();
    assert_eq!(vj["verdict"], "PASS", "{vj:#}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("PASS") && page.contains("ibs_validate_") && !page.contains("http"));
    assert_eq!(temp_databases(), "", "the temporary database is dropped");
    // … and without one: the database component is marked, never silently passed.
    let v = ibs([
        "validate",
        "--location",
        &loc,
        "--username",
        USER,
        "--backup",
        &b2,
        "--pfx",
    ])
    .arg(&pfx)
    .arg("--report")
    .arg(b.join("reports/noplan.html"))
    .env("IBS_SHARE_PASSWORD", &smb_password())
    .pw()
    .run()
    .ok();
    assert!(
        v.stdout
            .contains("not validated: no database target in the plan"),
        "{v}"
    );
    assert!(v.stdout.contains("verdict INCOMPLETE"), "{v}");

    // B's next backup continues A's chain: almost nothing new is stored.
    let third = backup(&loc, &state_b, &target, pg_dump(&db_b));
    let (s1, s3) = (
        first["bytes_stored"].as_u64().unwrap(),
        third["bytes_stored"].as_u64().unwrap(),
    );
    assert!(
        s3 * 20 < s1,
        "the next backup stored {s3} bytes, the first {s1}: not deduplicated"
    );
}

#[test]
fn recover_failure_paths_have_specific_messages_and_exit_codes() {
    setup();
    let tmp = tempfile::tempdir().unwrap();
    let cert = shared_cert(0);
    let other = shared_cert(1);
    let (region_dir, loc) = region();
    let state = tmp.path().join("state");
    repo_cmd("init", &loc, &state)
        .arg("--cert")
        .arg(&cert.cer)
        .run()
        .ok();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    write(&a.join("a.bin"), &pseudo_random(3, 1 << 20));
    ibs_testing::realistic_tree(&b);
    write(&b.join("b.bin"), &pseudo_random(4, 1 << 20));
    let at_b = ibs_testing::snapshot(&b);
    let packs = |d: &Path| files_under(&d.join("MASBackup/packs"));
    repo_cmd("backup", &loc, &state)
        .arg("--source")
        .arg(format!("a={}", a.display()))
        .run()
        .ok();
    let old_packs = packs(&region_dir);
    next_second();
    let id2 = repo_cmd("backup", &loc, &state)
        .arg("--source")
        .arg(format!("a={}", a.display()))
        .arg("--source")
        .arg(format!("b={}", b.display()))
        .run()
        .ok()
        .last_line();
    let plan = tmp.path().join("plan.toml");
    let out = tmp.path().join("out");
    std::fs::write(
        &plan,
        format!(
            "[[component]]\nname = \"a\"\ntarget = \"{0}/a\"\n[[component]]\nname = \"b\"\ntarget = \"{0}/b\"\n",
            out.display()
        ),
    )
    .unwrap();
    let fresh = tmp.path().join("fresh");

    // Wrong .pfx: exit 5, naming the certificate needed and the one given.
    let r = recover_cmd(&loc, &other.pfx, &plan, &fresh).run().code(5);
    assert!(
        r.stderr.contains(&cert.thumbprint) && r.stderr.contains(&other.thumbprint),
        "{r}"
    );

    // A backup id that is not there: exit 8, naming it and the ids nearby.
    let missing = "20000101T000000Z-0000";
    let r = recover_cmd(&loc, &cert.pfx, &plan, &fresh)
        .args(["--backup", missing])
        .run()
        .code(8);
    assert!(r.stderr.contains(missing) && r.stderr.contains(&id2), "{r}");

    // A planned component the backup does not hold: exit 8, naming it.
    let bad_plan = tmp.path().join("bad.toml");
    std::fs::write(
        &bad_plan,
        "[[component]]\nname = \"nope\"\ntarget = \"/tmp/x\"\n",
    )
    .unwrap();
    recover_cmd(&loc, &cert.pfx, &bad_plan, &fresh)
        .run()
        .code(8)
        .stderr_has("nope");

    // Unreachable share: exit 11.
    let dead = format!(
        "smb://127.0.0.1:1/backup/{}",
        region_dir.file_name().unwrap().to_string_lossy()
    );
    recover_cmd(&dead, &cert.pfx, &plan, &fresh).run().code(11);

    // A damaged pack (written by the first backup, holding only a's data): a fails, b restores, exit 3.
    assert!(!old_packs.is_empty());
    for p in &old_packs {
        let mut bytes = std::fs::read(p).unwrap();
        let i = bytes.len() / 2;
        bytes[i] ^= 0x55;
        std::fs::write(p, bytes).unwrap();
    }
    let r = recover_cmd(&loc, &cert.pfx, &plan, &fresh)
        .args(["--backup", &id2])
        .run()
        .code(3);
    assert!(r.stderr.contains("FAILED a"), "{r}");
    ibs_testing::assert_restored(&at_b, &out.join("b"), "b, beside a failed a");
    assert!(
        !out.join("a/a.bin").exists(),
        "no wrong bytes under a's name"
    );
}
