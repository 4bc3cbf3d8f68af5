//! Who may hold a connection open, and for how long without speaking.
//!
//! Any member of the socket's group can connect. Without limits, one of
//! them could open connections until mcsd runs out of file descriptors (or
//! open them and never send a byte), and every runtime would then time out
//! while mcsd logged nothing: tonic skips failed accepts silently. So every
//! accepted connection passes a [`Gate`]:
//!
//! - each uid that is not an admin may hold at most `per_uid` connections;
//! - all connections together are at most `max`, and the last
//!   `admin_reserve` of them are for admins only, so an administrator (and
//!   the runtimes that allocate, which are admins) can still connect while
//!   readers or strangers hold everything else;
//! - a connection must send the HTTP/2 client preface within
//!   `handshake_timeout`, or it is closed: a half-open connection holds a
//!   slot for seconds, not forever.
//!
//! Refusals are logged as warnings, at most one line per kind every
//! [`WARN_INTERVAL`] (with how many were not logged), so a flood cannot
//! flood the journal too.

use crate::auth::Caller;
use crate::connection::PeerStream;
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UnixListener;

mod stream;
pub use stream::Guarded;

/// At most one warning of each kind per interval.
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// File descriptors kept for everything but connections (the store's
/// files, the relabel walkers' directories, etcd, the metrics listener).
pub const FD_HEADROOM: u64 = 256;

/// How long to wait before accepting again when the process is out of
/// descriptors or memory: the pending connection stays queued, and
/// retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Connection limits (`[connections]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// All connections together.
    pub max: usize,
    /// Connections one uid that is not an admin may hold.
    pub per_uid: usize,
    /// Of `max`, how many only admins may use.
    pub admin_reserve: usize,
    /// How long a new connection may take to send the HTTP/2 preface.
    pub handshake_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max: 4096,
            per_uid: 256,
            admin_reserve: 64,
            handshake_timeout: Duration::from_secs(5),
        }
    }
}

impl ConnectionLimits {
    /// These limits with `max` lowered to what `open_files` descriptors
    /// can carry (keeping [`FD_HEADROOM`] for the rest of mcsd), and the
    /// reserve lowered to stay below `max`. Returns whether `max` changed.
    pub fn fit_to(mut self, open_files: u64) -> (Self, bool) {
        let room =
            usize::try_from(open_files.saturating_sub(FD_HEADROOM).max(1)).unwrap_or(usize::MAX);
        let lowered = self.max > room;
        if lowered {
            self.max = room;
            self.admin_reserve = self.admin_reserve.min(room.saturating_sub(1));
        }
        (self, lowered)
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (the soft default,
/// 1,024, is far below what a busy host's runtimes need) and returns
/// `(before, now)`.
pub fn raise_open_file_limit() -> io::Result<(u64, u64)> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current.unwrap_or(u64::MAX);
    if limit.current == limit.maximum {
        return Ok((before, before));
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    )
    .map_err(io::Error::from)?;
    Ok((before, limit.maximum.unwrap_or(u64::MAX)))
}

/// A warning printed at most once per [`WARN_INTERVAL`].
#[derive(Debug, Default)]
struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// `Some(number suppressed since the last line)` when a line may be
    /// printed now.
    fn ready(&mut self) -> Option<Suppressed> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < WARN_INTERVAL)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(Suppressed(std::mem::take(&mut self.suppressed)))
    }
}

/// How many lines a [`Throttle`] held back, said at the end of the next.
#[derive(Debug, Clone, Copy)]
struct Suppressed(u64);

impl std::fmt::Display for Suppressed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            0 => Ok(()),
            n => write!(f, " ({n} more since the last such line)"),
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_uid: HashMap<u32, usize>,
    refused: Throttle,
    timed_out: Throttle,
    accept_failed: Throttle,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The kernel gave no peer credentials; nothing could be decided.
    #[error("no peer credentials")]
    NoCredentials,
    /// The uid holds `per_uid` connections already.
    #[error("uid {uid} already has {open} connections open (connections.per_uid = {limit})")]
    PerUid {
        /// The peer's uid.
        uid: u32,
        /// Its open connections.
        open: usize,
        /// The limit.
        limit: usize,
    },
    /// Only the admin reserve is left, and the peer is not an admin.
    #[error(
        "uid {uid} is not an admin and only the {reserve} connections kept for admins are left \
         ({open} of connections.max = {max} open)"
    )]
    Reserved {
        /// The peer's uid.
        uid: u32,
        /// All open connections.
        open: usize,
        /// `max`.
        max: usize,
        /// `admin_reserve`.
        reserve: usize,
    },
    /// Every connection slot is taken.
    #[error("uid {uid}: all connections.max = {max} connections are open")]
    Full {
        /// The peer's uid.
        uid: u32,
        /// `max`.
        max: usize,
    },
}

