//! Following jobs in the tests: polling with a deadline, a job's record, canceling one and
//! finding the processes a job started.

use super::Api;
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Polls `f` every 20 ms until it holds; fails the test naming `what` after 60 s.
pub async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Processes other than this test's own whose command line and environment together contain
/// every needle (`pg_dump` is given its database in `PGDATABASE`). The test process is left out:
/// a runner that starts one process per test (nextest) puts the test's name, which may name the
/// tool, on its command line.
pub fn processes_with(needles: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    let me = std::process::id().to_string();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if e.file_name().to_string_lossy() == me {
            continue;
        }
        if let Ok(mut cmd) = std::fs::read(e.path().join("cmdline")) {
            cmd.extend(std::fs::read(e.path().join("environ")).unwrap_or_default());
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if needles.iter().all(|n| cmd.contains(n)) {
                found.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
            }
        }
    }
    found
}

/// Processes of the program `tool` (the file name of their `argv[0]`) whose command line and
/// environment contain every needle. Only the tool itself counts: a helper this test started
/// inherits the runner's environment, which may name the tool (nextest's test name).
pub fn tool_processes(tool: &str, needles: &[&str]) -> Vec<String> {
    let mut all = needles.to_vec();
    all.push(tool);
    processes_with(&all)
        .into_iter()
        .filter(|line| {
            let argv0 = line.split_once(": ").map_or("", |(_, c)| c);
            let argv0 = argv0.split(' ').next().unwrap_or("");
            argv0.rsplit('/').next() == Some(tool)
        })
        .collect()
}

impl Api {
    /// `GET /api/v1/jobs/{id}` as a reader.
    pub async fn job(&self, id: &str) -> Value {
        self.call(
            Method::GET,
            &format!("/api/v1/jobs/{id}"),
            &self.reader,
            None,
        )
        .await
        .1
    }

    /// Sets the location to `path` (an opener's test storage), encrypted for the test certificate.
    pub async fn use_location(&self, path: &str) {
        let (s, v) = self
            .call(
                Method::PUT,
                "/api/v1/location",
                &self.admin,
                Some(json!({"path": path, "certificate": super::cert_b64()})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }

    /// Cancels job `id` as the operator (202) and waits for the controller to be idle; returns the
    /// final record and how long the end took after the cancel was accepted.
    pub async fn cancel_and_wait(&self, id: &str) -> (Value, Duration) {
        let (s, v) = self
            .call(
                Method::POST,
                &format!("/api/v1/jobs/{id}/cancel"),
                &self.operator,
                None,
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        let asked = Instant::now();
        assert!(
            self.t.ctl.wait_idle(Duration::from_secs(60)).await,
            "the canceled job ended"
        );
        (self.job(id).await, asked.elapsed())
    }
}
