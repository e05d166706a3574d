//! Why an admin request was refused or failed, and the wire code each failure is answered
//! with. `CommandError::code` maps every variant to its code in a `match` with no `_` arm,
//! so a new failure forces a decision about what clients see.

use super::proto::{DecodeError, MAX_REQUEST};
use crate::audit::AuditError;
use crate::daemon::{AccountError, AccountFailure};
use crate::reload::ReloadError;

/// The machine-readable codes of error responses (`docs/admin-protocol.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Not JSON, not an object, a missing, mistyped or unknown field, unreadable bytes.
    BadRequest,
    /// `v` is not the protocol version.
    UnsupportedVersion,
    /// `cmd` names no command.
    UnknownCommand,
    /// The request line exceeded `MAX_REQUEST`.
    TooLarge,
    /// Too many connections.
    Busy,
    /// The caller may not use the socket.
    Forbidden,
    /// The daemon's policy wants a reason for manual rotations.
    ReasonRequired,
    /// The daemon's policy wants a ticket for manual rotations.
    TicketRequired,
    /// `reload` rejected the configuration.
    InvalidConfig,
    /// The command is not available in this mode.
    Unsupported,
    /// The command could not be recorded, so it was not run.
    AuditUnavailable,
    /// A rotation failed for one or more accounts.
    RotationFailed,
    /// Pause, resume or reconcile failed for one or more accounts.
    Failed,
    /// The daemon is shutting down.
    Stopping,
    /// The account has `enabled = false`.
    AccountDisabled,
    /// The account has no secret yet and waits for `adopt`.
    AwaitingAdoption,
    /// `adopt` of an account whose secret exists (without `force`).
    AlreadyAdopted,
    /// With `[ha]`: this replica is a standby; the message names the leader.
    NotLeader,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::UnknownCommand => "unknown_command",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Busy => "busy",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::ReasonRequired => "reason_required",
            ErrorCode::TicketRequired => "ticket_required",
            ErrorCode::InvalidConfig => "invalid_config",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::AuditUnavailable => "audit_unavailable",
            ErrorCode::RotationFailed => "rotation_failed",
            ErrorCode::Failed => "failed",
            ErrorCode::Stopping => "stopping",
            ErrorCode::AccountDisabled => "account_disabled",
            ErrorCode::AwaitingAdoption => "awaiting_adoption",
            ErrorCode::AlreadyAdopted => "already_adopted",
            ErrorCode::NotLeader => "not_leader",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the admin socket answered a request with an error; the `Display` text is the
/// response's message.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The peer is not root, keyturn's user, nor in an admin group.
    #[error("permission denied: ask for membership of the keyturn admin group")]
    Forbidden,
    /// `admin.max_connections` connections are being served.
    #[error("too many admin connections; try again shortly")]
    Busy,
    /// The request line was longer than `MAX_REQUEST`.
    #[error("requests are limited to {MAX_REQUEST} bytes")]
    TooLarge,
    /// The request's bytes could not be read (invalid UTF-8 among them).
    #[error("unreadable request: {source}")]
    Unreadable {
        /// What the reader reported.
        #[source]
        source: std::io::Error,
    },
    /// The request line is not a valid request.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// `admin.require_reason` is set and the rotation came without a reason.
    #[error("this daemon requires a reason for manual rotations: add --reason")]
    ReasonRequired,
    /// `adopt` came without a reason (always required: it takes an account over).
    #[error("adopt takes an account over: give a reason (--reason), recorded in the audit log with who asked")]
    AdoptReasonRequired,
    /// `admin.require_ticket` is set and the rotation came without a ticket.
    #[error("this daemon requires a ticket for manual rotations: add --ticket")]
    TicketRequired,
    /// The command could not be recorded, so it was not run.
    #[error("the command was not run because it could not be recorded: {source}")]
    AuditUnavailable {
        /// Why the audit sink refused the record.
        #[source]
        source: AuditError,
    },
    /// The daemon's command channel is closed.
    #[error("the daemon is stopping")]
    Stopping,
    /// `reload` failed; the old configuration stays in force.
    #[error(transparent)]
    Reload(#[from] ReloadError),
    /// The handler was built without a reloader (`Handler::reload` is `None`).
    #[error("reload is not available in this mode")]
    ReloadUnsupported,
    /// One or more rotations failed; each account's entry says why.
    #[error("one or more rotations did not complete; see each account")]
    RotationFailed,
    /// Pause, resume or reconcile failed for one or more accounts; each entry says why.
    #[error("the command failed for one or more accounts; see each account")]
    Failed,
    /// The command named an account with `enabled = false`.
    #[error("the account is disabled (enabled = false): nothing was done; see the account")]
    AccountDisabled,
    /// A rotation was asked for an account that waits for adoption.
    #[error("an account has no secret in Key Vault yet and waits for adoption: use `keyturn adopt`; see each account")]
    AwaitingAdoption,
    /// `adopt` (without `--force`) of an account whose secret exists.
    #[error(
        "the account is managed already (its secret exists): nothing was done; see the account"
    )]
    AlreadyAdopted,
    /// With `[ha]`: this replica does not hold the lease, so it acts on nothing.
    #[error("this keyturn is a standby and acts on nothing; the leader is {}: send the command to it (docs/ha.md)", .leader.as_deref().unwrap_or("not known yet (no replica holds the lease; try again shortly)"))]
    NotLeader {
        /// The lease's holder as the blob's metadata names it.
        leader: Option<String>,
    },
}

