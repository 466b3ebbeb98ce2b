//! `ibs repo …`: the engine's operations on a repository, without the controller.

mod browse;
mod dump;
mod keys;
mod maintain;
mod mount;

use crate::cli::{Location, RepoArgs, RepoCmd, UnlockArgs};
use crate::cmd_keys::load_cert;
use crate::output::{count, duration_ms, exit, human, table, Bar};
use crate::{location, secrets};
use anyhow::{bail, Context, Result};
use ibs_engine::check::CheckOptions;
use ibs_engine::keyops;
use ibs_engine::state::{default_state_dir, WriterState};
use ibs_engine::{BackupOptions, Progress, RestoreOptions, SourceOrigin, SourceSpec};
use ibs_keys::{LegacyKey, PrivateIdentity};
use ibs_repo::clock::{Clock, SystemClock};
use ibs_repo::keyring::Unlock;
use ibs_repo::manifest::BackupStatus;
use ibs_repo::{InitKeys, Repository};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

struct Ctx {
    state_root: PathBuf,
    lock_wait: Duration,
    json: bool,
    quiet: bool,
}

fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

async fn open_repo(loc: &Location) -> Result<Repository> {
    let storage = location::open(loc, false).await?;
    Ok(Repository::open(storage, clock()).await?)
}

fn load_identity(path: &Path, password: &str) -> Result<PrivateIdentity> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    PrivateIdentity::from_pfx(&bytes, password).with_context(|| format!(".pfx {}", path.display()))
}

pub(crate) fn unlock(args: &UnlockArgs) -> Result<Unlock> {
    if let Some(k) = &args.key_file {
        if !args.pfx.is_empty() {
            return Err(crate::errors::usage(
                "give either --pfx or --key-file, not both",
            ));
        }
        let text = std::fs::read_to_string(k)
            .with_context(|| format!("reading key file {}", k.display()))?;
        return Ok(Unlock::Legacy(
            LegacyKey::from_file_text(&text)
                .with_context(|| format!("key file {}", k.display()))?,
        ));
    }
    if args.pfx.is_empty() {
        return Ok(Unlock::Identities(Vec::new()));
    }
    let passwords = pfx_passwords(args.pfx.len(), &args.pfx_password_file)?;
    let ids = args
        .pfx
        .iter()
        .zip(&passwords)
        .map(|(p, pw)| load_identity(p, pw))
        .collect::<Result<Vec<_>>>()?;
    Ok(Unlock::Identities(ids))
}

/// The password of each of `count` .pfx files: from one `--pfx-password-file` (or, with none, from
/// `$IBS_PFX_PASSWORD` or a prompt) for all of them, or from one file per .pfx, matched by position.
pub(crate) fn pfx_passwords(count: usize, files: &[PathBuf]) -> Result<Vec<String>> {
    match files.len() {
        0 | 1 => Ok(vec![
            secrets::pfx_password(files.first().map(PathBuf::as_path), false)?;
            count
        ]),
        n if n == count => files
            .iter()
            .map(|f| secrets::pfx_password(Some(f), false))
            .collect(),
        n => Err(crate::errors::usage(format!(
            "{n} --pfx-password-file for {count} --pfx: give one password file for all of them, or one per --pfx in the same order"
        ))),
    }
}

fn parse_source(s: &str, exclude: &[String]) -> Result<SourceSpec> {
    let (name, path) = s
        .split_once('=')
        .with_context(|| format!("--source {s:?}: expected NAME=PATH or NAME=-"))?;
    let origin = if path == "-" {
        SourceOrigin::Stream {
            reader: Box::new(std::io::stdin()),
            file_name: name.to_owned(),
        }
    } else if exclude.is_empty() {
        SourceOrigin::Path(PathBuf::from(path))
    } else {
        SourceOrigin::Tree {
            root: PathBuf::from(path),
            exclude: exclude.to_vec(),
        }
    };
    Ok(SourceSpec {
        name: name.to_owned(),
        origin,
    })
}

