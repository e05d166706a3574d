//! The scenario: what the emulated Azure tenant contains at start (tenants, apps, managed
//! identities, users, vaults, limits, faults). Parsed from TOML (a file or the control API) or
//! JSON (the control API), validated before anything binds.

use crate::faults::FaultRule;
pub use crate::state::{AccessSpec, FederatedCredential, Limits, DEFAULT_IDENTITY_HEADER};
pub use crate::state::{
    ApplicationsCondition, Conditions, GrantControls, IpRange, LocationsCondition,
    NamedLocationSpec, PolicySpec, UsersCondition,
};
use crate::Error;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::Path;

mod seed;

/// Everything the emulator is seeded with. Every list may be empty.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Value the managed-identity endpoint expects in `x-identity-header` (what a client sets
    /// in `IDENTITY_HEADER`). Default [`DEFAULT_IDENTITY_HEADER`].
    #[serde(default)]
    pub msi_identity_header: Option<String>,
    /// Entra tenants.
    #[serde(default)]
    pub tenants: Vec<TenantSpec>,
    /// App registrations (service principals) that can get tokens.
    #[serde(default)]
    pub apps: Vec<AppSpec>,
    /// Managed identities served by the App Service-shaped endpoint `/msi/token`.
    #[serde(default)]
    pub managed_identities: Vec<ManagedIdentitySpec>,
    /// Directory users (the managed accounts).
    #[serde(default)]
    pub users: Vec<UserSpec>,
    /// Key Vaults.
    #[serde(default)]
    pub vaults: Vec<VaultSpec>,
    /// Delegated permission grants on Microsoft Graph (consent), which the password grant
    /// needs for the scopes it asks.
    #[serde(default)]
    pub oauth2_permission_grants: Vec<PermissionGrantSpec>,
    /// Conditional Access named locations (`ipNamedLocation`), which policies name by id.
    #[serde(default)]
    pub named_locations: Vec<NamedLocationSeed>,
    /// Conditional Access policies, which Graph's What-If and the password grant evaluate.
    #[serde(default)]
    pub conditional_access_policies: Vec<PolicySeed>,
    /// Throttling, lock-out and token limits; absent fields keep their defaults.
    #[serde(default)]
    pub limits: Option<Limits>,
    /// Fault rules active from the start.
    #[serde(default)]
    pub faults: Vec<FaultRule>,
}

/// An Entra tenant.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSpec {
    /// Tenant id as used in token URLs (`/{id}/oauth2/v2.0/token`) and the `tid` claim; a GUID in
    /// real life, any `[A-Za-z0-9.-]` string here.
    pub id: String,
    /// Primary domain (e.g. `contoso.onmicrosoft.com`), also accepted in token URLs.
    #[serde(default)]
    pub domain: Option<String>,
}

/// An app registration with its service principal.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// Tenant id the app lives in.
    pub tenant: String,
    /// Application (client) id.
    pub client_id: String,
    /// Display name (informational).
    #[serde(default)]
    pub name: Option<String>,
    /// Service principal object id (`oid` claim); a random UUID when absent.
    #[serde(default)]
    pub object_id: Option<String>,
    /// Valid client secrets.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Client secrets that exist but have expired (answered with AADSTS7000222).
    #[serde(default)]
    pub expired_secrets: Vec<String>,
    /// Federated credentials (workload identity).
    #[serde(default)]
    pub federated_credentials: Vec<FederatedCredential>,
    /// Accept certificate client assertions (`iss` = `sub` = client id); the signature is not
    /// checked. Default true.
    #[serde(default = "yes")]
    pub certificate_assertions: bool,
    /// Public client: the password grant needs no client secret.
    #[serde(default)]
    pub public_client: bool,
    /// Microsoft Graph application permissions granted (the `roles` claim of Graph tokens),
    /// e.g. `User-PasswordProfile.ReadWrite.All`, `User.Read.All`.
    #[serde(default)]
    pub graph_permissions: Vec<String>,
    /// Directory roles assigned to the service principal, e.g. `User Administrator`,
    /// `Privileged Authentication Administrator`.
    #[serde(default)]
    pub directory_roles: Vec<String>,
}

fn yes() -> bool {
    true
}

/// A managed identity; its tokens are issued as the linked app (same client id, permissions
/// and directory roles).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagedIdentitySpec {
    /// Client id a caller may pass as `client_id` (user-assigned identity).
    pub client_id: String,
    /// Client id of the app (in `apps`) whose identity the tokens carry.
    pub app: String,
    /// Answer requests that name no identity (system-assigned). At most one may say true.
    #[serde(default)]
    pub system_assigned: bool,
}

