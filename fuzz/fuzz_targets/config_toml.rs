//! The configuration file parser: any text gives a config or an error, never a panic.
//! Relative passfiles resolve under a directory that does not exist, so no
//! file outside the input is read.
#![no_main]

use std::path::Path;

use carpd::config::DaemonConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/nonexistent/carpd-fuzz/carpd.toml");
    match DaemonConfig::from_toml_str(text, path) {
        Ok(c) => {
            assert!(!c.vhosts.is_empty());
            for v in &c.vhosts {
                assert!(v.proto.validate().is_ok(), "{v:?}");
                assert!(v.carp_if_config().validate().is_ok(), "{v:?}");
            }
        }
        Err(e) => {
            // Every message names its place in the file.
            assert!(
                e.to_string()
                    .starts_with("/nonexistent/carpd-fuzz/carpd.toml"),
                "{e}"
            );
        }
    }
});
