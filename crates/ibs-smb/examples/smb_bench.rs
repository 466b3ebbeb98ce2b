//! Raw large-file throughput of our SMB client vs `smbclient put/get`, same share, same run.
//!
//! Run (release): `cargo run --release -p ibs-smb --example smb_bench`
//! Environment: IBS_BENCH_URL (default smb://127.0.0.1:4455/backup), IBS_BENCH_USER (ibsuser),
//! IBS_TEST_SMB_PASSWORD (password; default S3cret!pw), IBS_BENCH_MIB (512), IBS_BENCH_IN_FLIGHT (8),
//! IBS_BENCH_ROUNDS (3), IBS_BENCH_ONLY (run only the rows whose label contains one of these
//! comma-separated words, e.g. `GMAC,encrypted` or `smbclient`; for profiling one case).
//! IBS_BENCH_SMBD_PID (the test server's main smbd pid, from its pidfile: adds the CPU seconds per
//! GiB that smbd and the client spent in each step, read from /proc; the client's include
//! smbclient's as a reaped child). Prints medians and the ibs-smb / smbclient ratios.
//! The password is read from the environment only and handed to smbclient via its PASSWD variable.

use bytes::Bytes;
use ibs_smb::error::Stage;
use ibs_smb::messages::{self as m, CreateParams};
use ibs_smb::session::SessionParams;
use ibs_smb::{Dialect, Secret, SmbClient, SmbLocation};
use std::time::{Duration, Instant};

fn env(k: &str, d: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| d.to_owned())
}

fn mibs(bytes: usize, t: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / t.as_secs_f64()
}

