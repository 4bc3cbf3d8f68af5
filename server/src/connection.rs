//! An accepted connection as the gRPC server sees it: the Unix stream plus
//! the peer's identity, read from the socket once, at accept time.
//!
//! tonic hands a connection's [`Connected::connect_info`] to every request
//! on it; this is how authorization gets credentials that describe the
//! process that connected (see [`crate::auth::peer`]) without any I/O in the
//! request path.

use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::UnixStream;
use tonic::transport::server::Connected;

use crate::auth::{peer, Caller};

/// What each request on a connection learns about its peer.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The caller; `None` when the kernel gave no credentials.
    pub caller: Option<Arc<Caller>>,
}

/// A Unix stream whose peer was identified when it was accepted.
#[derive(Debug)]
pub struct PeerStream {
    stream: UnixStream,
    info: PeerInfo,
}

impl PeerStream {
    /// Wraps a freshly accepted stream, reading its peer's credentials,
    /// groups and label now.
    pub fn accepted(stream: UnixStream) -> Self {
        let caller = peer::read_peer(stream.as_fd()).map(Arc::new);
        Self {
            stream,
            info: PeerInfo { caller },
        }
    }
}

impl PeerStream {
    /// The peer, as read at accept time.
    pub fn caller(&self) -> Option<&Caller> {
        self.info.caller.as_deref()
    }
}

impl Connected for PeerStream {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

/// Implements `AsyncWrite` for a wrapper by forwarding every call to one
/// of its fields: the wrappers on the accept path (this one, the
/// connection guard's) only add to reads, never to writes.
macro_rules! forward_async_write {
    (impl[$($generics:tt)*] for $ty:ty => $field:ident) => {
        impl<$($generics)*> tokio::io::AsyncWrite for $ty {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                tokio::io::AsyncWrite::poll_write(std::pin::Pin::new(&mut self.get_mut().$field), cx, buf)
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                tokio::io::AsyncWrite::poll_write_vectored(std::pin::Pin::new(&mut self.get_mut().$field), cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                tokio::io::AsyncWrite::is_write_vectored(&self.$field)
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                tokio::io::AsyncWrite::poll_flush(std::pin::Pin::new(&mut self.get_mut().$field), cx)
            }

            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                tokio::io::AsyncWrite::poll_shutdown(std::pin::Pin::new(&mut self.get_mut().$field), cx)
            }
        }
    };
}
pub(crate) use forward_async_write;

forward_async_write!(impl[] for PeerStream => stream);
