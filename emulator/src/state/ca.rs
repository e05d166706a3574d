//! Conditional Access: the policies and named locations of each tenant, and the evaluation of
//! one sign-in against them, which both Graph's What-If (`graph::ca`) and the password grant
//! (`entra`) use, so the prediction and the sign-in cannot disagree.
//!
//! The model covers the conditions that matter to a management account signing in with a
//! password: users (users, roles by template id, "All"/"None"; groups are accepted but no
//! emulated user is in a group), target resources (`includeApplications`/
//! `excludeApplications`: "All" or app ids of the resource the token is for), client app
//! types, and named locations by IP range (`ipNamedLocation`). Grant controls: `block` and
//! `mfa`. The shapes are Graph v1.0's `conditionalAccessPolicy` and `ipNamedLocation`.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// `state` values of a policy.
pub const POLICY_STATES: [&str; 3] = ["enabled", "disabled", "enabledForReportingButNotEnforced"];
/// `clientAppTypes` values (Graph's `conditionalAccessClientApp`, less `easSupported`).
pub const CLIENT_APP_TYPES: [&str; 5] = [
    "all",
    "browser",
    "mobileAppsAndDesktopClients",
    "exchangeActiveSync",
    "other",
];
/// The grant controls the emulator models.
pub const GRANT_CONTROLS: [&str; 2] = ["block", "mfa"];

/// `conditions.users`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct UsersCondition {
    /// User object ids, `All` or `None`.
    pub include_users: Vec<String>,
    /// User object ids.
    pub exclude_users: Vec<String>,
    /// Group object ids (no emulated user is in a group).
    pub include_groups: Vec<String>,
    /// Group object ids.
    pub exclude_groups: Vec<String>,
    /// Directory role template ids.
    pub include_roles: Vec<String>,
    /// Directory role template ids.
    pub exclude_roles: Vec<String>,
}

/// `conditions.applications`: the target resources.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct ApplicationsCondition {
    /// Resource app ids or `All` (`None` matches nothing).
    pub include_applications: Vec<String>,
    /// Resource app ids.
    pub exclude_applications: Vec<String>,
}

/// `conditions.locations`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct LocationsCondition {
    /// Named location ids, `All` or `AllTrusted`.
    pub include_locations: Vec<String>,
    /// Named location ids or `AllTrusted`.
    pub exclude_locations: Vec<String>,
}

/// `conditions`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct Conditions {
    /// Who the policy is for.
    pub users: UsersCondition,
    /// Which resources.
    pub applications: ApplicationsCondition,
    /// Which client app types; empty is taken as `["all"]`.
    pub client_app_types: Vec<String>,
    /// Where from; absent: any location.
    pub locations: Option<LocationsCondition>,
}

/// `grantControls`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct GrantControls {
    /// `OR` or `AND`.
    pub operator: String,
    /// `block`, `mfa`.
    pub built_in_controls: Vec<String>,
}

/// A policy as Graph's `POST /identity/conditionalAccess/policies` takes it (the scenario's
/// `[[conditional_access_policies]]` adds `tenant` and an optional `id`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PolicySpec {
    /// Shown in the portal, in What-If and by keyturn doctor.
    pub display_name: String,
    /// `enabled`, `disabled` or `enabledForReportingButNotEnforced` (report-only).
    pub state: String,
    /// When it applies.
    #[serde(default)]
    pub conditions: Conditions,
    /// What it demands.
    #[serde(default)]
    pub grant_controls: Option<GrantControls>,
}

