//! `ibs completions` and `ibs manpage`: shell completion scripts and man pages generated from the
//! clap definition in [`crate::cli`] (clap_complete, clap_mangen), so they list exactly the
//! commands and flags this build has.

use crate::cli::{Cli, CompletionShell};
use crate::output::{exit, stdout_closed, RawStdout};
use anyhow::{Context, Result};
use clap::CommandFactory;
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to stdout; a closed pipe ends quietly.
fn emit(bytes: &[u8]) -> Result<i32> {
    let written = RawStdout.write_all(bytes).and_then(|_| RawStdout.flush());
    if !stdout_closed() {
        written?;
    }
    Ok(exit::OK)
}

/// `ibs completions SHELL`.
pub fn completions(shell: CompletionShell) -> Result<i32> {
    let shell = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "ibs", &mut buf);
    emit(&buf)
}

/// `ibs manpage [--dir DIR]`.
pub fn manpage(dir: Option<&Path>, json: bool, quiet: bool) -> Result<i32> {
    let cmd = Cli::command();
    let Some(dir) = dir else {
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut buf)?;
        return emit(&buf);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(cmd, dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))?;
    let mut pages: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ibs") && n.ends_with(".1"))
        .collect();
    pages.sort();
    if json {
        outln!("{}", serde_json::json!({"dir": dir, "pages": pages}));
    } else if !quiet {
        outln!("wrote {} man pages into {}", pages.len(), dir.display());
    }
    Ok(exit::OK)
}
