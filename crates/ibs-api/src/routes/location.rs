//! `GET/PUT/DELETE /api/v1/location` (reader / admin / admin) and `GET/PUT /api/v1/components` (reader / admin).
//! Components through the API are references to the host's components or service components with a
//! password value; hooks, commands, host paths and password sources are refused (see
//! `ibs_controller::component_api`), and no response shows a hook, a command or a secret.

use crate::auth::{ApiJson, Caller};
use crate::error::{ApiError, ApiResult};
use crate::AppState;
use axum::extract::State;
use axum::Json;
use ibs_controller::component_api::{self, ComponentRequest, ComponentView};
use ibs_controller::model::Role;
use ibs_controller::settings::{LocationUpdate, LocationView};

pub async fn get(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<LocationView>> {
    caller.require(Role::Reader)?;
    Ok(Json(s.ctl.location()?))
}

pub async fn put(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(u): ApiJson<LocationUpdate>,
) -> ApiResult<Json<LocationView>> {
    caller.require(Role::Admin)?;
    Ok(Json(s.ctl.update_location(u, &caller.actor()).await?))
}

/// Clears the location configuration (defaults, no share, credentials deleted, scheduler off);
/// 409 while a job runs.
pub async fn clear(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<LocationView>> {
    caller.require(Role::Admin)?;
    Ok(Json(s.ctl.clear_location(&caller.actor())?))
}

pub async fn get_components(
    State(s): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<ComponentView>>> {
    caller.require(Role::Reader)?;
    Ok(Json(s.ctl.components_view()?))
}

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
