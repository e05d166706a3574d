//! Passwords: the policy, the generator and the secret-holding type.
//!
//! A [`Password`] is zeroized on drop and never printed: its `Debug` shows
//! `Password(<redacted>)` and it has no `Display`. The only way to read it is
//! [`Password::expose`], which is called where a password must leave the
//! process (the Key Vault and Graph request bodies) and nowhere else.

use rand::seq::SliceRandom;
use rand::{CryptoRng, Rng, RngCore, TryRngCore};
use serde::Deserialize;
use zeroize::Zeroizing;

/// Upper-case letters Entra ID accepts.
pub const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
/// Lower-case letters Entra ID accepts.
pub const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
/// Digits Entra ID accepts.
pub const DIGITS: &str = "0123456789";
/// Symbols Entra ID accepts (space excluded; see [`PasswordPolicy::allow_space`]).
pub const SYMBOLS: &str = "@#$%^&*-_!+=[]{}|\\:',.?/`~\"();<>";

/// Shortest password Entra ID accepts.
pub(crate) const MIN_LENGTH: usize = 8;
/// Longest password Entra ID accepts.
pub(crate) const MAX_LENGTH: usize = 256;
/// The default length: the CoreView management account's policy.
pub(crate) const DEFAULT_LENGTH: usize = 16;

/// A password held in memory. Zeroized on drop; never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(Zeroizing<String>);

impl Password {
    /// Wraps a value read from Key Vault or generated here.
    pub fn new(value: String) -> Self {
        Password(Zeroizing::new(value))
    }

    /// The characters of the password. Call only to put it on the wire.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    /// Number of characters.
    pub fn len(&self) -> usize {
        self.0.chars().count()
    }

    /// True for an empty password (never generated; may come from a bad secret).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// How passwords for an account are made.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
// Unknown keys are reported by the config loader with their full path (serde_ignored).
#[serde(default)]
pub struct PasswordPolicy {
    /// Number of characters, 8 to 256 (Entra ID's limits); 16 by default.
    pub length: usize,
    /// Characters never to use, e.g. those that break a consumer's config format.
    pub exclude: String,
    /// Require at least one upper-case letter.
    pub require_upper: bool,
    /// Require at least one lower-case letter.
    pub require_lower: bool,
    /// Require at least one digit.
    pub require_digit: bool,
    /// Require at least one symbol.
    pub require_symbol: bool,
    /// Allow the space character (Entra accepts it; many consumers do not).
    pub allow_space: bool,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        PasswordPolicy {
            length: DEFAULT_LENGTH,
            exclude: String::new(),
            require_upper: true,
            require_lower: true,
            require_digit: true,
            require_symbol: true,
            allow_space: false,
        }
    }
}

/// Why a policy cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("length {0} is outside Entra ID's limits: use a length from 8 to 256")]
    Length(usize),
    #[error("every {0} is excluded, but the policy requires one: remove some of them from `exclude` or stop requiring the class")]
    ClassEmpty(&'static str),
    #[error("`exclude` names {0:?}, which is not a character Entra ID accepts anyway: remove it")]
    ExcludeUnknown(char),
    #[error("the policy requires {required} character classes but the length is {length}: use a longer password")]
    TooShort { required: usize, length: usize },
    #[error("Entra ID needs 3 of the 4 character classes (upper, lower, digit, symbol), but this policy allows only {0}: exclude fewer characters")]
    TooFewClasses(usize),
}

/// The character classes a policy draws from, after exclusions.
#[derive(Debug, Clone)]
struct Classes {
    /// (class name, its characters, whether one is required)
    sets: Vec<(&'static str, Vec<char>, bool)>,
}

impl PasswordPolicy {
    /// Checks that passwords can be made under this policy and that Entra ID will accept them.
    pub fn validate(&self) -> Result<(), PolicyError> {
        self.classes().map(|_| ())
    }

