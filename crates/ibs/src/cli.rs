//! The command-line contract. Tests and operators' scripts depend on these names: add, never rename.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "ibs",
    version,
    about = "ibs — the Infrastructure Backup Service",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress bars or notices.
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

#[derive(Subcommand)]
pub enum Command {
    /// Certificates for envelope encryption.
    Cert {
        #[command(subcommand)]
        cmd: CertCmd,
    },
    /// Legacy symmetric key files.
    Key {
        #[command(subcommand)]
        cmd: KeyCmd,
    },
    /// Work on a repository directly, without the controller.
    Repo(RepoArgs),
    /// Run the backup controller: scheduler, jobs, alerts and the HTTP API.
    Serve(crate::cli_controller::ServeArgs),
    /// API tokens, created on the controller's host.
    Token {
        #[command(subcommand)]
        cmd: crate::cli_controller::TokenCmd,
    },
    /// Backup-location settings on the controller.
    Location(crate::cli_controller::LocationArgs),
    /// Backups on the controller: start, list, show, validate.
    Backup(crate::cli_controller::BackupArgs),
    /// Restore a backup (or one component) through the controller.
    Restore(crate::cli_controller::RestoreArgs),
    /// The maintenance gate: begin/end an update, FRU or secret rotation.
    Maintenance(crate::cli_controller::MaintenanceArgs),
    /// Alerts raised by the controller.
    Alerts(crate::cli_controller::AlertsArgs),
    /// The backup store: prune files ibs did not create.
    Store(crate::cli_controller::StoreArgs),
    /// Jobs on the controller (every kind): list, show.
    Jobs(crate::cli_controller::JobsArgs),
    /// The running and recent operations of every kind (jobs, retention cleanups, maintenance,
    /// location clears, store prunes), newest first.
    Operations(crate::cli_controller::OperationsArgs),
    /// The controller's audit log, newest first (admin).
    Audit(crate::cli_controller::ListArgs),
    /// The components the controller backs up.
    Components(crate::cli_controller::ListArgs),
    /// Pack verification on the controller: status, start, per-pack records.
    Verification(crate::cli_controller::VerificationArgs),
    /// Cloud recovery on a bare machine: restore every planned component from the share with the
    /// .pfx alone, verify each, and adopt the repository.
    Recover(crate::cmd_recover::RecoverArgs),
    /// Prove a backup restorable: check every chunk, restore into a scratch area and temporary
    /// databases, write a JSON and an HTML report.
    Validate(crate::cmd_recover::ValidateArgs),
}

#[derive(Subcommand)]
pub enum CertCmd {
    /// Make a self-signed RSA certificate: a .cer for the controller and a .pfx to keep off-site.
    New {
        /// Subject common name, e.g. "ibs backup contoso nyc".
        #[arg(long)]
        subject: String,
        #[arg(long)]
        cer: PathBuf,
        #[arg(long)]
        pfx: PathBuf,
        #[arg(long, default_value_t = 730)]
        days: u32,
        #[arg(long, default_value_t = 4096)]
        bits: usize,
        /// File holding the .pfx password (else $IBS_PFX_PASSWORD, else a prompt).
        #[arg(long)]
        pfx_password_file: Option<PathBuf>,
    },
    /// Show a certificate's thumbprint, subject, expiry and key size.
    Show { cer: PathBuf },
}

#[derive(Subcommand)]
pub enum KeyCmd {
    /// Write a new legacy key file (64 random bytes, base64).
    New {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args)]
pub struct RepoArgs {
    #[command(subcommand)]
    pub cmd: RepoCmd,
    /// Writer state directory (default $IBS_STATE_DIR, $XDG_STATE_HOME/ibs or ~/.local/state/ibs).
    #[arg(long, global = true)]
    pub state: Option<PathBuf>,
    /// Seconds to wait for a conflicting lock before failing.
    #[arg(long, global = true, default_value_t = 0)]
    pub lock_wait: u64,
}

/// A repository location: a local folder, `\\host.fqdn\share\folder` or `smb://host[:port]/share/folder`.
/// The repository lives in its `MASBackup` subfolder.
#[derive(Args, Clone)]
pub struct Location {
    #[arg(long = "repo", value_name = "LOCATION")]
    pub repo: String,
    /// Share user (`user` or `DOMAIN\user`); the password comes from $IBS_SHARE_PASSWORD, --password-file or a prompt.
    #[arg(long)]
    pub username: Option<String>,
    #[arg(long)]
    pub password_file: Option<PathBuf>,
}

