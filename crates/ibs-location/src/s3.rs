//! S3 locations: `s3://HOST[:PORT]/BUCKET[/PREFIX]` speaks https, `s3+http://HOST[:PORT]/BUCKET[/PREFIX]`
//! plain http (loopback tests, a gateway behind a TLS proxy on the same host). Buckets are addressed
//! path-style unless `?addressing=virtual`; `?region=NAME` sets the signing region (default
//! `us-east-1`). The repository lives in `PREFIX/MASBackup`.
//!
//! On a bucket with object lock, `?lock_retention=DURATION` (the backup retention, default
//! [`DEFAULT_LOCK_RETENTION`]), `?lock_margin=DURATION` (default 7 days) and
//! `?lock_mode=compliance|governance` (default compliance) set how long every object ibs writes is
//! locked (ADR 0035). A DURATION is a whole number with a unit: `30d`, `12h`, `90m`, `45s`.
//!
//! The parser refuses, with a message naming the fault, anything it cannot map one to one: user
//! info (credentials never go in a location), fragments, empty or `.`/`..` prefix components, a
//! bucket name S3 would not accept, unknown or repeated options.

use ibs_s3::{Addressing, S3Config, DEFAULT_REGION};
use ibs_storage::{LockMode, LockPolicy, DEFAULT_LOCK_MARGIN};
use std::time::Duration;

/// The backup retention a lock covers when the location does not say: the controller's default
/// retention (7 days) would leave too little room for an operator who raises it, so 30 days.
pub const DEFAULT_LOCK_RETENTION: Duration = Duration::from_secs(30 * 86_400);

/// The lock options of an S3 location (all optional; they apply only to a bucket with object
/// lock, and opening refuses them on a bucket without).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LockOptions {
    pub retention: Option<Duration>,
    pub margin: Option<Duration>,
    pub mode: Option<LockMode>,
}

impl LockOptions {
    pub fn is_empty(&self) -> bool {
        *self == LockOptions::default()
    }

    /// The policy with the defaults filled in.
    pub fn policy(&self) -> LockPolicy {
        LockPolicy {
            mode: self.mode.unwrap_or_default(),
            retention: self.retention.unwrap_or(DEFAULT_LOCK_RETENTION),
            margin: self.margin.unwrap_or(DEFAULT_LOCK_MARGIN),
        }
    }
}

/// `30d`, `12h`, `90m`, `45s` (a whole number, then one unit).
fn parse_duration(v: &str) -> Option<Duration> {
    let unit = v.chars().last()?;
    let n: u64 = v[..v.len() - unit.len_utf8()].parse().ok()?;
    let secs = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    n.checked_mul(secs).map(Duration::from_secs)
}

/// Why an S3 location does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum S3LocationError {
    #[error(
        "{0:?} is not an S3 location (s3://host/bucket/prefix or s3+http://host/bucket/prefix)"
    )]
    Scheme(String),
    #[error("an S3 location must not hold credentials (user@host); give them through AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or a credentials file")]
    UserInfo,
    #[error("S3 location has no host")]
    NoHost,
    #[error("S3 host {0:?} is not a valid DNS name or IP address")]
    BadHost(String),
    #[error("S3 port {0:?} is not a number between 1 and 65535")]
    BadPort(String),
    #[error("S3 location names no bucket: expected s3://host/bucket[/prefix]")]
    NoBucket,
    #[error("S3 bucket name {0:?} is invalid: 3 to 63 lower-case letters, digits, '.' and '-', starting and ending with a letter or digit")]
    BadBucket(String),
    #[error("S3 prefix {0:?} is invalid: components must be non-empty, not '.' or '..', without control characters or backslashes")]
    BadPrefix(String),
    #[error("S3 location option {0:?} is unknown (known: addressing=path|virtual, region=NAME, lock_retention=DURATION, lock_margin=DURATION, lock_mode=compliance|governance)")]
    UnknownOption(String),
    #[error("S3 location option {0:?} has an invalid or repeated value")]
    BadOption(String),
    #[error("S3 location has a fragment ('#'), which has no meaning here")]
    Fragment,
}

