//! First start on embedded defaults: with no location configured, the controller makes itself
//! useful at once. It generates a self-signed 4096-bit RSA certificate (`DATA/certs/ibs-backup.cer`)
//! with its `.pfx` beside it (password in `ibs-backup.pfx.password`, mode 0600), configures the
//! local folder `DATA/backups` as the location, declares one `files` component `sample` (the
//! operator's folder, or `DATA/sample` with a few files), creates an admin token, and schedules the
//! first backup immediately. The binary prints the notice; in production the .pfx and its password
//! must be moved off this host.

use super::Controller;
use crate::component::ComponentConfig;
use crate::context::{META_COMPONENTS, META_HOST_COMPONENTS};
use crate::model::Role;
use crate::scheduler::{self, ScheduleState};
use crate::settings::LocationUpdate;
use crate::{ControllerError, Result};
use base64::Engine as _;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const META_BOOTSTRAPPED: &str = "bootstrapped";

#[derive(Debug, Clone)]
pub struct BootstrapOptions {
    pub sample: Option<PathBuf>,
    pub key_bits: usize,
}

/// What first start created. `admin_token` is shown once and stored only hashed.
#[derive(Debug, Clone)]
pub struct BootstrapReport {
    pub cer: PathBuf,
    pub pfx: PathBuf,
    pub pfx_password_file: PathBuf,
    pub thumbprint: String,
    pub location: PathBuf,
    /// The folder the `sample` component backs up; `None` when the configuration defines
    /// components (then no sample is declared and no `DATA/sample` is created).
    pub sample: Option<PathBuf>,
    pub admin_token: String,
}

pub fn needed(ctl: &Controller) -> Result<bool> {
    Ok(ctl.ctx.db.get_meta::<i64>(META_BOOTSTRAPPED)?.is_none()
        && ctl.stored_location()?.path.is_none())
}

fn io(p: &Path) -> impl Fn(std::io::Error) -> ControllerError + '_ {
    move |e| ControllerError::Internal(format!("{}: {e}", p.display()))
}

fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(data).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

fn make_sample(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir.join("etc")).map_err(io(dir))?;
    let files: [(&str, &[u8]); 3] = [
        ("README.txt", b"This folder is backed up by ibs on embedded defaults.\nReplace it with --sample PATH or a [[component]] in ibs.toml.\n"),
        ("etc/settings.json", b"{\"example\": true, \"retention_days\": 7}\n"),
        ("etc/inventory.csv", b"host,role\nnode-01,compute\nnode-02,storage\n"),
    ];
    for (name, data) in files {
        let p = dir.join(name);
        if !p.exists() {
            std::fs::write(&p, data).map_err(io(&p))?;
        }
    }
    Ok(())
}

pub async fn first_start(
    ctl: &Controller,
    data_dir: &Path,
    opts: BootstrapOptions,
) -> Result<BootstrapReport> {
    let now = ctl.now();
    let certs = data_dir.join("certs");
    ibs_engine::state::private_dir(&certs).map_err(|e| ControllerError::Internal(e.to_string()))?;
    let host = ibs_repo::lock::hostname();
    let bits = opts.key_bits;
    let identity = tokio::task::spawn_blocking(move || {
        ibs_keys::generate_self_signed(&format!("ibs backup {host}"), bits, 730, now)
    })
    .await
    .map_err(|e| ControllerError::Internal(e.to_string()))?
    .map_err(|e| ControllerError::Internal(format!("generating the certificate: {e}")))?;
    let mut raw = [0u8; 24];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
    let password = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let cer = certs.join("ibs-backup.cer");
    let pfx = certs.join("ibs-backup.pfx");
    let pw_file = certs.join("ibs-backup.pfx.password");
    write_private(&cer, identity.certificate().der())?;
    let pfx_bytes = identity
        .to_pfx(&password)
        .map_err(|e| ControllerError::Internal(e.to_string()))?;
    write_private(&pfx, &pfx_bytes)?;
    write_private(&pw_file, format!("{password}\n").as_bytes())?;

    let backups = data_dir.join("backups");
    std::fs::create_dir_all(&backups).map_err(io(&backups))?;
    let backups = std::fs::canonicalize(&backups).map_err(io(&backups))?;

    let mut sample_dir = None;
    if ctl.components_config()?.is_empty() {
        let sample = match opts.sample {
            Some(p) => p,
            None => {
                let d = data_dir.join("sample");
                make_sample(&d)?;
                d
            }
        };
        let sample = std::fs::canonicalize(&sample).map_err(io(&sample))?;
        sample_dir = Some(sample.clone());
        let c = ComponentConfig {
            name: "sample".into(),
            kind: "files".into(),
            paths: vec![sample.display().to_string()],
            exclude: Vec::new(),
            backup: None,
            restore: None,
            url: None,
            password_file: None,
            password_env: None,
            password_sealed: None,
            path: None,
            tool_dir: None,
            essential_for_recovery: true,
            priority: 100,
            pre_hook: None,
            post_hook: None,
            hook_timeout_seconds: crate::component::DEFAULT_HOOK_TIMEOUT_SECS,
        };
        ctl.ctx
            .db
            .set_meta(META_HOST_COMPONENTS, &vec![c.clone()])?;
        ctl.ctx.db.set_meta(META_COMPONENTS, &vec![c])?;
    }
    ctl.update_location(
        LocationUpdate {
            path: Some(backups.display().to_string()),
            certificate: Some(
                base64::engine::general_purpose::STANDARD.encode(identity.certificate().der()),
            ),
            ..Default::default()
        },
        "bootstrap",
    )
    .await?;
    ctl.ctx
        .db
        .set_meta(scheduler::META_KEY, &ScheduleState::starting_now(now))?;
    let admin_token = ctl
        .ctx
        .db
        .create_token(Role::Admin, "first-start admin", now)?;
    ctl.ctx.db.set_meta(META_BOOTSTRAPPED, &now)?;
    Ok(BootstrapReport {
        cer,
        pfx,
        pfx_password_file: pw_file,
        thumbprint: identity.certificate().thumbprint().into(),
        location: backups,
        sample: sample_dir,
        admin_token,
    })
}
