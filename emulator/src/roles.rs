//! Directory roles: the names scenarios use and the template ids Entra puts in `wids`.
//!
//! Ids from Microsoft's "Microsoft Entra built-in roles" reference
//! (`MicrosoftDocs/entra-docs`, `docs/identity/role-based-access-control/permissions-reference.md`,
//! checked 2026-11-30).

/// (name, template id) of the built-in roles the emulator knows.
pub(crate) const BUILT_IN: [(&str, &str); 21] = [
    (
        "Global Administrator",
        "62e90394-69f5-4237-9190-012177145e10",
    ),
    (
        "Privileged Authentication Administrator",
        "7be44c8a-adaf-4e2a-84d6-ab2649e08a13",
    ),
    (
        "Privileged Role Administrator",
        "e8611ab8-c189-46e8-94e1-60213ab1f814",
    ),
    (
        "Authentication Administrator",
        "c4e39bd9-1100-46d3-8c65-fb160da0071f",
    ),
    ("User Administrator", "fe930be7-5e62-47db-91af-98c3a49a38b1"),
    (
        "Helpdesk Administrator",
        "729827e3-9c14-49f7-bb1b-9608f156bbb8",
    ),
    (
        "Password Administrator",
        "966707d0-3269-4727-9be2-8c3a10f19b9d",
    ),
    (
        "Exchange Administrator",
        "29232cdf-9323-42fd-ade2-1d097af3e4de",
    ),
    (
        "SharePoint Administrator",
        "f28a1f50-f6e7-4571-818b-6a12f2af6b6c",
    ),
    (
        "Teams Administrator",
        "69091246-20e8-4a56-aa4d-066075b2a7a8",
    ),
    ("Global Reader", "f2ef992c-3afb-46b9-b7cf-a126ee74c451"),
    ("Reports Reader", "4a5d8f65-41da-4de4-8968-e035b65339cf"),
    (
        "Security Administrator",
        "194ae4cb-b126-40b2-bd5b-6091b380977d",
    ),
    ("Security Reader", "5d6b6bb7-de71-4623-b4af-96380a352509"),
    ("Directory Readers", "88d8e3e3-8f55-4a1e-953a-9b9898b8876b"),
    (
        "Application Administrator",
        "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3",
    ),
    // The other rows of "Who can reset passwords" (see `RESETTABLE_BY`).
    (
        "Groups Administrator",
        "fdd7a751-b60b-444a-984c-02652fe8fa1c",
    ),
    ("Guest Inviter", "95e79109-95c0-4d8e-aee3-d01accf2d47b"),
    (
        "Message Center Reader",
        "790c1fb9-7f7d-4f88-86a1-ef1f95c05c1b",
    ),
    (
        "User Experience Success Manager",
        "27460883-1df1-4691-b032-3b79643e5e63",
    ),
    (
        "Usage Summary Reports Reader",
        "75934031-6c7e-415a-99d7-48dbd49e875e",
    ),
];

/// The built-in roles above that Microsoft labels PRIVILEGED ("Privileged roles and
/// permissions in Microsoft Entra ID"; `isPrivileged` of their role definitions). **Unsure**
/// for Global Reader and Security Reader (labelled privileged for what they can read).
const PRIVILEGED: [&str; 11] = [
    "Global Administrator",
    "Privileged Authentication Administrator",
    "Privileged Role Administrator",
    "Authentication Administrator",
    "User Administrator",
    "Helpdesk Administrator",
    "Password Administrator",
    "Security Administrator",
    "Security Reader",
    "Global Reader",
    "Application Administrator",
];

/// Whether a built-in role (by name) is privileged.
pub(crate) fn is_privileged(name: &str) -> bool {
    PRIVILEGED.iter().any(|p| p.eq_ignore_ascii_case(name))
}

/// The template id of a role given by name (case-insensitive) or by template id.
pub(crate) fn template_id(role: &str) -> Option<&'static str> {
    BUILT_IN
        .iter()
        .find(|(n, id)| n.eq_ignore_ascii_case(role) || id.eq_ignore_ascii_case(role))
        .map(|(_, id)| *id)
}

/// The name of a role given by name or template id (the form the emulator's checks use).
pub(crate) fn name_of(role: &str) -> Option<&'static str> {
    BUILT_IN
        .iter()
        .find(|(n, id)| n.eq_ignore_ascii_case(role) || id.eq_ignore_ascii_case(role))
        .map(|(n, _)| *n)
}

/// `wids` of a token: the template ids of `roles` (names or ids; unknown ones are left out,
/// scenario validation refuses them).
pub(crate) fn wids(roles: &[String]) -> Vec<String> {
    roles
        .iter()
        .filter_map(|r| template_id(r))
        .map(str::to_string)
        .collect()
}

/// Roles as names (for the emulator's permission checks), from names or template ids.
pub(crate) fn names(roles: &[String]) -> Vec<String> {
    roles
        .iter()
        .filter_map(|r| name_of(r))
        .map(str::to_string)
        .collect()
}

