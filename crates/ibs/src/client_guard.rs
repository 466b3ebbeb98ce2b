//! The API client's rule for secrets on the wire: a request body that carries a .pfx, its password,
//! a share password or a legacy key is sent only over `https://`, or over plain `http://` to this
//! host's loopback (`localhost`, 127.0.0.0/8, `::1`). Anything else is refused before a connection
//! is made.

use anyhow::{bail, Result};
use serde_json::Value;

/// Whether a JSON body carries a secret: a .pfx or its password, a share password, a legacy key.
fn carries_secret(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.iter().any(|(k, v)| {
            (k.starts_with("pfx") || k.contains("password") || k == "legacy_key") && !v.is_null()
                || carries_secret(v)
        }),
        Value::Array(a) => a.iter().any(carries_secret),
        _ => false,
    }
}

/// The host of an `http://` URL when it is not a loopback address (`localhost`, 127/8, ::1).
fn remote_cleartext_host(base: &str) -> Option<String> {
    let rest = base.strip_prefix("http://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match hostport.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => hostport.rsplit_once(':').map_or(hostport, |(h, _)| h),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    (!loopback).then(|| host.to_string())
}

/// Refuses to send a secret in cleartext over the network: a body carrying one goes only over
/// `https://`, or plain `http://` to this host's loopback.
pub fn refuse_cleartext_secrets(base: &str, body: &Value) -> Result<()> {
    if let Some(host) = remote_cleartext_host(base) {
        if carries_secret(body) {
            bail!(
                "refusing to send a .pfx or a password over plain http:// to {host}, which is not \
                 this host's loopback: anyone on the network path could read it. Use the \
                 controller's https:// URL (ibs serve --tls-cert/--tls-key), or run the command \
                 on the controller's host against http://127.0.0.1"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cleartext_guard() {
        let secret = json!({"pfx": "AAAA", "pfx_password": "pw"});
        for remote in [
            "http://192.0.2.1:9440",
            "http://0.0.0.0:9440",
            "http://ctl.example.com",
            "http://u:p@[2001:db8::1]:9440/",
            "http://127.0.0.1.example.com:80",
        ] {
            assert!(
                refuse_cleartext_secrets(remote, &secret).is_err(),
                "{remote}"
            );
            assert!(refuse_cleartext_secrets(remote, &json!({"frequency_hours": 3})).is_ok());
        }
        for ok in [
            "http://127.0.0.1:9440",
            "http://localhost:9440",
            "http://[::1]:9440",
            "https://ctl.example.com",
        ] {
            assert!(refuse_cleartext_secrets(ok, &secret).is_ok(), "{ok}");
        }
        assert!(carries_secret(&json!({"password": "x"})));
        assert!(carries_secret(&json!([{"name": "pg", "password": "x"}])));
        assert!(!carries_secret(&json!({"password": null})));
    }
}
