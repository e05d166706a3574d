//! The secret operations on an authorised request: set, get, list, update, delete,
//! recover, purge; request bodies, paging, and the bundles Key Vault answers with.

use super::{bad, kv_error, not_found, KvOp};
use crate::http::{empty, json, Req, Resp};
use crate::state::{DeletedSecret, Secret, SecretVersion, Vault};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Largest secret value accepted (25 KB).
const MAX_VALUE_BYTES: usize = 25 * 1024;

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
    page_with(req, base, path, items, |v| v)
}

/// [`page`] of `items`, rendering only those on the page with `render`.
fn page_with<T>(
    req: &Req,
    base: &str,
    path: &str,
    items: Vec<T>,
    render: impl Fn(T) -> Value,
) -> Resp {
    let (max, skip) = match page_params(req) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let total = items.len();
    let value: Vec<Value> = items.into_iter().skip(skip).take(max).map(render).collect();
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
pub(super) fn run(
    vault: &mut Vault,
    req: &Req,
    op: &KvOp,
    base: &str,
    days: u32,
    now: i64,
) -> (Resp, bool) {
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
        // "Get Secrets": every secret's latest version as a `SecretItem` (the secret's id
        // without a version, attributes, tags, contentType; no value), paged by 25 (the
        // default and maximum `maxresults`) through an absolute `nextLink` that carries the
        // api-version and a `$skiptoken` (Microsoft's REST reference, its example answer).
        KvOp::ListSecrets => {
            // Only the page's items are rendered: rendering every secret for each page made
            // listing a vault of S secrets cost S²/25 renderings under the state lock.
            let items: Vec<_> = vault
                .secrets
                .iter()
                .filter_map(|(n, s)| s.versions.last().map(|v| (n, v)))
                .collect();
            let resp = page_with(req, base, "/secrets", items, |(n, v)| {
                let mut b = bundle(base, n, v, false, days);
                b["id"] = json!(format!("{base}/secrets/{n}"));
                b
            });
            (resp, false)
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