/// Dispatches an `ibs repo` subcommand.
pub async fn run(args: RepoArgs, json: bool, quiet: bool) -> Result<i32> {
    let ctx = Ctx {
        state_root: args
            .state
            .clone()
            .unwrap_or_else(|| default_state_dir(|k| std::env::var(k).ok())),
        lock_wait: Duration::from_secs(args.lock_wait),
        json,
        quiet,
    };
    match args.cmd {
        RepoCmd::Init {
            loc,
            cert,
            key_file,
            pack_size,
        } => init(&ctx, &loc, cert, key_file, pack_size).await,
        RepoCmd::Backup {
            loc,
            sources,
            exclude,
            threads,
        } => backup(&ctx, &loc, &sources, &exclude, threads).await,
        RepoCmd::List { loc } => list(&ctx, &loc).await,
        RepoCmd::Restore {
            loc,
            backup,
            target,
            source,
            unlock: u,
            threads,
            overwrite,
            allow_newer,
        } => {
            let opts = RestoreOptions {
                backup_id: backup,
                target,
                source,
                threads,
                progress: Arc::new(Progress::default()),
                lock_wait: ctx.lock_wait,
                cancel: None,
            };
            restore(&ctx, loc, opts, u, overwrite, allow_newer).await
        }
        RepoCmd::Check {
            loc,
            read_data,
            unlock: u,
        } => check(&ctx, loc, read_data, u).await,
        RepoCmd::Forget {
            loc,
            keep_days,
            keep_last,
            dry_run,
        } => {
            let keep = ibs_engine::retention::Keep {
                days: keep_days.unwrap_or(0),
                last: keep_last.unwrap_or(0),
            };
            maintain::forget(&ctx, loc, keep, dry_run).await
        }
        RepoCmd::Prune {
            loc,
            dry_run,
            grace_hours,
            delete_delay_hours,
            max_unused,
            trust_listing,
        } => {
            let hours = maintain::PruneSettings {
                grace: grace_hours,
                delete_delay: delete_delay_hours,
                max_unused_percent: max_unused,
            };
            maintain::prune(&ctx, loc, dry_run, hours, trust_listing).await
        }
        RepoCmd::Undelete { loc, dry_run } => maintain::undelete(&ctx, loc, dry_run).await,
        RepoCmd::Rewrap {
            loc,
            pfx,
            pfx_password_file,
            cert,
            keep_old,
        } => keys::rewrap(&ctx, loc, pfx, pfx_password_file, cert, keep_old).await,
        RepoCmd::SetCert { loc, cert } => keys::set_cert(&ctx, loc, cert).await,
        RepoCmd::Adopt { loc, unlock: u } => keys::adopt(&ctx, loc, u).await,
        RepoCmd::Ls {
            loc,
            backup,
            path,
            recursive,
            unlock: u,
        } => browse::ls(&ctx, loc, backup, path, recursive, u).await,
        RepoCmd::Find {
            loc,
            pattern,
            backup,
            unlock: u,
        } => browse::find(&ctx, loc, pattern, backup, u).await,
        RepoCmd::Dump {
            loc,
            backup,
            path,
            unlock: u,
        } => dump::dump(&ctx, loc, backup, path, u).await,
        RepoCmd::Diff {
            loc,
            a,
            b,
            unlock: u,
        } => dump::diff(&ctx, loc, a, b, u).await,
        RepoCmd::Mount {
            loc,
            mountpoint,
            unlock: u,
        } => mount::mount(&ctx, loc, mountpoint, u).await,
    }
}

