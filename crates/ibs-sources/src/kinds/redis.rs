//! The `redis` kind: a point-in-time RDB snapshot through the replication protocol
//! (`redis-cli --rdb -` writes it to stdout; the server forks and serialises one instant). Just
//! before, `DBSIZE` of the URL's database (default 0) is recorded as the expected key count. One
//! source named after the component, file `dump.rdb`. The RDB holds every database of the instance.
//!
//! Restore target: a Redis **data folder** (absolute path) of the instance to bring back. A running
//! Redis cannot load an RDB over the network, so the restore writes `dump.rdb` into that folder
//! (refused if one is there, unless `force`), then verifies it: a [`ScratchRedis`] (no TCP port, a
//! unix socket in a 0700 folder, a random password) loads the file from that folder (no
//! persistence), and its key count for the component's database must equal the count recorded at
//! backup time. The operator then starts (or restarts) the real instance with `dir` set to that folder and `dbfilename dump.rdb`.
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

/// The server's version (`redis_version` of `INFO server`).
pub fn server_version(
    comp: &str,
    spec: &ServiceSpec,
    url: &ConnUrl,
) -> Result<String, ComponentError> {
    let secret = spec.secret(comp)?;
    let out = cli(comp, spec, url, &secret)
        .args(["INFO", "server"])
        .run(None)?;
    let line = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("redis_version:"))
        .unwrap_or("");
    super::version::reported(comp, line)
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

/// `bytes` as one double-quoted redis.conf argument: printable ASCII as is, everything else
/// (and `"`, `\`) as `\xHH`, which redis-server's argument splitter decodes.
fn conf_quote(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for &b in bytes {
        if (b.is_ascii_graphic() && b != b'"' && b != b'\\') || b == b' ' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('"');
    out
}

/// A private `redis-server` that loads `dump.rdb` from one folder, for verification. It listens on
/// no TCP port (`port 0`), only on a unix socket inside a fresh 0700 folder, and requires a random
/// password; its configuration, password included, is a 0600 file in that folder (never argv).
/// Killed, and its folder removed, on drop.
pub struct ScratchRedis {
    child: std::process::Child,
    folder: tempfile::TempDir,
    password: Secret,
    component: String,
    tool_dir: Option<PathBuf>,
}

impl ScratchRedis {
    /// Starts the server on `data_dir` (which holds `dump.rdb`); it loads the file in the
    /// background ([`ScratchRedis::dbsize`] waits for it).
    pub fn start(
        comp: &str,
        tool_dir: Option<&Path>,
        data_dir: &Path,
    ) -> Result<ScratchRedis, ComponentError> {
        use std::io::Write;
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let other = |d: String| ComponentError::new(comp, Cause::Other, d);
        let folder = tempfile::Builder::new()
            .prefix("ibs-redis-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .map_err(|e| other(format!("scratch folder: {e}")))?;
        let password = hex::encode(rand::random::<[u8; 32]>());
        let conf = format!(
            "port 0\nunixsocket {}\nunixsocketperm 700\nrequirepass {}\ndir {}\n\
             dbfilename dump.rdb\nsave \"\"\nappendonly no\ndaemonize no\nlogfile {}\n",
            conf_quote(folder.path().join("redis.sock").as_os_str().as_bytes()),
            conf_quote(password.as_bytes()),
            conf_quote(data_dir.as_os_str().as_bytes()),
            conf_quote(folder.path().join("redis.log").as_os_str().as_bytes()),
        );
        let conf_path = folder.path().join("redis.conf");
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&conf_path)
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .map_err(|e| other(format!("scratch configuration: {e}")))?;
        let server = match tool_dir {
            Some(d) => d.join("redis-server"),
            None => PathBuf::from("redis-server"),
        };
        let child = std::process::Command::new(&server)
            .arg(&conf_path)
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
        Ok(ScratchRedis {
            child,
            folder,
            password: Secret(Some(password)),
            component: comp.into(),
            tool_dir: tool_dir.map(Path::to_path_buf),
        })
    }

    /// The server's unix socket.
    pub fn socket(&self) -> PathBuf {
        self.folder.path().join("redis.sock")
    }

    /// The private folder holding the socket, the configuration and the log.
    pub fn folder(&self) -> &Path {
        self.folder.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The key count of database `db`, once the server has loaded the file (up to 60 s).
    pub fn dbsize(&mut self, db: u32) -> Result<u64, ComponentError> {
        let other = |d: String| ComponentError::new(&self.component, Cause::Other, d);
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let t = Tool::new(&self.component, self.tool_dir.as_deref(), "redis-cli")
                .secret("REDISCLI_AUTH", &self.password)
                .arg("-s")
                .arg(self.socket().display().to_string())
                .args(["-n".to_string(), db.to_string()]);
            let e = match dbsize(&self.component, t) {
                Ok(n) => return Ok(n),
                Err(e) => e,
            };
            let log = || {
                let text = std::fs::read_to_string(self.folder.path().join("redis.log"))
                    .unwrap_or_default();
                super::excerpt(&text, &self.password)
            };
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(other(format!(
                    "the scratch redis-server exited with {status}: {}",
                    log()
                )));
            }
            if Instant::now() > end {
                return Err(other(format!(
                    "the scratch server did not load dump.rdb: {e}; {}",
                    log()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ScratchRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Loads `dir/dump.rdb` in a [`ScratchRedis`] and returns the key count of database `db`.
pub fn count_keys_in(
    comp: &str,
    tool_dir: Option<&Path>,
    dir: &Path,
    db: u32,
) -> Result<u64, ComponentError> {
    ScratchRedis::start(comp, tool_dir, dir)?.dbsize(db)
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
