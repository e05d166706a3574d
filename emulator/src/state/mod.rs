//! The emulated directory and vaults, and their persistence. The bottom layer: it imports no
//! scenario or service module. The plain data types a scenario seeds and the state keeps
//! ([`FederatedCredential`], [`AccessSpec`], [`Limits`]) live here and are re-exported by
//! `scenario`, whose file format they are part of; `scenario` merges a scenario into a state
//! with the `put_*` operations below.
//!
//! This file holds the state's types, its lookup tables and the `put_*` operations;
//! `grants` the delegated permission grants (consent); `ca` the Conditional Access policies,
//! named locations and the evaluation of a sign-in against them; `file` loading and saving the state
//! file.

mod ca;
mod file;
mod grants;

pub use ca::{
    ApplicationsCondition, Conditions, GrantControls, IpRange, LocationsCondition,
    NamedLocationSpec, PolicySpec, UsersCondition, CLIENT_APP_TYPES,
};
pub(crate) use ca::{ConditionalAccess, NamedLocation, Policy, SignIn};
pub(crate) use grants::{PermissionGrant, CONSENT_TYPES, GRAPH_APP_ID};

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Default value of the `x-identity-header` the managed-identity endpoint expects.
pub const DEFAULT_IDENTITY_HEADER: &str = "keyturn-emulator-identity-header";

/// A federated identity credential on an app.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FederatedCredential {
    /// Expected `iss` of the presented assertion.
    pub issuer: String,
    /// Expected `sub` of the presented assertion.
    pub subject: String,
    /// Expected `aud`; default `api://AzureADTokenExchange`.
    #[serde(default = "default_fic_audience")]
    pub audience: String,
}

fn default_fic_audience() -> String {
    "api://AzureADTokenExchange".to_string()
}

/// One role assignment on a vault.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AccessSpec {
    /// Client id of an app (or managed identity's app); a user's object id or UPN for user tokens.
    pub client_id: String,
    /// `Key Vault Secrets Officer` (read and write), `Key Vault Secrets User` (read) or
    /// `Key Vault Administrator` (everything).
    pub role: String,
}

/// Limits. Durations are configurable so tests can use small ones.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Key Vault throttling window in milliseconds (published: 10 s).
    pub kv_window_ms: u64,
    /// Secret sets (CREATE) per vault per window (published: 300).
    pub kv_set_limit: u32,
    /// All other secret operations per vault per window (published: 4,000).
    pub kv_other_limit: u32,
    /// Graph write throttling window per app and tenant in milliseconds (published: 150 s).
    pub graph_write_window_ms: u64,
    /// Graph writes per app and tenant per window (published: 3,000).
    pub graph_write_limit: u32,
    /// Failed password-grant attempts before the account locks (Entra smart lock-out: 10).
    pub lockout_threshold: u32,
    /// Lock-out duration in milliseconds (Entra: 1 minute at first).
    pub lockout_ms: u64,
    /// Lifetime of issued access tokens in seconds (`expires_in`; Entra answers 3599 or more).
    pub token_lifetime_s: u64,
    /// Days a soft-deleted secret is kept (`scheduledPurgeDate`; Key Vault default 90).
    pub soft_delete_retention_days: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            kv_window_ms: 10_000,
            kv_set_limit: 300,
            kv_other_limit: 4_000,
            graph_write_window_ms: 150_000,
            graph_write_limit: 3_000,
            lockout_threshold: 10,
            lockout_ms: 60_000,
            token_lifetime_s: 3599,
            soft_delete_retention_days: 90,
        }
    }
}

/// A tenant.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Tenant {
    pub id: String,
    pub domain: Option<String>,
}

/// An app registration and its service principal.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct App {
    pub tenant: String,
    pub client_id: String,
    pub name: Option<String>,
    pub object_id: String,
    pub secrets: Vec<String>,
    pub expired_secrets: Vec<String>,
    pub federated_credentials: Vec<FederatedCredential>,
    pub certificate_assertions: bool,
    pub public_client: bool,
    pub graph_permissions: Vec<String>,
    pub directory_roles: Vec<String>,
}

/// A managed identity.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ManagedIdentity {
    pub client_id: String,
    pub app: String,
    pub system_assigned: bool,
}

