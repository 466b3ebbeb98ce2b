//! Attacks by the people whose databases are backed up, against the real PostgreSQL and MariaDB
//! servers: table names and row data built to break out of the restore's verification queries,
//! database names that libpq would read as connection strings, decoys in function bodies. The
//! restore's verification and the validation path (export records rebuilt from the stored dump,
//! then [`mapping::restore`] into a temporary database, as `ibs validate` does) must run nothing
//! but their own queries and count every table right.

mod support;

use ibs_controller::model::JobStatus;
use ibs_sources::component::{self, Component};
use ibs_sources::kinds::{self, RestoreTarget};
use ibs_sources::mapping;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use support::*;

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn one_component(v: serde_json::Value) -> Component {
    component::validate(&[component(v)]).unwrap().remove(0)
}

/// The validation path: the export records are rebuilt from the dump staged under
/// `staged/SOURCE/file` alone, then the kind restores and verifies into `target`.
fn validate_like(
    c: &Component,
    staged: &Path,
    source: &str,
    target: &str,
) -> Result<String, String> {
    let exports = mapping::exports_from_staged(c, &[source.to_string()], staged)
        .map_err(|e| e.to_string())?;
    mapping::restore(
        c,
        &exports,
        staged,
        &RestoreTarget {
            target: target.into(),
            force: false,
        },
    )
    .map_err(|e| e.to_string())
}

