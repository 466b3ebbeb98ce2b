//! `ibs serve` (the controller daemon). This file only composes: it resolves the configuration
//! (flags > environment > config file > embedded defaults), refuses plain HTTP on a non-loopback
//! address (unless `--insecure-http`), takes the data directory's lock ([`crate::datalock`]), opens
//! the state database, runs first-start bootstrap, the scheduler ticker and the HTTP API
//! ([`crate::listen`]), and shuts down on SIGINT/SIGTERM. The default API address is 127.0.0.1:9440.
//!
//! The first-start admin token is printed only to a terminal; when stdout is not one (a service
//! journal, a pipe) it goes to `DATA/first-start-admin-token` (mode 0600) and only that path is
//! printed.

use crate::cli_controller::ServeArgs;
use crate::datalock::DataDirLock;
use anyhow::{Context, Result};
use ibs_controller::alerts::{AlertSink, Webhook};
use ibs_controller::bootstrap::{self, BootstrapOptions};
use ibs_controller::config::{Config, DEFAULT_LISTEN, DEFAULT_TICK_SECONDS};
use ibs_controller::db::Db;
use ibs_controller::secretbox::SecretBox;
use ibs_controller::{Controller, ControllerOptions, LocationOpener};
use ibs_repo::clock::{Clock, SystemClock};
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

/// `$IBS_DATA_DIR`, else `~/.local/share/ibs`.
pub fn default_data_dir() -> PathBuf {
    env("IBS_DATA_DIR").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env("HOME").unwrap_or_else(|| "/root".into())).join(".local/share/ibs")
    })
}

pub(crate) fn open_db(data: &Path) -> Result<(Arc<Db>, SecretBox)> {
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let _ = std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700));
    let db = Db::open(&data.join("state.sqlite")).context("opening the state database")?;
    let secrets = SecretBox::open_or_create(&data.join("secret.key"))?;
    Ok((Arc::new(db), secrets))
}

/// Where the first-start admin token goes when stdout is not a terminal.
pub const TOKEN_FILE: &str = "first-start-admin-token";

fn notice(r: &bootstrap::BootstrapReport, data: &Path) -> Result<()> {
    let bar = "!".repeat(78);
    outln!("{bar}");
    outln!("!! FIRST START: ibs generated a self-signed backup encryption certificate.");
    outln!("!!   certificate (public):  {}", r.cer.display());
    outln!("!!   PRIVATE KEY (.pfx):    {}", r.pfx.display());
    outln!(
        "!!   .pfx password:         {}",
        r.pfx_password_file.display()
    );
    outln!("!!   thumbprint:            {}", r.thumbprint);
    outln!("!! In production, MOVE THE .pfx AND ITS PASSWORD OFF THIS HOST to a safe place:");
    outln!("!! anyone holding both can read every backup, and without them no backup can be");
    outln!("!! restored after this host is lost.");
    outln!("{bar}");
    outln!("Backup location: {} (local folder)", r.location.display());
    if let Some(sample) = &r.sample {
        outln!("Component 'sample' backs up: {}", sample.display());
    }
    if std::io::stdout().is_terminal() {
        outln!(
            "Admin API token (shown once, stored hashed): {}",
            r.admin_token
        );
    } else {
        let path = data.join(TOKEN_FILE);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(format!("{}\n", r.admin_token).as_bytes())?;
        f.sync_all()?;
        outln!(
            "Admin API token: in {} (mode 0600; stdout is not a terminal, so it is not printed). \
             Read it, keep it elsewhere, and delete the file.",
            path.display()
        );
    }
    Ok(())
}

/// The restore roots: the config's and `--restore-root`'s, else `DATA/restores` (created, private).
fn restore_roots(args: &ServeArgs, config: &Config, data: &Path) -> Result<Vec<PathBuf>> {
    let mut roots: Vec<PathBuf> = config.restore_roots.clone().unwrap_or_default();
    for r in &args.restore_roots {
        anyhow::ensure!(
            r.is_absolute(),
            "--restore-root {} is not an absolute path",
            r.display()
        );
        roots.push(r.clone());
    }
    if roots.is_empty() {
        roots = ibs_controller::restore_roots::default_roots(data);
        for r in &roots {
            std::fs::create_dir_all(r).with_context(|| format!("creating {}", r.display()))?;
            std::fs::set_permissions(r, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("securing {}", r.display()))?;
        }
    }
    Ok(roots)
}