/// A directory user.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    /// Tenant id.
    pub tenant: String,
    /// userPrincipalName, e.g. `svc-coreview-1@contoso.onmicrosoft.com`.
    pub upn: String,
    /// Object id; a random UUID when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Initial password; a random compliant one when absent (read it nowhere: seed a vault
    /// secret with `from_user` instead).
    #[serde(default)]
    pub password: Option<String>,
    /// Directory roles held; any role makes the account privileged for password resets.
    #[serde(default)]
    pub directory_roles: Vec<String>,
    /// `accountEnabled = false`: the password grant answers AADSTS50057.
    #[serde(default)]
    pub disabled: bool,
    /// MFA required: AADSTS50076 (`interaction_required`).
    #[serde(default)]
    pub mfa_required: bool,
    /// MFA registration required: AADSTS50079.
    #[serde(default)]
    pub mfa_registration_required: bool,
    /// Blocked by Conditional Access: AADSTS53003.
    #[serde(default)]
    pub ca_blocked: bool,
    /// Blocked by security defaults: AADSTS530035.
    #[serde(default)]
    pub security_defaults_blocked: bool,
    /// Password expired: AADSTS50055.
    #[serde(default)]
    pub password_expired: bool,
    /// `passwordProfile.forceChangePasswordNextSignIn`; while true the password grant answers
    /// AADSTS50055 too.
    #[serde(default)]
    pub force_change_password_next_sign_in: bool,
    /// Synced from on-premises Active Directory: Graph's `onPremisesSyncEnabled` is true
    /// (null, as for a cloud-only user, when false).
    #[serde(default)]
    pub on_premises_sync_enabled: bool,
}

/// A delegated permission grant on Microsoft Graph (Graph's `oAuth2PermissionGrant`): the
/// app may sign users in (the password grant) asking these scopes without AADSTS65001.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionGrantSpec {
    /// Client id of the app (in `apps`) the grant is for; the grant itself names the app's
    /// service principal object id, as Graph's does.
    pub app: String,
    /// `AllPrincipals` (tenant-wide admin consent, the default) or `Principal` (one user).
    #[serde(default = "all_principals")]
    pub consent_type: String,
    /// `Principal`: the user (UPN or object id) the consent is for.
    #[serde(default)]
    pub principal: Option<String>,
    /// Space-separated delegated permissions, e.g. `openid User.Read`.
    pub scope: String,
}

fn all_principals() -> String {
    "AllPrincipals".to_string()
}

/// A Conditional Access policy at start: Graph's `conditionalAccessPolicy` body
/// (`displayName`, `state`, `conditions`, `grantControls`, in Graph's camelCase) plus the
/// tenant it belongs to and, optionally, its id.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolicySeed {
    /// Tenant id.
    pub tenant: String,
    /// Policy id; a random UUID when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// The policy.
    #[serde(flatten)]
    pub policy: PolicySpec,
}

/// A named location at start: Graph's `ipNamedLocation` body (`displayName`, `ipRanges` of
/// `{ cidrAddress }`, `isTrusted`) plus its tenant and id (which policies' `locations` name).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NamedLocationSeed {
    /// Tenant id.
    pub tenant: String,
    /// Named location id, as policies name it.
    pub id: String,
    /// The location.
    #[serde(flatten)]
    pub location: NamedLocationSpec,
}

/// A change of a user's sign-in state (control API `PATCH /_emulator/users/{tenant}/{user}`);
/// an absent flag is left as it is. Same meanings as the flags of [`UserSpec`].
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UserFlags {
    /// `accountEnabled = false`: AADSTS50057.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// MFA required: AADSTS50076 (`interaction_required`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_required: Option<bool>,
    /// MFA registration required: AADSTS50079.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_registration_required: Option<bool>,
    /// Blocked by Conditional Access: AADSTS53003.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_blocked: Option<bool>,
    /// Blocked by security defaults: AADSTS530035.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_defaults_blocked: Option<bool>,
    /// Password expired: AADSTS50055.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_expired: Option<bool>,
    /// `passwordProfile.forceChangePasswordNextSignIn`; while true the password grant answers
    /// AADSTS50055 too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_change_password_next_sign_in: Option<bool>,
}

/// A Key Vault.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultSpec {
    /// Vault name (3-24 characters `[a-z0-9-]`); served as `https://{name}.vault.azure.net:{port}/`.
    pub name: String,
    /// Tenant whose tokens the vault accepts.
    pub tenant: String,
    /// Role assignments (Azure RBAC) on the vault.
    #[serde(default)]
    pub access: Vec<AccessSpec>,
    /// Secrets present at start.
    #[serde(default)]
    pub secrets: Vec<SeedSecret>,
}

