//! Reading and writing an entry's SELinux label without following links.
//!
//! Entries are named relative to an open directory, through that
//! directory's `/proc/self/fd/N` path: the kernel resolves the directory by
//! its descriptor, so renaming anything above it cannot redirect the call,
//! and the `l*xattr` calls never follow a final symlink. Directories are
//! labeled through their own open descriptor (`f*xattr`), which also keeps a
//! mount point's label untouched when the walk does not cross into it.
//! Everything here is safe Rust over rustix's syscalls.

use std::ffi::{CStr, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::XattrFlags;

/// The extended attribute that holds an SELinux label.
pub const SELINUX_XATTR: &CStr = c"security.selinux";

/// Labels are far shorter; a longer one is reported, not truncated.
const MAX_LABEL: usize = 4096;

/// A label as stored: the context, without the trailing NUL the kernel and
/// libselinux add.
pub fn trim(label: &[u8]) -> &[u8] {
    label.strip_suffix(b"\0").unwrap_or(label)
}

/// The `/proc/self/fd/N/name` path of `name` inside `dir`.
pub fn entry_path(dir: BorrowedFd<'_>, name: &CStr) -> Vec<u8> {
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name.to_bytes());
    path
}

fn read(result: io::Result<usize>, buf: &[u8]) -> io::Result<Option<Vec<u8>>> {
    match result {
        Ok(n) => Ok(Some(trim(&buf[..n]).to_vec())),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NODATA.raw_os_error()) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The label of the entry at `path` (an [`entry_path`]); `None` if it has
/// none.
pub fn get_at(path: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let mut buf = [0u8; MAX_LABEL];
    let path = OsStr::from_bytes(path);
    read(
        rustix::fs::lgetxattr(path, SELINUX_XATTR, &mut buf[..]).map_err(io::Error::from),
        &buf,
    )
}

/// Sets the label of the entry at `path` (an [`entry_path`]), not following
/// a symlink.
pub fn set_at(path: &[u8], label: &[u8]) -> io::Result<()> {
    let path = OsStr::from_bytes(path);
    rustix::fs::lsetxattr(path, SELINUX_XATTR, &with_nul(label), XattrFlags::empty())
        .map_err(io::Error::from)
}

/// The label of an open file or directory.
pub fn get_fd(fd: impl AsFd) -> io::Result<Option<Vec<u8>>> {
    let mut buf = [0u8; MAX_LABEL];
    read(
        rustix::fs::fgetxattr(fd, SELINUX_XATTR, &mut buf[..]).map_err(io::Error::from),
        &buf,
    )
}

/// Sets the label of an open file or directory.
pub fn set_fd(fd: impl AsFd, label: &[u8]) -> io::Result<()> {
    rustix::fs::fsetxattr(fd, SELINUX_XATTR, &with_nul(label), XattrFlags::empty())
        .map_err(io::Error::from)
}

/// libselinux stores contexts NUL-terminated; do the same so tools agree.
fn with_nul(label: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(label.len() + 1);
    v.extend_from_slice(label);
    v.push(0);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_without_following_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "x").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("link")).unwrap();
        let d = std::fs::File::open(dir.path()).unwrap();
        let link = entry_path(d.as_fd(), c"link");
        set_at(&link, b"system_u:object_r:container_file_t:s0:c1,c2").unwrap();
        assert_eq!(
            get_at(&link).unwrap().as_deref(),
            Some(&b"system_u:object_r:container_file_t:s0:c1,c2"[..])
        );
        // The target was not touched.
        let t = entry_path(d.as_fd(), c"target");
        assert_ne!(
            get_at(&t).unwrap().as_deref(),
            Some(&b"system_u:object_r:container_file_t:s0:c1,c2"[..])
        );
        set_fd(&d, b"system_u:object_r:container_file_t:s0").unwrap();
        assert_eq!(
            get_fd(&d).unwrap().as_deref(),
            Some(&b"system_u:object_r:container_file_t:s0"[..])
        );
        assert_eq!(trim(b"abc\0"), b"abc");
    }
}
