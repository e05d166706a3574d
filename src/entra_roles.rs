//! Entra's built-in directory roles by display name, as an account's `roles = [...]`
//! declares them (`keyturn provision` assigns them): each name with its role template id,
//! and the presets (`"preset:coreview"`).
//!
//! The ids are the "Template ID" column of Microsoft's "Microsoft Entra built-in roles"
//! (<https://learn.microsoft.com/en-us/entra/identity/role-based-access-control/permissions-reference>,
//! `MicrosoftDocs/entra-docs`, `docs/identity/role-based-access-control/permissions-reference.md`,
//! as of January 2026). A template id is the same in every tenant, and
//! `roleManagement/directory/roleAssignments` takes it as `roleDefinitionId` for a built-in
//! role. A role not listed here is declared by its id (any GUID is taken as a role
//! definition id as written).

/// Built-in roles: (display name, template id). Names are matched case-insensitively.
pub const BUILT_IN: &[(&str, &str)] = &[
    (
        "Application Administrator",
        "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3",
    ),
    (
        "Application Developer",
        "cf1c38e5-3621-4004-a7cb-879624dced7c",
    ),
    (
        "Attack Payload Author",
        "9c6df0f2-1e7c-4dc3-b195-66dfbd24aa8f",
    ),
    (
        "Attack Simulation Administrator",
        "c430b396-e693-46cc-96f3-db01bf8bb62a",
    ),
    (
        "Authentication Administrator",
        "c4e39bd9-1100-46d3-8c65-fb160da0071f",
    ),
    (
        "Authentication Policy Administrator",
        "0526716b-113d-4c15-b2c8-68e3c22b9f80",
    ),
    (
        "Azure DevOps Administrator",
        "e3973bdf-4987-49ae-837a-ba8e231c7286",
    ),
    (
        "Billing Administrator",
        "b0f54661-2d74-4c50-afa3-1ec803f12efe",
    ),
    (
        "Cloud App Security Administrator",
        "892c5842-a9a6-463a-8041-72aa08ca3cf6",
    ),
    (
        "Cloud Application Administrator",
        "158c047a-c907-4556-b7ef-446551a6b5f7",
    ),
    (
        "Cloud Device Administrator",
        "7698a772-787b-4ac8-901f-60d6b08affd2",
    ),
    (
        "Compliance Administrator",
        "17315797-102d-40b4-93e0-432062caca18",
    ),
    (
        "Compliance Data Administrator",
        "e6d1a23a-da11-4be4-9570-befc86d067a7",
    ),
    (
        "Conditional Access Administrator",
        "b1be1c3e-b65d-4f19-8427-f6fa0d97feb9",
    ),
    ("Directory Readers", "88d8e3e3-8f55-4a1e-953a-9b9898b8876b"),
    ("Directory Writers", "9360feb5-f418-4baa-8175-e2a00bac4301"),
    (
        "Domain Name Administrator",
        "8329153b-31d0-4727-b945-745eb3bc5f31",
    ),
    (
        "Dynamics 365 Administrator",
        "44367163-eba1-44c3-98af-f5787879f96a",
    ),
    (
        "Exchange Administrator",
        "29232cdf-9323-42fd-ade2-1d097af3e4de",
    ),
    (
        "Exchange Recipient Administrator",
        "31392ffb-586c-42d1-9346-e59415a2cc4e",
    ),
    (
        "Fabric Administrator",
        "a9ea8996-122f-4c74-9520-8edcd192826c",
    ),
    (
        "Global Administrator",
        "62e90394-69f5-4237-9190-012177145e10",
    ),
    ("Global Reader", "f2ef992c-3afb-46b9-b7cf-a126ee74c451"),
    (
        "Groups Administrator",
        "fdd7a751-b60b-444a-984c-02652fe8fa1c",
    ),
    ("Guest Inviter", "95e79109-95c0-4d8e-aee3-d01accf2d47b"),
    (
        "Helpdesk Administrator",
        "729827e3-9c14-49f7-bb1b-9608f156bbb8",
    ),
    (
        "Hybrid Identity Administrator",
        "8ac3fc64-6eca-42ea-9e69-59f4c7b60eb2",
    ),
    (
        "Intune Administrator",
        "3a2c62db-5318-420d-8d74-23affee5d9d5",
    ),
    (
        "License Administrator",
        "4d6ac14f-3453-41d0-bef9-a3e0c569773a",
    ),
    (
        "Message Center Reader",
        "790c1fb9-7f7d-4f88-86a1-ef1f95c05c1b",
    ),
    (
        "Office Apps Administrator",
        "2b745bdf-0803-4d80-aa65-822c4493daac",
    ),
    (
        "Password Administrator",
        "966707d0-3269-4727-9be2-8c3a10f19b9d",
    ),
    (
        "Power Platform Administrator",
        "11648597-926c-4cf3-9c36-bcebb0ba8dcc",
    ),
    (
        "Privileged Authentication Administrator",
        "7be44c8a-adaf-4e2a-84d6-ab2649e08a13",
    ),
    (
        "Privileged Role Administrator",
        "e8611ab8-c189-46e8-94e1-60213ab1f814",
    ),
    ("Reports Reader", "4a5d8f65-41da-4de4-8968-e035b65339cf"),
    (
        "Security Administrator",
        "194ae4cb-b126-40b2-bd5b-6091b380977d",
    ),
    ("Security Operator", "5f2222b1-57c3-48ba-8ad5-d4759f1fde6f"),
    ("Security Reader", "5d6b6bb7-de71-4623-b4af-96380a352509"),
    (
        "Service Support Administrator",
        "f023fd81-a637-4b56-95fd-791ac0226033",
    ),
    (
        "SharePoint Administrator",
        "f28a1f50-f6e7-4571-818b-6a12f2af6b6c",
    ),
    (
        "Skype for Business Administrator",
        "75941009-915a-4869-abe7-691bff18279e",
    ),
    (
        "Teams Administrator",
        "69091246-20e8-4a56-aa4d-066075b2a7a8",
    ),
    (
        "Teams Communications Administrator",
        "baf37b3a-610e-45da-9e62-d9d1e5e8914b",
    ),
    ("Teams Reader", "1076ac91-f3d9-41a7-a339-dcdf5f480acc"),
    (
        "Usage Summary Reports Reader",
        "75934031-6c7e-415a-99d7-48dbd49e875e",
    ),
    ("User Administrator", "fe930be7-5e62-47db-91af-98c3a49a38b1"),
    (
        "User Experience Success Manager",
        "27460883-1df1-4691-b032-3b79643e5e63",
    ),
];

