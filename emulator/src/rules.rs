//! Entra's password rules and Key Vault's naming rules: checked when a scenario is parsed
//! (`scenario`), when the control API sets a password (`control`) and when a request arrives
//! (`graph`, `keyvault`). A leaf: it imports nothing from the crate.

/// Characters Entra accepts in passwords besides letters and digits (rotation-protocol.md).
pub(crate) const SYMBOLS: &str = "@#$%^&*-_!+=[]{}|\\:',.?/`~\"();<> ";

/// Entra's password rules: 8-256 characters from the allowed set, 3 of 4 classes.
pub(crate) fn check_password_rules(p: &str) -> Result<(), String> {
    let n = p.chars().count();
    if !(8..=256).contains(&n) {
        return Err(format!("length {n}: 8 to 256 characters"));
    }
    if let Some(c) = p
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || SYMBOLS.contains(*c)))
    {
        return Err(format!(
            "character {:?} is not allowed",
            c.escape_default().to_string()
        ));
    }
    let classes = [
        p.chars().any(|c| c.is_ascii_uppercase()),
        p.chars().any(|c| c.is_ascii_lowercase()),
        p.chars().any(|c| c.is_ascii_digit()),
        p.chars().any(|c| SYMBOLS.contains(c)),
    ];
    if classes.iter().filter(|x| **x).count() < 3 {
        return Err("needs 3 of: upper case, lower case, digit, symbol".into());
    }
    Ok(())
}

/// `^[0-9a-zA-Z-]{1,127}$`
pub(crate) fn valid_secret_name(n: &str) -> bool {
    (1..=127).contains(&n.len()) && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Vault names: 3-24 characters, letters, digits and '-'.
pub(crate) fn valid_vault_name(n: &str) -> bool {
    (3..=24).contains(&n.len()) && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}