/// `ibs repo restore`: restores a backup (or one source of it) into a folder.
/// Without `overwrite`, refuses (exit 6, nothing written) when a file at the target differs from
/// the backup's; see `ibs_engine::restore::conflicts`. A backup written by a newer ibs version or
/// format revision is refused (exit 15) unless `allow_newer` (the version rule,
/// `ibs_engine::provenance`), before anything is written.
async fn restore(
    ctx: &Ctx,
    loc: Location,
    opts: RestoreOptions,
    u: UnlockArgs,
    overwrite: bool,
    allow_newer: bool,
) -> Result<i32> {
    let mut opts = opts;
    let repo = Arc::new(open_repo(&loc).await?);
    let (id, source) = browse::resolve_backup(&repo, &opts.backup_id).await?;
    opts.backup_id = id;
    if opts.source.is_none() {
        opts.source = source;
    }
    let catalog = repo.read_catalog(&opts.backup_id).await?;
    match ibs_engine::provenance::check_not_newer(&catalog, allow_newer) {
        Ok(None) => {}
        Ok(Some(warning)) => errln!("warning: {warning}"),
        Err(refused) => return Err(crate::errors::coded(
            exit::NEWER_BACKUP,
            format!("{refused}; nothing was restored"),
            "restore it with this ibs version or newer, or pass --allow-newer to restore anyway",
        )),
    }
    let unlock = Arc::new(unlock(&u)?);
    if !overwrite {
        let found = ibs_engine::restore::conflicts(repo.clone(), unlock.clone(), &opts, 2).await?;
        if let Some(first) = found.first() {
            return Err(crate::errors::coded(
                exit::LOCKED,
                format!(
                    "{} exists and differs from the backup's{}; nothing was restored",
                    first.display(),
                    if found.len() > 1 { " (and more)" } else { "" }
                ),
                "pass --overwrite to replace such files, or restore into an empty folder",
            ));
        }
    }
    let target = opts.target.clone();
    let bar = Bar::start(opts.progress.clone(), "restore", !ctx.quiet && !ctx.json);
    let report = ibs_engine::restore(repo, unlock, opts).await;
    bar.finish();
    let report = report?;
    if ctx.json {
        outln!("{}", serde_json::to_string(&report)?);
    } else {
        outln!(
            "restored into {}: {}, {}, {}, {}, {}, {}",
            target.display(),
            count(report.files, "file"),
            count(report.dirs, "directory|directories"),
            count(report.symlinks, "symlink"),
            count(report.hardlinks, "hard link"),
            count(report.specials, "FIFO/device|FIFOs/devices"),
            human(report.bytes)
        );
        for s in &report.skipped {
            errln!("skipped: {s}");
        }
        for w in &report.warnings {
            errln!("warning: {w}");
        }
        for e in &report.errors {
            errln!("FAILED: {e}");
        }
    }
    Ok(if report.errors.is_empty() {
        exit::OK
    } else {
        exit::PARTIAL
    })
}

/// `ibs repo check`: verifies the repository at the depth the keys and `--read-data` allow.
async fn check(ctx: &Ctx, loc: Location, read_data: bool, u: UnlockArgs) -> Result<i32> {
    let repo = Arc::new(open_repo(&loc).await?);
    let u = unlock(&u)?;
    let unlock = match &u {
        Unlock::Identities(ids) if ids.is_empty() => None,
        _ => Some(Arc::new(u)),
    };
    let state = WriterState::load(&ctx.state_root, &repo.config().id).ok();
    let progress = Arc::new(Progress::default());
    let bar = Bar::start(progress.clone(), "check", !ctx.quiet && !ctx.json);
    let report = ibs_engine::check::check(
        repo,
        CheckOptions {
            read_data,
            unlock,
            state,
            progress,
            lock_wait: ctx.lock_wait,
        },
    )
    .await;
    bar.finish();
    let report = report?;
    if ctx.json {
        outln!("{}", serde_json::to_string(&report)?);
    } else {
        outln!(
            "check ({}): {} backups, {} index segments, {} packs ({} read, {}), {} chunks verified",
            report.level,
            report.backups,
            report.index_segments,
            report.packs,
            report.packs_read,
            human(report.bytes_read),
            report.chunks_verified
        );
        for n in &report.notes {
            outln!("note: {n}");
        }
        for p in &report.problems {
            let affects = if p.backups.is_empty() {
                String::new()
            } else {
                format!(" — affects backups: {}", p.backups.join(", "))
            };
            outln!("PROBLEM {}: {}{affects}", p.object, p.detail);
        }
        if report.problems.is_empty() {
            outln!("no problems found");
        }
    }
    Ok(if report.problems.is_empty() {
        exit::OK
    } else {
        exit::CHECK_PROBLEMS
    })
}