impl PolicySpec {
    /// The problems Graph (or the emulator's model) would refuse the policy for.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.display_name.trim().is_empty() {
            out.push("displayName is required".to_string());
        }
        if !POLICY_STATES.contains(&self.state.as_str()) {
            out.push(format!("state {:?}: one of {POLICY_STATES:?}", self.state));
        }
        for t in &self.conditions.client_app_types {
            if !CLIENT_APP_TYPES.contains(&t.as_str()) {
                out.push(format!(
                    "conditions.clientAppTypes {t:?}: one of {CLIENT_APP_TYPES:?}"
                ));
            }
        }
        let u = &self.conditions.users;
        for r in u.include_roles.iter().chain(&u.exclude_roles) {
            if crate::roles::template_id(r).map(|t| t.eq_ignore_ascii_case(r)) != Some(true) {
                out.push(format!(
                    "conditions.users roles {r:?}: a directory role template id the emulator knows"
                ));
            }
        }
        if u.include_users.is_empty() && u.include_groups.is_empty() && u.include_roles.is_empty() {
            out.push("conditions.users: include users, groups or roles (or \"All\")".to_string());
        }
        if self.conditions.applications.include_applications.is_empty() {
            out.push(
                "conditions.applications.includeApplications: \"All\" or resource app ids"
                    .to_string(),
            );
        }
        match &self.grant_controls {
            None => out.push(
                "grantControls: the emulator models policies that grant with controls (block, mfa)"
                    .to_string(),
            ),
            Some(g) => {
                if g.operator != "OR" && g.operator != "AND" {
                    out.push(format!(
                        "grantControls.operator {:?}: OR or AND",
                        g.operator
                    ));
                }
                if g.built_in_controls.is_empty() {
                    out.push("grantControls.builtInControls: name block or mfa".to_string());
                }
                for c in &g.built_in_controls {
                    if !GRANT_CONTROLS.contains(&c.as_str()) {
                        out.push(format!("grantControls.builtInControls {c:?}: the emulator models {GRANT_CONTROLS:?} only"));
                    }
                }
            }
        }
        out
    }

    /// The client app types it covers (`["all"]` when none are named).
    fn client_app_types(&self) -> Vec<&str> {
        if self.conditions.client_app_types.is_empty() {
            vec!["all"]
        } else {
            self.conditions
                .client_app_types
                .iter()
                .map(String::as_str)
                .collect()
        }
    }
}

/// `ipRanges` item of an `ipNamedLocation`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IpRange {
    /// `203.0.113.0/24`, `2001:db8::/32`.
    pub cidr_address: String,
}

/// An `ipNamedLocation` as `POST /identity/conditionalAccess/namedLocations` takes it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NamedLocationSpec {
    /// Its name.
    pub display_name: String,
    /// Its ranges.
    #[serde(default)]
    pub ip_ranges: Vec<IpRange>,
    /// Whether it counts for `AllTrusted`.
    #[serde(default)]
    pub is_trusted: bool,
}

impl NamedLocationSpec {
    /// The problems Graph would refuse the location for.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.display_name.trim().is_empty() {
            out.push("displayName is required".to_string());
        }
        if self.ip_ranges.is_empty() {
            out.push("ipRanges: at least one cidrAddress".to_string());
        }
        for r in &self.ip_ranges {
            if parse_cidr(&r.cidr_address).is_none() {
                out.push(format!(
                    "ipRanges.cidrAddress {:?}: an IPv4 or IPv6 CIDR range, e.g. 203.0.113.0/24",
                    r.cidr_address
                ));
            }
        }
        out
    }

    fn contains(&self, ip: IpAddr) -> bool {
        self.ip_ranges
            .iter()
            .filter_map(|r| parse_cidr(&r.cidr_address))
            .any(|(net, bits)| in_range(ip, net, bits))
    }
}

/// A stored policy.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Policy {
    pub tenant: String,
    pub id: String,
    /// Unix seconds.
    pub created: i64,
    pub spec: PolicySpec,
}

/// A stored named location.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct NamedLocation {
    pub tenant: String,
    pub id: String,
    pub created: i64,
    pub spec: NamedLocationSpec,
}

/// The Conditional Access part of the state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct ConditionalAccess {
    pub policies: Vec<Policy>,
    pub named_locations: Vec<NamedLocation>,
}

/// One sign-in, as What-If describes it or the password grant sees it.
pub(crate) struct SignIn<'a> {
    /// The user's object id.
    pub user_id: &'a str,
    /// The user's directory roles (names or template ids).
    pub user_roles: &'a [String],
    /// Resource app ids the sign-in asks a token for (What-If's `includeApplications`).
    pub apps: &'a [String],
    /// `clientAppType` (What-If's default: `all`).
    pub client_app_type: &'a str,
    /// The address it comes from, when known.
    pub ip: Option<IpAddr>,
}

/// Why a policy does not apply: What-If's `analysisReasons` values.
pub(crate) type Reasons = Vec<&'static str>;

