//! The API client commands: `location`, `backup`, `restore`, `maintenance` (`alerts` and `store`
//! are in `cmd_alerts`, the paged lists and job commands in `cmd_lists`). They
//! map the brief's PowerShell cmdlets one to one and talk to `ibs serve` over HTTP (`--server` or
//! $IBS_SERVER; the token from $IBS_TOKEN, never argv). `--json` prints the API's JSON; otherwise
//! aligned tables. Exit codes are the one table of `output::exit`, chosen in `crate::errors`
//! (HTTP 400 → 2, a key field → 5, 401/403 → 9, 404 → 8, 409 → 6, unreachable → 11) and, for a
//! job that ended, by its status and alert class ([`job_code`]).
//! Requests and responses are the API's own types (`ibs-types`).

use crate::api_client::{parse, Client};
use crate::cli::Command;
use crate::cli_controller::*;
use crate::output::{count, duration_ms, exit, human, table, Bar};
use crate::secrets;
use anyhow::{Context, Result};
use base64::Engine as _;
use ibs_engine::Progress;
use ibs_types::{
    BeginMaintenance, EndMaintenance, Job, JobErrorCode, JobProgress, JobStatus, LocationUpdate,
    LocationView, Maintenance, PfxBody, Readiness, RestoreBody, SecretText,
};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

pub(crate) fn print_json(v: &impl serde::Serialize) -> Result<()> {
    outln!("{}", serde_json::to_string(v)?);
    Ok(())
}

/// Several of `serde`'s unit enums (trigger, …) as their wire text.
pub(crate) fn wire<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

pub(crate) fn time(t: Option<i64>) -> String {
    t.map(ibs_repo::clock::rfc3339)
        .unwrap_or_else(|| "-".into())
}

pub(crate) fn duration(ms: Option<u64>) -> String {
    ms.map(duration_ms).unwrap_or_else(|| "-".into())
}

pub fn run(cmd: Command, json: bool, quiet: bool) -> Result<i32> {
    match cmd {
        Command::Location(a) => location(a, json),
        Command::Backup(a) => backup(a, json, quiet),
        Command::Restore(a) => restore(a, json, quiet),
        Command::Maintenance(a) => maintenance(a, json),
        Command::Alerts(a) => crate::cmd_alerts::alerts(a, json),
        Command::Store(a) => crate::cmd_alerts::store(a, json),
        Command::Jobs(a) => crate::cmd_lists::jobs(a, json),
        Command::Operations(a) => crate::cmd_lists::operations(a, json),
        Command::Audit(a) => crate::cmd_lists::audit(a, json),
        Command::Components(a) => crate::cmd_lists::components(a, json),
        Command::Verification(a) => crate::cmd_lists::verification(a, json, quiet),
        _ => unreachable!("dispatched in main"),
    }
}

