//! Reading and writing an entry's SELinux label without following links.
//!
//! Entries are named relative to an open directory, never by a full path:
//! renaming anything above the directory cannot redirect the call, and the
//! `l*xattr` calls never follow a final symlink. Two ways to name them:
//! - relative to the calling thread's own working directory, set to the
//!   directory with `fchdir` ([`own_cwd`] gives a walker thread a working
//!   directory of its own): one path component to resolve, the fastest;
//! - through the directory's `/proc/self/fd/N/name` path, where a thread
//!   cannot have its own working directory. procfs lookups cost about as
//!   much as the xattr call itself, so this is the fallback.
//!
//! Directories are labeled through their own open descriptor (`f*xattr`),
//! which also keeps a mount point's label untouched when the walk does not
//! cross into it.

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

/// Gives the calling thread a working directory of its own (`unshare
/// (CLONE_FS)`), so that `fchdir` in it does not move the other threads'.
/// Only for threads that exist for one walk.
pub fn own_cwd() -> io::Result<()> {
    // SAFETY: CLONE_FS unshares only the working directory, root and umask
    // of this thread; the file descriptor table stays shared (unlike
    // CLONE_FILES, the case rustix's safety contract is about), so every
    // descriptor stays valid on every thread. Callers are dedicated walker
    // threads that end with the walk.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }
        .map_err(io::Error::from)
}

/// The label of the entry at `path`: an [`entry_path`], or a bare name
/// relative to a walker thread's own working directory; `None` if it has
/// none.
pub fn get_at(path: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let mut buf = [0u8; MAX_LABEL];
    let path = OsStr::from_bytes(path);
    read(
        rustix::fs::lgetxattr(path, SELINUX_XATTR, &mut buf[..]).map_err(io::Error::from),
        &buf,
    )
}

/// How an entry's label compares with the one wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compared {
    /// It is the label wanted.
    Same,
    /// It is another label.
    Different,
    /// It has none (only where SELinux is disabled: under SELinux every
    /// file has a label).
    Missing,
}

/// Compares the label of the entry at `name` (as for [`get_at`]) with
/// `want`, in place: the walk asks this once per entry, so it neither
/// zeroes nor allocates.
pub fn compare_at(name: &CStr, want: &[u8]) -> io::Result<Compared> {
    let same = |yes: bool| {
        if yes {
            Compared::Same
        } else {
            Compared::Different
        }
    };
    // Room for `want`, its NUL, and one byte more to tell a longer label.
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 512];
    if want.len() + 2 > buf.len() {
        return Ok(match get_at(name.to_bytes())? {
            None => Compared::Missing,
            Some(label) => same(label == want),
        });
    }
    match rustix::fs::lgetxattr(name, SELINUX_XATTR, &mut buf[..]) {
        Ok((found, _)) => Ok(same(trim(found) == want)),
        Err(rustix::io::Errno::NODATA) => Ok(Compared::Missing),
        // Longer than the buffer, so longer than `want`.
        Err(rustix::io::Errno::RANGE) => Ok(Compared::Different),
        Err(e) => Err(e.into()),
    }
}

/// Sets the label of the entry at `name` only if it has none
/// (`XATTR_CREATE`): `Ok(false)` and nothing written when it has one. A
/// labeled entry is left untouched, ctime included.
pub fn create_name(name: &CStr, label: &[u8]) -> io::Result<bool> {
    match rustix::fs::lsetxattr(name, SELINUX_XATTR, &with_nul(label), XattrFlags::CREATE) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::EXIST) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Sets the label of the entry at `name` (as for [`get_at`]), without
/// copying the name.
pub fn set_name(name: &CStr, label: &[u8]) -> io::Result<()> {
    rustix::fs::lsetxattr(name, SELINUX_XATTR, &with_nul(label), XattrFlags::empty())
        .map_err(io::Error::from)
}

/// Sets the label of the entry at `path` (as for [`get_at`]), not
/// following a symlink.
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
/// Labels fit a stack buffer (this runs once per entry written).
fn with_nul(label: &[u8]) -> NulTerminated {
    let mut n = NulTerminated {
        buf: [0; 512],
        heap: Vec::new(),
        len: label.len() + 1,
    };
    if n.len <= n.buf.len() {
        n.buf[..label.len()].copy_from_slice(label);
    } else {
        n.heap = [label, b"\0"].concat();
    }
    n
}

struct NulTerminated {
    buf: [u8; 512],
    heap: Vec<u8>,
    len: usize,
}

impl std::ops::Deref for NulTerminated {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        if self.heap.is_empty() {
            &self.buf[..self.len]
        } else {
            &self.heap
        }
    }
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
