//! Key Vault secrets (data plane): challenge, RBAC, throttling, and the secret operations.

use crate::aad::VAULT_AUD;
use crate::http::{empty, json, with_header, Req, Resp, Throttled};
use crate::jwt::{self, Claims, TokenError};
use crate::rules::valid_secret_name;
use crate::shared::{lock, Shared};
use crate::state::{DeletedSecret, Secret, SecretVersion, State, Vault};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hyper::Method;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Largest secret value accepted (25 KB).
pub(crate) const MAX_VALUE_BYTES: usize = 25 * 1024;

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

fn attributes(v: &SecretVersion, retention_days: u32) -> Value {
    let mut a = json!({
        "enabled": v.enabled,
        "created": v.created,
        "updated": v.updated,
        "recoveryLevel": "Recoverable+Purgeable",
        "recoverableDays": retention_days,
    });
    if let Some(n) = v.nbf {
        a["nbf"] = json!(n);
    }
    if let Some(e) = v.exp {
        a["exp"] = json!(e);
    }
    a
}

fn bundle(base: &str, name: &str, v: &SecretVersion, with_value: bool, days: u32) -> Value {
    let mut b = json!({
        "id": format!("{base}/secrets/{name}/{}", v.version),
        "attributes": attributes(v, days),
    });
    if with_value {
        b["value"] = json!(v.value);
    }
    if let Some(ct) = &v.content_type {
        b["contentType"] = json!(ct);
    }
    if !v.tags.is_empty() {
        b["tags"] = json!(v.tags);
    }
    b
}

fn deleted_bundle(base: &str, name: &str, d: &DeletedSecret, days: u32) -> Value {
    let mut b = d
        .secret
        .versions
        .last()
        .map(|v| bundle(base, name, v, false, days))
        .unwrap_or_else(|| json!({}));
    b["recoveryId"] = json!(format!("{base}/deletedsecrets/{name}"));
    b["deletedDate"] = json!(d.deleted_date);
    b["scheduledPurgeDate"] = json!(d.scheduled_purge_date);
    b
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

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct AttributesIn {
    enabled: Option<bool>,
    nbf: Option<i64>,
    exp: Option<i64>,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct SecretIn {
    value: Option<String>,
    content_type: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    attributes: Option<AttributesIn>,
}

fn parse_body(req: &Req) -> Result<SecretIn, Resp> {
    if req.body.is_empty() {
        return Ok(SecretIn::default());
    }
    let b: SecretIn = serde_json::from_slice(&req.body).map_err(|e| {
        bad(&format!(
            "The request body is not valid JSON for this operation: {e}"
        ))
    })?;
    if let Some(ct) = &b.content_type {
        if ct.len() > 255 {
            return Err(bad(
                "The content type exceeds the maximum length of 255 characters.",
            ));
        }
    }
    if let Some(tags) = &b.tags {
        if tags.len() > 15 {
            return Err(bad("The number of tags exceeds the maximum of 15."));
        }
        if tags.iter().any(|(k, v)| k.len() > 512 || v.len() > 512) {
            return Err(bad(
                "A tag name or value exceeds the maximum length of 512 characters.",
            ));
        }
    }
    Ok(b)
}

fn page_params(req: &Req) -> Result<(usize, usize), Resp> {
    let max = match req.query("maxresults") {
        None | Some("") => 25,
        Some(m) => match m.parse::<usize>() {
            Ok(n) if (1..=25).contains(&n) => n,
            _ => {
                return Err(bad(&format!(
                    "Invalid value for maxresults: {m}. It must be an integer between 1 and 25."
                )))
            }
        },
    };
    let skip = match req.query("$skiptoken") {
        None | Some("") => 0,
        Some(t) => URL_SAFE_NO_PAD
            .decode(t)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.strip_prefix("offset:").and_then(|n| n.parse().ok()))
            .ok_or_else(|| bad("The $skiptoken is invalid."))?,
    };
    Ok((max, skip))
}

fn page(req: &Req, base: &str, path: &str, items: Vec<Value>) -> Resp {
    let (max, skip) = match page_params(req) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let total = items.len();
    let value: Vec<Value> = items.into_iter().skip(skip).take(max).collect();
    let next = if skip + max < total {
        let tok = URL_SAFE_NO_PAD.encode(format!("offset:{}", skip + max));
        let api = req.query("api-version").unwrap_or("7.5");
        Value::String(format!(
            "{base}{path}?api-version={api}&$skiptoken={tok}&maxresults={max}"
        ))
    } else {
        Value::Null
    };
    json(200, &json!({"value": value, "nextLink": next}))
}

fn get_version<'a>(secret: &'a Secret, version: Option<&str>) -> Option<&'a SecretVersion> {
    match version {
        None | Some("") => secret.versions.last(),
        Some(v) => secret
            .versions
            .iter()
            .find(|x| x.version.eq_ignore_ascii_case(v)),
    }
}

