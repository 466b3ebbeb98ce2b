//! What the HTTP API may say about components, and what it is shown.
//!
//! The host's configuration is the only source of anything that runs a command or reads a host file
//! or environment variable: hooks, `command` backup/restore commands, `files` paths, the `sqlite`
//! path, `tool_dir`, `password_file` and `password_env`. The host's components form the *host
//! catalog* (the config file's `[[component]]` list, or the first-start `sample` component). A
//! `PUT /api/v1/components` request ([`ComponentRequest`]) can only
//! - reference a catalog component by name (`{"name": "etc"}`), optionally changing its `priority`
//!   and `essential_for_recovery`, or
//! - declare a `postgres`, `mariadb` or `redis` component by `url` with a `password` value, which is
//!   stored sealed ([`crate::secretbox`]) and never shown again.
//!
//! A [`ComponentView`] never carries a hook, a command, a password or where one comes from: only
//! whether each is set.

use crate::component::{password_purpose, ComponentConfig, DEFAULT_PRIORITY};
use crate::kinds::ConnUrl;
use crate::secretbox::SecretBox;
use crate::{ControllerError, Result};

/// Fields that name a command, a host path or a host environment variable: the API may not send
/// them.
pub const HOST_ONLY_FIELDS: [&str; 11] = [
    "pre_hook",
    "post_hook",
    "hook_timeout_seconds",
    "backup",
    "restore",
    "paths",
    "exclude",
    "path",
    "tool_dir",
    "password_file",
    "password_env",
];

/// Kinds the API can declare itself (the others run commands or read host files).
pub const API_KINDS: [&str; 3] = ["postgres", "mariadb", "redis"];

pub use ibs_types::component::{ComponentRequest, ComponentView};

/// What the API shows of a stored component: `source` is `config` when the host catalog defines it.
pub fn view(c: &ComponentConfig, catalog: &[ComponentConfig]) -> ComponentView {
    let set = |o: &Option<String>| o.as_deref().is_some_and(|s| !s.trim().is_empty());
    ComponentView {
        name: c.name.clone(),
        kind: c.kind.clone(),
        source: if catalog.iter().any(|h| h.name == c.name) {
            "config".into()
        } else {
            "api".into()
        },
        paths: c.paths.clone(),
        url: c.url.clone(),
        path: c.path.clone(),
        essential_for_recovery: c.essential_for_recovery,
        priority: c.priority,
        pre_hook_set: set(&c.pre_hook),
        post_hook_set: set(&c.post_hook),
        commands_set: set(&c.backup) || set(&c.restore),
        password_set: c.password_file.is_some()
            || c.password_env.is_some()
            || c.password_sealed.is_some(),
    }
}

/// Checks a raw `PUT /components` body for host-only fields, so the refusal names the field and
/// says why (serde would only call it unknown).
pub fn reject_host_only(body: &serde_json::Value) -> Result<()> {
    let Some(items) = body.as_array() else {
        return Ok(());
    };
    for (i, item) in items.iter().enumerate() {
        let Some(obj) = item.as_object() else {
            continue;
        };
        if let Some(f) = HOST_ONLY_FIELDS.iter().find(|f| obj.contains_key(**f)) {
            return Err(ControllerError::invalid(
                format!("component[{i}].{f}"),
                "hooks, commands, host paths and password sources come only from the host's \
                 configuration file (ibs.toml); reference such a component by name",
            ));
        }
    }
    Ok(())
}

/// Turns API requests into stored component configs: references are copied from `catalog`,
/// declared service components get their password sealed (or keep the stored one when kind and url
/// are unchanged). The result still has to pass [`crate::component::validate`].
pub fn resolve(
    requests: Vec<ComponentRequest>,
    catalog: &[ComponentConfig],
    current: &[ComponentConfig],
    secrets: &SecretBox,
) -> Result<Vec<ComponentConfig>> {
    let mut out = Vec::with_capacity(requests.len());
    for (i, r) in requests.into_iter().enumerate() {
        let field = |f: &str| format!("component[{i}].{f}");
        let host = catalog.iter().find(|h| h.name == r.name);
        let Some(kind) = r.kind.clone() else {
            let Some(host) = host else {
                return Err(ControllerError::invalid(
                    field("name"),
                    format!(
                        "no component {:?} is defined in the host's configuration; reference one \
                         of those by name, or declare a postgres, mariadb or redis component with \
                         kind and url",
                        r.name
                    ),
                ));
            };
            if r.url.is_some() || r.password.is_some() {
                return Err(ControllerError::invalid(
                    field("url"),
                    "a component from the host's configuration can change only its priority and \
                     essential_for_recovery through the API",
                ));
            }
            let mut c = host.clone();
            if let Some(p) = r.priority {
                c.priority = p;
            }
            if let Some(e) = r.essential_for_recovery {
                c.essential_for_recovery = e;
            }
            out.push(c);
            continue;
        };
        if host.is_some() {
            return Err(ControllerError::invalid(
                field("name"),
                format!(
                    "{:?} names a component of the host's configuration: reference it without a kind",
                    r.name
                ),
            ));
        }
        if !API_KINDS.contains(&kind.as_str()) {
            let why = if ["files", "command", "sqlite"].contains(&kind.as_str()) {
                format!(
                    "a {kind} component runs commands or reads host files: define it in the \
                     host's configuration file (ibs.toml) and reference it by name"
                )
            } else {
                format!(
                    "unknown component kind {kind:?}: the API declares postgres, mariadb or redis \
                     components, and references the others from the host's configuration"
                )
            };
            return Err(ControllerError::invalid(field("kind"), why));
        }
        let sealed = match &r.password {
            Some(p) if p.expose().is_empty() => {
                return Err(ControllerError::invalid(
                    field("password"),
                    "must not be empty",
                ))
            }
            Some(p) => Some(secrets.seal(&password_purpose(&r.name), p.expose())),
            None => current
                .iter()
                .find(|c| c.name == r.name && c.kind == kind && c.url == r.url)
                .and_then(|c| c.password_sealed.clone()),
        };
        out.push(ComponentConfig {
            name: r.name,
            kind,
            paths: Vec::new(),
            exclude: Vec::new(),
            backup: None,
            restore: None,
            url: r.url,
            password_file: None,
            password_env: None,
            password_sealed: sealed,
            path: None,
            tool_dir: None,
            essential_for_recovery: r.essential_for_recovery.unwrap_or(true),
            priority: r.priority.unwrap_or(DEFAULT_PRIORITY),
            pre_hook: None,
            post_hook: None,
            hook_timeout_seconds: crate::component::DEFAULT_HOOK_TIMEOUT_SECS,
        });
    }
    Ok(out)
}

