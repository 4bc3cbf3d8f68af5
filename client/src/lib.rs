//! Client library for mcsd.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mcs_client::ClientError> {
//! let mut client = mcs_client::Client::connect("/run/mcsd/mcsd.sock").await?;
//! let allocation = client
//!     .allocate(mcs_client::Allocate::new("3f2a9c").owner("podman"))
//!     .await?;
//! println!("{}", allocation.process_label);
//! client.release("3f2a9c").await?;
//! # Ok(()) }
//! ```
//!
//! The connection is a gRPC channel over mcsd's Unix socket; calls map
//! one-to-one to the `mcs.v1.Labels` service, whose messages are re-exported
//! as [`proto`].

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use mcs_proto::v1::labels_client::LabelsClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

/// The `mcs.v1` messages.
pub use mcs_proto::v1 as proto;

/// Socket path used when none is given and `$MCSD_SOCKET` is unset.
pub const DEFAULT_SOCKET: &str = "/run/mcsd/mcsd.sock";

/// Most bytes of one streamed Reconcile message, encoded. mcsd refuses
/// messages over 64 KiB (`OUT_OF_RANGE`); half that leaves room for the
/// owner and any field a later version adds.
pub const RECONCILE_CHUNK_BYTES: usize = 32 * 1024;

/// Encoded size of a string field holding `len` bytes: tag, length, bytes.
fn string_field_len(len: usize) -> usize {
    let mut varint = 1;
    let mut rest = len >> 7;
    while rest > 0 {
        varint += 1;
        rest >>= 7;
    }
    1 + varint + len
}

/// Splits a Reconcile into messages of at most [`RECONCILE_CHUNK_BYTES`]
/// encoded (an id larger than that alone goes in a message of its own, for
/// mcsd to refuse): the first names the owner and the minimum age, every
/// one carries `dry_run`.
fn reconcile_messages(
    owner: String,
    keep: Vec<String>,
    dry_run: bool,
    min_age_secs: Option<u64>,
) -> Vec<proto::ReconcileRequest> {
    // Owner, dry_run and min_age (at most 11 bytes), counted in every
    // message for simplicity.
    let fixed = string_field_len(owner.len()) + 2 + 11;
    let mut messages = Vec::new();
    let mut current = proto::ReconcileRequest {
        owner,
        keep: Vec::new(),
        dry_run,
        min_age_secs,
    };
    let mut size = fixed;
    for id in keep {
        let cost = string_field_len(id.len());
        if !current.keep.is_empty() && size + cost > RECONCILE_CHUNK_BYTES {
            let next = proto::ReconcileRequest {
                owner: String::new(),
                keep: Vec::new(),
                dry_run,
                min_age_secs: None,
            };
            messages.push(std::mem::replace(&mut current, next));
            size = fixed;
        }
        size += cost;
        current.keep.push(id);
    }
    messages.push(current);
    messages
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached.
    #[error("cannot connect to {}: is mcsd running? ({reason})", .socket.display())]
    Connect {
        /// The socket tried.
        socket: PathBuf,
        /// What the system said.
        reason: String,
    },
    /// mcsd answered with an error.
    #[error("{}", .0.message())]
    Status(#[from] tonic::Status),
}

impl ClientError {
    /// The gRPC status code, if mcsd answered.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Status(s) => Some(s.code()),
            ClientError::Connect { .. } => None,
        }
    }
}

/// An allocation request; see [`Client::allocate`].
#[derive(Debug, Clone, Default)]
pub struct Allocate(proto::AllocateRequest);

impl Allocate {
    /// A request for `container_id`.
    pub fn new(container_id: impl Into<String>) -> Self {
        Self(proto::AllocateRequest {
            container_id: container_id.into(),
            ..Default::default()
        })
    }

    /// Who asks (a runtime name such as `podman`).
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.0.owner = owner.into();
        self
    }

    /// The pod whose members share one level.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.0.group = group.into();
        self
    }

    /// A specific level, `s0:cX,cY`.
    pub fn level(mut self, level: impl Into<String>) -> Self {
        self.0.level = level.into();
        self
    }
}

/// A connection to mcsd.
#[derive(Debug, Clone)]
pub struct Client {
    inner: LabelsClient<Channel>,
    channel: Channel,
    socket: PathBuf,
}