/// Roles a vault access entry may name.
pub const VAULT_ROLES: [&str; 3] = [
    "Key Vault Secrets Officer",
    "Key Vault Secrets User",
    "Key Vault Administrator",
];

/// A secret present at start, with one version.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedSecret {
    /// Secret name.
    pub name: String,
    /// `tenant/upn`: the version's value is that user's initial password, so the rotation
    /// invariant holds from the start.
    #[serde(default)]
    pub from_user: Option<String>,
    /// A literal value (when `from_user` is absent).
    #[serde(default)]
    pub value: Option<String>,
    /// contentType of the version.
    #[serde(default)]
    pub content_type: Option<String>,
}

impl Scenario {
    /// Parses and validates a TOML scenario.
    pub fn from_toml_str(s: &str) -> Result<Self, Error> {
        let sc: Scenario = toml::from_str(s).map_err(|e| Error::Scenario(e.to_string()))?;
        sc.validate()?;
        Ok(sc)
    }

    /// Parses and validates a JSON scenario (same shape as the TOML one).
    pub fn from_json_str(s: &str) -> Result<Self, Error> {
        let sc: Scenario = serde_json::from_str(s).map_err(|e| Error::Scenario(e.to_string()))?;
        sc.validate()?;
        Ok(sc)
    }