/// Runs an authorised operation; returns the answer and whether the vault changed.
fn run(vault: &mut Vault, req: &Req, op: &KvOp, base: &str, days: u32, now: i64) -> (Resp, bool) {
    match op {
        KvOp::Set(name) => {
            let body = match parse_body(req) {
                Ok(b) => b,
                Err(r) => return (r, false),
            };
            let Some(value) = body.value else {
                return (bad("Property 'value' is required."), false);
            };
            if value.len() > MAX_VALUE_BYTES {
                return (
                    bad("The secret value exceeds the maximum size of 25 KB."),
                    false,
                );
            }
            if vault.deleted.contains_key(name) {
                return (kv_error(409, "Conflict", &format!("Secret {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged."), Some("ObjectIsDeletedButRecoverable")), false);
            }
            let attrs = body.attributes.unwrap_or_default();
            let v = SecretVersion {
                version: crate::state::new_version_id(),
                value,
                content_type: body.content_type,
                tags: body.tags.unwrap_or_default(),
                enabled: attrs.enabled.unwrap_or(true),
                nbf: attrs.nbf,
                exp: attrs.exp,
                created: now,
                updated: now,
            };
            let b = bundle(base, name, &v, true, days);
            vault
                .secrets
                .entry(name.clone())
                .or_default()
                .versions
                .push(v);
            (json(200, &b), true)
        }
        KvOp::GetLatest(name) | KvOp::GetVersion(name, _) => {
            let ver = match op {
                KvOp::GetVersion(_, v) => Some(v.as_str()),
                _ => None,
            };
            let Some(v) = vault.secrets.get(name).and_then(|s| get_version(s, ver)) else {
                let id = ver
                    .map(|v| format!("{name}/{v}"))
                    .unwrap_or_else(|| name.clone());
                return (not_found(&id), false);
            };
            if !v.enabled {
                return (
                    kv_error(
                        403,
                        "Forbidden",
                        "Operation get is not allowed on a disabled secret.",
                        Some("SecretDisabled"),
                    ),
                    false,
                );
            }
            (json(200, &bundle(base, name, v, true, days)), false)
        }
        KvOp::ListVersions(name) => {
            let items = vault
                .secrets
                .get(name)
                .map(|s| {
                    s.versions
                        .iter()
                        .map(|v| bundle(base, name, v, false, days))
                        .collect()
                })
                .unwrap_or_default();
            (
                page(req, base, &format!("/secrets/{name}/versions"), items),
                false,
            )
        }
        KvOp::ListSecrets => {
            let items = vault
                .secrets
                .iter()
                .filter_map(|(n, s)| {
                    s.versions.last().map(|v| {
                        let mut b = bundle(base, n, v, false, days);
                        b["id"] = json!(format!("{base}/secrets/{n}"));
                        b
                    })
                })
                .collect();
            (page(req, base, "/secrets", items), false)
        }
        KvOp::Update(name, ver) => {
            let body = match parse_body(req) {
                Ok(b) => b,
                Err(r) => return (r, false),
            };
            let Some(v) = vault
                .secrets
                .get_mut(name)
                .and_then(|s| match ver.as_deref() {
                    None | Some("") => s.versions.last_mut(),
                    Some(x) => s
                        .versions
                        .iter_mut()
                        .find(|y| y.version.eq_ignore_ascii_case(x)),
                })
            else {
                let id = ver
                    .as_ref()
                    .map(|v| format!("{name}/{v}"))
                    .unwrap_or_else(|| name.clone());
                return (not_found(&id), false);
            };
            if let Some(ct) = body.content_type {
                v.content_type = Some(ct);
            }
            if let Some(t) = body.tags {
                v.tags = t;
            }
            if let Some(a) = body.attributes {
                if let Some(e) = a.enabled {
                    v.enabled = e;
                }
                if a.nbf.is_some() {
                    v.nbf = a.nbf;
                }
                if a.exp.is_some() {
                    v.exp = a.exp;
                }
            }
            v.updated = now;
            (json(200, &bundle(base, name, v, false, days)), true)
        }
        KvOp::Delete(name) => {
            let Some(secret) = vault.secrets.remove(name) else {
                return (not_found(name), false);
            };
            let d = DeletedSecret {
                secret,
                deleted_date: now,
                scheduled_purge_date: now + i64::from(days) * 86_400,
            };
            let b = deleted_bundle(base, name, &d, days);
            vault.deleted.insert(name.clone(), d);
            (json(200, &b), true)
        }
        KvOp::GetDeleted(name) => match vault.deleted.get(name) {
            Some(d) => (json(200, &deleted_bundle(base, name, d, days)), false),
            None => (
                kv_error(
                    404,
                    "SecretNotFound",
                    &format!("Deleted Secret not found: {name}"),
                    None,
                ),
                false,
            ),
        },
        KvOp::ListDeleted => {
            let items = vault
                .deleted
                .iter()
                .map(|(n, d)| {
                    let mut b = deleted_bundle(base, n, d, days);
                    b["id"] = json!(format!("{base}/secrets/{n}"));
                    b
                })
                .collect();
            (page(req, base, "/deletedsecrets", items), false)
        }
        KvOp::Recover(name) => {
            let Some(d) = vault.deleted.remove(name) else {
                return (
                    kv_error(
                        404,
                        "SecretNotFound",
                        &format!("Deleted Secret not found: {name}"),
                        None,
                    ),
                    false,
                );
            };
            let b = d
                .secret
                .versions
                .last()
                .map(|v| bundle(base, name, v, false, days))
                .unwrap_or_else(|| json!({}));
            vault.secrets.insert(name.clone(), d.secret);
            (json(200, &b), true)
        }
        KvOp::Purge(name) => {
            if vault.deleted.remove(name).is_none() {
                return (
                    kv_error(
                        404,
                        "SecretNotFound",
                        &format!("Deleted Secret not found: {name}"),
                        None,
                    ),
                    false,
                );
            }
            (empty(204), true)
        }
        KvOp::Unsupported => (
            kv_error(
                400,
                "BadParameter",
                &format!(
                    "The operation {} {} is not supported by the emulator.",
                    req.method, req.path
                ),
                None,
            ),
            false,
        ),
    }
}