    fn classes(&self) -> Result<Classes, PolicyError> {
        if !(MIN_LENGTH..=MAX_LENGTH).contains(&self.length) {
            return Err(PolicyError::Length(self.length));
        }
        let space = if self.allow_space { " " } else { "" };
        let all: String = [UPPER, LOWER, DIGITS, SYMBOLS, space].concat();
        if let Some(c) = self.exclude.chars().find(|c| !all.contains(*c)) {
            return Err(PolicyError::ExcludeUnknown(c));
        }
        let keep =
            |s: &str| -> Vec<char> { s.chars().filter(|c| !self.exclude.contains(*c)).collect() };
        let mut symbols = keep(SYMBOLS);
        symbols.extend(keep(space));
        let sets = vec![
            ("upper-case letter", keep(UPPER), self.require_upper),
            ("lower-case letter", keep(LOWER), self.require_lower),
            ("digit", keep(DIGITS), self.require_digit),
            ("symbol", symbols, self.require_symbol),
        ];
        for (name, chars, required) in &sets {
            if *required && chars.is_empty() {
                return Err(PolicyError::ClassEmpty(name));
            }
        }
        let available = sets.iter().filter(|(_, c, _)| !c.is_empty()).count();
        if available < 3 {
            return Err(PolicyError::TooFewClasses(available));
        }
        let required = sets.iter().filter(|(_, _, r)| *r).count();
        // With fewer than 3 required classes a draw could still miss Entra's 3-of-4 rule,
        // so the generator always guarantees at least 3 classes (see `generate`).
        let guaranteed = required.max(3);
        if guaranteed > self.length {
            return Err(PolicyError::TooShort {
                required: guaranteed,
                length: self.length,
            });
        }
        Ok(Classes { sets })
    }

    /// Makes a password from the operating system's CSPRNG.
    pub fn generate(&self) -> Result<Password, PolicyError> {
        let mut rng = rand::rngs::OsRng.unwrap_err();
        self.generate_with(&mut rng)
    }

    /// Makes a password from the given cryptographically secure generator.
    ///
    /// One character of each guaranteed class is drawn from that class, the rest from
    /// the union of all allowed characters (each draw uniform, without modulo bias:
    /// `gen_range` uses rejection sampling), then the whole is shuffled uniformly
    /// (Fisher-Yates), so a class's guaranteed character can stand anywhere.
    pub fn generate_with<R: RngCore + CryptoRng>(
        &self,
        rng: &mut R,
    ) -> Result<Password, PolicyError> {
        let classes = self.classes()?;
        let mut guaranteed: Vec<&Vec<char>> = classes
            .sets
            .iter()
            .filter(|(_, c, r)| *r && !c.is_empty())
            .map(|(_, c, _)| c)
            .collect();
        // Entra ID wants 3 of 4 classes: top up with optional classes when fewer are required.
        for (_, chars, required) in &classes.sets {
            if guaranteed.len() >= 3 {
                break;
            }
            if !required && !chars.is_empty() {
                guaranteed.push(chars);
            }
        }
        let union: Vec<char> = classes
            .sets
            .iter()
            .flat_map(|(_, c, _)| c.iter().copied())
            .collect();
        let mut chars: Zeroizing<Vec<char>> = Zeroizing::new(Vec::with_capacity(self.length));
        for set in &guaranteed {
            chars.push(set[rng.random_range(0..set.len())]);
        }
        while chars.len() < self.length {
            chars.push(union[rng.random_range(0..union.len())]);
        }
        chars.shuffle(rng);
        Ok(Password::new(chars.iter().collect()))
    }

