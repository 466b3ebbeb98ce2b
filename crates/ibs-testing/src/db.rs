//! The database servers of the tests, reached through their own clients: PostgreSQL on
//! 127.0.0.1:5432 (`postgres`, trust), MariaDB on 127.0.0.1:3306 (root, no password) and Redis on
//! 127.0.0.1:6379. [`ensure_services`] starts them through `scripts/ensure-services.sh` once per
//! test process; a server that cannot be started fails the test, it never skips. [`PgDrop`] and
//! [`MyDrop`] are the scratch-database guards: what they name is dropped when the test ends, however
//! it ends.

use std::process::Command;
use std::sync::Once;

pub const PG: &str = "127.0.0.1:5432";
pub const MY: &str = "127.0.0.1:3306";

/// Starts the servers if needed, once per process; panics (fails the test) if one cannot start.
pub fn ensure_services() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let script = crate::workspace_root().join("scripts/ensure-services.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .expect("running scripts/ensure-services.sh");
        assert!(
            out.status.success(),
            "the test servers are not available: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// A database name unique to this run: `PREFIX_` and ten random hex digits.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{:010x}", rand::random::<u64>() & 0xff_ffff_ffff)
}

/// Runs `cmd`; panics with its stderr when it fails. Returns stdout as it came.
fn run_raw(cmd: &mut Command) -> String {
    let out = cmd.output().expect("client tool");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run(cmd: &mut Command) -> String {
    run_raw(cmd).trim().to_string()
}

fn psql_cmd() -> Command {
    let mut c = Command::new("psql");
    c.args([
        "-X",
        "-q",
        "-At",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        "127.0.0.1",
    ]);
    c
}

/// Runs SQL in PostgreSQL database `db` as `postgres`; the unaligned output, trimmed.
pub fn psql(db: &str, sql: &str) -> String {
    psql_raw(db, sql).trim().to_string()
}

/// [`psql`] with the output exactly as `psql -At` printed it (trailing newline kept).
pub fn psql_raw(db: &str, sql: &str) -> String {
    run_raw(psql_cmd().args(["-U", "postgres", "-d", db, "-c", sql]))
}

/// Runs SQL in PostgreSQL database `db` (on `port`) as `postgres`; the name goes in `PGDATABASE`,
/// which libpq takes literally, so hostile names can be set up.
pub fn psql_db(port: u16, db: &str, sql: &str) -> String {
    run(psql_cmd()
        .args(["-p", &port.to_string(), "-U", "postgres", "-c", sql])
        .env("PGDATABASE", db))
}

/// The `mariadb` client as root on the test server over TCP, options files ignored.
pub fn mariadb() -> Command {
    let mut c = Command::new("mariadb");
    c.args([
        "--no-defaults",
        "-h",
        "127.0.0.1",
        "--port=3306",
        "--protocol=tcp",
        "--user=root",
    ]);
    c
}

/// Runs SQL in MariaDB (database `db` if given) as root; tab-separated rows, trimmed.
pub fn mysql(db: Option<&str>, sql: &str) -> String {
    let mut c = mariadb();
    c.args(["-N", "-B", "-e", sql]);
    if let Some(db) = db {
        c.arg(db);
    }
    run(&mut c)
}

/// Runs one `redis-cli` command against the test Redis; its output, trimmed.
pub fn redis(args: &[&str]) -> String {
    run(Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379"])
        .args(args))
}

/// `pg_dump --format=plain` of `db`: the bytes a stream source would read.
pub fn pg_dump(db: &str) -> Vec<u8> {
    let out = Command::new("pg_dump")
        .args([
            "--format=plain",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            db,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Drops these PostgreSQL databases (with `FORCE`) when it goes out of scope.
pub struct PgDrop(pub Vec<String>);

impl Drop for PgDrop {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = Command::new("psql")
                .args(["-X", "-q", "-h", "127.0.0.1", "-U", "postgres"])
                .args(["-d", "postgres", "-c"])
                .arg(format!("DROP DATABASE IF EXISTS \"{d}\" WITH (FORCE)"))
                .output();
        }
    }
}

/// Drops these MariaDB databases when it goes out of scope.
pub struct MyDrop(pub Vec<String>);

impl Drop for MyDrop {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = mariadb()
                .arg("-e")
                .arg(format!("DROP DATABASE IF EXISTS `{d}`"))
                .output();
        }
    }
}
