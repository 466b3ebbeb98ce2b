//! The `postgres` kind in all-databases mode (a URL without a database): globals (roles) plus every
//! database, backed up from one private cluster and restored into a second, fresh one — the
//! "restore to a fresh cluster" case. Private clusters (initdb as the `postgres` user, on free
//! ports, sockets in their own folders) keep this test away from the shared server, where other
//! tests create and drop databases while an all-databases dump would run.

mod support;

use ibs_controller::model::JobStatus;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::*;

/// A throwaway PostgreSQL cluster; stopped and removed on drop.
struct Cluster {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
}

fn pg_bin() -> PathBuf {
    let out = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .expect("pg_config (PostgreSQL client tools) must be installed");
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if dir.join("initdb").is_file() {
        return dir;
    }
    // Debian keeps the server tools under /usr/lib/postgresql/VERSION/bin.
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").is_file())
        .collect();
    found.sort();
    found.pop().expect("initdb not found")
}

fn as_postgres(bin: &Path, tool: &str, args: &[&str]) {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin.join(tool))
        .args(args)
        .output()
        .expect("runuser");
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Cluster {
    fn start(parent: &Path, name: &str) -> Cluster {
        let bin = pg_bin();
        let dir = parent.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(parent)
            .status()
            .unwrap();
        assert!(status.success());
        let data = dir.join("data");
        let data_s = data.to_str().unwrap();
        as_postgres(
            &bin,
            "initdb",
            &["-D", data_s, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        );
        let port = free_port();
        let opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            dir.display()
        );
        let log = dir.join("log");
        as_postgres(
            &bin,
            "pg_ctl",
            &[
                "-D",
                data_s,
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        Cluster { dir, port, bin }
    }

    fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}", self.port)
    }

    fn psql(&self, db: &str, sql: &str) -> String {
        ibs_testing::db::psql_db(self.port, db, sql)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn all_databases_with_roles_restore_into_a_fresh_cluster() {
    ensure_services();
    let root = tempfile::Builder::new()
        .prefix("ibs-pg-cluster-")
        .tempdir_in("/tmp")
        .unwrap();
    let a = Cluster::start(root.path(), "a");
    // One statement per call: psql -c runs a multi-statement string as one transaction.
    for sql in [
        "CREATE ROLE app_reader LOGIN",
        "CREATE DATABASE shop",
        "CREATE DATABASE \"crm db\"",
    ] {
        a.psql("postgres", sql);
    }
    a.psql(
        "shop",
        "CREATE TABLE orders AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 5000) g; \
         GRANT SELECT ON orders TO app_reader;",
    );
    a.psql(
        "crm db",
        "CREATE TABLE contacts AS SELECT g AS id FROM generate_series(1, 1234) g;",
    );

    let t = setup(vec![component(serde_json::json!({
        "name": "pg", "kind": "postgres", "url": a.url(),
    }))])
    .await;
    let b = backup(&t).await;
    assert_eq!(b.status, JobStatus::Succeeded, "{b:?}");
    let c = comp(&b, "pg");
    let mut sources = c.sources.clone();
    sources.sort();
    assert!(
        sources.contains(&"pg.globals".to_string())
            && sources.contains(&"pg.db-shop".to_string())
            && sources.contains(&"pg.db-postgres".to_string())
            && sources.iter().any(|s| s.starts_with("pg.db-crm")),
        "globals plus one source per database: {sources:?}"
    );

    // A fresh cluster: the globals (the role) and every database come back under their own names.
    let fresh = Cluster::start(root.path(), "b");
    let r = restore(&t, &b.id, "pg", &fresh.url(), false).await;
    assert_eq!(r.status, JobStatus::Succeeded, "{r:?}");
    assert_eq!(fresh.psql("shop", "SELECT count(*) FROM orders"), "5000");
    assert_eq!(
        fresh.psql("crm db", "SELECT count(*) FROM contacts"),
        "1234"
    );
    assert_eq!(
        fresh.psql(
            "postgres",
            "SELECT count(*) FROM pg_roles WHERE rolname = 'app_reader' AND rolcanlogin"
        ),
        "1",
        "the role came back with the globals"
    );
    assert_eq!(
        fresh.psql(
            "shop",
            "SELECT has_table_privilege('app_reader', 'orders', 'SELECT')"
        ),
        "t",
        "grants came back with the database"
    );

    // A target naming one database is refused for a backup holding several.
    let one = restore(&t, &b.id, "pg", &format!("{}/x", fresh.url()), false).await;
    assert_eq!(one.status, JobStatus::Failed, "{one:?}");
    assert!(
        comp(&one, "pg")
            .message
            .as_deref()
            .unwrap_or("")
            .contains("databases"),
        "{one:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn all_databases_mode_is_not_redirected_by_database_names() {
    ensure_services();
    let root = tempfile::Builder::new()
        .prefix("ibs-pg-cluster-")
        .tempdir_in("/tmp")
        .unwrap();
    let a = Cluster::start(root.path(), "a");
    let trap = Trap::start();
    // Listed by `SELECT datname`; as `-d NAME`, libpq would read these as connection strings.
    let kv = format!("host=127.0.0.1 port={} dbname=x", trap.port);
    let uri = format!("postgresql://127.0.0.1:{}/x", trap.port);
    let nl = "two\nlines".to_string();
    for (name, n) in [(&kv, 5), (&uri, 7), (&nl, 3)] {
        a.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        a.psql(
            name,
            &format!("CREATE TABLE items AS SELECT generate_series(1, {n}) AS id"),
        );
    }
    let t = setup(vec![component(serde_json::json!({
        "name": "pg", "kind": "postgres", "url": a.url(),
    }))])
    .await;
    let b = backup(&t).await;
    assert_eq!(
        trap.hits(),
        0,
        "a database name sent pg_dump to the trap: {b:?}"
    );
    assert_eq!(b.status, JobStatus::Succeeded, "{b:?}");
    let c = comp(&b, "pg");
    for (name, n) in [(&kv, 5u64), (&uri, 7), (&nl, 3)] {
        let e = c
            .exports
            .iter()
            .find(|e| e.database.as_deref() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("no export of {name:?}: {c:?}"));
        assert_eq!(e.rows.get("public.items"), Some(&n), "{e:?}");
    }

    // Back into the same cluster, under the same names.
    for name in [&kv, &uri, &nl] {
        a.psql("postgres", &format!("DROP DATABASE \"{name}\""));
    }
    let r = restore(&t, &b.id, "pg", &a.url(), false).await;
    assert_eq!(trap.hits(), 0, "the restore went to the trap: {r:?}");
    assert_eq!(r.status, JobStatus::Succeeded, "{r:?}");
    for (name, n) in [(&kv, "5"), (&uri, "7"), (&nl, "3")] {
        assert_eq!(a.psql(name, "SELECT count(*) FROM items"), n);
    }
}
