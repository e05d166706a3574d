//! The admin protocol, version 1: one JSON object per line each way
//! (`docs/admin-protocol.md`). Decoding is strict: unknown commands, unknown fields and
//! wrong types are refused with a message that names them.

use super::error::{CommandError, ErrorCode};
use serde::{Deserialize, Serialize};

/// The protocol version this build speaks.
pub(crate) const VERSION: u32 = 1;

/// Longest request line accepted, in bytes.
pub(crate) const MAX_REQUEST: usize = 64 * 1024;

/// Which accounts a command is for: an account (`"account"`), a tenant's (`"tenant"`) or
/// all (`"all": true`); the daemon resolves it.
pub use crate::daemon::Target;

/// A decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Status,
    Rotate {
        target: Target,
        reason: Option<String>,
        ticket: Option<String>,
        wait: bool,
        /// May use the budget reserved for other clients (`limits.reserve`): every account
        /// only, with a reason.
        urgent: bool,
    },
    Pause(Target),
    Resume(Target),
    Reload,
    Reconcile(Target),
    /// `keyturn adopt`: a first rotation of an account with no secret yet.
    Adopt {
        account: String,
        reason: Option<String>,
        ticket: Option<String>,
        force: bool,
    },
}

impl Request {
    /// The command's name.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Rotate { .. } => "rotate",
            Request::Pause(_) => "pause",
            Request::Resume(_) => "resume",
            Request::Reload => "reload",
            Request::Reconcile(_) => "reconcile",
            Request::Adopt { .. } => "adopt",
        }
    }

    /// Encodes the request as one JSON line (without the newline).
    pub fn encode(&self) -> String {
        let mut v = serde_json::json!({ "v": VERSION, "cmd": self.name() });
        let put_target = |v: &mut serde_json::Value, t: &Target| match t {
            Target::One(n) => v["account"] = n.clone().into(),
            Target::Tenant(t) => v["tenant"] = t.clone().into(),
            Target::All => v["all"] = true.into(),
        };
        match self {
            Request::Status | Request::Reload => {}
            Request::Rotate {
                target,
                reason,
                ticket,
                wait,
                urgent,
            } => {
                put_target(&mut v, target);
                if *urgent {
                    v["urgent"] = true.into();
                }
                if let Some(r) = reason {
                    v["reason"] = r.clone().into();
                }
                if let Some(t) = ticket {
                    v["ticket"] = t.clone().into();
                }
                v["wait"] = (*wait).into();
            }
            Request::Pause(t) | Request::Resume(t) | Request::Reconcile(t) => put_target(&mut v, t),
            Request::Adopt {
                account,
                reason,
                ticket,
                force,
            } => {
                v["account"] = account.clone().into();
                if let Some(r) = reason {
                    v["reason"] = r.clone().into();
                }
                if let Some(t) = ticket {
                    v["ticket"] = t.clone().into();
                }
                v["force"] = (*force).into();
            }
        }
        v.to_string()
    }
}

/// Why a request could not be decoded; `code` goes in the error response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    /// Machine-readable code (`bad_request`, `unsupported_version`, `unknown_command`).
    pub code: ErrorCode,
    /// What is wrong and how to fix it.
    pub message: String,
}

fn bad(code: ErrorCode, message: impl Into<String>) -> DecodeError {
    DecodeError {
        code,
        message: message.into(),
    }
}