fn location(a: LocationArgs, json: bool) -> Result<i32> {
    let c = Client::new(&a.server);
    let v: LocationView = match a.cmd {
        LocationCmd::Show => c.get("/location")?,
        LocationCmd::Clear => {
            let v = c.delete("/location")?;
            if !json {
                errln!("location cleared: no share, credentials deleted, automatic backups off");
            }
            v
        }
        LocationCmd::Set {
            path,
            username,
            maintenance_user,
            maintenance_key_file,
            maintenance_clear,
            cert,
            key_file,
            frequency_hours,
            retention_days,
            scheduler,
            confirm,
        } => {
            let mut body = LocationUpdate {
                path,
                confirm,
                frequency_hours,
                retention_days,
                scheduler_enabled: scheduler.map(|s| s == "on"),
                ..LocationUpdate::default()
            };
            let s3 = body.path.as_deref().is_some_and(ibs_location::is_s3);
            if s3 && username.is_none() {
                // An S3 location's access key id and secret travel as the location's user name
                // and password, from the AWS variables (or a prompt), never from argv.
                let (key, secret) = secrets::s3_credentials(None, None)?;
                body.username = Some(key);
                body.password = Some(SecretText::new(secret));
            } else if let Some(u) = username {
                body.username = Some(u);
                body.password = Some(SecretText::new(secrets::share_password(None, None)?));
            } else if let Ok(p) = std::env::var("IBS_SHARE_PASSWORD") {
                body.password = Some(SecretText::new(p));
            }
            if maintenance_user.is_some() || maintenance_key_file.is_some() {
                let (key, secret) = secrets::maintenance_credentials(
                    maintenance_user.as_deref(),
                    maintenance_key_file.as_deref(),
                )?;
                body.maintenance_username = Some(key);
                body.maintenance_password = Some(SecretText::new(secret));
            }
            body.maintenance_clear = maintenance_clear;
            if let Some(f) = cert {
                // Checked here first: a .pfx given by mistake is refused before it leaves this host.
                crate::cmd_keys::load_cert(&f)?;
                let bytes =
                    std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
                body.certificate = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
            }
            if let Some(f) = key_file {
                body.legacy_key = Some(SecretText::new(
                    std::fs::read_to_string(&f)
                        .with_context(|| format!("reading {}", f.display()))?,
                ));
            }
            c.put("/location", &body)?
        }
    };
    if json {
        return print_json(&v).map(|_| exit::OK);
    }
    let s = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    let when = |t: Option<i64>| {
        t.map(ibs_repo::clock::rfc3339)
            .unwrap_or_else(|| "-".into())
    };
    let rows: Vec<Vec<String>> = vec![
        vec!["path".into(), s(&v.path)],
        vec!["username".into(), s(&v.username)],
        vec![
            "password".into(),
            if v.password_set { "(set)" } else { "-" }.into(),
        ],
        vec![
            "maintenance credential".into(),
            match (&v.maintenance_username, v.maintenance_password_set) {
                (Some(u), true) => format!("{u} (secret set): retention and prune use it"),
                (Some(u), false) => format!("{u} (no secret)"),
                (None, _) => "- (retention and prune use the writer key)".into(),
            },
        ],
        vec!["encryption".into(), s(&v.encryption_mode)],
        vec![
            "certificate".into(),
            v.certificate
                .as_ref()
                .map(|c| {
                    let expires = ibs_repo::clock::rfc3339(c.not_after);
                    format!("{} ({}, expires {expires})", c.thumbprint, c.subject)
                })
                .unwrap_or("-".into()),
        ],
        vec!["frequency".into(), count(v.frequency_hours, "hour")],
        vec!["retention".into(), count(v.retention_days, "day")],
        vec![
            "scheduler enabled".into(),
            if v.scheduler_enabled { "on" } else { "OFF" }.into(),
        ],
        vec![
            "available".into(),
            v.available_bytes.map(human).unwrap_or("-".into()),
        ],
        vec![
            "total".into(),
            v.total_bytes.map(human).unwrap_or("-".into()),
        ],
        vec!["next backup".into(), when(v.next_backup_time)],
        vec!["last backup".into(), when(v.last_backup_time)],
    ];
    table(&["SETTING", "VALUE"], &rows);
    for w in &v.warnings {
        errln!("warning: {w}");
    }
    Ok(exit::OK)
}

pub(crate) fn job_code(j: &Job) -> i32 {
    match j.status {
        JobStatus::Succeeded => exit::OK,
        JobStatus::PartialSucceeded => exit::PARTIAL,
        // A refusal (a restore target holding files that differ) is 6, as HTTP 409 is.
        _ if j.error_code == Some(JobErrorCode::Conflict) => exit::LOCKED,
        _ => match j.alert_class.as_deref() {
            // `general` stays 1 here: a job's own failure, as before the table was shared.
            Some(c) if c != "general" => {
                crate::errors::alert_class_code(c).unwrap_or(exit::FAILURE)
            }
            _ => exit::FAILURE,
        },
    }
}

