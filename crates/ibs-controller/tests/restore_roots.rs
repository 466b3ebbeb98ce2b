//! Attack: an admin API token asks the controller (often running as root) to restore a backup's
//! files outside the host's restore roots — into a system folder, through `..`, or through a
//! symlink planted inside a root. Each is refused before a job exists, and nothing is written.

mod support;

use ibs_controller::model::JobStatus;
use ibs_controller::testing::{self, files};
use ibs_controller::{ControllerError, RestoreRequest};
use std::path::{Path, PathBuf};
use support::*;

fn request(target: PathBuf) -> RestoreRequest {
    RestoreRequest {
        component: None,
        target,
        force: false,
        pfx: testing::identity().to_pfx("pw").unwrap(),
        pfx_password: "pw".into(),
        more_keys: Vec::new(),
        allow_newer: false,
    }
}

/// A folder outside every root of the test controller (whose root is the system temp folder).
fn outside() -> tempfile::TempDir {
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    assert!(!d.path().starts_with(std::env::temp_dir()));
    d
}

fn entries(p: &Path) -> usize {
    std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn api_restores_outside_the_restore_roots_are_refused_and_write_nothing() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("authorized_keys"), b"ssh-ed25519 attacker").unwrap();
    let t = setup(vec![files("sample", &[src.path()])]).await;
    let b = backup(&t).await;
    assert_eq!(b.status, JobStatus::Succeeded);

    let out = outside();
    let inside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(out.path(), inside.path().join("link")).unwrap();
    let jobs_before = t.ctl.jobs(100).unwrap().len();
    let attacks = [
        out.path().join("escaped"),
        inside
            .path()
            .join("..")
            .join(out.path().strip_prefix("/").unwrap()),
        inside.path().join("link"),
        inside.path().join("link/deeper"),
    ];
    for target in attacks {
        match t
            .ctl
            .start_restore(&b.id, request(target.clone()), "admin")
            .await
        {
            Err(ControllerError::Invalid { field, message }) => {
                assert_eq!(field, "target", "{target:?}: {message}");
            }
            Err(e) => panic!("{target:?}: refused for the wrong reason: {e}"),
            Ok(_) => panic!("restore into {target:?} was accepted"),
        }
        assert_eq!(
            entries(out.path()),
            0,
            "something was written for {target:?}"
        );
    }
    assert_eq!(
        t.ctl.jobs(100).unwrap().len(),
        jobs_before,
        "a refused restore left a job record"
    );
    // The same restore beneath the root works.
    let ok = inside.path().join("restored");
    let (r, h) = t
        .ctl
        .start_restore(&b.id, request(ok.clone()), "admin")
        .await
        .unwrap();
    h.await.unwrap();
    assert_eq!(t.ctl.job(&r.id).unwrap().status, JobStatus::Succeeded);
    assert_eq!(
        std::fs::read(ok.join("sample/authorized_keys")).unwrap(),
        b"ssh-ed25519 attacker"
    );
}