/// A parsed S3 location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Location {
    /// True for `s3://` (https).
    pub https: bool,
    /// Host, with `[…]` for an IPv6 address.
    pub host: String,
    pub port: Option<u16>,
    pub bucket: String,
    /// Without leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
    pub addressing: Addressing,
    pub region: String,
    pub lock: LockOptions,
}

/// Whether `location` is written as an S3 location (whether or not it parses).
pub fn is_s3(location: &str) -> bool {
    let l = location.to_ascii_lowercase();
    l.starts_with("s3://") || l.starts_with("s3+http://") || l.starts_with("s3+https://")
}

impl S3Location {
    pub fn parse(location: &str) -> Result<Self, S3LocationError> {
        let lower = location.to_ascii_lowercase();
        let (https, rest) = if lower.starts_with("s3://") {
            (true, &location[5..])
        } else if lower.starts_with("s3+https://") {
            (true, &location[11..])
        } else if lower.starts_with("s3+http://") {
            (false, &location[10..])
        } else {
            return Err(S3LocationError::Scheme(location.to_owned()));
        };
        if rest.contains('#') {
            return Err(S3LocationError::Fragment);
        }
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.contains('@') {
            return Err(S3LocationError::UserInfo);
        }
        let (host, port) = split_host_port(authority)?;
        let path = path.trim_end_matches('/');
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if bucket.is_empty() {
            return Err(S3LocationError::NoBucket);
        }
        if !valid_bucket(bucket) {
            return Err(S3LocationError::BadBucket(bucket.to_owned()));
        }
        if !prefix.is_empty()
            && !prefix.split('/').all(|c| {
                !c.is_empty()
                    && c != "."
                    && c != ".."
                    && c.len() <= 255
                    && !c.chars().any(|ch| ch.is_control() || ch == '\\')
            })
        {
            return Err(S3LocationError::BadPrefix(prefix.to_owned()));
        }
        let mut addressing = None;
        let mut region = None;
        let mut lock = LockOptions::default();
        for opt in query.unwrap_or("").split('&').filter(|o| !o.is_empty()) {
            let (k, v) = opt.split_once('=').unwrap_or((opt, ""));
            match k {
                "addressing" => {
                    let a = match v {
                        "path" => Addressing::Path,
                        "virtual" => Addressing::Virtual,
                        _ => return Err(S3LocationError::BadOption(opt.to_owned())),
                    };
                    if addressing.replace(a).is_some() {
                        return Err(S3LocationError::BadOption(opt.to_owned()));
                    }
                }
                "region" => {
                    let ok = !v.is_empty()
                        && v.len() <= 64
                        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
                    if !ok || region.replace(v.to_owned()).is_some() {
                        return Err(S3LocationError::BadOption(opt.to_owned()));
                    }
                }
                "lock_retention" | "lock_margin" => {
                    let slot = if k == "lock_retention" {
                        &mut lock.retention
                    } else {
                        &mut lock.margin
                    };
                    let d = parse_duration(v)
                        .ok_or_else(|| S3LocationError::BadOption(opt.to_owned()))?;
                    if slot.replace(d).is_some() {
                        return Err(S3LocationError::BadOption(opt.to_owned()));
                    }
                }
                "lock_mode" => {
                    let m = match v {
                        "compliance" => LockMode::Compliance,
                        "governance" => LockMode::Governance,
                        _ => return Err(S3LocationError::BadOption(opt.to_owned())),
                    };
                    if lock.mode.replace(m).is_some() {
                        return Err(S3LocationError::BadOption(opt.to_owned()));
                    }
                }
                _ => return Err(S3LocationError::UnknownOption(k.to_owned())),
            }
        }
        Ok(S3Location {
            https,
            host,
            port,
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            addressing: addressing.unwrap_or_default(),
            region: region.unwrap_or_else(|| DEFAULT_REGION.to_owned()),
            lock,
        })
    }

