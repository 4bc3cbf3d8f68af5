//! Levels, categories, ranges and reservations: parsing never panics, and
//! whatever parses prints back to itself (the strict, canonical form).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcsd::level::{Category, CategoryRange, Level};
use mcsd::reservation::Reservation;

fn round_trip<T>(s: &str)
where
    T: std::str::FromStr + std::fmt::Display,
{
    if let Ok(v) = s.parse::<T>() {
        assert_eq!(v.to_string(), s, "parsed form must print back unchanged");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    round_trip::<Category>(s);
    round_trip::<Level>(s);
    round_trip::<CategoryRange>(s);
    round_trip::<Reservation>(s);
    if let Ok(level) = s.parse::<Level>() {
        assert!(level.low() < level.high());
        let range = CategoryRange::FULL;
        let index = range
            .index_of(level)
            .expect("every level is in the full range");
        assert_eq!(range.level_at(index), level);
    }
});