/// Polls a job until it ends, feeding a progress bar.
pub(crate) fn wait_job(c: &Client, id: &str, label: &'static str, bar_on: bool) -> Result<Job> {
    let progress = Arc::new(Progress::default());
    let bar = Bar::start(progress.clone(), label, bar_on);
    let mut seen = JobProgress::default();
    let job = loop {
        let j: Job = c.get(&format!("/jobs/{id}"))?;
        if let Some(p) = j.progress {
            progress.add_total(
                p.bytes_total.saturating_sub(seen.bytes_total),
                p.files_total.saturating_sub(seen.files_total),
            );
            progress.add_bytes(p.bytes_done.saturating_sub(seen.bytes_done));
            for _ in seen.files_done..p.files_done {
                progress.add_file();
            }
            seen = p;
        }
        if j.status.is_final() {
            break j;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    bar.finish();
    Ok(job)
}

/// A backup's status as listed: the original outcome, with `Corrupted` in front when
/// verification found data it needs damaged (the original status is kept).
pub(crate) fn status_text(j: &Job) -> String {
    match &j.corrupted {
        Some(_) => format!("Corrupted ({})", j.status.as_str()),
        None => j.status.as_str().into(),
    }
}

/// Where a backup is: its location, marked when it is not the current one.
pub(crate) fn location_text(j: &Job) -> String {
    let at = j
        .location
        .clone()
        .or_else(|| j.repository_id.as_ref().map(|r| format!("repository {r}")))
        .unwrap_or_else(|| "-".into());
    if j.previous_location {
        format!("{at} (previous location)")
    } else {
        at
    }
}

pub(crate) fn show_job(j: &Job) {
    let mut rows = vec![
        vec!["id".into(), j.id.clone()],
        vec!["status".into(), status_text(j)],
        vec!["trigger".into(), wire(&j.trigger)],
        vec!["started".into(), time(j.started_at)],
        vec!["duration".into(), duration(j.duration_ms)],
        vec!["bytes read".into(), human(j.bytes_read)],
        vec!["bytes stored".into(), human(j.bytes_stored)],
        vec![
            "certificate".into(),
            j.certificate_thumbprint.clone().unwrap_or("-".into()),
        ],
        vec!["recovery ready".into(), j.recovery_ready.to_string()],
        vec![
            "repository backup".into(),
            j.backup_id.clone().unwrap_or("-".into()),
        ],
        vec!["location".into(), location_text(j)],
        vec!["error".into(), j.error.clone().unwrap_or("-".into())],
    ];
    if j.previous_location {
        rows.push(vec![
            "note".into(),
            "the location was changed since this backup: set it back to restore or validate it \
             from the controller, or use `ibs repo restore --repo LOCATION` with the .pfx"
                .into(),
        ]);
    }
    if let Some(m) = &j.metadata {
        rows.push(vec!["ibs version".into(), m.ibs_version.clone()]);
        rows.push(vec![
            "format revision".into(),
            m.format_revision.to_string(),
        ]);
        rows.push(vec![
            "deployment".into(),
            m.deployment_id.clone().unwrap_or("-".into()),
        ]);
    }
    for w in &j.warnings {
        rows.push(vec!["warning".into(), w.clone()]);
    }
    if let Some(c) = &j.corrupted {
        rows.push(vec![
            "corrupted components".into(),
            format!(
                "{}{}",
                c.components.join(", "),
                if c.all_components {
                    " (all: older backup without per-component references)"
                } else {
                    ""
                }
            ),
        ]);
    }
    table(&["FIELD", "VALUE"], &rows);
    if !j.components.is_empty() {
        outln!();
        let rows: Vec<Vec<String>> = j
            .components
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    c.kind.clone(),
                    c.status.as_str().into(),
                    c.essential_for_recovery.to_string(),
                    human(c.bytes),
                    c.server_version.clone().unwrap_or("-".into()),
                    c.message.clone().unwrap_or_default(),
                ]
            })
            .collect();
        table(
            &[
                "COMPONENT",
                "KIND",
                "STATUS",
                "ESSENTIAL",
                "BYTES",
                "SERVER",
                "MESSAGE",
            ],
            &rows,
        );
    }
}

fn backup(a: BackupArgs, json: bool, quiet: bool) -> Result<i32> {
    let c = Client::new(&a.server);
    match a.cmd {
        BackupCmd::Start { wait } => {
            let j: Job = parse("/backups", &c.post_empty("/backups")?)?;
            let j = if wait {
                wait_job(&c, &j.id, "backup", !quiet && !json)?
            } else {
                j
            };
            if json {
                print_json(&j)?;
            } else {
                if wait {
                    errln!(
                        "backup {}: {}{}",
                        j.id,
                        j.status.as_str(),
                        j.error
                            .as_deref()
                            .map(|e| format!(" — {e}"))
                            .unwrap_or_default()
                    );
                } else {
                    errln!("backup started; follow it with `ibs backup show {}`", j.id);
                }
                outln!("{}", j.id);
            }
            Ok(if wait { job_code(&j) } else { exit::OK })
        }
        BackupCmd::List { page } => crate::cmd_lists::backup_list(&c, &page, json),
        BackupCmd::Validate {
            id,
            pfx,
            pfx_password_file,
            no_wait,
        } => crate::cmd_lists::backup_validate(
            &c,
            &id,
            &pfx,
            pfx_password_file.as_deref(),
            no_wait,
            json,
            quiet,
        ),
        BackupCmd::Cancel { id, no_wait } => crate::cmd_cancel::cancel_job(&c, &id, no_wait, json),
        BackupCmd::Show { id } => {
            let j: Job = c.get(&format!("/backups/{id}"))?;
            if json {
                print_json(&j)?;
            } else {
                show_job(&j);
            }
            Ok(exit::OK)
        }
    }
}

