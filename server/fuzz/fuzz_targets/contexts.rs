//! Context templates and the host's contexts file: no panics; a template
//! that parses prints back to something that parses to the same template.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcsd::context::{parse_contexts, Template};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = s.parse::<Template>() {
        let again: Template = t.to_string().parse().expect("printed template parses");
        assert_eq!(again, t);
    }
    let _ = parse_contexts(s, std::path::Path::new("fuzz"));
});
