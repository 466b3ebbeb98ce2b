//! `GET/PUT/DELETE /api/v1/location` (reader / admin / admin) and `GET/PUT /api/v1/components` (reader / admin).
//! Components through the API are references to the host's components or service components with a
//! password value; hooks, commands, host paths and password sources are refused (see
//! `ibs_controller::component_api`), and no response shows a hook, a command or a secret.

use crate::auth::{ApiJson, Caller};
use crate::error::{ApiError, ApiResult};
use crate::paging::{self, List, Paged};
use crate::AppState;
use axum::extract::{Query, State};
use axum::http::Uri;
use axum::Json;
use ibs_controller::component_api;
use ibs_types::{ComponentRequest, ComponentView, LocationUpdate, LocationView, PageQuery, Role};

/// Show the backup location settings (secrets are never returned).
#[utoipa::path(get, path = "/api/v1/location", tag = "location",
    extensions(("x-ibs-role" = json!("reader"))),
    responses((status = 200, description = "The location", body = LocationView)))]
pub async fn get(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<LocationView>> {
    caller.require(Role::Reader)?;
    Ok(Json(s.ctl.location()?))
}

/// Change the backup location settings.
///
/// Absent fields are left unchanged. A changed share must pass the accessibility test (400
/// `location-inaccessible` with the alert class in `details`); lowering retention so that backups
/// would be deleted needs `confirm` (409 with `details.would_delete` otherwise).
#[utoipa::path(put, path = "/api/v1/location", tag = "location",
    extensions(("x-ibs-role" = json!("admin"))),
    request_body = LocationUpdate,
    responses((status = 200, description = "The location after the change", body = LocationView)))]
pub async fn put(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(u): ApiJson<LocationUpdate>,
) -> ApiResult<Json<LocationView>> {
    caller.require(Role::Admin)?;
    Ok(Json(s.ctl.update_location(u, &caller.actor()).await?))
}

/// Clear the location configuration: defaults, no share, stored credentials deleted, scheduler
/// off; job history and the audit trail stay. 409 while a job runs.
#[utoipa::path(delete, path = "/api/v1/location", tag = "location", operation_id = "clear_location",
    extensions(("x-ibs-role" = json!("admin"))),
    responses((status = 200, description = "The location after the clear", body = LocationView)))]
pub async fn clear(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<LocationView>> {
    caller.require(Role::Admin)?;
    Ok(Json(s.ctl.clear_location(&caller.actor())?))
}

/// List components (hooks, commands and passwords appear only as `*_set` flags), in their
/// configured order (paged).
#[utoipa::path(get, path = "/api/v1/components", tag = "location",
    extensions(("x-ibs-role" = json!("reader"))),
    params(PageQuery),
    responses((status = 200, description = "One page of the components", body = Vec<ComponentView>,
        headers(
            ("x-next-cursor" = String, description = "The cursor of the next page (absent on the last page)"),
            ("link" = String, description = "`<URL>; rel=\"next\"` (RFC 8288) of the next page (absent on the last page)")))))]
pub async fn get_components(
    State(s): State<AppState>,
    caller: Caller,
    uri: Uri,
    Query(q): Query<PageQuery>,
) -> ApiResult<Paged<ComponentView>> {
    caller.require(Role::Reader)?;
    let req = paging::request(List::Components, &q)?;
    Ok(Paged::new(
        List::Components,
        s.ctl.components_page(&req)?,
        &uri,
    ))
}

/// Replace the components.
///
/// Each entry references a component of the host's configuration by name, or declares a
/// postgres, mariadb or redis component by url with a password value. Hooks, commands, host paths
/// and password sources are refused (400 naming the field).
#[utoipa::path(put, path = "/api/v1/components", tag = "location",
    extensions(("x-ibs-role" = json!("admin"))),
    request_body = Vec<ComponentRequest>,
    responses((status = 200, description = "The components after the change", body = Vec<ComponentView>)))]
pub async fn put_components(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> ApiResult<Json<Vec<ComponentView>>> {
    caller.require(Role::Admin)?;
    component_api::reject_host_only(&body)?;
    let requests: Vec<ComponentRequest> = serde_json::from_value(body)
        .map_err(|e| ApiError::bad_request("body", format!("malformed JSON: {e}")))?;
    Ok(Json(
        s.ctl.set_components_from_api(requests, &caller.actor())?,
    ))
}
