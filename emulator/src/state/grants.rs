//! Delegated permission grants (Graph's `oAuth2PermissionGrant`): the grants the state keeps,
//! adding one, and the permissions a client holds for a user, which `entra`'s password grant
//! checks (consent).

use super::State;
use serde::{Deserialize, Serialize};

/// A delegated permission grant (Graph's `oAuth2PermissionGrant`): the client app may act
/// for signed-in users (all of them, or one) with these delegated permissions of a resource.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct PermissionGrant {
    /// The grant's id.
    pub id: String,
    /// The tenant the grant lives in.
    pub tenant: String,
    /// The client app's service principal object id (Graph's `clientId`, not the app id).
    pub client_id: String,
    /// `AllPrincipals` (admin consent for every user) or `Principal` (one user).
    pub consent_type: String,
    /// The user's object id when `consent_type` is `Principal`.
    pub principal_id: Option<String>,
    /// The resource: [`GRAPH_APP_ID`] for Microsoft Graph (the emulator's stand-in
    /// for Graph's service principal object id).
    pub resource_id: String,
    /// The delegated permissions, space-separated (e.g. `openid User.Read`).
    pub scope: String,
}

/// Microsoft Graph's application (client) id, the same in every tenant. A delegated permission
/// grant names Graph by its service principal's object id, which differs per tenant; the
/// emulator keeps no service principal objects for Microsoft's own apps, so its grants name
/// Graph by this id instead (**choice**, docs/emulator.md).
pub(crate) const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";

/// `AllPrincipals` or `Principal`: the consent types of a delegated permission grant.
pub(crate) const CONSENT_TYPES: [&str; 2] = ["AllPrincipals", "Principal"];

impl State {
    /// Adds a delegated permission grant, replacing the one for the same client, consent type,
    /// principal and resource (there is one grant per such key, as in Entra). Returns false
    /// when it replaced one.
    pub(crate) fn put_permission_grant(&mut self, grant: PermissionGrant) -> bool {
        let same = |g: &PermissionGrant| {
            g.tenant == grant.tenant
                && g.client_id.eq_ignore_ascii_case(&grant.client_id)
                && g.consent_type == grant.consent_type
                && g.principal_id == grant.principal_id
                && g.resource_id.eq_ignore_ascii_case(&grant.resource_id)
        };
        match self.permission_grants.iter().position(same) {
            Some(i) => {
                self.permission_grants[i] = grant;
                false
            }
            None => {
                self.permission_grants.push(grant);
                true
            }
        }
    }

    /// The delegated permissions on `resource` that the client (service principal object id)
    /// holds for the user: the tenant-wide (`AllPrincipals`) grants and the user's own.
    pub(crate) fn granted_scopes(
        &self,
        tenant: &str,
        client_object_id: &str,
        user_id: &str,
        resource: &str,
    ) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for g in &self.permission_grants {
            let for_user = g.consent_type == "AllPrincipals"
                || g.principal_id
                    .as_deref()
                    .is_some_and(|p| p.eq_ignore_ascii_case(user_id));
            if g.tenant == tenant
                && g.client_id.eq_ignore_ascii_case(client_object_id)
                && g.resource_id.eq_ignore_ascii_case(resource)
                && for_user
            {
                for s in g.scope.split_whitespace() {
                    if !out.iter().any(|x| x.eq_ignore_ascii_case(s)) {
                        out.push(s.to_string());
                    }
                }
            }
        }
        out
    }
}