impl CommandError {
    /// The wire code this error is answered with. No `_` arm: a new variant must choose.
    pub fn code(&self) -> ErrorCode {
        match self {
            CommandError::Forbidden => ErrorCode::Forbidden,
            CommandError::Busy => ErrorCode::Busy,
            CommandError::TooLarge => ErrorCode::TooLarge,
            CommandError::Unreadable { .. } => ErrorCode::BadRequest,
            CommandError::Decode(e) => e.code,
            CommandError::ReasonRequired | CommandError::AdoptReasonRequired => {
                ErrorCode::ReasonRequired
            }
            CommandError::TicketRequired => ErrorCode::TicketRequired,
            CommandError::AuditUnavailable { .. } => ErrorCode::AuditUnavailable,
            CommandError::Stopping => ErrorCode::Stopping,
            CommandError::Reload(e) => match e {
                ReloadError::Config(_) | ReloadError::Setup(_) => ErrorCode::InvalidConfig,
                // The code every reload failure has had, a bug and the daemon stopping
                // included: clients read it as "the old configuration stays in force".
                ReloadError::Internal { .. } | ReloadError::Stopping => ErrorCode::InvalidConfig,
            },
            CommandError::ReloadUnsupported => ErrorCode::Unsupported,
            CommandError::RotationFailed => ErrorCode::RotationFailed,
            CommandError::Failed => ErrorCode::Failed,
            CommandError::AccountDisabled => ErrorCode::AccountDisabled,
            CommandError::AwaitingAdoption => ErrorCode::AwaitingAdoption,
            CommandError::AlreadyAdopted => ErrorCode::AlreadyAdopted,
            CommandError::NotLeader { .. } => ErrorCode::NotLeader,
        }
    }
}

/// Which command's answer a per-account result belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `rotate`, `adopt`.
    Rotate,
    /// `pause`, `resume`, `reconcile`.
    Ack,
}

