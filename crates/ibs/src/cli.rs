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
    /// Print machine-readable JSON instead of tables; errors too, as one JSON object on stderr.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress bars, notices or summaries: a command whose result is an id prints only that.
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
    /// Print a shell completion script to stdout (e.g. `ibs completions bash > /etc/bash_completion.d/ibs`).
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Write man pages generated from this CLI: `ibs.1` to stdout, or with --dir one page per
    /// command (`ibs.1`, `ibs-repo.1`, `ibs-repo-ls.1`, …) into a folder.
    Manpage {
        /// The folder to write every page into (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// The shells `ibs completions` writes scripts for.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Subcommand)]
pub enum CertCmd {
    /// Make a self-signed RSA certificate: a .cer for the controller and a .pfx to keep off-site.
    New {
        /// Subject common name, e.g. "ibs backup contoso nyc" (a leading `CN=` is accepted).
        #[arg(long)]
        subject: String,
        /// Where to write the public certificate (.cer, DER); must not exist yet.
        #[arg(long, value_name = "FILE")]
        cer: PathBuf,
        /// Where to write the private key (.pfx, PKCS#12, mode 0600); must not exist yet.
        #[arg(long, value_name = "FILE")]
        pfx: PathBuf,
        /// Validity in days (1 to 36500).
        #[arg(long, default_value_t = 730, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
        /// RSA key size in bits (2048 to 8192).
        #[arg(long, default_value_t = 4096)]
        bits: usize,
        /// File holding the .pfx password (else $IBS_PFX_PASSWORD, else a prompt).
        #[arg(long, value_name = "FILE")]
        pfx_password_file: Option<PathBuf>,
    },
    /// Show a certificate's thumbprint, subject, expiry and key size.
    Show {
        /// The certificate file (.cer, DER or PEM).
        cer: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum KeyCmd {
    /// Write a new legacy key file (64 random bytes, base64).
    New {
        /// Where to write the key file (mode 0600); must not exist yet.
        #[arg(long, value_name = "FILE")]
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
    /// Seconds to wait for a conflicting repository lock before failing (exit 6); 0 fails at once.
    #[arg(long, global = true, default_value_t = 0, value_name = "SECONDS")]
    pub lock_wait: u64,
}

/// A repository location: a local folder, `\\host.fqdn\share\folder`, `smb://host[:port]/share/folder`
/// or `s3://host[:port]/bucket/prefix` (`s3+http://` for plain http). The repository lives in its
/// `MASBackup` subfolder (prefix).
#[derive(Args, Clone)]
pub struct Location {
    /// Where the repository is: a local folder, \\host.fqdn\share\folder,
    /// smb://host[:port]/share/folder or s3://host[:port]/bucket/prefix (s3+http:// for plain
    /// http; options ?addressing=virtual, ?region=NAME); the repository lives in its MASBackup
    /// subfolder.
    #[arg(long = "repo", value_name = "LOCATION")]
    pub repo: String,
    /// Share user (`user` or `DOMAIN\user`); the password comes from $IBS_SHARE_PASSWORD, --password-file or a prompt.
    /// For S3: the access key id (default $AWS_ACCESS_KEY_ID).
    #[arg(long)]
    pub username: Option<String>,
    /// File holding the share password (first line; else $IBS_SHARE_PASSWORD, else a prompt).
    /// For S3: an AWS credentials file, or the secret key alone (else $AWS_SECRET_ACCESS_KEY).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Limit uploads of repository data to RATE: a number of KiB/s (`512`), or with a unit
    /// (`20MiB/s`, `1GiB/s`, `800KiB/s`); default unlimited.
    #[arg(long, value_name = "RATE", value_parser = rate_arg)]
    pub limit_upload: Option<u64>,
    /// Limit downloads of repository data to RATE, in the same forms as --limit-upload;
    /// default unlimited.
    #[arg(long, value_name = "RATE", value_parser = rate_arg)]
    pub limit_download: Option<u64>,
    /// Fail a storage request that gets no answer within SECONDS (default: 120 s for a small
    /// request plus 4 s per MiB it moves, at most 600 s); a request that timed out is retried
    /// once. A full Ceph cluster holds writes instead of refusing them: this bounds the wait.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub storage_timeout: Option<u64>,
}

/// A bandwidth limit in bytes per second: `N` (KiB/s) or `N` with `KiB`, `MiB`, `GiB` (or `K`,
/// `M`, `G`), with or without `/s`; at least 1 KiB/s.
pub fn rate_arg(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("expected a rate such as 512, 800KiB/s or 20MiB/s, got {s:?}"))?;
    let mult: u64 = match unit.trim() {
        "" | "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        u => {
            return Err(format!(
                "unknown unit {u:?} in {s:?}: use KiB/s, MiB/s or GiB/s"
            ))
        }
    };
    match n.checked_mul(mult) {
        Some(0) | None => Err(format!("{s:?}: give a rate from 1 KiB/s up")),
        Some(v) => Ok(v),
    }
}

/// How to unlock backup contents: .pfx file(s) (password from $IBS_PFX_PASSWORD, --pfx-password-file or a prompt), or a legacy key file.
#[derive(Args, Clone, Default)]
pub struct UnlockArgs {
    /// The .pfx (private key) of the backup certificate; repeat it for backups written under
    /// several certificates.
    #[arg(long, value_name = "FILE")]
    pub pfx: Vec<PathBuf>,
    /// The .pfx password in a file: once for every --pfx, or repeated, one per --pfx in the same order.
    #[arg(long, value_name = "FILE")]
    pub pfx_password_file: Vec<PathBuf>,
    /// A legacy symmetric key file instead of a .pfx (deprecated).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum RepoCmd {
    /// Create a repository, protected by a certificate (.cer) or a legacy key file.
    Init {
        #[command(flatten)]
        loc: Location,
        /// The certificate (.cer, public key only) new backups are encrypted for; required
        /// unless --key-file is given.
        #[arg(
            long,
            value_name = "FILE",
            conflicts_with = "key_file",
            required_unless_present = "key_file"
        )]
        cert: Option<PathBuf>,
        /// A legacy symmetric key file instead of a certificate (deprecated: this host could
        /// then decrypt every backup).
        #[arg(long, value_name = "FILE")]
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
        /// A source to back up: NAME=PATH (a folder or a file) or NAME=- (stdin); repeatable,
        /// at least one.
        #[arg(long = "source", required = true, value_name = "NAME=PATH", value_parser = source_arg)]
        sources: Vec<String>,
        /// Leave out matching entries of folder sources (glob; without `/` it matches names at any
        /// depth, with `/` paths relative to the source). Repeatable.
        #[arg(long, value_name = "PATTERN")]
        exclude: Vec<String>,
        /// Sealing threads; 0 means one per core.
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
        /// The backup id (from `ibs repo list`), `latest` (the newest that did not fail) or
        /// `latest:SOURCE` (the newest with that source, which is then restored alone).
        #[arg(long, value_name = "ID")]
        backup: String,
        /// The folder to restore into (created if missing).
        #[arg(long, value_name = "DIR")]
        target: PathBuf,
        /// Restore only this source of the backup, into the target itself (default: every
        /// source, each in a subfolder named after it).
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
        #[command(flatten)]
        unlock: UnlockArgs,
        /// File workers; 0 means two per core (at least 4) on a local folder, at least 16 on SMB, three per core (6 to 24) on S3.
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Replace files at the target that differ from the backup's (without it such a restore
        /// is refused, exit 6, and nothing is written; identical files are never a conflict).
        #[arg(long)]
        overwrite: bool,
        /// Restore a backup written by a newer ibs version or repository format revision than
        /// this one (refused otherwise, exit 15: this build may not restore it correctly).
        #[arg(long)]
        allow_newer: bool,
    },
    /// Verify the repository: structure; --read-data re-hashes every pack; --pfx decrypts every chunk.
    Check {
        #[command(flatten)]
        loc: Location,
        /// Also download and re-hash every pack (slow: reads the whole repository).
        #[arg(long)]
        read_data: bool,
        #[command(flatten)]
        unlock: UnlockArgs,
    },
    /// Remove backups older than N days and beyond the newest N (never the newest successful
    /// one). Their manifests go into the grace area, where `ibs repo undelete` brings them back
    /// until a prune purges them. A backup either rule keeps is kept.
    #[command(group(clap::ArgGroup::new("keep").required(true).multiple(true).args(["keep_days", "keep_last"])))]
    Forget {
        #[command(flatten)]
        loc: Location,
        /// Keep backups younger than this many days (0 keeps only the newest successful one).
        #[arg(long, value_name = "DAYS")]
        keep_days: Option<u32>,
        /// Keep the newest N backups that succeeded or partially succeeded (failed ones do not count).
        #[arg(long, value_name = "N")]
        keep_last: Option<u32>,
        /// Only print what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete unreferenced data and repack partly used packs (no decryption).
    ///
    /// Prune refuses (deleting nothing) when the storage listing lacks a backup that this writer
    /// committed and did not forget (its ledger in the writer state), and never deletes a pack or
    /// data-key envelope younger than the grace period. What it removes goes into the grace area
    /// (`trash/` in the repository) and is deleted by a later prune after the delete delay;
    /// `ibs repo undelete` brings it back until then.
    ///
    /// Prune runs beside backups, in two phases: it marks what is unreferenced (a prune plan in
    /// the repository), and removes it once the backups that were already running have finished,
    /// at once when none were, or after waiting up to --lock-wait; otherwise the next prune does.
    Prune {
        #[command(flatten)]
        loc: Location,
        /// Only print what would be deleted and repacked.
        #[arg(long)]
        dry_run: bool,
        /// Packs and data-key envelopes written less than this many hours ago are kept.
        #[arg(long, default_value_t = 24, value_name = "HOURS")]
        grace_hours: u64,
        /// What prune removes stays this many hours in the grace area before a later prune
        /// deletes it; batches older than this are deleted now. 0 deletes at once (and empties
        /// the grace area).
        #[arg(long, default_value_t = 24, value_name = "HOURS")]
        delete_delay_hours: u64,
        /// Repack partly used packs, the most wasteful first, only until the dead bytes left in
        /// the packs that stay are at most this percentage of them. 0 repacks every pack with a
        /// dead byte; 100 only deletes wholly unused packs.
        #[arg(long, default_value_t = ibs_engine::retention::DEFAULT_MAX_UNUSED_PERCENT,
              value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(0..=100),
              allow_negative_numbers = true)]
        max_unused: u8,
        /// Trust the storage listing as complete: needed when the writer state has no ledger of
        /// backups (adopted, or older than the ledger), or to accept backups removed outside
        /// this writer. Check `ibs repo list` first.
        #[arg(long)]
        trust_listing: bool,
    },
    /// Bring back everything forget and prune moved into the grace area and no prune has
    /// deleted yet: the backups they removed reappear.
    Undelete {
        #[command(flatten)]
        loc: Location,
        /// Only list what the grace area holds.
        #[arg(long)]
        dry_run: bool,
    },
    /// Re-wrap every envelope the old .pfx opens for a new certificate.
    Rewrap {
        #[command(flatten)]
        loc: Location,
        /// The old certificate's .pfx (used only while this command runs).
        #[arg(long, value_name = "FILE")]
        pfx: PathBuf,
        /// File holding the old .pfx's password (else $IBS_PFX_PASSWORD, else a prompt).
        #[arg(long, value_name = "FILE")]
        pfx_password_file: Option<PathBuf>,
        /// The new certificate (.cer).
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// Keep the old certificate as a recipient too.
        #[arg(long)]
        keep_old: bool,
    },
    /// Make new backups use another certificate (also: switch a legacy-key repository to certificates, one way).
    SetCert {
        #[command(flatten)]
        loc: Location,
        /// The certificate (.cer, public key only) new backups are encrypted for.
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
    },
    /// List a folder of a backup without restoring it (mode, owner uid:gid, size in bytes,
    /// modification time, name); names that are not printable UTF-8 are shown escaped (`\xNN`).
    Ls {
        #[command(flatten)]
        loc: Location,
        /// The backup: an id, `latest`, `ID:SOURCE` or `latest:SOURCE` (then PATH is inside that
        /// source; without a source the top level holds one folder per source).
        #[arg(value_name = "BACKUP")]
        backup: String,
        /// The folder (or file) to list; default the top of the backup or source.
        #[arg(value_name = "PATH")]
        path: Option<PathBuf>,
        /// List everything below PATH, not only its direct entries.
        #[arg(long, short = 'R')]
        recursive: bool,
        #[command(flatten)]
        unlock: UnlockArgs,
    },
    /// Find entries whose name (a pattern without `/`) or SOURCE/PATH (a pattern with `/`)
    /// matches a glob, in every backup or one.
    Find {
        #[command(flatten)]
        loc: Location,
        /// A glob: `*.conf` matches names at any depth; `data/etc/*` matches SOURCE/PATH
        /// (`*` stops at `/`, `**` crosses folders).
        #[arg(value_name = "PATTERN")]
        pattern: String,
        /// Search only this backup (an id, `latest` or `latest:SOURCE`); default every backup.
        #[arg(long, value_name = "ID")]
        backup: Option<String>,
        #[command(flatten)]
        unlock: UnlockArgs,
    },
    /// Write one file of a backup to stdout; a folder is written as a tar stream.
    Dump {
        #[command(flatten)]
        loc: Location,
        /// The backup: an id, `latest`, `ID:SOURCE` or `latest:SOURCE`.
        #[arg(value_name = "BACKUP")]
        backup: String,
        /// The file or folder (SOURCE/PATH, or PATH inside the source BACKUP names); `/` is
        /// the whole backup or source, as tar.
        #[arg(value_name = "PATH")]
        path: PathBuf,
        #[command(flatten)]
        unlock: UnlockArgs,
    },
    /// What changed from backup A to backup B: entries added, removed, modified (content, type
    /// or link target) and changed in metadata only (mode, owner, time), with sizes.
    Diff {
        #[command(flatten)]
        loc: Location,
        /// The older backup: an id, `latest`, `ID:SOURCE` or `latest:SOURCE`.
        #[arg(value_name = "A")]
        a: String,
        /// The newer backup, in the same forms (give a source on both or on neither).
        #[arg(value_name = "B")]
        b: String,
        #[command(flatten)]
        unlock: UnlockArgs,
    },
    /// Show every backup as a read-only folder (FUSE) at MOUNTPOINT:
    /// MOUNTPOINT/<backup id>/<source>/<path>, and MOUNTPOINT/latest for the newest backup. Stays
    /// in the foreground until Ctrl-C, SIGTERM or `umount MOUNTPOINT`, then unmounts. Holds a
    /// shared repository lock meanwhile: backups, forget and prune cannot run until then.
    Mount {
        #[command(flatten)]
        loc: Location,
        /// An existing, empty folder to mount on.
        #[arg(value_name = "MOUNTPOINT")]
        mountpoint: PathBuf,
        #[command(flatten)]
        unlock: UnlockArgs,
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

#[cfg(test)]
mod tests {
    //! The help is part of the contract: every argument of every command explains itself, and
    //! every `--flag` the binary's messages name exists.
    use super::Cli;
    use clap::CommandFactory;
    use std::collections::BTreeSet;

    fn walk(cmd: &clap::Command, path: &str, f: &mut dyn FnMut(&str, &clap::Arg)) {
        for a in cmd.get_arguments() {
            f(path, a);
        }
        for sub in cmd.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()), f);
        }
    }

    #[test]
    fn rates_parse_as_kib_by_default_and_with_units() {
        use super::rate_arg;
        assert_eq!(rate_arg("512"), Ok(512 << 10));
        assert_eq!(rate_arg("20MiB/s"), Ok(20 << 20));
        assert_eq!(rate_arg("800KiB/s"), Ok(800 << 10));
        assert_eq!(rate_arg("1G"), Ok(1 << 30));
        for bad in ["0", "", "fast", "10MB/s", "-5", "99999999999999999999GiB"] {
            assert!(rate_arg(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn every_argument_of_every_command_has_help_text() {
        let mut missing = Vec::new();
        walk(&Cli::command(), "ibs", &mut |path, a| {
            let id = a.get_id().as_str();
            if matches!(id, "help" | "version") {
                return;
            }
            let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
            if help.trim().is_empty() {
                missing.push(format!(
                    "{path} {}",
                    a.get_long()
                        .map(|l| format!("--{l}"))
                        .unwrap_or(id.to_uppercase())
                ));
            }
        });
        assert!(
            missing.is_empty(),
            "arguments without help text:\n{}",
            missing.join("\n")
        );
    }

    #[test]
    fn every_flag_named_in_a_message_exists() {
        let mut longs = BTreeSet::new();
        walk(&Cli::command(), "ibs", &mut |_, a| {
            if let Some(l) = a.get_long() {
                longs.insert(format!("--{l}"));
            }
        });
        longs.insert("--help".to_string());
        longs.insert("--version".to_string());
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut unknown = Vec::new();
        let mut stack = vec![src];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                let text = std::fs::read_to_string(&p).unwrap();
                for (n, line) in text.lines().enumerate() {
                    // A placeholder instead of a flag name (dashes, then an ellipsis) is never a flag.
                    if line.contains(concat!("--", "\u{2026}")) {
                        unknown.push(format!("{}:{}: placeholder flag", p.display(), n + 1));
                    }
                    // Only string literals and doc comments speak to the operator.
                    let spoken = line.trim_start().starts_with("///") || line.contains('"');
                    if !spoken {
                        continue;
                    }
                    let b = line.as_bytes();
                    let mut i = 0;
                    while let Some(at) = line[i..].find("--") {
                        let s = i + at;
                        let mut e = s + 2;
                        while e < b.len() && (b[e].is_ascii_lowercase() || b[e] == b'-') {
                            e += 1;
                        }
                        let flag = line[s..e].trim_end_matches('-');
                        let preceded =
                            s > 0 && (b[s - 1].is_ascii_alphanumeric() || b[s - 1] == b'-');
                        if flag.len() > 2 && !preceded && !longs.contains(flag) {
                            unknown.push(format!("{}:{}: {flag}", p.display(), n + 1));
                        }
                        i = e.max(s + 2);
                    }
                }
            }
        }
        assert!(
            unknown.is_empty(),
            "messages name flags no command has:\n{}",
            unknown.join("\n")
        );
    }
}
