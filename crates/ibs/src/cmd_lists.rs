//! The paged list commands and the job commands beside them: `jobs list|show`, `operations`,
//! `audit`, `components`, `verification status|start|packs`, `backup list` and `backup validate`.
//! Each list takes `--limit`, `--cursor` and `--all` ([`PageArgs`]); one page is printed unless
//! `--all` follows the `X-Next-Cursor` of each page to the end. When more rows follow a printed
//! page, the cursor to continue with goes to stderr, so stdout stays the table or the JSON array.

use crate::api_client::{parse, Client};
use crate::cli_controller::*;
use crate::cmd_client::{duration, job_code, print_json, show_job, status_text, time, wait_job};
use crate::output::{exit, human, table};
use anyhow::{Context, Result};
use base64::Engine as _;
use ibs_types::{
    AuditRecord, ComponentView, Job, Operation, PackCheck, ValidateBody, VerificationStatus,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Percent-encodes a query value (a cursor is URL-safe already; anything typed is made so).
fn query_value(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One page (or with `--all` every page from `--cursor` on) of `path`, which may carry a query;
/// with the cursor of the page after the last one fetched, if any.
fn fetch<T: DeserializeOwned>(
    c: &Client,
    path: &str,
    p: &PageArgs,
) -> Result<(Vec<T>, Option<String>)> {
    let mut out = Vec::new();
    let mut cursor = p.cursor.clone();
    loop {
        let mut q: Vec<String> = Vec::new();
        if let Some(l) = p.limit {
            q.push(format!("limit={l}"));
        }
        if let Some(cur) = &cursor {
            q.push(format!("cursor={}", query_value(cur)));
        }
        let url = match (q.is_empty(), path.contains('?')) {
            (true, _) => path.to_string(),
            (false, true) => format!("{path}&{}", q.join("&")),
            (false, false) => format!("{path}?{}", q.join("&")),
        };
        let (rows, next) = c.get_page::<T>(&url)?;
        out.extend(rows);
        match next {
            Some(n) if p.all => cursor = Some(n),
            other => return Ok((out, other)),
        }
    }
}

/// Prints a list as JSON or through `rows` as a table, then where the next page starts.
fn print_list<T: Serialize>(
    json: bool,
    list: &[T],
    next: Option<String>,
    header: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) -> Result<i32> {
    if json {
        print_json(&list)?;
    } else {
        let rows: Vec<Vec<String>> = list.iter().map(row).collect();
        table(header, &rows);
    }
    if let Some(n) = next {
        errln!("more rows follow: repeat with --cursor {n} (or --all)");
    }
    Ok(exit::OK)
}

fn trigger_text(j: &Job) -> String {
    serde_json::to_value(j.trigger)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

pub fn backup_list(c: &Client, page: &PageArgs, json: bool) -> Result<i32> {
    let (list, next) = fetch::<Job>(c, "/backups", page)?;
    print_list(
        json,
        &list,
        next,
        &[
            "ID",
            "STATUS",
            "TRIGGER",
            "STARTED",
            "DURATION",
            "STORED",
            "RECOVERY-READY",
            "LOCATION",
        ],
        |j| {
            vec![
                j.id.clone(),
                status_text(j),
                trigger_text(j),
                time(j.started_at),
                duration(j.duration_ms),
                human(j.bytes_stored),
                if j.recovery_ready { "yes" } else { "no" }.into(),
                crate::cmd_client::location_text(j),
            ]
        },
    )
}

/// `ibs backup validate ID --pfx FILE`: starts the validation job, waits for it unless
/// `--no-wait`, and says where the reports are.
pub fn backup_validate(
    c: &Client,
    id: &str,
    pfx: &std::path::Path,
    password_file: Option<&std::path::Path>,
    no_wait: bool,
    json: bool,
    quiet: bool,
) -> Result<i32> {
    let bytes = std::fs::read(pfx).with_context(|| format!("reading {}", pfx.display()))?;
    let body = ValidateBody {
        pfx: base64::engine::general_purpose::STANDARD.encode(&bytes),
        pfx_password: crate::secrets::pfx_password(password_file, false)?,
    };
    let j: Job = c.post(&format!("/backups/{id}/validate"), &body)?;
    let j = if no_wait {
        j
    } else {
        wait_job(c, &j.id, "validate", !quiet && !json)?
    };
    if json {
        print_json(&j)?;
    } else {
        errln!(
            "validation {} of backup {id}: {}{}",
            j.id,
            j.status.as_str(),
            j.error
                .as_deref()
                .map(|e| format!(" — {e}"))
                .unwrap_or_default()
        );
        errln!(
            "reports: /api/v1/jobs/{0}/report and /api/v1/jobs/{0}/report.html",
            j.id
        );
        outln!("{}", j.id);
    }
    Ok(if no_wait { exit::OK } else { job_code(&j) })
}

pub fn jobs(a: JobsArgs, json: bool) -> Result<i32> {
    let c = Client::new(&a.server);
    match a.cmd {
        JobsCmd::List { page } => {
            let (list, next) = fetch::<Job>(&c, "/jobs", &page)?;
            print_list(
                json,
                &list,
                next,
                &[
                    "ID", "KIND", "STATUS", "TRIGGER", "STARTED", "DURATION", "STORED",
                ],
                |j| {
                    vec![
                        j.id.clone(),
                        serde_json::to_value(j.kind)
                            .ok()
                            .and_then(|v| v.as_str().map(String::from))
                            .unwrap_or_default(),
                        status_text(j),
                        trigger_text(j),
                        time(j.started_at),
                        duration(j.duration_ms),
                        human(j.bytes_stored),
                    ]
                },
            )
        }
        JobsCmd::Show { id } => {
            let j: Job = c.get(&format!("/jobs/{}", query_value(&id)))?;
            if json {
                print_json(&j)?;
            } else {
                show_job(&j);
            }
            Ok(exit::OK)
        }
        JobsCmd::Cancel { id, no_wait } => crate::cmd_cancel::cancel_job(&c, &id, no_wait, json),
    }
}

fn progress_text(o: &Operation) -> String {
    match o.progress {
        Some(p) => match p.percent {
            Some(pc) => format!("{pc:.0}% of {}", human(p.bytes_total)),
            None => human(p.bytes_done),
        },
        None => "-".into(),
    }
}

pub fn operations(a: OperationsArgs, json: bool) -> Result<i32> {
    let c = Client::new(&a.server);
    let mut q = Vec::new();
    if a.running {
        q.push("running=true".to_string());
    }
    if let Some(k) = &a.kind {
        q.push(format!("kind={}", query_value(k)));
    }
    let path = if q.is_empty() {
        "/operations".to_string()
    } else {
        format!("/operations?{}", q.join("&"))
    };
    let (list, next) = fetch::<Operation>(&c, &path, &a.page)?;
    print_list(
        json,
        &list,
        next,
        &[
            "ID", "KIND", "STATUS", "STARTED", "ENDED", "TRIGGER", "PROGRESS", "DETAIL",
        ],
        |o| {
            vec![
                o.id.clone(),
                o.kind.as_str().into(),
                o.status.as_str().into(),
                time(Some(o.started_at)),
                time(o.ended_at),
                o.trigger.clone(),
                progress_text(o),
                o.detail.clone().unwrap_or_else(|| "-".into()),
            ]
        },
    )
}

pub fn audit(a: ListArgs, json: bool) -> Result<i32> {
    let c = Client::new(&a.server);
    let (list, next) = fetch::<AuditRecord>(&c, "/audit", &a.page)?;
    print_list(
        json,
        &list,
        next,
        &["ID", "AT", "ACTOR", "ACTION", "FIELDS"],
        |r| {
            vec![
                r.id.to_string(),
                time(Some(r.at)),
                r.actor.clone(),
                r.action.clone(),
                r.fields.join(", "),
            ]
        },
    )
}

pub fn components(a: ListArgs, json: bool) -> Result<i32> {
    let c = Client::new(&a.server);
    let (list, next) = fetch::<ComponentView>(&c, "/components", &a.page)?;
    print_list(
        json,
        &list,
        next,
        &["NAME", "KIND", "SOURCE", "ESSENTIAL", "WHAT"],
        |v| {
            let what = if !v.paths.is_empty() {
                v.paths.join(", ")
            } else {
                v.url
                    .clone()
                    .or_else(|| v.path.clone())
                    .unwrap_or("-".into())
            };
            vec![
                v.name.clone(),
                v.kind.clone(),
                v.source.clone(),
                v.essential_for_recovery.to_string(),
                what,
            ]
        },
    )
}

pub fn verification(a: VerificationArgs, json: bool, quiet: bool) -> Result<i32> {
    let c = Client::new(&a.server);
    match a.cmd {
        VerificationCmd::Status => {
            let v: VerificationStatus = c.get("/verification")?;
            if json {
                return print_json(&v).map(|_| exit::OK);
            }
            let pct = |f: f64| format!("{:.0}%", f * 100.0);
            let s = |o: &Option<i64>| {
                o.map(ibs_repo::clock::rfc3339)
                    .unwrap_or_else(|| "-".into())
            };
            let rows = vec![
                vec!["every".into(), format!("{} h", v.verify_every_hours)],
                vec!["sample".into(), format!("{}%", v.verify_sample_percent)],
                vec!["next".into(), s(&v.next_verification_time)],
                vec![
                    "last run".into(),
                    v.last_run
                        .as_ref()
                        .map(|j| format!("{} ({})", j.id, j.status.as_str()))
                        .unwrap_or("-".into()),
                ],
                vec![
                    "packs".into(),
                    format!("{} recorded of {}", v.packs_recorded, v.packs_total),
                ],
                vec!["coverage (ever)".into(), pct(v.coverage_ever)],
                vec!["coverage (window)".into(), pct(v.coverage_window)],
                vec!["oldest verified".into(), s(&v.oldest_verified_at)],
                vec!["damaged packs".into(), v.damaged.len().to_string()],
                vec![
                    "corrupted backups".into(),
                    if v.corrupted_backups.is_empty() {
                        "-".into()
                    } else {
                        v.corrupted_backups.join(", ")
                    },
                ],
            ];
            table(&["FIELD", "VALUE"], &rows);
            Ok(exit::OK)
        }
        VerificationCmd::Start { wait } => {
            let j: Job = parse("/verification", &c.post_empty("/verification")?)?;
            let j = if wait {
                wait_job(&c, &j.id, "verify", !quiet && !json)?
            } else {
                j
            };
            if json {
                print_json(&j)?;
            } else {
                errln!("verification {}: {}", j.id, j.status.as_str());
                outln!("{}", j.id);
            }
            Ok(if wait { job_code(&j) } else { exit::OK })
        }
        VerificationCmd::Packs { page } => {
            let (list, next) = fetch::<PackCheck>(&c, "/verification/packs", &page)?;
            print_list(
                json,
                &list,
                next,
                &["PACK", "VERIFIED", "OK", "CHECKS", "BYTES", "REASON"],
                |p| {
                    vec![
                        p.pack.clone(),
                        time(Some(p.verified_at)),
                        p.ok.to_string(),
                        p.checks.to_string(),
                        human(p.bytes),
                        p.reason.clone().unwrap_or_else(|| "-".into()),
                    ]
                },
            )
        }
    }
}
