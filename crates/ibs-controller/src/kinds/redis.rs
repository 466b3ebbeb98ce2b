//! The `redis` kind: a point-in-time RDB snapshot through the replication protocol
//! (`redis-cli --rdb -` writes it to stdout; the server forks and serialises one instant). Just
//! before, `DBSIZE` of the URL's database (default 0) is recorded as the expected key count. One
//! source named after the component, file `dump.rdb`. The RDB holds every database of the instance.
//!
//! Restore target: a Redis **data folder** (absolute path) of the instance to bring back. A running
//! Redis cannot load an RDB over the network, so the restore writes `dump.rdb` into that folder
//! (refused if one is there, unless `force`), then verifies it: a scratch `redis-server` on a free
//! loopback port loads the file from that folder (no persistence), and its key count for the
//! component's database must equal the count recorded at backup time. The operator then starts
//! (or restarts) the real instance with `dir` set to that folder and `dbfilename dump.rdb`.
//! Under concurrent writes the count recorded just before the snapshot can differ from the
//! snapshot's; the verification then fails and says so.

use super::{
    BackupPlan, Cause, ComponentError, ConnUrl, ExportInfo, ExportReader, PlannedExport,
    RestoreTarget, Secret, ServiceSpec, SharedLog, Tool,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const SCHEMES: &[&str] = &["redis"];

fn cli(comp: &str, spec: &ServiceSpec, url: &ConnUrl, secret: &Secret) -> Tool {
    let mut t = Tool::new(comp, spec.tool_dir.as_deref(), "redis-cli")
        .secret("REDISCLI_AUTH", secret)
        .args(["-h", &url.host]);
    t = t.args(["-p".to_string(), url.port.unwrap_or(6379).to_string()]);
    if let Some(u) = &url.user {
        t = t.args(["--user", u]);
    }
    t
}

/// The database number of the URL (default 0).
pub fn db_number(url: &ConnUrl) -> Result<u32, String> {
    match &url.name {
        None => Ok(0),
        Some(n) => n
            .parse()
            .map_err(|_| format!("redis database {n:?} is not a number")),
    }
}

/// Runs `DBSIZE`; redis-cli may exit 0 after an error reply, so the reply itself is checked.
fn dbsize(comp: &str, t: Tool) -> Result<u64, ComponentError> {
    let out = t.arg("DBSIZE").run(None)?;
    out.trim().parse::<u64>().map_err(|_| {
        ComponentError::new(
            comp,
            Cause::classify(&out),
            format!(
                "DBSIZE answered {:?}",
                out.trim().chars().take(200).collect::<String>()
            ),
        )
    })
}

pub fn plan(comp: &str, spec: &ServiceSpec, log: SharedLog) -> Result<BackupPlan, ComponentError> {
    let secret = spec.secret(comp)?;
    let url = spec.url.clone();
    let db = db_number(&url).map_err(|e| ComponentError::new(comp, Cause::Other, e))?;
    let probe = cli(comp, spec, &url, &secret).args(["-n".to_string(), db.to_string()]);
    let info = ExportInfo {
        source: comp.into(),
        file: "dump.rdb".into(),
        content: "rdb".into(),
        database: Some(db.to_string()),
        ..Default::default()
    };
    let c = comp.to_string();
    let reader = ExportReader::new(
        cli(comp, spec, &url, &secret).args(["--rdb", "-"]),
        info,
        None,
        log.clone(),
    )
    .prepare(move |info| {
        info.keys = Some(dbsize(&c, probe)?);
        Ok(())
    });
    Ok(BackupPlan {
        exports: vec![PlannedExport {
            source: comp.into(),
            file: "dump.rdb".into(),
            reader: Box::new(reader),
        }],
        log,
    })
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Kills the scratch server however verification ends.
struct Scratch(std::process::Child);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Loads `dir/dump.rdb` in a scratch server and returns the key count of database `db`.
pub fn count_keys_in(
    comp: &str,
    tool_dir: Option<&Path>,
    dir: &Path,
    db: u32,
) -> Result<u64, ComponentError> {
    let other = |d: String| ComponentError::new(comp, Cause::Other, d);
    let port = free_port().map_err(|e| other(format!("no free port: {e}")))?;
    let server = match tool_dir {
        Some(d) => d.join("redis-server"),
        None => PathBuf::from("redis-server"),
    };
    let child = std::process::Command::new(&server)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(dir)
        .args([
            "--dbfilename",
            "dump.rdb",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--daemonize", "no", "--logfile", ""])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| {
            ComponentError::new(
                comp,
                Cause::MissingTool,
                format!("cannot start {}: {e}", server.display()),
            )
        })?;
    let _scratch = Scratch(child);
    let url = ConnUrl {
        scheme: "redis".into(),
        user: None,
        host: "127.0.0.1".into(),
        port: Some(port),
        name: None,
    };
    let spec = ServiceSpec {
        url: url.clone(),
        password: super::PasswordSource::None,
        tool_dir: tool_dir.map(Path::to_path_buf),
    };
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let t = cli(comp, &spec, &url, &Secret::default()).args(["-n".to_string(), db.to_string()]);
        match dbsize(comp, t) {
            Ok(n) => return Ok(n),
            Err(e) if Instant::now() > end => {
                return Err(other(format!(
                    "the scratch server did not load dump.rdb: {e}"
                )))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

pub fn restore(
    comp: &str,
    spec: &ServiceSpec,
    exports: &[ExportInfo],
    staged: &Path,
    target: &RestoreTarget,
) -> Result<String, ComponentError> {
    let other = |d: String| ComponentError::new(comp, Cause::Other, d);
    let e = exports
        .first()
        .ok_or_else(|| other("the backup recorded no export".into()))?;
    let dir = PathBuf::from(
        target
            .target
            .strip_prefix("file://")
            .unwrap_or(&target.target),
    );
    if !dir.is_absolute() {
        return Err(other(
            "the target of a redis component is the data folder (an absolute path) of the instance to restore".into(),
        ));
    }
    std::fs::create_dir_all(&dir).map_err(|x| other(format!("{}: {x}", dir.display())))?;
    let dest = dir.join("dump.rdb");
    if dest.exists() && !target.force {
        return Err(other(format!(
            "{} exists (the target instance is not empty); use --force to replace it",
            dest.display()
        )));
    }
    let file = super::staged_file(staged, e).map_err(&other)?;
    super::copy_into_place(&file, &dest).map_err(&other)?;
    let db: u32 = e.database.as_deref().unwrap_or("0").parse().unwrap_or(0);
    let found = count_keys_in(comp, spec.tool_dir.as_deref(), &dir, db)?;
    match e.keys {
        Some(k) if k != found => Err(other(format!(
            "verification failed: database {db} had {k} keys at backup, the restored dump.rdb holds {found}"
        ))),
        _ => Ok(format!("{}: {found} keys in database {db} verified", dest.display())),
    }
}
