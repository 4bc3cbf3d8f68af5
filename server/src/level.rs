//! MCS levels and category ranges: strict parsing, canonical formatting, and
//! the bijection between category pairs and dense pair indices.
//!
//! mcsd hands out levels of exactly one shape, `s0:cX,cY` with `X < Y`: the
//! sensitivity is always `s0` (MCS, not MLS) and a container gets two
//! distinct categories. The allocator works on dense indices `0..n(n-1)/2`
//! instead of pairs so its free set is a flat array; [`CategoryRange`] maps
//! between the two in O(1).

use std::fmt;
use std::str::FromStr;

/// The largest category number SELinux MCS policies define (`c1023`).
pub const MAX_CATEGORY: u16 = 1023;

/// Why a level, category or range string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LevelError {
    /// The text does not have the expected shape at all.
    #[error("{input:?} is not {expected}")]
    Syntax {
        /// What was given.
        input: String,
        /// The expected shape, e.g. "a level of the form s0:cX,cY".
        expected: &'static str,
    },
    /// A category number above `c1023`.
    #[error("category c{number} is out of bounds: categories go from c0 to c{MAX_CATEGORY}")]
    CategoryTooLarge {
        /// The number given.
        number: u32,
    },
    /// A sensitivity other than `s0`.
    #[error(
        "sensitivity {found:?} is not supported: mcsd hands out MCS levels, which are always s0"
    )]
    Sensitivity {
        /// The sensitivity given.
        found: String,
    },
    /// Both categories of a pair are the same.
    #[error("{input:?} names c{category} twice: a pair needs two different categories")]
    Duplicate {
        /// What was given.
        input: String,
        /// The repeated category.
        category: u16,
    },
    /// The categories are not in ascending order.
    #[error("{input:?} is not canonical: write the lower category first (s0:c{low},c{high})")]
    Order {
        /// What was given.
        input: String,
        /// The lower category.
        low: u16,
        /// The higher category.
        high: u16,
    },
    /// A range whose first category is not below its last one.
    #[error("range {input:?} is empty or reversed: it needs at least two categories, lowest first (e.g. c0.c1023)")]
    EmptyRange {
        /// What was given.
        input: String,
    },
}

/// One MCS category, `c0` to `c1023`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Category(u16);

impl Category {
    /// The category with this number, if it is at most [`MAX_CATEGORY`].
    pub fn new(number: u16) -> Option<Self> {
        (number <= MAX_CATEGORY).then_some(Self(number))
    }

    /// The category's number.
    pub fn number(self) -> u16 {
        self.0
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

impl FromStr for Category {
    type Err = LevelError;

    /// Parses `cN` strictly: decimal digits, no sign, no leading zeros.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.strip_prefix('c').ok_or_else(|| LevelError::Syntax {
            input: s.to_owned(),
            expected: "a category of the form cN",
        })?;
        let number = parse_number(digits).ok_or_else(|| LevelError::Syntax {
            input: s.to_owned(),
            expected: "a category of the form cN (decimal, no leading zeros)",
        })?;
        u16::try_from(number)
            .ok()
            .and_then(Category::new)
            .ok_or(LevelError::CategoryTooLarge { number })
    }
}

/// Parses a canonical decimal number: ASCII digits, no leading zeros, no sign.
fn parse_number(digits: &str) -> Option<u32> {
    let canonical = !digits.is_empty()
        && digits.len() <= 5
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if canonical {
        digits.parse().ok()
    } else {
        None
    }
}

/// An MCS level as mcsd hands it out: `s0:cX,cY` with `X < Y`.
///
/// The constructor enforces the order, so a `Level` is always canonical and
/// two equal pairs always compare equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Level {
    low: Category,
    high: Category,
}

impl Level {
    /// The level `s0:low,high`, if `low < high`.
    pub fn new(low: Category, high: Category) -> Option<Self> {
        (low < high).then_some(Self { low, high })
    }

    /// The lower category.
    pub fn low(self) -> Category {
        self.low
    }

    /// The higher category.
    pub fn high(self) -> Category {
        self.high
    }

    /// Whether `category` is one of the pair.
    pub fn contains(self, category: Category) -> bool {
        self.low == category || self.high == category
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s0:{},{}", self.low, self.high)
    }
}

impl FromStr for Level {
    type Err = LevelError;

