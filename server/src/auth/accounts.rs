//! User and group lookups through the C library (NSS, by way of `nix`), so
//! names in the configuration resolve the way `id` and `getent` resolve
//! them — including LDAP or sssd accounts, which reading /etc/passwd would
//! miss.

use nix::errno::Errno;
use nix::unistd::{Group, User};

/// Looks up a user name; `Ok(None)` when there is no such user.
pub fn uid_by_name(name: &str) -> std::io::Result<Option<u32>> {
    check(name)?;
    found(User::from_name(name).map(|u| u.map(|u| u.uid.as_raw())))
}

/// Looks up a group name; `Ok(None)` when there is no such group.
pub fn gid_by_name(name: &str) -> std::io::Result<Option<u32>> {
    check(name)?;
    found(Group::from_name(name).map(|g| g.map(|g| g.gid.as_raw())))
}

/// `nix` answers "no such name" for a name with a NUL, which no account
/// can have: say what is wrong instead.
fn check(name: &str) -> std::io::Result<()> {
    if name.contains('\0') {
        return Err(std::io::Error::other("a name cannot contain NUL"));
    }
    Ok(())
}

fn found(result: nix::Result<Option<u32>>) -> std::io::Result<Option<u32>> {
    match result {
        Ok(id) => Ok(id),
        // Unknown names are reported as these by some NSS modules.
        Err(Errno::ENOENT | Errno::ESRCH | Errno::EBADF | Errno::EPERM) => Ok(None),
        Err(errno) => Err(errno.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_root_and_refuses_unknown_names() {
        assert_eq!(uid_by_name("root").unwrap(), Some(0));
        assert_eq!(gid_by_name("root").unwrap(), Some(0));
        assert_eq!(uid_by_name("no-such-user-mcsd").unwrap(), None);
        assert_eq!(gid_by_name("no-such-group-mcsd").unwrap(), None);
        assert!(uid_by_name("a\0b").is_err());
    }
}
