//! Resilience on a SEPARATE Samba instance (own dir and port, signing mandatory): kill smbd in the
//! middle of a transfer, freeze it (timeouts), restart it, and check that the same `SmbStorage`
//! reconnects and that no partial object is ever visible under its final name.

mod common;

use bytes::Bytes;
use common::*;
use ibs_smb::{SmbOptions, SmbStorage};
use ibs_storage::{ErrorKind, ObjectKey, Storage};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DIR: &str = "/tmp/ibs-samba-kill";
const PORT: u16 = 4456;

fn start() {
    run_script(
        &["start", DIR, &PORT.to_string()],
        &[("IBS_TEST_SMB_SIGNING", "mandatory")],
    );
}

fn stop() {
    run_script(&["stop", DIR], &[]);
}

/// Sends `sig` to smbd and all its descendants.
fn signal_tree(sig: &str) {
    let pid = std::fs::read_to_string(format!("{DIR}/smbd.pid"))
        .unwrap()
        .trim()
        .to_string();
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let out = std::process::Command::new("pgrep")
            .args(["-P", &all[i]])
            .output()
            .unwrap();
        all.extend(
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned),
        );
        i += 1;
    }
    let st = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .args(&all)
        .status()
        .unwrap();
    assert!(st.success());
}

struct StopOnDrop;
impl Drop for StopOnDrop {
    fn drop(&mut self) {
        stop();
    }
}

/// Puts distinct large objects in a loop until one fails; returns that error and how many succeeded.
fn spawn_put_loop(
    s: Arc<SmbStorage>,
    data: Bytes,
) -> tokio::task::JoinHandle<(ibs_storage::StorageError, usize, Instant)> {
    tokio::spawn(async move {
        let mut i = 0;
        loop {
            if let Err(e) = s
                .put(
                    &ObjectKey::new(format!("loop/obj-{i}")).unwrap(),
                    data.clone(),
                )
                .await
            {
                return (e, i, Instant::now());
            }
            i += 1;
        }
    })
}

async fn assert_no_partial_objects(s: &SmbStorage, data: &Bytes) {
    for o in s.list("loop/").await.expect("list after reconnect") {
        assert_eq!(o.size, data.len() as u64, "{} is partial", o.key);
        assert!(
            s.get(&o.key).await.unwrap() == *data,
            "{} has wrong content",
            o.key
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_frozen_server_fail_fast_and_the_storage_reconnects() {
    start();
    let _guard = StopOnDrop;
    let op_timeout = Duration::from_secs(4);
    let opts = SmbOptions {
        op_timeout,
        connect_timeout: Duration::from_secs(3),
        ..options()
    };
    let loc = location(PORT, "backup", &["ibs-tests", &unique("kill")]);
    let s = Arc::new(
        SmbStorage::connect(&loc, creds(), opts)
            .await
            .expect("connect to the kill instance"),
    );
    let data = Bytes::from(
        (0..(48u32 << 20))
            .map(|i| (i % 253) as u8)
            .collect::<Vec<u8>>(),
    );

    // 1. Kill smbd (parent and children) in the middle of a transfer.
    let h = spawn_put_loop(s.clone(), data.clone());
    tokio::time::sleep(Duration::from_millis(700)).await;
    signal_tree("KILL");
    let killed_at = Instant::now();
    let (e, done, failed_at) = tokio::time::timeout(op_timeout * 3, h)
        .await
        .expect("the in-flight put must not hang")
        .unwrap();
    assert_eq!(e.kind, ErrorKind::Connectivity, "{e}");
    assert!(e.transient || e.kind == ErrorKind::Connectivity);
    assert!(
        failed_at.duration_since(killed_at) <= op_timeout,
        "failed after {:?}",
        failed_at - killed_at
    );
    eprintln!("kill: {done} puts completed, then {e}");
    // While it is down, calls fail fast as Connectivity.
    let e = s.list("").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Connectivity, "{e}");

    // 2. Restart: the same storage reconnects; nothing partial is visible.
    stop();
    start();
    assert_no_partial_objects(&s, &data).await;
    let k = ObjectKey::new("after/restart").unwrap();
    s.put(&k, Bytes::from_static(b"back"))
        .await
        .expect("put after restart");
    assert_eq!(s.get(&k).await.unwrap(), Bytes::from_static(b"back"));

    // 3. Freeze smbd (SIGSTOP): no answers at all. The in-flight call fails by the op timeout.
    let h = spawn_put_loop(s.clone(), data.clone());
    tokio::time::sleep(Duration::from_millis(700)).await;
    signal_tree("STOP");
    let frozen_at = Instant::now();
    let (e, _, failed_at) = tokio::time::timeout(op_timeout * 4, h)
        .await
        .expect("a frozen server must not hang the put")
        .unwrap();
    let waited = failed_at.duration_since(frozen_at);
    assert_eq!(e.kind, ErrorKind::Connectivity, "{e}");
    assert!(e.transient, "a timeout is transient: {e}");
    assert!(
        waited <= op_timeout + Duration::from_secs(3),
        "failed after {waited:?}"
    );
    eprintln!("freeze: failed after {waited:?}: {e}");
    signal_tree("CONT");
    stop();
    start();
    assert_no_partial_objects(&s, &data).await;
    let removed = s.remove_stale_temporaries(Duration::ZERO).await.unwrap();
    eprintln!("stale temporaries removed after the faults: {removed}");
    s.put(&k, Bytes::from_static(b"again"))
        .await
        .expect("put after the second restart");
    assert_eq!(s.get(&k).await.unwrap(), Bytes::from_static(b"again"));
}
