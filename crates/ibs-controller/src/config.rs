//! The daemon's configuration file (TOML), all keys optional. Parsing and validation are pure; the
//! binary reads the file and applies environment overrides. Every key is documented in
//! `docs/operator-guide-controller.md` and in the commented example `docs/examples/ibs.toml`.

use crate::component::{self, ComponentConfig};
use crate::{ControllerError, Result};
use serde::Deserialize;
use std::path::PathBuf;

/// The documented default API address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9440";
pub const DEFAULT_TICK_SECONDS: u64 = 15;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// State database, certificates, writer state (default `$IBS_DATA_DIR` or `~/.local/share/ibs`).
    pub data_dir: Option<PathBuf>,
    /// API address (default 127.0.0.1:9440).
    pub listen: Option<String>,
    /// How often the scheduler wakes up, in seconds.
    pub tick_seconds: Option<u64>,
    /// How long engine operations wait for a repository lock, in seconds.
    pub lock_wait_seconds: Option<u64>,
    /// Prune's grace period in hours: packs and data-key envelopes younger than this are never
    /// deleted (default 24).
    pub prune_grace_hours: Option<u64>,
    /// Retention's prune repacks partly used packs only until the dead bytes left in the packs
    /// that stay are at most this percentage of them (0–100, default 10; 0 repacks every pack
    /// with a dead byte).
    pub prune_max_unused_percent: Option<u8>,
    /// What retention removes stays this many hours in the repository's grace area, where
    /// `ibs repo undelete` brings it back, before a later prune deletes it (default 24; 0 deletes
    /// at once).
    pub delete_delay_hours: Option<u64>,
    /// A backup job running longer than this many seconds is stopped (nothing is committed) and
    /// recorded Failed "timed out after …" with the general alert (default 14400: 4 hours; 1 second
    /// to 7 days).
    pub job_timeout_seconds: Option<u64>,
    /// Bound on every single storage operation in seconds, for every operation kind (default: 600
    /// for data transfers and listings, 120 for small requests; 1 second to 1 day). A timed-out
    /// operation is retried, then fails the job with the connectivity alert.
    pub storage_timeout_seconds: Option<u64>,
    /// Bandwidth limits for object data written to / read from the location, in KiB/s (default
    /// unlimited; at least 1). See `ibs_storage::ThrottleStorage`.
    pub limit_upload_kib_per_second: Option<u64>,
    pub limit_download_kib_per_second: Option<u64>,
    /// Closed alerts are purged (into the audit trail) this many days after closing (default 7).
    pub closed_alert_retention_days: Option<u32>,
    /// Folders an API restore may write beneath (default `DATA/restores`); see
    /// `ibs_controller::restore_roots`. Absolute paths only.
    pub restore_roots: Option<Vec<PathBuf>>,
    /// POST alert raise/close events to this URL.
    pub webhook_url: Option<String>,
    /// On first start, the folder the `sample` component backs up.
    pub sample_dir: Option<PathBuf>,
    /// Serve the API over TLS: a PEM certificate chain and its PEM private key (both or neither).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Components; when present they replace the stored set and the host catalog at every start.
    /// Only here (not through the API) may a component name hooks, commands, host paths or
    /// password sources.
    #[serde(default, rename = "component")]
    pub components: Option<Vec<ComponentConfig>>,
}

