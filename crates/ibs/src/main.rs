//! The `ibs` binary: parses the command line, runs the command, maps errors to exit codes
//! ([`errors`]). All logic lives in the library crates.

#[macro_use]
mod output;
mod api_client;
mod cli;
mod cli_controller;
mod client_guard;
mod cmd_alerts;
mod cmd_cancel;
mod cmd_client;
mod cmd_docs;
mod cmd_keys;
mod cmd_lists;
mod cmd_recover;
mod cmd_repo;
mod cmd_serve;
mod cmd_token;
mod datalock;
mod errors;
mod limits;
mod listen;
mod location;
mod logging;
mod malloc;
mod secrets;
mod tls;

use clap::Parser;

/// Parses the command line. A usage error exits 2 (help and version 0); with `--json` anywhere on
/// the line it is reported as a JSON error like every other failure.
fn parse() -> cli::Cli {
    match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) if e.use_stderr() && std::env::args().any(|a| a == "--json") => {
            let message = e.kind().to_string();
            let detail = e.to_string();
            let first = detail
                .lines()
                .next()
                .unwrap_or(&message)
                .trim_start_matches("error: ");
            output::err_line(
                &errors::json(
                    output::exit::USAGE,
                    first,
                    Some("see `ibs help` or `ibs COMMAND --help`"),
                )
                .to_string(),
            );
            std::process::exit(output::exit::USAGE);
        }
        Err(e) => {
            // clap writes help and usage itself; a closed pipe must not turn into a panic there.
            let _ = e.print();
            std::process::exit(e.exit_code());
        }
    }
}

fn main() {
    malloc::bound_freed_buffers();
    limits::raise_open_files();
    let cli = parse();
    match &cli.command {
        cli::Command::Serve(a) => logging::init("info", a.log_format),
        _ => logging::init("warn", logging::LogFormat::Text),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let json = cli.json;
    let result = runtime.block_on(async move {
        match cli.command {
            cli::Command::Cert { cmd } => cmd_keys::cert(cmd, json, cli.quiet),
            cli::Command::Key { cmd } => cmd_keys::key(cmd),
            cli::Command::Repo(args) => cmd_repo::run(args, json, cli.quiet).await,
            cli::Command::Serve(args) => cmd_serve::serve(args).await,
            cli::Command::Token { cmd } => cmd_token::token(cmd, json),
            cli::Command::Recover(args) => cmd_recover::recover(args, json, cli.quiet).await,
            cli::Command::Validate(args) => cmd_recover::validate(args, json, cli.quiet).await,
            cli::Command::Completions { shell } => cmd_docs::completions(shell),
            cli::Command::Manpage { dir } => cmd_docs::manpage(dir.as_deref(), json, cli.quiet),
            other => cmd_client::run(other, json, cli.quiet),
        }
    });
    let code = match result {
        Ok(code) => code,
        Err(err) => errors::report(&err, json),
    };
    drop(runtime);
    std::process::exit(code);
}
