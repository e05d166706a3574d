//! Seeding: merges a parsed [`Scenario`] into the [`State`], through the state's own
//! insert-or-replace operations (which keep its lookup tables current).

use super::Scenario;
use crate::state::{
    new_version_id, random_password, App, ManagedIdentity, NamedLocation, PermissionGrant, Policy,
    Secret, SecretVersion, State, Tenant, User, Vault,
};
use crate::Error;
use std::collections::BTreeMap;

impl Scenario {
    /// Merges the scenario into `st`: entities with the same key (tenant id, app client id,
    /// tenant + UPN, vault name) are replaced, others added. Faults are handled by the caller.
    pub(crate) fn apply_to(&self, st: &mut State, now: i64) -> Result<(), Error> {
        let sc = self;
        let mut problems = Vec::new();
        if let Some(h) = &sc.msi_identity_header {
            st.msi_identity_header = h.clone();
        }
        if let Some(l) = &sc.limits {
            st.limits = l.clone();
        }
        st.put_tenants(
            sc.tenants
                .iter()
                .map(|t| Tenant {
                    id: t.id.clone(),
                    domain: t.domain.clone(),
                })
                .collect(),
        );
        let has_tenant = |s: &State, t: &str| s.tenant(t).is_some_and(|x| x.id == t);
        for a in &sc.apps {
            if !has_tenant(st, &a.tenant) {
                problems.push(format!(
                    "apps[{}].tenant {:?} does not exist",
                    a.client_id, a.tenant
                ));
                continue;
            }
            let object_id = a
                .object_id
                .clone()
                .or_else(|| st.app(&a.tenant, &a.client_id).map(|x| x.object_id.clone()))
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            st.put_app(App {
                tenant: a.tenant.clone(),
                client_id: a.client_id.clone(),
                name: a.name.clone(),
                object_id,
                secrets: a.secrets.clone(),
                expired_secrets: a.expired_secrets.clone(),
                federated_credentials: a.federated_credentials.clone(),
                certificate_assertions: a.certificate_assertions,
                public_client: a.public_client,
                graph_permissions: a.graph_permissions.clone(),
                directory_roles: crate::roles::names(&a.directory_roles),
            });
        }
        for m in &sc.managed_identities {
            if !st.apps.iter().any(|a| a.client_id == m.app) {
                problems.push(format!(
                    "managed_identities[{}].app {:?} does not exist",
                    m.client_id, m.app
                ));
                continue;
            }
            if m.system_assigned {
                for x in &mut st.managed_identities {
                    x.system_assigned = false;
                }
            }
            st.managed_identities.retain(|x| x.client_id != m.client_id);
            st.managed_identities.push(ManagedIdentity {
                client_id: m.client_id.clone(),
                app: m.app.clone(),
                system_assigned: m.system_assigned,
            });
        }
        for u in &sc.users {
            if !has_tenant(st, &u.tenant) {
                problems.push(format!(
                    "users[{}].tenant {:?} does not exist",
                    u.upn, u.tenant
                ));
                continue;
            }
            let old = st.user_idx(&u.tenant, &u.upn);
            let id =
                u.id.clone()
                    .or_else(|| old.map(|i| st.users[i].id.clone()))
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            st.put_user(User {
                tenant: u.tenant.clone(),
                id,
                upn: u.upn.clone(),
                display_name: u.display_name.clone(),
                password: u.password.clone().unwrap_or_else(random_password),
                directory_roles: crate::roles::names(&u.directory_roles),
                disabled: u.disabled,
                mfa_required: u.mfa_required,
                mfa_registration_required: u.mfa_registration_required,
                ca_blocked: u.ca_blocked,
                security_defaults_blocked: u.security_defaults_blocked,
                password_expired: u.password_expired,
                force_change_password_next_sign_in: u.force_change_password_next_sign_in,
                last_password_change: now,
                created: now,
                failed_attempts: 0,
                locked_until_ms: None,
                properties: if u.on_premises_sync_enabled {
                    BTreeMap::from([(
                        "onPremisesSyncEnabled".to_string(),
                        serde_json::Value::Bool(true),
                    )])
                } else {
                    BTreeMap::new()
                },
            });
        }
        for v in &sc.vaults {
            if !has_tenant(st, &v.tenant) {
                problems.push(format!(
                    "vaults[{}].tenant {:?} does not exist",
                    v.name, v.tenant
                ));
                continue;
            }
            let mut vault = Vault {
                name: v.name.to_ascii_lowercase(),
                tenant: v.tenant.clone(),
                access: v.access.clone(),
                secrets: BTreeMap::new(),
                deleted: BTreeMap::new(),
            };
            for s in &v.secrets {
                let value = match (&s.from_user, &s.value) {
                    (Some(fu), _) => {
                        let found = fu
                            .split_once('/')
                            .and_then(|(t, upn)| st.user_idx(t, upn))
                            .map(|i| st.users[i].password.clone());
                        match found {
                            Some(p) => p,
                            None => {
                                problems.push(format!(
                                    "vaults[{}].secrets[{}].from_user {:?} does not exist",
                                    v.name, s.name, fu
                                ));
                                continue;
                            }
                        }
                    }
                    (None, Some(val)) => val.clone(),
                    (None, None) => continue,
                };
                vault.secrets.insert(
                    s.name.clone(),
                    Secret {
                        versions: vec![SecretVersion {
                            version: new_version_id(),
                            value,
                            content_type: s.content_type.clone(),
                            tags: BTreeMap::new(),
                            enabled: true,
                            nbf: None,
                            exp: None,
                            created: now,
                            updated: now,
                        }],
                    },
                );
            }
            st.vaults.insert(vault.name.clone(), vault);
        }
        for g in &sc.oauth2_permission_grants {
            let Some(app) = st.apps.iter().find(|a| a.client_id == g.app).cloned() else {
                problems.push(format!(
                    "oauth2_permission_grants[{}].app does not exist",
                    g.app
                ));
                continue;
            };
            let principal_id = match &g.principal {
                None => None,
                Some(p) => match st.user_idx(&app.tenant, p) {
                    Some(i) => Some(st.users[i].id.clone()),
                    None => {
                        problems.push(format!(
                            "oauth2_permission_grants[{}].principal {p:?} is not a user of tenant {:?}",
                            g.app, app.tenant
                        ));
                        continue;
                    }
                },
            };
            st.put_permission_grant(PermissionGrant {
                id: new_version_id(),
                tenant: app.tenant.clone(),
                client_id: app.object_id.clone(),
                consent_type: g.consent_type.clone(),
                principal_id,
                resource_id: crate::state::GRAPH_APP_ID.to_string(),
                scope: g.scope.split_whitespace().collect::<Vec<_>>().join(" "),
            });
        }
        for n in &sc.named_locations {
            if !has_tenant(st, &n.tenant) {
                problems.push(format!(
                    "named_locations[{}].tenant {:?} does not exist",
                    n.id, n.tenant
                ));
                continue;
            }
            st.conditional_access.put_named_location(NamedLocation {
                tenant: n.tenant.clone(),
                id: n.id.clone(),
                created: now,
                spec: n.location.clone(),
            });
        }
        for (i, p) in sc.conditional_access_policies.iter().enumerate() {
            if !has_tenant(st, &p.tenant) {
                problems.push(format!(
                    "conditional_access_policies[{i}].tenant {:?} does not exist",
                    p.tenant
                ));
                continue;
            }
            st.conditional_access.put_policy(Policy {
                tenant: p.tenant.clone(),
                id: p
                    .id
                    .clone()
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                created: now,
                spec: p.policy.clone(),
            });
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Scenario(problems.join("; ")))
        }
    }
}