/// A restore sends the component's password to the target server. A password the host supplies
/// (`password_file`, `password_env`) goes only to the server the host's configuration names: a
/// target on another host or port is refused, so an API caller cannot have it delivered elsewhere.
pub fn check_restore_target(c: &crate::component::Component, target: &ConnUrl) -> Result<()> {
    use crate::component::ComponentKind;
    use crate::kinds::PasswordSource;
    let spec = match &c.kind {
        ComponentKind::Postgres(s) | ComponentKind::Mariadb(s) | ComponentKind::Redis(s) => s,
        _ => return Ok(()),
    };
    let host_secret = matches!(
        spec.password,
        PasswordSource::File(_) | PasswordSource::Env(_)
    );
    let same_server =
        spec.url.host.eq_ignore_ascii_case(&target.host) && spec.url.port == target.port;
    if host_secret && !same_server {
        return Err(ControllerError::invalid(
            "target",
            format!(
                "component {} takes its password from the host's configuration, which is sent \
                 only to the server it names ({}); restore to a database on that server",
                c.name, spec.url.host
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: serde_json::Value) -> ComponentRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn references_copy_the_host_definition_and_declarations_seal_the_password() {
        let host: ComponentConfig = serde_json::from_value(serde_json::json!({
            "name": "etc", "kind": "files", "paths": ["/etc"], "pre_hook": "sync"
        }))
        .unwrap();
        let b = SecretBox::ephemeral();
        let out = resolve(
            vec![
                req(serde_json::json!({"name": "etc", "priority": 3})),
                req(serde_json::json!({"name": "pg", "kind": "postgres",
                    "url": "postgresql://u@db.example:5432/app", "password": "pw-123"})),
            ],
            std::slice::from_ref(&host),
            &[],
            &b,
        )
        .unwrap();
        assert_eq!(out[0].pre_hook.as_deref(), Some("sync"));
        assert_eq!(out[0].priority, 3);
        let sealed = out[1].password_sealed.clone().unwrap();
        assert!(!sealed.contains("pw-123"));
        assert_eq!(b.open(&password_purpose("pg"), &sealed).unwrap(), "pw-123");
        // Kept on a later PUT without a password, dropped when the url changes.
        let again = resolve(
            vec![req(serde_json::json!({"name": "pg", "kind": "postgres",
                "url": "postgresql://u@db.example:5432/app"}))],
            &[],
            &out,
            &b,
        )
        .unwrap();
        assert_eq!(again[0].password_sealed.as_deref(), Some(sealed.as_str()));
        let moved = resolve(
            vec![req(serde_json::json!({"name": "pg", "kind": "postgres",
                "url": "postgresql://u@evil.example:5432/app"}))],
            &[],
            &out,
            &b,
        )
        .unwrap();
        assert!(moved[0].password_sealed.is_none());
        let v = view(&out[0], std::slice::from_ref(&host));
        assert!(v.pre_hook_set && v.source == "config");
        assert!(!serde_json::to_string(&v).unwrap().contains("sync"));
    }

    #[test]
    fn a_host_password_is_never_sent_to_another_server_by_a_restore() {
        let cs = crate::component::validate(&[
            serde_json::from_value(serde_json::json!({"name": "pg", "kind": "postgres",
                "url": "postgresql://u@db.example:5432/app", "password_file": "/etc/ibs/pg"}))
            .unwrap(),
            serde_json::from_value(serde_json::json!({"name": "api", "kind": "postgres",
                "url": "postgresql://u@db.example:5432/app", "password_sealed": "x"}))
            .unwrap(),
        ])
        .unwrap();
        let schemes = crate::kinds::postgres::SCHEMES;
        let evil =
            ConnUrl::parse("postgresql://u@evil.example:5432/app_restored", schemes).unwrap();
        let same = ConnUrl::parse("postgresql://u@db.example:5432/app_restored", schemes).unwrap();
        let pg = cs.iter().find(|c| c.name == "pg").unwrap();
        let e = check_restore_target(pg, &evil).unwrap_err();
        assert!(e.to_string().contains("db.example"), "{e}");
        assert!(check_restore_target(pg, &same).is_ok());
        // A password the API gave may go where the API says.
        let api = cs.iter().find(|c| c.name == "api").unwrap();
        assert!(check_restore_target(api, &evil).is_ok());
    }
}