/// Decodes one request line.
pub fn decode(line: &str) -> Result<Request, DecodeError> {
    let v: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| bad(ErrorCode::BadRequest, format!("not a JSON object: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad(ErrorCode::BadRequest, "the request must be a JSON object"))?;
    match obj.get("v").and_then(|v| v.as_u64()) {
        Some(1) => {}
        Some(other) => {
            return Err(bad(
                ErrorCode::UnsupportedVersion,
                format!(
                "protocol version {other} is not supported; this daemon speaks version {VERSION}"
            ),
            ))
        }
        None => {
            return Err(bad(
                ErrorCode::BadRequest,
                "missing \"v\": send {\"v\":1,\"cmd\":...}",
            ))
        }
    }
    let cmd = obj
        .get("cmd")
        .and_then(|c| c.as_str())
        .ok_or_else(|| bad(ErrorCode::BadRequest, "missing \"cmd\" (a string)"))?;
    let allowed: &[&str] = match cmd {
        "status" | "reload" => &["v", "cmd"],
        "rotate" => &[
            "v", "cmd", "account", "tenant", "all", "reason", "ticket", "wait", "urgent",
        ],
        "pause" | "resume" | "reconcile" => &["v", "cmd", "account", "tenant", "all"],
        "adopt" => &["v", "cmd", "account", "reason", "ticket", "force"],
        other => {
            return Err(bad(
                ErrorCode::UnknownCommand,
                format!("unknown command {other:?}; commands: status, rotate, pause, resume, reload, reconcile, adopt"),
            ))
        }
    };
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(bad(
            ErrorCode::BadRequest,
            format!(
                "unknown field {k:?} for {cmd}; fields: {}",
                allowed.join(", ")
            ),
        ));
    }
    #[derive(Deserialize)]
    struct Fields {
        account: Option<String>,
        tenant: Option<String>,
        #[serde(default)]
        all: bool,
        reason: Option<String>,
        ticket: Option<String>,
        wait: Option<bool>,
        force: Option<bool>,
        urgent: Option<bool>,
    }
    let f: Fields = serde_json::from_value(v.clone())
        .map_err(|e| bad(ErrorCode::BadRequest, format!("bad field in {cmd}: {e}")))?;
    let target = || -> Result<Target, DecodeError> {
        match (&f.account, &f.tenant, f.all) {
            (Some(a), None, false) if !a.is_empty() => Ok(Target::One(a.clone())),
            (None, Some(t), false) if !t.is_empty() => Ok(Target::Tenant(t.clone())),
            (None, None, true) => Ok(Target::All),
            (None, None, false) => Err(bad(
                ErrorCode::BadRequest,
                format!("{cmd} needs \"account\": NAME, \"tenant\": TENANT or \"all\": true"),
            )),
            (Some(_), None, false) | (None, Some(_), false) => Err(bad(
                ErrorCode::BadRequest,
                format!("{cmd}: \"account\" or \"tenant\" is empty"),
            )),
            _ => Err(bad(
                ErrorCode::BadRequest,
                "give one of \"account\", \"tenant\" or \"all\": true, not more",
            )),
        }
    };
    for (name, value) in [("reason", &f.reason), ("ticket", &f.ticket)] {
        if value.as_ref().is_some_and(|s| s.len() > 1024) {
            return Err(bad(
                ErrorCode::BadRequest,
                format!("{name} is longer than 1024 characters"),
            ));
        }
    }
    Ok(match cmd {
        "status" => Request::Status,
        "reload" => Request::Reload,
        "rotate" => {
            let target = target()?;
            let reason = f.reason.filter(|s| !s.trim().is_empty());
            let urgent = f.urgent.unwrap_or(false);
            if urgent && target != Target::All {
                return Err(bad(
                    ErrorCode::BadRequest,
                    "\"urgent\": true is for rotating every account (\"all\": true)",
                ));
            }
            if urgent && reason.is_none() {
                return Err(bad(
                    ErrorCode::BadRequest,
                    "an urgent rotation needs a \"reason\" (it uses the budget reserved for the vaults' other clients)",
                ));
            }
            Request::Rotate {
                target,
                reason,
                ticket: f.ticket.filter(|s| !s.trim().is_empty()),
                wait: f.wait.unwrap_or(true),
                urgent,
            }
        }
        "pause" => Request::Pause(target()?),
        "resume" => Request::Resume(target()?),
        "adopt" => match f.account {
            Some(account) if !account.is_empty() => Request::Adopt {
                account,
                reason: f.reason.filter(|s| !s.trim().is_empty()),
                ticket: f.ticket.filter(|s| !s.trim().is_empty()),
                force: f.force.unwrap_or(false),
            },
            // (`all` is not among adopt's fields: refused above.)
            _ => {
                return Err(bad(
                    ErrorCode::BadRequest,
                    "adopt needs \"account\": NAME (one account at a time)",
                ))
            }
        },
        _ => Request::Reconcile(target()?),
    })
}

/// One response line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Response {
    /// Protocol version.
    pub v: u32,
    /// True when the command was carried out.
    pub ok: bool,
    /// The command's result (`ok = true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// What went wrong (`ok = false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// An error response's body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// Machine-readable code.
    pub code: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl Response {
    /// A success.
    pub fn ok(result: serde_json::Value) -> Self {
        Response {
            v: VERSION,
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    /// A failure: the error's wire code and its message.
    pub fn error(e: &CommandError) -> Self {
        Response {
            v: VERSION,
            ok: false,
            result: None,
            error: Some(ErrorBody {
                code: e.code().as_str().into(),
                message: e.to_string(),
            }),
        }
    }

    /// The response as one JSON line (without the newline).
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| r#"{"v":1,"ok":false}"#.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let all = [
            Request::Status,
            Request::Reload,
            Request::Rotate {
                target: Target::One("a".into()),
                reason: Some("leak".into()),
                ticket: Some("INC-1".into()),
                wait: false,
                urgent: false,
            },
            Request::Rotate {
                target: Target::All,
                reason: None,
                ticket: None,
                wait: true,
                urgent: false,
            },
            Request::Rotate {
                target: Target::All,
                reason: Some("suspected compromise".into()),
                ticket: Some("INC-2".into()),
                wait: false,
                urgent: true,
            },
            Request::Rotate {
                target: Target::Tenant("contoso.onmicrosoft.com".into()),
                reason: None,
                ticket: None,
                wait: true,
                urgent: false,
            },
            Request::Pause(Target::All),
            Request::Pause(Target::Tenant(
                "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
            )),
            Request::Resume(Target::One("b".into())),
            Request::Resume(Target::Tenant("fabrikam.com".into())),
            Request::Reconcile(Target::All),
            Request::Adopt {
                account: "c".into(),
                reason: Some("first deployment".into()),
                ticket: None,
                force: false,
            },
        ];
        for r in all {
            assert_eq!(decode(&r.encode()).unwrap(), r);
        }
    }

    #[test]
    fn bad_requests_name_the_problem() {
        let cases = [
            ("garbage", "bad_request", "not a JSON object"),
            ("[1,2]", "bad_request", "JSON object"),
            (r#"{"cmd":"status"}"#, "bad_request", "missing \"v\""),
            (
                r#"{"v":2,"cmd":"status"}"#,
                "unsupported_version",
                "version 2",
            ),
            (r#"{"v":1}"#, "bad_request", "missing \"cmd\""),
            (r#"{"v":1,"cmd":"explode"}"#, "unknown_command", "explode"),
            (
                r#"{"v":1,"cmd":"rotate"}"#,
                "bad_request",
                "needs \"account\"",
            ),
            (
                r#"{"v":1,"cmd":"rotate","account":"a","all":true}"#,
                "bad_request",
                "not more",
            ),
            (
                r#"{"v":1,"cmd":"rotate","account":"a","reason":"r","urgent":true}"#,
                "bad_request",
                "is for rotating every account",
            ),
            (
                r#"{"v":1,"cmd":"rotate","all":true,"urgent":true}"#,
                "bad_request",
                "needs a \"reason\"",
            ),
            (
                r#"{"v":1,"cmd":"pause","account":"a","tenant":"t"}"#,
                "bad_request",
                "not more",
            ),
            (
                r#"{"v":1,"cmd":"resume","tenant":""}"#,
                "bad_request",
                "is empty",
            ),
            (
                r#"{"v":1,"cmd":"status","tenant":"t"}"#,
                "bad_request",
                "unknown field \"tenant\"",
            ),
            (
                r#"{"v":1,"cmd":"rotate","acount":"a"}"#,
                "bad_request",
                "unknown field \"acount\"",
            ),
            (
                r#"{"v":1,"cmd":"rotate","account":7}"#,
                "bad_request",
                "bad field",
            ),
            (
                r#"{"v":1,"cmd":"status","account":"a"}"#,
                "bad_request",
                "unknown field",
            ),
            (
                r#"{"v":1,"cmd":"adopt","all":true}"#,
                "bad_request",
                "unknown field \"all\"",
            ),
            (
                r#"{"v":1,"cmd":"adopt"}"#,
                "bad_request",
                "needs \"account\"",
            ),
        ];
        for (line, code, text) in cases {
            let e = decode(line).unwrap_err();
            assert_eq!(e.code.as_str(), code, "{line}");
            assert!(e.message.contains(text), "{line}: {}", e.message);
        }
    }
}
