//! The Ceph RADOS Gateway of the S3 tests (`scripts/ceph-rgw.sh`): the shared throw-away
//! single-node cluster on loopback in [`dir`] (`$IBS_TEST_RGW_DIR`, default `/tmp/ibs-rgw`),
//! started once per test binary through the script (idempotent and serialized across binaries by
//! its own `flock`); private clusters ([`Cluster`]) for tests that stop the gateway; and a fresh
//! bucket per test. A gateway that cannot start fails the test; it never skips.
//!
//! Enabled by the `rgw` feature, so only the crates whose tests speak S3 build the SDK here.

pub use aws_sdk_s3;
use aws_sdk_s3::config::{Credentials, Region, RequestChecksumCalculation};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// One S3 user of the test gateway.
#[derive(Clone)]
pub struct Keys {
    pub access_key: String,
    pub secret_key: String,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({}, <secret>)", self.access_key)
    }
}

/// The running gateway as `DIR/env` describes it.
#[derive(Clone, Debug)]
pub struct Gateway {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    pub region: String,
    /// The user backups write with.
    pub writer: Keys,
    /// The user for retention and prune (append-only setups).
    pub maintenance: Keys,
}

impl Gateway {
    /// `host:port` of the endpoint, for `s3+http://` locations.
    pub fn host_port(&self) -> &str {
        self.endpoint.trim_start_matches("http://")
    }
}

/// The cluster's folder.
pub fn dir() -> PathBuf {
    std::env::var_os("IBS_TEST_RGW_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/ibs-rgw"))
}

/// The path of `scripts/ceph-rgw.sh`.
pub fn script_path() -> PathBuf {
    crate::workspace_root().join("scripts/ceph-rgw.sh")
}

/// Runs the script with `cmd` on the cluster in `dir` and returns its stdout; panics (never
/// skips) on failure.
pub fn script_in(dir: &std::path::Path, cmd: &str) -> String {
    let out = Command::new("bash")
        .arg(script_path())
        .arg(cmd)
        .arg(dir)
        .output()
        .expect("run scripts/ceph-rgw.sh");
    assert!(
        out.status.success(),
        "scripts/ceph-rgw.sh {cmd} {} failed: the S3 tests need the Ceph RADOS Gateway\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("the env file is UTF-8")
}

/// [`script_in`] on the shared cluster.
pub fn script(cmd: &str) -> String {
    script_in(&dir(), cmd)
}

fn parse(env: &str) -> Gateway {
    let get = |name: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} missing from the gateway's env"))
            .to_owned()
    };
    Gateway {
        endpoint: get("IBS_TEST_RGW_ENDPOINT"),
        region: get("IBS_TEST_RGW_REGION"),
        writer: Keys {
            access_key: get("IBS_TEST_RGW_WRITER_ACCESS_KEY"),
            secret_key: get("IBS_TEST_RGW_WRITER_SECRET_KEY"),
        },
        maintenance: Keys {
            access_key: get("IBS_TEST_RGW_MAINT_ACCESS_KEY"),
            secret_key: get("IBS_TEST_RGW_MAINT_SECRET_KEY"),
        },
    }
}

/// The running gateway, started through the script the first time a test of this binary asks.
pub fn gateway() -> &'static Gateway {
    static GW: OnceLock<Gateway> = OnceLock::new();
    GW.get_or_init(|| parse(&script("start")))
}

/// A private cluster of one test in `/tmp/ibs-rgw-TAG-PID`, for tests that stop its gateway;
/// dropping it stops the cluster and removes its folder.
pub struct Cluster {
    pub dir: PathBuf,
    pub gateway: Gateway,
}

impl Cluster {
    pub fn start(tag: &str) -> Cluster {
        let dir = PathBuf::from(format!("/tmp/ibs-rgw-{tag}-{}", std::process::id()));
        let gateway = parse(&script_in(&dir, "start"));
        Cluster { dir, gateway }
    }

    /// Stops only radosgw (monitor and OSD keep the data).
    pub fn stop_rgw(&self) {
        script_in(&self.dir, "stop-rgw");
    }

    /// Starts radosgw again on the same port.
    pub fn start_rgw(&self) {
        script_in(&self.dir, "start-rgw");
    }