fn pg_dump_to(db: &str, file: &Path) {
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let out = Command::new("pg_dump")
        .args(["-h", "127.0.0.1", "-U", "postgres", "--format=plain", "-f"])
        .arg(file)
        .env("PGDATABASE", db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn victim_rows(db: &str) -> String {
    psql_db(
        5432,
        db,
        "SELECT COALESCE((SELECT count(*) FROM pg_class WHERE relname = 'victim'), 0)::text || ':' || \
         (SELECT count(*) FROM pg_tables WHERE tablename = 'victim')",
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_table_names_and_rows_cannot_run_sql_in_verification_or_validation() {
    ensure_services();
    let db = unique("ibs_atk");
    let (restored, validated) = (format!("{db}_r"), format!("{db}_v"));
    let _cleanup = PgDrop(vec![db.clone(), restored.clone(), validated.clone()]);
    psql("postgres", &format!("CREATE DATABASE {db}"));
    // A table whose name holds a newline splits pg_dump's COPY line in two; its first row then
    // stands alone on a line that looks like a COPY statement of its own.
    psql(
        &db,
        "CREATE TABLE victim (id int); INSERT INTO victim VALUES (1), (2), (3); \
         CREATE TABLE \"evil\nname\" (t text); \
         INSERT INTO \"evil\nname\" VALUES ('COPY public.victim AS z; DROP TABLE victim; -- FROM stdin;'), ('two'); \
         CREATE TABLE \"x AS z; DROP TABLE victim; --\" (id int); \
         INSERT INTO \"x AS z; DROP TABLE victim; --\" VALUES (1);",
    );
    let want = counts(&[
        ("public.victim", 3),
        ("public.\"evil\nname\"", 2),
        ("public.\"x AS z; DROP TABLE victim; --\"", 1),
    ]);
    let t = setup(vec![component(serde_json::json!({
        "name": "pg", "kind": "postgres", "url": format!("postgresql://postgres@127.0.0.1:5432/{db}"),
    }))])
    .await;
    let b = backup(&t).await;
    assert_eq!(b.status, JobStatus::Succeeded, "{b:?}");

    let target = format!("postgresql://postgres@127.0.0.1:5432/{restored}");
    let r = restore(&t, &b.id, "pg", &target, false).await;
    assert_eq!(
        victim_rows(&restored),
        "1:1",
        "the restored database lost its victim table: {r:?}"
    );
    assert_eq!(r.status, JobStatus::Succeeded, "{r:?}");
    assert_eq!(psql(&restored, "SELECT count(*) FROM victim"), "3");
    assert_eq!(
        comp(&b, "pg").exports[0].rows,
        want,
        "counts recorded at backup"
    );

    let staged = tempfile::tempdir().unwrap();
    pg_dump_to(&db, &staged.path().join("pg").join(format!("{db}.sql")));
    let c = one_component(serde_json::json!({
        "name": "pg", "kind": "postgres", "url": "postgresql://postgres@127.0.0.1:5432/x",
    }));
    let v = validate_like(
        &c,
        staged.path(),
        "pg",
        &format!("postgresql://postgres@127.0.0.1:5432/{validated}"),
    );
    assert_eq!(
        victim_rows(&validated),
        "1:1",
        "validation ran the dump's SQL: {v:?}"
    );
    assert!(v.is_ok(), "{v:?}");
    assert_eq!(victim_rows(&db), "1:1", "the source lost its victim table");
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_names_with_parens_quotes_and_decoy_copy_lines_are_counted_right() {
    ensure_services();
    let db = unique("ibs_atk");
    let restored = format!("{db}_r");
    let _cleanup = PgDrop(vec![db.clone(), restored.clone()]);
    psql("postgres", &format!("CREATE DATABASE {db}"));
    psql(
        &db,
        "CREATE TABLE plain (id int); INSERT INTO plain SELECT generate_series(1, 4); \
         CREATE TABLE \"t (x\" (\"a (\" int); INSERT INTO \"t (x\" VALUES (1), (2); \
         CREATE SCHEMA \"My Schema\"; CREATE TABLE \"My Schema\".\"q\"\"t\" (id int); \
         INSERT INTO \"My Schema\".\"q\"\"t\" VALUES (1); \
         CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$\nSELECT 1\n$$; \
         CREATE FUNCTION g() RETURNS text LANGUAGE sql AS 'SELECT ''\nCOPY public.decoy FROM stdin;\n1\n\\.\n''::text'; \
         COMMENT ON TABLE plain IS '\nCOPY public.decoy2 (id) FROM stdin;\n7\n\\.\n';",
    );
    let want = counts(&[
        ("public.plain", 4),
        ("public.\"t (x\"", 2),
        ("\"My Schema\".\"q\"\"t\"", 1),
    ]);
    let t = setup(vec![component(serde_json::json!({
        "name": "pg", "kind": "postgres", "url": format!("postgresql://postgres@127.0.0.1:5432/{db}"),
    }))])
    .await;
    let b = backup(&t).await;
    assert_eq!(b.status, JobStatus::Succeeded, "{b:?}");
    let target = format!("postgresql://postgres@127.0.0.1:5432/{restored}");
    let r = restore(&t, &b.id, "pg", &target, false).await;
    assert_eq!(r.status, JobStatus::Succeeded, "{r:?}");
    assert_eq!(comp(&b, "pg").exports[0].rows, want);
    assert!(
        comp(&r, "pg")
            .message
            .as_deref()
            .unwrap_or("")
            .contains("3 tables, 7 rows verified"),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_database_names_that_read_as_connection_strings_do_not_redirect_the_tools() {
    ensure_services();
    let trap = Trap::start();
    let kv = format!("host=127.0.0.1 port={} dbname=x", trap.port);
    let uri = format!("postgresql://127.0.0.1:{}/x", trap.port);
    let kv_target = format!(
        "host=127.0.0.1 port={} dbname=y{:x}",
        trap.port,
        rand::random::<u32>()
    );
    let _cleanup = PgDrop(vec![kv.clone(), uri.clone(), kv_target.clone()]);
    for (name, n) in [(&kv, 5), (&uri, 7)] {
        psql_db(
            5432,
            "postgres",
            &format!("DROP DATABASE IF EXISTS \"{name}\""),
        );
        psql_db(5432, "postgres", &format!("CREATE DATABASE \"{name}\""));
        psql_db(
            5432,
            name,
            &format!("CREATE TABLE items AS SELECT generate_series(1, {n}) AS id"),
        );
    }
    let enc = |s: &str| {
        s.replace('%', "%25")
            .replace(' ', "%20")
            .replace('/', "%2F")
            .replace('=', "%3D")
    };
    let t = setup(vec![
        component(serde_json::json!({
            "name": "kv", "kind": "postgres", "url": format!("postgresql://postgres@127.0.0.1:5432/{}", enc(&kv)),
        })),
        component(serde_json::json!({
            "name": "uri", "kind": "postgres", "url": format!("postgresql://postgres@127.0.0.1:5432/{}", enc(&uri)),
        })),
    ])
    .await;
    let b = backup(&t).await;
    assert_eq!(
        trap.hits(),
        0,
        "a database name sent a client to the trap: {b:?}"
    );
    assert_eq!(b.status, JobStatus::Succeeded, "{b:?}");
    assert_eq!(
        comp(&b, "kv").exports[0].rows,
        counts(&[("public.items", 5)])
    );
    assert_eq!(
        comp(&b, "uri").exports[0].rows,
        counts(&[("public.items", 7)])
    );

    // Restored under a hostile name too: create, fill and verify all go to the real server.
    let target = format!("postgresql://postgres@127.0.0.1:5432/{}", enc(&kv_target));
    let r = restore(&t, &b.id, "kv", &target, false).await;
    assert_eq!(trap.hits(), 0, "the restore went to the trap: {r:?}");
    assert_eq!(r.status, JobStatus::Succeeded, "{r:?}");
    assert_eq!(psql_db(5432, &kv_target, "SELECT count(*) FROM items"), "5");
}

fn mysql_ok(sql: &str) {
    mysql(None, sql);
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_hostile_names_and_routine_decoys_are_counted_and_run_nothing() {
    ensure_services();
    let id = format!("{:08x}", rand::random::<u32>());
    let marker = std::env::temp_dir().join(format!("ibs-pwn-{id}"));
    // A database name that reads as an option, tables that read as SQL or client commands.
    let db = format!("--port=1 ibs_atk_{id}");
    let restored = format!("ibs_atk_{id}_r");
    let validated = format!("ibs_atk_{id}_v");
    let _cleanup = MyDrop(vec![db.clone(), restored.clone(), validated.clone()]);
    let q = |s: &str| format!("`{}`", s.replace('`', "``"));
    let pwn = format!("b\\! touch {} #", marker.display());
    mysql_ok(&format!("CREATE DATABASE {}", q(&db)));
    let tables: [(&str, u64); 6] = [
        ("victim", 3),
        ("a`b", 2),
        ("x'; DROP TABLE victim; --", 1),
        ("new\nline", 1),
        ("a\\", 2),
        (&pwn, 1),
    ];
    for (t, n) in tables {
        let rows: Vec<String> = (1..=n).map(|i| format!("({i})")).collect();
        mysql_ok(&format!(
            "CREATE TABLE {d}.{t} (id INT); INSERT INTO {d}.{t} VALUES {}",
            rows.join(","),
            d = q(&db),
            t = q(t)
        ));
    }
    let out = ibs_testing::db::mariadb()
        .args(["--", &db])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(
                b"DELIMITER ;;\nCREATE PROCEDURE p()\nBEGIN\nCREATE TABLE `decoy` (a int);\n\
                  INSERT INTO `victim` VALUES (9),(9);\nEND ;;\nDELIMITER ;\n",
            )?;
            c.wait()
        })
        .unwrap();
    assert!(out.success());
    let want: BTreeMap<String, u64> = tables.iter().map(|(t, n)| (q(t), *n)).collect();

    let t = setup(vec![component(serde_json::json!({
        "name": "my", "kind": "mariadb",
        "url": format!("mysql://root@127.0.0.1:3306/{}", db.replace('%', "%25").replace(' ', "%20")),
    }))])
    .await;
    let b = backup(&t).await;
    assert_eq!(b.status, JobStatus::Succeeded, "{b:?}");

    let r = restore(
        &t,
        &b.id,
        "my",
        &format!("mysql://root@127.0.0.1:3306/{restored}"),
        false,
    )
    .await;
    assert!(!marker.exists(), "a table name ran a shell command");
    assert_eq!(
        mysql(Some(&restored), "SELECT COUNT(*) FROM victim"),
        "3",
        "{r:?}"
    );
    assert_eq!(r.status, JobStatus::Succeeded, "{r:?}");
    assert_eq!(comp(&b, "my").exports[0].rows, want);

    let staged = tempfile::tempdir().unwrap();
    let file = staged.path().join("my/db.sql");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let dump = Command::new("mariadb-dump")
        .args([
            "--no-defaults",
            "-h",
            "127.0.0.1",
            "--port=3306",
            "--protocol=tcp",
            "--user=root",
        ])
        .args(["--single-transaction", "--routines", "--", &db])
        .output()
        .unwrap();
    assert!(dump.status.success());
    std::fs::write(&file, &dump.stdout).unwrap();
    let c = one_component(serde_json::json!({
        "name": "my", "kind": "mariadb", "url": "mysql://root@127.0.0.1:3306/x",
    }));
    let v = validate_like(
        &c,
        staged.path(),
        "my",
        &format!("mysql://root@127.0.0.1:3306/{validated}"),
    );
    assert!(!marker.exists(), "a table name ran a shell command");
    assert!(v.is_ok(), "{v:?}");
    assert_eq!(mysql(Some(&validated), "SELECT COUNT(*) FROM victim"), "3");
}

fn on_path(program: &str) -> std::path::PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} must be installed"))
}

fn write_script(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Children of this process running `redis-server`.
fn scratch_servers() -> Vec<u32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let (comm, rest) = stat.split_once(") ")?;
            let ppid = rest.split_whitespace().nth(1)?;
            (comm.ends_with("(redis-server") && ppid == me)
                .then(|| e.file_name().to_str()?.parse().ok())?
        })
        .collect()
}

/// The TCP ports and unix socket paths process `pid` listens on.
fn listening(pid: u32) -> (Vec<u16>, Vec<String>) {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    Some(
                        l.strip_prefix("socket:[")?
                            .trim_end_matches(']')
                            .to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                let port = f[1].rsplit(':').next().unwrap();
                ports.push(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    let mut paths = Vec::new();
    for line in std::fs::read_to_string("/proc/net/unix")
        .unwrap()
        .lines()
        .skip(1)
    {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 7 && inodes.iter().any(|i| i == f[6]) {
            paths.push(f[7].to_string());
        }
    }
    (ports, paths)
}

fn as_nobody(args: &[&str]) -> String {
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .args(args)
        .output()
        .expect("runuser");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_scratch_redis_server_is_out_of_reach_of_other_local_users() {
    ensure_services();
    // The verification's redis-cli waits before it asks, so the scratch server stays up while an
    // unprivileged local user (`nobody`) tries every socket it listens on.
    let tools = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(on_path("redis-server"), tools.path().join("redis-server")).unwrap();
    write_script(
        &tools.path().join("redis-cli"),
        &format!(
            "#!/bin/sh\nsleep 3\nexec {} \"$@\"\n",
            on_path("redis-cli").display()
        ),
    );
    let data = tempfile::tempdir().unwrap();
    let (tool_dir, dir) = (tools.path().to_path_buf(), data.path().to_path_buf());
    let verify =
        std::thread::spawn(move || kinds::redis::count_keys_in("cache", Some(&tool_dir), &dir, 0));
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (pid, ports, paths) = loop {
        if let Some(pid) = scratch_servers().first().copied() {
            let (ports, paths) = listening(pid);
            if !ports.is_empty() || !paths.is_empty() {
                break (pid, ports, paths);
            }
        }
        assert!(
            std::time::Instant::now() < end,
            "no scratch redis-server seen listening"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains("requirepass"),
        "the scratch server's password is in its argv"
    );
    let mut reached = Vec::new();
    for p in &ports {
        let out = as_nobody(&["redis-cli", "-h", "127.0.0.1", "-p", &p.to_string(), "PING"]);
        if out.contains("PONG") {
            reached.push(format!("tcp port {p}"));
        }
    }
    for path in &paths {
        if as_nobody(&["redis-cli", "-s", path, "PING"]).contains("PONG") {
            reached.push(format!("unix socket {path} as nobody"));
        }
        let out = Command::new("redis-cli")
            .args(["-s", path, "PING"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains("PONG") {
            reached.push(format!("unix socket {path} without the password"));
        }
    }
    assert!(
        reached.is_empty(),
        "another local client reached the scratch server: {reached:?}"
    );
    assert_eq!(verify.join().unwrap().unwrap(), 0);
}

#[test]
fn the_scratch_redis_configuration_is_private_and_removed() {
    use std::os::unix::fs::PermissionsExt;
    ensure_services();
    // A data folder whose name needs quoting in redis.conf, holding a real dump of 2 keys.
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("a \"b\\ c\nd #e");
    std::fs::create_dir(&dir).unwrap();
    redis(&["-n", "11", "FLUSHDB"]);
    redis(&["-n", "11", "MSET", "k1", "v1", "k2", "v2"]);
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379", "--rdb"])
        .arg(dir.join("dump.rdb"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    redis(&["-n", "11", "FLUSHDB"]);
    let mut s = kinds::redis::ScratchRedis::start("cache", None, &dir).unwrap();
    assert_eq!(s.dbsize(11).unwrap(), 2);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let folder = s.folder().to_path_buf();
    assert_eq!(mode(&folder), 0o700);
    assert_eq!(mode(&folder.join("redis.conf")), 0o600);
    assert_eq!(s.socket().parent(), Some(folder.as_path()));
    let conf = std::fs::read_to_string(folder.join("redis.conf")).unwrap();
    assert!(
        conf.contains("port 0\n") && conf.contains("requirepass \""),
        "{conf}"
    );
    assert!(
        as_nobody(&["cat", folder.join("redis.conf").to_str().unwrap()])
            .contains("Permission denied")
    );
    drop(s);
    assert!(!folder.exists(), "the scratch folder outlived the server");
}

#[test]
fn a_tool_reads_its_script_from_a_0600_file_in_a_0700_folder() {
    let tools = tempfile::tempdir().unwrap();
    write_script(
        &tools.path().join("psql"),
        "#!/bin/sh\nf=$(readlink /proc/self/fd/0)\n\
         echo \"$(stat -L -c %a /proc/self/fd/0) $(stat -c %a \"$(dirname \"$f\")\") $f\"\n",
    );
    let out = kinds::Tool::new("c", Some(tools.path()), "psql")
        .run_script("SELECT 1;\n")
        .unwrap();
    assert!(
        out.starts_with("600 700 "),
        "script file mode, folder mode, path: {out}"
    );
}