/// A directory user.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct User {
    pub tenant: String,
    pub id: String,
    pub upn: String,
    pub display_name: Option<String>,
    pub password: String,
    pub directory_roles: Vec<String>,
    pub disabled: bool,
    pub mfa_required: bool,
    pub mfa_registration_required: bool,
    pub ca_blocked: bool,
    pub security_defaults_blocked: bool,
    pub password_expired: bool,
    pub force_change_password_next_sign_in: bool,
    /// Unix seconds of the last password change.
    pub last_password_change: i64,
    /// Unix seconds of creation.
    pub created: i64,
    /// Consecutive failed password-grant attempts.
    #[serde(default)]
    pub failed_attempts: u32,
    /// Unix milliseconds until which the account is locked.
    #[serde(default)]
    pub locked_until_ms: Option<i64>,
    /// Other writable Graph properties set by `PATCH /users/{id}` (`usageLocation`, `jobTitle`,
    /// ...), by their Graph name.
    #[serde(default)]
    pub properties: BTreeMap<String, serde_json::Value>,
}

/// A soft-deleted user ("deleted items"): restorable for 30 days in Entra; the emulator keeps
/// it until it is restored (no purge).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct DeletedUser {
    pub user: User,
    /// Unix seconds of the deletion.
    pub deleted: i64,
}

/// One version of a secret.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SecretVersion {
    pub version: String,
    pub value: String,
    pub content_type: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub enabled: bool,
    pub nbf: Option<i64>,
    pub exp: Option<i64>,
    pub created: i64,
    pub updated: i64,
}

/// A secret: its versions in creation order (the last one is "latest").
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Secret {
    pub versions: Vec<SecretVersion>,
}

/// A soft-deleted secret.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct DeletedSecret {
    pub secret: Secret,
    pub deleted_date: i64,
    pub scheduled_purge_date: i64,
}

/// A vault.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Vault {
    pub name: String,
    pub tenant: String,
    pub access: Vec<AccessSpec>,
    pub secrets: BTreeMap<String, Secret>,
    pub deleted: BTreeMap<String, DeletedSecret>,
}

/// Everything that survives a restart when a state file is used.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct State {
    /// RSA key (PKCS#8 DER, base64) that signs issued tokens (RS256); its public half is
    /// published at the `jwks_uri` of the OpenID configuration. Generated when missing (a state
    /// file from before RS256, whose HS256 `token_key` is ignored).
    #[serde(default)]
    pub token_signing_key: String,
    /// The parsed `token_signing_key`.
    #[serde(skip)]
    signer: Option<std::sync::Arc<crate::jwt::Signer>>,
    pub msi_identity_header: String,
    pub limits: Limits,
    pub tenants: Vec<Tenant>,
    pub apps: Vec<App>,
    pub managed_identities: Vec<ManagedIdentity>,
    pub users: Vec<User>,
    pub vaults: BTreeMap<String, Vault>,
    /// Delegated permission grants (absent from state files written before they existed).
    #[serde(default)]
    pub permission_grants: Vec<PermissionGrant>,
    /// Conditional Access policies and named locations (absent from older state files).
    #[serde(default)]
    pub conditional_access: ConditionalAccess,
    /// Soft-deleted users (absent from older state files).
    #[serde(default)]
    pub deleted_users: Vec<DeletedUser>,
    /// Lookup tables over `tenants`, `apps` and `users`, rebuilt on load and kept current by
    /// `put_tenants`, `put_app` and `put_user` (the only places those lists change), so a request costs O(1) lookups rather than
    /// a scan of every user under the state lock.
    #[serde(skip)]
    index: Index,
}

/// Keys are ASCII-lowercased where Entra compares case-insensitively.
#[derive(Clone, Debug, Default)]
struct Index {
    /// tenant id or domain → position in `tenants`
    tenants: HashMap<String, usize>,
    /// client id → position in `apps` (client ids are unique across tenants)
    apps: HashMap<String, usize>,
    /// (tenant id as stored, object id or UPN) → position in `users`
    users: HashMap<(String, String), usize>,
}

impl Index {
    fn add_tenant(&mut self, i: usize, t: &Tenant) {
        self.tenants.insert(t.id.to_ascii_lowercase(), i);
        if let Some(d) = &t.domain {
            self.tenants.insert(d.to_ascii_lowercase(), i);
        }
    }

    fn add_user(&mut self, i: usize, u: &User) {
        self.users
            .insert((u.tenant.clone(), u.id.to_ascii_lowercase()), i);
        self.users
            .insert((u.tenant.clone(), u.upn.to_ascii_lowercase()), i);
    }

    fn remove_user(&mut self, u: &User) {
        self.users
            .remove(&(u.tenant.clone(), u.id.to_ascii_lowercase()));
        self.users
            .remove(&(u.tenant.clone(), u.upn.to_ascii_lowercase()));
    }
}