    /// Makes the cluster full as Ceph sees it (full ratio 10⁻⁵ of the OSD's memstore, 43 KB,
    /// below what the gateway's own pools hold) or gives it its default ratios back, and waits until the monitor has
    /// set, or cleared, the pools' `full` flag: a full cluster holds writes, as a real one does.
    pub fn set_full(&self, full: bool) {
        let ratios: [(&str, &str); 3] = if full {
            [
                ("set-nearfull-ratio", "0.000005"),
                ("set-backfillfull-ratio", "0.000008"),
                ("set-full-ratio", "0.00001"),
            ]
        } else {
            [
                ("set-full-ratio", "0.95"),
                ("set-backfillfull-ratio", "0.9"),
                ("set-nearfull-ratio", "0.85"),
            ]
        };
        for (cmd, ratio) in ratios {
            self.ceph(&["osd", cmd, ratio]);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let dump = self.ceph(&["osd", "dump", "--format", "json"]);
            let v: serde_json::Value = serde_json::from_str(&dump).expect("osd dump is JSON");
            let pools = v["pools"].as_array().cloned().unwrap_or_default();
            let flagged = !pools.is_empty()
                && pools.iter().all(|p| {
                    p["flags_names"]
                        .as_str()
                        .is_some_and(|f| f.split(',').any(|n| n == "full"))
                });
            if flagged == full {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the monitor did not {} the pools' full flag within 120 s: {dump}",
                if full { "set" } else { "clear" }
            );
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }

    /// Runs `ceph` as the cluster's admin; panics on failure.
    fn ceph(&self, args: &[&str]) -> String {
        let out = Command::new("ceph")
            .arg("-c")
            .arg(self.dir.join("ceph.conf"))
            .args(["-n", "client.admin", "--connect-timeout", "20"])
            .args(args)
            .output()
            .expect("run ceph");
        assert!(
            out.status.success(),
            "ceph {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script_path())
            .arg("stop")
            .arg(&self.dir)
            .output();
        let _ = std::fs::remove_file(format!("{}.lock", self.dir.display()));
    }
}

/// An SDK client for `keys` on the test gateway (path-style, checksums only when required).
pub fn client(gw: &Gateway, keys: &Keys) -> aws_sdk_s3::Client {
    let creds = Credentials::new(&keys.access_key, &keys.secret_key, None, None, "ibs-tests");
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .endpoint_url(&gw.endpoint)
        .region(Region::new(gw.region.clone()))
        .credentials_provider(creds)
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// A bucket name `ibs-TAG-PID-RANDOM`.
fn bucket_name(tag: &str) -> String {
    let tag: String = tag
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(24)
        .collect::<String>()
        .to_ascii_lowercase();
    format!(
        "ibs-{tag}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// A fresh bucket with object lock enabled (hence versioned) owned by the writer user, without a
/// default retention; returns its name.
pub async fn lock_bucket(tag: &str) -> String {
    let gw = gateway();
    let name = bucket_name(tag);
    client(gw, &gw.writer)
        .create_bucket()
        .bucket(&name)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create object-lock bucket {name}: {e:?}"));
    name
}

/// The append-only bucket policy of the operator guide (`docs/policies/s3-append-only-bucket-
/// policy.json`) for `bucket` on the test gateway's users.
pub fn append_only_policy(bucket: &str) -> String {
    let path = crate::workspace_root().join("docs/policies/s3-append-only-bucket-policy.json");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .replace("${BUCKET}", bucket)
        .replace("${WRITER}", "arn:aws:iam:::user/writer")
        .replace("${MAINTENANCE}", "arn:aws:iam:::user/maintenance")
}

/// The ransomware-resistant setup of the operator guide: a fresh bucket with object lock, owned
/// by the maintenance user, with the append-only policy for the writer user; returns its name.
pub async fn append_only_bucket(tag: &str) -> String {
    let gw = gateway();
    let name = bucket_name(tag);
    let maint = client(gw, &gw.maintenance);
    maint
        .create_bucket()
        .bucket(&name)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create object-lock bucket {name}: {e:?}"));
    maint
        .put_bucket_policy()
        .bucket(&name)
        .policy(append_only_policy(&name))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put the append-only policy on {name}: {e:?}"));
    name
}

/// A fresh, empty bucket `ibs-TAG-PID-RANDOM` on the shared gateway, owned by the writer user;
/// returns its name.
pub async fn bucket(tag: &str) -> String {
    bucket_on(gateway(), tag).await
}

/// [`bucket`] on any gateway.
pub async fn bucket_on(gw: &Gateway, tag: &str) -> String {
    let name = bucket_name(tag);
    client(gw, &gw.writer)
        .create_bucket()
        .bucket(&name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create bucket {name} on the test gateway: {e:?}"));
    name
}