    /// Parses exactly `s0:cX,cY` with `X < Y`; anything else is refused with
    /// the reason (other sensitivities, ranges like `c1.c3`, spaces, leading
    /// zeros, reversed or repeated categories).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || LevelError::Syntax {
            input: s.to_owned(),
            expected: "a level of the form s0:cX,cY",
        };
        let (sensitivity, categories) = s.split_once(':').ok_or_else(syntax)?;
        if sensitivity != "s0" {
            let looks_like_sensitivity = sensitivity
                .strip_prefix('s')
                .is_some_and(|n| parse_number(n).is_some());
            return Err(if looks_like_sensitivity {
                LevelError::Sensitivity {
                    found: sensitivity.to_owned(),
                }
            } else {
                syntax()
            });
        }
        let (first, second) = categories.split_once(',').ok_or_else(syntax)?;
        let first: Category = first.parse().map_err(|e| match e {
            LevelError::Syntax { .. } => syntax(),
            other => other,
        })?;
        let second: Category = second.parse().map_err(|e| match e {
            LevelError::Syntax { .. } => syntax(),
            other => other,
        })?;
        match first.cmp(&second) {
            std::cmp::Ordering::Less => Ok(Level {
                low: first,
                high: second,
            }),
            std::cmp::Ordering::Equal => Err(LevelError::Duplicate {
                input: s.to_owned(),
                category: first.number(),
            }),
            std::cmp::Ordering::Greater => Err(LevelError::Order {
                input: s.to_owned(),
                low: second.number(),
                high: first.number(),
            }),
        }
    }
}

/// Dense index of a pair within a [`CategoryRange`]: `0..range.pairs()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PairIndex(pub u32);

/// The contiguous categories mcsd may hand out, e.g. `c0.c1023`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CategoryRange {
    first: Category,
    last: Category,
}

impl CategoryRange {
    /// The full MCS range, `c0.c1023`: 523,776 pairs.
    pub const FULL: CategoryRange = CategoryRange {
        first: Category(0),
        last: Category(MAX_CATEGORY),
    };

    /// The range `first..=last`, if it holds at least two categories.
    pub fn new(first: Category, last: Category) -> Option<Self> {
        (first < last).then_some(Self { first, last })
    }

    /// The lowest category of the range.
    pub fn first(self) -> Category {
        self.first
    }

    /// The highest category of the range.
    pub fn last(self) -> Category {
        self.last
    }

    /// Number of categories in the range.
    pub fn categories(self) -> u32 {
        u32::from(self.last.0 - self.first.0) + 1
    }

    /// Number of distinct pairs `cX,cY` (X < Y) the range holds.
    pub fn pairs(self) -> u32 {
        let n = self.categories();
        n * (n - 1) / 2
    }

    /// Whether the category lies inside the range.
    pub fn contains(self, category: Category) -> bool {
        self.first <= category && category <= self.last
    }

    /// Whether both categories of the level lie inside the range.
    pub fn contains_level(self, level: Level) -> bool {
        self.contains(level.low) && self.contains(level.high)
    }

    /// Index of the first pair whose lower category is the `row`-th of the
    /// range. Rows shrink by one: row `a` holds `n - 1 - a` pairs.
    fn row_start(self, row: u32) -> u32 {
        let n = self.categories();
        row * (2 * n - row - 1) / 2
    }

    /// The dense index of `level`, or `None` if it lies outside the range.
    pub fn index_of(self, level: Level) -> Option<PairIndex> {
        if !self.contains_level(level) {
            return None;
        }
        let a = u32::from(level.low.0 - self.first.0);
        let b = u32::from(level.high.0 - self.first.0);
        Some(PairIndex(self.row_start(a) + (b - a - 1)))
    }

    /// The level at a dense index; O(1): the row comes from the closed form
    /// of `row_start` and is corrected by at most one step for rounding.
    ///
    /// # Panics
    /// If `index` is not below [`Self::pairs`].
    pub fn level_at(self, index: PairIndex) -> Level {
        assert!(
            index.0 < self.pairs(),
            "pair index {} out of range",
            index.0
        );
        let n = f64::from(self.categories());
        let i = f64::from(index.0);
        let k = 2.0 * n - 1.0;
        let estimate = ((k - (k * k - 8.0 * i).sqrt()) / 2.0).floor();
        // The estimate is within one of the true row for n <= 1024.
        let mut row = estimate.max(0.0) as u32;
        while row > 0 && self.row_start(row) > index.0 {
            row -= 1;
        }
        while self.row_start(row + 1) <= index.0 {
            row += 1;
        }
        let col = index.0 - self.row_start(row);
        let low = self.first.0 + row as u16;
        let high = low + 1 + col as u16;
        Level {
            low: Category(low),
            high: Category(high),
        }
    }

    /// Every pair of the range that contains `category`, as indices.
    pub fn pairs_with(self, category: Category) -> impl Iterator<Item = PairIndex> {
        let range = self;
        let inside = self.contains(category);
        (self.first.0..=self.last.0)
            .filter(move |&other| inside && other != category.0)
            .map(move |other| {
                let (low, high) = if other < category.0 {
                    (other, category.0)
                } else {
                    (category.0, other)
                };
                range
                    .index_of(Level {
                        low: Category(low),
                        high: Category(high),
                    })
                    .expect("both categories are inside the range")
            })
    }
}

