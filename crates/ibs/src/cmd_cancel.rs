//! `ibs backup cancel ID` and `ibs jobs cancel ID`: ask the controller to stop a running job (a
//! backup, restore, verification or validation; ADR 0022) and, unless
//! `--no-wait`, follows the job to its end. Exit 0 when the job ended Canceled (or, with
//! `--no-wait`, still runs); 1 when it committed before the cancel took effect. Refusals (unknown
//! id, a job that already ended) come back as API errors and take the exit-code table's codes.

use anyhow::Result;
use ibs_types::{Job, JobStatus};

use crate::api_client::{parse, Client};
use crate::cmd_client::{print_json, wait_job};
use crate::output::exit;

pub(crate) fn cancel_job(c: &Client, id: &str, no_wait: bool, json: bool) -> Result<i32> {
    let path = format!("/jobs/{id}/cancel");
    let j: Job = parse(&path, &c.post_empty(&path)?)?;
    let j = if no_wait {
        j
    } else {
        wait_job(c, &j.id, "cancel", false)?
    };
    if json {
        print_json(&j)?;
    } else if no_wait {
        errln!("cancel requested; follow it with `ibs jobs show {}`", j.id);
    } else {
        errln!(
            "job {}: {}{}",
            j.id,
            j.status.as_str(),
            j.error
                .as_deref()
                .map(|e| format!(" — {e}"))
                .unwrap_or_default()
        );
    }
    Ok(match j.status {
        JobStatus::Canceled | JobStatus::Running => exit::OK,
        // It committed before the cancel took effect.
        _ => {
            errln!(
                "the job ended {} before the cancel took effect",
                j.status.as_str()
            );
            exit::FAILURE
        }
    })
}
