//! Helpers for the service component tests that need controller types: a controller wired to
//! in-memory storage, backup and restore jobs, and their checks. The real servers, their clients,
//! unique database names and the scratch-database guards come from `ibs_testing::db`.

#![allow(dead_code)]

use base64::Engine as _;
use ibs_controller::component::ComponentConfig;
use ibs_controller::model::{Job, JobStatus};
use ibs_controller::settings::LocationUpdate;
use ibs_controller::testing::{self, TestController};
use ibs_controller::RestoreRequest;

#[allow(unused_imports)] // each test binary uses a part
pub use ibs_testing::db::{
    ensure_services, mysql, psql, psql_db, redis, unique, MyDrop, PgDrop, MY, PG,
};
#[allow(unused_imports)]
pub use ibs_testing::free_port;

pub fn component(v: serde_json::Value) -> ComponentConfig {
    serde_json::from_value(v).expect("component")
}

pub async fn setup(components: Vec<ComponentConfig>) -> TestController {
    ensure_services();
    let t = testing::controller(1_800_000_000, components);
    t.ctl
        .update_location(
            LocationUpdate {
                path: Some("/mem/share".into()),
                certificate: Some(
                    base64::engine::general_purpose::STANDARD
                        .encode(testing::identity().certificate().der()),
                ),
                ..Default::default()
            },
            "test",
        )
        .await
        .expect("configure");
    t
}

pub async fn backup(t: &TestController) -> Job {
    let (j, h) = t.ctl.start_backup().expect("start backup");
    h.await.unwrap();
    t.ctl.job(&j.id).unwrap()
}

pub async fn restore(t: &TestController, id: &str, comp: &str, target: &str, force: bool) -> Job {
    let req = RestoreRequest {
        component: Some(comp.into()),
        target: target.into(),
        force,
        pfx: testing::identity().to_pfx("pw").unwrap(),
        pfx_password: "pw".into(),
        more_keys: Vec::new(),
        allow_newer: false,
    };
    let (j, h) = t
        .ctl
        .start_restore(id, req, "test")
        .await
        .expect("start restore");
    h.await.unwrap();
    t.ctl.job(&j.id).unwrap()
}

pub fn comp<'a>(j: &'a Job, name: &str) -> &'a ibs_controller::ComponentResult {
    j.components
        .iter()
        .find(|c| c.name == name)
        .expect("component in job")
}

pub fn assert_status(j: &Job, name: &str, s: JobStatus) {
    let c = comp(j, name);
    assert_eq!(c.status, s, "component {name}: {c:?}");
}

/// Watches every process's argv while alive; `found()` says whether `needle` was ever seen.
pub struct ArgvWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<bool>>,
}

impl ArgvWatch {
    pub fn start(needle: &str) -> ArgvWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let needle = needle.as_bytes().to_vec();
        let handle = std::thread::spawn(move || {
            let mut seen = false;
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                    if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
                        if cmd.windows(needle.len()).any(|w| w == needle) {
                            seen = true;
                        }
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            seen
        });
        ArgvWatch {
            stop,
            handle: Some(handle),
        }
    }
    pub fn found(mut self) -> bool {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

/// Asserts `secret` appears nowhere in the job records (as served by the API).
pub fn assert_no_secret(jobs: &[&Job], secret: &str) {
    for j in jobs {
        let text = serde_json::to_string(j).unwrap();
        assert!(
            !text.contains(secret),
            "secret leaked in job {}: {text}",
            j.id
        );
    }
}

/// A TCP listener on a free loopback port that counts the connections it receives: the server a
/// redirected client would reach.
pub struct Trap {
    pub port: u16,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Trap {
    pub fn start() -> Trap {
        use std::sync::atomic::Ordering;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (h, s) = (hits.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        h.fetch_add(1, Ordering::SeqCst);
                        drop(c);
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        Trap {
            port,
            hits,
            stop,
            handle: Some(handle),
        }
    }
    pub fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Trap {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
