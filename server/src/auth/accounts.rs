//! User and group lookups through the C library (NSS), so names in the
//! configuration resolve the way `id` and `getent` resolve them — including
//! LDAP or sssd accounts, which reading /etc/passwd would miss.
//!
//! The only `unsafe` of the auth module lives here, behind two safe functions.

use std::ffi::CString;

/// Looks up a user name; `Ok(None)` when there is no such user.
pub fn uid_by_name(name: &str) -> std::io::Result<Option<u32>> {
    let name = c_name(name)?;
    lookup(|buf, len, found| {
        // SAFETY: `pwd` is plain C data that getpwnam_r fills in; `buf` is a
        // live buffer of `len` bytes for the strings it points into; `found`
        // is a valid out-pointer. None of it outlives this call: only the uid
        // (a copy) is read afterwards.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::getpwnam_r(name.as_ptr(), &mut pwd, buf, len, found.cast()) };
        (rc, pwd.pw_uid)
    })
}

/// Looks up a group name; `Ok(None)` when there is no such group.
pub fn gid_by_name(name: &str) -> std::io::Result<Option<u32>> {
    let name = c_name(name)?;
    lookup(|buf, len, found| {
        // SAFETY: as in `uid_by_name`, for getgrnam_r and `struct group`.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::getgrnam_r(name.as_ptr(), &mut grp, buf, len, found.cast()) };
        (rc, grp.gr_gid)
    })
}

fn c_name(name: &str) -> std::io::Result<CString> {
    CString::new(name).map_err(|_| std::io::Error::other("a name cannot contain NUL"))
}

/// Runs a `get*nam_r` call, growing the string buffer on ERANGE.
fn lookup(
    call: impl Fn(*mut libc::c_char, usize, *mut *mut libc::c_void) -> (libc::c_int, u32),
) -> std::io::Result<Option<u32>> {
    let mut buf = vec![0u8; 1024];
    loop {
        let mut found: *mut libc::c_void = std::ptr::null_mut();
        let (rc, id) = call(buf.as_mut_ptr().cast(), buf.len(), &mut found);
        match rc {
            0 if found.is_null() => return Ok(None),
            0 => return Ok(Some(id)),
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            // Unknown names are reported as these by some NSS modules.
            libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => return Ok(None),
            errno => return Err(std::io::Error::from_raw_os_error(errno)),
        }
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
