//! The identity of the process on the other end of a Unix socket, read from
//! the kernel once, when the connection is accepted.
//!
//! Everything comes from the socket itself: `SO_PEERCRED` (uid, gid, pid),
//! `SO_PEERGROUPS` (supplementary groups, Linux ≥ 4.13) and `SO_PEERSEC`
//! (the SELinux context). The kernel records all three at `connect()`, so
//! they describe the process that made the connection even if it has since
//! dropped privileges, exited, or had its pid reused — which a later read of
//! `/proc/<pid>/status` cannot promise. And they cost no file I/O in the
//! request path.
//!
//! This is the one module with `unsafe` in authorization: the raw
//! `getsockopt(2)` for the two options rustix does not wrap.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::Caller;

/// `SOL_SOCKET` option numbers from the kernel's UAPI headers for this
/// architecture (libc does not export these two for glibc targets).
const SO_PEERGROUPS: libc::c_int = linux_raw_sys::net::SO_PEERGROUPS as libc::c_int;
const SO_PEERSEC: libc::c_int = linux_raw_sys::net::SO_PEERSEC as libc::c_int;

/// The most a variable-length option may need: `NGROUPS_MAX` (65536) gids
/// of four bytes. Contexts are far smaller.
const MAX_OPTION_BYTES: usize = 65536 * 4;

/// What `SO_PEERSEC` said about the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerLabel {
    /// No security module labels Unix sockets here (`ENOPROTOOPT`), or it
    /// gave no label: there is nothing to judge.
    None,
    /// The label the kernel reported, trailing NULs removed.
    Label(String),
    /// Reading it failed for another reason; callers must fail closed.
    Unreadable(String),
}

impl std::fmt::Display for PeerLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerLabel::None => f.write_str("none"),
            PeerLabel::Label(label) => f.write_str(label),
            PeerLabel::Unreadable(reason) => write!(f, "unreadable ({reason})"),
        }
    }
}

/// Reads the peer's identity from a connected Unix socket.
///
/// `None` only when `SO_PEERCRED` itself fails (not a Unix socket): then
/// there is no identity to authorize. Supplementary groups that cannot be
/// read (a kernel older than 4.13) are empty — such a caller gets no role
/// from its groups — and are logged.
pub fn read_peer(fd: BorrowedFd<'_>) -> Option<Caller> {
    let cred = peer_cred(fd).ok()?;
    // The kernel reports pid 0 for a peer whose pid has no number in our
    // pid namespace.
    let pid = (cred.pid > 0).then_some(cred.pid);
    let uid = cred.uid;
    let groups = match peer_groups(fd) {
        Ok(groups) => groups,
        Err(e) => {
            tracing::warn!(
                uid,
                pid,
                error = %e,
                "cannot read the caller's supplementary groups (SO_PEERGROUPS needs Linux 4.13); its groups grant nothing"
            );
            Vec::new()
        }
    };
    Some(Caller {
        uid,
        gid: cred.gid,
        pid,
        groups,
        label: peer_label(fd),
    })
}

/// The peer's uid, gid and pid at connect time (`SO_PEERCRED`).
fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<libc::ucred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let want = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    let mut len = want;
    // SAFETY: `fd` is live for the borrow; `cred` is a plain C struct valid
    // for writes of `len` bytes, and `len` is an initialized socklen_t the
    // kernel updates. Neither pointer outlives the call.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if len != want {
        return Err(io::Error::other(format!(
            "SO_PEERCRED returned {len} bytes, expected {want}"
        )));
    }
    Ok(cred)
}

/// The peer's supplementary groups at connect time (`SO_PEERGROUPS`).
pub fn peer_groups(fd: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    // 32 groups cover nearly every account without a second call.
    let bytes = read_growing(32 * 4, |buf| getsockopt(fd, SO_PEERGROUPS, buf))?;
    Ok(bytes
        .chunks_exact(4)
        .map(|g| u32::from_ne_bytes([g[0], g[1], g[2], g[3]]))
        .collect())
}

/// The peer's security label at connect time (`SO_PEERSEC`).
pub fn peer_label(fd: BorrowedFd<'_>) -> PeerLabel {
    match read_growing(256, |buf| getsockopt(fd, SO_PEERSEC, buf)) {
        Ok(bytes) => label_from_bytes(&bytes),
        Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => PeerLabel::None,
        Err(e) => PeerLabel::Unreadable(e.to_string()),
    }
}

/// The label in what the kernel returned (some modules count a trailing NUL,
/// some do not).
fn label_from_bytes(bytes: &[u8]) -> PeerLabel {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    match std::str::from_utf8(&bytes[..end]) {
        Ok("") => PeerLabel::None,
        Ok(label) => PeerLabel::Label(label.to_owned()),
        Err(_) => PeerLabel::Unreadable(format!("the label is not UTF-8: {:?}", &bytes[..end])),
    }
}