/// The target roles each limited reset role may reset the password of (rows of Microsoft's
/// "Who can reset passwords" table, `privileged-roles-permissions.md` in
/// `MicrosoftDocs/entra-docs`, checked 2026-11-30). A user without directory roles may be reset
/// by all of them; Privileged Authentication Administrator and Global Administrator may reset
/// everyone; a target holding any role not listed for the caller's role needs one of those two.
const RESETTABLE_BY: [(&str, &[&str]); 4] = [
    (
        "Password Administrator",
        &[
            "Directory Readers",
            "Guest Inviter",
            "Password Administrator",
        ],
    ),
    (
        "Helpdesk Administrator",
        &[
            "Directory Readers",
            "Guest Inviter",
            "Helpdesk Administrator",
            "Message Center Reader",
            "Password Administrator",
            "Reports Reader",
            "User Experience Success Manager",
            "Usage Summary Reports Reader",
        ],
    ),
    (
        "Authentication Administrator",
        &[
            "Authentication Administrator",
            "Directory Readers",
            "Guest Inviter",
            "Message Center Reader",
            "Password Administrator",
            "Reports Reader",
            "User Experience Success Manager",
            "Usage Summary Reports Reader",
        ],
    ),
    (
        "User Administrator",
        &[
            "Directory Readers",
            "Groups Administrator",
            "Guest Inviter",
            "Helpdesk Administrator",
            "Message Center Reader",
            "Password Administrator",
            "Reports Reader",
            "User Administrator",
            "User Experience Success Manager",
            "Usage Summary Reports Reader",
        ],
    ),
];

/// Roles that may reset every user's password and perform every sensitive action.
const RESET_ANYONE: [&str; 2] = [
    "Privileged Authentication Administrator",
    "Global Administrator",
];

/// Whether a caller holding `caller` (role names) may reset the password of a user holding
/// `target` (role names), per "Who can reset passwords".
pub(crate) fn may_reset(caller: &[String], target: &[String]) -> bool {
    may(caller, target, &RESETTABLE_BY)
}

/// Whether a caller may perform a sensitive action (here: set `accountEnabled`) on the user,
/// per "Who can perform sensitive actions": the same rows as resets, for Authentication
/// Administrator and User Administrator only (Password and Helpdesk Administrators may not).
pub(crate) fn may_act_sensitive(caller: &[String], target: &[String]) -> bool {
    may(caller, target, &RESETTABLE_BY[2..])
}

fn may(caller: &[String], target: &[String], table: &[(&str, &[&str])]) -> bool {
    caller.iter().any(|c| {
        RESET_ANYONE.contains(&c.as_str())
            || table
                .iter()
                .any(|(role, rows)| role == c && target.iter().all(|t| rows.contains(&t.as_str())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids_map_both_ways() {
        assert_eq!(
            template_id("User Administrator"),
            Some("fe930be7-5e62-47db-91af-98c3a49a38b1")
        );
        assert_eq!(
            template_id("global reader"),
            Some("f2ef992c-3afb-46b9-b7cf-a126ee74c451")
        );
        assert_eq!(
            name_of("7BE44C8A-ADAF-4E2A-84D6-AB2649E08A13"),
            Some("Privileged Authentication Administrator")
        );
        assert_eq!(template_id("Chief Coffee Officer"), None);
        let ids = wids(&["User Administrator".into(), "Global Reader".into()]);
        assert_eq!(names(&ids), vec!["User Administrator", "Global Reader"]);
    }

    #[test]
    fn resets_follow_the_who_can_reset_passwords_table() {
        let v = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let none = v(&[]);
        // Anyone with a reset role resets a user without roles.
        for role in [
            "Password Administrator",
            "Helpdesk Administrator",
            "User Administrator",
        ] {
            assert!(may_reset(&v(&[role]), &none), "{role}");
        }
        assert!(!may_reset(&v(&["Global Reader"]), &none));
        // Helpdesk may reset a Reports Reader, Password Administrator may not.
        assert!(may_reset(
            &v(&["Helpdesk Administrator"]),
            &v(&["Reports Reader"])
        ));
        assert!(!may_reset(
            &v(&["Password Administrator"]),
            &v(&["Reports Reader"])
        ));
        // User Administrator resets another User Administrator, not an Authentication one.
        assert!(may_reset(
            &v(&["User Administrator"]),
            &v(&["User Administrator"])
        ));
        assert!(!may_reset(
            &v(&["User Administrator"]),
            &v(&["Authentication Administrator"])
        ));
        // Every role must be covered: one unlisted role needs PAA or Global Administrator.
        let svc = v(&["Reports Reader", "Exchange Administrator"]);
        assert!(!may_reset(&v(&["User Administrator"]), &svc));
        assert!(may_reset(
            &v(&["Privileged Authentication Administrator"]),
            &svc
        ));
        assert!(may_reset(
            &v(&["Global Administrator"]),
            &v(&["Global Administrator"])
        ));
        // Enabling / disabling: not for Helpdesk or Password Administrators.
        assert!(!may_act_sensitive(&v(&["Helpdesk Administrator"]), &none));
        assert!(may_act_sensitive(&v(&["User Administrator"]), &none));
    }
}
