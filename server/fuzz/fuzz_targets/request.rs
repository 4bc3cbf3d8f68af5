//! Request validation: ids, owners and groups are accepted exactly when
//! they are 1-128 characters of [A-Za-z0-9_.:-], and kept unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcsd::id::{ContainerId, GroupKey, Owner};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let valid = !s.is_empty()
        && s.chars().count() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c));
    let id = ContainerId::new(s);
    assert_eq!(id.is_ok(), valid, "{s:?}");
    if let Ok(id) = id {
        assert_eq!(id.as_str(), s);
    }
    assert_eq!(Owner::new(s).is_ok(), valid);
    assert_eq!(GroupKey::new(s).is_ok(), valid);
});
