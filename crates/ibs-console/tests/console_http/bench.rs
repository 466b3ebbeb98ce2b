//! A benchmark, not a test (ignored by default; no timing is asserted): the console's pages over a
//! real loopback socket with 1,000 backups in the controller's history, seeded through the
//! controller's own job store (`Db::put_job`, the call every job runner makes). Prints a table of
//! the first (cold) and median of ten warm request times per page.
//!
//! `cargo test -p ibs-console --test console_http -- --ignored --nocapture console_pages_with_1000_backups`

use super::*;
use ibs_types::{ComponentResult, Job, JobKind, JobStatus, Trigger};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One finished backup job, `i` hours before `T0`, shaped as a real one (one component result).
fn backup(i: i64) -> Job {
    let started = T0 - i * 3600;
    Job {
        id: format!("bench-{i:04}"),
        kind: JobKind::Backup,
        trigger: Trigger::Scheduled,
        status: if i % 50 == 7 {
            JobStatus::PartialSucceeded
        } else {
            JobStatus::Succeeded
        },
        components: vec![ComponentResult {
            name: "sample".into(),
            kind: "files".into(),
            status: JobStatus::Succeeded,
            essential_for_recovery: true,
            sources: vec!["/srv/sample".into()],
            bytes: 1_000_000 + (i as u64 % 97) * 10_000,
            files: 1200,
            message: None,
            cause: None,
            exports: Vec::new(),
            server_version: None,
        }],
        created_at: started,
        started_at: Some(started),
        finished_at: Some(started + 40 + i % 30),
        duration_ms: Some((40 + (i % 30) as u64) * 1000),
        bytes_read: 50_000_000,
        bytes_stored: 1_000_000 + (i as u64 % 97) * 10_000,
        certificate_thumbprint: Some("AB".repeat(20)),
        recovery_ready: true,
        progress: None,
        error: None,
        alert_class: None,
        error_code: None,
        backup_id: Some(format!("{:064x}", i)),
        repository_id: Some("bench-repository".into()),
        location: Some(r"\\fs.contoso.com\backups\nyc".into()),
        previous_location: false,
        source_job: None,
        deleted_at: None,
        corrupted: None,
        verification: None,
        metadata: None,
        warnings: Vec::new(),
    }
}

/// One GET over a new loopback connection; (status line, body bytes, seconds).
async fn get(addr: std::net::SocketAddr, path: &str, sid: &str) -> (String, usize, f64) {
    let t = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: ibs_session={sid}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&buf);
    (
        text.lines().next().unwrap_or("").to_string(),
        buf.len(),
        secs,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn console_pages_with_1000_backups() {
    let c = Console::new(false);
    let db = c.t.ctl.db().clone();
    for i in 0..1000 {
        db.put_job(&backup(i)).unwrap();
    }
    assert_eq!(c.t.ctl.backups_page(&all()).unwrap().items.len(), 1000);
    let sid = c.sign_in(&c.admin).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = c.app.clone();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    println!(
        "\nconsole pages, 1,000 backups in the history, loopback, {} build",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!(
        "{:<28} {:>8} {:>10} {:>12}",
        "page", "bytes", "cold ms", "median ms"
    );
    for path in [
        "/",
        "/backups",
        "/charts/duration.svg",
        "/charts/bytes.svg",
        "/alerts",
        "/verification",
        "/restore",
        "/backups/bench-0000",
        "/static/console.css",
    ] {
        let (status, bytes, cold) = get(addr, path, &sid).await;
        assert!(status.contains("200"), "{path}: {status}");
        let mut warm = Vec::new();
        for _ in 0..10 {
            warm.push(get(addr, path, &sid).await.2);
        }
        warm.sort_by(|a, b| a.total_cmp(b));
        println!(
            "{path:<28} {bytes:>8} {:>10.1} {:>12.1}",
            cold * 1000.0,
            warm[5] * 1000.0
        );
    }
}
