//! The control socket's request parser: any line gives a request or an
//! error, never a panic, and an accepted request survives a round trip.
#![no_main]

use carpd::control::types::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(req) = serde_json::from_str::<Request>(line) {
        let again = serde_json::to_string(&req).expect("a request serialises");
        assert_eq!(serde_json::from_str::<Request>(&again).ok(), Some(req));
    }
});