    /// `https://host[:port]` or `http://host[:port]`.
    pub fn endpoint(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        match self.port {
            Some(p) => format!("{scheme}://{}:{p}", self.host),
            None => format!("{scheme}://{}", self.host),
        }
    }

    /// Operator warnings: plain http to anything but this host (requests are signed, and backup
    /// data is encrypted before it leaves, but names, sizes and timing travel in the clear).
    pub fn warnings(&self) -> Vec<String> {
        let loopback = self.host == "localhost"
            || self.host == "[::1]"
            || self
                .host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|a| a.is_loopback());
        if self.https || loopback {
            return Vec::new();
        }
        vec![format!(
            "path: s3+http:// talks plain http to {}; use s3:// (https) unless the gateway is on this host",
            self.host
        )]
    }

    /// The backend configuration for the location's own prefix.
    pub fn config(&self) -> S3Config {
        S3Config {
            region: self.region.clone(),
            addressing: self.addressing,
            ..S3Config::new(self.endpoint(), &self.bucket, &self.prefix)
        }
    }
}

fn split_host_port(authority: &str) -> Result<(String, Option<u16>), S3LocationError> {
    if authority.is_empty() {
        return Err(S3LocationError::NoHost);
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| S3LocationError::BadHost(authority.to_owned()))?;
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(S3LocationError::BadHost(authority.to_owned()));
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| S3LocationError::BadHost(authority.to_owned()))?,
            ),
        };
        (format!("[{addr}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (authority.to_owned(), None),
        }
    };
    if host.is_empty() {
        return Err(S3LocationError::NoHost);
    }
    if !host.starts_with('[') {
        let ok = host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !ok {
            return Err(S3LocationError::BadHost(host));
        }
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err(S3LocationError::BadPort(p.to_owned())),
        },
    };
    Ok((host.to_ascii_lowercase(), port))
}

/// S3's bucket naming rules (the strict, DNS-compatible set).
fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.as_bytes()[0].is_ascii_alphanumeric()
        && b.as_bytes()[b.len() - 1].is_ascii_alphanumeric()
        && !b.contains("..")
        && b.parse::<std::net::Ipv4Addr>().is_err()
}

#[cfg(test)]
mod tests {
    use super::*;
    use S3LocationError as E;

