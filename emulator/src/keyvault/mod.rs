//! Key Vault secrets (data plane): challenge, RBAC, throttling, and the secret operations.
//!
//! Here: parsing the operation, the error answers, authentication and RBAC, throttling;
//! `ops`: running an authorised operation on a vault (bodies, paging, the secret bundles).

mod ops;

use crate::aad::VAULT_AUD;
use crate::http::{json, with_header, Req, Resp, Throttled};
use crate::jwt::{self, Claims, TokenError};
use crate::rules::valid_secret_name;
use crate::shared::{lock, Shared};
use crate::state::{State, Vault};
use hyper::Method;
use ops::run;
use serde_json::json;

/// One Key Vault operation, parsed from method and path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KvOp {
    Set(String),
    GetLatest(String),
    GetVersion(String, String),
    ListVersions(String),
    ListSecrets,
    Update(String, Option<String>),
    Delete(String),
    GetDeleted(String),
    ListDeleted,
    Recover(String),
    Purge(String),
    /// A path or method the emulator does not serve.
    Unsupported,
}

impl KvOp {
    /// Parses `/secrets/...` and `/deletedsecrets/...`.
    pub(crate) fn parse(method: &Method, path: &str) -> KvOp {
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let m = method.clone();
        match segs.as_slice() {
            ["secrets"] | ["secrets", ""] if m == Method::GET => KvOp::ListSecrets,
            ["secrets", n] | ["secrets", n, ""] if !n.is_empty() => match m {
                Method::PUT => KvOp::Set(n.to_string()),
                Method::GET => KvOp::GetLatest(n.to_string()),
                Method::PATCH => KvOp::Update(n.to_string(), None),
                Method::DELETE => KvOp::Delete(n.to_string()),
                _ => KvOp::Unsupported,
            },
            ["secrets", n, "versions"] if m == Method::GET => KvOp::ListVersions(n.to_string()),
            ["secrets", n, v] => match m {
                Method::GET => KvOp::GetVersion(n.to_string(), v.to_string()),
                Method::PATCH => KvOp::Update(n.to_string(), Some(v.to_string())),
                _ => KvOp::Unsupported,
            },
            ["deletedsecrets"] | ["deletedsecrets", ""] if m == Method::GET => KvOp::ListDeleted,
            ["deletedsecrets", n] => match m {
                Method::GET => KvOp::GetDeleted(n.to_string()),
                Method::DELETE => KvOp::Purge(n.to_string()),
                _ => KvOp::Unsupported,
            },
            ["deletedsecrets", n, "recover"] if m == Method::POST => KvOp::Recover(n.to_string()),
            _ => KvOp::Unsupported,
        }
    }

    /// Route name for faults and counters.
    pub(crate) fn route(&self) -> &'static str {
        match self {
            KvOp::Set(_) => "kv.set",
            KvOp::GetLatest(_) | KvOp::GetVersion(..) | KvOp::GetDeleted(_) => "kv.get",
            KvOp::ListVersions(_) | KvOp::ListSecrets | KvOp::ListDeleted => "kv.list",
            KvOp::Update(..) => "kv.update",
            KvOp::Delete(_) => "kv.delete",
            KvOp::Recover(_) => "kv.recover",
            KvOp::Purge(_) => "kv.purge",
            KvOp::Unsupported => "kv.other",
        }
    }

    fn name(&self) -> Option<&str> {
        match self {
            KvOp::Set(n)
            | KvOp::GetLatest(n)
            | KvOp::GetVersion(n, _)
            | KvOp::ListVersions(n)
            | KvOp::Update(n, _)
            | KvOp::Delete(n)
            | KvOp::GetDeleted(n)
            | KvOp::Recover(n)
            | KvOp::Purge(n) => Some(n),
            _ => None,
        }
    }

    /// (needs write access, RBAC data action)
    fn action(&self) -> (bool, &'static str) {
        match self {
            KvOp::Set(_) => (true, "Microsoft.KeyVault/vaults/secrets/setSecret/action"),
            KvOp::GetLatest(_) | KvOp::GetVersion(..) => {
                (false, "Microsoft.KeyVault/vaults/secrets/getSecret/action")
            }
            KvOp::ListVersions(_) | KvOp::ListSecrets | KvOp::ListDeleted | KvOp::GetDeleted(_) => {
                (
                    false,
                    "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
                )
            }
            KvOp::Update(..) => (true, "Microsoft.KeyVault/vaults/secrets/update/action"),
            KvOp::Delete(_) => (true, "Microsoft.KeyVault/vaults/secrets/delete"),
            KvOp::Recover(_) => (true, "Microsoft.KeyVault/vaults/secrets/recover/action"),
            KvOp::Purge(_) => (true, "Microsoft.KeyVault/vaults/secrets/purge/action"),
            KvOp::Unsupported => (false, ""),
        }
    }
}

/// A Key Vault error body `{"error":{"code","message","innererror"?}}`.
pub(crate) fn kv_error(status: u16, code: &str, message: &str, inner: Option<&str>) -> Resp {
    let mut e = json!({"code": code, "message": message});
    if let Some(i) = inner {
        e["innererror"] = json!({"code": i});
    }
    json(status, &json!({ "error": e }))
}

