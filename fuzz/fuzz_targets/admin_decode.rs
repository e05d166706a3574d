//! The admin protocol decoder never panics, and what it accepts round-trips.
#![no_main]
use keyturn::admin::proto::decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else { return };
    if let Ok(request) = decode(line) {
        assert_eq!(decode(&request.encode()).as_ref(), Ok(&request));
    }
});