    /// Reads, parses and validates a TOML scenario file.
    pub fn from_file(p: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(p).map_err(|source| Error::Io {
            path: p.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text).map_err(|e| match e {
            Error::Scenario(m) => Error::Scenario(format!("{}: {m}", p.display())),
            other => other,
        })
    }

    /// Checks the references inside the scenario; reports every problem at once, each with
    /// the key it concerns. References to tenants, apps and users seeded earlier are checked
    /// again when the scenario is applied.
    pub fn validate(&self) -> Result<(), Error> {
        let mut problems = Vec::new();
        let tenants: BTreeSet<&str> = self.tenants.iter().map(|t| t.id.as_str()).collect();
        for t in &self.tenants {
            if t.id.is_empty()
                || !t
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                problems.push(format!(
                    "tenants.id {:?}: use letters, digits, '-' and '.'",
                    t.id
                ));
            }
        }
        let known_tenant = |t: &str| tenants.is_empty() || tenants.contains(t);
        let mut app_ids = BTreeSet::new();
        for a in &self.apps {
            if !known_tenant(&a.tenant) {
                problems.push(format!(
                    "apps[{}].tenant {:?} is not in tenants",
                    a.client_id, a.tenant
                ));
            }
            if !app_ids.insert(a.client_id.as_str()) {
                problems.push(format!("apps.client_id {:?} appears twice", a.client_id));
            }
            check_roles(&mut problems, "apps", &a.client_id, &a.directory_roles);
        }
        let mut system = 0;
        for m in &self.managed_identities {
            if !self.apps.is_empty() && !app_ids.contains(m.app.as_str()) {
                problems.push(format!(
                    "managed_identities[{}].app {:?} is not in apps",
                    m.client_id, m.app
                ));
            }
            if m.system_assigned {
                system += 1;
            }
        }
        if system > 1 {
            problems.push("managed_identities: at most one may be system_assigned".to_string());
        }
        let mut upns = BTreeSet::new();
        for u in &self.users {
            if !known_tenant(&u.tenant) {
                problems.push(format!(
                    "users[{}].tenant {:?} is not in tenants",
                    u.upn, u.tenant
                ));
            }
            if !upns.insert((u.tenant.as_str(), u.upn.to_ascii_lowercase())) {
                problems.push(format!(
                    "users.upn {:?} appears twice in tenant {:?}",
                    u.upn, u.tenant
                ));
            }
            check_roles(&mut problems, "users", &u.upn, &u.directory_roles);
            if let Some(p) = &u.password {
                if let Err(e) = crate::rules::check_password_rules(p) {
                    problems.push(format!("users[{}].password: {e}", u.upn));
                }
            }
        }
        for v in &self.vaults {
            if !crate::rules::valid_vault_name(&v.name) {
                problems.push(format!(
                    "vaults.name {:?}: 3-24 characters, letters, digits and '-'",
                    v.name
                ));
            }
            if !known_tenant(&v.tenant) {
                problems.push(format!(
                    "vaults[{}].tenant {:?} is not in tenants",
                    v.name, v.tenant
                ));
            }
            for a in &v.access {
                if !VAULT_ROLES.contains(&a.role.as_str()) {
                    problems.push(format!(
                        "vaults[{}].access[{}].role {:?}: one of {:?}",
                        v.name, a.client_id, a.role, VAULT_ROLES
                    ));
                }
            }
            for s in &v.secrets {
                if !crate::rules::valid_secret_name(&s.name) {
                    problems.push(format!(
                        "vaults[{}].secrets.name {:?}: 1-127 of [0-9a-zA-Z-]",
                        v.name, s.name
                    ));
                }
                match (&s.from_user, &s.value) {
                    (Some(_), Some(_)) | (None, None) => problems.push(format!(
                        "vaults[{}].secrets[{}]: give exactly one of from_user and value",
                        v.name, s.name
                    )),
                    (Some(fu), None) => {
                        let ok = fu.split_once('/').is_some_and(|(t, upn)| {
                            self.users.is_empty() || upns.contains(&(t, upn.to_ascii_lowercase()))
                        });
                        if !ok {
                            problems.push(format!(
                                "vaults[{}].secrets[{}].from_user {:?}: expected \"tenant/upn\" of a user in users",
                                v.name, s.name, fu
                            ));
                        }
                    }
                    (None, Some(_)) => {}
                }
            }
        }
        for g in &self.oauth2_permission_grants {
            let key = format!("oauth2_permission_grants[{}]", g.app);
            if !self.apps.is_empty() && !app_ids.contains(g.app.as_str()) {
                problems.push(format!("{key}.app {:?} is not in apps", g.app));
            }
            match (g.consent_type.as_str(), &g.principal) {
                ("AllPrincipals", None) | ("Principal", Some(_)) => {}
                ("AllPrincipals", Some(_)) => problems.push(format!(
                    "{key}.principal: only a consent_type = \"Principal\" grant names a principal"
                )),
                ("Principal", None) => problems.push(format!(
                    "{key}.principal: a consent_type = \"Principal\" grant needs the user's UPN or object id"
                )),
                (other, _) => problems.push(format!(
                    "{key}.consent_type {other:?}: one of {:?}",
                    crate::state::CONSENT_TYPES
                )),
            }
            if g.scope.trim().is_empty() {
                problems.push(format!(
                    "{key}.scope: name at least one delegated permission, e.g. \"openid User.Read\""
                ));
            }
        }
        let mut location_ids = BTreeSet::new();
        for n in &self.named_locations {
            let key = format!("named_locations[{}]", n.id);
            if !known_tenant(&n.tenant) {
                problems.push(format!("{key}.tenant {:?} is not in tenants", n.tenant));
            }
            if !location_ids.insert(n.id.as_str()) {
                problems.push(format!("named_locations.id {:?} appears twice", n.id));
            }
            problems.extend(
                n.location
                    .problems()
                    .into_iter()
                    .map(|p| format!("{key}: {p}")),
            );
        }
        for (i, p) in self.conditional_access_policies.iter().enumerate() {
            let key = format!("conditional_access_policies[{i}]");
            if !known_tenant(&p.tenant) {
                problems.push(format!("{key}.tenant {:?} is not in tenants", p.tenant));
            }
            problems.extend(
                p.policy
                    .problems()
                    .into_iter()
                    .map(|e| format!("{key}: {e}")),
            );
            if let Some(l) = &p.policy.conditions.locations {
                for id in l.include_locations.iter().chain(&l.exclude_locations) {
                    if id != "All" && id != "AllTrusted" && !location_ids.contains(id.as_str()) {
                        problems.push(format!(
                            "{key}.conditions.locations: {id:?} is not a named_locations id (or \"All\", \"AllTrusted\")"
                        ));
                    }
                }
            }
        }
        for (i, f) in self.faults.iter().enumerate() {
            if let Err(e) = f.validate() {
                problems.push(format!("faults[{i}]: {e}"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Scenario(problems.join("; ")))
        }
    }
}

/// Each directory role must be a built-in role the emulator knows, by name or template id
/// (tokens carry template ids in `wids`, so an unknown name could not be emitted).
fn check_roles(problems: &mut Vec<String>, what: &str, key: &str, roles: &[String]) {
    for r in roles {
        if crate::roles::template_id(r).is_none() {
            let known: Vec<&str> = crate::roles::BUILT_IN.iter().map(|(n, _)| *n).collect();
            problems.push(format!(
                "{what}[{key}].directory_roles: unknown role {r:?}; use one of {} (or its template id)",
                known.join(", ")
            ));
        }
    }
}
