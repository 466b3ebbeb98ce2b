//! Where a repository lives on SMB (`SmbLocation`, parsed from `\\host\share\folder` or
//! `smb://host[:port]/share/folder`) and with which credentials (`SmbCredentials`).
//! Invariants: a parsed location has an FQDN or IP host, a non-empty share and folder components
//! that are non-empty, not `.`/`..` and free of characters SMB forbids; the password is never shown
//! by Debug or Display. The lowest dialect a location accepts is SMB 3.0 unless the location text
//! ends in `?min-dialect=2.1` (the only opt-in to SMB 2.1; `?` cannot occur in SMB names).

use crate::crypto::Dialect;
use crate::ntlm::Secret;
use std::fmt;
use std::net::IpAddr;

pub const DEFAULT_PORT: u16 = 445;
/// The lowest dialect offered unless the location opts lower: SMB 3.0 (VALIDATE_NEGOTIATE,
/// AES-CMAC signing, encryption).
pub const DEFAULT_MIN_DIALECT: Dialect = Dialect::Smb300;
const MIN_DIALECT_KEY: &str = "min-dialect";

/// A parsed SMB location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmbLocation {
    pub host: String,
    pub port: u16,
    pub share: String,
    pub folder: Vec<String>,
    /// The lowest dialect offered to this server ([`DEFAULT_MIN_DIALECT`] unless opted lower).
    pub min_dialect: Dialect,
}

/// Why a location was rejected; `field` names the part at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid SMB location ({field}): {message}")]
pub struct LocationError {
    pub field: &'static str,
    pub message: String,
}

fn err(field: &'static str, message: impl Into<String>) -> LocationError {
    LocationError {
        field,
        message: message.into(),
    }
}

const FORBIDDEN: &[char] = &['<', '>', ':', '"', '|', '?', '*'];

fn check_component(field: &'static str, c: &str) -> Result<(), LocationError> {
    if c.is_empty() {
        return Err(err(
            field,
            "empty path component (doubled or trailing separator?)",
        ));
    }
    if c == "." || c == ".." {
        return Err(err(
            field,
            format!("'{c}' is not allowed as a path component"),
        ));
    }
    if let Some(ch) = c
        .chars()
        .find(|ch| FORBIDDEN.contains(ch) || ch.is_control())
    {
        return Err(err(field, format!("character {ch:?} is not allowed in {c:?} (forbidden: < > : \" | ? * and control characters)")));
    }
    if c.ends_with(' ') || c.ends_with('.') {
        return Err(err(
            field,
            format!("{c:?} must not end with a space or a dot"),
        ));
    }
    Ok(())
}

fn check_host(host: &str) -> Result<(), LocationError> {
    if host.is_empty() {
        return Err(err("host", "the host is missing"));
    }
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if !host.contains('.') {
        return Err(err(
            "host",
            format!(
                "'{host}' is a single-label name; the product requires a fully qualified domain name such as \
                 fs01.contoso.com, or an IP address where names cannot resolve"
            ),
        ));
    }
    let ok = host.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
    });
    if !ok || host.len() > 253 {
        return Err(err("host", format!("'{host}' is not a valid host name")));
    }
    Ok(())
}

impl SmbLocation {
    /// Parses `\\host\share\folder\sub` (also with `/`) or `smb://host[:port]/share/folder/sub`.
    pub fn parse(s: &str) -> Result<SmbLocation, LocationError> {
        let s = s.trim();
        // `?key=value` is an option; a bare `?` stays in the path, where it is a forbidden character.
        let (s, min_dialect) = match s.split_once('?') {
            Some((s, query)) if query.contains('=') => (s, parse_query(query)?),
            _ => (s, DEFAULT_MIN_DIALECT),
        };
        let mut loc = Self::parse_path(s)?;
        loc.min_dialect = min_dialect;
        Ok(loc)
    }

    fn parse_path(s: &str) -> Result<SmbLocation, LocationError> {
        let (authority, rest, url) = if let Some(r) = s
            .strip_prefix("smb://")
            .or_else(|| s.strip_prefix("SMB://"))
        {
            let (a, rest) = r.split_once('/').unwrap_or((r, ""));
            (a, rest, true)
        } else if let Some(r) = s.strip_prefix("\\\\").or_else(|| s.strip_prefix("//")) {
            let r = r.replace('/', "\\");
            let (a, rest) = r.split_once('\\').unwrap_or((&r, ""));
            return Self::build(a, &rest.replace('\\', "/"), false);
        } else {
            return Err(err(
                "location",
                "expected \\\\host\\share\\folder or smb://host/share/folder",
            ));
        };
        Self::build(authority, rest, url)
    }

