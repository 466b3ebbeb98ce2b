//! Storage that stalls instead of answering, on a loopback socket. A full Ceph cluster holds
//! writes: radosgw reads the request and never answers it (`s3_full_cluster.rs` does that on a
//! real private cluster). This server plays that part where the test must count requests: it
//! answers reads and listings as an empty bucket without object lock, reads every PUT's body and
//! never answers it. Another, that accepts connections and never answers anything, plays a hung
//! server. `ibs repo init` on either must fail within its `--storage-timeout` bound with a
//! Connectivity error (exit 11) that names the stall, warn while it waits, and try a stalled write
//! twice, not six times.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reads one request's head and body; `None` when the connection is closed.
fn request(s: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some((head, body))
}

fn reply(s: &mut TcpStream, status: &str, body: &str) {
    let r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(r.as_bytes());
}

/// Serves one connection: an empty bucket for reads, silence for writes (counted in `puts`).
fn serve(mut s: TcpStream, puts: Arc<AtomicUsize>) {
    while let Some((head, _body)) = request(&mut s) {
        let line = head.lines().next().unwrap_or("").to_owned();
        if line.starts_with("PUT ") {
            puts.fetch_add(1, Ordering::SeqCst);
            // Held like a write to a full cluster: the connection stays open, unanswered.
            std::thread::sleep(Duration::from_secs(3600));
            return;
        } else if line.contains("object-lock") {
            reply(
                &mut s,
                "404 Not Found",
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error>\
                 <Code>ObjectLockConfigurationNotFoundError</Code><Message>none</Message></Error>",
            );
        } else if line.contains("list-type=2") {
            reply(
                &mut s,
                "200 OK",
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult \
                 xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>bucket</Name>\
                 <KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>\
                 </ListBucketResult>",
            );
        } else if line.starts_with("HEAD ") {
            let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        } else {
            reply(
                &mut s,
                "404 Not Found",
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NoSuchKey</Code>\
                 <Message>none</Message></Error>",
            );
        }
    }
}

/// A gateway on a free loopback port that holds every write; returns its address and PUT count.
fn holding_writes() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let puts = Arc::new(AtomicUsize::new(0));
    let counted = puts.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let puts = counted.clone();
            std::thread::spawn(move || serve(stream, puts));
        }
    });
    (addr, puts)
}

fn init(addr: &str, fx: &Fx, timeout: &str) -> (Out, Duration) {
    let cert = shared_cert(0);
    let began = Instant::now();
    let out = ibs(["repo", "init", "--repo"])
        .arg(format!("s3+http://{addr}/bucket/region-1"))
        .args(["--storage-timeout", timeout, "--cert"])
        .arg(&cert.cer)
        .arg("--state")
        .arg(&fx.state)
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")
        .run();
    (out, began.elapsed())
}

#[test]
fn a_storage_that_holds_writes_fails_the_job_within_its_bound_as_connectivity() {
    let (addr, puts) = holding_writes();
    let fx = Fx::new();
    let (out, took) = init(&addr, &fx, "3");
    let out = out
        .code(11)
        .stderr_has("within 3 s")
        .stderr_has("full and holding writes")
        .stderr_has("no answer for 1.5 s; waiting up to 3 s");
    let error_line = out
        .stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("an error line: {}", out.stderr));
    assert_eq!(
        error_line.matches("within 3 s").count(),
        1,
        "the storage error is printed once: {error_line}"
    );
    assert_eq!(
        puts.load(Ordering::SeqCst),
        2,
        "a stalled write is tried twice: {}",
        out.stderr
    );
    // Two bounds of 3 s and a backoff, plus start-up; far below a retried hour.
    assert!(
        took >= Duration::from_secs(6) && took < Duration::from_secs(30),
        "{took:?}"
    );
    assert!(!out.stderr.contains("not-a-real-secret"), "{}", out.stderr);
}

#[test]
fn a_server_that_never_answers_fails_the_open_within_its_bound() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let fx = Fx::new();
    let (out, took) = init(&addr, &fx, "2");
    out.code(11).stderr_has("within 2 s while opening it");
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[test]
fn a_storage_timeout_out_of_range_is_a_usage_error() {
    let fx = Fx::new();
    for bad in ["0", "86401", "soon"] {
        let (out, _) = init("127.0.0.1:9", &fx, bad);
        out.code(2).stderr_has("--storage-timeout");
    }
}
