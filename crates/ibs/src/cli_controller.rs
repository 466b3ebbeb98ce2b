//! Command-line contract of the controller commands: `serve`, `token`, and the API client commands
//! (`location`, `backup`, `restore`, `maintenance`, `alerts`, `store`, `jobs`, `operations`,
//! `audit`, `components`, `verification`). Add, never rename.
//! Secrets never come from argv: the API token from $IBS_TOKEN, the share password from
//! $IBS_SHARE_PASSWORD, the .pfx password from $IBS_PFX_PASSWORD (or a file / prompt).

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Subcommand, ValueEnum};
use ibs_types::{MaintenanceOp, MaintenanceOutcome};
use std::path::PathBuf;

/// `--operation`: the API's maintenance operations, by their wire names.
fn maintenance_op() -> impl TypedValueParser<Value = MaintenanceOp> {
    PossibleValuesParser::new(["update", "fru", "secret-rotation"])
        .map(|s| MaintenanceOp::parse(&s).expect("one of the possible values"))
}

/// `--outcome`: the API's maintenance outcomes, by their wire names.
fn maintenance_outcome() -> impl TypedValueParser<Value = MaintenanceOutcome> {
    PossibleValuesParser::new(["succeeded", "failed"])
        .map(|s| MaintenanceOutcome::parse(&s).expect("one of the possible values"))
}