async fn init(
    ctx: &Ctx,
    loc: &Location,
    cert: Option<PathBuf>,
    key_file: Option<PathBuf>,
    pack_size_mib: Option<u32>,
) -> Result<i32> {
    // Validate the key material before anything is created on the location.
    enum Keys {
        Cert(Box<ibs_keys::Certificate>),
        Legacy(LegacyKey),
    }
    let keys = match (cert, key_file) {
        (Some(c), _) => Keys::Cert(Box::new(load_cert(&c)?)),
        (None, Some(k)) => {
            let text = std::fs::read_to_string(&k)
                .with_context(|| format!("reading key file {}", k.display()))?;
            let key = LegacyKey::from_file_text(&text)
                .with_context(|| format!("key file {}", k.display()))?;
            if !ctx.quiet {
                errln!("warning: legacy-key mode: this host can decrypt every backup; prefer a certificate (ibs cert new)");
            }
            Keys::Legacy(key)
        }
        (None, None) => bail!("give --cert FILE or --key-file FILE"),
    };
    let storage = location::open(loc, true).await?;
    let init_keys = match &keys {
        Keys::Cert(c) => InitKeys::Certificate(c),
        Keys::Legacy(k) => InitKeys::Legacy(k),
    };
    let pack_size = pack_size_mib.map(|m| m << 20);
    let (repo, state) =
        keyops::init_with(storage, clock(), &ctx.state_root, init_keys, pack_size).await?;
    if ctx.json {
        outln!(
            "{}",
            serde_json::json!({"repository_id": repo.config().id, "location": repo.storage().location(), "state": state.dir})
        );
    } else if ctx.quiet {
        outln!("{}", repo.config().id);
    } else {
        outln!(
            "initialised repository {} in {}",
            repo.config().id,
            repo.storage().location()
        );
        outln!("writer state: {}", state.dir.display());
    }
    Ok(exit::OK)
}

async fn backup(
    ctx: &Ctx,
    loc: &Location,
    sources: &[String],
    exclude: &[String],
    threads: usize,
) -> Result<i32> {
    let sources = sources
        .iter()
        .map(|s| parse_source(s, exclude))
        .collect::<Result<Vec<_>>>()?;
    let repo = Arc::new(open_repo(loc).await?);
    let state = WriterState::load(&ctx.state_root, &repo.config().id)?;
    if let Some(c) = &state.certificate {
        if c.is_expired_at(repo.clock().now_unix()) && !ctx.quiet {
            errln!(
                "warning: certificate {} expired; backups still work, but rotate it",
                c.thumbprint()
            );
        }
    }
    // This host's writer deployment id, recorded in the catalog (created once in the state root).
    let extras = ibs_engine::BackupExtras {
        deployment_id: Some(ibs_engine::state::deployment_id(&ctx.state_root)?),
        ..Default::default()
    };
    let progress = Bar::progress(!ctx.quiet && !ctx.json);
    let bar = Bar::start(progress.clone(), "backup", !ctx.quiet && !ctx.json);
    let result = ibs_engine::backup_with(
        repo,
        &state,
        BackupOptions {
            sources,
            threads,
            lock_wait: ctx.lock_wait,
            progress,
        },
        extras,
    )
    .await;
    bar.finish();
    let report = result?;
    let c = &report.catalog;
    if ctx.json {
        outln!(
            "{}",
            serde_json::json!({"catalog": c, "errors": report.errors, "warnings": report.warnings, "chunks_new": report.chunks_new, "packs_new": report.packs_new})
        );
    } else {
        if !ctx.quiet {
            backup_summary(&report);
        }
        for e in report.errors.iter().take(20) {
            errln!("error: {e}");
        }
        if !ctx.quiet {
            for w in report.warnings.iter().take(20) {
                errln!("warning: {w}");
            }
        }
    }
    outln!("{}", c.backup_id);
    Ok(match c.status {
        BackupStatus::Succeeded => exit::OK,
        BackupStatus::PartialSucceeded => exit::PARTIAL,
        BackupStatus::Failed => exit::FAILURE,
    })
}

