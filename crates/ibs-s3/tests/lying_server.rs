//! A server that lies about a response's length. It runs on a loopback socket with plain HTTP/1.1,
//! because no real gateway can be made to lie: it announces a 100 GiB body for every object read,
//! sends a few bytes and closes the connection. A read must fail as a connectivity error naming the
//! cut body. It must not reserve the announced length up front: a 100 GiB reservation aborts the
//! process.

use ibs_s3::{S3Config, S3Credentials, S3Storage};
use ibs_storage::{ErrorKind, ObjectKey, Storage};
use std::io::{Read, Write};
use std::net::TcpListener;

/// Answers every request on `listener`, one per connection, until the test process ends.
fn lie(listener: TcpListener) {
    for stream in listener.incoming() {
        let Ok(mut s) = stream else { continue };
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        let line = String::from_utf8_lossy(&head);
        let reply: Vec<u8> = if line.contains("object-lock") {
            // No object lock on this bucket: reads take the current version.
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error>\
                <Code>ObjectLockConfigurationNotFoundError</Code>\
                <Message>none</Message></Error>";
            format!(
                "HTTP/1.1 404 Not Found\r\nContent-Type: application/xml\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        } else {
            let mut r = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                Content-Length: 107374182400\r\nConnection: close\r\n\r\n"
                .to_vec();
            r.extend_from_slice(b"0123456789");
            r
        };
        let _ = s.write_all(&reply);
        let _ = s.flush();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_announced_at_100_gib_and_cut_short_is_a_connectivity_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || lie(listener));
    let config = S3Config::new(&endpoint, "bucket", "MASBackup");
    let s = S3Storage::new(
        config,
        &S3Credentials::new("AKIDEXAMPLE", "not-a-real-secret"),
    );
    for key in ["config", "packs/ab/ab00000000000000000000000000000000"] {
        let key = ObjectKey::new(key).unwrap();
        let e = s.get(&key).await.expect_err("a cut body is no object");
        assert_eq!(e.kind, ErrorKind::Connectivity, "{e}");
        assert!(e.to_string().contains("body was cut"), "{e}");
        let e = s
            .get_range(&key, 0, 4 << 20)
            .await
            .expect_err("a cut body is no range");
        assert_eq!(e.kind, ErrorKind::Connectivity, "{e}");
    }
}
