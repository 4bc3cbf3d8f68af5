//! Operator reservations: pairs or whole categories excluded from allocation.
//!
//! Operators reserve what other software on the host already uses (go-selinux
//! keeps `s0:c1022,c1023` for privileged containers' mounts, libvirt may own a
//! category) so mcsd never hands it out.

use std::fmt;
use std::str::FromStr;

use crate::level::{Category, CategoryRange, Level, LevelError, PairIndex};

/// What a reservation excludes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reservation {
    /// Every pair that contains this category.
    Category(Category),
    /// Exactly this pair.
    Pair(Level),
}

impl Reservation {
    /// Whether the reservation lies inside `range` (a reservation of
    /// categories the range does not hold would silently do nothing).
    pub fn fits(self, range: CategoryRange) -> bool {
        match self {
            Reservation::Category(c) => range.contains(c),
            Reservation::Pair(level) => range.contains_level(level),
        }
    }

    /// The pairs of `range` the reservation covers.
    pub fn covered(self, range: CategoryRange) -> Vec<PairIndex> {
        match self {
            Reservation::Category(c) => range.pairs_with(c).collect(),
            Reservation::Pair(level) => range.index_of(level).into_iter().collect(),
        }
    }
}

impl fmt::Display for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reservation::Category(c) => c.fmt(f),
            Reservation::Pair(level) => level.fmt(f),
        }
    }
}

impl FromStr for Reservation {
    type Err = LevelError;

    /// Parses `cN` (a category) or `s0:cX,cY` (a pair).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with('c') {
            s.parse().map(Reservation::Category)
        } else if s.starts_with('s') {
            s.parse().map(Reservation::Pair)
        } else {
            Err(LevelError::Syntax {
                input: s.to_owned(),
                expected: "a category (cN) or a level (s0:cX,cY)",
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms_canonically() {
        assert_eq!("c5".parse::<Reservation>().unwrap().to_string(), "c5");
        assert_eq!(
            "s0:c1,c2".parse::<Reservation>().unwrap().to_string(),
            "s0:c1,c2"
        );
        for bad in ["", "5", "c", "s0:c2,c1", "c1024", "x0"] {
            assert!(bad.parse::<Reservation>().is_err(), "{bad}");
        }
    }

    #[test]
    fn covers_the_right_pairs_and_knows_when_it_does_not_fit() {
        let range: CategoryRange = "c0.c9".parse().unwrap();
        let cat: Reservation = "c3".parse().unwrap();
        assert_eq!(cat.covered(range).len(), 9);
        let pair: Reservation = "s0:c1,c2".parse().unwrap();
        assert_eq!(pair.covered(range).len(), 1);
        assert!(!"c10".parse::<Reservation>().unwrap().fits(range));
        assert!(!"s0:c9,c10".parse::<Reservation>().unwrap().fits(range));
    }
}
