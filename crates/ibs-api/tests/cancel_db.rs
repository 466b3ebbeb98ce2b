//! Canceling a backup that is blocked inside a real database export, through the API over a real
//! controller: another session holds an exclusive lock on a table, so the real `pg_dump` (or
//! `mariadb-dump`) waits on the server and writes nothing the engine could read. The cancel must
//! still stop the job within seconds: the job ends `Canceled`, the export tool is killed (no process
//! left), nothing is committed, and once the lock is released the next backup succeeds with every
//! row.

use axum::http::{Method, StatusCode};
use ibs_testing::db::{ensure_services, mariadb, mysql, psql, unique, MyDrop, PgDrop};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod support;
use support::{tool_processes, wait_until, Api};

/// A session holding a lock until it is dropped: the client is killed, then `end` ends its
/// server-side session (a server does not notice a gone client while it sleeps).
struct Holder(Child, Box<dyn Fn()>);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        (self.1)();
    }
}

/// An API over a controller with database component `component`, a location, and nothing else.
async fn api_with(component: Value) -> Api {
    let c: ibs_controller::component::ComponentConfig = serde_json::from_value(component).unwrap();
    let a = Api::with(vec![c]);
    a.use_location("/mem/share").await;
    a
}

/// Starts a backup, waits until `blocked` says the export waits on the lock, cancels it, and checks
/// the job ends `Canceled` within seconds with the export tool `tool` gone.
async fn cancel_blocked_backup(a: &Api, tool: &str, db: &str, blocked: impl Fn() -> bool) {
    let (s, started) = a
        .call(Method::POST, "/api/v1/backups", &a.operator, None)
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    wait_until(&format!("{tool} to wait on the lock"), &blocked).await;
    assert!(
        !tool_processes(tool, &[db]).is_empty(),
        "{tool} runs for {db}"
    );
    // Blocked: still running a moment later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(a.job(&id).await["status"], "Running");

    let (j, took) = a.cancel_and_wait(&id).await;
    assert_eq!(j["status"], "Canceled", "{j}");
    assert!(
        j["error"].as_str().unwrap().starts_with("canceled by "),
        "{j}"
    );
    assert!(took < Duration::from_secs(10), "stopped in {took:?}");
    wait_until(&format!("{tool} to be gone"), || {
        tool_processes(tool, &[db]).is_empty()
    })
    .await;
    let (_, backups) = a
        .call(Method::GET, "/api/v1/backups", &a.reader, None)
        .await;
    assert!(
        backups
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["status"] != "Succeeded"),
        "nothing committed: {backups}"
    );
}

/// Backs up again (the lock released) and returns the job record, which must be Succeeded.
async fn backup_succeeds(a: &Api) -> Value {
    let (job_rec, handle) = a.t.ctl.start_backup().unwrap();
    handle.await.unwrap();
    let j = a.job(&job_rec.id).await;
    assert_eq!(j["status"], "Succeeded", "{j}");
    j
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_a_backup_blocked_in_pg_dump_on_a_locked_table() {
    ensure_services();
    let db = unique("ibs_cancel_pg");
    let _drop = PgDrop(vec![db.clone()]);
    psql("postgres", &format!("CREATE DATABASE {db}"));
    psql(
        &db,
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 5000) g",
    );
    let a = api_with(json!({
        "name": "pg", "kind": "postgres",
        "url": format!("postgresql://postgres@127.0.0.1:5432/{db}"),
    }))
    .await;

    // Another session takes the table for itself and keeps it.
    let holder = Holder(
        Command::new("psql")
            .args(["-X", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", &db])
            .args([
                "-c",
                "BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(600);",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        Box::new(|| {
            psql(
                "postgres",
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE query LIKE '%LOCK TABLE t IN ACCESS EXCLUSIVE MODE%' \
                 AND pid <> pg_backend_pid()",
            );
        }),
    );
    let locked = "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
         WHERE c.relname = 't' AND l.mode = 'AccessExclusiveLock' AND l.granted";
    wait_until("the exclusive lock", || psql(&db, locked) == "1").await;
    let waiting = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' \
         AND application_name = 'pg_dump' AND wait_event_type = 'Lock'"
    );
    cancel_blocked_backup(&a, "pg_dump", &db, || psql("postgres", &waiting) == "1").await;

    drop(holder);
    let j = backup_succeeds(&a).await;
    assert_eq!(j["components"][0]["status"], "Succeeded", "{j}");
    assert!(j.to_string().contains("5000"), "every row exported: {j}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_a_backup_blocked_in_mariadb_dump_on_a_locked_table() {
    ensure_services();
    let db = unique("ibs_cancel_my");
    let _drop = MyDrop(vec![db.clone()]);
    mysql(None, &format!("CREATE DATABASE {db}"));
    mysql(
        Some(&db),
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40)) ENGINE=InnoDB; \
         INSERT INTO t SELECT seq, md5(seq) FROM seq_1_to_5000",
    );
    let a = api_with(json!({
        "name": "my", "kind": "mariadb",
        "url": format!("mysql://root@127.0.0.1:3306/{db}"),
    }))
    .await;

    let holder = Holder(
        mariadb()
            .args([
                "-e",
                &format!("LOCK TABLES {db}.t WRITE; SELECT SLEEP(600);"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        Box::new(|| {
            let ids = mysql(
                None,
                "SELECT id FROM information_schema.processlist WHERE info LIKE 'SELECT SLEEP(600)%'",
            );
            for id in ids.split_whitespace() {
                let _ = mariadb().args(["-e", &format!("KILL {id}")]).output();
            }
        }),
    );
    wait_until("the write lock", || {
        mysql(
            None,
            "SELECT count(*) FROM information_schema.processlist WHERE info LIKE 'SELECT SLEEP(600)%'",
        ) != "0"
    })
    .await;
    let waiting = format!(
        "SELECT count(*) FROM information_schema.processlist WHERE db = '{db}' \
         AND state LIKE 'Waiting for table metadata lock%'"
    );
    cancel_blocked_backup(&a, "mariadb-dump", &db, || mysql(None, &waiting) != "0").await;

    drop(holder);
    // The server side of the killed dump may wait for the lock a moment longer; it holds none.
    let j = backup_succeeds(&a).await;
    assert_eq!(j["components"][0]["status"], "Succeeded", "{j}");
    assert!(j.to_string().contains("5000"), "every row exported: {j}");
}
