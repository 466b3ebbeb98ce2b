//! Every JSON request body the API deserializes, through the `ibs-types` request types the
//! handlers use, followed by the pure checks the handlers run on them: `PUT /location`
//! (`LocationUpdate`, `validate_path`), `PUT /components` (the host-only field check, then
//! `Vec<ComponentRequest>`), `POST /maintenance`, `/maintenance/end`, `/store/prune`, `/tokens`,
//! `/backups/{id}/restore` and `/backups/{id}/validate`.
#![no_main]
use ibs_controller::component_api::reject_host_only;
use ibs_types::location::validate_path;
use ibs_types::{
    BeginMaintenance, ComponentRequest, EndMaintenance, LocationUpdate, PruneRequest, RestoreBody,
    TokenRequest, ValidateBody,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(u) = serde_json::from_slice::<LocationUpdate>(data) {
        if let Some(p) = &u.path {
            let _ = validate_path(p);
        }
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        if reject_host_only(&v).is_ok() {
            let _ = serde_json::from_value::<Vec<ComponentRequest>>(v);
        }
    }
    let _ = serde_json::from_slice::<BeginMaintenance>(data);
    let _ = serde_json::from_slice::<EndMaintenance>(data);
    let _ = serde_json::from_slice::<PruneRequest>(data);
    let _ = serde_json::from_slice::<TokenRequest>(data);
    let _ = serde_json::from_slice::<RestoreBody>(data);
    let _ = serde_json::from_slice::<ValidateBody>(data);
});
