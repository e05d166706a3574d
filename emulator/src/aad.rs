//! Entra's wire facts that several services share: the audiences of the tokens it issues
//! (checked by `graph` and `keyvault`), the issuer URLs (in `entra`'s tokens and `oidc`'s
//! discovery documents) and the shape of an AADSTS error answer (from both `entra` and `oidc`),
//! so that no service imports another.

use crate::http::{json, with_header, Req, Resp};
use crate::shared::Shared;
use serde_json::json;

/// Audience of Microsoft Graph tokens.
pub(crate) const GRAPH_AUD: &str = "https://graph.microsoft.com";
/// Audience of Key Vault tokens.
pub(crate) const VAULT_AUD: &str = "https://vault.azure.net";
/// Audience of Event Grid's data-plane tokens (scope `https://eventgrid.azure.net/.default`).
pub(crate) const EVENTGRID_AUD: &str = "https://eventgrid.azure.net";

/// `2024-01-01 12:00:00Z`, the format of Entra's error timestamps.
fn aad_timestamp(now: time::OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    now.format(&f).unwrap_or_default()
}

/// An Entra error answer, shaped like the real service's.
pub(crate) struct AadError {
    status: u16,
    error: &'static str,
    code: u32,
    message: String,
    /// `suberror` of the answer (e.g. `consent_required` with AADSTS65001), when Entra sends one.
    suberror: Option<&'static str>,
}

pub(crate) fn aad(
    status: u16,
    error: &'static str,
    code: u32,
    message: impl Into<String>,
) -> AadError {
    AadError {
        status,
        error,
        code,
        message: message.into(),
        suberror: None,
    }
}

impl AadError {
    /// The same error with a `suberror` field in its answer.
    pub(crate) fn with_suberror(mut self, suberror: &'static str) -> AadError {
        self.suberror = Some(suberror);
        self
    }
}

pub(crate) fn aad_response(shared: &Shared, req: &Req, e: AadError) -> Resp {
    let now = shared.clock.now();
    let ts = aad_timestamp(now);
    let trace = uuid::Uuid::new_v4().to_string();
    let corr = req
        .header("client-request-id")
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let desc = format!(
        "AADSTS{}: {} Trace ID: {trace} Correlation ID: {corr} Timestamp: {ts}",
        e.code, e.message
    );
    let mut body = json!({
        "error": e.error,
        "error_description": desc,
        "error_codes": [e.code],
        "timestamp": ts,
        "trace_id": trace,
        "correlation_id": corr,
        "error_uri": format!("https://login.microsoftonline.com/error?code={}", e.code),
    });
    if let Some(sub) = e.suberror {
        body["suberror"] = json!(sub);
    }
    let r = json(e.status, &body);
    let r = with_header(r, "x-ms-request-id", &trace);
    with_header(r, "cache-control", "no-store, no-cache")
}

/// `https://{host the client used}`.
pub(crate) fn base(req: &Req) -> String {
    format!("https://{}", req.authority)
}

/// Issuer of v2.0 id tokens and of the v2.0 OpenID configuration.
pub(crate) fn issuer_v2(req: &Req, tenant_id: &str) -> String {
    format!("{}/{tenant_id}/v2.0", base(req))
}

/// Issuer of the (v1) access tokens the emulator issues, as Entra's for Graph and Key Vault.
pub(crate) fn issuer_v1(tenant_id: &str) -> String {
    format!("https://sts.windows.net/{tenant_id}/")
}
