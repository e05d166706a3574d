//! The config loader never panics on any text, and every rejection names a key.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = keyturn::config::load_str(text, Path::new("fuzz.toml")) {
        for p in e.problems() {
            assert!(!p.key.is_empty() && !p.message.is_empty());
        }
    }
});
