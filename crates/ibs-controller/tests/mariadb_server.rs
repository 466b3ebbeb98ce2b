//! The `mariadb` kind in all-databases mode (a URL without a database): every database, with its
//! routines and the server's accounts, backed up from one private server and restored into a
//! second, fresh one. Private servers (`mariadb-install-db` into temporary folders, `mariadbd` on
//! free ports) keep this test away from the shared server, whose `mysql` schema an all-databases
//! restore would replace while other tests use it.

mod support;

use ibs_controller::model::JobStatus;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// A throwaway MariaDB server; killed on drop (its folder goes with the test's temp dir).
struct Server {
    child: Child,
    port: u16,
}

fn server_bin() -> PathBuf {
    [
        "/usr/sbin/mariadbd",
        "/usr/bin/mariadbd",
        "/usr/sbin/mysqld",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .expect("mariadbd (Debian package mariadb-server) must be installed")
}

impl Server {
    fn start(parent: &Path, name: &str) -> Server {
        let dir = parent.join(name);
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        let out = Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                "--user=root",
                "--auth-root-authentication-method=normal",
            ])
            .arg(format!("--datadir={}", data.display()))
            .output()
            .expect("mariadb-install-db (Debian package mariadb-server) must be installed");
        assert!(
            out.status.success(),
            "mariadb-install-db: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let child = Command::new(server_bin())
            .args([
                "--no-defaults",
                "--user=root",
                "--bind-address=127.0.0.1",
                "--skip-log-bin",
            ])
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", dir.join("sock").display()))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .arg(format!("--port={port}"))
            .arg(format!("--log-error={}", dir.join("log").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd");
        let s = Server { child, port };
        let end = Instant::now() + Duration::from_secs(60);
        while s.try_sql(None, "SELECT 1").is_err() {
            assert!(
                Instant::now() < end,
                "the private MariaDB server did not start: {}",
                std::fs::read_to_string(dir.join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        s
    }

    fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    fn try_sql(&self, db: Option<&str>, sql: &str) -> Result<String, String> {
        let mut c = Command::new("mariadb");
        c.args([
            "--no-defaults",
            "-h",
            "127.0.0.1",
            "--protocol=tcp",
            "--user=root",
            "-N",
            "-B",
        ])
        .arg(format!("--port={}", self.port))
        .args(["-e", sql]);
        if let Some(db) = db {
            c.arg(db);
        }
        let out = c.output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn sql(&self, db: Option<&str>, sql: &str) -> String {
        self.try_sql(db, sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn all_databases_with_routines_and_accounts_restore_into_a_fresh_server() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Server::start(tmp.path(), "a");
    a.sql(None, "CREATE DATABASE shop; CREATE DATABASE `odd name`;");
    a.sql(
        Some("shop"),
        "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(40)); \
        INSERT INTO items SELECT seq, CONCAT('item ', seq) FROM seq_1_to_5000; \
        CREATE PROCEDURE item_count() SELECT COUNT(*) FROM items;",
    );
    a.sql(
        Some("odd name"),
        "CREATE TABLE t (k INT PRIMARY KEY); INSERT INTO t SELECT seq FROM seq_1_to_77;",
    );
    // A database and a table whose names read as SQL: the dump quotes them; the verification
    // must count them without ever pasting them into SQL.
    let hostile = "q`; DROP DATABASE shop; --";
    a.sql(
        None,
        "CREATE DATABASE `q``; DROP DATABASE shop; --`; \
         CREATE TABLE `q``; DROP DATABASE shop; --`.`new\nline` (k INT); \
         INSERT INTO `q``; DROP DATABASE shop; --`.`new\nline` VALUES (1), (2), (3);",
    );
    // mariadb-install-db leaves anonymous accounts, which would shadow 'shop_app'@'%' for local
    // logins; remove them as mariadb-secure-installation does.
    a.sql(None, "DELETE FROM mysql.global_priv WHERE User = ''; FLUSH PRIVILEGES; \
        CREATE USER 'shop_app'@'%' IDENTIFIED BY 'app-pw-1'; GRANT SELECT, INSERT ON shop.* TO 'shop_app'@'%';");

    let t = setup(vec![component(serde_json::json!({
        "name": "all", "kind": "mariadb", "url": a.url(),
    }))])
    .await;
    let b = backup(&t).await;
    assert_eq!(b.status, JobStatus::Succeeded, "{b:?}");
    let rows = &comp(&b, "all").exports[0].rows;
    assert!(
        rows.values().any(|&n| n == 5000) && rows.values().any(|&n| n == 77),
        "{rows:?}"
    );
    assert_eq!(
        rows.get("`q``; DROP DATABASE shop; --`.`new\nline`"),
        Some(&3),
        "{rows:?}"
    );

    let fresh = Server::start(tmp.path(), "b");
    // Replacing every database of a server needs force; a URL naming one database is refused.
    let refused = restore(&t, &b.id, "all", &fresh.url(), false).await;
    assert_eq!(refused.status, JobStatus::Failed, "{refused:?}");
    assert!(
        comp(&refused, "all")
            .message
            .as_deref()
            .unwrap()
            .contains("--force"),
        "{refused:?}"
    );
    let one = restore(&t, &b.id, "all", &format!("{}/shop", fresh.url()), true).await;
    assert_eq!(one.status, JobStatus::Failed, "{one:?}");
    assert_eq!(
        fresh.sql(
            None,
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'shop'"
        ),
        "0"
    );

    let r = restore(&t, &b.id, "all", &fresh.url(), true).await;
    assert_eq!(r.status, JobStatus::Succeeded, "{r:?}");
    assert_eq!(
        fresh.sql(Some("shop"), "SELECT COUNT(*), MAX(name) FROM items"),
        "5000\titem 999"
    );
    assert_eq!(fresh.sql(Some("odd name"), "SELECT SUM(k) FROM t"), "3003");
    assert_eq!(
        fresh.sql(Some(hostile), "SELECT COUNT(*) FROM `new\nline`"),
        "3"
    );
    assert_eq!(fresh.sql(Some("shop"), "CALL item_count()"), "5000");
    // The account and its grant came back and work.
    let grants = fresh.sql(None, "SHOW GRANTS FOR 'shop_app'@'%'");
    assert!(
        grants.contains("GRANT SELECT, INSERT ON `shop`.*"),
        "{grants}"
    );
    let out = Command::new("mariadb")
        .args([
            "--no-defaults",
            "-h",
            "127.0.0.1",
            "--protocol=tcp",
            "--user=shop_app",
            "-N",
            "-B",
        ])
        .env("MYSQL_PWD", "app-pw-1")
        .arg(format!("--port={}", fresh.port))
        .args(["-e", "SELECT COUNT(*) FROM shop.items"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "shop_app cannot log in: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "5000");
}
