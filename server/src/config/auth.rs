//! `[auth]`: who may call what. Users and groups may be given by number or
//! by name; names are looked up once, here, so a name that does not exist
//! is refused at its line instead of never matching.

use std::collections::BTreeSet;

use serde::Deserialize;
use toml::Spanned;

use super::error::Invalid;
use crate::auth::{accounts, AuthConfig};

/// `[auth]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuthSection {
    admin_uids: Option<Vec<Spanned<Account>>>,
    admin_groups: Option<Vec<Spanned<Account>>>,
    reader_uids: Option<Vec<Spanned<Account>>>,
    reader_groups: Option<Vec<Spanned<Account>>>,
    container_types: Option<Vec<Spanned<String>>>,
    allow_containers: Option<bool>,
}

/// A uid or gid given as a number or a name.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Account {
    Id(u32),
    Name(String),
}

/// Looks an account name up: `Ok(None)` when there is none.
type Lookup = fn(&str) -> std::io::Result<Option<u32>>;

impl AuthSection {
    /// The role members this table lists. The four lists replace
    /// `current`'s (a list left out is empty); `container_types` and
    /// `allow_containers` keep `current`'s when left out.
    pub(super) fn over(self, current: &AuthConfig) -> Result<AuthConfig, Invalid> {
        Ok(AuthConfig {
            admin_uids: ids(
                "auth.admin_uids",
                self.admin_uids,
                accounts::uid_by_name,
                "user",
            )?,
            admin_gids: ids(
                "auth.admin_groups",
                self.admin_groups,
                accounts::gid_by_name,
                "group",
            )?,
            reader_uids: ids(
                "auth.reader_uids",
                self.reader_uids,
                accounts::uid_by_name,
                "user",
            )?,
            reader_gids: ids(
                "auth.reader_groups",
                self.reader_groups,
                accounts::gid_by_name,
                "group",
            )?,
            container_types: match self.container_types {
                None => current.container_types.clone(),
                Some(list) => container_types(list)?,
            },
            allow_containers: self.allow_containers.unwrap_or(current.allow_containers),
        })
    }
}

/// The ids `list` names, each name looked up with `lookup` (`kind` says
/// what it names, for the message).
fn ids(
    key: &'static str,
    list: Option<Vec<Spanned<Account>>>,
    lookup: Lookup,
    kind: &str,
) -> Result<BTreeSet<u32>, Invalid> {
    let mut ids = BTreeSet::new();
    for entry in list.unwrap_or_default() {
        let span = entry.span();
        match entry.into_inner() {
            Account::Id(id) => ids.insert(id),
            Account::Name(name) => match lookup(&name) {
                Ok(Some(id)) => ids.insert(id),
                Ok(None) => {
                    return Err(Invalid::new(
                        key,
                        span,
                        format!(
                            "no {kind} named {name:?} on this host; create it or give a numeric id"
                        ),
                    ))
                }
                Err(e) => {
                    return Err(Invalid::new(
                        key,
                        span,
                        format!("cannot look up {kind} {name:?}: {e}"),
                    ))
                }
            },
        };
    }
    Ok(ids)
}

/// `container_types`: SELinux type names, not whole contexts.
fn container_types(list: Vec<Spanned<String>>) -> Result<BTreeSet<String>, Invalid> {
    let mut types = BTreeSet::new();
    for entry in list {
        let ty = entry.get_ref();
        if crate::auth::selinux_type(&format!("u:r:{ty}")) != Some(ty.as_str()) {
            return Err(Invalid::new(
                "auth.container_types",
                entry.span(),
                format!("{ty:?} is not an SELinux type name (letters, digits, '_', '.', '-'), such as \"container_t\""),
            ));
        }
        types.insert(entry.into_inner());
    }
    Ok(types)
}
