//! A database component end to end through the real binary and the real PostgreSQL server:
//! `ibs serve` with a `postgres` component whose password comes from the environment, a backup,
//! `ibs restore ID --component pg --target URL` into a new database (row counts verified), a
//! second restore refused without `--force` and accepted with it, and the password absent from
//! the server's log and the job records.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_ibs");

use ibs_testing::db::{ensure_services, psql, PgDrop};

/// Kills the daemon, then (its fields dropping) the scratch databases.
struct Cleanup {
    _dbs: PgDrop,
    daemon: Option<Child>,
}
impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(c) = self.daemon.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn postgres_component_backup_and_restore_through_the_cli() {
    ensure_services();
    let db = format!("ibs_e2e_{:08x}", rand::random::<u32>());
    let restored = format!("{db}_r");
    let mut cleanup = Cleanup {
        _dbs: PgDrop(vec![db.clone(), restored.clone()]),
        daemon: None,
    };
    psql("postgres", &format!("CREATE DATABASE {db}"));
    psql(
        &db,
        "CREATE TABLE items AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 5000) g",
    );
    let secret = format!("e2e-Secr3t-{:x}", rand::random::<u64>());

    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("ibs.toml");
    std::fs::write(
        &config,
        format!(
            "[[component]]\nname = \"pg\"\nkind = \"postgres\"\nurl = \"postgresql://postgres@127.0.0.1:5432/{db}\"\npassword_env = \"IBS_E2E_PG_PW\"\n"
        ),
    )
    .unwrap();
    let data = tmp.path().join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log_path = tmp.path().join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    cleanup.daemon = Some(
        Command::new(BIN)
            .args(["serve", "--data"])
            .arg(&data)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--config"])
            .arg(&config)
            .env("IBS_LOG", "debug")
            .env("IBS_E2E_PG_PW", &secret)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let end = Instant::now() + Duration::from_secs(180);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "ibs serve did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Bootstrap (certificate generation) may still run: wait for the .pfx password file.
    let pw_file = data.join("certs/ibs-backup.pfx.password");
    while !pw_file.exists() {
        assert!(Instant::now() < end, "bootstrap did not finish");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    let token = Command::new(BIN)
        .args(["token", "create", "--role", "admin", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let token = String::from_utf8_lossy(&token.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string();
    let ibs = |args: &[&str]| -> Output {
        Command::new(BIN)
            .args(args)
            .env("IBS_SERVER", format!("http://127.0.0.1:{port}"))
            .env("IBS_TOKEN", &token)
            .env(
                "IBS_PFX_PASSWORD",
                std::fs::read_to_string(data.join("certs/ibs-backup.pfx.password"))
                    .unwrap()
                    .trim(),
            )
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    // The first (scheduled) backup may be running: retry until the on-demand one starts.
    let end = Instant::now() + Duration::from_secs(120);
    let out = loop {
        let out = ibs(&["backup", "start", "--wait"]);
        if out.status.code() != Some(6) || Instant::now() > end {
            break out;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string();

    let pfx = data.join("certs/ibs-backup.pfx");
    let target = format!("postgresql://postgres@127.0.0.1:5432/{restored}");
    let restore = |force: bool| {
        let mut a = vec![
            "restore",
            &id,
            "--component",
            "pg",
            "--target",
            &target,
            "--pfx",
            pfx.to_str().unwrap(),
            "--json",
        ];
        if force {
            a.push("--force");
        }
        ibs(&a)
    };
    let out = restore(false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(psql(&restored, "SELECT count(*) FROM items"), "5000");
    assert!(String::from_utf8_lossy(&out.stdout).contains("rows verified"));
    let again = restore(false);
    assert!(!again.status.success(), "a non-empty target needs --force");
    assert!(String::from_utf8_lossy(&again.stdout).contains("not empty"));
    let forced = restore(true);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert_eq!(psql(&restored, "SELECT count(*) FROM items"), "5000");

    let jobs = ibs(&["backup", "list", "--json"]);
    for text in [
        String::from_utf8_lossy(&jobs.stdout).into_owned(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&again.stdout).into_owned(),
        std::fs::read_to_string(&log_path).unwrap(),
    ] {
        assert!(!text.contains(&secret), "the password leaked: {text}");
    }
}