/// The summary of a finished backup: totals, then one line per source.
fn backup_summary(report: &ibs_engine::BackupReport) {
    let c = &report.catalog;
    outln!(
        "{:?}: read {} in {}, {} new, stored {} in {}",
        c.status,
        human(c.bytes_read),
        duration_ms(c.duration_ms),
        human(c.bytes_new),
        human(c.bytes_stored),
        count(report.packs_new, "pack")
    );
    for s in &c.sources {
        outln!(
            "  {}: {:?}, {}, {}, {}, {}, {} changed while read, {} skipped",
            s.name,
            s.status,
            count(s.files, "file"),
            count(s.dirs, "dir"),
            human(s.bytes),
            count(s.errors, "error"),
            s.changed_while_read,
            s.skipped
        );
    }
}

async fn list(ctx: &Ctx, loc: &Location) -> Result<i32> {
    let repo = open_repo(loc).await?;
    let mut rows = Vec::new();
    let mut json_rows = Vec::new();
    for id in repo.list_backup_ids().await? {
        match repo.read_catalog(&id).await {
            Ok(c) => {
                rows.push(vec![
                    c.backup_id.clone(),
                    c.finished.clone(),
                    format!("{:?}", c.status),
                    duration_ms(c.duration_ms),
                    c.sources
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                    human(c.bytes_read),
                    human(c.bytes_stored),
                    c.certificate_thumbprint
                        .clone()
                        .unwrap_or_else(|| "legacy-key".into()),
                    if c.is_recovery_ready() { "yes" } else { "no" }.into(),
                    written_by(&c),
                ]);
                json_rows.push(serde_json::to_value(&c)?);
            }
            // Forgotten between the listing and the read: not in the repository any more.
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                rows.push(vec![
                    id.clone(),
                    "-".into(),
                    "Damaged".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "no".into(),
                    "-".into(),
                ]);
                json_rows.push(serde_json::json!({"backup_id": id, "status": "Damaged", "error": e.to_string()}));
            }
        }
    }
    if ctx.json {
        outln!("{}", serde_json::Value::Array(json_rows));
    } else {
        table(
            &[
                "ID",
                "FINISHED",
                "STATUS",
                "DURATION",
                "SOURCES",
                "READ",
                "STORED",
                "CERTIFICATE",
                "RECOVERY-READY",
                "WRITTEN BY",
            ],
            &rows,
        );
    }
    Ok(exit::OK)
}

/// Who wrote a backup, for listings: `ibs VERSION rREVISION` and the deployment id's first 8
/// digits; `ibs VERSION` alone for catalogs from before format revisions.
pub(crate) fn written_by(c: &ibs_repo::manifest::Catalog) -> String {
    let p = ibs_engine::provenance::Provenance::of(c);
    match (p.format_revision, p.deployment_id) {
        (0, _) => format!("ibs {}", p.ibs_version),
        (r, Some(d)) => format!("ibs {} r{r} @{}", p.ibs_version, &d[..d.len().min(8)]),
        (r, None) => format!("ibs {} r{r}", p.ibs_version),
    }
}