#[derive(Args)]
pub struct ServeArgs {
    /// TOML configuration file (every key optional; see docs/examples/ibs.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Data directory (default $IBS_DATA_DIR, else ~/.local/share/ibs).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// API address (default $IBS_LISTEN, else 127.0.0.1:9440).
    #[arg(long)]
    pub listen: Option<String>,
    /// First start only: the folder the `sample` component backs up (default $IBS_SAMPLE_DIR, else
    /// a sample folder created under the data directory).
    #[arg(long)]
    pub sample: Option<PathBuf>,
    /// Serve the API over TLS with this PEM certificate chain (with --tls-key; default $IBS_TLS_CERT).
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (default $IBS_TLS_KEY).
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Allow plain HTTP on a non-loopback address: tokens, share passwords and .pfx files would
    /// cross the network in cleartext. Without it, such a listener needs --tls-cert/--tls-key.
    #[arg(long)]
    pub insecure_http: bool,
    /// A folder API restores may write beneath (repeatable; adds to `restore_roots` of the config;
    /// default DATA/restores when neither names one).
    #[arg(long = "restore-root", value_name = "DIR")]
    pub restore_roots: Vec<PathBuf>,
    /// Log line format on stderr: text (coloured only on a terminal) or json (one object per
    /// line, for log shippers). The level comes from $IBS_LOG (default info).
    #[arg(long, value_enum, default_value_t = crate::logging::LogFormat::Text)]
    pub log_format: crate::logging::LogFormat,
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create an API token on the server host; the token is the last line of stdout.
    Create {
        /// What the token may do: reader (read everything but secrets), operator (+ start and
        /// cancel backups, maintenance begin/end, close and reopen alerts) or admin (+ settings,
        /// restore, validate, tokens, store, audit).
        #[arg(long, value_enum)]
        role: RoleArg,
        /// A note shown by `ibs token list` (default: "created with ibs token create (ROLE)").
        #[arg(long)]
        label: Option<String>,
        /// The token stops working after this long: a number with s, m, h or d (e.g. 30d, 12h).
        #[arg(long)]
        expires: Option<String>,
        /// Data directory of the controller (default $IBS_DATA_DIR, else ~/.local/share/ibs).
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// List the tokens (id, role, label, creation and expiry; never the tokens themselves).
    List {
        /// Data directory of the controller (default $IBS_DATA_DIR, else ~/.local/share/ibs).
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Revoke a token by its id (from `ibs token list`): it is refused from then on.
    Revoke {
        /// The token's id, as `ibs token list` shows it.
        id: i64,
        /// Data directory of the controller (default $IBS_DATA_DIR, else ~/.local/share/ibs).
        #[arg(long)]
        data: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// Read everything except secrets.
    Reader,
    /// Reader + start backups + maintenance begin/end.
    Operator,
    /// Operator + settings, restore, tokens, closing alerts, store prune.
    Admin,
}

/// The controller to talk to.
#[derive(Args, Clone)]
pub struct Server {
    /// Controller URL (default $IBS_SERVER, else http://127.0.0.1:9440); the token comes from $IBS_TOKEN.
    #[arg(long, value_name = "URL", global = true)]
    pub server: Option<String>,
}

impl Server {
    /// `--server`, else `$IBS_SERVER`, else the default address of `ibs serve`.
    pub fn url(&self) -> String {
        self.server
            .clone()
            .or_else(|| std::env::var("IBS_SERVER").ok().filter(|v| !v.is_empty()))
            .unwrap_or_else(|| "http://127.0.0.1:9440".into())
    }
}

#[derive(Args)]
pub struct LocationArgs {
    #[command(subcommand)]
    pub cmd: LocationCmd,
    #[command(flatten)]
    pub server: Server,
}

// Parsed once per process: the size of `Set` next to `Show` costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum LocationCmd {
    /// Show the backup location settings (Get-AzsBackupConfiguration).
    Show,
    /// Change the backup location settings (Set-AzsBackupConfiguration). The share password comes from $IBS_SHARE_PASSWORD.
    Set {
        /// A UNC path (\\host.fqdn\share\folder), an absolute local folder, or an S3 bucket
        /// (s3://host/bucket/prefix; keys from $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY).
        #[arg(long)]
        path: Option<String>,
        /// Share user (`user` or `DOMAIN\user`); the password comes from $IBS_SHARE_PASSWORD or a prompt.
        #[arg(long)]
        username: Option<String>,
        /// An S3 location's maintenance credential (the bucket owner's key) for retention and
        /// prune: its access key id. The secret comes from --maintenance-key-file,
        /// $IBS_MAINTENANCE_SECRET_KEY or a prompt. A controller holding it can delete backups
        /// once their locks expire: see the operator guide's "Ransomware-resistant setup".
        #[arg(long, value_name = "ACCESS_KEY_ID")]
        maintenance_user: Option<String>,
        /// The maintenance credential in a file (`-`: stdin): an AWS credentials file
        /// (aws_access_key_id, aws_secret_access_key) or the secret alone on its first line.
        #[arg(long, value_name = "FILE")]
        maintenance_key_file: Option<PathBuf>,
        /// Delete the stored maintenance credential (retention and prune use the writer key).
        #[arg(long, conflicts_with_all = ["maintenance_user", "maintenance_key_file"])]
        maintenance_clear: bool,
        /// The encryption certificate (.cer, public key only).
        #[arg(long, conflicts_with = "key_file")]
        cert: Option<PathBuf>,
        /// A legacy key file (deprecated).
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// Hours between automatic backups (1 to 24; default 12).
        #[arg(long, value_name = "HOURS")]
        frequency_hours: Option<i64>,
        /// Days backups are kept before retention deletes them (1 to 90; default 7).
        #[arg(long, value_name = "DAYS")]
        retention_days: Option<i64>,
        /// Automatic backups on or off (default on once a location is set); the API's
        /// `scheduler_enabled`, shown as "scheduler enabled" by `ibs location show`.
        #[arg(long, visible_alias = "scheduler-enabled", value_parser = ["on", "off"])]
        scheduler: Option<String>,
        /// Apply a retention change even though it deletes existing backups.
        #[arg(long)]
        confirm: bool,
    },
    /// Clear the backup location configuration: settings back to defaults with no share, the
    /// share credentials and legacy key deleted, automatic backups off. Backup history, alerts
    /// and the audit trail are kept. Refused (exit 6) while a job runs.
    Clear,
}

#[derive(Args)]
pub struct BackupArgs {
    #[command(subcommand)]
    pub cmd: BackupCmd,
    #[command(flatten)]
    pub server: Server,
}

#[derive(Subcommand)]
pub enum BackupCmd {
    /// Start an on-demand backup (Start-AzsBackup); the last line of stdout is the backup id.
    Start {
        /// Show progress and wait until the job has really ended.
        #[arg(long)]
        wait: bool,
    },
    /// List backups (Get-AzsBackup), newest first.
    List {
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one backup.
    Show {
        /// The backup id, as `ibs backup list` shows it.
        id: String,
    },
    /// Validate a backup on the controller as a job: every chunk read, every component restored to
    /// scratch (databases into temporary databases); the reports stay on the controller.
    Validate {
        /// The backup id.
        id: String,
        /// The .pfx of the backup's certificate (sent to the controller, used in memory only). The
        /// password comes from $IBS_PFX_PASSWORD, --pfx-password-file or a prompt.
        #[arg(long)]
        pfx: PathBuf,
        /// A file holding the .pfx password (default: $IBS_PFX_PASSWORD, else a prompt).
        #[arg(long)]
        pfx_password_file: Option<PathBuf>,
        /// Return after the job started instead of waiting for its end (default: wait).
        #[arg(long)]
        no_wait: bool,
    },
    /// Cancel a running job (a backup, restore, verification or validation; the same as `ibs jobs
    /// cancel`): it stops within seconds and ends Canceled; a backup commits nothing. Waits until
    /// the job has ended unless --no-wait. Unknown id: exit 8; a job that already ended: exit 6
    /// naming its status.
    Cancel {
        /// The job id (as `ibs backup start` printed it).
        id: String,
        /// Return once the cancel is requested instead of waiting for the job to end.
        #[arg(long)]
        no_wait: bool,
    },
}

/// Paging of a list command (ADR 0024).
#[derive(Args, Clone, Default)]
pub struct PageArgs {
    /// Rows per page, 1 to 1000 (default 100).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
    /// Start after the page that printed this cursor (default: the first page).
    #[arg(long, value_name = "CURSOR")]
    pub cursor: Option<String>,
    /// Follow every page to the end of the list (default: one page; --limit sets the page size).
    #[arg(long)]
    pub all: bool,
}

#[derive(Args)]
pub struct JobsArgs {
    #[command(subcommand)]
    pub cmd: JobsCmd,
    #[command(flatten)]
    pub server: Server,
}

#[derive(Subcommand)]
pub enum JobsCmd {
    /// List jobs of every kind (backups, skipped runs, restores, verifications, validations),
    /// newest first.
    List {
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one job with its live progress.
    Show {
        /// The job id (from `ibs jobs list`).
        id: String,
    },
    /// Cancel a running job of any kind (as `ibs backup cancel`): it stops within seconds and ends
    /// Canceled; a restore keeps the whole files it already wrote. Waits for the end unless
    /// --no-wait. Unknown id: exit 8; a job that already ended: exit 6 naming its status.
    Cancel {
        /// The job id (from `ibs jobs list`).
        id: String,
        /// Return once the cancel is requested instead of waiting for the job to end.
        #[arg(long)]
        no_wait: bool,
    },
}

#[derive(Args)]
pub struct OperationsArgs {
    /// Only what runs now (default: running and finished).
    #[arg(long)]
    pub running: bool,
    /// Only this kind: backup, restore, verify, validate, retention-cleanup, maintenance,
    /// location-clear, store-prune (default: every kind).
    #[arg(long, value_parser = ["backup", "restore", "verify", "validate", "retention-cleanup", "maintenance", "location-clear", "store-prune"])]
    pub kind: Option<String>,
    #[command(flatten)]
    pub page: PageArgs,
    #[command(flatten)]
    pub server: Server,
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub page: PageArgs,
    #[command(flatten)]
    pub server: Server,
}

#[derive(Args)]
pub struct VerificationArgs {
    #[command(subcommand)]
    pub cmd: VerificationCmd,
    #[command(flatten)]
    pub server: Server,
}

#[derive(Subcommand)]
pub enum VerificationCmd {
    /// Show verification settings, coverage, damaged packs and Corrupted backups.
    Status,
    /// Start a verification of a sample of the packs now (operator).
    Start {
        /// Show progress and wait until the job has ended (default: return once started).
        #[arg(long)]
        wait: bool,
    },
    /// List the per-pack verification records, least recently verified first.
    Packs {
        #[command(flatten)]
        page: PageArgs,
    },
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The backup id.
    pub id: String,
    /// Restore only this component.
    #[arg(long)]
    pub component: Option<String>,
    /// A folder for `files` components (on the controller's host); with --component, a service
    /// component's target: a database URL (postgresql://…/DB, mysql://…/DB), a Redis data folder
    /// or a SQLite file path.
    #[arg(long)]
    pub target: String,
    /// Replace what is at the target: files that differ from the backup's (without it such a
    /// restore fails before writing anything), or a non-empty service target (drop and recreate
    /// the database, overwrite the file).
    #[arg(long, visible_alias = "overwrite")]
    pub force: bool,
    /// The .pfx of the backup certificate; repeat it for several (after a certificate rotation a
    /// backup from before it needs the old certificate's .pfx, perhaps with the new one's). The
    /// password comes from $IBS_PFX_PASSWORD, --pfx-password-file or a prompt.
    #[arg(long, required = true)]
    pub pfx: Vec<PathBuf>,
    /// The .pfx password in a file: once for every --pfx, or repeated, one per --pfx in the same order.
    #[arg(long)]
    pub pfx_password_file: Vec<PathBuf>,
    /// Return after the job started instead of waiting for its end.
    #[arg(long)]
    pub no_wait: bool,
    /// Restore a backup written by a newer ibs version or repository format revision than the
    /// controller's (refused otherwise: this build may not restore it correctly).
    #[arg(long)]
    pub allow_newer: bool,
    #[command(flatten)]
    pub server: Server,
}

#[derive(Args)]
pub struct MaintenanceArgs {
    #[command(subcommand)]
    pub cmd: MaintenanceCmd,
    #[command(flatten)]
    pub server: Server,
}

#[derive(Subcommand)]
pub enum MaintenanceCmd {
    /// Begin an exclusive maintenance operation: backups are skipped or refused until it ends.
    Begin {
        /// What the maintenance is: update, fru (field replaceable unit) or secret-rotation.
        #[arg(long, value_parser = maintenance_op())]
        operation: MaintenanceOp,
    },
    /// End the maintenance operation.
    End {
        /// How it ended: succeeded (backups resume) or failed (scheduled backups stay skipped
        /// until one succeeds or an admin runs `ibs maintenance clear`).
        #[arg(long, value_parser = maintenance_outcome())]
        outcome: MaintenanceOutcome,
    },
    /// Clear a failed maintenance operation (admin).
    Clear,
    /// Show the maintenance operation and whether a backup is running.
    Status,
}

#[derive(Args)]
pub struct AlertsArgs {
    #[command(subcommand)]
    pub cmd: AlertsCmd,
    #[command(flatten)]
    pub server: Server,
}

#[derive(Subcommand)]
pub enum AlertsCmd {
    /// List open alerts (--all: with history).
    List {
        /// Closed alerts too (the history), not only open ones.
        #[arg(long)]
        all: bool,
    },
    /// Close an alert; it comes back if its cause persists.
    Close {
        /// The alert id, as `ibs alerts list` shows it.
        id: i64,
    },
    /// Reopen a closed alert (refused while another alert of its kind is open).
    Reopen {
        /// The alert id, as `ibs alerts list --all` shows it.
        id: i64,
    },
}

#[derive(Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    pub cmd: StoreCmd,
    #[command(flatten)]
    pub server: Server,
}

#[derive(Subcommand)]
pub enum StoreCmd {
    /// Delete files under MASBackup that ibs did not create (--dry-run: only list them).
    Prune {
        /// Only list the files that would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
}
