//! The user properties of Graph v1.0 as the emulator knows them: which are writable (and
//! their kind), read-only or returned by default, a user's value for each, and the check of
//! a `PATCH` body.

use crate::http::rfc3339;
use crate::state::User;
use serde_json::{json, Value};

/// The kind of JSON value a user property takes (for `PATCH` validation).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Bool,
    Strings,
    Object,
    Objects,
}

/// Writable user properties of Graph v1.0 ("Update user" reference), with their kind. Those
/// without a field of their own in [`User`] are kept in `User::properties`.
const WRITABLE: [(&str, Kind); 45] = [
    ("aboutMe", Kind::Str),
    ("accountEnabled", Kind::Bool),
    ("ageGroup", Kind::Str),
    ("birthday", Kind::Str),
    ("businessPhones", Kind::Strings),
    ("city", Kind::Str),
    ("companyName", Kind::Str),
    ("consentProvidedForMinor", Kind::Str),
    ("country", Kind::Str),
    ("department", Kind::Str),
    ("displayName", Kind::Str),
    ("employeeHireDate", Kind::Str),
    ("employeeId", Kind::Str),
    ("employeeLeaveDateTime", Kind::Str),
    ("employeeOrgData", Kind::Object),
    ("employeeType", Kind::Str),
    ("faxNumber", Kind::Str),
    ("givenName", Kind::Str),
    ("hireDate", Kind::Str),
    ("identities", Kind::Objects),
    ("interests", Kind::Strings),
    ("jobTitle", Kind::Str),
    ("mail", Kind::Str),
    ("mailNickname", Kind::Str),
    ("mobilePhone", Kind::Str),
    ("mySite", Kind::Str),
    ("officeLocation", Kind::Str),
    ("onPremisesExtensionAttributes", Kind::Object),
    ("onPremisesImmutableId", Kind::Str),
    ("otherMails", Kind::Strings),
    ("passwordPolicies", Kind::Str),
    ("passwordProfile", Kind::Object),
    ("pastProjects", Kind::Strings),
    ("postalCode", Kind::Str),
    ("preferredDataLocation", Kind::Str),
    ("preferredLanguage", Kind::Str),
    ("preferredName", Kind::Str),
    ("responsibilities", Kind::Strings),
    ("schools", Kind::Strings),
    ("showInAddressList", Kind::Bool),
    ("skills", Kind::Strings),
    ("state", Kind::Str),
    ("streetAddress", Kind::Str),
    ("surname", Kind::Str),
    ("usageLocation", Kind::Str),
];
/// `userPrincipalName` and `userType` are writable too; the emulator accepts them only with the
/// current value (it does not rename users or turn members into guests).
pub(super) const WRITABLE_FIXED: [&str; 2] = ["userPrincipalName", "userType"];

/// Read-only user properties of Graph v1.0: `PATCH` refuses them ("Property 'x' is read-only
/// and cannot be set.").
const READ_ONLY: [&str; 28] = [
    "id",
    "createdDateTime",
    "creationType",
    "deletedDateTime",
    "externalUserState",
    "externalUserStateChangeDateTime",
    "imAddresses",
    "isResourceAccount",
    "lastPasswordChangeDateTime",
    "legalAgeGroupClassification",
    "licenseAssignmentStates",
    "assignedLicenses",
    "assignedPlans",
    "provisionedPlans",
    "proxyAddresses",
    "onPremisesDistinguishedName",
    "onPremisesDomainName",
    "onPremisesLastSyncDateTime",
    "onPremisesProvisioningErrors",
    "onPremisesSamAccountName",
    "onPremisesSecurityIdentifier",
    "onPremisesSyncEnabled",
    "onPremisesUserPrincipalName",
    "refreshTokensValidFromDateTime",
    "securityIdentifier",
    "signInActivity",
    "signInSessionsValidFromDateTime",
    "mailboxSettings",
];

