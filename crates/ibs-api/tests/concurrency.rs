//! 100 concurrent on-demand backup requests on a real loopback socket start exactly one job; the
//! other 99 get 409 naming the running job. (The latency half of the load goal is a benchmark:
//! `bench/api_load.sh`.)

use ibs_controller::model::Role;
use ibs_controller::testing;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T0: i64 = 1_800_000_000;
const CLIENTS: usize = 100;

async fn request(addr: SocketAddr, raw: &str) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_concurrent_backup_requests_start_exactly_one_job() {
    let t = testing::controller(T0, vec![]);
    t.ctl
        .set_components(
            vec![testing::command("slow", "sleep 3; echo x", None, true)],
            "t",
        )
        .unwrap();
    let cert = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        testing::identity().certificate().der(),
    );
    t.ctl
        .update_location(
            serde_json::from_value(json!({"path": "/mem/share", "certificate": cert})).unwrap(),
            "t",
        )
        .await
        .unwrap();
    let operator = t.ctl.db().create_token(Role::Operator, "o", T0).unwrap();
    let app = ibs_api::router(ibs_api::AppState::new(t.ctl.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });

    let req = Arc::new(format!(
        "POST /api/v1/backups HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {operator}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    ));
    let barrier = Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (req, barrier) = (req.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            request(addr, &req).await
        }));
    }
    let mut accepted = Vec::new();
    let mut conflicts = Vec::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            202 => accepted.push(body),
            409 => conflicts.push(body),
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert_eq!(accepted.len(), 1, "exactly one job starts: {accepted:?}");
    assert_eq!(conflicts.len(), CLIENTS - 1);
    let id = accepted[0]["id"].as_str().unwrap();
    for c in &conflicts {
        assert_eq!(c["error"]["code"], "conflict");
        assert!(
            c["error"]["message"].as_str().unwrap().contains(id),
            "409 names the running job {id}: {c}"
        );
    }
    assert!(t.ctl.wait_idle(std::time::Duration::from_secs(60)).await);
    let jobs = t.ctl.jobs(1000).unwrap();
    assert_eq!(jobs.len(), 1, "one job recorded");
    assert_eq!(jobs[0].id, id);
    println!(
        "concurrency: {CLIENTS} concurrent POST /backups -> {} x 202, {} x 409 naming {id}",
        accepted.len(),
        conflicts.len()
    );
}
