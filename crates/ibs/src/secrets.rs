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
