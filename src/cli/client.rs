//! The commands sent to a running daemon over its admin socket (`rotate`, `status`,
//! `pause`, `resume`, `reload`, `reconcile`, `adopt`): where the socket is, and printing the answer.

use super::{Conn, Targets};
use crate::admin;

/// Exit code when the daemon cannot be reached (`EX_UNAVAILABLE`).
pub(crate) const EXIT_UNAVAILABLE: i32 = 69;

/// The one account named, `--tenant`'s accounts, or (`--all`, or nothing) all.
pub(super) fn target(
    account: Option<String>,
    tenant: Option<String>,
    all: bool,
) -> admin::proto::Target {
    match (account, tenant, all) {
        (Some(a), _, false) => admin::proto::Target::One(a),
        (None, Some(t), false) => admin::proto::Target::Tenant(t),
        _ => admin::proto::Target::All,
    }
}

impl Targets {
    /// The admin protocol's target for these arguments.
    pub(super) fn target(self) -> admin::proto::Target {
        target(self.account, self.tenant, self.all)
    }
}

/// Sends `req` to the daemon and prints its answer; returns the exit code. The socket:
/// `--socket`, else the configuration's `admin.socket` (the file with its `KEYTURN__…`
/// overrides, as [`crate::config::admin_socket`] reads it), else the default.
pub(super) async fn client(conn: &Conn, req: admin::proto::Request) -> i32 {
    let socket = socket(conn);
    match admin::client::send(&socket, &req).await {
        Ok(r) => {
            if conn.json {
                println!("{}", r.encode());
            } else {
                print!("{}", admin::client::human(&req, &r));
            }
            admin::client::exit_code(&r)
        }
        Err(e) => {
            eprintln!("keyturn: {e}");
            EXIT_UNAVAILABLE
        }
    }
}

/// The admin socket: `--socket`, else the configuration's `admin.socket`, else the default.
fn socket(conn: &Conn) -> std::path::PathBuf {
    conn.socket
        .clone()
        .or_else(|| crate::config::admin_socket(&conn.config))
        .unwrap_or_else(|| crate::config::AdminConfig::default().socket)
}

/// `keyturn adopt`'s options besides the accounts.
pub(super) struct AdoptOptions {
    /// Why (the daemon refuses an adopt without one).
    pub reason: Option<String>,
    /// The ticket.
    pub ticket: Option<String>,
    /// Adopt even if the secret exists.
    pub force: bool,
    /// Change nothing: say what adopt would do.
    pub dry_run: bool,
}

/// `keyturn adopt ACCOUNT…`: one `adopt` request per account, in the order given (the
/// socket protocol takes one account per request), each answer printed as for one account;
/// with `dry_run`, no `adopt` at all but what it would do ([`adopt_dry_run`]). The exit code:
/// 0 when every account was adopted (would be), else the first other one's (1 refused or
/// failed, 69 unavailable, 75 busy).
pub(super) async fn adopt(conn: &Conn, accounts: &[String], opts: &AdoptOptions) -> i32 {
    if opts.dry_run {
        return adopt_dry_run(conn, accounts, opts.force).await;
    }
    let mut code = 0;
    for account in accounts {
        let req = admin::proto::Request::Adopt {
            account: account.clone(),
            reason: opts.reason.clone(),
            ticket: opts.ticket.clone(),
            force: opts.force,
        };
        let c = adopt_one(conn, req, account).await;
        if code == 0 {
            code = c;
        }
    }
    code
}

/// One account's `adopt`: sends the request; once the daemon has rotated the account, checks its
/// directory roles against the declared ones as doctor does (`user_roles`, from the
/// configuration at `--config`; read-only) and prints the result under the daemon's answer
/// (`--json`: as `"roles"` beside `"result"`). The exit code is the daemon's answer's: a
/// role missing is reported, not a failure of the adoption.
async fn adopt_one(conn: &Conn, req: admin::proto::Request, account: &str) -> i32 {
    let r = match admin::client::send(&socket(conn), &req).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keyturn: {e}");
            return EXIT_UNAVAILABLE;
        }
    };
    let adopted = r.ok
        && r.result.as_ref().is_some_and(|v| {
            v["accounts"].as_array().into_iter().flatten().any(|a| {
                a["account"] == account
                    && a["ok"].as_bool() == Some(true)
                    && a["rotation"]["completed"].as_bool() == Some(true)
            })
        });
    let roles = if adopted {
        Some(roles_check(conn, account).await)
    } else {
        None
    };
    if conn.json {
        let mut v: serde_json::Value = serde_json::from_str(&r.encode()).unwrap_or_default();
        if let Some(roles) = &roles {
            v["roles"] = serde_json::to_value(roles).unwrap_or_default();
        }
        println!("{v}");
    } else {
        print!("{}", admin::client::human(&req, &r));
        if let Some(roles) = &roles {
            print!("{}", roles.human());
        }
    }
    admin::client::exit_code(&r)
}

/// Doctor's `user_roles` check of `account` from the configuration at `--config`
/// (read-only), or why it could not be checked.
async fn roles_check(conn: &Conn, account: &str) -> crate::doctor::RoleReport {
    match crate::config::load(&conn.config) {
        Ok(loaded) => crate::doctor::account_roles(&loaded, account)
            .await
            .unwrap_or_else(|e| crate::doctor::RoleReport::not_checked(e, account)),
        Err(e) => crate::doctor::RoleReport::not_checked(
            format!(
                "the configuration {} cannot be read ({e}); give --config",
                conn.config.display()
            ),
            account,
        ),
    }
}

