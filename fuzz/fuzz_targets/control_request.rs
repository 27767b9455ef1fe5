//! `control::decode_request` on arbitrary bytes: no panic, and whatever decodes
//! re-encodes to JSON that decodes to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use control::{MAX_REQUEST, decode_request};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = decode_request(data, MAX_REQUEST) else {
        return;
    };
    let first = serde_json::to_value(&req).expect("a decoded request serializes");
    let line = serde_json::to_string(&req).expect("a decoded request serializes");
    let again = decode_request(line.as_bytes(), usize::MAX)
        .unwrap_or_else(|e| panic!("re-encoded request {line} does not decode: {e}"));
    let second = serde_json::to_value(&again).expect("a decoded request serializes");
    assert_eq!(first, second, "round trip of {line}");
});
