//! Raw large-file throughput of our SMB client vs `smbclient put/get`, same share, same run.
//!
//! Run (release): `cargo run --release -p ibs-smb --example smb_bench`
//! Environment: IBS_BENCH_URL (default smb://127.0.0.1:4455/backup), IBS_BENCH_USER (ibsuser),
//! IBS_TEST_SMB_PASSWORD (password; default S3cret!pw), IBS_BENCH_MIB (512), IBS_BENCH_IN_FLIGHT (8),
//! IBS_BENCH_ROUNDS (3). Prints medians and the ibs-smb / smbclient ratios.
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

async fn ours(
    loc: &SmbLocation,
    user: &str,
    pw: &str,
    data: &Bytes,
    in_flight: usize,
    encrypt: bool,
    gmac: bool,
) -> (f64, f64) {
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
    let t = Instant::now();
    let f = s.create(path, &p, Stage::Object).await.unwrap();
    s.write_all(f.file_id, data, in_flight).await.unwrap();
    s.flush(f.file_id).await.unwrap();
    s.close(f.file_id).await.unwrap();
    let w = mibs(data.len(), t.elapsed());
    let t = Instant::now();
    let f = s
        .open_existing(path, m::GENERIC_READ | m::DELETE, Stage::Object)
        .await
        .unwrap();
    let back = s
        .read_exact(f.file_id, 0, f.end_of_file, in_flight)
        .await
        .unwrap();
    let r = mibs(back.len(), t.elapsed());
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
) -> Duration {
    let t = Instant::now();
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
    t.elapsed()
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
    println!(
        "{} MiB, {in_flight} x 1 MiB in flight, {}, median of {rounds} rounds (ours and smbclient alternate)",
        size >> 20,
        loc
    );
    // label -> (write MiB/s, read MiB/s) per round
    let mut rows: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let mut record = |label: String, w: f64, r: f64| match rows.iter_mut().find(|x| x.0 == label) {
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
                let (w, r) = ours(&loc, &user, &pw, &data, in_flight, encrypt, *gmac).await;
                record(format!("ibs-smb ({label}{alg})"), w, r);
            }
            let tw = smbclient(
                &loc,
                &user,
                &pw,
                &local,
                &format!("put {name} ibs-bench-smbclient.bin"),
                protection,
            );
            std::fs::remove_file(&local).unwrap();
            let tr = smbclient(
                &loc,
                &user,
                &pw,
                &local,
                &format!("get ibs-bench-smbclient.bin {name}"),
                protection,
            );
            assert_eq!(std::fs::metadata(&local).unwrap().len() as usize, size);
            smbclient(
                &loc,
                &user,
                &pw,
                &local,
                "del ibs-bench-smbclient.bin",
                protection,
            );
            record(
                format!("smbclient --client-protection={protection}"),
                mibs(size, tw),
                mibs(size, tr),
            );
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let mut med = std::collections::HashMap::new();
    println!();
    println!("| client | write MiB/s | read MiB/s |");
    println!("|---|---:|---:|");
    for (label, v) in &rows {
        let w = median(&mut v.iter().map(|x| x.0).collect());
        let r = median(&mut v.iter().map(|x| x.1).collect());
        println!("| {label} | {w:.0} | {r:.0} |");
        med.insert(label.clone(), (w, r));
    }
    println!();
    println!("| ibs-smb / smbclient (target ≥ 0.7) | write | read |");
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
        let (a, b) = (med[ours], med[theirs]);
        println!("| {ours} | {:.2} | {:.2} |", a.0 / b.0, a.1 / b.1);
    }
    let _ = std::fs::remove_file(&local);
}
