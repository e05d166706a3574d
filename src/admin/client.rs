//! The CLI side of the admin socket: send one request, print the answer for people or as JSON.

use super::proto::{Request, Response, MAX_REQUEST};
use crate::audit::tools::prefix;
use futures::{SinkExt, StreamExt};
use std::path::Path;
use tokio::net::UnixStream;
use tokio_util::codec::{Framed, LinesCodec};

/// Why a command could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the admin socket {path}: {source}; is `keyturn run` running, and are you in its admin group? (`--offline` rotates without the daemon)")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the admin socket closed without an answer")]
    Closed,
    #[error("cannot talk to the admin socket: {0}")]
    Io(String),
    #[error("the daemon's answer cannot be read: {0}")]
    BadAnswer(String),
}

/// Sends `req` and returns the daemon's response.
pub async fn send(socket: &Path, req: &Request) -> Result<Response, ClientError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ClientError::Connect {
            path: socket.display().to_string(),
            source,
        })?;
    // Answers (a status of many accounts) may be far larger than requests.
    let mut framed = Framed::new(stream, LinesCodec::new_with_max_length(MAX_REQUEST * 1024));
    // A daemon with every slot taken answers `busy` and closes at once, possibly before
    // the request is written: the answer is still there to read, so read before giving up.
    let sent = framed.send(req.encode()).await;
    let line = match (framed.next().await, sent) {
        (Some(Ok(line)), _) => line,
        (_, Err(e)) => return Err(ClientError::Io(e.to_string())),
        (None, Ok(())) => return Err(ClientError::Closed),
        (Some(Err(e)), Ok(())) => return Err(ClientError::Io(e.to_string())),
    };
    serde_json::from_str(&line).map_err(|e| ClientError::BadAnswer(e.to_string()))
}

/// Exit code of a CLI command when the daemon is busy (`EX_TEMPFAIL`: try again).
pub(crate) const EXIT_BUSY: i32 = 75;

/// The exit code for the daemon's answer: 0 done, [`EXIT_BUSY`] when every admin slot is
/// taken, 1 for any other refusal or failure (`docs/admin-protocol.md`).
pub(crate) fn exit_code(r: &Response) -> i32 {
    match &r.error {
        _ if r.ok => 0,
        Some(e) if e.code == super::ErrorCode::Busy.as_str() => EXIT_BUSY,
        _ => 1,
    }
}

