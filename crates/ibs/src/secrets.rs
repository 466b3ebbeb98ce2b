//! Where secrets come from: an environment variable, a file, or a prompt on the terminal — never the
//! command line. Nothing here logs or prints a secret.

use anyhow::{bail, Context, Result};
use std::io::IsTerminal;
use std::path::Path;

/// Reads a secret from `file` (first line, trailing newline removed), else from `env_var`, else
/// prompts when stdin is a terminal, else fails naming every way to supply it (`flag` is the
/// command's own file flag, e.g. `--pfx-password-file`, if it has one) with exit `code`.
pub fn secret(
    what: &str,
    env_var: &str,
    (flag, code): (Option<&str>, i32),
    file: Option<&Path>,
    confirm: bool,
) -> Result<String> {
    if let Some(f) = file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading the {what} from {}", f.display()))?;
        return Ok(text.lines().next().unwrap_or("").to_owned());
    }
    if let Ok(v) = std::env::var(env_var) {
        return Ok(v);
    }
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("{what}: "))?;
        if confirm {
            let again = rpassword::prompt_password(format!("{what} (again): "))?;
            if again != first {
                bail!("the two {what} entries differ");
            }
        }
        return Ok(first);
    }
    let ways = match flag {
        Some(f) => format!("set ${env_var}, pass {f} FILE, or run on a terminal to be prompted"),
        None => format!("set ${env_var}, or run on a terminal to be prompted"),
    };
    Err(crate::errors::coded(code, format!("no {what}"), ways))
}

pub fn pfx_password(file: Option<&Path>, confirm: bool) -> Result<String> {
    secret(
        ".pfx password",
        "IBS_PFX_PASSWORD",
        (Some("--pfx-password-file"), crate::output::exit::KEY),
        file,
        confirm,
    )
}

/// The share password; `flag` is the command's password-file flag, if it has one.
pub fn share_password(file: Option<&Path>, flag: Option<&str>) -> Result<String> {
    secret(
        "share password",
        "IBS_SHARE_PASSWORD",
        (flag, crate::output::exit::USAGE),
        file,
        false,
    )
}

/// The access key id and secret of an S3 location. From `file` when given: an AWS-style
/// credentials file (`aws_access_key_id = …`, `aws_secret_access_key = …`, its `[default]` or
/// only profile) or a file whose first line is the secret alone; else the access key from
/// `username` (`--username`) or `$AWS_ACCESS_KEY_ID`, and the secret from `$AWS_SECRET_ACCESS_KEY`
/// or a prompt. Never from argv; neither is printed.
pub fn s3_credentials(username: Option<&str>, file: Option<&Path>) -> Result<(String, String)> {
    let from_file = match file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading the S3 credentials from {}", f.display()))?,
        ),
        None => None,
    };
    let (file_key, file_secret) = match &from_file {
        Some(text) => parse_aws_credentials(text),
        None => (None, None),
    };
    let access_key = file_key
        .or_else(|| username.map(str::to_owned))
        .or_else(|| std::env::var("AWS_ACCESS_KEY_ID").ok())
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            crate::errors::coded(
                crate::output::exit::USAGE,
                "no S3 access key id",
                "set $AWS_ACCESS_KEY_ID, pass --username, or put aws_access_key_id in the \
                 --password-file credentials file",
            )
        })?;
    let secret_key = match file_secret {
        Some(s) => s,
        None => secret(
            "S3 secret access key",
            "AWS_SECRET_ACCESS_KEY",
            (Some("--password-file"), crate::output::exit::USAGE),
            None,
            false,
        )?,
    };
    Ok((access_key, secret_key))
}

/// The access key id and secret of an S3 location's maintenance credential (ADR 0040), for
/// `ibs location set`. From `file` (`-`: stdin) when given: an AWS-style credentials file, or a
/// file whose first line is the secret alone (the key id from `user`); else the key id from
/// `user` and the secret from `$IBS_MAINTENANCE_SECRET_KEY` or a prompt. Never from argv, never
/// the writer's `$AWS_*` variables (they hold the writer key); neither is printed.
pub fn maintenance_credentials(
    user: Option<&str>,
    file: Option<&Path>,
) -> Result<(String, String)> {
    let text =
        match file {
            Some(f) if f == Path::new("-") => {
                let mut t = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)
                    .context("reading the maintenance credential from stdin")?;
                Some(t)
            }
            Some(f) => Some(std::fs::read_to_string(f).with_context(|| {
                format!("reading the maintenance credential from {}", f.display())
            })?),
            None => None,
        };
    let (file_key, file_secret) = match &text {
        Some(t) => parse_aws_credentials(t),
        None => (None, None),
    };
    let key = file_key
        .or_else(|| user.map(str::to_owned))
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            crate::errors::coded(
                crate::output::exit::USAGE,
                "no maintenance access key id",
                "pass --maintenance-user, or put aws_access_key_id in the --maintenance-key-file credentials file",
            )
        })?;
    let secret_key = match file_secret {
        Some(s) => s,
        None => secret(
            "maintenance secret access key",
            "IBS_MAINTENANCE_SECRET_KEY",
            (Some("--maintenance-key-file"), crate::output::exit::USAGE),
            None,
            false,
        )?,
    };
    if secret_key.is_empty() {
        return Err(crate::errors::coded(
            crate::output::exit::USAGE,
            "the maintenance secret access key is empty",
            "put the secret in the --maintenance-key-file file",
        ));
    }
    Ok((key, secret_key))
}

/// `(access key, secret)` from an AWS credentials file (the `[default]` profile, else the first),
/// or `(None, first line)` from a file that holds only the secret.
fn parse_aws_credentials(text: &str) -> (Option<String>, Option<String>) {
    if !text.contains("aws_secret_access_key") {
        return (None, text.lines().next().map(str::to_owned));
    }
    let (mut key, mut secret, mut profile_seen) = (None, None, 0);
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            profile_seen += 1;
            if name.trim() == "default" {
                (key, secret) = (None, None);
                profile_seen = 1;
            } else if profile_seen > 1 && secret.is_some() {
                break;
            }
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            match k.trim() {
                "aws_access_key_id" => key = Some(v.trim().to_owned()),
                "aws_secret_access_key" => secret = Some(v.trim().to_owned()),
                _ => {}
            }
        }
    }
    (key, secret)
}

#[cfg(test)]
mod tests {
    use super::parse_aws_credentials;

    #[test]
    fn credentials_files_parse() {
        let aws = "[other]\naws_access_key_id = A1\naws_secret_access_key = S1\n\n[default]\n\
                   aws_access_key_id=A2\naws_secret_access_key= S2 \n";
        assert_eq!(
            parse_aws_credentials(aws),
            (Some("A2".into()), Some("S2".into()))
        );
        let one = "[ci]\naws_access_key_id = A1\naws_secret_access_key = S1\n";
        assert_eq!(
            parse_aws_credentials(one),
            (Some("A1".into()), Some("S1".into()))
        );
        assert_eq!(
            parse_aws_credentials("just-the-secret\n"),
            (None, Some("just-the-secret".into()))
        );
    }
}
