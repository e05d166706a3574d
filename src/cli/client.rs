//! The commands sent to a running daemon over its admin socket (`rotate`, `status`,
//! `pause`, `resume`, `reload`, `reconcile`, `adopt`): where the socket is, and printing the answer.

use super::Conn;
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

/// `keyturn adopt`: sends the request; once the daemon has rotated the account, checks its
/// directory roles against the declared ones as doctor does (`user_roles`, from the
/// configuration at `--config`; read-only) and prints the result under the daemon's answer
/// (`--json`: as `"roles"` beside `"result"`). The exit code is the daemon's answer's: a
/// role missing is reported, not a failure of the adoption.
pub(super) async fn adopt(conn: &Conn, req: admin::proto::Request, account: &str) -> i32 {
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
        Some(match crate::config::load(&conn.config) {
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
        })
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