/// Renders a response for a person.
pub fn human(req: &Request, r: &Response) -> String {
    let mut out = String::new();
    if let Some(e) = &r.error {
        if e.code == super::ErrorCode::Busy.as_str() {
            out.push_str(&format!(
                "the daemon is busy: every admin connection slot is taken ({}); nothing was done, try again in a few seconds\n",
                e.message
            ));
            return out;
        }
        out.push_str(&format!("error ({}): {}\n", e.code, e.message));
    }
    let Some(result) = &r.result else { return out };
    match req {
        Request::Status => {
            out.push_str(&format!(
                "keyturn {}  started {}  {}\n\n",
                result["version"].as_str().unwrap_or("?"),
                result["started_at"].as_str().unwrap_or("?"),
                if result["stopping"].as_bool() == Some(true) {
                    "STOPPING"
                } else if result["ha"]["role"].as_str() == Some("standby") {
                    "standby"
                } else if result["ready"].as_bool() == Some(true) {
                    "ready"
                } else {
                    "starting (recovery running)"
                }
            ));
            if let Some(role) = result["ha"]["role"].as_str() {
                out.push_str(&format!(
                    "ha: {role} ({}); leader: {}\n\n",
                    result["ha"]["me"].as_str().unwrap_or("?"),
                    result["ha"]["leader"]
                        .as_str()
                        .unwrap_or("none (no replica holds the lease)")
                ));
            }
            out.push_str(&format!(
                "{:<20} {:<17} {:<18} {:<21} {:<21} {:<8} {:<7} {}\n",
                "ACCOUNT",
                "STATE",
                "LAST OUTCOME",
                "LAST ROTATION",
                "NEXT DUE",
                "VERSION",
                "PENDING",
                "READY"
            ));
            let mut waiting = Vec::new();
            let mut retired = Vec::new();
            let mut not_ready = Vec::new();
            for a in result["accounts"].as_array().into_iter().flatten() {
                // `state`, or for an older daemon without it, from the flags.
                let state = a["state"].as_str().unwrap_or_else(|| {
                    if a["busy"].as_bool() == Some(true) {
                        "rotating"
                    } else if a["paused"].as_bool() == Some(true) {
                        "paused"
                    } else {
                        "idle"
                    }
                });
                if state == "awaiting_adoption" {
                    waiting.push(a["name"].as_str().unwrap_or("?").to_owned());
                }
                if state == "retired" {
                    retired.push(a["name"].as_str().unwrap_or("?").to_owned());
                }
                let t = |k: &str| {
                    a[k].as_str()
                        .map(|s| prefix(s, 19))
                        .unwrap_or_else(|| "-".into())
                };
                let name = a["name"].as_str().unwrap_or("?");
                let ready = readiness(name, &a["readiness"], &mut not_ready);
                out.push_str(&format!(
                    "{:<20} {:<17} {:<18} {:<21} {:<21} {:<8} {:<7} {}\n",
                    name,
                    state,
                    a["last_outcome"].as_str().unwrap_or("-"),
                    t("last_end"),
                    t("next_due"),
                    a["version"]
                        .as_str()
                        .map(|v| prefix(v, 8))
                        .unwrap_or_else(|| "-".into()),
                    if a["pending"].as_bool() == Some(true) {
                        "yes"
                    } else {
                        "no"
                    },
                    ready
                ));
            }
            if !not_ready.is_empty() {
                out.push_str("\nreadiness watch (keyturn doctor --account ACCOUNT for the fix):\n");
                for line in &not_ready {
                    out.push_str(&format!("  {line}\n"));
                }
            }
            if !waiting.is_empty() {
                out.push_str(&format!(
                    "\n{} account(s) have no secret in Key Vault and are left alone until adopted: {}\n  take one over (rotates it now; tell its consumer first): keyturn adopt ACCOUNT --reason R [--ticket T]\n  or store its current password in the secret and run `keyturn reconcile ACCOUNT`\n  (docs/first-deployment.md)\n",
                    waiting.len(),
                    waiting.join(", ")
                ));
            }
            if !retired.is_empty() {
                out.push_str(&format!(
                    "\n{} account(s) are retired (keyturn retire) and never rotated again: {}\n  remove them from the configuration and reload (docs/lifecycle.md)\n",
                    retired.len(),
                    retired.join(", ")
                ));
            }
        }
        Request::Reload => {
            out.push_str(&format!(
                "reloaded: {}\n",
                result["summary"].as_str().unwrap_or("")
            ));
        }
        _ => {
            for a in result["accounts"].as_array().into_iter().flatten() {
                let name = a["account"].as_str().unwrap_or("?");
                if a["ok"].as_bool() == Some(true) {
                    if let Some(rot) = a.get("rotation") {
                        let id = rot["rotation_id"].as_str().unwrap_or("?");
                        if rot["completed"].as_bool() == Some(true) {
                            let what = if matches!(req, Request::Adopt { .. }) {
                                "adopted: rotated"
                            } else {
                                "rotated"
                            };
                            out.push_str(&format!(
                                "{name}: {what} (rotation {id}, version {}){}\n",
                                rot["version"].as_str().unwrap_or("?"),
                                if rot["resumed"].as_bool() == Some(true) {
                                    ", completed a pending rotation"
                                } else {
                                    ""
                                }
                            ));
                            for w in rot["warnings"].as_array().into_iter().flatten() {
                                out.push_str(&format!("  warning: {}\n", w.as_str().unwrap_or("")));
                            }
                        } else {
                            out.push_str(&format!(
                                "{name}: started (rotation {id}); follow it in the audit log\n"
                            ));
                        }
                    } else {
                        out.push_str(&format!(
                            "{name}: {}\n",
                            a["result"].as_str().unwrap_or("ok")
                        ));
                    }
                } else {
                    out.push_str(&format!(
                        "{name}: FAILED: {}\n",
                        a["error"].as_str().unwrap_or("?")
                    ));
                }
            }
        }
    }
    out
}