fn restore(a: RestoreArgs, json: bool, quiet: bool) -> Result<i32> {
    let c = Client::new(&a.server);
    let passwords = crate::cmd_repo::pfx_passwords(a.pfx.len(), &a.pfx_password_file)?;
    let mut keys = Vec::new();
    for (p, password) in a.pfx.iter().zip(passwords) {
        let pfx = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        keys.push(PfxBody {
            pfx: base64::engine::general_purpose::STANDARD.encode(&pfx),
            pfx_password: password,
        });
    }
    let first = keys.remove(0);
    // A URL target (service components) is passed as is; a path is made absolute.
    let target = if a.target.contains("://") {
        a.target.clone()
    } else {
        std::path::absolute(&a.target)
            .with_context(|| format!("--target {}", a.target))?
            .display()
            .to_string()
    };
    let body_target = target.clone();
    let body = RestoreBody {
        component: a.component.clone(),
        target,
        force: a.force,
        pfx: first.pfx,
        pfx_password: first.pfx_password,
        more_pfx: keys,
        allow_newer: a.allow_newer,
    };
    let j: Job = c.post(&format!("/backups/{}/restore", a.id), &body)?;
    // Given before the restore writes anything (older target server, --allow-newer).
    if !json {
        for w in &j.warnings {
            errln!("warning: {w}");
        }
    }
    let j = if a.no_wait {
        j
    } else {
        wait_job(&c, &j.id, "restore", !quiet && !json)?
    };
    if json {
        print_json(&j)?;
    } else {
        let done = match (&j.progress, j.status) {
            (_, JobStatus::Failed | JobStatus::Canceled) if j.bytes_read == 0 => String::new(),
            (Some(p), s) if s.is_final() => format!(
                " — {}, {} restored",
                count(p.files_done, "file"),
                human(j.bytes_read)
            ),
            (None, s) if s.is_final() => format!(" — {} restored", human(j.bytes_read)),
            _ => String::new(),
        };
        errln!(
            "restore {} of backup {} into {}: {}{done}",
            j.id,
            a.id,
            body_target,
            j.status.as_str()
        );
        for comp in &j.components {
            errln!(
                "  {}: {}{}",
                comp.name,
                comp.status.as_str(),
                comp.message
                    .as_deref()
                    .map(|m| format!(" — {m}"))
                    .unwrap_or_default()
            );
        }
        if let Some(e) = &j.error {
            errln!("  {e}");
        }
        outln!("{}", j.id);
    }
    Ok(if a.no_wait { exit::OK } else { job_code(&j) })
}

fn maintenance(a: MaintenanceArgs, json: bool) -> Result<i32> {
    let c = Client::new(&a.server);
    match a.cmd {
        MaintenanceCmd::Begin { operation } => {
            let m: Maintenance = c.post("/maintenance", &BeginMaintenance { operation })?;
            if json {
                return print_json(&m).map(|_| exit::OK);
            }
            maintenance_table(Some(&m));
        }
        MaintenanceCmd::End { outcome } => {
            let m: Option<Maintenance> = c.post("/maintenance/end", &EndMaintenance { outcome })?;
            if json {
                return print_json(&m).map(|_| exit::OK);
            }
            match &m {
                // A failed end leaves the operation recorded as failed: show it.
                Some(m) => maintenance_table(Some(m)),
                None => outln!("maintenance {} ended; backups run again", outcome.as_str()),
            }
        }
        MaintenanceCmd::Clear => {
            c.post_empty("/maintenance/clear")?;
            if json {
                return print_json(&None::<Maintenance>).map(|_| exit::OK);
            }
            outln!("maintenance cleared; backups run again");
        }
        MaintenanceCmd::Status => {
            let r: Readiness = c.get("/readiness")?;
            if json {
                return print_json(&r).map(|_| exit::OK);
            }
            maintenance_table(r.maintenance.as_ref());
            outln!();
            let job = match (&r.running_job, r.running_kind) {
                (Some(id), Some(k)) => format!("{} {id}", k.as_str()),
                (Some(id), None) => id.clone(),
                (None, _) => "-".into(),
            };
            table(
                &["FIELD", "VALUE"],
                &[
                    vec!["backup running".into(), yes_no(r.backup_running)],
                    vec!["running job".into(), job],
                ],
            );
        }
    }
    Ok(exit::OK)
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

/// The maintenance operation as a table with ISO times (or that none is active).
fn maintenance_table(m: Option<&Maintenance>) {
    let Some(m) = m else {
        outln!("no maintenance operation is active");
        return;
    };
    table(
        &["OPERATION", "STATE", "STARTED", "ENDED", "BY"],
        &[vec![
            m.operation.as_str().into(),
            wire(&m.state),
            time(Some(m.started_at)),
            time(m.ended_at),
            m.started_by.clone(),
        ]],
    );
}