impl CommandError {
    /// The error an answer is given when `failure` is among its accounts' results (each
    /// account's entry carries the failure's own text). No `_` arm: a new failure must
    /// choose whether it fails the whole answer, and with which code.
    pub(crate) fn for_account(reply: Reply, failure: &AccountFailure) -> CommandError {
        let whole = match reply {
            Reply::Rotate => CommandError::RotationFailed,
            Reply::Ack => CommandError::Failed,
        };
        match failure {
            AccountFailure::Rotation(_) => whole,
            AccountFailure::Refused(e) => match e {
                AccountError::NoSuchAccount { .. }
                | AccountError::NoAccountInTenant { .. }
                | AccountError::AlreadyRotating
                | AccountError::Paused
                | AccountError::ReconcileWhileRotating
                | AccountError::Removed
                | AccountError::NothingToDo
                | AccountError::Retired
                | AccountError::PauseNotSaved { .. } => whole,
                AccountError::Disabled => CommandError::AccountDisabled,
                AccountError::AwaitingAdoption => CommandError::AwaitingAdoption,
                AccountError::AlreadyAdopted { .. } => CommandError::AlreadyAdopted,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages_are_the_documented_ones() {
        let cases = [
            (
                CommandError::Forbidden,
                "forbidden",
                "permission denied: ask for membership of the keyturn admin group",
            ),
            (
                CommandError::Busy,
                "busy",
                "too many admin connections; try again shortly",
            ),
            (
                CommandError::TooLarge,
                "too_large",
                "requests are limited to 65536 bytes",
            ),
            (
                CommandError::Unreadable {
                    source: std::io::Error::other("stream did not contain valid UTF-8"),
                },
                "bad_request",
                "unreadable request: stream did not contain valid UTF-8",
            ),
            (
                CommandError::ReasonRequired,
                "reason_required",
                "this daemon requires a reason for manual rotations: add --reason",
            ),
            (
                CommandError::TicketRequired,
                "ticket_required",
                "this daemon requires a ticket for manual rotations: add --ticket",
            ),
            (CommandError::Stopping, "stopping", "the daemon is stopping"),
            (
                CommandError::Reload(ReloadError::Config(crate::config::ConfigError::Read {
                    path: "/etc/keyturn/keyturn.toml".into(),
                    detail: "no such file".into(),
                })),
                "invalid_config",
                "cannot read /etc/keyturn/keyturn.toml: no such file",
            ),
            (
                CommandError::Reload(ReloadError::Stopping),
                "invalid_config",
                "the daemon is stopping",
            ),
            (
                CommandError::ReloadUnsupported,
                "unsupported",
                "reload is not available in this mode",
            ),
            (
                CommandError::RotationFailed,
                "rotation_failed",
                "one or more rotations did not complete; see each account",
            ),
            (
                CommandError::Failed,
                "failed",
                "the command failed for one or more accounts; see each account",
            ),
        ];
        for (e, code, message) in cases {
            assert_eq!(e.code().as_str(), code);
            assert_eq!(e.to_string(), message);
        }
    }

    #[test]
    fn a_failed_account_fails_the_whole_answer_with_its_command_code() {
        use crate::protocol::RotationError;
        let failures = [
            AccountFailure::Refused(AccountError::NoSuchAccount { name: "x".into() }),
            AccountFailure::Refused(AccountError::AlreadyRotating),
            AccountFailure::Refused(AccountError::Paused),
            AccountFailure::Refused(AccountError::ReconcileWhileRotating),
            AccountFailure::Refused(AccountError::Removed),
            AccountFailure::Refused(AccountError::NothingToDo),
            AccountFailure::Refused(AccountError::PauseNotSaved {
                detail: "disk full".into(),
            }),
            AccountFailure::from(RotationError::Pending {
                account: "x".into(),
                rotation_id: uuid::Uuid::nil(),
                cause: "HTTP 503".into(),
            }),
        ];
        for f in &failures {
            let rotate = CommandError::for_account(Reply::Rotate, f);
            assert_eq!(rotate.code(), ErrorCode::RotationFailed, "{f}");
            let ack = CommandError::for_account(Reply::Ack, f);
            assert_eq!(ack.code(), ErrorCode::Failed, "{f}");
        }
    }

    #[test]
    fn refusals_of_disabled_and_unadopted_accounts_have_their_own_codes() {
        for reply in [Reply::Rotate, Reply::Ack] {
            for (e, code) in [
                (AccountError::Disabled, "account_disabled"),
                (AccountError::AwaitingAdoption, "awaiting_adoption"),
                (
                    AccountError::AlreadyAdopted {
                        version: "v1".into(),
                    },
                    "already_adopted",
                ),
            ] {
                let f = AccountFailure::Refused(e);
                assert_eq!(CommandError::for_account(reply, &f).code().as_str(), code);
            }
        }
        assert_eq!(
            CommandError::AdoptReasonRequired.code().as_str(),
            "reason_required"
        );
    }

    #[test]
    fn an_error_response_encodes_as_before() {
        let mut r = super::super::proto::Response::error(&CommandError::Failed);
        r.result = Some(serde_json::json!({ "accounts": [] }));
        assert_eq!(
            r.encode(),
            r#"{"v":1,"ok":false,"result":{"accounts":[]},"error":{"code":"failed","message":"the command failed for one or more accounts; see each account"}}"#
        );
        let decode = super::super::proto::decode(r#"{"v":2,"cmd":"status"}"#).unwrap_err();
        let r = super::super::proto::Response::error(&CommandError::Decode(decode));
        assert!(r
            .encode()
            .starts_with(r#"{"v":1,"ok":false,"error":{"code":"unsupported_version","message":""#));
    }
}
