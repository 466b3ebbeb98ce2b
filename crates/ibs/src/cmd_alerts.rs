//! The alert and store commands of the API client: `ibs alerts list|close|reopen` and
//! `ibs store prune`. Conventions (JSON, tables, exit codes) are `cmd_client`'s.

use crate::api_client::{parse, Client};
use crate::cli_controller::{AlertsArgs, AlertsCmd, StoreArgs, StoreCmd};
use crate::cmd_client::{print_json, time};
use crate::output::{exit, table};
use anyhow::Result;
use ibs_types::{Alert, PruneReport, PruneRequest};

/// POSTs `/alerts/{id}/{action}` and prints the alert as it is now (JSON), or that it is `done`.
fn post_alert(c: &Client, id: i64, action: &str, done: &str, json: bool) -> Result<()> {
    let path = format!("/alerts/{id}/{action}");
    let x: Alert = parse(&path, &c.post_empty(&path)?)?;
    if json {
        print_json(&x)
    } else {
        outln!("alert {} {done}", x.id);
        Ok(())
    }
}

pub(crate) fn alerts(a: AlertsArgs, json: bool) -> Result<i32> {
    let c = Client::new(&a.server);
    match a.cmd {
        AlertsCmd::List { all } => {
            let list: Vec<Alert> = c.get(if all { "/alerts?state=all" } else { "/alerts" })?;
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
                outln!(
                    "\n[{}] {}\n  {}\n  Details: {}\n  Remediation: {}",
                    x.id,
                    x.title,
                    x.description,
                    x.details,
                    x.remediation
                );
            }
        }
        AlertsCmd::Close { id } => post_alert(
            &c,
            id,
            "close",
            "closed (it comes back if its cause persists)",
            json,
        )?,
        AlertsCmd::Reopen { id } => post_alert(
            &c,
            id,
            "reopen",
            "reopened (a condition alert whose cause is gone closes again at the next tick)",
            json,
        )?,
    }
    Ok(exit::OK)
}

pub(crate) fn store(a: StoreArgs, json: bool) -> Result<i32> {
    let c = Client::new(&a.server);
    let StoreCmd::Prune { dry_run } = a.cmd;
    let v: PruneReport = c.post("/store/prune", &PruneRequest { dry_run })?;
    if json {
        return print_json(&v).map(|_| exit::OK);
    }
    if v.paths.is_empty() {
        outln!("no unrecognised files");
    }
    for p in &v.paths {
        outln!("{} {p}", if dry_run { "would delete" } else { "deleted" });
    }
    Ok(exit::OK)
}