fn challenge(vault: &Vault, message: &str) -> Resp {
    let r = kv_error(401, "Unauthorized", message, None);
    with_header(
        r,
        "www-authenticate",
        &format!(
            "Bearer authorization=\"https://login.microsoftonline.com/{}\", resource=\"{VAULT_AUD}\"",
            vault.tenant
        ),
    )
}

fn not_found(name: &str) -> Resp {
    kv_error(404, "SecretNotFound", &format!("A secret with (name/id) {name} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"), None)
}

fn bad(message: &str) -> Resp {
    kv_error(400, "BadParameter", message, None)
}

/// Authenticates and authorises a request; `Err` is the answer to send.
fn authorize(
    shared: &Shared,
    st: &State,
    vault: &Vault,
    req: &Req,
    op: &KvOp,
) -> Result<Claims, Resp> {
    let Some(token) = req.bearer() else {
        return Err(challenge(
            vault,
            "AKV10000: Request is missing a Bearer or PoP token.",
        ));
    };
    let claims = match jwt::verify(&st.key_bytes(), token, VAULT_AUD, shared.clock.unix()) {
        Ok(c) => c,
        Err(TokenError::WrongAudience(found)) => {
            return Err(challenge(vault, &format!("AKV10022: Invalid audience. Expected {VAULT_AUD}, found: {found}.")))
        }
        Err(TokenError::Expired) => return Err(challenge(vault, "AKV10013: Token expired. The token is past its expiration time.")),
        Err(TokenError::NotYetValid) => return Err(challenge(vault, "AKV10013: Token is not yet valid.")),
        Err(TokenError::BadSignature) | Err(TokenError::Malformed) => {
            return Err(challenge(vault, "AKV10000: Request is missing a Bearer or PoP token. The token is malformed or its signature is invalid."))
        }
    };
    if claims.tid != vault.tenant {
        return Err(challenge(
            vault,
            &format!(
                "AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{}/, found: {}.",
                vault.tenant, claims.iss
            ),
        ));
    }
    let (write, action) = op.action();
    if *op == KvOp::Unsupported {
        return Ok(claims);
    }
    let principals: Vec<&str> = match claims.idtyp.as_str() {
        "app" => vec![claims.appid.as_str()],
        _ => vec![claims.oid.as_str(), claims.upn.as_deref().unwrap_or("")],
    };
    let allowed = vault.access.iter().any(|a| {
        principals
            .iter()
            .any(|p| !p.is_empty() && a.client_id.eq_ignore_ascii_case(p))
            && match a.role.as_str() {
                "Key Vault Administrator" | "Key Vault Secrets Officer" => true,
                "Key Vault Secrets User" => !write,
                _ => false,
            }
    });
    if !allowed {
        let msg = format!(
            "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid={};oid={};iid={}\r\nAction: '{action}'\r\nResource: '/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/keyturn-emulator/providers/microsoft.keyvault/vaults/{}'\r\nAssignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: null \r\nVault: {};location=emulator\r\n",
            claims.appid, claims.oid, claims.tid, vault.name, vault.name
        );
        return Err(kv_error(403, "Forbidden", &msg, Some("ForbiddenByRbac")));
    }
    Ok(claims)
}

/// Handles one Key Vault request for `vault_name`.
pub(crate) fn handle(shared: &Shared, req: &Req, vault_name: &str, op: &KvOp) -> Resp {
    let mut st = lock(&shared.state);
    // Borrowed, not cloned: a clone of the vault per request made the emulator O(secrets).
    let Some(vault) = st.vaults.get(vault_name) else {
        return kv_error(404, "VaultNotFound", &format!("The vault '{vault_name}' does not exist in this emulator (seed it in the scenario)."), None);
    };
    if let Err(r) = authorize(shared, &st, vault, req, op) {
        return r;
    }
    if let Some(n) = op.name() {
        if !valid_secret_name(n) {
            return bad(&format!("The request URI contains an invalid name: {n}"));
        }
    }
    // Throttling per vault: sets and everything else count separately.
    let (limit, kind) = if matches!(op, KvOp::Set(_)) {
        (st.limits.kv_set_limit, "set")
    } else {
        (st.limits.kv_other_limit, "other")
    };
    let window = st.limits.kv_window_ms;
    if let Err(retry) = lock(&shared.throttle).hit(
        &format!("kv/{vault_name}/{kind}"),
        limit,
        window,
        shared.clock.unix_ms(),
    ) {
        let mut r = kv_error(
            429,
            "Throttled",
            "Request was not processed because too many requests were received. Reason: A1",
            None,
        );
        r.extensions_mut().insert(Throttled);
        return with_header(r, "retry-after", &retry.to_string());
    }
    let base = format!("https://{}", req.authority);
    let days = st.limits.soft_delete_retention_days;
    let now = shared.clock.unix();
    let Some(vault) = st.vaults.get_mut(vault_name) else {
        return not_found(vault_name);
    };
    let (resp, changed) = run(vault, req, op, &base, days, now);
    if changed {
        shared.persist(&st);
    }
    resp
}
