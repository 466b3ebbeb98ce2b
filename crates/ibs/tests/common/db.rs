//! The database servers of the tests: started by scripts/ensure-services.sh (once per test binary;
//! a server that cannot be started fails the test), and `psql` as the postgres superuser.

use std::process::Command;
use std::sync::Once;

pub fn ensure_services() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../scripts/ensure-services.sh");
        let out = Command::new("bash").arg(script).output().unwrap();
        assert!(
            out.status.success(),
            "the test servers are not available: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// Runs one SQL command on `db`; panics with the error on failure. Returns the unaligned output.
pub fn psql(db: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            db,
            "-c",
            sql,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