/// The READY column for an account's `readiness` (`yes`, `NO`, `?` when no check has a
/// known result, `-` when not watched), and a line for each check that failed or could not
/// run at the last look.
fn readiness(name: &str, r: &serde_json::Value, lines: &mut Vec<String>) -> &'static str {
    if r.is_null() {
        return "-";
    }
    for c in r["checks"].as_array().into_iter().flatten() {
        let check = c["check"].as_str().unwrap_or("?");
        let detail = c["detail"].as_str().unwrap_or("");
        match (c["state"].as_str(), c["ready"].as_bool()) {
            (Some("not_ready"), _) => {
                lines.push(format!("{name}: not ready: {check} failed: {detail}"));
            }
            (Some("unknown"), known) => lines.push(format!(
                "{name}: {check} unknown (last known: {}): {detail}",
                match known {
                    Some(true) => "ready",
                    Some(false) => "not ready",
                    None => "none",
                }
            )),
            _ => {}
        }
    }
    match r["ready"].as_bool() {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_shows_each_state_and_how_to_adopt() {
        let account = |name: &str, state: &str| serde_json::json!({"name": name, "state": state, "busy": false, "paused": state == "paused", "pending": false});
        let r = Response::ok(serde_json::json!({
            "version": "1", "started_at": "2026-11-20T10:00:00Z", "ready": true,
            "accounts": [
                account("svc-1", "idle"),
                account("svc-2", "awaiting_adoption"),
                account("svc-3", "disabled"),
                account("svc-4", "paused"),
            ],
        }));
        let out = human(&Request::Status, &r);
        for (name, state) in [
            ("svc-1", "idle"),
            ("svc-2", "awaiting_adoption"),
            ("svc-3", "disabled"),
            ("svc-4", "paused"),
        ] {
            assert!(
                out.lines()
                    .any(|l| l.starts_with(name) && l.split_whitespace().nth(1) == Some(state)),
                "{name} {state}:\n{out}"
            );
        }
        assert!(
            out.contains(
                "1 account(s) have no secret in Key Vault and are left alone until adopted: svc-2"
            ),
            "{out}"
        );
        assert!(out.contains("keyturn adopt ACCOUNT --reason R"), "{out}");
    }

    #[test]
    fn status_shows_readiness_and_names_the_failing_check() {
        let r = Response::ok(serde_json::json!({
            "version": "1", "started_at": "2026-11-20T10:00:00Z", "ready": true,
            "accounts": [
                {"name": "svc-1", "state": "idle", "readiness": {"ready": true, "checks": [
                    {"check": "user_enabled", "state": "ready", "ready": true, "detail": "accountEnabled"}]}},
                {"name": "svc-2", "state": "idle", "readiness": {"ready": false, "checks": [
                    {"check": "user_enabled", "state": "not_ready", "ready": false, "detail": "svc-2@x is disabled"}]}},
                {"name": "svc-3", "state": "idle", "readiness": {"ready": null, "checks": [
                    {"check": "user_exists", "state": "unknown", "ready": null, "detail": "no answer from Graph"}]}},
                {"name": "svc-4", "state": "disabled"},
            ],
        }));
        let out = human(&Request::Status, &r);
        let ready = |name: &str| {
            out.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().last())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(ready("svc-1"), "yes", "{out}");
        assert_eq!(ready("svc-2"), "NO", "{out}");
        assert_eq!(ready("svc-3"), "?", "{out}");
        assert_eq!(ready("svc-4"), "-", "{out}");
        assert!(
            out.contains("svc-2: not ready: user_enabled failed: svc-2@x is disabled"),
            "{out}"
        );
        assert!(
            out.contains("svc-3: user_exists unknown (last known: none): no answer from Graph"),
            "{out}"
        );
    }
}