/// How to unlock backup contents: .pfx file(s) (password from $IBS_PFX_PASSWORD, --pfx-password-file or a prompt), or a legacy key file.
#[derive(Args, Clone, Default)]
pub struct UnlockArgs {
    #[arg(long)]
    pub pfx: Vec<PathBuf>,
    /// The .pfx password in a file: once for every --pfx, or repeated, one per --pfx in the same order.
    #[arg(long)]
    pub pfx_password_file: Vec<PathBuf>,
    #[arg(long)]
    pub key_file: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum RepoCmd {
    /// Create a repository, protected by a certificate (.cer) or a legacy key file.
    Init {
        #[command(flatten)]
        loc: Location,
        #[arg(
            long,
            conflicts_with = "key_file",
            required_unless_present = "key_file"
        )]
        cert: Option<PathBuf>,
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// Size at which a pack file is closed, in MiB (4 to 256; default 16). Smaller packs suit
        /// small repositories and slow shares; fixed for the repository's life.
        #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u32).range(4..=256))]
        pack_size: Option<u32>,
    },
    /// Back up named sources: NAME=PATH (a folder or a file) or NAME=- (stdin).
    Backup {
        #[command(flatten)]
        loc: Location,
        #[arg(long = "source", required = true, value_name = "NAME=PATH", value_parser = source_arg)]
        sources: Vec<String>,
        /// Leave out matching entries of folder sources (glob; without `/` it matches names at any
        /// depth, with `/` paths relative to the source). Repeatable.
        #[arg(long, value_name = "PATTERN")]
        exclude: Vec<String>,
        /// Sealing threads (default: one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
    /// List backups (needs no key).
    List {
        #[command(flatten)]
        loc: Location,
    },
    /// Restore a backup, or one of its sources, into a folder.
    Restore {
        #[command(flatten)]
        loc: Location,
        #[arg(long)]
        backup: String,
        #[arg(long)]
        target: PathBuf,
        #[arg(long)]
        source: Option<String>,
        #[command(flatten)]
        unlock: UnlockArgs,
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
    /// Verify the repository: structure; --read-data re-hashes every pack; --pfx decrypts every chunk.
    Check {
        #[command(flatten)]
        loc: Location,
        #[arg(long)]
        read_data: bool,
        #[command(flatten)]
        unlock: UnlockArgs,
    },
    /// Remove backups older than N days (never the newest successful one).
    Forget {
        #[command(flatten)]
        loc: Location,
        #[arg(long)]
        keep_days: u32,
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete unreferenced data and repack partly used packs (no decryption).
    ///
    /// Prune refuses (deleting nothing) when the storage listing lacks a backup that this writer
    /// committed and did not forget (its ledger in the writer state), and never deletes a pack or
    /// data-key envelope younger than the grace period.
    Prune {
        #[command(flatten)]
        loc: Location,
        #[arg(long)]
        dry_run: bool,
        /// Packs and data-key envelopes written less than this many hours ago are kept.
        #[arg(long, default_value_t = 24)]
        grace_hours: u64,
        /// Trust the storage listing as complete: needed when the writer state has no ledger of
        /// backups (adopted, or older than the ledger), or to accept backups removed outside
        /// this writer. Check `ibs repo list` first.
        #[arg(long)]
        trust_listing: bool,
    },
    /// Re-wrap every envelope the old .pfx opens for a new certificate.
    Rewrap {
        #[command(flatten)]
        loc: Location,
        /// The old certificate's .pfx (used only while this command runs).
        #[arg(long)]
        pfx: PathBuf,
        #[arg(long)]
        pfx_password_file: Option<PathBuf>,
        /// The new certificate (.cer).
        #[arg(long)]
        cert: PathBuf,
        /// Keep the old certificate as a recipient too.
        #[arg(long)]
        keep_old: bool,
    },
    /// Make new backups use another certificate (also: switch a legacy-key repository to certificates, one way).
    SetCert {
        #[command(flatten)]
        loc: Location,
        #[arg(long)]
        cert: PathBuf,
    },
    /// Rebuild this machine's writer state from the repository and the .pfx (or legacy key file).
    Adopt {
        #[command(flatten)]
        loc: Location,
        #[command(flatten)]
        unlock: UnlockArgs,
    },
}

/// Checks the `NAME=PATH` / `NAME=-` form at parse time, so a malformed source is a usage error (exit 2).
fn source_arg(s: &str) -> Result<String, String> {
    match s.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => Ok(s.to_owned()),
        _ => Err(format!(
            "expected NAME=PATH or NAME=- (for stdin), got {s:?}"
        )),
    }
}
