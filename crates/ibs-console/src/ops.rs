//! The operations pages: maintenance (state; begin and end for operators, clearing a failed
//! operation for admins), verification (coverage, damaged packs, Corrupted backups; "Verify now"
//! for operators) and components (read-only). Each reads and acts through the API's handlers
//! with the session's caller, so the API's role rules decide: a control the page hides is still
//! refused by the server.
//!
//! Components are shown from the API's `ComponentView`, which carries no hook, command or secret
//! (only `*_set` flags): the console cannot show a hook command because it never receives one.

use crate::actions::{Empty, Post};
use crate::pages::{or_page, PageResult};
use crate::view::{self, job_row};
use crate::{render, user_ctx, ConsoleState, Signed};
use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Redirect};
use ibs_api::auth::ApiJson;
use ibs_api::routes::{admin, backups as api_backups, location};
use ibs_types::{BeginMaintenance, EndMaintenance, MaintenanceOp, MaintenanceOutcome, PageQuery};
use minijinja::context;
use serde::Deserialize;

pub async fn maintenance(State(st): State<ConsoleState>, s: Signed) -> PageResult {
    let ready = or_page(
        &s,
        admin::readiness(State(st.api.clone()), s.caller.clone()).await,
    )?
    .0;
    let m = ready.maintenance.as_ref().map(|m| {
        serde_json::json!({
            "operation": m.operation.as_str(),
            "state": if m.is_failed() { "failed" } else { "active" },
            "started_at": m.started_at,
            "ended_at": m.ended_at,
            "started_by": m.started_by,
            "reason": m.skip_reason(),
        })
    });
    let ctx = context! {
        m => m,
        running_job => ready.running_job,
        running_kind => ready.running_kind.map(|k| k.as_str()),
        ..user_ctx(&s, "maintenance")
    };
    Ok(render(StatusCode::OK, "maintenance.html", ctx))
}

#[derive(Deserialize)]
pub struct BeginForm {
    operation: String,
}

/// Begins a maintenance operation through `POST /api/v1/maintenance` (operator).
pub async fn begin(State(st): State<ConsoleState>, p: Post<BeginForm>) -> PageResult {
    let s = &p.signed;
    // The role first, as the API's handler would check it before reading its body.
    or_page(s, s.caller.require(ibs_types::Role::Operator))?;
    let operation = or_page(
        s,
        MaintenanceOp::parse(&p.form.operation).ok_or_else(|| {
            ibs_api::error::ApiError::bad_request(
                "operation",
                format!(
                    "operation: {:?} is not update, fru or secret-rotation",
                    p.form.operation
                ),
            )
        }),
    )?;
    let _begun = or_page(
        s,
        admin::begin(
            State(st.api.clone()),
            s.caller.clone(),
            ApiJson(BeginMaintenance { operation }),
        )
        .await,
    )?;
    Ok(Redirect::to("/maintenance").into_response())
}

#[derive(Deserialize)]
pub struct EndForm {
    outcome: String,
}

/// Ends the operation through `POST /api/v1/maintenance/end` (operator; admin once it failed).
pub async fn end(State(st): State<ConsoleState>, p: Post<EndForm>) -> PageResult {
    let s = &p.signed;
    or_page(s, s.caller.require(ibs_types::Role::Operator))?;
    let outcome = or_page(
        s,
        MaintenanceOutcome::parse(&p.form.outcome).ok_or_else(|| {
            ibs_api::error::ApiError::bad_request(
                "outcome",
                format!("outcome: {:?} is not succeeded or failed", p.form.outcome),
            )
        }),
    )?;
    let _ended = or_page(
        s,
        admin::end_post(
            State(st.api.clone()),
            s.caller.clone(),
            ApiJson(EndMaintenance { outcome }),
        )
        .await,
    )?;
    Ok(Redirect::to("/maintenance").into_response())
}

/// Clears a failed operation through `POST /api/v1/maintenance/clear` (admin).
pub async fn clear(State(st): State<ConsoleState>, p: Post<Empty>) -> PageResult {
    let s = &p.signed;
    or_page(
        s,
        admin::clear(State(st.api.clone()), s.caller.clone()).await,
    )?;
    Ok(Redirect::to("/maintenance").into_response())
}

pub async fn verification(State(st): State<ConsoleState>, s: Signed) -> PageResult {
    let v = or_page(
        &s,
        api_backups::verification(State(st.api.clone()), s.caller.clone()).await,
    )?
    .0;
    let damaged: Vec<_> = v
        .damaged
        .iter()
        .map(|p| {
            serde_json::json!({
                "pack": p.pack, "verified_at": p.verified_at, "reason": p.reason,
                "size": view::bytes(p.bytes), "checks": p.checks,
            })
        })
        .collect();
    let ctx = context! {
        every_hours => v.verify_every_hours,
        sample_percent => v.verify_sample_percent,
        next => v.next_verification_time,
        last_run => v.last_run.as_ref().map(job_row),
        packs_recorded => v.packs_recorded,
        packs_total => v.packs_total,
        coverage_ever => format!("{:.1}", v.coverage_ever * 100.0),
        coverage_window => format!("{:.1}", v.coverage_window * 100.0),
        oldest => v.oldest_verified_at,
        newest => v.newest_verified_at,
        damaged => damaged,
        corrupted => v.corrupted_backups,
        ..user_ctx(&s, "verification")
    };
    Ok(render(StatusCode::OK, "verification.html", ctx))
}

/// "Verify now": `POST /api/v1/verification` (operator); the job's page follows it.
pub async fn verify_now(State(st): State<ConsoleState>, p: Post<Empty>) -> PageResult {
    let s = &p.signed;
    let (_, job) = or_page(
        s,
        api_backups::start_verification(State(st.api.clone()), s.caller.clone()).await,
    )?;
    Ok(Redirect::to(&format!("/jobs/{}", job.0.id)).into_response())
}

pub async fn components(State(st): State<ConsoleState>, s: Signed) -> PageResult {
    let list = or_page(
        &s,
        location::get_components(
            State(st.api.clone()),
            s.caller.clone(),
            Uri::from_static("/api/v1/components"),
            Query(PageQuery {
                limit: Some("1000".into()),
                cursor: None,
            }),
        )
        .await,
    )?
    .into_parts()
    .0;
    let rows: Vec<_> = list
        .iter()
        .map(|c| {
            serde_json::json!({
                "name": c.name, "kind": c.kind, "source": c.source,
                "what": if c.paths.is_empty() { c.url.clone().or(c.path.clone()).unwrap_or_default() } else { c.paths.join(", ") },
                "essential": c.essential_for_recovery, "priority": c.priority,
                "hooks": c.pre_hook_set || c.post_hook_set,
                "commands": c.commands_set,
                "password": c.password_set,
            })
        })
        .collect();
    let ctx = context! { components => rows, ..user_ctx(&s, "components") };
    Ok(render(StatusCode::OK, "components.html", ctx))
}