/// utime + stime + cutime + cstime of one process, in clock ticks (100 per second on Linux).
fn proc_ticks(pid: &str) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the parenthesised command name: state is field 3; utime is field 14.
    let rest = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    (11..15)
        .filter_map(|i| f.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

/// A process and its live descendants (smbd forks one child per connection).
fn tree_ticks(root: &str) -> u64 {
    let mut total = proc_ticks(root);
    let children =
        std::fs::read_to_string(format!("/proc/{root}/task/{root}/children")).unwrap_or_default();
    for c in children.split_whitespace() {
        total += tree_ticks(c);
    }
    total
}

/// CPU seconds (client, server) spent so far.
#[derive(Clone, Copy)]
struct Cpu(f64, f64);

impl Cpu {
    fn now() -> Cpu {
        let server = std::env::var("IBS_BENCH_SMBD_PID")
            .map(|p| tree_ticks(p.trim()))
            .unwrap_or(0);
        Cpu(proc_ticks("self") as f64 / 100.0, server as f64 / 100.0)
    }
    /// CPU seconds per GiB moved since `self`.
    fn per_gib(self, bytes: usize) -> Cpu {
        let n = Cpu::now();
        let gib = bytes as f64 / (1u64 << 30) as f64;
        Cpu((n.0 - self.0) / gib, (n.1 - self.1) / gib)
    }
}

/// One measured step: MiB/s and CPU seconds per GiB.
#[derive(Clone, Copy)]
struct Step {
    mibs: f64,
    cpu: Cpu,
}

async fn ours(
    loc: &SmbLocation,
    user: &str,
    pw: &str,
    data: &Bytes,
    in_flight: usize,
    encrypt: bool,
    gmac: bool,
) -> (Step, Step) {
    let params = SessionParams {
        host: loc.host.clone(),
        port: loc.port,
        share: loc.share.clone(),
        username: user.to_owned(),
        password: Secret::new(pw),
        dialects: vec![Dialect::Smb302, Dialect::Smb311],
        require_encryption: encrypt,
        connect_timeout: Duration::from_secs(10),
        op_timeout: Duration::from_secs(60),
        gmac_signing: gmac,
    };
    let client = SmbClient::connect(params).await.expect("connect");
    let s = client.session().await.unwrap();
    let path = "ibs-bench-ours.bin";
    let p = CreateParams {
        access: m::GENERIC_READ | m::GENERIC_WRITE | m::DELETE,
        attributes: m::ATTR_NORMAL,
        share: m::SHARE_ALL,
        disposition: m::DISPOSITION_OVERWRITE_IF,
        options: m::OPT_NON_DIRECTORY,
    };
    let (t, c) = (Instant::now(), Cpu::now());
    let f = s.create(path, &p, Stage::Object).await.unwrap();
    s.write_all(f.file_id, data, in_flight).await.unwrap();
    s.flush(f.file_id).await.unwrap();
    s.close(f.file_id).await.unwrap();
    let w = Step {
        mibs: mibs(data.len(), t.elapsed()),
        cpu: c.per_gib(data.len()),
    };
    let (t, c) = (Instant::now(), Cpu::now());
    let f = s
        .open_existing(path, m::GENERIC_READ | m::DELETE, Stage::Object)
        .await
        .unwrap();
    let back = s
        .read_exact(f.file_id, 0, f.end_of_file, in_flight)
        .await
        .unwrap();
    let r = Step {
        mibs: mibs(back.len(), t.elapsed()),
        cpu: c.per_gib(back.len()),
    };
    assert!(back == *data, "read-back differs");
    s.set_delete_pending(f.file_id).await.unwrap();
    s.close(f.file_id).await.unwrap();
    (w, r)
}

fn smbclient(
    loc: &SmbLocation,
    user: &str,
    pw: &str,
    local: &str,
    cmd: &str,
    protection: &str,
    size: usize,
) -> Step {
    let (t, c) = (Instant::now(), Cpu::now());
    let out = std::process::Command::new("smbclient")
        .arg(format!("//{}/{}", loc.host, loc.share))
        .args([
            "-p",
            &loc.port.to_string(),
            "-U",
            user,
            &format!("--client-protection={protection}"),
            "-c",
            cmd,
        ])
        .env("PASSWD", pw)
        .current_dir(std::path::Path::new(local).parent().unwrap())
        .output()
        .expect("run smbclient");
    assert!(
        out.status.success(),
        "smbclient {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let elapsed = t.elapsed();
    std::thread::sleep(Duration::from_millis(100)); // let smbd reap the connection's child
    Step {
        mibs: mibs(size, elapsed),
        cpu: c.per_gib(size),
    }
}

#[tokio::main]
async fn main() {
    let loc =
        SmbLocation::parse(&env("IBS_BENCH_URL", "smb://127.0.0.1:4455/backup")).expect("location");
    let user = env("IBS_BENCH_USER", "ibsuser");
    let pw = env("IBS_TEST_SMB_PASSWORD", "S3cret!pw");
    let size: usize = env("IBS_BENCH_MIB", "512").parse::<usize>().unwrap() << 20;
    let in_flight: usize = env("IBS_BENCH_IN_FLIGHT", "8").parse().unwrap();
    let data = Bytes::from(
        (0..size)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect::<Vec<u8>>(),
    );
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    let local = format!("{dir}/ibs-bench-{}.bin", std::process::id());
    std::fs::write(&local, &data).unwrap();
    let name = std::path::Path::new(&local)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();

    let rounds: usize = env("IBS_BENCH_ROUNDS", "3").parse().unwrap();
    let only = env("IBS_BENCH_ONLY", "");
    let wanted = |label: &str| {
        only.is_empty()
            || only
                .split(',')
                .any(|w| !w.is_empty() && label.contains(w.trim()))
    };
    println!(
        "{} MiB, {in_flight} x 1 MiB in flight, {}, median of {rounds} rounds (ours and smbclient alternate)",
        size >> 20,
        loc
    );
    // label -> (write, read) per round
    let mut rows: Vec<(String, Vec<(Step, Step)>)> = Vec::new();
    let mut record = |label: String, w: Step, r: Step| match rows.iter_mut().find(|x| x.0 == label)
    {
        Some(x) => x.1.push((w, r)),
        None => rows.push((label, vec![(w, r)])),
    };
    for _ in 0..rounds {
        for (label, encrypt, protection) in
            [("signed", false, "sign"), ("encrypted", true, "encrypt")]
        {
            let variants: &[(&str, bool)] = if encrypt {
                &[("", true)]
            } else {
                &[(", AES-CMAC", false), (", AES-GMAC", true)]
            };
            for (alg, gmac) in variants {
                if !wanted(&format!("ibs-smb ({label}{alg})")) {
                    continue;
                }
                let (w, r) = ours(&loc, &user, &pw, &data, in_flight, encrypt, *gmac).await;
                record(format!("ibs-smb ({label}{alg})"), w, r);
            }
            if !wanted(&format!("smbclient --client-protection={protection}")) {
                continue;
            }
            let tw = smbclient(
                &loc,
                &user,
                &pw,
                &local,
                &format!("put {name} ibs-bench-smbclient.bin"),
                protection,
                size,
            );
            std::fs::remove_file(&local).unwrap();
            let tr = smbclient(
                &loc,
                &user,
                &pw,
                &local,
                &format!("get ibs-bench-smbclient.bin {name}"),
                protection,
                size,
            );
            assert_eq!(std::fs::metadata(&local).unwrap().len() as usize, size);
            smbclient(
                &loc,
                &user,
                &pw,
                &local,
                "del ibs-bench-smbclient.bin",
                protection,
                0,
            );
            record(
                format!("smbclient --client-protection={protection}"),
                tw,
                tr,
            );
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let mut med = std::collections::HashMap::new();
    println!();
    println!(
        "| client | write MiB/s | read MiB/s | write CPU s/GiB client + smbd | read CPU s/GiB client + smbd |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (label, v) in &rows {
        let m = |f: fn(&(Step, Step)) -> f64| median(&mut v.iter().map(f).collect());
        let (w, r) = (m(|x| x.0.mibs), m(|x| x.1.mibs));
        let (wc, ws) = (m(|x| x.0.cpu.0), m(|x| x.0.cpu.1));
        let (rc, rs) = (m(|x| x.1.cpu.0), m(|x| x.1.cpu.1));
        println!("| {label} | {w:.0} | {r:.0} | {wc:.2} + {ws:.2} | {rc:.2} + {rs:.2} |");
        med.insert(label.clone(), (w, r));
    }
    println!();
    println!("| ibs-smb / smbclient (target ≥ 0.9) | write | read |");
    println!("|---|---:|---:|");
    for (ours, theirs) in [
        (
            "ibs-smb (signed, AES-GMAC)",
            "smbclient --client-protection=sign",
        ),
        (
            "ibs-smb (encrypted)",
            "smbclient --client-protection=encrypt",
        ),
    ] {
        let (Some(a), Some(b)) = (med.get(ours), med.get(theirs)) else {
            continue;
        };
        println!("| {ours} | {:.2} | {:.2} |", a.0 / b.0, a.1 / b.1);
    }
    let _ = std::fs::remove_file(&local);
}
