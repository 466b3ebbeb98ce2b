//! Connection URLs of service components: `SCHEME://[USER@]HOST[:PORT][/NAME]`. A password in the
//! URL is refused (it would end up in the config, the job records and possibly argv): passwords
//! come from `password_file` or `password_env`. `%XX` escapes are decoded in the user and the name.

/// A parsed connection URL, without any password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnUrl {
    pub scheme: String,
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    /// The database name (postgres, mariadb) or number (redis); `None` when the path is empty.
    pub name: Option<String>,
}

fn decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad %-escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

impl ConnUrl {
    /// Parses `text`, accepting only the given schemes.
    pub fn parse(text: &str, schemes: &[&str]) -> Result<ConnUrl, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("{text:?} is not a URL (expected {}://…)", schemes[0]))?;
        if !schemes.contains(&scheme) {
            return Err(format!(
                "URL scheme {scheme:?} does not fit this kind (use {})",
                schemes.join(" or ")
            ));
        }
        if rest.contains('?') || rest.contains('#') {
            return Err("URL query parameters are not supported".into());
        }
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, p),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let user = match userinfo {
            Some(u) if u.contains(':') => {
                return Err(
                    "a password in the URL is refused: use password_file or password_env".into(),
                )
            }
            Some("") => None,
            Some(u) => Some(decode(u)?),
            None => None,
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (
                h,
                Some(
                    p.parse::<u16>()
                        .map_err(|_| format!("port {p:?} is not a number"))?,
                ),
            ),
            _ => (hostport, None),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err("the URL needs a host".into());
        }
        let name = match path.trim_end_matches('/') {
            "" => None,
            p if p.contains('/') => return Err(format!("{p:?}: one database name only")),
            p => Some(decode(p)?),
        };
        Ok(ConnUrl {
            scheme: scheme.into(),
            user,
            host: host.into(),
            port,
            name,
        })
    }

    /// The same server with another database name.
    pub fn with_name(&self, name: Option<&str>) -> ConnUrl {
        ConnUrl {
            name: name.map(String::from),
            ..self.clone()
        }
    }
}

impl std::fmt::Display for ConnUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://", self.scheme)?;
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        if let Some(n) = &self.name {
            write!(f, "/{n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_passwords() {
        let u = ConnUrl::parse(
            "postgresql://app@127.0.0.1:5432/app",
            &["postgresql", "postgres"],
        )
        .unwrap();
        assert_eq!(u.user.as_deref(), Some("app"));
        assert_eq!(u.port, Some(5432));
        assert_eq!(u.name.as_deref(), Some("app"));
        assert_eq!(u.to_string(), "postgresql://app@127.0.0.1:5432/app");
        let u = ConnUrl::parse("redis://127.0.0.1", &["redis"]).unwrap();
        assert_eq!((u.user, u.port, u.name), (None, None, None));
        assert!(ConnUrl::parse("mysql://root:pw@h/x", &["mysql"])
            .unwrap_err()
            .contains("password"));
        assert!(ConnUrl::parse("mysql://h/x", &["redis"]).is_err());
        assert!(ConnUrl::parse("h/x", &["redis"]).is_err());
    }
}