    fn build(authority: &str, rest: &str, url: bool) -> Result<SmbLocation, LocationError> {
        let (host, port) = if url {
            split_port(authority)?
        } else {
            (authority.to_owned(), DEFAULT_PORT)
        };
        check_host(&host)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let mut parts = rest.split('/');
        let share = parts.next().unwrap_or("").to_owned();
        if share.is_empty() {
            return Err(err("share", "the share name is missing"));
        }
        check_component("share", &share)?;
        let folder: Vec<String> = if rest.contains('/') {
            parts.map(str::to_owned).collect()
        } else {
            Vec::new()
        };
        for c in &folder {
            check_component("folder", c)?;
        }
        Ok(SmbLocation {
            host,
            port,
            share,
            folder,
            min_dialect: DEFAULT_MIN_DIALECT,
        })
    }

    /// Advisory messages: an IP host works but defeats name-based failover and Kerberos later.
    pub fn warnings(&self) -> Vec<String> {
        if self.host.parse::<IpAddr>().is_ok() {
            vec![format!(
                "host {} is an IP address; prefer a fully qualified domain name so the share can move",
                self.host
            )]
        } else {
            Vec::new()
        }
    }

    /// The same location with one more folder component (e.g. `MASBackup`).
    pub fn join(&self, component: &str) -> Result<SmbLocation, LocationError> {
        check_component("folder", component)?;
        let mut l = self.clone();
        l.folder.push(component.to_owned());
        Ok(l)
    }

    /// The folder as a share-relative SMB path (`a\b`), empty for the share root.
    pub fn folder_path(&self) -> String {
        self.folder.join("\\")
    }
}

/// `min-dialect=2.1|3.0|3.0.2|3.1.1`, the only option a location carries.
fn parse_query(q: &str) -> Result<Dialect, LocationError> {
    let (k, v) = q.split_once('=').unwrap_or((q, ""));
    if k != MIN_DIALECT_KEY {
        return Err(err(
            "location",
            format!("unknown option '{k}' (the only one is {MIN_DIALECT_KEY}=2.1|3.0|3.0.2|3.1.1)"),
        ));
    }
    dialect_from_text(v).ok_or_else(|| {
        err(
            "location",
            format!("{MIN_DIALECT_KEY}={v}: expected 2.1, 3.0, 3.0.2 or 3.1.1"),
        )
    })
}

fn dialect_from_text(v: &str) -> Option<Dialect> {
    Some(match v {
        "2.1" => Dialect::Smb210,
        "3.0" => Dialect::Smb300,
        "3.0.2" => Dialect::Smb302,
        "3.1.1" => Dialect::Smb311,
        _ => return None,
    })
}

fn dialect_text(d: Dialect) -> &'static str {
    match d {
        Dialect::Smb210 => "2.1",
        Dialect::Smb300 => "3.0",
        Dialect::Smb302 => "3.0.2",
        Dialect::Smb311 => "3.1.1",
    }
}

fn split_port(a: &str) -> Result<(String, u16), LocationError> {
    if let Some(r) = a.strip_prefix('[') {
        // [v6]:port
        let (h, p) = r
            .split_once(']')
            .ok_or_else(|| err("host", "unterminated IPv6 literal"))?;
        let port = match p.strip_prefix(':') {
            Some(p) => p
                .parse()
                .map_err(|_| err("port", format!("'{p}' is not a port number")))?,
            None => DEFAULT_PORT,
        };
        return Ok((h.to_owned(), port));
    }
    match a.rsplit_once(':') {
        Some((h, p)) => {
            let port: u16 = p
                .parse()
                .map_err(|_| err("port", format!("'{p}' is not a port number")))?;
            if port == 0 {
                return Err(err("port", "port 0 is not valid"));
            }
            Ok((h.to_owned(), port))
        }
        None => Ok((a.to_owned(), DEFAULT_PORT)),
    }
}

impl fmt::Display for SmbLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\\\\{}", self.host)?;
        if self.port != DEFAULT_PORT {
            write!(f, ":{}", self.port)?;
        }
        write!(f, "\\{}", self.share)?;
        for c in &self.folder {
            write!(f, "\\{c}")?;
        }
        if self.min_dialect != DEFAULT_MIN_DIALECT {
            write!(f, "?{MIN_DIALECT_KEY}={}", dialect_text(self.min_dialect))?;
        }
        Ok(())
    }
}

/// A user name (`user` or `DOMAIN\user`) and its password. The password never appears in Debug or
/// Display and is zeroized when dropped.
#[derive(Clone)]
pub struct SmbCredentials {
    pub username: String,
    pub password: Secret,
}

impl SmbCredentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        SmbCredentials {
            username: username.into(),
            password: Secret::new(password),
        }
    }
}