/// Calls `get` with a buffer of `initial` bytes, growing it while the kernel
/// answers `ERANGE` (the peer has more groups, or a longer label, than the
/// buffer holds). `get` returns the length written, or the error with the
/// length the kernel says it needs (0 when it did not say).
fn read_growing(
    initial: usize,
    mut get: impl FnMut(&mut [u8]) -> Result<usize, (io::Error, usize)>,
) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; initial];
    loop {
        match get(&mut buf) {
            Ok(len) => {
                buf.truncate(len.min(buf.len()));
                return Ok(buf);
            }
            Err((e, needed)) if e.raw_os_error() == Some(libc::ERANGE) => {
                // The kernel's figure when it gave one, else double; always
                // strictly more, so the loop ends at the cap.
                let next = needed.max(buf.len().saturating_mul(2)).max(16);
                if next > MAX_OPTION_BYTES {
                    return Err(io::Error::other(format!(
                        "the kernel asks for {next} bytes, more than the {MAX_OPTION_BYTES} any peer can need"
                    )));
                }
                buf.resize(next, 0);
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// One `getsockopt(fd, SOL_SOCKET, option)` into `buf`.
fn getsockopt(
    fd: BorrowedFd<'_>,
    option: libc::c_int,
    buf: &mut [u8],
) -> Result<usize, (io::Error, usize)> {
    let mut len = libc::socklen_t::try_from(buf.len()).unwrap_or(libc::socklen_t::MAX);
    // SAFETY: `fd` is a live descriptor for the borrow's duration; `buf` is
    // valid for writes of `len` bytes (len ≤ buf.len()), and `len` points to
    // an initialized socklen_t the kernel updates. Neither pointer is kept
    // past the call.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(len as usize)
    } else {
        Err((io::Error::last_os_error(), len as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn peer_groups_on_a_socketpair_are_our_own_groups() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut ours: Vec<u32> = rustix::process::getgroups()
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        let mut got = peer_groups(a.as_fd()).unwrap();
        ours.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, ours);

        // A buffer too small for even one group: the kernel answers ERANGE
        // with the size it needs, and the loop grows to it.
        if !ours.is_empty() {
            let mut calls = 0;
            let bytes = read_growing(0, |buf| {
                calls += 1;
                getsockopt(a.as_fd(), SO_PEERGROUPS, buf)
            })
            .unwrap();
            assert_eq!(bytes.len(), ours.len() * 4);
            assert!(calls >= 2, "the first call must have hit ERANGE");
        }

        let caller = read_peer(a.as_fd()).unwrap();
        assert_eq!(caller.uid, rustix::process::geteuid().as_raw());
        assert_eq!(caller.gid, rustix::process::getegid().as_raw());
        assert_eq!(caller.pid, Some(std::process::id() as i32));
        let mut groups = caller.groups.clone();
        groups.sort_unstable();
        assert_eq!(groups, ours);
    }

    #[test]
    fn more_groups_than_the_first_buffer_holds_are_all_read() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: setting a thread's groups needs root");
            return;
        }
        // 40 groups: more than the 32 the first call has room for, so the
        // kernel answers ERANGE and the real path has to grow.
        let wanted: Vec<u32> = (5000..5040).collect();
        let groups: Vec<rustix::process::Gid> = wanted
            .iter()
            .map(|&g| rustix::process::Gid::from_raw(g))
            .collect();
        // A socketpair's peer credentials are its creator's: make it in a
        // thread whose groups (credentials are per thread) are those.
        let (a, _b) = std::thread::spawn(move || {
            rustix::thread::set_thread_groups(&groups).unwrap();
            std::os::unix::net::UnixStream::pair().unwrap()
        })
        .join()
        .unwrap();
        let mut got = read_peer(a.as_fd()).unwrap().groups;
        got.sort_unstable();
        assert_eq!(got, wanted);
    }

    #[test]
    fn peer_label_on_a_socketpair_is_none_or_a_label() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        // Without SELinux (the build hosts) this is None; with it, the test
        // process's own context. Never Unreadable.
        match peer_label(a.as_fd()) {
            PeerLabel::None => {}
            PeerLabel::Label(l) => assert!(!l.contains('\0'), "{l:?}"),
            PeerLabel::Unreadable(e) => panic!("SO_PEERSEC failed: {e}"),
        }
    }

    #[test]
    fn growing_follows_the_kernels_size_and_stops_at_the_cap() {
        let erange = || io::Error::from_raw_os_error(libc::ERANGE);
        // The kernel says it needs 40 bytes: the second call gets exactly 40.
        let mut sizes = Vec::new();
        let out = read_growing(8, |buf| {
            sizes.push(buf.len());
            if buf.len() < 40 {
                Err((erange(), 40))
            } else {
                buf[..40].fill(7);
                Ok(40)
            }
        })
        .unwrap();
        assert_eq!(sizes, [8, 40]);
        assert_eq!(out, vec![7; 40]);

        // No size given: doubling.
        let mut sizes = Vec::new();
        read_growing(16, |buf| {
            sizes.push(buf.len());
            if buf.len() < 100 {
                Err((erange(), 0))
            } else {
                Ok(0)
            }
        })
        .unwrap();
        assert_eq!(sizes, [16, 32, 64, 128]);

        // A kernel that always wants more is an error, not an endless loop.
        let e = read_growing(16, |_| Err((erange(), 0))).unwrap_err();
        assert!(e.to_string().contains("more than"), "{e}");

        // Other errors pass through untouched.
        let e = read_growing(16, |_| {
            Err((io::Error::from_raw_os_error(libc::ENOPROTOOPT), 0))
        })
        .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOPROTOOPT));
    }

    #[test]
    fn labels_drop_trailing_nuls_and_empty_means_none() {
        assert_eq!(
            label_from_bytes(b"system_u:system_r:container_t:s0:c1,c2\0"),
            PeerLabel::Label("system_u:system_r:container_t:s0:c1,c2".into())
        );
        assert_eq!(
            label_from_bytes(b"unconfined_u:unconfined_r:unconfined_t:s0"),
            PeerLabel::Label("unconfined_u:unconfined_r:unconfined_t:s0".into())
        );
        assert_eq!(label_from_bytes(b"\0"), PeerLabel::None);
        assert_eq!(label_from_bytes(b""), PeerLabel::None);
        assert!(matches!(
            label_from_bytes(b"\xff\xfe"),
            PeerLabel::Unreadable(_)
        ));
    }
}
