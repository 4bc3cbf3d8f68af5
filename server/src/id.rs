//! Validated identifiers: container ids, owners and group keys.
//!
//! All three are 1-128 characters of `[A-Za-z0-9_.:-]`. That alphabet covers
//! every id the container runtimes generate (64-hex ids, names, pod UIDs)
//! while keeping ids safe to print, log and embed in store keys. Validation
//! happens once, at the edge; the rest of mcsd only sees these types.

use std::fmt;

/// The longest identifier accepted, in characters.
pub const MAX_ID_LEN: usize = 128;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The identifier is the empty string.
    #[error("{field} is empty; it needs 1 to {MAX_ID_LEN} characters of [A-Za-z0-9_.:-]")]
    Empty {
        /// Which field ("container_id", "owner", "group").
        field: &'static str,
    },
    /// The identifier is longer than [`MAX_ID_LEN`].
    #[error("{field} is {len} characters long; the limit is {MAX_ID_LEN}")]
    TooLong {
        /// Which field.
        field: &'static str,
        /// Its length in characters.
        len: usize,
    },
    /// The identifier holds a character outside the alphabet.
    #[error("{field} contains {found:?} at position {position}; allowed are A-Z a-z 0-9 _ . : -")]
    BadChar {
        /// Which field.
        field: &'static str,
        /// The offending character.
        found: char,
        /// Its position, counting characters from 0.
        position: usize,
    },
}

/// The alphabet as a lookup table: one load per byte, no branches.
const ALLOWED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b':' | b'-');
        b += 1;
    }
    table
};

fn allowed(b: u8) -> bool {
    ALLOWED[b as usize]
}

fn validate(field: &'static str, value: &str) -> Result<(), IdError> {
    // Fast path: every stored record is validated again at start (523,776
    // of them at full pool), and nearly all ids are valid.
    if !value.is_empty()
        && value.len() <= MAX_ID_LEN
        && value.bytes().fold(true, |ok, b| ok & allowed(b))
    {
        return Ok(());
    }
    if value.is_empty() {
        return Err(IdError::Empty { field });
    }
    for (position, c) in value.chars().enumerate() {
        if position == MAX_ID_LEN {
            return Err(IdError::TooLong {
                field,
                len: value.chars().count(),
            });
        }
        if !(c.is_ascii() && allowed(c as u8)) {
            return Err(IdError::BadChar {
                field,
                found: c,
                position,
            });
        }
    }
    Ok(())
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates `value` (1-128 characters of `[A-Za-z0-9_.:-]`).
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                validate($field, &value)?;
                Ok(Self(value))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

identifier!(
    /// The runtime's id for a container; the key of an allocation.
    ContainerId,
    "container_id"
);
identifier!(
    /// Who asked for an allocation: a runtime or user, e.g. `podman`.
    Owner,
    "owner"
);
identifier!(
    /// A pod: all containers with the same group key share one level.
    GroupKey,
    "group"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_runtime_style_ids() {
        for ok in [
            "a",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "k8s_POD_web-0_default_6f1c.1",
            "pid:42",
            &"x".repeat(MAX_ID_LEN),
        ] {
            assert_eq!(ContainerId::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_bad_ids_naming_the_field_and_the_problem() {
        let cases = [
            ("", "container_id is empty"),
            (&*"x".repeat(MAX_ID_LEN + 1), "129 characters long"),
            ("a/b", "'/' at position 1"),
            ("a b", "' ' at position 1"),
            ("tab\there", "'\\t' at position 3"),
            ("nul\0", "'\\0' at position 3"),
            ("café", "'é' at position 3"),
            ("../etc", "'/' at position 2"),
        ];
        for (input, expected) in cases {
            let err = ContainerId::new(input).unwrap_err().to_string();
            assert!(err.contains(expected), "{input:?}: {err}");
        }
        assert!(Owner::new("").unwrap_err().to_string().starts_with("owner"));
        assert!(GroupKey::new("a;b")
            .unwrap_err()
            .to_string()
            .starts_with("group"));
    }

    #[test]
    fn too_long_is_reported_even_with_multibyte_characters() {
        let long = "é".repeat(200);
        let err = ContainerId::new(long).unwrap_err();
        assert!(matches!(err, IdError::BadChar { position: 0, .. }));
        let long_ascii_then_bad = format!("{}é", "a".repeat(MAX_ID_LEN));
        assert!(matches!(
            ContainerId::new(long_ascii_then_bad).unwrap_err(),
            IdError::TooLong { len: 129, .. }
        ));
    }
}
