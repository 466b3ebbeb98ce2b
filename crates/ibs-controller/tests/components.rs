//! Service components against the real servers (PostgreSQL, MariaDB, Redis on 127.0.0.1; SQLite
//! files): backup and restore round trips with the data compared, consistency under a concurrent
//! writer (a committed prefix of the writer's transactions, the invariant held), per-component
//! failure classes, non-empty targets refused without `force`, and secrets kept out of argv and
//! job records.

mod support;

use ibs_controller::kinds::Cause;
use ibs_controller::model::JobStatus;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

const ACCOUNTS: u32 = 20;
const START_BALANCE: i64 = 1000;

/// A client process fed transfer transactions on stdin until stopped; `committed` counts those
/// written (psql/mariadb execute them as they read).
struct Writer {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<u64>>,
}

impl Writer {
    fn start(mut cmd: Command, begin: &'static str) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .expect("writer client");
            let mut stdin = child.stdin.take().unwrap();
            let mut k = 0u64;
            while !s.load(Ordering::Relaxed) {
                k += 1;
                let a = rand::random::<u32>() % ACCOUNTS + 1;
                let b = (a % ACCOUNTS) + 1;
                let amt = rand::random::<u32>() % 50 + 1;
                let tx = format!(
                    "{begin} UPDATE accounts SET balance = balance - {amt} WHERE id = {a}; \
                     UPDATE accounts SET balance = balance + {amt} WHERE id = {b}; \
                     INSERT INTO ledger (seq, src, dst, amount) VALUES ({k}, {a}, {b}, {amt}); COMMIT;\n"
                );
                if stdin.write_all(tx.as_bytes()).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            drop(stdin);
            let st = child.wait().unwrap();
            assert!(st.success(), "writer client failed: {st}");
            k
        });
        Writer {
            stop,
            handle: Some(handle),
        }
    }
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

const SCHEMA: &str = "CREATE TABLE accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL); \
     CREATE TABLE ledger (seq BIGINT PRIMARY KEY, src INT NOT NULL, dst INT NOT NULL, amount BIGINT NOT NULL);";

/// The invariant checks, identical in both SQL dialects: (total, ledger count, max seq, min seq,
/// accounts inconsistent with the ledger).
const CHECK: &str = "SELECT (SELECT SUM(balance) FROM accounts), (SELECT COUNT(*) FROM ledger), \
     (SELECT COALESCE(MAX(seq), 0) FROM ledger), (SELECT COALESCE(MIN(seq), 0) FROM ledger), \
     (SELECT COUNT(*) FROM accounts a WHERE a.balance <> 1000 \
        - COALESCE((SELECT SUM(amount) FROM ledger l WHERE l.src = a.id), 0) \
        + COALESCE((SELECT SUM(amount) FROM ledger l WHERE l.dst = a.id), 0))";

fn assert_committed_prefix(out: &str, what: &str) -> u64 {
    let v: Vec<i64> = out
        .split(['|', '\t'])
        .map(|x| x.trim().parse().unwrap())
        .collect();
    assert_eq!(
        v[0],
        ACCOUNTS as i64 * START_BALANCE,
        "{what}: total changed: {out}"
    );
    assert_eq!(v[1], v[2], "{what}: ledger has gaps: {out}");
    assert!(
        v[1] >= 20 && v[3] == 1,
        "{what}: expected a prefix 1..k with k >= 20: {out}"
    );
    assert_eq!(v[4], 0, "{what}: balances disagree with the ledger: {out}");
    v[1] as u64
}

