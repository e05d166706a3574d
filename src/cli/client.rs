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
    let socket = conn
        .socket
        .clone()
        .or_else(|| crate::config::admin_socket(&conn.config))
        .unwrap_or_else(|| crate::config::AdminConfig::default().socket);
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
