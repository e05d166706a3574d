//! The commands sent to a running daemon over its admin socket (`rotate`, `status`,
//! `pause`, `resume`, `reload`, `reconcile`): where the socket is, and printing the answer.

use super::Conn;
use crate::admin;
use std::path::{Path, PathBuf};

/// Exit code when the daemon cannot be reached (`EX_UNAVAILABLE`).
pub const EXIT_UNAVAILABLE: i32 = 69;

pub(super) fn target(account: Option<String>, all: bool) -> admin::proto::Target {
    match (account, all) {
        (Some(a), false) => admin::proto::Target::One(a),
        _ => admin::proto::Target::All,
    }
}

/// The admin socket named by the configuration file, without validating the rest of it.
fn configured_socket(path: &Path) -> Option<PathBuf> {
    let raw = ::config::Config::builder()
        .add_source(::config::File::from(path).format(::config::FileFormat::Toml))
        .add_source(
            ::config::Environment::with_prefix("KEYTURN")
                .prefix_separator("__")
                .separator("__"),
        )
        .build()
        .ok()?;
    raw.get_string("admin.socket").ok().map(PathBuf::from)
}

pub(super) async fn client(conn: &Conn, req: admin::proto::Request) -> i32 {
    let socket = conn
        .socket
        .clone()
        .or_else(|| configured_socket(&conn.config))
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