/// Tells admins apart, from the peer's identity read at accept time.
pub type IsAdmin = Box<dyn Fn(&Caller) -> bool + Send + Sync>;

/// Admits connections within the [`ConnectionLimits`] and counts them.
pub struct Gate {
    limits: Mutex<ConnectionLimits>,
    counts: Mutex<Counts>,
    is_admin: IsAdmin,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("limits", &self.limits())
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// A gate enforcing `limits`; `is_admin` decides who may use the reserve
    /// and is exempt from the per-uid limit.
    pub fn new(limits: ConnectionLimits, is_admin: IsAdmin) -> Arc<Self> {
        Arc::new(Self {
            limits: Mutex::new(limits),
            counts: Mutex::default(),
            is_admin,
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> ConnectionLimits {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the limits (a reload). Connections already open stay, even
    /// over a lowered limit; new ones are admitted by the new limits.
    pub fn set_limits(&self, limits: ConnectionLimits) {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner()) = limits;
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connections admitted and not yet closed.
    pub fn open(&self) -> usize {
        self.counts().total
    }

    /// Admits a connection from `cred`, or says why not. The returned
    /// permit holds the slot until it drops.
    pub fn admit(self: &Arc<Self>, caller: Option<&Caller>) -> Result<Permit, Refusal> {
        let caller = caller.ok_or(Refusal::NoCredentials)?;
        let uid = caller.uid;
        let admin = (self.is_admin)(caller);
        let limits = self.limits();
        let mut counts = self.counts();
        let open = counts.total;
        if open >= limits.max {
            return Err(Refusal::Full {
                uid,
                max: limits.max,
            });
        }
        if !admin {
            if open >= limits.max.saturating_sub(limits.admin_reserve) {
                return Err(Refusal::Reserved {
                    uid,
                    open,
                    max: limits.max,
                    reserve: limits.admin_reserve,
                });
            }
            let mine = counts.by_uid.get(&uid).copied().unwrap_or(0);
            if mine >= limits.per_uid {
                return Err(Refusal::PerUid {
                    uid,
                    open: mine,
                    limit: limits.per_uid,
                });
            }
        }
        counts.total += 1;
        *counts.by_uid.entry(uid).or_default() += 1;
        Ok(Permit {
            gate: self.clone(),
            uid,
        })
    }

    fn warn_refused(&self, refusal: &Refusal) {
        let Some(suppressed) = self.counts().refused.ready() else {
            return;
        };
        tracing::warn!("connection refused: {refusal}{suppressed}");
    }

    fn warn_timed_out(&self, uid: u32, timeout: Duration) {
        let Some(suppressed) = self.counts().timed_out.ready() else {
            return;
        };
        tracing::warn!(
            uid,
            "connection closed: uid {uid} did not send the HTTP/2 preface within {} ms \
             (connections.handshake_timeout_ms){suppressed}",
            timeout.as_millis()
        );
    }

    fn warn_accept_failed(&self, error: &io::Error) {
        let Some(suppressed) = self.counts().accept_failed.ready() else {
            return;
        };
        tracing::warn!("cannot accept connections: {error}{suppressed}");
    }
}

/// One admitted connection's slot; freed on drop.
#[derive(Debug)]
pub struct Permit {
    gate: Arc<Gate>,
    uid: u32,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.gate.counts();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.by_uid.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                counts.by_uid.remove(&self.uid);
            }
        }
    }
}

/// Accepts connections on `listener` forever, yielding those `gate`
/// admits. Refused connections are closed at once; failed accepts are
/// logged and, when the process is out of descriptors or memory, retried
/// after a short pause.
pub fn incoming(
    listener: UnixListener,
    gate: Arc<Gate>,
) -> impl futures_util::Stream<Item = io::Result<Guarded<PeerStream>>> {
    futures_util::stream::unfold((listener, gate), |(listener, gate)| async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    // The peer's identity is read once, here: it decides
                    // the limits and rides with every request on the
                    // connection.
                    let stream = PeerStream::accepted(stream);
                    match gate.admit(stream.caller()) {
                        Ok(permit) => {
                            let timeout = gate.limits().handshake_timeout;
                            let guarded = Guarded::new(stream, permit, timeout);
                            return Some((Ok(guarded), (listener, gate)));
                        }
                        Err(refusal) => gate.warn_refused(&refusal),
                    }
                }
                Err(e) => {
                    gate.warn_accept_failed(&e);
                    let exhausted = matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    );
                    if exhausted {
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::stream::PREFACE_LEN;
    use super::*;
    use tokio::net::UnixStream;

    fn cred_of(stream: &UnixStream) -> Caller {
        crate::auth::peer::read_peer(std::os::fd::AsFd::as_fd(stream)).unwrap()
    }

    #[tokio::test]
    async fn per_uid_cap_and_admin_reserve() {
        let (a, _b) = UnixStream::pair().unwrap();
        let cred = cred_of(&a);
        let limits = ConnectionLimits {
            max: 5,
            per_uid: 2,
            admin_reserve: 2,
            handshake_timeout: Duration::from_secs(5),
        };
        let admin = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = admin.clone();
        let gate = Gate::new(
            limits,
            Box::new(move |_| flag.load(std::sync::atomic::Ordering::Relaxed)),
        );
        let p1 = gate.admit(Some(&cred)).unwrap();
        let _p2 = gate.admit(Some(&cred)).unwrap();
        assert!(matches!(
            gate.admit(Some(&cred)),
            Err(Refusal::PerUid {
                open: 2,
                limit: 2,
                ..
            })
        ));
        drop(p1);
        let _p3 = gate.admit(Some(&cred)).unwrap();
        // An admin is not held to the per-uid cap and may use the reserve...
        admin.store(true, std::sync::atomic::Ordering::Relaxed);
        let _p4 = gate.admit(Some(&cred)).unwrap();
        // ... which a non-admin may not, even below its own cap.
        admin.store(false, std::sync::atomic::Ordering::Relaxed);
        let mut limits = gate.limits();
        limits.per_uid = 100;
        gate.set_limits(limits);
        let refused = gate.admit(Some(&cred)).unwrap_err();
        assert!(
            matches!(refused, Refusal::Reserved { open: 3, .. }),
            "{refused}"
        );
        admin.store(true, std::sync::atomic::Ordering::Relaxed);
        let _p5 = gate.admit(Some(&cred)).unwrap();
        let _p6 = gate.admit(Some(&cred)).unwrap();
        assert!(matches!(
            gate.admit(Some(&cred)),
            Err(Refusal::Full { max: 5, .. })
        ));
        assert_eq!(gate.admit(None).unwrap_err(), Refusal::NoCredentials);
        assert_eq!(gate.open(), 5);
    }

    #[tokio::test]
    async fn a_connection_without_a_preface_fails_its_reads_after_the_timeout() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let gate = Gate::new(ConnectionLimits::default(), Box::new(|_| false));
        let (server, mut client) = UnixStream::pair().unwrap();
        let permit = gate.admit(Some(&cred_of(&server))).unwrap();
        let timeout = Duration::from_millis(300);
        let mut guarded = Guarded::new(server, permit, timeout);
        client.write_all(&[b'P'; PREFACE_LEN / 2]).await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(guarded.read(&mut buf).await.unwrap(), PREFACE_LEN / 2);
        let started = std::time::Instant::now();
        let err = guarded.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(5),
            "{took:?}"
        );
        drop(guarded);
        assert_eq!(gate.open(), 0, "the slot is freed with the connection");

        // With the whole preface in time, reads go on past the deadline.
        let (server, mut client) = UnixStream::pair().unwrap();
        let permit = gate.admit(Some(&cred_of(&server))).unwrap();
        let mut guarded = Guarded::new(server, permit, timeout);
        client.write_all(&[b'P'; PREFACE_LEN]).await.unwrap();
        assert_eq!(guarded.read(&mut buf).await.unwrap(), PREFACE_LEN);
        tokio::time::sleep(timeout * 2).await;
        client.write_all(b"later").await.unwrap();
        assert_eq!(guarded.read(&mut buf).await.unwrap(), 5);
    }

    #[test]
    fn limits_fit_the_descriptors_there_are() {
        let (fitted, lowered) = ConnectionLimits::default().fit_to(1024);
        assert!(lowered);
        assert_eq!(fitted.max, 1024 - FD_HEADROOM as usize);
        assert_eq!(fitted.admin_reserve, 64);
        let (same, lowered) = ConnectionLimits::default().fit_to(1 << 20);
        assert!(!lowered);
        assert_eq!(same, ConnectionLimits::default());
    }

    #[test]
    fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let limit = getrlimit(Resource::Nofile);
        let low = limit.maximum.map_or(1024, |m| m.min(1024));
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(low),
                maximum: limit.maximum,
            },
        )
        .unwrap();
        let (before, now) = raise_open_file_limit().unwrap();
        assert_eq!(before, low);
        assert_eq!(getrlimit(Resource::Nofile).current, limit.maximum);
        assert_eq!(Some(now), limit.maximum.or(Some(u64::MAX)));
    }
}
