//! Any policy either is refused with a reason or makes passwords that obey it and Entra's
//! rules: the length, only allowed characters, every required class, at least 3 classes.
#![no_main]
use keyturn::password::{PasswordPolicy, DIGITS, LOWER, SYMBOLS, UPPER};
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;

fuzz_target!(|data: &[u8]| {
    if data.len() < 12 {
        return;
    }
    let length = u16::from_le_bytes([data[0], data[1]]) as usize % 300;
    let flags = data[2];
    let seed: [u8; 8] = data[3..11].try_into().unwrap();
    let exclude: String = String::from_utf8_lossy(&data[11..]).chars().take(120).collect();
    let policy = PasswordPolicy {
        length,
        exclude,
        require_upper: flags & 1 != 0,
        require_lower: flags & 2 != 0,
        require_digit: flags & 4 != 0,
        require_symbol: flags & 8 != 0,
        allow_space: flags & 16 != 0,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from_le_bytes(seed));
    match policy.generate_with(&mut rng) {
        Err(e) => assert!(policy.validate().is_err() && !e.to_string().is_empty()),
        Ok(p) => {
            let s = p.expose();
            assert_eq!(s.chars().count(), policy.length);
            assert!(s.chars().all(|c| policy.allows(c)));
            let has = |set: &str| s.chars().any(|c| set.contains(c));
            let classes = [UPPER, LOWER, DIGITS, SYMBOLS];
            let symbols_or_space = |c: char| SYMBOLS.contains(c) || c == ' ';
            assert!(!policy.require_upper || has(UPPER));
            assert!(!policy.require_lower || has(LOWER));
            assert!(!policy.require_digit || has(DIGITS));
            assert!(!policy.require_symbol || s.chars().any(symbols_or_space));
            let n = classes.iter().filter(|set| has(set)).count() + usize::from(!has(SYMBOLS) && s.contains(' '));
            assert!(n >= 3, "{n} classes");
        }
    }
});
