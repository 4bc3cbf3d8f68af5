//! The two systemd protocols mcsd speaks, without linking libsystemd:
//!
//! - **readiness** (`sd_notify`): with `Type=notify`, systemd waits for
//!   `READY=1`, which mcsd sends only once its store is open and its socket
//!   listens; `STATUS=` lines show up in `systemctl status`; `STOPPING=1`
//!   announces a shutdown. Without `NOTIFY_SOCKET` these are no-ops.
//! - **socket activation**: when `mcsd.socket` started it, systemd passes
//!   the listening socket as fd 3 (`LISTEN_FDS`, `LISTEN_PID`); mcsd serves
//!   on it instead of binding its own. The `sd-notify` crate reads the
//!   variables and marks the descriptor close-on-exec. mcsd leaves the
//!   variables set: it runs no other program, and unsetting them once its
//!   threads run would race their reads of the environment.
//!
//! Notifications stay hand-written: `sd-notify` 0.5 cannot reach a service
//! manager listening in the abstract namespace (`NOTIFY_SOCKET=@...`).

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

/// Sends one notification (`READY=1`, `STATUS=...`, `STOPPING=1`) to the
/// service manager, if there is one. Failures are logged, never fatal.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = (|| -> std::io::Result<()> {
        let socket = UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            socket.send_to(state.as_bytes(), &path)?;
        }
        Ok(())
    })();
    if let Err(e) = sent {
        tracing::warn!(error = %e, state, "cannot notify the service manager");
    }
}

/// Takes the listening socket systemd passed, if this process was socket
/// activated (LISTEN_PID names this process). Only the first call can take
/// it; mcsd starts no other programs that could inherit the variables.
pub fn listen_fd() -> Result<Option<OwnedFd>, String> {
    // Taken at most once per process, even if a daemon starts twice (tests).
    static TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    // Checks LISTEN_PID against this process (an inherited environment is
    // meant for another one) and sets FD_CLOEXEC on what was passed.
    let fds = match sd_notify::listen_fds() {
        Ok(fds) if fds.len() == 0 => return Ok(None),
        Ok(fds) => fds.len(),
        Err(e) => return Err(format!("the socket systemd passed: {e}")),
    };
    if TAKEN.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return Ok(None);
    }
    if fds != 1 {
        return Err(format!(
            "systemd passed {fds} sockets; mcsd serves exactly one (ListenStream= once in mcsd.socket)"
        ));
    }
    // The descriptor must really be an open Unix stream socket.
    // SAFETY: fd 3 is only borrowed for this check; ownership is taken below.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(LISTEN_FDS_START) };
    match rustix::net::sockopt::socket_type(borrowed) {
        Ok(rustix::net::SocketType::STREAM) => {}
        Ok(other) => {
            return Err(format!(
                "the passed socket is of type {other:?}, not a stream socket"
            ))
        }
        Err(e) => return Err(format!("fd 3 from systemd is not a socket: {e}")),
    }
    // SAFETY: systemd opened fd 3 for this process (LISTEN_PID matched) and
    // nothing else in mcsd owns it; TAKEN makes this the only owner.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(LISTEN_FDS_START) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Set in the child process the test below starts.
    const CHILD: &str = "MCSD_TEST_NOTIFY_CHILD";

    /// `notify` reads `NOTIFY_SOCKET` from the environment, so it runs in a
    /// child process (this very test, re-executed) and the test's own
    /// environment stays untouched; the parent checks what arrived.
    #[test]
    fn notifications_reach_a_listening_socket() {
        if std::env::var_os(CHILD).is_some() {
            notify("READY=1");
            notify("STATUS=Serving: 0 of 45 pairs held");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        // Bounded: a child that sends nothing fails the test, not hangs it.
        listener
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "systemd::tests::notifications_reach_a_listening_socket",
                "--nocapture",
            ])
            .env("NOTIFY_SOCKET", &path)
            .env(CHILD, "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let mut buf = [0u8; 64];
        for expected in ["READY=1", "STATUS=Serving: 0 of 45 pairs held"] {
            let n = listener
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no {expected:?} from the child: {e}; {out:?}"));
            assert_eq!(String::from_utf8_lossy(&buf[..n]), expected);
        }
    }
}
