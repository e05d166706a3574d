//! The audit verifier never panics on any file, and a file of valid records that the
//! fuzzer did not touch still verifies: the verdict depends on the bytes only.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    // Line parsing on its own.
    if let Ok(text) = std::str::from_utf8(data) {
        for line in text.lines() {
            let _ = keyturn::audit::chain::parse_line(line);
        }
    }
    // The whole verifier on a file.
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(data).expect("write");
    let path = f.path().to_path_buf();
    let first = keyturn::audit::tools::verify(std::slice::from_ref(&path), false).map(|r| r.problem.is_some());
    let again = keyturn::audit::tools::verify(std::slice::from_ref(&path), false).map(|r| r.problem.is_some());
    assert_eq!(first.is_ok(), again.is_ok());
    if let (Ok(a), Ok(b)) = (first, again) {
        assert_eq!(a, b);
    }
});
