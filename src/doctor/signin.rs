//! The sign-in readiness check: Conditional Access's What-If
//! (`POST /v1.0/identity/conditionalAccess/evaluate`, permission
//! `Policy.Read.ConditionalAccess`) for the account signing in with its password (ROPC, client
//! app type `mobileAppsAndDesktopClients`) to the resources it uses (`signin_apps`, Microsoft
//! Graph by default: what keyturn's verify asks a token for), from `signin_ip` when set.
//!
//! Every enforced policy that applies and demands a grant control blocks a password sign-in
//! (it cannot do MFA, and has no device to be compliant or joined): named by display name
//! with its controls, `fail` when the account verifies, `warn` otherwise. A report-only policy
//! that would do the same, or a policy whose location condition cannot be judged without
//! `signin_ip`, is a `warn`. [`sign_in_readiness`] needs the account, its identity, a
//! Graph token, the HTTP client and the user's object id (from doctor's user read); the
//! daemon's readiness watch calls [`evaluate`] (the What-If for a user object id it already
//! read), whose [`Asked::NoAnswer`] it takes as unknown.

use super::{Asked, Check};
use crate::azure::Http;
use crate::config::{IdentityConfig, ResolvedAccount};
use azure_core::credentials::Secret;
use serde::Deserialize;
use serde_json::json;

/// The check's name in doctor's report.
pub(crate) const CHECK: &str = "sign_in_readiness";
/// What Conditional Access sees a password grant (ROPC) as: an OAuth 2.0 (modern
/// authentication) request from a non-browser client. *Believed* rather than confirmed by a
/// Microsoft page: ROPC is not one of the legacy protocols `exchangeActiveSync`/`other` name.
const CLIENT_APP_TYPE: &str = "mobileAppsAndDesktopClients";
/// The permission the What-If evaluation needs (least privileged).
const PERMISSION: &str = "Policy.Read.ConditionalAccess";

/// Names of the resources a management account commonly signs in to.
const KNOWN_APPS: [(&str, &str); 5] = [
    ("00000003-0000-0000-c000-000000000000", "Microsoft Graph"),
    ("00000002-0000-0ff1-ce00-000000000000", "Exchange Online"),
    ("00000003-0000-0ff1-ce00-000000000000", "SharePoint Online"),
    (
        "797f4846-ba00-4fd7-ba43-dac1f8f63013",
        "Azure Service Management",
    ),
    ("00000002-0000-0000-c000-000000000000", "Azure AD Graph"),
];