pub async fn serve(args: ServeArgs) -> Result<i32> {
    let config = match &args.config {
        Some(f) => Config::parse(
            &std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
        )
        .with_context(|| format!("config {}", f.display()))?,
        None => Config::default(),
    };
    let data = args
        .data
        .clone()
        .or_else(|| env("IBS_DATA_DIR").map(PathBuf::from))
        .or(config.data_dir.clone())
        .unwrap_or_else(default_data_dir);
    let listen = args
        .listen
        .clone()
        .or_else(|| env("IBS_LISTEN"))
        .or(config.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.into());
    let listen: SocketAddr = listen
        .parse()
        .with_context(|| format!("--listen {listen:?}: expected ADDRESS:PORT"))?;
    let sample = args
        .sample
        .clone()
        .or_else(|| env("IBS_SAMPLE_DIR").map(PathBuf::from))
        .or(config.sample_dir.clone());
    let webhook = env("IBS_WEBHOOK_URL").or(config.webhook_url.clone());
    let tick = Duration::from_secs(config.tick_seconds.unwrap_or(DEFAULT_TICK_SECONDS));
    let tls_cert = args
        .tls_cert
        .clone()
        .or_else(|| env("IBS_TLS_CERT").map(PathBuf::from))
        .or(config.tls_cert.clone());
    let tls_key = args
        .tls_key
        .clone()
        .or_else(|| env("IBS_TLS_KEY").map(PathBuf::from))
        .or(config.tls_key.clone());
    let tls = match (&tls_cert, &tls_key) {
        (Some(c), Some(k)) => Some(crate::tls::server_config(c, k)?),
        (None, None) => None,
        _ => anyhow::bail!("TLS needs both a certificate and a key (--tls-cert and --tls-key)"),
    };
    if tls.is_none() && !listen.ip().is_loopback() {
        if !args.insecure_http {
            anyhow::bail!(
                "refusing to serve plain HTTP on the non-loopback address {listen}: tokens, share \
                 passwords and .pfx files would cross the network in cleartext. Give \
                 --tls-cert/--tls-key, listen on 127.0.0.1, or pass --insecure-http to accept that"
            );
        }
        tracing::warn!(
            "serving plain HTTP on {listen} (--insecure-http): API traffic is not encrypted"
        );
    }

    let mut lock = DataDirLock::acquire(&data)?;
    let (db, secrets) = open_db(&data)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let ctl = Controller::open(ControllerOptions {
        data_dir: data.clone(),
        db,
        secrets,
        clock,
        opener: Arc::new(LocationOpener {
            timeouts: config
                .storage_timeout_seconds
                .map(|s| ibs_location::OpTimeouts::uniform(Duration::from_secs(s)))
                .unwrap_or_default(),
            limits: ibs_storage::Limits {
                upload: config.limit_upload_kib_per_second.map(|k| k << 10),
                download: config.limit_download_kib_per_second.map(|k| k << 10),
            },
        }),
        alert_sink: match webhook {
            Some(url) => Some(Arc::new(Webhook::new(url)?) as Arc<dyn AlertSink>),
            None => None,
        },
        components: config.components.clone(),
        lock_wait: Duration::from_secs(config.lock_wait_seconds.unwrap_or(60)),
        prune_grace: config
            .prune_grace_hours
            .map(|h| Duration::from_secs(h.saturating_mul(3600)))
            .unwrap_or(ibs_engine::retention::DEFAULT_GRACE),
        prune_max_unused_percent: config
            .prune_max_unused_percent
            .unwrap_or(ibs_engine::retention::DEFAULT_MAX_UNUSED_PERCENT),
        delete_delay: config
            .delete_delay_hours
            .map(|h| Duration::from_secs(h.saturating_mul(3600)))
            .unwrap_or(ibs_engine::trash::DEFAULT_DELETE_DELAY),
        closed_alert_retention_days: config
            .closed_alert_retention_days
            .unwrap_or(ibs_controller::alert_purge::DEFAULT_CLOSED_ALERT_RETENTION_DAYS),
        restore_roots: restore_roots(&args, &config, &data)?,
        job_timeout: config
            .job_timeout_seconds
            .map(Duration::from_secs)
            .unwrap_or(ibs_controller::stop::DEFAULT_JOB_TIMEOUT),
    })?;
    // Bind before bootstrapping so a taken port fails fast.
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("listening on {listen} (set --listen or IBS_LISTEN to use another address)")
        })?;
    let url = format!(
        "{}://{}",
        if tls.is_some() { "https" } else { "http" },
        listener.local_addr().unwrap_or(listen)
    );
    lock.record(Some(&url))?;
    let first = bootstrap::needed(&ctl)?;
    if first {
        errln!("first start: generating a 4096-bit RSA certificate (this takes a few seconds)…");
        let report = bootstrap::first_start(
            &ctl,
            &data,
            BootstrapOptions {
                sample,
                key_bits: 4096,
            },
        )
        .await?;
        notice(&report, &data)?;
    }
    outln!("ibs controller: data {}, API {url}/api/v1 (OpenAPI: {url}/api/v1/openapi.json, metrics: {url}/metrics)", data.display());
    outln!("Web console:    {url}/ (sign in with an API token)");
    let ibs = command_name();
    outln!("List backups:   IBS_SERVER={url} IBS_TOKEN=<token> {ibs} backup list");
    if !first {
        outln!(
            "A new token:    {ibs} token create --role admin --data {}",
            data.display()
        );
    }

    let ticker = {
        let ctl = ctl.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = ctl.tick() {
                    tracing::error!("scheduler tick: {e}");
                }
                tokio::time::sleep(tick).await;
            }
        })
    };
    let api = ibs_api::AppState::new(ctl.clone());
    let console = ibs_console::ConsoleState::new(api.clone(), tls.is_some());
    let app = ibs_api::router(api).merge(ibs_console::router(console));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    crate::listen::serve(listener, app, acceptor, shutdown_signal()).await;
    ticker.abort();
    let interrupted = ctl.shutdown()?;
    if !interrupted.is_empty() {
        errln!(
            "shutdown: job(s) {} marked Interrupted",
            interrupted.join(", ")
        );
    }
    errln!("ibs controller stopped");
    Ok(0)
}

/// How to run this binary from a shell: `ibs` when that name on $PATH is this binary, else its
/// full path (e.g. `target/release/ibs` after `cargo run`), so a printed hint works when pasted.
fn command_name() -> String {
    let Ok(me) = std::env::current_exe().and_then(std::fs::canonicalize) else {
        return "ibs".into();
    };
    let on_path = std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p)
            .any(|d| std::fs::canonicalize(d.join("ibs")).is_ok_and(|found| found == me))
    });
    if on_path {
        "ibs".into()
    } else {
        let text = me.display().to_string();
        if text.contains(char::is_whitespace) {
            format!("'{text}'")
        } else {
            text
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    errln!("shutting down…");
}