/// `keyturn adopt --dry-run`: sends no `adopt`; asks the daemon's `status` (read-only) once
/// and prints, per account, what adopt would do ([`adopt_plan`]), with the roles check as
/// after an adoption for each account adopt would take over (`--json`: one line each,
/// `{"account", "dry_run": true, "state", "would", "detail", "roles"?}`). Exit 0 when every
/// account would be adopted, 1 when adopt would refuse one, 69 the daemon cannot be reached.
async fn adopt_dry_run(conn: &Conn, accounts: &[String], force: bool) -> i32 {
    let req = admin::proto::Request::Status;
    let r = match admin::client::send(&socket(conn), &req).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keyturn: {e}");
            return EXIT_UNAVAILABLE;
        }
    };
    let Some(status) = r.result.as_ref().filter(|_| r.ok) else {
        print!("{}", admin::client::human(&req, &r));
        return admin::client::exit_code(&r).max(1);
    };
    let mut code = 0;
    for account in accounts {
        let entry = status["accounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["name"] == account.as_str());
        let plan = adopt_plan(account, entry, force);
        let roles = if plan.would == Would::Refuse {
            if code == 0 {
                code = 1;
            }
            None
        } else {
            Some(roles_check(conn, account).await)
        };
        if conn.json {
            let mut v = serde_json::json!({
                "account": account,
                "dry_run": true,
                "state": plan.state,
                "would": plan.would.as_str(),
                "detail": plan.detail,
            });
            if let Some(roles) = &roles {
                v["roles"] = serde_json::to_value(roles).unwrap_or_default();
            }
            println!("{v}");
        } else {
            println!("{account} ({}): {}", plan.state, plan.detail);
            if let Some(roles) = &roles {
                print!("{}", roles.human());
            }
        }
    }
    if !conn.json {
        println!("dry run: no adopt was sent, nothing was changed");
    }
    code
}

/// What `adopt` would do to an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Would {
    /// Rotate it now (it awaits adoption).
    Rotate,
    /// Replace the password of a secret that exists (`--force`).
    Replace,
    /// Refuse it.
    Refuse,
}

impl Would {
    fn as_str(self) -> &'static str {
        match self {
            Would::Rotate => "rotate",
            Would::Replace => "replace",
            Would::Refuse => "refuse",
        }
    }
}

/// One account's dry-run answer.
#[derive(Debug)]
struct AdoptPlan {
    /// Its state in `status` (`unknown` when the daemon does not know it).
    state: String,
    would: Would,
    /// What adopt would do, or the refusal it would get (the daemon's own words).
    detail: String,
}

/// What adopt would do to `account`, from its `status` entry (`None`: the daemon has no such
/// account), as the daemon decides it: disabled, rotating, retired and paused accounts are
/// refused; one awaiting adoption is rotated; one whose secret exists is refused without
/// `force` and rotated with it. (The daemon reads the secret again when it adopts.)
fn adopt_plan(account: &str, entry: Option<&serde_json::Value>, force: bool) -> AdoptPlan {
    use crate::daemon::AccountError;
    let Some(a) = entry else {
        return AdoptPlan {
            state: "unknown".into(),
            would: Would::Refuse,
            detail: format!(
                "would be refused: {}",
                AccountError::NoSuchAccount {
                    name: account.to_owned()
                }
            ),
        };
    };
    let state = a["state"].as_str().unwrap_or("?").to_owned();
    let refused = |e: AccountError| (Would::Refuse, format!("would be refused: {e}"));
    let (would, detail) = match state.as_str() {
        "disabled" => refused(AccountError::Disabled),
        "rotating" => refused(AccountError::AlreadyRotating),
        "retired" => refused(AccountError::Retired),
        "paused" => refused(AccountError::Paused),
        "awaiting_adoption" => (
            Would::Rotate,
            "would rotate it now: its current password is replaced, tell its consumer first"
                .to_owned(),
        ),
        _ => {
            let version = a["version"].as_str().unwrap_or("?").to_owned();
            if force {
                (
                    Would::Replace,
                    format!("would replace its password: its secret exists (version {version}) and --force rotates it anyway, tell its consumer first"),
                )
            } else {
                (
                    Would::Refuse,
                    format!(
                        "refused without --force (already adopted): {}",
                        AccountError::AlreadyAdopted { version }
                    ),
                )
            }
        }
    };
    AdoptPlan {
        state,
        would,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dry_run_says_what_adopt_would_do_in_each_state() {
        let entry =
            |state: &str| serde_json::json!({"name": "svc", "state": state, "version": "abc123"});
        let plan = |state: &str, force| adopt_plan("svc", Some(&entry(state)), force);
        let p = plan("awaiting_adoption", false);
        assert_eq!(p.would, Would::Rotate);
        assert!(p.detail.contains("tell its consumer first"), "{p:?}");
        let p = plan("idle", false);
        assert_eq!(p.would, Would::Refuse);
        assert!(
            p.detail
                .starts_with("refused without --force (already adopted)"),
            "{p:?}"
        );
        assert!(p.detail.contains("version abc123"), "{p:?}");
        assert_eq!(plan("idle", true).would, Would::Replace);
        for (state, says) in [
            ("disabled", "disabled"),
            ("retired", "retired"),
            ("paused", "paused"),
            ("rotating", "already running"),
        ] {
            let p = plan(state, true);
            assert_eq!(p.would, Would::Refuse, "{state}");
            assert!(p.detail.starts_with("would be refused: "), "{p:?}");
            assert!(p.detail.contains(says), "{p:?}");
        }
        let p = adopt_plan("nope", None, false);
        assert_eq!((p.would, p.state.as_str()), (Would::Refuse, "unknown"));
        assert!(p.detail.contains("nope"), "{p:?}");
    }
}
