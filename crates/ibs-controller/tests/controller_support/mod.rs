//! Shared setup of the controller tests (`controller.rs`, `controller_jobs.rs`): a controller on a
//! fake clock and in-memory storage, configured with a test certificate.
#![allow(dead_code)]

use base64::Engine as _;
use ibs_controller::settings::LocationUpdate;
use ibs_controller::testing::{self, TestController};
use ibs_controller::Controller;

pub const T0: i64 = 1_800_000_000;
pub const H: i64 = 3600;

pub fn cert_b64() -> String {
    base64::engine::general_purpose::STANDARD.encode(testing::identity().certificate().der())
}

pub async fn configure(ctl: &Controller, path: &str) {
    ctl.update_location(
        LocationUpdate {
            path: Some(path.into()),
            certificate: Some(cert_b64()),
            ..Default::default()
        },
        "test",
    )
    .await
    .expect("configure");
}

pub fn sample_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("a.txt"), b"alpha").unwrap();
    std::fs::create_dir(d.path().join("sub")).unwrap();
    std::fs::write(d.path().join("sub/b.bin"), vec![7u8; 100_000]).unwrap();
    d
}

pub async fn setup(components: Vec<ibs_controller::component::ComponentConfig>) -> TestController {
    let t = testing::controller(T0, components);
    configure(&t.ctl, "/mem/share").await;
    t
}

/// Waits for every task a tick started (backup, retention cleanup, verification): a task still
/// holding the gate would make the next tick defer (NotDue).
pub async fn finish(out: ibs_controller::TickOutcome) {
    for h in [out.handle, out.retention, out.verify]
        .into_iter()
        .flatten()
    {
        h.await.unwrap();
    }
}
