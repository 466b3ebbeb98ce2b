//! `ibs recover` and `ibs validate`: thin commands over `ibs-recovery`. They open the location with
//! no writer state, list the backups (no key needed), read the .pfx password from
//! `$IBS_PFX_PASSWORD`, `--pfx-password-file` or a prompt, and print or write the reports.

use crate::cli::{Location, UnlockArgs};
use crate::output::{exit, human, table, Bar};
use anyhow::{bail, Result};
use clap::Args;
use ibs_engine::state::default_state_dir;
use ibs_engine::Progress;
use ibs_recovery::plan::Plan;
use ibs_recovery::recover::{Outcome, RecoverOptions};
use ibs_recovery::validate::ValidateOptions;
use ibs_recovery::BackupRow;
use ibs_repo::clock::SystemClock;
use ibs_repo::Repository;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where the backups are: a local folder, `\\host.fqdn\share\folder` or `smb://host[:port]/share/folder`.
#[derive(Args, Clone)]
pub struct LocationArg {
    /// Where the backups are: a local folder, \\host.fqdn\share\folder or
    /// smb://host[:port]/share/folder (the folder that holds MASBackup).
    #[arg(long, value_name = "LOCATION")]
    pub location: String,
    /// Share user (`user` or `DOMAIN\user`); the password comes from $IBS_SHARE_PASSWORD, --password-file or a prompt.
    #[arg(long)]
    pub username: Option<String>,
    /// File holding the share password (first line; else $IBS_SHARE_PASSWORD, else a prompt).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct RecoverArgs {
    #[command(flatten)]
    pub loc: LocationArg,
    /// The backup to recover (default: the newest recovery-ready one).
    #[arg(long)]
    pub backup: Option<String>,
    /// The .pfx of the backup certificate; repeat for backups written under several certificates.
    #[arg(long, required = true)]
    pub pfx: Vec<PathBuf>,
    /// The .pfx password in a file: once for every --pfx, or one per --pfx in the same order.
    #[arg(long)]
    pub pfx_password_file: Vec<PathBuf>,
    /// The recovery plan (TOML `[[component]]` tables with `name` and `target`).
    #[arg(long)]
    pub plan: PathBuf,
    /// Writer state directory to adopt into (default as for `ibs repo`).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Seconds to wait for a conflicting repository lock (exit 6 after); 0 fails at once.
    #[arg(long, default_value_t = 0, value_name = "SECONDS")]
    pub lock_wait: u64,
    /// Recover a backup written by a newer ibs version or repository format revision than this
    /// one (refused otherwise: this build may not restore it correctly).
    #[arg(long)]
    pub allow_newer: bool,
}

#[derive(Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub loc: LocationArg,
    /// The backup id to validate (from `ibs repo list`).
    #[arg(long, value_name = "ID")]
    pub backup: String,
    /// The .pfx of the backup certificate; repeat for backups written under several certificates.
    #[arg(long, required = true, value_name = "FILE")]
    pub pfx: Vec<PathBuf>,
    /// The .pfx password in a file: once for every --pfx, or one per --pfx in the same order.
    #[arg(long)]
    pub pfx_password_file: Vec<PathBuf>,
    /// The HTML report to write; the JSON report goes beside it (same name, `.json`).
    #[arg(long, value_name = "FILE.html")]
    pub report: PathBuf,
    /// A recovery plan naming database servers to validate database components on.
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// Seconds to wait for a conflicting repository lock (exit 6 after); 0 fails at once.
    #[arg(long, default_value_t = 0, value_name = "SECONDS")]
    pub lock_wait: u64,
}

async fn open(loc: &LocationArg) -> Result<Arc<Repository>> {
    let l = Location {
        repo: loc.location.clone(),
        username: loc.username.clone(),
        password_file: loc.password_file.clone(),
        limit_upload: None,
        limit_download: None,
        storage_timeout: None,
    };
    let storage = crate::location::open(&l, false).await?;
    Ok(Arc::new(
        Repository::open(storage, Arc::new(SystemClock)).await?,
    ))
}

fn unlock(pfx: &[PathBuf], files: &[PathBuf]) -> Result<Arc<ibs_repo::keyring::Unlock>> {
    Ok(Arc::new(crate::cmd_repo::unlock(&UnlockArgs {
        pfx: pfx.to_vec(),
        pfx_password_file: files.to_vec(),
        key_file: None,
    })?))
}

fn print_backups(rows: &[BackupRow]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.backup_id.clone(),
                r.finished.clone(),
                r.status.clone(),
                r.sources.join(","),
                if r.recovery_ready { "yes" } else { "no" }.into(),
                r.catalog
                    .as_ref()
                    .map(crate::cmd_repo::written_by)
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "FINISHED",
            "STATUS",
            "SOURCES",
            "RECOVERY-READY",
            "WRITTEN BY",
        ],
        &rows,
    );
}