fn app_name(id: &str) -> String {
    KNOWN_APPS
        .iter()
        .find(|(a, _)| a.eq_ignore_ascii_case(id))
        .map(|(_, n)| (*n).to_string())
        .unwrap_or_else(|| id.to_string())
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    value: Vec<WhatIf>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WhatIf {
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    policy_applies: bool,
    #[serde(default)]
    analysis_reasons: Option<String>,
    #[serde(default)]
    grant_controls: Option<Grant>,
    #[serde(default)]
    conditions: Option<Conditions>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Grant {
    #[serde(default)]
    built_in_controls: Option<Vec<String>>,
    #[serde(default)]
    authentication_strength: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Conditions {
    #[serde(default)]
    applications: Option<Applications>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Applications {
    #[serde(default)]
    include_applications: Option<Vec<String>>,
    #[serde(default)]
    exclude_applications: Option<Vec<String>>,
}

impl WhatIf {
    /// The grant controls it demands, as words (`mfa`, `block`, an authentication strength).
    fn controls(&self) -> Vec<String> {
        let Some(g) = &self.grant_controls else {
            return Vec::new();
        };
        let mut out = g.built_in_controls.clone().unwrap_or_default();
        if g.authentication_strength
            .as_ref()
            .is_some_and(|s| !s.is_null())
        {
            out.push("authenticationStrength".into());
        }
        out
    }

    /// What the demand means for a password sign-in.
    fn effect(&self) -> String {
        let controls = self.controls();
        if controls.iter().any(|c| c == "block") {
            "blocks it (AADSTS53003)".into()
        } else if controls.iter().any(|c| c == "mfa") {
            "requires MFA (AADSTS50076)".into()
        } else {
            format!(
                "requires {}, which a password sign-in cannot satisfy",
                controls.join(", ")
            )
        }
    }

    /// Which of `apps` it covers, by name.
    fn covers(&self, apps: &[String]) -> Vec<String> {
        let a = self
            .conditions
            .as_ref()
            .and_then(|c| c.applications.as_ref());
        let include = a
            .and_then(|a| a.include_applications.clone())
            .unwrap_or_default();
        let exclude = a
            .and_then(|a| a.exclude_applications.clone())
            .unwrap_or_default();
        let has = |l: &[String], x: &str| l.iter().any(|y| y.eq_ignore_ascii_case(x));
        apps.iter()
            .filter(|app| (has(&include, "All") || has(&include, app)) && !has(&exclude, app))
            .map(|app| app_name(app))
            .collect()
    }

    fn describe(&self, apps: &[String]) -> String {
        let covered = self.covers(apps);
        let to = if covered.is_empty() || apps.len() == 1 {
            String::new()
        } else {
            format!(" to {}", covered.join(", "))
        };
        format!(
            "{:?} ({}) {}{to}",
            self.display_name,
            self.controls().join(", "),
            self.effect()
        )
    }
}

/// Conditional Access's verdict on the password sign-ins of the account, whose user object
/// id is `user_id` (as the `user_exists` check read it; see the module's doc).
pub(crate) async fn sign_in_readiness(
    a: &ResolvedAccount,
    id: &IdentityConfig,
    graph_token: &Secret,
    http: &Http,
    user_id: &str,
) -> Check {
    let base = super::identity::graph_base(id);
    evaluate(SignIn::of(a), &base, graph_token, http, user_id)
        .await
        .check()
}

/// What the What-If evaluation of an account needs from its configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SignIn<'a> {
    /// `signin_apps`.
    pub signin_apps: &'a [String],
    /// `signin_ip`.
    pub signin_ip: Option<std::net::IpAddr>,
    /// `verify`.
    pub verify: bool,
}

impl<'a> SignIn<'a> {
    /// The sign-in settings of `a`.
    pub(crate) fn of(a: &'a ResolvedAccount) -> Self {
        SignIn {
            signin_apps: &a.signin_apps,
            signin_ip: a.signin_ip,
            verify: a.verify,
        }
    }
}

/// The What-If evaluation for the user whose object id is `user_id`, against Graph at
/// `base`: [`Asked::NoAnswer`] when Graph did not answer (no answer, 429, 5xx, an unreadable
/// answer), which the readiness watch takes as unknown; doctor prints the check either way.
pub(crate) async fn evaluate(
    a: SignIn<'_>,
    base: &str,
    graph_token: &Secret,
    http: &Http,
    user_id: &str,
) -> Asked {
    let mut conditions = json!({ "clientAppType": CLIENT_APP_TYPE });
    if let Some(ip) = a.signin_ip {
        conditions["ipAddress"] = json!(ip.to_string());
    }
    let body = json!({
        "signInIdentity": {"@odata.type": "#microsoft.graph.userSignIn", "userId": user_id},
        "signInContext": {"@odata.type": "#microsoft.graph.applicationContext", "includeApplications": a.signin_apps},
        "signInConditions": conditions,
        "appliedPoliciesOnly": false,
    });
    let url = format!("{base}/v1.0/identity/conditionalAccess/evaluate");
    let resp = match http
        .client
        .post(url)
        .bearer_auth(graph_token.secret())
        .json(&body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            return Asked::NoAnswer(Check::warn(
                CHECK,
                format!(
                    "Graph did not answer the What-If evaluation: {}",
                    crate::azure::bounded(&crate::azure::error_chain(&e), None, 300)
                ),
                "check the network path to Graph, and run doctor again",
            ))
        }
    };
    let status = resp.status();
    if status == reqwest::StatusCode::FORBIDDEN {
        return Asked::Answered(Check::warn(
            CHECK,
            format!("Graph refused the Conditional Access What-If evaluation (403): the app lacks {PERMISSION}, so doctor cannot tell whether a policy blocks the password sign-in"),
            format!("add the Microsoft Graph application permission {PERMISSION} to the app and grant admin consent (deploy/azure/setup.sh does)"),
        ));
    }
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Asked::NoAnswer(Check::warn(
            CHECK,
            "Graph throttled the What-If evaluation (429: Conditional Access allows about one request a second per tenant)",
            "run doctor again in a minute",
        ));
    }
    if !status.is_success() {
        let c = Check::warn(
            CHECK,
            format!("Graph answered {status} to the What-If evaluation"),
            "run doctor again; if it persists, check Graph's service health",
        );
        return if status.is_server_error() {
            Asked::NoAnswer(c)
        } else {
            Asked::Answered(c)
        };
    }
    let answer: Answer = match resp.json().await {
        Ok(x) => x,
        Err(e) => {
            return Asked::NoAnswer(Check::warn(
                CHECK,
                format!("Graph's What-If answer cannot be read: {e}"),
                "check graph_base points at Microsoft Graph",
            ))
        }
    };
    Asked::Answered(verdict(a, &answer.value))
}

fn verdict(a: SignIn<'_>, results: &[WhatIf]) -> Check {
    let apps: Vec<String> = a.signin_apps.iter().map(|x| app_name(x)).collect();
    let from = a
        .signin_ip
        .map(|ip| format!(" from {ip}"))
        .unwrap_or_default();
    let sign_in = format!("a password sign-in to {}{from}", apps.join(", "));
    let demands = |r: &&WhatIf| r.policy_applies && !r.controls().is_empty();
    let enforced: Vec<&WhatIf> = results
        .iter()
        .filter(demands)
        .filter(|r| r.state == "enabled")
        .collect();
    let report_only: Vec<&WhatIf> = results
        .iter()
        .filter(demands)
        .filter(|r| r.state == "enabledForReportingButNotEnforced")
        .collect();
    let unjudged: Vec<&WhatIf> = results
        .iter()
        .filter(|r| {
            !r.policy_applies
                && r.state != "disabled"
                && !r.controls().is_empty()
                && r.analysis_reasons
                    .as_deref()
                    .is_some_and(|x| x.split(',').all(|p| p.trim() == "notEnoughInformation"))
        })
        .collect();
    let list = |rs: &[&WhatIf]| {
        rs.iter()
            .map(|r| r.describe(a.signin_apps))
            .collect::<Vec<_>>()
            .join("; ")
    };
    if !enforced.is_empty() {
        let detail = format!(
            "Conditional Access: {} for {sign_in}{}",
            list(&enforced),
            if a.verify {
                ": keyturn's verify fails after every rotation, and so does the consumer's sign-in"
            } else {
                ": the consumer's sign-in fails (keyturn does not verify this account)"
            }
        );
        let fix = "exclude the account from the policy (or its sign-in address, as a named location the policy excludes), or ask the policy's owner to; `keyturn doctor` says pass once it no longer applies";
        return if a.verify {
            Check::fail(CHECK, detail, fix)
        } else {
            Check::warn(CHECK, detail, fix)
        };
    }
    if !report_only.is_empty() {
        return Check::warn(
            CHECK,
            format!(
                "report-only Conditional Access: {} for {sign_in} once it is turned on",
                list(&report_only)
            ),
            "exclude the account from the policy before it is enforced",
        );
    }
    if !unjudged.is_empty() {
        return Check::warn(
            CHECK,
            format!(
                "Conditional Access cannot judge {}: its location condition needs the sign-in's address",
                list(&unjudged)
            ),
            "set signin_ip (in [defaults] or the account) to the public address Entra sees the sign-ins come from",
        );
    }
    Check::pass(
        CHECK,
        format!("no Conditional Access policy demands MFA or blocks {sign_in}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whatif(state: &str, applies: bool, reasons: &str, controls: &[&str]) -> WhatIf {
        WhatIf {
            display_name: "P".into(),
            state: state.into(),
            policy_applies: applies,
            analysis_reasons: Some(reasons.into()),
            grant_controls: Some(Grant {
                built_in_controls: Some(controls.iter().map(|s| s.to_string()).collect()),
                authentication_strength: None,
            }),
            conditions: None,
        }
    }

    fn account(verify: bool) -> ResolvedAccount {
        let mut a = crate::config::load_str(
            "[identities.i]\nkind = \"azure_cli\"\ntenant_id = \"contoso.onmicrosoft.com\"\n[[accounts]]\nname = \"a\"\nuser = \"a@contoso.onmicrosoft.com\"\nidentity = \"i\"\nvault = \"https://kv.vault.azure.net/\"\nsecret = \"a\"\n",
            std::path::Path::new("t.toml"),
        )
        .map(|l| l.accounts[0].clone())
        .expect("config");
        a.verify = verify;
        a
    }

    #[test]
    fn an_enforced_mfa_policy_fails_a_verifying_account_and_warns_otherwise() {
        let r = [whatif("enabled", true, "notSet", &["mfa"])];
        let c = verdict(SignIn::of(&account(true)), &r);
        assert_eq!(c.status, super::super::Status::Fail);
        assert!(
            c.detail.contains("\"P\" (mfa) requires MFA (AADSTS50076)"),
            "{}",
            c.detail
        );
        assert_eq!(
            verdict(SignIn::of(&account(false)), &r).status,
            super::super::Status::Warn
        );
    }

    #[test]
    fn report_only_and_unjudged_policies_warn_and_others_pass() {
        let a = account(true);
        let c = verdict(
            SignIn::of(&a),
            &[whatif(
                "enabledForReportingButNotEnforced",
                true,
                "notSet",
                &["block"],
            )],
        );
        assert_eq!(c.status, super::super::Status::Warn);
        assert!(c.detail.contains("report-only"), "{}", c.detail);
        let c = verdict(
            SignIn::of(&a),
            &[whatif("enabled", false, "notEnoughInformation", &["mfa"])],
        );
        assert_eq!(c.status, super::super::Status::Warn);
        assert!(c.fix.contains("signin_ip"), "{}", c.fix);
        let c = verdict(
            SignIn::of(&a),
            &[
                whatif("enabled", false, "users,notEnoughInformation", &["mfa"]),
                whatif("disabled", false, "policyNotEnabled", &["block"]),
            ],
        );
        assert_eq!(c.status, super::super::Status::Pass, "{}", c.detail);
    }
}
