//! The configuration file: any text gives a configuration or an error that
//! names a line inside the file; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcsd::config::{Config, ConfigError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = std::path::Path::new("/etc/mcsd/mcsd.toml");
    match Config::default().apply_toml(text, path) {
        Ok(_) => {}
        Err(ConfigError::Syntax { line, .. }) | Err(ConfigError::Value { line, .. }) => {
            assert!(
                line >= 1 && line <= text.lines().count().max(1) + 1,
                "line {line} outside the file"
            );
        }
        Err(e) => panic!("unexpected error kind: {e}"),
    }
});
