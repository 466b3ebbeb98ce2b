//! `GET/PUT /api/v1/location` (reader / admin) and `GET/PUT /api/v1/components` (reader / admin).

use crate::auth::{ApiJson, Caller};
use crate::error::ApiResult;
use crate::AppState;
use axum::extract::State;
use axum::Json;
use ibs_controller::component::ComponentConfig;
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

pub async fn get_components(
    State(s): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<ComponentConfig>>> {
    caller.require(Role::Reader)?;
    Ok(Json(s.ctl.components_config()?))
}

pub async fn put_components(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(cs): ApiJson<Vec<ComponentConfig>>,
) -> ApiResult<Json<Vec<ComponentConfig>>> {
    caller.require(Role::Admin)?;
    Ok(Json(s.ctl.set_components(cs, &caller.actor())?))
}
