//! The `ibs` binary: parses the command line, runs the command, maps errors to exit codes. All logic
//! lives in the library crates.

mod api_client;
mod cli;
mod cli_controller;
mod client_guard;
mod cmd_client;
mod cmd_keys;
mod cmd_lists;
mod cmd_recover;
mod cmd_repo;
mod cmd_serve;
mod cmd_token;
mod datalock;
mod listen;
mod location;
mod output;
mod secrets;
mod tls;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IBS_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let json = cli.json;
    let result = runtime.block_on(async move {
        match cli.command {
            cli::Command::Cert { cmd } => cmd_keys::cert(cmd, json),
            cli::Command::Key { cmd } => cmd_keys::key(cmd),
            cli::Command::Repo(args) => cmd_repo::run(args, json, cli.quiet).await,
            cli::Command::Serve(args) => cmd_serve::serve(args).await,
            cli::Command::Token { cmd } => cmd_token::token(cmd, json),
            cli::Command::Recover(args) => cmd_recover::recover(args, json, cli.quiet).await,
            cli::Command::Validate(args) => cmd_recover::validate(args, json, cli.quiet).await,
            other => cmd_client::run(other, json, cli.quiet),
        }
    });
    let code = match result {
        Ok(code) => code,
        Err(err) => {
            let code = output::code_for(&err);
            eprintln!("error: {err:#}");
            if let Some(r) = output::remediation(&err) {
                eprintln!("{r}");
            }
            code
        }
    };
    drop(runtime);
    std::process::exit(code);
}
