//! The command line's clap types: the global options, the subcommands and their arguments.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Rotates the passwords of Entra ID management service accounts through Azure Key Vault.
#[derive(Parser, Debug)]
#[command(name = "keyturn", version, about)]
pub(crate) struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Let `run`, `rotate --offline` and `provision` run as root (refused by default: exit 64).
    #[arg(
        long,
        global = true,
        env = "KEYTURN_ALLOW_ROOT",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub allow_root: bool,
    #[command(subcommand)]
    pub command: Cmd,
}

/// Log output formats.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// Readable lines (no timestamps under systemd: journald adds them).
    Text,
    /// One JSON object per line.
    Json,
}

/// How a client command reaches the daemon.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Conn {
    /// The configuration file (its admin.socket is used).
    #[arg(
        long,
        short,
        env = "KEYTURN_CONFIG",
        default_value = "/etc/keyturn/keyturn.toml"
    )]
    pub config: PathBuf,
    /// The admin socket (overrides the configuration's).
    #[arg(long, env = "KEYTURN_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Print the daemon's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The configuration file of a command that reads it itself (no daemon involved).
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ConfigFile {
    /// The configuration file.
    #[arg(
        long,
        short,
        env = "KEYTURN_CONFIG",
        default_value = "/etc/keyturn/keyturn.toml"
    )]
    pub config: PathBuf,
}

