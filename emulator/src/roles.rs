//! Directory roles: the names scenarios use and the template ids Entra puts in `wids`.
//!
//! Ids from Microsoft's "Microsoft Entra built-in roles" reference
//! (`MicrosoftDocs/entra-docs`, `docs/identity/role-based-access-control/permissions-reference.md`,
//! checked 2026-11-30).

/// (name, template id) of the built-in roles the emulator knows.
pub(crate) const BUILT_IN: [(&str, &str); 16] = [
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
];

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
}