impl ConditionalAccess {
    /// Each policy of `tenant`, in creation order, with `Ok` when it applies to the sign-in
    /// (whatever its state: What-If lists report-only policies as applying) or the reasons
    /// it does not.
    pub(crate) fn evaluate<'s>(
        &'s self,
        tenant: &str,
        s: &SignIn<'_>,
    ) -> Vec<(&'s Policy, Result<(), Reasons>)> {
        self.policies
            .iter()
            .filter(|p| p.tenant == tenant)
            .map(|p| (p, self.applies(p, s)))
            .collect()
    }

    fn applies(&self, p: &Policy, s: &SignIn<'_>) -> Result<(), Reasons> {
        if p.spec.state == "disabled" {
            return Err(vec!["policyNotEnabled"]);
        }
        let mut reasons = Vec::new();
        let c = &p.spec.conditions;
        let roles: Vec<&str> = s
            .user_roles
            .iter()
            .filter_map(|r| crate::roles::template_id(r))
            .collect();
        let has = |list: &[String], id: &str| list.iter().any(|x| x.eq_ignore_ascii_case(id));
        let u = &c.users;
        let included = has(&u.include_users, "All")
            || has(&u.include_users, s.user_id)
            || roles.iter().any(|r| has(&u.include_roles, r));
        let excluded =
            has(&u.exclude_users, s.user_id) || roles.iter().any(|r| has(&u.exclude_roles, r));
        if !included || excluded {
            reasons.push("users");
        }
        let a = &c.applications;
        let app_in = s.apps.iter().any(|app| {
            (has(&a.include_applications, "All") || has(&a.include_applications, app))
                && !has(&a.exclude_applications, app)
        });
        if !app_in {
            reasons.push("application");
        }
        let types = p.spec.client_app_types();
        if !(types.contains(&"all")
            || s.client_app_type == "all"
            || types.contains(&s.client_app_type))
        {
            reasons.push("clientApps");
        }
        if let Some(l) = &c.locations {
            match self.location_applies(&p.tenant, l, s.ip) {
                Some(true) => {}
                Some(false) => reasons.push("location"),
                None => reasons.push("notEnoughInformation"),
            }
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }

    /// Whether the location condition holds; `None` when it depends on an address the
    /// sign-in does not give.
    fn location_applies(
        &self,
        tenant: &str,
        l: &LocationsCondition,
        ip: Option<IpAddr>,
    ) -> Option<bool> {
        let only_all =
            l.include_locations.iter().all(|x| x == "All") && l.exclude_locations.is_empty();
        if only_all && !l.include_locations.is_empty() {
            return Some(true);
        }
        let ip = ip?;
        let inside = |id: &str| {
            self.named_locations
                .iter()
                .filter(|n| n.tenant == tenant)
                .any(|n| {
                    (id == "AllTrusted" && n.spec.is_trusted || n.id.eq_ignore_ascii_case(id))
                        && n.spec.contains(ip)
                })
        };
        let included = l.include_locations.iter().any(|x| x == "All" || inside(x));
        let excluded = l.exclude_locations.iter().any(|x| inside(x));
        Some(included && !excluded)
    }

    pub(crate) fn put_policy(&mut self, p: Policy) {
        match self.policies.iter().position(|x| x.id == p.id) {
            Some(i) => self.policies[i] = p,
            None => self.policies.push(p),
        }
    }

    pub(crate) fn put_named_location(&mut self, n: NamedLocation) {
        match self.named_locations.iter().position(|x| x.id == n.id) {
            Some(i) => self.named_locations[i] = n,
            None => self.named_locations.push(n),
        }
    }
}

/// `a.b.c.d/n` or `x::y/n` into the network address and prefix length.
pub(crate) fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, bits) = s.trim().split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let bits: u8 = bits.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((addr, bits))
}