/// A fresh 32-hex version id.
pub(crate) fn new_version_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A random password that satisfies Entra's rules (for users seeded without one).
pub(crate) fn random_password() -> String {
    use rand::seq::SliceRandom;
    use rand::Rng;
    const SETS: [&str; 4] = [
        "ABCDEFGHJKLMNPQRSTUVWXYZ",
        "abcdefghijkmnopqrstuvwxyz",
        "23456789",
        "@#$%^&*-_!+=?",
    ];
    let mut rng = rand::rng();
    let mut chars: Vec<char> = Vec::with_capacity(20);
    for set in SETS {
        let b = set.as_bytes();
        for _ in 0..5 {
            chars.push(b[rng.random_range(0..b.len())] as char);
        }
    }
    chars.shuffle(&mut rng);
    chars.into_iter().collect()
}

impl State {
    /// An empty state with a new signing key.
    pub(crate) fn empty() -> State {
        let mut st = State {
            token_signing_key: String::new(),
            signer: None,
            msi_identity_header: DEFAULT_IDENTITY_HEADER.to_string(),
            limits: Limits::default(),
            tenants: Vec::new(),
            apps: Vec::new(),
            managed_identities: Vec::new(),
            users: Vec::new(),
            vaults: BTreeMap::new(),
            permission_grants: Vec::new(),
            conditional_access: ConditionalAccess::default(),
            deleted_users: Vec::new(),
            index: Index::default(),
        };
        st.ensure_signer();
        st
    }

    /// Parses `token_signing_key`, or generates (and records) a new key when it is missing or
    /// unreadable.
    fn ensure_signer(&mut self) {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let parsed = b64
            .decode(&self.token_signing_key)
            .ok()
            .and_then(|d| crate::jwt::Signer::from_pkcs8(&d));
        let signer = match parsed {
            Some(s) => Some(s),
            None => {
                let s = crate::jwt::Signer::generate();
                if let Some(s) = &s {
                    self.token_signing_key = b64.encode(s.pkcs8());
                }
                s
            }
        };
        self.signer = signer.map(std::sync::Arc::new);
    }

    /// The token-signing key (`None` only if the crypto library could not make one).
    pub(crate) fn signer(&self) -> Option<std::sync::Arc<crate::jwt::Signer>> {
        self.signer.clone()
    }

    /// Rebuilds the lookup tables from the lists (after loading a state file).
    fn reindex(&mut self) {
        let mut index = Index::default();
        for (i, t) in self.tenants.iter().enumerate() {
            index.add_tenant(i, t);
        }
        for (i, a) in self.apps.iter().enumerate() {
            index.apps.insert(a.client_id.to_ascii_lowercase(), i);
        }
        for (i, u) in self.users.iter().enumerate() {
            index.add_user(i, u);
        }
        self.index = index;
    }

    /// The public half of the token-signing key (RFC 8017 `RSAPublicKey` DER), for
    /// [`crate::jwt::verify`]; empty (so nothing verifies) without a key.
    pub(crate) fn key_bytes(&self) -> Vec<u8> {
        self.signer
            .as_ref()
            .map(|s| s.public_der())
            .unwrap_or_default()
    }

    /// Finds a tenant by id or domain (case-insensitive).
    pub(crate) fn tenant(&self, t: &str) -> Option<&Tenant> {
        self.index
            .tenants
            .get(&t.to_ascii_lowercase())
            .map(|&i| &self.tenants[i])
    }

    /// The app with this client id (case-insensitive), if it is registered in `tenant`.
    pub(crate) fn app(&self, tenant: &str, client_id: &str) -> Option<&App> {
        self.index
            .apps
            .get(&client_id.to_ascii_lowercase())
            .map(|&i| &self.apps[i])
            .filter(|a| a.tenant == tenant)
    }

    /// Index of a user by object id or UPN (case-insensitive) within a tenant (id or domain).
    pub(crate) fn user_idx(&self, tenant: &str, user: &str) -> Option<usize> {
        let tid = self
            .tenant(tenant)
            .map(|t| t.id.clone())
            .unwrap_or_else(|| tenant.to_string());
        self.index
            .users
            .get(&(tid, user.to_ascii_lowercase()))
            .copied()
    }

