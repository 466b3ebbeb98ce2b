//! Restore and validate (admin), and any job's page: choose a backup and a component, upload the
//! backup certificate's .pfx and type its password, start the job through the API's own handlers
//! (`POST /api/v1/backups/{id}/restore` and `/validate`, the same jobs as the REST API), follow
//! its progress, see its result, and download a validation's report.
//!
//! Invariant: the .pfx and its password exist only in the memory of the request that starts the
//! job ([`crate::form::Upload`], zeroing buffers), are handed to the API handler as its request
//! body (the job keeps them for its run, as for a REST call), and are never written to disk, to
//! the log, to the session store or back into a page: a refused form is shown again without them.

use crate::form::Upload;
use crate::pages::{list_backups, or_page, PageResult};
use crate::view::{self, job_row};
use crate::{error_page, render, user_ctx, ConsoleState, Signed};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use ibs_api::auth::ApiJson;
use ibs_api::error::ApiError;
use ibs_api::routes::backups as api_backups;
use ibs_types::{Job, JobKind, JobStatus, RestoreBody, ValidateBody};
use minijinja::context;
use serde::Deserialize;
use zeroize::Zeroizing;

#[derive(Deserialize)]
pub struct ChooseQuery {
    backup: Option<String>,
}

/// A backup a restore or validation can use: it ended with data and retention has not deleted it.
/// A backup this controller can restore: it succeeded (at least partly), retention has not
/// removed it, and it is at the current location (one at a previous location is refused; its
/// page says where it is).
fn usable(j: &Job) -> bool {
    j.kind == JobKind::Backup
        && matches!(j.status, JobStatus::Succeeded | JobStatus::PartialSucceeded)
        && j.deleted_at.is_none()
        && !j.previous_location
}

/// The error shown beside one field of the restore or validation form.
#[derive(Default)]
struct FieldError {
    form: &'static str,
    field: String,
    message: String,
}

