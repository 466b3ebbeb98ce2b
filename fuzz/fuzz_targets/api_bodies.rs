//! Every JSON request body the API deserializes (through the same serde types the handlers use),
//! followed by the pure validation the handlers run on them: `PUT /location` (`LocationUpdate`,
//! `validate_path`), `PUT /components` (`Vec<ComponentConfig>`, `component::validate`),
//! `POST /maintenance`, `/maintenance/end`, `/store/prune`, `/tokens`, `/backups/{id}/restore`.
#![no_main]
use ibs_api::routes::admin::{BeginBody, EndBody, PruneBody, TokenBody};
use ibs_api::routes::backups::RestoreBody;
use ibs_controller::component::{self, ComponentConfig};
use ibs_controller::settings::{validate_path, LocationUpdate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(u) = serde_json::from_slice::<LocationUpdate>(data) {
        if let Some(p) = &u.path {
            let _ = validate_path(p);
        }
    }
    if let Ok(cs) = serde_json::from_slice::<Vec<ComponentConfig>>(data) {
        let _ = component::validate(&cs);
    }
    let _ = serde_json::from_slice::<BeginBody>(data);
    let _ = serde_json::from_slice::<EndBody>(data);
    let _ = serde_json::from_slice::<PruneBody>(data);
    let _ = serde_json::from_slice::<TokenBody>(data);
    let _ = serde_json::from_slice::<RestoreBody>(data);
});
