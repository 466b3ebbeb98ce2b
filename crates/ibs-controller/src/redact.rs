//! URLs made safe to print. A URL may carry credentials anywhere: userinfo (`user:pass@`), a query
//! value (`?token=…`), or the path itself (webhook services put their secret in it). [`url`] keeps
//! only what identifies the endpoint, scheme, host and port, and marks what it left out, so every log
//! line, error and API field that names such a URL shows `https://hooks.example.com/…` and never a
//! secret.

/// `scheme://host[:port]`, with `/…` when the URL had a path, query or fragment. Userinfo is
/// dropped (shown as `***@`). Text that is not a URL becomes `<url>`.
pub fn url(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return "<url>".into();
    };
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+')
    {
        return "<url>".into();
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((_, h)) => ("***@", h),
        None => ("", authority),
    };
    let more = if tail.is_empty() || tail == "/" {
        ""
    } else {
        "/…"
    };
    format!("{scheme}://{userinfo}{host}{more}")
}

/// `text` with every occurrence of `raw_url` replaced by its redacted form (for error texts of
/// HTTP clients, which may quote the URL they were given).
pub fn in_text(text: &str, raw_url: &str) -> String {
    if raw_url.is_empty() {
        return text.to_string();
    }
    text.replace(raw_url, &url(raw_url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_survive() {
        let u = "https://alice:S3cr3t@hooks.example.com:8443/services/T0/B0/XyZsecret?token=abc123&x=1#f";
        let r = url(u);
        assert_eq!(r, "https://***@hooks.example.com:8443/…");
        for s in ["alice", "S3cr3t", "XyZsecret", "abc123", "token"] {
            assert!(!r.contains(s), "{r}");
        }
        assert_eq!(url("http://127.0.0.1:9/"), "http://127.0.0.1:9");
        assert_eq!(url("not a url with pw"), "<url>");
        let e = format!("error sending to {u}: connection refused");
        assert!(!in_text(&e, u).contains("S3cr3t"));
    }
}
