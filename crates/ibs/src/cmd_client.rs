//! The API client commands: `location`, `backup`, `restore`, `maintenance`, `alerts`, `store`. They
//! map the brief's PowerShell cmdlets one to one and talk to `ibs serve` over HTTP (`--server` or
//! $IBS_SERVER; the token from $IBS_TOKEN, never argv). `--json` prints the API's JSON; otherwise
//! aligned tables. Exit codes: 0 ok, 1 failure, 2 rejected input (HTTP 400), 3 partial success,
//! 6 conflict (HTTP 409), 12–14 etc. as for `ibs repo` when a backup failed with that alert class.

use crate::cli::Command;
use crate::cli_controller::*;
use crate::output::{exit, human, table, Bar};
use crate::secrets;
use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use ibs_controller::alerts::Alert;
use ibs_controller::model::{Job, JobStatus};
use ibs_engine::Progress;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// An HTTP error from the controller, with its status code.
#[derive(Debug)]
pub struct HttpError {
    pub status: u16,
    pub message: String,
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.message)
    }
}
impl std::error::Error for HttpError {}

struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    fn new(server: &Server) -> Client {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)));
        // A controller with a self-signed TLS certificate: trust it through $IBS_CA_CERT (PEM).
        if let Some(ca) = std::env::var_os("IBS_CA_CERT") {
            if let Ok(pem) = std::fs::read(&ca) {
                let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                    .filter_map(|i| match i {
                        Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                        _ => None,
                    })
                    .collect();
                let tls = ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build();
                config = config.tls_config(tls);
            }
        }
        let agent: ureq::Agent = config.build().into();
        Client {
            base: server.server.trim_end_matches('/').to_string(),
            token: std::env::var("IBS_TOKEN").ok(),
            agent,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        if let Some(b) = &body {
            crate::client_guard::refuse_cleartext_secrets(&self.base, b)?;
        }
        let url = format!("{}/api/v1{path}", self.base);
        let auth = format!("Bearer {}", self.token.as_deref().unwrap_or(""));
        let result = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            ("POST", Some(b)) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send_json(b),
            ("POST", None) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send_empty(),
            ("PUT", Some(b)) => self
                .agent
                .put(&url)
                .header("Authorization", &auth)
                .send_json(b),
            ("DELETE", None) => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .call(),
            _ => bail!("unsupported request {method} {path}"),
        };
        let mut resp = result.map_err(|e| {
            anyhow!(
                "cannot reach the controller at {}: {e} (set --server or IBS_SERVER)",
                self.base
            )
        })?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status >= 400 {
            let mut message = value["error"]["message"]
                .as_str()
                .unwrap_or(text.trim())
                .to_string();
            if status == 401 && self.token.is_none() {
                message.push_str(" — set IBS_TOKEN (create one with `ibs token create --role …` on the controller host)");
            }
            if let Some(list) = value["error"]["details"]["would_delete"].as_array() {
                let ids: Vec<_> = list.iter().filter_map(Value::as_str).collect();
                message.push_str(&format!("\nwould delete: {}", ids.join(", ")));
            }
            if let Some(r) = value["error"]["details"]["remediation"].as_str() {
                message.push_str(&format!(
                    "\n{} Remediation: {r}",
                    value["error"]["details"]["title"].as_str().unwrap_or("")
                ));
            }
            return Err(HttpError { status, message }.into());
        }
        Ok(value)
    }
}

/// Exit code for a client error (HTTP status aware).
pub fn code_for(err: &anyhow::Error) -> Option<i32> {
    err.downcast_ref::<HttpError>().map(|e| match e.status {
        400 => 2,
        409 => exit::LOCKED,
        _ => exit::FAILURE,
    })
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string(v)?);
    Ok(())
}

fn time(t: Option<i64>) -> String {
    t.map(ibs_repo::clock::rfc3339)
        .unwrap_or_else(|| "-".into())
}

fn duration(ms: Option<u64>) -> String {
    match ms {
        Some(ms) => {
            let s = ms / 1000;
            format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
        }
        None => "-".into(),
    }
}