async fn recovery_page(
    st: &ConsoleState,
    s: &Signed,
    chosen: Option<String>,
    component: Option<String>,
    target: Option<String>,
    err: Option<FieldError>,
) -> PageResult {
    let (recent, _) = list_backups(st, s, 100, None).await?;
    let backups: Vec<&Job> = recent.iter().filter(|j| usable(j)).collect();
    let elsewhere = recent.iter().filter(|j| j.previous_location).count();
    let pick = chosen
        .as_deref()
        .and_then(|id| backups.iter().find(|j| j.id == id))
        .or(backups.first())
        .copied();
    let components: Vec<String> = pick
        .map(|j| j.components.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    let default_target = pick.and_then(|j| {
        st.api
            .ctl
            .restore_roots()
            .first()
            .map(|r| r.join(format!("restore-{}", j.id)).display().to_string())
    });
    let err = err.unwrap_or_default();
    let ctx = context! {
        backups => backups.iter().map(|j| job_row(j)).collect::<Vec<_>>(),
        chosen => pick.map(|j| j.id.clone()),
        elsewhere => elsewhere,
        components => components,
        component => component.unwrap_or_default(),
        target => target.or(default_target).unwrap_or_default(),
        roots => st.api.ctl.restore_roots().iter().map(|r| r.display().to_string()).collect::<Vec<_>>(),
        error_form => err.form,
        error_field => err.field,
        error_message => err.message,
        ..user_ctx(s, "restore")
    };
    Ok(render(StatusCode::OK, "restore.html", ctx))
}

pub async fn restore_page(
    State(st): State<ConsoleState>,
    s: Signed,
    Query(q): Query<ChooseQuery>,
) -> PageResult {
    recovery_page(&st, &s, q.backup, None, None, None).await
}

/// The uploaded .pfx as the API's base64 body field (in a zeroing buffer), or the form's error.
fn pfx_field(up: &Upload, form: &'static str) -> Result<Zeroizing<String>, FieldError> {
    match up.file("pfx") {
        Some(f) => Ok(Zeroizing::new(
            base64::engine::general_purpose::STANDARD.encode(&f.data[..]),
        )),
        None => Err(FieldError {
            form,
            field: "pfx".into(),
            message: "pfx: choose the .pfx file of the backup's certificate".into(),
        }),
    }
}

/// The API's refusal of a form: beside its field when it names one, else as a page.
fn refusal(s: &Signed, form: &'static str, e: ApiError) -> Result<FieldError, Response> {
    match (&e.field, e.status) {
        (Some(f), StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE) => Ok(FieldError {
            form,
            field: f.clone(),
            message: e.message,
        }),
        _ => Err(error_page(Some(s), &e)),
    }
}

/// Starts a restore with the API's handler; the job's page follows.
pub async fn restore(State(st): State<ConsoleState>, up: Upload) -> PageResult {
    let s = &up.signed;
    // The role first, as the API checks it before it reads the body.
    or_page(s, s.caller.require(ibs_types::Role::Admin))?;
    let backup = up.text("backup");
    let component = Some(up.text("component")).filter(|c| !c.is_empty());
    let target = up.text("target");
    let again = |err: FieldError| {
        recovery_page(
            &st,
            s,
            Some(backup.clone()),
            component.clone(),
            Some(target.clone()),
            Some(err),
        )
    };
    let pfx = match pfx_field(&up, "restore") {
        Ok(p) => p,
        Err(e) => return again(e).await,
    };
    let body = RestoreBody {
        component: component.clone(),
        target: target.clone(),
        force: up.checked("force"),
        pfx: pfx.to_string(),
        pfx_password: up.secret("pfx_password").to_string(),
        more_pfx: Vec::new(),
        allow_newer: false,
    };
    match api_backups::restore(
        State(st.api.clone()),
        s.caller.clone(),
        Path(backup.clone()),
        ApiJson(body),
    )
    .await
    {
        Ok((_, job)) => Ok(Redirect::to(&format!("/jobs/{}", job.0.id)).into_response()),
        Err(e) => again(refusal(s, "restore", e)?).await,
    }
}

/// Starts a validation with the API's handler; the job's page follows.
pub async fn validate(State(st): State<ConsoleState>, up: Upload) -> PageResult {
    let s = &up.signed;
    or_page(s, s.caller.require(ibs_types::Role::Admin))?;
    let backup = up.text("backup");
    let again =
        |err: FieldError| recovery_page(&st, s, Some(backup.clone()), None, None, Some(err));
    let pfx = match pfx_field(&up, "validate") {
        Ok(p) => p,
        Err(e) => return again(e).await,
    };
    let body = ValidateBody {
        pfx: pfx.to_string(),
        pfx_password: up.secret("pfx_password").to_string(),
    };
    match api_backups::validate(
        State(st.api.clone()),
        s.caller.clone(),
        Path(backup.clone()),
        ApiJson(body),
    )
    .await
    {
        Ok((_, job)) => Ok(Redirect::to(&format!("/jobs/{}", job.0.id)).into_response()),
        Err(e) => again(refusal(s, "validate", e)?).await,
    }
}

/// Any job's page (restore, validation, verification, backup): status, live progress, result.
pub async fn job(State(st): State<ConsoleState>, s: Signed, Path(id): Path<String>) -> PageResult {
    let j = or_page(
        &s,
        api_backups::job(State(st.api.clone()), s.caller.clone(), Path(id)).await,
    )?
    .0;
    let components: Vec<_> = j
        .components
        .iter()
        .map(|c| {
            serde_json::json!({
                "name": c.name, "kind": c.kind, "status": c.status.as_str(),
                "size": view::bytes(c.bytes), "files": c.files, "message": c.message,
            })
        })
        .collect();
    let report = j.kind == JobKind::Validate && j.status.is_final();
    let ctx = context! {
        job => job_row(&j),
        source => j.source_job.clone(),
        components => components,
        warnings => j.warnings.clone(),
        verification => j.verification.as_ref().map(|v| serde_json::to_value(v).unwrap_or_default()),
        report => report,
        ..user_ctx(&s, match j.kind {
            JobKind::Backup => "backups",
            JobKind::Verify => "verification",
            JobKind::Restore | JobKind::Validate => "restore",
        })
    };
    Ok(render(StatusCode::OK, "job.html", ctx))
}

/// A validation's report as JSON, downloaded (the API's handler; reader, like the API).
pub async fn report_json(
    State(st): State<ConsoleState>,
    s: Signed,
    Path(id): Path<String>,
) -> Response {
    let r = api_backups::report(State(st.api.clone()), s.caller.clone(), Path(id.clone()))
        .await
        .map(IntoResponse::into_response);
    attachment(&s, &id, "json", r)
}

/// A validation's report as one HTML page, downloaded (the API's handler; reader).
pub async fn report_html(
    State(st): State<ConsoleState>,
    s: Signed,
    Path(id): Path<String>,
) -> Response {
    let r = api_backups::report_html(State(st.api.clone()), s.caller.clone(), Path(id.clone()))
        .await
        .map(IntoResponse::into_response);
    attachment(&s, &id, "html", r)
}

/// The API's report response marked as a download, or its error as a page.
fn attachment(s: &Signed, id: &str, ext: &str, r: Result<Response, ApiError>) -> Response {
    match r {
        Ok(mut resp) => {
            // The id went through the controller's lookup; the header still gets only safe bytes.
            let safe: String = id
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            if let Ok(v) = header::HeaderValue::from_str(&format!(
                "attachment; filename=\"ibs-validation-{safe}.{ext}\""
            )) {
                resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            resp
        }
        Err(e) => error_page(Some(s), &e),
    }
}