impl fmt::Debug for SmbCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmbCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl fmt::Display for SmbCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (password redacted)", self.username)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unc_and_url_forms_parse() {
        let a = SmbLocation::parse(r"\\fs01.contoso.com\backup\MAS\sub").unwrap();
        assert_eq!(
            a,
            SmbLocation {
                host: "fs01.contoso.com".into(),
                port: 445,
                share: "backup".into(),
                folder: vec!["MAS".into(), "sub".into()],
                min_dialect: Dialect::Smb300,
            }
        );
        let b = SmbLocation::parse("smb://fs01.contoso.com:4455/backup/MAS/sub").unwrap();
        assert_eq!(b.port, 4455);
        assert_eq!(
            (b.share.as_str(), b.folder.clone()),
            ("backup", vec!["MAS".to_string(), "sub".to_string()])
        );
        let c = SmbLocation::parse("smb://fs01.contoso.com/backup").unwrap();
        assert_eq!((c.port, c.folder.len()), (445, 0));
        assert_eq!(
            SmbLocation::parse(r"\\fs01.contoso.com\backup\")
                .unwrap()
                .folder
                .len(),
            0
        );
        assert_eq!(
            SmbLocation::parse(r"\\fs01.contoso.com\backup\a")
                .unwrap()
                .folder_path(),
            "a"
        );
        assert_eq!(b.to_string(), r"\\fs01.contoso.com:4455\backup\MAS\sub");
    }

    #[test]
    fn single_label_host_is_rejected_with_the_rule() {
        let e = SmbLocation::parse(r"\\fileserver\backup").unwrap_err();
        assert_eq!(e.field, "host");
        assert!(
            e.message
                .contains("fully qualified domain name such as fs01.contoso.com"),
            "{e}"
        );
    }

    #[test]
    fn ip_hosts_are_accepted_with_a_warning() {
        let l = SmbLocation::parse("smb://127.0.0.1:4455/backup/x").unwrap();
        assert_eq!(l.warnings().len(), 1);
        assert!(
            SmbLocation::parse("smb://[::1]:4455/backup")
                .unwrap()
                .warnings()
                .len()
                == 1
        );
        assert!(SmbLocation::parse(r"\\fs01.contoso.com\b")
            .unwrap()
            .warnings()
            .is_empty());
    }

    #[test]
    fn bad_components_are_rejected_per_field() {
        for (bad, field) in [
            (r"\\fs.x.com\b\..\c", "folder"),
            (r"\\fs.x.com\b\.\c", "folder"),
            (r"\\fs.x.com\b\a\\c", "folder"),
            (r"\\fs.x.com\b\a?c", "folder"),
            (r"\\fs.x.com\b\a<c", "folder"),
            ("\\\\fs.x.com\\b\\a\u{1}c", "folder"),
            (r"\\fs.x.com\\c", "share"),
            (r"\\fs.x.com", "share"),
            (r"\\fs.x.com\b|d", "share"),
            ("smb://fs.x.com:99999/b", "port"),
            ("smb://fs.x.com:0/b", "port"),
            ("smb:///b", "host"),
            ("ftp://fs.x.com/b", "location"),
        ] {
            let e = SmbLocation::parse(bad).expect_err(bad);
            assert_eq!(e.field, field, "{bad}: {e}");
        }
    }

    #[test]
    fn smb2_1_only_by_explicit_opt_in() {
        let plain = SmbLocation::parse(r"\\fs.x.com\b\f").unwrap();
        assert_eq!(plain.min_dialect, Dialect::Smb300);
        let opted = SmbLocation::parse(r"\\fs.x.com\b\f?min-dialect=2.1").unwrap();
        assert_eq!(opted.min_dialect, Dialect::Smb210);
        assert_eq!(opted.folder, vec!["f".to_string()]);
        assert_eq!(opted.to_string(), r"\\fs.x.com\b\f?min-dialect=2.1");
        assert_eq!(SmbLocation::parse(&opted.to_string()).unwrap(), opted);
        let url = SmbLocation::parse("smb://fs.x.com:4455/b/f?min-dialect=3.1.1").unwrap();
        assert_eq!((url.port, url.min_dialect), (4455, Dialect::Smb311));
        for bad in [r"\\fs.x.com\b?min-dialect=2.0", r"\\fs.x.com\b?dialect=2.1"] {
            assert_eq!(
                SmbLocation::parse(bad).unwrap_err().field,
                "location",
                "{bad}"
            );
        }
    }

    #[test]
    fn credentials_never_show_the_password() {
        let c = SmbCredentials::new("DOM\\bob", "hunter2");
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{c}").contains("hunter2"));
    }
}