fn in_range(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let (ip, net, width) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            (u128::from(u32::from(a)), u128::from(u32::from(n)), 32u32)
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => (u128::from(a), u128::from(n), 128u32),
        _ => return false,
    };
    if bits == 0 {
        return true;
    }
    let shift = width - u32::from(bits);
    (ip >> shift) == (net >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "fe930be7-5e62-47db-91af-98c3a49a38b1"; // User Administrator
    const GRAPH: &str = "00000003-0000-0000-c000-000000000000";

    fn policy(
        state: &str,
        include_roles: &[&str],
        exclude_users: &[&str],
        locations: Option<LocationsCondition>,
    ) -> Policy {
        Policy {
            tenant: "t".into(),
            id: "p1".into(),
            created: 0,
            spec: PolicySpec {
                display_name: "MFA for admins".into(),
                state: state.into(),
                conditions: Conditions {
                    users: UsersCondition {
                        include_roles: include_roles.iter().map(|s| s.to_string()).collect(),
                        exclude_users: exclude_users.iter().map(|s| s.to_string()).collect(),
                        ..Default::default()
                    },
                    applications: ApplicationsCondition {
                        include_applications: vec!["All".into()],
                        ..Default::default()
                    },
                    client_app_types: vec!["all".into()],
                    locations,
                },
                grant_controls: Some(GrantControls {
                    operator: "OR".into(),
                    built_in_controls: vec!["mfa".into()],
                }),
            },
        }
    }

    fn ca(p: Policy) -> ConditionalAccess {
        ConditionalAccess {
            policies: vec![p],
            named_locations: vec![NamedLocation {
                tenant: "t".into(),
                id: "office".into(),
                created: 0,
                spec: NamedLocationSpec {
                    display_name: "Office".into(),
                    ip_ranges: vec![IpRange {
                        cidr_address: "203.0.113.0/24".into(),
                    }],
                    is_trusted: true,
                },
            }],
        }
    }

    fn sign_in<'a>(roles: &'a [String], apps: &'a [String], ip: Option<IpAddr>) -> SignIn<'a> {
        SignIn {
            user_id: "u1",
            user_roles: roles,
            apps,
            client_app_type: "mobileAppsAndDesktopClients",
            ip,
        }
    }

    #[test]
    fn a_role_policy_applies_to_a_holder_and_not_to_an_excluded_user_or_a_disabled_policy() {
        let roles = vec!["User Administrator".to_string()];
        let apps = vec![GRAPH.to_string()];
        let s = sign_in(&roles, &apps, None);
        assert_eq!(
            ca(policy("enabled", &[ADMIN], &[], None)).evaluate("t", &s)[0].1,
            Ok(())
        );
        assert_eq!(
            ca(policy("enabled", &[ADMIN], &["u1"], None)).evaluate("t", &s)[0].1,
            Err(vec!["users"])
        );
        assert_eq!(
            ca(policy("disabled", &[ADMIN], &[], None)).evaluate("t", &s)[0].1,
            Err(vec!["policyNotEnabled"])
        );
        let none: Vec<String> = vec![];
        assert_eq!(
            ca(policy("enabled", &[ADMIN], &[], None)).evaluate("t", &sign_in(&none, &apps, None))
                [0]
            .1,
            Err(vec!["users"])
        );
    }

    #[test]
    fn an_excluded_location_needs_the_address_and_excludes_its_range() {
        let roles = vec!["User Administrator".to_string()];
        let apps = vec![GRAPH.to_string()];
        let loc = LocationsCondition {
            include_locations: vec!["All".into()],
            exclude_locations: vec!["office".into()],
        };
        let c = ca(policy("enabled", &[ADMIN], &[], Some(loc)));
        let at = |ip: Option<&str>| {
            let ip = ip.map(|i| i.parse().unwrap());
            c.evaluate("t", &sign_in(&roles, &apps, ip))[0].1.clone()
        };
        assert_eq!(at(Some("203.0.113.9")), Err(vec!["location"]));
        assert_eq!(at(Some("198.51.100.1")), Ok(()));
        assert_eq!(at(None), Err(vec!["notEnoughInformation"]));
    }

    #[test]
    fn cidr_ranges_match_by_prefix() {
        let (n, b) = parse_cidr("10.1.0.0/16").unwrap();
        assert!(in_range("10.1.200.3".parse().unwrap(), n, b));
        assert!(!in_range("10.2.0.1".parse().unwrap(), n, b));
        let (n, b) = parse_cidr("2001:db8::/32").unwrap();
        assert!(in_range("2001:db8::1".parse().unwrap(), n, b));
        assert!(parse_cidr("10.0.0.0/33").is_none());
        assert!(parse_cidr("nonsense").is_none());
    }
}