    #[test]
    fn good_locations_parse() {
        let l = S3Location::parse("s3://s3.example.com/backups/region-1/ibs").unwrap();
        assert!(l.https);
        assert_eq!(l.endpoint(), "https://s3.example.com");
        assert_eq!(
            (l.bucket.as_str(), l.prefix.as_str()),
            ("backups", "region-1/ibs")
        );
        assert_eq!(l.addressing, Addressing::Path);
        assert_eq!(l.region, "us-east-1");
        let l = S3Location::parse("s3+http://127.0.0.1:7480/b-1/?region=eu-west-3").unwrap();
        assert_eq!(l.endpoint(), "http://127.0.0.1:7480");
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("b-1", ""));
        assert_eq!(l.region, "eu-west-3");
        let l = S3Location::parse("S3://[::1]:9000/bkt/p?addressing=virtual").unwrap();
        assert_eq!(l.endpoint(), "https://[::1]:9000");
        assert_eq!(l.addressing, Addressing::Virtual);
        assert_eq!(
            l.config().join("MASBackup").display(),
            "s3://[::1]:9000/bkt/p/MASBackup"
        );
        assert!(is_s3("s3+http://x/y") && is_s3("S3://x/y") && !is_s3("/srv/s3://x"));
        let warned = |l: &str| S3Location::parse(l).unwrap().warnings().len();
        assert_eq!(warned("s3+http://127.0.0.1:7480/bkt"), 0);
        assert_eq!(warned("s3+http://[::1]:7480/bkt"), 0);
        assert_eq!(warned("s3://rgw.example.com/bkt"), 0);
        assert_eq!(warned("s3+http://rgw.example.com/bkt"), 1);
    }

    #[test]
    fn lock_options_parse_with_defaults() {
        let l = S3Location::parse("s3://h/bkt/p").unwrap();
        assert!(l.lock.is_empty());
        assert_eq!(l.lock.policy().horizon(), Duration::from_secs(37 * 86_400));
        let l = S3Location::parse(
            "s3://h/bkt/p?lock_retention=20s&lock_margin=0s&lock_mode=governance",
        )
        .unwrap();
        let p = l.lock.policy();
        assert_eq!(p.horizon(), Duration::from_secs(20));
        assert_eq!(p.mode, LockMode::Governance);
        assert_eq!(
            S3Location::parse("s3://h/bkt/p?lock_retention=2w").unwrap_err(),
            E::BadOption("lock_retention=2w".into())
        );
        assert_eq!(
            S3Location::parse("s3://h/bkt/p?lock_mode=off").unwrap_err(),
            E::BadOption("lock_mode=off".into())
        );
        assert_eq!(
            S3Location::parse("s3://h/bkt/p?lock_margin=1d&lock_margin=2d").unwrap_err(),
            E::BadOption("lock_margin=2d".into())
        );
    }

    #[test]
    fn hostile_locations_get_specific_errors() {
        let cases: &[(&str, E)] = &[
            ("s3:/host/bucket", E::Scheme("s3:/host/bucket".into())),
            ("s3://AKIA:secret@host/bucket", E::UserInfo),
            ("s3://user@host/bucket", E::UserInfo),
            ("s3:///bucket", E::NoHost),
            ("s3://:80/bucket", E::NoHost),
            ("s3://host", E::NoBucket),
            ("s3://host/", E::NoBucket),
            ("s3://host//prefix", E::NoBucket),
            ("s3://ho_st/bucket", E::BadHost("ho_st".into())),
            (
                "s3://-host.example/bucket",
                E::BadHost("-host.example".into()),
            ),
            ("s3://host%2f/bucket", E::BadHost("host%2f".into())),
            ("s3://[::zz]/bucket", E::BadHost("[::zz]".into())),
            ("s3://[::1/bucket", E::BadHost("[::1".into())),
            ("s3://host:0/bucket", E::BadPort("0".into())),
            ("s3://host:65536/bucket", E::BadPort("65536".into())),
            ("s3://host:+80/bucket", E::BadPort("+80".into())),
            ("s3://host:/bucket", E::BadPort("".into())),
            ("s3://host/Bucket", E::BadBucket("Bucket".into())),
            ("s3://host/ab", E::BadBucket("ab".into())),
            ("s3://host/a..b", E::BadBucket("a..b".into())),
            ("s3://host/192.168.1.1", E::BadBucket("192.168.1.1".into())),
            ("s3://host/b_u", E::BadBucket("b_u".into())),
            ("s3://host/bkt/a//b", E::BadPrefix("a//b".into())),
            ("s3://host/bkt/../etc", E::BadPrefix("../etc".into())),
            ("s3://host/bkt/a/./b", E::BadPrefix("a/./b".into())),
            ("s3://host/bkt/a\\b", E::BadPrefix("a\\b".into())),
            ("s3://host/bkt/a\nb", E::BadPrefix("a\nb".into())),
            ("s3://host/bkt/p?acl=1", E::UnknownOption("acl".into())),
            (
                "s3://host/bkt/p?addressing=dns",
                E::BadOption("addressing=dns".into()),
            ),
            (
                "s3://host/bkt/p?region=a&region=b",
                E::BadOption("region=b".into()),
            ),
            ("s3://host/bkt/p?region=", E::BadOption("region=".into())),
            (
                "s3://host/bkt/p?region=x/y",
                E::BadOption("region=x/y".into()),
            ),
            ("s3://host/bkt/p#frag", E::Fragment),
        ];
        for (input, want) in cases {
            assert_eq!(
                S3Location::parse(input).as_ref(),
                Err(want),
                "{input:?} must be refused as {want:?}"
            );
        }
    }

    #[test]
    fn errors_never_echo_user_info() {
        let e = S3Location::parse("s3://AKIDEXAMPLE:wJalrXUtnFEMI@host/bucket").unwrap_err();
        assert!(!e.to_string().contains("wJalrXUtnFEMI"), "{e}");
    }
}