fn wait_ledger(count: impl Fn() -> u64) {
    let end = Instant::now() + Duration::from_secs(30);
    while count() < 20 {
        assert!(Instant::now() < end, "the writer made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_round_trip_under_load_least_privilege_and_force() {
    ensure_services();
    let db = unique("ibs_t");
    let restored = format!("{db}_r");
    let _cleanup = PgDrop(vec![db.clone(), restored.clone()]);
    psql("postgres", &format!("CREATE DATABASE {db}"));
    psql(&db, SCHEMA);
    psql(&db, &format!("INSERT INTO accounts SELECT g, {START_BALANCE} FROM generate_series(1, {ACCOUNTS}) g; \
        CREATE TABLE filler AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 100000) g;"));
    let secret = format!("pg-Secr3t-{:x}", rand::random::<u64>());
    psql("postgres", &format!("DO $$BEGIN CREATE ROLE ibs_test LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END$$; \
        ALTER ROLE ibs_test PASSWORD '{secret}'; GRANT pg_read_all_data TO ibs_test;"));
    let dir = tempfile::tempdir().unwrap();
    let pwfile = dir.path().join("pw");
    std::fs::write(&pwfile, format!("{secret}\n")).unwrap();
    let t = setup(vec![component(serde_json::json!({
        "name": "pg", "kind": "postgres",
        "url": format!("postgresql://ibs_test@127.0.0.1:5432/{db}"),
        "password_file": pwfile.display().to_string(),
    }))])
    .await;

    let mut cmd = Command::new("psql");
    cmd.args([
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        "127.0.0.1",
        "-U",
        "postgres",
        "-d",
        &db,
    ]);
    let w = Writer::start(cmd, "BEGIN;");
    wait_ledger(|| psql(&db, "SELECT count(*) FROM ledger").parse().unwrap());
    let watch = ArgvWatch::start(&secret);
    let b = backup(&t).await;
    let leaked = watch.found();
    let total = w.stop();
    assert_eq!(b.status, JobStatus::Succeeded, "{b:?}");
    assert!(!leaked, "the password appeared in a process's argv");
    let rows = &comp(&b, "pg").exports[0].rows;
    assert_eq!(rows.get("public.filler"), Some(&100_000), "{rows:?}");

    let target = format!("postgresql://postgres@127.0.0.1:5432/{restored}");
    let r = restore(&t, &b.id, "pg", &target, false).await;
    assert_eq!(r.status, JobStatus::Succeeded, "{r:?}");
    let k = assert_committed_prefix(&psql(&restored, CHECK), "postgres");
    eprintln!("postgres: restored a prefix of {k} of {total} transfers");
    assert_eq!(psql(&restored, "SELECT count(*) FROM filler"), "100000");

    // A non-empty target is refused without force, replaced with it.
    let again = restore(&t, &b.id, "pg", &target, false).await;
    assert_eq!(again.status, JobStatus::Failed, "{again:?}");
    assert!(
        comp(&again, "pg")
            .message
            .as_deref()
            .unwrap()
            .contains("not empty"),
        "{again:?}"
    );
    let forced = restore(&t, &b.id, "pg", &target, true).await;
    assert_eq!(forced.status, JobStatus::Succeeded, "{forced:?}");
    assert_eq!(
        assert_committed_prefix(&psql(&restored, CHECK), "postgres forced"),
        k
    );
    assert_no_secret(&[&b, &r, &again, &forced], &secret);
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_round_trip_under_load_and_force() {
    ensure_services();
    let db = unique("ibs_t");
    let restored = format!("{db}_r");
    let _cleanup = MyDrop(vec![db.clone(), restored.clone()]);
    mysql(None, &format!("CREATE DATABASE {db}"));
    mysql(Some(&db), SCHEMA);
    mysql(Some(&db), &format!("INSERT INTO accounts SELECT seq, {START_BALANCE} FROM seq_1_to_{ACCOUNTS}; \
        CREATE TABLE filler (id INT PRIMARY KEY, v VARCHAR(40)) SELECT seq AS id, md5(seq) AS v FROM seq_1_to_100000;"));
    let secret = format!("my-Secr3t-{:x}", rand::random::<u64>());
    mysql(None, &format!("CREATE USER IF NOT EXISTS 'ibs_test'@'%'; ALTER USER 'ibs_test'@'%' IDENTIFIED BY '{secret}'; \
        GRANT SELECT, LOCK TABLES, SHOW VIEW, EVENT, TRIGGER ON `{db}`.* TO 'ibs_test'@'%'; \
        GRANT ALL ON `{restored}`.* TO 'ibs_test'@'%'"));
    std::env::set_var("IBS_TEST_MARIADB_PW", &secret);
    let t = setup(vec![component(serde_json::json!({
        "name": "my", "kind": "mariadb",
        "url": format!("mysql://ibs_test@127.0.0.1:3306/{db}"),
        "password_env": "IBS_TEST_MARIADB_PW",
    }))])
    .await;

    let mut cmd = ibs_testing::db::mariadb();
    cmd.arg(&db);
    let w = Writer::start(cmd, "START TRANSACTION;");
    wait_ledger(|| {
        mysql(Some(&db), "SELECT COUNT(*) FROM ledger")
            .parse()
            .unwrap()
    });
    let watch = ArgvWatch::start(&secret);
    let b = backup(&t).await;
    let leaked = watch.found();
    let total = w.stop();
    assert_eq!(b.status, JobStatus::Succeeded, "{b:?}");
    assert!(!leaked, "the password appeared in a process's argv");
    assert_eq!(
        comp(&b, "my").exports[0].rows.get("`filler`"),
        Some(&100_000),
        "{b:?}"
    );

    let target = format!("mysql://ibs_test@127.0.0.1:3306/{restored}");
    let r = restore(&t, &b.id, "my", &target, false).await;
    assert_eq!(r.status, JobStatus::Succeeded, "{r:?}");
    let k = assert_committed_prefix(&mysql(Some(&restored), CHECK), "mariadb");
    eprintln!("mariadb: restored a prefix of {k} of {total} transfers");

    let again = restore(&t, &b.id, "my", &target, false).await;
    assert_eq!(again.status, JobStatus::Failed, "{again:?}");
    assert!(
        comp(&again, "my")
            .message
            .as_deref()
            .unwrap()
            .contains("not empty"),
        "{again:?}"
    );
    let forced = restore(&t, &b.id, "my", &target, true).await;
    assert_eq!(forced.status, JobStatus::Succeeded, "{forced:?}");
    assert_no_secret(&[&b, &r, &again, &forced], &secret);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_round_trip_into_a_data_folder_with_key_count() {
    ensure_services();
    redis(&["-n", "9", "FLUSHDB"]);
    redis(&[
        "-n",
        "9",
        "EVAL",
        "for i=1,300 do redis.call('SET','k:'..i,'v:'..i) end",
        "0",
    ]);
    let t = setup(vec![component(serde_json::json!({
        "name": "cache", "kind": "redis", "url": "redis://127.0.0.1:6379/9",
    }))])
    .await;
    let b = backup(&t).await;
    assert_eq!(b.status, JobStatus::Succeeded, "{b:?}");
    assert_eq!(comp(&b, "cache").exports[0].keys, Some(300));
    redis(&["-n", "9", "FLUSHDB"]);

    let out = tempfile::tempdir().unwrap();
    let data = out.path().join("data");
    let target = data.display().to_string();
    let r = restore(&t, &b.id, "cache", &target, false).await;
    assert_eq!(r.status, JobStatus::Succeeded, "{r:?}");
    // The restored folder serves the data from a real redis-server.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            &target,
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let p = port.to_string();
    let end = Instant::now() + Duration::from_secs(20);
    let got = loop {
        let o = Command::new("redis-cli")
            .args(["-p", &p, "-n", "9", "GET", "k:123"])
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if s == "v:123" || Instant::now() > end {
            break s;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(got, "v:123");

    let again = restore(&t, &b.id, "cache", &target, false).await;
    assert_eq!(again.status, JobStatus::Failed, "{again:?}");
    let forced = restore(&t, &b.id, "cache", &target, true).await;
    assert_eq!(forced.status, JobStatus::Succeeded, "{forced:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_round_trip_while_a_writer_inserts() {
    ensure_services();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE t (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL);",
    )
    .unwrap();
    drop(conn);
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let (s, n, p) = (stop.clone(), written.clone(), path.clone());
    let writer = std::thread::spawn(move || {
        let c = rusqlite::Connection::open(&p).unwrap();
        c.busy_timeout(Duration::from_secs(30)).unwrap();
        let mut k = 0u64;
        while !s.load(Ordering::Relaxed) {
            k += 1;
            c.execute(
                "INSERT INTO t (seq, payload) VALUES (?1, randomblob(2000))",
                [k as i64],
            )
            .unwrap();
            n.store(k, Ordering::Relaxed);
        }
        k
    });
    wait_ledger(|| written.load(Ordering::Relaxed));
    let t = setup(vec![component(serde_json::json!({
        "name": "app", "kind": "sqlite", "path": path.display().to_string(),
    }))])
    .await;
    let b = backup(&t).await;
    stop.store(true, Ordering::Relaxed);
    let total = writer.join().unwrap();
    assert_eq!(b.status, JobStatus::Succeeded, "{b:?}");

    let target = dir.path().join("restored/app.db");
    let ts = target.display().to_string();
    let r = restore(&t, &b.id, "app", &ts, false).await;
    assert_eq!(r.status, JobStatus::Succeeded, "{r:?}");
    let c = rusqlite::Connection::open(&target).unwrap();
    let (count, max, min): (i64, i64, i64) = c
        .query_row("SELECT COUNT(*), MAX(seq), MIN(seq) FROM t", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert!(
        count >= 20 && count == max && min == 1,
        "not a committed prefix: {count} {min}..{max}"
    );
    assert_eq!(
        comp(&b, "app").exports[0].rows.get("\"t\""),
        Some(&(count as u64))
    );
    eprintln!("sqlite: restored a prefix of {count} of {total} inserts");
    let again = restore(&t, &b.id, "app", &ts, false).await;
    assert_eq!(again.status, JobStatus::Failed, "{again:?}");
    let forced = restore(&t, &b.id, "app", &ts, true).await;
    assert_eq!(forced.status, JobStatus::Succeeded, "{forced:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_components_are_classified_and_the_others_stored() {
    ensure_services();
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("a.txt"), b"kept").unwrap();
    let empty = tempfile::tempdir().unwrap();
    let old = tempfile::tempdir().unwrap();
    let fake = old.path().join("pg_dump");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'pg_dump: error: aborting because of server version mismatch' >&2\n\
        echo 'pg_dump: detail: server version: 99.0; pg_dump version: 15.0' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let wrong = format!("wr0ng-{:x}", rand::random::<u64>());
    mysql(None, "CREATE USER IF NOT EXISTS 'ibs_test'@'%'");
    std::env::set_var("IBS_TEST_WRONG_PW", &wrong);
    let t = setup(vec![
        ibs_controller::testing::files("etc", &[files.path()]),
        component(serde_json::json!({"name": "pg_down", "kind": "postgres", "url": "postgresql://postgres@127.0.0.1:1/postgres"})),
        component(serde_json::json!({"name": "pg_norole", "kind": "postgres", "url": "postgresql://ibs_no_such_role@127.0.0.1:5432/postgres"})),
        component(serde_json::json!({"name": "my_badpw", "kind": "mariadb", "url": "mysql://ibs_test@127.0.0.1:3306/mysql", "password_env": "IBS_TEST_WRONG_PW"})),
        component(serde_json::json!({"name": "pg_notool", "kind": "postgres", "url": "postgresql://postgres@127.0.0.1:5432/postgres", "tool_dir": empty.path().display().to_string()})),
        component(serde_json::json!({"name": "pg_oldtool", "kind": "postgres", "url": "postgresql://postgres@127.0.0.1:5432/postgres", "tool_dir": old.path().display().to_string()})),
        component(serde_json::json!({"name": "redis_down", "kind": "redis", "url": "redis://127.0.0.1:1/0"})),
    ])
    .await;
    let b = backup(&t).await;
    assert_eq!(b.status, JobStatus::PartialSucceeded, "{b:#?}");
    assert_status(&b, "etc", JobStatus::Succeeded);
    assert!(comp(&b, "etc").bytes >= 4);
    for (name, cause) in [
        ("pg_down", Cause::Unreachable),
        ("pg_norole", Cause::Authentication),
        ("my_badpw", Cause::Authentication),
        ("pg_notool", Cause::MissingTool),
        ("pg_oldtool", Cause::IncompatibleVersion),
        ("redis_down", Cause::Unreachable),
    ] {
        let c = comp(&b, name);
        assert_eq!(c.status, JobStatus::Failed, "{c:?}");
        assert_eq!(c.cause, Some(cause), "{c:?}");
        let m = c.message.as_deref().unwrap();
        assert!(
            m.contains(&format!("component {name}: {}", cause.as_str())),
            "{m}"
        );
    }
    assert_no_secret(&[&b], &wrong);
    // The stored component restores.
    let out = tempfile::tempdir().unwrap();
    let r = restore(
        &t,
        &b.id,
        "etc",
        &out.path().join("etc").display().to_string(),
        false,
    )
    .await;
    assert_eq!(r.status, JobStatus::Succeeded, "{r:?}");
    assert_eq!(
        std::fs::read(out.path().join("etc/a.txt")).unwrap(),
        b"kept"
    );
}
