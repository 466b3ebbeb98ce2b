//! Where secrets come from: an environment variable, a file, or a prompt on the terminal — never the
//! command line. Nothing here logs or prints a secret.

use anyhow::{bail, Context, Result};
use std::io::IsTerminal;
use std::path::Path;

/// Reads a secret from `env_var`, else from `file` (first line, trailing newline removed), else
/// prompts when stdin is a terminal, else fails naming every way to supply it.
pub fn secret(what: &str, env_var: &str, file: Option<&Path>, confirm: bool) -> Result<String> {
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
    bail!(
        "no {what}: set ${env_var}, pass a --…-password-file, or run on a terminal to be prompted"
    )
}

pub fn pfx_password(file: Option<&Path>, confirm: bool) -> Result<String> {
    secret(".pfx password", "IBS_PFX_PASSWORD", file, confirm)
}

pub fn share_password(file: Option<&Path>) -> Result<String> {
    secret("share password", "IBS_SHARE_PASSWORD", file, false)
}