    /// True when `c` may appear in passwords of this policy.
    pub fn allows(&self, c: char) -> bool {
        let space = self.allow_space && c == ' ';
        (space
            || UPPER.contains(c)
            || LOWER.contains(c)
            || DIGITS.contains(c)
            || SYMBOLS.contains(c))
            && !self.exclude.contains(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn class_of(c: char) -> usize {
        if UPPER.contains(c) {
            0
        } else if LOWER.contains(c) {
            1
        } else if DIGITS.contains(c) {
            2
        } else {
            3
        }
    }

    #[test]
    fn default_policy_makes_16_characters_with_every_class() {
        let policy = PasswordPolicy::default();
        for _ in 0..2_000 {
            let p = policy.generate().unwrap();
            assert_eq!(p.len(), 16);
            let mut seen = [false; 4];
            for c in p.expose().chars() {
                assert!(policy.allows(c), "character {c:?} outside the allowed set");
                seen[class_of(c)] = true;
            }
            assert_eq!(seen, [true; 4], "a class is missing");
        }
    }

    #[test]
    fn exclusions_are_honoured() {
        let policy = PasswordPolicy {
            exclude: "\"'\\`;<>".into(),
            length: 40,
            ..PasswordPolicy::default()
        };
        for _ in 0..500 {
            let p = policy.generate().unwrap();
            assert!(!p.expose().chars().any(|c| "\"'\\`;<>".contains(c)));
        }
    }

    #[test]
    fn characters_are_uniform_chi_square() {
        // Draw many long passwords with only the mandatory characters' influence diluted,
        // then test the non-guaranteed positions' distribution with a chi-square test.
        let policy = PasswordPolicy {
            length: 256,
            ..PasswordPolicy::default()
        };
        let alphabet: Vec<char> = [UPPER, LOWER, DIGITS, SYMBOLS].concat().chars().collect();
        let mut counts: HashMap<char, u64> = alphabet.iter().map(|c| (*c, 0)).collect();
        let mut total = 0u64;
        for _ in 0..400 {
            for c in policy.generate().unwrap().expose().chars() {
                *counts.get_mut(&c).expect("character outside the alphabet") += 1;
                total += 1;
            }
        }
        // The 4 guaranteed draws per password add 4/256 of mass spread over classes; the
        // expectation accounts for it: P(c) = (252/256)/K + (1/256)/|class(c)|.
        let k = alphabet.len() as f64;
        let class_len = [26.0, 26.0, 10.0, SYMBOLS.chars().count() as f64];
        let mut chi2 = 0.0;
        for (c, n) in &counts {
            let p = (252.0 / 256.0) / k + (1.0 / 256.0) / class_len[class_of(*c)];
            let e = p * total as f64;
            chi2 += (*n as f64 - e).powi(2) / e;
        }
        // 93 degrees of freedom: the 0.9999 quantile is about 150.
        assert!(chi2 < 150.0, "chi-square {chi2:.1} says the draw is biased");
    }

    #[test]
    fn every_position_can_hold_every_class() {
        // The shuffle must move guaranteed characters: position 0 is not always upper-case.
        let policy = PasswordPolicy::default();
        let mut first = [0u32; 4];
        for _ in 0..2_000 {
            let p = policy.generate().unwrap();
            first[class_of(p.expose().chars().next().unwrap())] += 1;
        }
        assert!(first.iter().all(|n| *n > 50), "{first:?}");
    }

    #[test]
    fn debug_never_shows_the_value() {
        let p = PasswordPolicy::default().generate().unwrap();
        let shown = format!("{p:?}");
        assert!(!shown.contains(p.expose()));
        assert_eq!(shown, "Password(<redacted>)");
    }

    #[test]
    fn policy_validation() {
        let bad = |p: PasswordPolicy| p.validate().unwrap_err();
        assert_eq!(
            bad(PasswordPolicy {
                length: 7,
                ..Default::default()
            }),
            PolicyError::Length(7)
        );
        assert_eq!(
            bad(PasswordPolicy {
                length: 257,
                ..Default::default()
            }),
            PolicyError::Length(257)
        );
        assert_eq!(
            bad(PasswordPolicy {
                exclude: DIGITS.into(),
                ..Default::default()
            }),
            PolicyError::ClassEmpty("digit")
        );
        assert_eq!(
            bad(PasswordPolicy {
                exclude: "é".into(),
                ..Default::default()
            }),
            PolicyError::ExcludeUnknown('é')
        );
        assert_eq!(
            bad(PasswordPolicy {
                exclude: [DIGITS, SYMBOLS].concat(),
                require_digit: false,
                require_symbol: false,
                ..Default::default()
            }),
            PolicyError::TooFewClasses(2)
        );
        assert!(PasswordPolicy {
            length: 8,
            ..Default::default()
        }
        .validate()
        .is_ok());
        assert!(PasswordPolicy {
            length: 256,
            ..Default::default()
        }
        .validate()
        .is_ok());
    }

    #[test]
    fn fewer_required_classes_still_meet_entra_three_of_four() {
        let policy = PasswordPolicy {
            length: 8,
            require_upper: false,
            require_lower: false,
            require_digit: false,
            require_symbol: false,
            ..Default::default()
        };
        for _ in 0..2_000 {
            let p = policy.generate().unwrap();
            let mut seen = [false; 4];
            for c in p.expose().chars() {
                seen[class_of(c)] = true;
            }
            assert!(seen.iter().filter(|s| **s).count() >= 3);
        }
    }
}