/// Whether `name` is a property `$select` may name (case-insensitively); its canonical name.
pub(super) fn known_property(name: &str) -> Option<&'static str> {
    WRITABLE
        .iter()
        .map(|(n, _)| *n)
        .chain(WRITABLE_FIXED)
        .chain(READ_ONLY)
        .find(|n| n.eq_ignore_ascii_case(name))
}

pub(super) const DEFAULT_PROPERTIES: [&str; 11] = [
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
];

pub(super) fn property(u: &User, name: &str) -> Value {
    match name {
        "id" => json!(u.id),
        "userPrincipalName" => json!(u.upn),
        "displayName" => json!(u.display_name.clone().unwrap_or_else(|| u
            .upn
            .split('@')
            .next()
            .unwrap_or("")
            .to_string())),
        "accountEnabled" => json!(!u.disabled),
        "lastPasswordChangeDateTime" => json!(rfc3339(u.last_password_change)),
        "passwordProfile" => json!({
            "password": null,
            "forceChangePasswordNextSignIn": u.force_change_password_next_sign_in,
            "forceChangePasswordNextSignInWithMfa": false,
        }),
        "createdDateTime" => json!(rfc3339(u.created)),
        "userType" => json!("Member"),
        "creationType" | "deletedDateTime" => Value::Null,
        other => u.properties.get(other).cloned().unwrap_or_else(|| {
            match WRITABLE.iter().find(|(n, _)| *n == other) {
                Some((_, Kind::Strings | Kind::Objects)) => json!([]),
                _ if other == "passwordPolicies" => json!("None"),
                _ => Value::Null,
            }
        }),
    }
}

/// Checks a `PATCH /users/{id}` body as Graph does before anything else: annotations, known
/// and writable properties, value types. The error is the message of a 400 `Request_BadRequest`.
pub(super) fn check_patch(
    obj: &serde_json::Map<String, Value>,
    current: Option<&User>,
) -> Result<(), String> {
    for (k, v) in obj {
        if k == "@odata.type" {
            let t = v.as_str().unwrap_or_default();
            if !t
                .trim_start_matches('#')
                .eq_ignore_ascii_case("microsoft.graph.user")
            {
                return Err(format!("A type named '{}' could not be resolved by the model. When a model is available, each type name must resolve to a valid type.", t.trim_start_matches('#')));
            }
            continue;
        }
        if k.contains('@') {
            // Other instance annotations (e.g. `@odata.context`) are ignored by OData readers.
            continue;
        }
        if let Some(&(name, kind)) = WRITABLE.iter().find(|(n, _)| n == k) {
            let ok = match kind {
                Kind::Str => v.is_string() || v.is_null(),
                Kind::Bool => v.is_boolean(),
                Kind::Strings => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
                Kind::Object => v.is_object(),
                Kind::Objects => v.as_array().is_some_and(|a| a.iter().all(Value::is_object)),
            };
            if !ok || (name == "displayName" && v.is_null()) {
                return Err(format!(
                    "Invalid value specified for property '{name}' of resource 'User'."
                ));
            }
            continue;
        }
        if WRITABLE_FIXED.contains(&k.as_str()) {
            let same = match (k.as_str(), current) {
                ("userPrincipalName", Some(u)) => {
                    v.as_str().is_some_and(|s| s.eq_ignore_ascii_case(&u.upn))
                }
                // An unknown user is answered with 404 afterwards.
                ("userPrincipalName", None) => true,
                _ => v.as_str() == Some("Member"),
            };
            if !same {
                return Err(format!(
                    "The emulator does not change '{k}' (only the current value is accepted)."
                ));
            }
            continue;
        }
        if READ_ONLY.contains(&k.as_str()) {
            return Err(format!("Property '{k}' is read-only and cannot be set."));
        }
        return Err(format!(
            "Property '{k}' does not exist as a declared property or extension property."
        ));
    }
    Ok(())
}