pub fn run(cmd: Command, json: bool, quiet: bool) -> Result<i32> {
    let r = match cmd {
        Command::Location(a) => location(a, json),
        Command::Backup(a) => backup(a, json, quiet),
        Command::Restore(a) => restore(a, json, quiet),
        Command::Maintenance(a) => maintenance(a, json),
        Command::Alerts(a) => alerts(a, json),
        Command::Store(a) => store(a, json),
        _ => unreachable!("dispatched in main"),
    };
    match r {
        Err(e) if code_for(&e).is_some() => {
            eprintln!("error: {e:#}");
            Ok(code_for(&e).unwrap_or(exit::FAILURE))
        }
        other => other,
    }
}

fn location(a: LocationArgs, json: bool) -> Result<i32> {
    let c = Client::new(&a.server);
    let v = match a.cmd {
        LocationCmd::Show => c.call("GET", "/location", None)?,
        LocationCmd::Clear => {
            let v = c.call("DELETE", "/location", None)?;
            if !json {
                eprintln!("location cleared: no share, credentials deleted, automatic backups off");
            }
            v
        }
        LocationCmd::Set {
            path,
            username,
            cert,
            key_file,
            frequency_hours,
            retention_days,
            scheduler,
            confirm,
        } => {
            let mut body = json!({ "confirm": confirm });
            if let Some(p) = path {
                body["path"] = json!(p);
            }
            if let Some(u) = username {
                body["username"] = json!(u);
                body["password"] = json!(secrets::share_password(None)?);
            } else if let Ok(p) = std::env::var("IBS_SHARE_PASSWORD") {
                body["password"] = json!(p);
            }
            if let Some(f) = cert {
                let bytes =
                    std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
                body["certificate"] =
                    json!(base64::engine::general_purpose::STANDARD.encode(bytes));
            }
            if let Some(f) = key_file {
                body["legacy_key"] = json!(std::fs::read_to_string(&f)
                    .with_context(|| format!("reading {}", f.display()))?);
            }
            if let Some(n) = frequency_hours {
                body["frequency_hours"] = json!(n);
            }
            if let Some(n) = retention_days {
                body["retention_days"] = json!(n);
            }
            if let Some(s) = scheduler {
                body["scheduler_enabled"] = json!(s == "on");
            }
            c.call("PUT", "/location", Some(body))?
        }
    };
    if json {
        return print_json(&v).map(|_| exit::OK);
    }
    let s = |k: &str| match &v[k] {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let rows: Vec<Vec<String>> = vec![
        vec!["path".into(), s("path")],
        vec!["username".into(), s("username")],
        vec![
            "password".into(),
            if v["password_set"] == json!(true) {
                "(set)".into()
            } else {
                "-".into()
            },
        ],
        vec!["encryption".into(), s("encryption_mode")],
        vec![
            "certificate".into(),
            v["certificate"]["thumbprint"]
                .as_str()
                .map(|t| {
                    format!(
                        "{t} ({}, expires {})",
                        v["certificate"]["subject"].as_str().unwrap_or(""),
                        v["certificate"]["expires"].as_str().unwrap_or("")
                    )
                })
                .unwrap_or("-".into()),
        ],
        vec!["frequency".into(), format!("{} h", s("frequency_hours"))],
        vec!["retention".into(), format!("{} days", s("retention_days"))],
        vec![
            "scheduler".into(),
            if v["scheduler_enabled"] == json!(true) {
                "on".into()
            } else {
                "OFF".into()
            },
        ],
        vec![
            "available".into(),
            v["available_bytes"]
                .as_u64()
                .map(human)
                .unwrap_or("-".into()),
        ],
        vec![
            "total".into(),
            v["total_bytes"].as_u64().map(human).unwrap_or("-".into()),
        ],
        vec!["next backup".into(), s("next_backup_time")],
        vec!["last backup".into(), s("last_backup_time")],
    ];
    table(&["SETTING", "VALUE"], &rows);
    for w in v["warnings"].as_array().into_iter().flatten() {
        eprintln!("warning: {}", w.as_str().unwrap_or(""));
    }
    Ok(exit::OK)
}

fn job_code(j: &Job) -> i32 {
    match j.status {
        JobStatus::Succeeded => exit::OK,
        JobStatus::PartialSucceeded => exit::PARTIAL,
        _ => match j.alert_class.as_deref() {
            Some("capacity") => exit::CAPACITY,
            Some("connectivity") => exit::CONNECTIVITY,
            Some("path") => exit::PATH,
            Some("authentication") => exit::AUTHENTICATION,
            _ => exit::FAILURE,
        },
    }
}

/// Polls a job until it ends, feeding a progress bar.
fn wait_job(c: &Client, id: &str, label: &'static str, bar_on: bool) -> Result<Job> {
    let progress = Arc::new(Progress::default());
    let bar = Bar::start(progress.clone(), label, bar_on);
    let mut seen = ibs_controller::model::JobProgress::default();
    let job = loop {
        let j: Job = serde_json::from_value(c.call("GET", &format!("/jobs/{id}"), None)?)?;
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
fn status_text(j: &Job) -> String {
    match &j.corrupted {
        Some(_) => format!("Corrupted ({})", j.status.as_str()),
        None => j.status.as_str().into(),
    }
}

fn show_job(j: &Job) {
    let mut rows = vec![
        vec!["id".into(), j.id.clone()],
        vec!["status".into(), status_text(j)],
        vec![
            "trigger".into(),
            serde_json::to_value(j.trigger)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
        ],
        vec!["started".into(), time(j.started_at)],
        vec!["duration".into(), duration(j.duration_ms)],
        vec!["bytes read".into(), human(j.bytes_read)],
        vec!["bytes stored".into(), human(j.bytes_stored)],
        vec![
            "certificate".into(),
            j.certificate_thumbprint.clone().unwrap_or("-".into()),
        ],
        vec![
            "cloud recovery ready".into(),
            j.is_cloud_recovery_ready.to_string(),
        ],
        vec![
            "repository backup".into(),
            j.backup_id.clone().unwrap_or("-".into()),
        ],
        vec!["error".into(), j.error.clone().unwrap_or("-".into())],
    ];
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
        println!();
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
            let j: Job = serde_json::from_value(c.call("POST", "/backups", None)?)?;
            let j = if wait {
                wait_job(&c, &j.id, "backup", !quiet && !json)?
            } else {
                j
            };
            if json {
                print_json(&j)?;
            } else {
                if wait {
                    eprintln!(
                        "backup {}: {}{}",
                        j.id,
                        j.status.as_str(),
                        j.error
                            .as_deref()
                            .map(|e| format!(" — {e}"))
                            .unwrap_or_default()
                    );
                } else {
                    eprintln!("backup started; follow it with `ibs backup show {}`", j.id);
                }
                println!("{}", j.id);
            }
            Ok(if wait { job_code(&j) } else { exit::OK })
        }
        BackupCmd::List => {
            let list: Vec<Job> = serde_json::from_value(c.call("GET", "/backups", None)?)?;
            if json {
                return print_json(&list).map(|_| exit::OK);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|j| {
                    vec![
                        j.id.clone(),
                        status_text(j),
                        serde_json::to_value(j.trigger)
                            .ok()
                            .and_then(|v| v.as_str().map(String::from))
                            .unwrap_or_default(),
                        time(j.started_at),
                        duration(j.duration_ms),
                        human(j.bytes_stored),
                        if j.is_cloud_recovery_ready {
                            "yes".into()
                        } else {
                            "no".into()
                        },
                    ]
                })
                .collect();
            table(
                &[
                    "ID",
                    "STATUS",
                    "TRIGGER",
                    "STARTED",
                    "DURATION",
                    "STORED",
                    "RECOVERY-READY",
                ],
                &rows,
            );
            Ok(exit::OK)
        }
        BackupCmd::Show { id } => {
            let j: Job = serde_json::from_value(c.call("GET", &format!("/backups/{id}"), None)?)?;
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
        keys.push(json!({
            "pfx": base64::engine::general_purpose::STANDARD.encode(&pfx),
            "pfx_password": password,
        }));
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
    let body = json!({
        "component": a.component,
        "target": target,
        "force": a.force,
        "pfx": first["pfx"],
        "pfx_password": first["pfx_password"],
        "more_pfx": keys,
    });
    let j: Job = serde_json::from_value(c.call(
        "POST",
        &format!("/backups/{}/restore", a.id),
        Some(body),
    )?)?;
    let j = if a.no_wait {
        j
    } else {
        wait_job(&c, &j.id, "restore", !quiet && !json)?
    };
    if json {
        print_json(&j)?;
    } else {
        eprintln!("restore {} of backup {}: {}", j.id, a.id, j.status.as_str());
        for comp in &j.components {
            eprintln!(
                "  {}: {}{}",
                comp.name,
                comp.status.as_str(),
                comp.message
                    .as_deref()
                    .map(|m| format!(" — {m}"))
                    .unwrap_or_default()
            );
        }
        println!("{}", j.id);
    }
    Ok(if a.no_wait { exit::OK } else { job_code(&j) })
}

fn maintenance(a: MaintenanceArgs, json: bool) -> Result<i32> {
    let c = Client::new(&a.server);
    let v = match a.cmd {
        MaintenanceCmd::Begin { operation } => c.call(
            "POST",
            "/maintenance",
            Some(json!({ "operation": operation })),
        )?,
        MaintenanceCmd::End { outcome } => c.call(
            "POST",
            "/maintenance/end",
            Some(json!({ "outcome": outcome })),
        )?,
        MaintenanceCmd::Clear => c.call("POST", "/maintenance/clear", None)?,
        MaintenanceCmd::Status => c.call("GET", "/readiness", None)?,
    };
    if json {
        print_json(&v)?;
    } else if v.is_null() {
        println!("no maintenance operation is active");
    } else {
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(exit::OK)
}

fn alerts(a: AlertsArgs, json: bool) -> Result<i32> {
    let c = Client::new(&a.server);
    match a.cmd {
        AlertsCmd::List { all } => {
            let list: Vec<Alert> = serde_json::from_value(c.call(
                "GET",
                if all { "/alerts?state=all" } else { "/alerts" },
                None,
            )?)?;
            if json {
                return print_json(&list).map(|_| exit::OK);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|x| {
                    vec![
                        x.id.to_string(),
                        x.severity.clone(),
                        x.state.clone(),
                        time(Some(x.raised_at)),
                        x.kind.clone(),
                        x.title.clone(),
                    ]
                })
                .collect();
            table(
                &["ID", "SEVERITY", "STATE", "RAISED", "KIND", "TITLE"],
                &rows,
            );
            for x in list.iter().filter(|x| x.state == "open") {
                println!(
                    "\n[{}] {}\n  {}\n  Details: {}\n  Remediation: {}",
                    x.id, x.title, x.description, x.details, x.remediation
                );
            }
        }
        AlertsCmd::Close { id } => {
            let x: Alert =
                serde_json::from_value(c.call("POST", &format!("/alerts/{id}/close"), None)?)?;
            if json {
                print_json(&x)?;
            } else {
                println!(
                    "alert {} closed (it comes back if its cause persists)",
                    x.id
                );
            }
        }
    }
    Ok(exit::OK)
}

fn store(a: StoreArgs, json: bool) -> Result<i32> {
    let c = Client::new(&a.server);
    let StoreCmd::Prune { dry_run } = a.cmd;
    let v = c.call("POST", "/store/prune", Some(json!({ "dry_run": dry_run })))?;
    if json {
        return print_json(&v).map(|_| exit::OK);
    }
    let paths: Vec<&str> = v["paths"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if paths.is_empty() {
        println!("no unrecognised files");
    }
    for p in &paths {
        println!("{} {p}", if dry_run { "would delete" } else { "deleted" });
    }
    Ok(exit::OK)
}