pub async fn recover(args: RecoverArgs, json: bool, quiet: bool) -> Result<i32> {
    let plan = Plan::load(&args.plan)?;
    let repo = open(&args.loc).await?;
    let rows = ibs_recovery::list_backups(&repo).await?;
    if !json {
        outln!("backups in {}:", repo.storage().location());
        print_backups(&rows);
    }
    let catalog = ibs_recovery::choose_backup(&rows, args.backup.as_deref())?;
    if !json {
        outln!(
            "recovering backup {} (finished {})",
            catalog.backup_id,
            catalog.finished
        );
    }
    // Before anything is written: refuse a backup from a newer build, warn about older servers.
    let warnings = ibs_recovery::preflight::preflight(&catalog, &plan, args.allow_newer).await?;
    for w in &warnings {
        errln!("warning: {w}");
    }
    let unlock = unlock(&args.pfx, &args.pfx_password_file)?;
    let state_root = args
        .state
        .clone()
        .unwrap_or_else(|| default_state_dir(|k| std::env::var(k).ok()));
    let progress = Arc::new(Progress::default());
    let bar = Bar::start(progress.clone(), "recover", !quiet && !json);
    let report = ibs_recovery::recover::recover(
        repo,
        unlock,
        RecoverOptions {
            catalog,
            plan,
            state_root,
            lock_wait: Duration::from_secs(args.lock_wait),
            progress,
            allow_newer: args.allow_newer,
        },
    )
    .await;
    bar.finish();
    let report = report?;
    if json {
        outln!(
            "{}",
            serde_json::json!({"backups": rows, "report": report, "warnings": warnings})
        );
    } else {
        let rows: Vec<Vec<String>> = report
            .components
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    c.kind.clone(),
                    c.target.clone(),
                    match c.outcome {
                        Outcome::Restored => c.restored.clone(),
                        Outcome::Failed => "FAILED".into(),
                    },
                    human(c.bytes),
                    crate::output::duration_ms(c.duration_ms),
                    if c.verified { "yes" } else { "no" }.into(),
                ]
            })
            .collect();
        table(
            &[
                "COMPONENT",
                "KIND",
                "TARGET",
                "RESTORED",
                "BYTES",
                "DURATION",
                "VERIFIED",
            ],
            &rows,
        );
        for c in &report.components {
            match c.outcome {
                Outcome::Restored => outln!("{}: {}", c.name, c.detail),
                Outcome::Failed => errln!("FAILED {}: {}", c.name, c.detail),
            }
        }
        for s in &report.skipped {
            outln!("note: component {s} is in the backup but not in the plan: not restored");
        }
        if let Some(st) = &report.adopted_state {
            outln!(
                "adopted repository {}; writer state in {st}: the next `ibs repo backup` continues the chain",
                report.repository_id
            );
        }
        outln!(
            "recovered backup {} in {}: {} of {} components restored and verified",
            report.backup_id,
            crate::output::duration_ms(report.duration_ms),
            report
                .components
                .iter()
                .filter(|c| c.outcome == Outcome::Restored)
                .count(),
            report.components.len()
        );
    }
    Ok(if report.all_restored() {
        exit::OK
    } else {
        exit::PARTIAL
    })
}

pub async fn validate(args: ValidateArgs, json: bool, quiet: bool) -> Result<i32> {
    if args.report.extension().and_then(|e| e.to_str()) != Some("html") {
        bail!("--report must name an .html file (the JSON report is written beside it)");
    }
    let plan = args.plan.as_deref().map(Plan::load).transpose()?;
    let repo = open(&args.loc).await?;
    let catalog = ibs_recovery::find_backup(&repo, &args.backup).await?;
    let unlock = unlock(&args.pfx, &args.pfx_password_file)?;
    let progress = Arc::new(Progress::default());
    let bar = Bar::start(progress.clone(), "validate", !quiet && !json);
    let report = ibs_recovery::validate::validate(
        repo,
        unlock,
        ValidateOptions {
            catalog,
            plan,
            lock_wait: Duration::from_secs(args.lock_wait),
            progress,
            scratch_in: None,
            cancel: None,
        },
    )
    .await;
    bar.finish();
    let report = report?;
    let json_path = args.report.with_extension("json");
    ibs_recovery::validate::write_reports(&report, &json_path, &args.report)?;
    if json {
        outln!("{}", serde_json::to_string(&report)?);
    } else {
        for c in &report.components {
            outln!("{:<14} {:<10} {}", c.status.as_str(), c.kind, c.name);
            for k in &c.checks {
                outln!(
                    "    {:<14} {} — {} {}",
                    k.status.as_str(),
                    k.what,
                    k.figures,
                    k.detail
                );
            }
        }
        outln!(
            "{} repository: {} — {}",
            report.repository.status.as_str(),
            report.repository.figures,
            report.repository.detail
        );
        outln!(
            "verdict {} for backup {}; reports: {} and {}",
            report.verdict,
            report.backup_id,
            args.report.display(),
            json_path.display()
        );
    }
    Ok(match report.verdict.as_str() {
        "FAIL" => exit::CHECK_PROBLEMS,
        _ => exit::OK,
    })
}
