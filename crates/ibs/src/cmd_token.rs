//! `ibs token create | list | revoke`: API token management on the controller's host, through the
//! state database in the data directory (so it works while `ibs serve` runs, and without a token).
//! A token is shown once at creation; listings show ids, roles, labels and times, never a token.

use crate::cli_controller::{RoleArg, TokenCmd};
use crate::cmd_serve::{default_data_dir, open_db};
use crate::output::{exit, table};
use anyhow::{bail, Result};
use ibs_controller::model::Role;
use ibs_repo::clock::{rfc3339, Clock, SystemClock};

/// Parses `30d`, `12h`, `90m`, `3600s` or plain seconds into seconds (at least 1).
pub fn parse_duration(text: &str) -> Result<i64> {
    let t = text.trim();
    let (num, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, "s"),
    };
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("--expires {text:?}: expected a number with s, m, h or d (e.g. 30d)"),
    };
    let n: i64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("--expires {text:?}: expected a number with s, m, h or d"))?;
    match n.checked_mul(mult) {
        Some(v) if v >= 1 => Ok(v),
        _ => bail!("--expires {text:?}: must be at least 1s"),
    }
}

/// Opens the state database of an existing controller data directory; refuses (creating nothing)
/// where there is none, so a mistyped --data cannot mint a token no controller knows.
fn open_existing(
    data: Option<std::path::PathBuf>,
) -> Result<std::sync::Arc<ibs_controller::db::Db>> {
    let data = data.unwrap_or_else(default_data_dir);
    if !data.join("state.sqlite").is_file() {
        return Err(crate::errors::coded(
            exit::NOT_FOUND,
            format!(
                "{} holds no controller data (no state.sqlite); nothing was created",
                data.display()
            ),
            "give the --data directory `ibs serve` uses (its banner prints it), or start `ibs serve` once to create it",
        ));
    }
    Ok(open_db(&data)?.0)
}

pub fn token(cmd: TokenCmd, json: bool) -> Result<i32> {
    let now = SystemClock.now_unix();
    match cmd {
        TokenCmd::Create {
            role,
            label,
            expires,
            data,
        } => {
            let expires_at = match expires.as_deref() {
                Some(e) => Some(now.saturating_add(parse_duration(e)?)),
                None => None,
            };
            let db = open_existing(data)?;
            let role = match role {
                RoleArg::Reader => Role::Reader,
                RoleArg::Operator => Role::Operator,
                RoleArg::Admin => Role::Admin,
            };
            let label = label
                .unwrap_or_else(|| format!("created with ibs token create ({})", role.as_str()));
            let token = db.create_token_expiring(role, &label, now, expires_at)?;
            db.audit(
                now,
                "local:ibs token create",
                "token.create",
                &[role.as_str().into(), label],
            )?;
            if json {
                outln!(
                    "{}",
                    serde_json::json!({ "role": role, "token": token, "expires_at": expires_at })
                );
            } else {
                let until = expires_at
                    .map(|t| format!(", valid until {}", rfc3339(t)))
                    .unwrap_or_default();
                errln!(
                    "New {} token{until} (shown once; it is stored only hashed). Use it as IBS_TOKEN:",
                    role.as_str()
                );
                outln!("{token}");
            }
            Ok(exit::OK)
        }
        TokenCmd::List { data } => {
            let db = open_existing(data)?;
            let list = db.list_tokens(now)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|t| {
                        vec![
                            t.id.to_string(),
                            t.role.clone(),
                            rfc3339(t.created_at),
                            match (t.expires_at, t.expired) {
                                (None, _) => "never".into(),
                                (Some(e), true) => format!("{} (expired)", rfc3339(e)),
                                (Some(e), false) => rfc3339(e),
                            },
                            t.label.clone(),
                        ]
                    })
                    .collect();
                table(&["ID", "ROLE", "CREATED", "EXPIRES", "LABEL"], &rows);
            }
            Ok(exit::OK)
        }
        TokenCmd::Revoke { id, data } => {
            let db = open_existing(data)?;
            if !db.revoke_token(id)? {
                bail!("no token has id {id} (see `ibs token list`)");
            }
            db.audit(
                now,
                "local:ibs token revoke",
                "token.revoke",
                &[format!("token#{id}")],
            )?;
            errln!("token {id} revoked");
            Ok(exit::OK)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d").unwrap(), 30 * 86_400);
        assert_eq!(parse_duration("12h").unwrap(), 43_200);
        assert_eq!(parse_duration("90m").unwrap(), 5_400);
        assert_eq!(parse_duration("45").unwrap(), 45);
        for bad in ["", "0d", "-1d", "5w", "d", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
