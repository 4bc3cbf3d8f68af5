//! The admitted connection's stream: it carries the [`Permit`] for as
//! long as it is open, and ends a connection that does not send the HTTP/2
//! preface in time.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Permit;

/// What every HTTP/2 client sends first (RFC 9113, section 3.4).
pub(super) const PREFACE_LEN: usize = 24;

/// An admitted connection: holds its [`Permit`] while open, and fails its
/// reads (which makes the server close it) if the HTTP/2 preface has not
/// arrived by the deadline.
#[derive(Debug)]
pub struct Guarded<S> {
    inner: S,
    permit: Permit,
    /// Until the preface is in: the deadline, and bytes still to come.
    handshake: Option<(Pin<Box<tokio::time::Sleep>>, usize)>,
    timeout: Duration,
}

impl<S> Guarded<S> {
    /// Wraps `inner`, which must send the preface within `timeout`.
    pub fn new(inner: S, permit: Permit, timeout: Duration) -> Self {
        Self {
            inner,
            permit,
            handshake: Some((Box::pin(tokio::time::sleep(timeout)), PREFACE_LEN)),
            timeout,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Polled before the read, so the timer wakes this task even when
        // the peer never sends anything.
        if let Some((deadline, _)) = &mut this.handshake {
            if deadline.as_mut().poll(cx).is_ready() {
                this.permit
                    .gate
                    .warn_timed_out(this.permit.uid, this.timeout);
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no HTTP/2 preface within the handshake timeout",
                )));
            }
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some((_, left))) = (&polled, &mut this.handshake) {
            *left = left.saturating_sub(buf.filled().len() - before);
            if *left == 0 {
                this.handshake = None;
            }
        }
        polled
    }
}

crate::connection::forward_async_write!(impl[S: AsyncWrite + Unpin] for Guarded<S> => inner);

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Guarded<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}