/// What `"preset:NAME"` in `roles` stands for: (preset name, role display names).
pub const PRESETS: &[(&str, &[&str])] = &[(
    // CoreView's "Advanced management" service account (issue 15): the roles CoreView
    // assigns the account it creates.
    "coreview",
    &[
        "Authentication Administrator",
        "Exchange Administrator",
        "SharePoint Administrator",
        "Teams Administrator",
        "User Administrator",
        "Global Reader",
        "Reports Reader",
    ],
)];

/// The prefix of a preset in `roles`.
pub const PRESET_PREFIX: &str = "preset:";

/// One declared role, resolved.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Role {
    /// The role template id, lowercase (Graph's `roleDefinitionId`).
    pub id: String,
    /// The display name, or the id for a role declared by id that this table does not know.
    pub name: String,
}

/// The display name of a template id, if the table knows it.
pub fn name_of(id: &str) -> Option<&'static str> {
    BUILT_IN
        .iter()
        .find(|(_, i)| i.eq_ignore_ascii_case(id))
        .map(|(n, _)| *n)
}

/// One entry of `roles`: a display name, a template id or `preset:NAME`, into its roles; an
/// unknown one into the message that names the closest known names.
pub fn resolve(entry: &str) -> Result<Vec<Role>, String> {
    let entry_t = entry.trim();
    if let Some(preset) = entry_t.strip_prefix(PRESET_PREFIX) {
        return match PRESETS
            .iter()
            .find(|(p, _)| p.eq_ignore_ascii_case(preset.trim()))
        {
            Some((_, names)) => names.iter().map(|n| resolve_one(n)).collect(),
            None => Err(format!(
                "{entry:?} is not a preset; the presets are: {}",
                PRESETS
                    .iter()
                    .map(|(p, _)| format!("\"{PRESET_PREFIX}{p}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        };
    }
    resolve_one(entry_t).map(|r| vec![r])
}

fn resolve_one(entry: &str) -> Result<Role, String> {
    if let Ok(id) = uuid::Uuid::parse_str(entry) {
        let id = id.hyphenated().to_string();
        let name = name_of(&id)
            .map(str::to_owned)
            .unwrap_or_else(|| id.clone());
        return Ok(Role { id, name });
    }
    if let Some((name, id)) = BUILT_IN.iter().find(|(n, _)| n.eq_ignore_ascii_case(entry)) {
        return Ok(Role {
            id: (*id).to_owned(),
            name: (*name).to_owned(),
        });
    }
    let close = close_matches(entry);
    let hint = if close.is_empty() {
        String::new()
    } else {
        format!(
            "; did you mean {}?",
            close
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(" or ")
        )
    };
    Err(format!(
        "{entry:?} is not a built-in Entra role keyturn knows{hint} (write the display name as Microsoft's \"Microsoft Entra built-in roles\" page spells it, a role template id, or \"{PRESET_PREFIX}coreview\"; docs/configuration.md)"
    ))
}

/// Up to three known names closest to `entry` (Jaro-Winkler on lowercase, as clap suggests
/// subcommands), best first.
fn close_matches(entry: &str) -> Vec<&'static str> {
    let lower = entry.to_lowercase();
    let mut scored: Vec<(f64, &'static str)> = BUILT_IN
        .iter()
        .map(|(n, _)| (strsim::jaro_winkler(&lower, &n.to_lowercase()), *n))
        .filter(|(s, _)| *s >= 0.8)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().take(3).map(|(_, n)| n).collect()
}

/// Every entry of a `roles` list, resolved, deduplicated and sorted by id; every unknown
/// entry as `(index, message)`.
pub fn resolve_all(entries: &[String]) -> (Vec<Role>, Vec<(usize, String)>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        match resolve(e) {
            Ok(r) => out.extend(r),
            Err(m) => problems.push((i, m)),
        }
    }
    out.sort();
    out.dedup_by(|a, b| a.id == b.id);
    (out, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_presets_and_ids_resolve() {
        let r = resolve("user administrator").unwrap();
        assert_eq!(r[0].id, "fe930be7-5e62-47db-91af-98c3a49a38b1");
        assert_eq!(r[0].name, "User Administrator");
        let core = resolve("preset:coreview").unwrap();
        assert_eq!(core.len(), 7);
        let id = resolve("7BE44C8A-ADAF-4E2A-84D6-AB2649E08A13").unwrap();
        assert_eq!(id[0].name, "Privileged Authentication Administrator");
        assert_eq!(id[0].id, "7be44c8a-adaf-4e2a-84d6-ab2649e08a13");
        let custom = resolve("0a0a0a0a-1b1b-4c2c-8d3d-4e4e4e4e4e4e").unwrap();
        assert_eq!(custom[0].name, custom[0].id);
    }

    #[test]
    fn an_unknown_name_names_the_close_ones() {
        let e = resolve("User Adminstrator").unwrap_err();
        assert!(e.contains("did you mean \"User Administrator\""), "{e}");
        let e = resolve("preset:corview").unwrap_err();
        assert!(e.contains("\"preset:coreview\""), "{e}");
        let e = resolve("Sharepoint Admin").unwrap_err();
        assert!(e.contains("SharePoint Administrator"), "{e}");
    }

    #[test]
    fn the_table_has_no_duplicates_and_every_preset_name_is_in_it() {
        let mut ids: Vec<_> = BUILT_IN.iter().map(|(_, i)| *i).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), BUILT_IN.len());
        for (_, names) in PRESETS {
            for n in *names {
                assert!(name_of(resolve(n).unwrap()[0].id.as_str()).is_some());
            }
        }
    }
}
