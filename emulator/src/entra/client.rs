//! Authenticating the client of a token request: its client secret (current or expired), a
//! certificate's client assertion, or a federated credential's assertion (workload
//! identity); a public client may send none in the password grant.

use crate::aad::{aad, AadError};
use crate::http::field;
use crate::jwt;
use crate::state::{App, State};

fn bad_client_secret(client_id: &str) -> AadError {
    aad(
        401,
        "invalid_client",
        7000215,
        format!("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."),
    )
}

/// Checks a client assertion (workload identity or certificate); `Ok` when it proves `app`.
fn check_assertion(app: &App, assertion: &str, tenant: &str, now: i64) -> Result<(), AadError> {
    let claims = jwt::peek(assertion).ok_or_else(|| {
        aad(
            400,
            "invalid_request",
            50027,
            "JWT token is invalid or malformed.",
        )
    })?;
    let s = |k: &str| {
        claims
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let (iss, sub) = (s("iss"), s("sub"));
    let auds: Vec<String> = match claims.get("aud") {
        Some(serde_json::Value::String(a)) => vec![a.clone()],
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    let exp = claims.get("exp").and_then(|v| v.as_i64());
    let nbf = claims.get("nbf").and_then(|v| v.as_i64());
    if exp.is_none_or(|e| e <= now) || nbf.is_some_and(|n| n > now + 300) {
        return Err(aad(
            400,
            "invalid_client",
            700024,
            format!(
                "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}.",
                crate::http::rfc3339(now),
                nbf.map(crate::http::rfc3339).unwrap_or_default(),
                exp.map(crate::http::rfc3339).unwrap_or_default()
            ),
        ));
    }
    if iss.eq_ignore_ascii_case(&app.client_id) && sub.eq_ignore_ascii_case(&app.client_id) {
        // Certificate credential: aud must be the token endpoint of this tenant.
        let suffix = format!("/{}/oauth2/v2.0/token", tenant.to_ascii_lowercase());
        let ok = auds.iter().any(|a| {
            let a = a.to_ascii_lowercase();
            a.ends_with(&suffix) || a.ends_with(&format!("/{}/v2.0", tenant.to_ascii_lowercase()))
        });
        if !app.certificate_assertions {
            return Err(aad(
                401,
                "invalid_client",
                700027,
                "Client assertion failed signature validation.",
            ));
        }
        if !ok {
            return Err(aad(
                400,
                "invalid_client",
                700021,
                format!("Client assertion audience claim does not match Realm issuer. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials . Presented audience: {}", auds.join(",")),
            ));
        }
        return Ok(());
    }
    let by_issuer: Vec<_> = app
        .federated_credentials
        .iter()
        .filter(|f| f.issuer == iss)
        .collect();
    if by_issuer.is_empty() {
        return Err(aad(400, "invalid_client", 700211, format!("No matching federated identity record found for presented assertion issuer '{iss}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation")));
    }
    let by_subject: Vec<_> = by_issuer.into_iter().filter(|f| f.subject == sub).collect();
    if by_subject.is_empty() {
        return Err(aad(400, "invalid_client", 700213, format!("No matching federated identity record found for presented assertion subject '{sub}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation")));
    }
    if !by_subject
        .iter()
        .any(|f| auds.iter().any(|a| a == &f.audience))
    {
        return Err(aad(400, "invalid_client", 700212, format!("No matching federated identity record found for presented assertion audience '{}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation", auds.join(","))));
    }
    Ok(())
}

/// Authenticates the client of a token request. `need_credential` is false for public
/// clients in the password grant.
pub(super) fn authenticate_client<'a>(
    st: &'a State,
    tenant: &str,
    form: &[(String, String)],
    password_grant: bool,
    now: i64,
) -> Result<&'a App, AadError> {
    let client_id = field(form, "client_id").unwrap_or("");
    if client_id.is_empty() {
        return Err(aad(
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        ));
    }
    let tenant_name = st.tenant(tenant).map(|t| t.id.clone()).unwrap_or_default();
    let app = st.app(&tenant_name, client_id).ok_or_else(|| {
        aad(400, "unauthorized_client", 700016, format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."))
    })?;
    if let Some(assertion) = field(form, "client_assertion") {
        if field(form, "client_assertion_type")
            != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        {
            return Err(aad(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_assertion_type'.",
            ));
        }
        check_assertion(app, assertion, &tenant_name, now)?;
        return Ok(app);
    }
    match field(form, "client_secret") {
        Some(s) if app.secrets.iter().any(|x| x == s) => Ok(app),
        Some(s) if app.expired_secrets.iter().any(|x| x == s) => Err(aad(
            401,
            "invalid_client",
            7000222,
            format!("The provided client secret keys for app '{}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds.", app.client_id),
        )),
        Some(_) => Err(bad_client_secret(&app.client_id)),
        None if password_grant && app.public_client => Ok(app),
        None => Err(aad(401, "invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")),
    }
}