impl Config {
    pub fn parse(text: &str) -> Result<Config> {
        let c: Config =
            toml::from_str(text).map_err(|e| ControllerError::invalid("config", e.to_string()))?;
        if let Some(cs) = &c.components {
            component::validate(cs)?;
            if let Some(i) = cs.iter().position(|c| c.password_sealed.is_some()) {
                return Err(ControllerError::invalid(
                    format!("component[{i}].password_sealed"),
                    "is set only through the API; use password_file or password_env here",
                ));
            }
        }
        if let Some(l) = &c.listen {
            l.parse::<std::net::SocketAddr>().map_err(|_| {
                ControllerError::invalid("listen", format!("{l:?} is not ADDRESS:PORT"))
            })?;
        }
        if c.closed_alert_retention_days == Some(0) {
            return Err(ControllerError::invalid(
                "closed_alert_retention_days",
                "must be at least 1",
            ));
        }
        for (i, r) in c.restore_roots.iter().flatten().enumerate() {
            if !r.is_absolute() {
                return Err(ControllerError::invalid(
                    format!("restore_roots[{i}]"),
                    format!("{} is not an absolute path", r.display()),
                ));
            }
        }
        if let Some(t) = c.job_timeout_seconds {
            let (lo, hi) = crate::stop::JOB_TIMEOUT_BOUNDS_SECS;
            if !(lo..=hi).contains(&t) {
                return Err(ControllerError::invalid(
                    "job_timeout_seconds",
                    format!("{t} is out of range: must be {lo} to {hi} seconds (7 days)"),
                ));
            }
        }
        if let Some(p) = c.prune_max_unused_percent {
            if p > 100 {
                return Err(ControllerError::invalid(
                    "prune_max_unused_percent",
                    format!("{p} is out of range: must be 0 to 100 (percent)"),
                ));
            }
        }
        if let Some(t) = c.storage_timeout_seconds {
            if !(1..=86_400).contains(&t) {
                return Err(ControllerError::invalid(
                    "storage_timeout_seconds",
                    format!("{t} is out of range: must be 1 to 86400 seconds (1 day)"),
                ));
            }
        }
        for (key, v) in [
            ("limit_upload_kib_per_second", c.limit_upload_kib_per_second),
            (
                "limit_download_kib_per_second",
                c.limit_download_kib_per_second,
            ),
        ] {
            if let Some(v) = v {
                if !(1..=(u64::MAX >> 10)).contains(&v) {
                    return Err(ControllerError::invalid(
                        key,
                        format!("{v} is out of range: give at least 1 (KiB/s)"),
                    ));
                }
            }
        }
        if c.tick_seconds == Some(0) {
            return Err(ControllerError::invalid(
                "tick_seconds",
                "must be at least 1",
            ));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let text = include_str!("../../../docs/examples/ibs.toml");
        let c = Config::parse(text).unwrap();
        assert!(c.components.unwrap().len() >= 2);
    }

    #[test]
    fn closed_alert_retention_days_is_read_and_must_be_positive() {
        let c = Config::parse("closed_alert_retention_days = 30\n").unwrap();
        assert_eq!(c.closed_alert_retention_days, Some(30));
        let e = Config::parse("closed_alert_retention_days = 0\n").unwrap_err();
        assert!(e.to_string().contains("closed_alert_retention_days"), "{e}");
    }

    #[test]
    fn bandwidth_limits_are_read_and_at_least_one_kib() {
        let c = Config::parse("limit_upload_kib_per_second = 2048\n").unwrap();
        assert_eq!(c.limit_upload_kib_per_second, Some(2048));
        let e = Config::parse("limit_download_kib_per_second = 0\n").unwrap_err();
        assert!(
            e.to_string().contains("limit_download_kib_per_second"),
            "{e}"
        );
    }

    #[test]
    fn job_timeout_seconds_is_read_and_bounded() {
        let c = Config::parse("job_timeout_seconds = 7200\n").unwrap();
        assert_eq!(c.job_timeout_seconds, Some(7200));
        for bad in ["0", "604801"] {
            let e = Config::parse(&format!("job_timeout_seconds = {bad}\n")).unwrap_err();
            let m = e.to_string();
            assert!(
                m.contains("job_timeout_seconds") && m.contains("out of range"),
                "{m}"
            );
        }
        let c = Config::parse("storage_timeout_seconds = 30\n").unwrap();
        assert_eq!(c.storage_timeout_seconds, Some(30));
        for bad in ["0", "86401"] {
            let e = Config::parse(&format!("storage_timeout_seconds = {bad}\n")).unwrap_err();
            let m = e.to_string();
            assert!(
                m.contains("storage_timeout_seconds") && m.contains("out of range"),
                "{m}"
            );
        }
    }

    #[test]
    fn prune_max_unused_percent_is_read_and_bounded() {
        let c = Config::parse("prune_max_unused_percent = 25\n").unwrap();
        assert_eq!(c.prune_max_unused_percent, Some(25));
        for bad in ["101", "255"] {
            let m = Config::parse(&format!("prune_max_unused_percent = {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                m.contains("prune_max_unused_percent") && m.contains("out of range"),
                "{m}"
            );
        }
        // Not a percentage at all: the TOML layer names the key.
        let m = Config::parse("prune_max_unused_percent = -1\n")
            .unwrap_err()
            .to_string();
        assert!(m.contains("prune_max_unused_percent"), "{m}");
    }

    #[test]
    fn unknown_kind_is_rejected() {
        let e = Config::parse("[[component]]\nname = \"x\"\nkind = \"oracle\"\n").unwrap_err();
        assert!(e.to_string().contains("component[0].kind"), "{e}");
        assert!(Config::parse("nonsense = 1").is_err());
    }
}