/// The socket to use: the argument, else `$MCSD_SOCKET`, else the default.
pub fn socket_path(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_owned)
        .or_else(|| std::env::var_os("MCSD_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

impl Client {
    /// Connects to mcsd's socket.
    pub async fn connect(socket: impl AsRef<Path>) -> Result<Self, ClientError> {
        let socket = socket.as_ref().to_owned();
        let connect_err = |reason: String| ClientError::Connect {
            socket: socket.clone(),
            reason,
        };
        // Connect once ourselves so a missing daemon is reported plainly
        // instead of as a transport error on the first call.
        UnixStream::connect(&socket)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let path = socket.clone();
        // The URI is required by the API but unused: the connector dials the socket.
        let channel = Endpoint::from_static("http://mcsd.invalid")
            .connect_with_connector(service_fn(move |_: Uri| {
                let path = path.clone();
                async move { UnixStream::connect(path).await.map(TokioIo::new) }
            }))
            .await
            .map_err(|e| connect_err(error_chain(&e)))?;
        Ok(Self {
            inner: LabelsClient::new(channel.clone()),
            channel,
            socket,
        })
    }

    /// The connection, for other services mcsd serves on the same socket
    /// (`grpc.health.v1.Health`, server reflection).
    pub fn channel(&self) -> tonic::transport::Channel {
        self.channel.clone()
    }

    /// The daemon's version, uptime, store and health.
    pub async fn status(&mut self) -> Result<proto::StatusResponse, ClientError> {
        Ok(self
            .inner
            .status(proto::StatusRequest {})
            .await?
            .into_inner())
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Allocates (or returns the existing) label of a container.
    pub async fn allocate(&mut self, request: Allocate) -> Result<proto::Allocation, ClientError> {
        Ok(self
            .allocate_full(request)
            .await?
            .allocation
            .unwrap_or_default())
    }

    /// Like [`Client::allocate`], also telling whether it was created now.
    pub async fn allocate_full(
        &mut self,
        request: Allocate,
    ) -> Result<proto::AllocateResponse, ClientError> {
        Ok(self.inner.allocate(request.0).await?.into_inner())
    }

    /// Releases every allocation of `owner` whose id is not in `keep` (and
    /// that was made before this call). The ids are streamed in messages of
    /// at most [`RECONCILE_CHUNK_BYTES`] encoded, so any number fits under
    /// mcsd's message limit (the daemon bounds the whole set, though).
    /// Allocations younger than mcsd's `[reconcile] min_age_secs` are kept.
    pub async fn reconcile(
        &mut self,
        owner: impl Into<String>,
        keep: Vec<String>,
        dry_run: bool,
    ) -> Result<proto::ReconcileResponse, ClientError> {
        self.reconcile_with_min_age(owner, keep, dry_run, None)
            .await
    }

    /// Like [`Client::reconcile`], keeping allocations younger than
    /// `min_age_secs` instead of mcsd's default (`None`).
    pub async fn reconcile_with_min_age(
        &mut self,
        owner: impl Into<String>,
        keep: Vec<String>,
        dry_run: bool,
        min_age_secs: Option<u64>,
    ) -> Result<proto::ReconcileResponse, ClientError> {
        let stream = tokio_stream::iter(reconcile_messages(
            owner.into(),
            keep,
            dry_run,
            min_age_secs,
        ));
        Ok(self.inner.reconcile(stream).await?.into_inner())
    }

    /// Relabels the tree at `path` for the container (shared: level s0);
    /// streams progress, the last message has `done` set.
    pub async fn relabel(
        &mut self,
        request: proto::RelabelRequest,
    ) -> Result<tonic::Streaming<proto::RelabelProgress>, ClientError> {
        Ok(self.inner.relabel(request).await?.into_inner())
    }

    /// Releases a container's label; succeeds whether or not it held one.
    pub async fn release(
        &mut self,
        container_id: impl Into<String>,
    ) -> Result<proto::ReleaseResponse, ClientError> {
        let request = proto::ReleaseRequest {
            container_id: container_id.into(),
        };
        Ok(self.inner.release(request).await?.into_inner())
    }

    /// The allocation of one container.
    pub async fn get(
        &mut self,
        container_id: impl Into<String>,
    ) -> Result<proto::Allocation, ClientError> {
        let request = proto::GetRequest {
            container_id: container_id.into(),
        };
        Ok(self.inner.get(request).await?.into_inner())
    }

    /// Streams allocations in container id order, in chunks.
    pub async fn list(
        &mut self,
        request: proto::ListRequest,
    ) -> Result<tonic::Streaming<proto::ListResponse>, ClientError> {
        Ok(self.inner.list(request).await?.into_inner())
    }

    /// Reserves a pair (`s0:cX,cY`) or a category (`cN`).
    pub async fn reserve(
        &mut self,
        target: impl Into<String>,
    ) -> Result<proto::ReserveResponse, ClientError> {
        let request = proto::ReserveRequest {
            target: target.into(),
        };
        Ok(self.inner.reserve(request).await?.into_inner())
    }

    /// Removes a reservation.
    pub async fn unreserve(
        &mut self,
        target: impl Into<String>,
    ) -> Result<proto::UnreserveResponse, ClientError> {
        let request = proto::UnreserveRequest {
            target: target.into(),
        };
        Ok(self.inner.unreserve(request).await?.into_inner())
    }

    /// Every reservation.
    pub async fn reservations(&mut self) -> Result<Vec<proto::Reservation>, ClientError> {
        let response = self
            .inner
            .list_reservations(proto::ListReservationsRequest {})
            .await?;
        Ok(response.into_inner().reservations)
    }

    /// Occupancy of the range.
    pub async fn stats(&mut self) -> Result<proto::StatsResponse, ClientError> {
        Ok(self.inner.stats(proto::StatsRequest {}).await?.into_inner())
    }
}

/// An error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn reconcile_messages_stay_under_the_chunk_size_and_keep_every_id() {
        for len in [1, 64, 127, 128, 300] {
            let keep: Vec<String> = (0..5000).map(|i| format!("{i:0>len$}")).collect();
            let messages = reconcile_messages("podman".into(), keep.clone(), true, Some(u64::MAX));
            assert_eq!(
                messages.len() > 1,
                len >= 64,
                "{len}: {} messages",
                messages.len()
            );
            assert_eq!(messages[0].owner, "podman");
            for m in &messages {
                assert!(
                    m.encoded_len() <= RECONCILE_CHUNK_BYTES,
                    "{len}: {}",
                    m.encoded_len()
                );
                assert!(m.dry_run);
                assert!(!m.keep.is_empty());
            }
            assert!(messages[1..].iter().all(|m| m.owner.is_empty()));
            let streamed: Vec<String> = messages.into_iter().flat_map(|m| m.keep).collect();
            assert_eq!(streamed, keep);
        }
        let none = reconcile_messages("podman".into(), vec![], false, None);
        assert_eq!(none.len(), 1);
        assert_eq!(none[0].owner, "podman");
    }
}
