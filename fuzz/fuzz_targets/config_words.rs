//! The ifconfig-style command line: NUL-separated words (the separator argv
//! itself uses) give vhosts or an error, never a panic.
#![no_main]

use carpd::config::DaemonConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut words: Vec<String> = text.split('\0').map(str::to_owned).collect();
    // Passfiles are read from disk: never let the fuzzer name a real file.
    for i in 1..words.len() {
        if words[i - 1] == "passfile" {
            words[i] = "/nonexistent/carpd-fuzz/key".to_owned();
        }
    }
    match DaemonConfig::from_command_line(false, 2, None, &words) {
        Ok(c) => {
            for v in &c.vhosts {
                assert!(v.proto.validate().is_ok(), "{v:?}");
                assert!(v.carp_if_config().validate().is_ok(), "{v:?}");
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with("word ") || msg.starts_with("command line"),
                "error without a place: {msg}"
            );
        }
    }
    let _ = DaemonConfig::from_ifconfig_words(&words);
});