impl Default for CategoryRange {
    fn default() -> Self {
        Self::FULL
    }
}

impl fmt::Display for CategoryRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.first, self.last)
    }
}

impl FromStr for CategoryRange {
    type Err = LevelError;

    /// Parses `cA.cB` with `A < B`, e.g. `c0.c1023` or `c0.c9`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || LevelError::Syntax {
            input: s.to_owned(),
            expected: "a category range of the form cA.cB (e.g. c0.c1023)",
        };
        let (first, last) = s.split_once('.').ok_or_else(syntax)?;
        let map = |e| match e {
            LevelError::Syntax { .. } => syntax(),
            other => other,
        };
        let first: Category = first.parse().map_err(map)?;
        let last: Category = last.parse().map_err(map)?;
        CategoryRange::new(first, last).ok_or_else(|| LevelError::EmptyRange {
            input: s.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(s: &str) -> Level {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_formats_canonical_levels() {
        for s in ["s0:c0,c1", "s0:c5,c300", "s0:c1022,c1023"] {
            assert_eq!(level(s).to_string(), s);
        }
    }

    #[test]
    fn refuses_malformed_levels_with_the_reason() {
        let cases = [
            ("s0:c5,c5", "twice"),
            ("s0:c9,c1", "lower category first"),
            ("s1:c1,c2", "sensitivity"),
            ("s0:c1024,c1", "out of bounds"),
            ("s0:c1,c1024", "out of bounds"),
            ("s0:c01,c2", "s0:cX,cY"),
            ("s0:c1.c2", "s0:cX,cY"),
            ("s0:c1,c2,c3", "s0:cX,cY"),
            ("s0: c1,c2", "s0:cX,cY"),
            ("s0:c1,c2 ", "s0:cX,cY"),
            ("s0", "s0:cX,cY"),
            ("", "s0:cX,cY"),
            ("garbage", "s0:cX,cY"),
            ("s0:c-1,c2", "s0:cX,cY"),
            ("s0:c+1,c2", "s0:cX,cY"),
            ("s0:c99999999999,c2", "s0:cX,cY"),
            ("s0:c１,c2", "s0:cX,cY"),
            ("S0:c1,c2", "s0:cX,cY"),
        ];
        for (input, reason) in cases {
            let err = input.parse::<Level>().unwrap_err().to_string();
            assert!(err.contains(reason), "{input:?}: {err}");
        }
    }

    #[test]
    fn ranges_parse_and_count_pairs() {
        let full: CategoryRange = "c0.c1023".parse().unwrap();
        assert_eq!(full, CategoryRange::FULL);
        assert_eq!(full.pairs(), 523_776);
        let small: CategoryRange = "c0.c9".parse().unwrap();
        assert_eq!(small.pairs(), 45);
        assert_eq!(small.to_string(), "c0.c9");
        assert_eq!("c3.c4".parse::<CategoryRange>().unwrap().pairs(), 1);
        for bad in ["c5.c5", "c9.c0", "c0-c9", "c0.c1024", "0.9", "c0.", ""] {
            assert!(bad.parse::<CategoryRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn index_is_a_bijection_over_every_range_shape() {
        for (first, last) in [(0, 1), (0, 9), (3, 17), (100, 101), (0, 1023), (900, 1023)] {
            let range = CategoryRange::new(Category(first), Category(last)).unwrap();
            let mut expected = 0;
            for low in first..=last {
                for high in low + 1..=last {
                    let lvl = Level::new(Category(low), Category(high)).unwrap();
                    let idx = range.index_of(lvl).unwrap();
                    assert_eq!(idx.0, expected, "{lvl} in {range}");
                    assert_eq!(range.level_at(idx), lvl);
                    expected += 1;
                }
            }
            assert_eq!(expected, range.pairs());
        }
    }

    #[test]
    fn levels_outside_the_range_have_no_index() {
        let range: CategoryRange = "c10.c20".parse().unwrap();
        assert!(range.index_of(level("s0:c9,c15")).is_none());
        assert!(range.index_of(level("s0:c15,c21")).is_none());
        assert!(range.index_of(level("s0:c10,c20")).is_some());
    }

    #[test]
    fn pairs_with_a_category_are_exactly_those_containing_it() {
        let range: CategoryRange = "c2.c8".parse().unwrap();
        let c5 = Category::new(5).unwrap();
        let found: Vec<Level> = range.pairs_with(c5).map(|i| range.level_at(i)).collect();
        assert_eq!(found.len(), 6);
        assert!(found.iter().all(|l| l.contains(c5)));
        assert_eq!(range.pairs_with(Category::new(30).unwrap()).count(), 0);
    }
}
