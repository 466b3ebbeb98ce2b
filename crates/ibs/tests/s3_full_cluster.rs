//! A full Ceph cluster, for real: a private single-node cluster (scripts/ceph-rgw.sh) whose full
//! ratio is lowered below what it stores, so the monitor flags every pool full and radosgw holds
//! writes instead of refusing them, as it does when the disks fill. A backup into it must end
//! within its `--storage-timeout` bounds as Connectivity (exit 11), saying the storage may be full
//! and holding writes, and lose nothing: once the cluster has room again the earlier backup
//! restores exactly, the next backup succeeds and `check --read-data` passes. A missing gateway
//! fails this test.

mod common;
use common::s3::{block_on, s3_cmd};
use common::*;
use ibs_testing::rgw;
use std::time::{Duration, Instant};

#[test]
fn a_backup_into_a_full_cluster_fails_within_its_bounds_and_loses_nothing() {
    let cluster = rgw::Cluster::start("full");
    let gw = &cluster.gateway;
    let bucket = block_on(rgw::bucket_on(gw, "full"));
    let loc = format!("s3+http://{}/{bucket}/r", gw.host_port());
    let fx = Fx::new();
    let cert = shared_cert(0);
    s3_cmd("init", &loc, &fx.state, &gw.writer)
        .arg("--cert")
        .arg(&cert.cer)
        .run()
        .ok();
    let data = fx.path("data");
    ibs_testing::realistic_tree(&data);
    let expected = ibs_testing::snapshot(&data);
    let first = s3_cmd("backup", &loc, &fx.state, &gw.writer)
        .arg("--source")
        .arg(format!("files={}", data.display()))
        .run()
        .ok()
        .last_line();

    cluster.set_full(true);
    std::fs::write(data.join("new.bin"), ibs_testing::pseudo_random(7, 3 << 20)).unwrap();
    let began = Instant::now();
    let out = s3_cmd("backup", &loc, &fx.state, &gw.writer)
        .args(["--storage-timeout", "4", "--source"])
        .arg(format!("files={}", data.display()))
        .run();
    let took = began.elapsed();
    out.code(11)
        .stderr_has("within 4 s")
        .stderr_has("full and holding writes")
        .stderr_has("no answer for 2 s; waiting up to 4 s");
    // Two bounds of 4 s for the first held write, plus start-up; not six, not an hour.
    assert!(
        took >= Duration::from_secs(8) && took < Duration::from_secs(60),
        "{took:?}"
    );

    cluster.set_full(false);
    let restored = fx.path("restored");
    s3_cmd("restore", &loc, &fx.state, &gw.writer)
        .args(["--backup", &first, "--target"])
        .arg(&restored)
        .arg("--pfx")
        .arg(&cert.pfx)
        .pw()
        .run()
        .ok();
    ibs_testing::assert_restored(
        &expected,
        &restored.join("files"),
        "the backup taken before the cluster filled",
    );
    s3_cmd("backup", &loc, &fx.state, &gw.writer)
        .arg("--source")
        .arg(format!("files={}", data.display()))
        .run()
        .ok();
    let checked = s3_cmd("check", &loc, &fx.state, &gw.writer)
        .arg("--read-data")
        .arg("--pfx")
        .arg(&cert.pfx)
        .pw()
        .run()
        .ok();
    assert!(checked.stdout.contains("no problems found"), "{checked}");
}