    /// Adds tenants, replacing those with the same id, and rebuilds the lookup tables (a
    /// replaced tenant may have dropped its domain; rebuilding is simpler than patching).
    pub(crate) fn put_tenants(&mut self, tenants: Vec<Tenant>) {
        if tenants.is_empty() {
            return;
        }
        for tenant in tenants {
            match self.tenants.iter().position(|x| x.id == tenant.id) {
                Some(i) => self.tenants[i] = tenant,
                None => self.tenants.push(tenant),
            }
        }
        self.reindex();
    }

    /// Adds an app, replacing the one with the same client id.
    pub(crate) fn put_app(&mut self, app: App) {
        match self.apps.iter().position(|x| x.client_id == app.client_id) {
            Some(i) => self.apps[i] = app,
            None => {
                self.index
                    .apps
                    .insert(app.client_id.to_ascii_lowercase(), self.apps.len());
                self.apps.push(app);
            }
        }
    }

    /// Removes the user at `idx` (a soft delete moves it to `deleted_users`), rebuilding the
    /// lookup tables (positions after it shift; deletes are rare).
    pub(crate) fn remove_user(&mut self, idx: usize) -> User {
        let u = self.users.remove(idx);
        self.reindex();
        u
    }

    /// Adds a user, replacing the one with the same tenant and UPN (case-insensitive) in place,
    /// so every other user's position (and index entry) stays valid.
    pub(crate) fn put_user(&mut self, user: User) {
        let i = match self.user_idx(&user.tenant, &user.upn) {
            Some(i) => {
                let previous = std::mem::replace(&mut self.users[i], user);
                self.index.remove_user(&previous);
                i
            }
            None => {
                self.users.push(user);
                self.users.len() - 1
            }
        };
        self.index.add_user(i, &self.users[i]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;

    fn scenario(users: &[(&str, &str)]) -> Scenario {
        let mut t = String::from(
            "[[tenants]]\nid = \"t1\"\ndomain = \"Contoso.example\"\n\n[[tenants]]\nid = \"t2\"\n\n[[apps]]\ntenant = \"t1\"\nclient_id = \"App-1\"\n",
        );
        for (upn, password) in users {
            let tenant = if upn.ends_with("@t2") { "t2" } else { "t1" };
            t.push_str(&format!(
                "\n[[users]]\ntenant = \"{tenant}\"\nupn = \"{upn}\"\npassword = \"{password}\"\n"
            ));
        }
        Scenario::from_toml_str(&t).expect("valid scenario")
    }

    #[test]
    fn lookups_follow_reseeding_and_reloading() {
        let mut st = State::empty();
        scenario(&[
            ("a@contoso.example", "Alpha-1-Pass!"),
            ("b@contoso.example", "Bravo-1-Pass!"),
            ("a@t2", "Charlie-1-Pass!"),
        ])
        .apply_to(&mut st, 0)
        .unwrap();
        let b = st.user_idx("t1", "B@Contoso.Example").unwrap();
        let b_id = st.users[b].id.clone();
        // By domain, by object id in any case, and the same UPN in another tenant is another user.
        assert_eq!(
            st.user_idx("CONTOSO.example", &b_id.to_uppercase()),
            Some(b)
        );
        assert_eq!(
            st.users[st.user_idx("t2", "a@t2").unwrap()].password,
            "Charlie-1-Pass!"
        );
        assert_eq!(st.user_idx("t2", "b@contoso.example"), None);
        assert_eq!(
            st.app("t1", "app-1").map(|a| a.client_id.as_str()),
            Some("App-1")
        );
        assert!(st.app("t2", "app-1").is_none());

        // Re-seeding a user (UPN in another case) replaces it in place and keeps its id.
        let a_id = st.users[st.user_idx("t1", "a@contoso.example").unwrap()]
            .id
            .clone();
        scenario(&[("A@CONTOSO.EXAMPLE", "Alpha-2-Pass!")])
            .apply_to(&mut st, 1)
            .unwrap();
        assert_eq!(st.users.len(), 3);
        let a = st.user_idx("t1", "a@contoso.example").unwrap();
        assert_eq!(
            (st.users[a].password.as_str(), &st.users[a].id),
            ("Alpha-2-Pass!", &a_id)
        );
        assert_eq!(st.user_idx("t1", &b_id), Some(b));

        // A state file carries no index: loading rebuilds it.
        let dir = std::env::temp_dir().join(format!("emu-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        st.save(&path).unwrap();
        let loaded = State::load(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(loaded.user_idx("contoso.example", &a_id), Some(a));
        assert_eq!(
            loaded.tenant("contoso.EXAMPLE").map(|t| t.id.as_str()),
            Some("t1")
        );
        assert!(loaded.app("t1", "APP-1").is_some());
    }
}