/// Which accounts `rotate`, `pause` and `resume` act on: one named, a tenant's, or all.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Targets {
    /// The account's name.
    #[arg(required_unless_present_any = ["all", "tenant"], conflicts_with_all = ["all", "tenant"])]
    pub account: Option<String>,
    /// Every account in this tenant: an identity's `tenant_id` as written there (its id
    /// or its domain).
    #[arg(long, value_name = "TENANT", conflicts_with = "all")]
    pub tenant: Option<String>,
    /// Every account.
    #[arg(long)]
    pub all: bool,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub(crate) enum Cmd {
    /// Run the daemon: recover, schedule and rotate every configured account.
    Run {
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Rotate one account (a tenant's, or all) now: through the daemon's admin socket, or with
    /// `--offline` in the foreground when no daemon runs.
    Rotate {
        #[command(flatten)]
        targets: Targets,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: Option<String>,
        /// Ticket number (recorded in the audit log).
        #[arg(long)]
        ticket: Option<String>,
        /// Return once started, with the rotation ids, instead of waiting for the end.
        #[arg(long)]
        no_wait: bool,
        /// With `--all` (and `--reason`): may use the share of each Key Vault and Graph
        /// budget reserved for other clients (`limits.reserve`), for a suspected
        /// compromise; audited as urgent.
        #[arg(long, requires_all = ["all", "reason"], conflicts_with = "offline")]
        urgent: bool,
        /// Rotate in this process without a daemon (takes the daemon's lock and uses the
        /// whole configuration file).
        #[arg(long)]
        offline: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show the daemon's state and every account's last and next rotation.
    Status {
        #[command(flatten)]
        conn: Conn,
    },
    /// Stop scheduled rotations of an account (a tenant's, or all) until `resume`.
    Pause {
        #[command(flatten)]
        targets: Targets,
        #[command(flatten)]
        conn: Conn,
    },
    /// Restart scheduled rotations of an account (a tenant's, or all).
    Resume {
        #[command(flatten)]
        targets: Targets,
        #[command(flatten)]
        conn: Conn,
    },
    /// Take over accounts whose secret is not in Key Vault yet: rotate each now, so that its
    /// password (unknown until then) is a known one in Key Vault (tagged keyturn-adopted), then
    /// check its directory roles against its declared roles as doctor does (from --config;
    /// the exit code stays the adoption's). Tell the account's consumer where to read it
    /// first (docs/first-deployment.md, docs/lifecycle.md). Several accounts: one request
    /// each, in the order given, each answer printed as for one (--json: one line each).
    /// Exit 0 all adopted (--dry-run: all would be), else the code of the first that was not:
    /// 1 refused or failed, 69 the daemon cannot be reached, 75 the daemon is busy.
    Adopt {
        /// The accounts' names.
        #[arg(required = true)]
        accounts: Vec<String>,
        /// Why (required; recorded in the audit log with who asked).
        #[arg(long, required = true)]
        reason: Option<String>,
        /// Ticket number (recorded in the audit log).
        #[arg(long)]
        ticket: Option<String>,
        /// Adopt even if the secret exists already (its password is replaced).
        #[arg(long)]
        force: bool,
        /// Change nothing: ask the daemon's status (read-only) and print what adopt would do
        /// to each account, and the roles check.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Retire accounts for good: disable the user (--delete: delete it; Entra keeps it 30 days
    /// in its deleted items) with the account's provision_identity, tag its secrets
    /// keyturn-retired and soft-delete them; the daemon never rotates it again
    /// (docs/lifecycle.md, "Retire"). Exit 0 done (or retired already), 1 a step failed (the
    /// error names the missing permission or role), 64 bad arguments or configuration, 75 the
    /// daemon is rotating the account now.
    Retire {
        /// The accounts' names.
        #[arg(required = true)]
        accounts: Vec<String>,
        /// Why (required; recorded in the audit log and on the secrets).
        #[arg(long, required = true)]
        reason: String,
        /// Ticket number (recorded likewise).
        #[arg(long)]
        ticket: Option<String>,
        /// Delete the user instead of disabling it.
        #[arg(long)]
        delete: bool,
        /// Print what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print what `keyturn run` would do to each account at start-up, reading Key Vault
    /// only: complete a pending rotation, rotate now, next rotation at T, await adoption,
    /// disabled, paused. Writes nothing; needs no daemon.
    Plan {
        #[command(flatten)]
        config: ConfigFile,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check, read-only, what would make a rotation fail: each identity's tokens, Graph
    /// permissions, directory roles and clock, then each account's user (exists, enabled, not
    /// synced from on-premises), its roles and whether the app may reset it, secret (readable,
    /// nothing pending, write access) and its age (docs/doctor.md).
    /// Exit 0 when nothing fails, 1 when a check fails, 64 bad configuration, 69 when no
    /// identity can get a token.
    Doctor {
        #[command(flatten)]
        config: ConfigFile,
        /// Check only this account (and the identities it uses).
        #[arg(long)]
        account: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Confirm write access to each vault by setting and deleting a probe secret
        /// (`keyturn-doctor-probe-…`; it stays soft-deleted until purged).
        #[arg(long)]
        write_probe: bool,
    },
    /// Make Entra match the accounts' declarations (docs/lifecycle.md): create a missing user
    /// (its password staged in Key Vault first, committed after), assign missing directory
    /// roles, report extra ones (removed with --prune-roles), then run doctor's checks of the
    /// account. Acts as each account's provision_identity; takes the instance lock and writes
    /// the audit log (not with --dry-run). Exit 0 done or nothing to do, 1 a step or a doctor
    /// check failed, 64 bad arguments or configuration, 69 Azure unavailable, 75 a create was
    /// left pending (run it again).
    Provision {
        /// The accounts to provision.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        accounts: Vec<String>,
        /// Every account with a provision_identity.
        #[arg(long)]
        all: bool,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
        /// A ticket number (recorded in the audit log).
        #[arg(long)]
        ticket: Option<String>,
        /// Print what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Remove directory roles the declaration does not list.
        #[arg(long)]
        prune_roles: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Reload the configuration file (like SIGHUP); a bad file is rejected and the old stays.
    Reload {
        #[command(flatten)]
        conn: Conn,
    },
    /// Run recovery and the drift check now for an account (default: all).
    Reconcile {
        /// The account's name.
        #[arg(conflicts_with_all = ["all", "tenant"])]
        account: Option<String>,
        /// Every account in this tenant (an identity's `tenant_id` as written there).
        #[arg(long, value_name = "TENANT", conflicts_with = "all")]
        tenant: Option<String>,
        /// Every account.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Validate the configuration and report every problem (exit 64 on error).
    CheckConfig {
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Read, check and follow the audit log (see docs/audit.md).
    Audit {
        #[command(subcommand)]
        command: AuditCmd,
    },
    /// Run keyturn against the embedded Azure emulator: no Azure account needed.
    #[cfg(feature = "demo")]
    Demo {
        /// Stop after this long (e.g. "45s"); runs until Ctrl-C when absent.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
        /// Seconds between scheduled rotations of each account.
        #[arg(long, default_value_t = 10)]
        every: u32,
        /// Where the demo keeps its files (audit log, CA, lock); a temporary folder by default.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// Where the audit tools read: `--file`, or the configuration's `daemon.audit_log`.
#[derive(clap::Args, Debug)]
pub(crate) struct AuditSource {
    /// The audit log (its rotated files beside it are read too); overrides --config.
    #[arg(long, short)]
    pub file: Option<PathBuf>,
    /// The configuration file whose `daemon.audit_log` is read.
    #[arg(
        long,
        short,
        env = "KEYTURN_CONFIG",
        default_value = "/etc/keyturn/keyturn.toml"
    )]
    pub config: PathBuf,
}

/// `keyturn audit …`.
#[derive(Subcommand, Debug)]
pub(crate) enum AuditCmd {
    /// Show records as a table (or JSON lines), oldest first, across rotated files.
    Show {
        #[command(flatten)]
        source: AuditSource,
        /// Only this account.
        #[arg(long)]
        account: Option<String>,
        /// Only records since: a duration back from now (7d, 12h), a date or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only these event types (repeat or comma-separate; `rotation` means rotation.*).
        #[arg(long, value_delimiter = ',')]
        event: Vec<String>,
        /// Only this outcome: success, warning, failure (or failed), pending.
        #[arg(long)]
        outcome: Option<String>,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check the hash chain; exit 0 intact, 1 broken (the first broken record is named), 2 unreadable.
    Verify {
        /// The files to check (any order); the log and its rotated files by default.
        files: Vec<PathBuf>,
        #[command(flatten)]
        source: AuditSource,
        /// The files hold a piece of the chain: no genesis needed at the start, more may follow.
        #[arg(long)]
        partial: bool,
        /// Check the append-blob copy instead (`[daemon.audit_blob]`, `docs/audit.md`): the
        /// blob at URL, or without URL the configuration's `daemon.audit_blob.url`; read with
        /// the configuration's `daemon.audit_blob.identity` (and its `[tls]`, `[network]`).
        #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "")]
        blob: Option<String>,
    },
    /// Follow the live log (Ctrl-C to stop).
    Tail {
        #[command(flatten)]
        source: AuditSource,
        /// Records shown before following.
        #[arg(long, short = 'n', default_value_t = 10)]
        lines: usize,
        /// JSON lines instead of readable lines.
        #[arg(long)]
        json: bool,
    },
    /// Write every file of the log (rotated files, then the live one) to stdout as stored,
    /// byte for byte: a copy that `keyturn audit verify` checks elsewhere (`kubectl exec …
    /// keyturn audit export > audit.jsonl` where the image has no tar for `kubectl cp`).
    Export {
        #[command(flatten)]
        source: AuditSource,
    },
}
