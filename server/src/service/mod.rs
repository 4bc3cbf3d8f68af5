//! The gRPC face of mcsd: translates `mcs.v1` messages to domain requests
//! and domain errors to gRPC statuses. Nothing behind it sees tonic or the
//! generated types: the engine, the store's records and the relabeler are
//! plain Rust (see the crate documentation for the modules that carry the
//! connection).
//!
//! This file is the list of RPCs: each is its domain call between a
//! conversion of the request and one of the reply ([`convert`]), passed to
//! the one path ([`call`]) that authorizes, audits and counts every call.
//! The server streams' producers are in [`stream`], Reconcile's bounded
//! keep set in [`keep`].

mod call;
mod convert;
mod keep;
mod stream;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::SystemTime;

use mcs_proto::v1 as pb;
use mcs_proto::v1::labels_server::Labels;
use tonic::{Request, Response, Status};

use crate::auth::Policy;
use crate::engine::Engine;
use crate::id::Owner;
use crate::metrics::Metrics;
use crate::reconcile::{reconcile, ReconcileRequest};
use crate::volumes::Volumes;
use call::Streamed;
use convert::{container_id, optional};

pub use convert::allocation_to_proto;
pub use keep::{MAX_RECONCILE_KEEP, MAX_RECONCILE_KEEP_BYTES, RECONCILE_KEEP_ID_OVERHEAD};

/// The role policy in force; replaceable while serving (configuration
/// reload).
pub type SharedPolicy = std::sync::Arc<std::sync::RwLock<Policy>>;

/// What the service reports about the daemon it runs in (Status).
#[derive(Debug, Clone)]
pub struct DaemonInfo {
    /// When mcsd started.
    pub started_at: SystemTime,
    /// The socket it serves on.
    pub socket: std::path::PathBuf,
    /// The host's SELinux mode.
    pub selinux_mode: String,
    /// Whether it is serving (the health service says the same).
    pub serving: Arc<std::sync::atomic::AtomicBool>,
    /// Reconcile's minimum age when a request names none.
    pub reconcile_min_age: std::time::Duration,
}

/// The `mcs.v1.Labels` service.
#[derive(Clone)]
pub struct LabelService {
    engine: Engine,
    policy: SharedPolicy,
    volumes: Volumes,
    info: Arc<DaemonInfo>,
    metrics: Arc<Metrics>,
}

impl LabelService {
    /// A service backed by `volumes` (their engine, their metrics
    /// registry), deciding roles with `policy`.
    pub fn new(volumes: Volumes, policy: SharedPolicy, info: DaemonInfo) -> Self {
        Self {
            engine: volumes.engine().clone(),
            metrics: volumes.metrics().clone(),
            policy,
            volumes,
            info: Arc::new(info),
        }
    }
}

/// Messages a List stream buffers before its producer waits.
const LIST_BUFFER: usize = 4;

/// Progress messages a Relabel stream buffers; beyond them progress is
/// dropped rather than stall the walk.
const RELABEL_BUFFER: usize = 16;

#[tonic::async_trait]
impl Labels for LabelService {
    async fn allocate(
        &self,
        request: Request<pb::AllocateRequest>,
    ) -> Result<Response<pb::AllocateResponse>, Status> {
        self.serve(&call::ALLOCATE, request, async |call, req| {
            let request = convert::allocate_request(req, call.caller())?;
            let allocated = self.engine.allocate(request).await?;
            Ok(convert::allocate_response(allocated))
        })
        .await
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        self.serve(&call::RELEASE, request, async |_, req| {
            let id = container_id(req.container_id)?;
            let (released, restored) = self.volumes.release(id).await?;
            Ok(convert::release_response(released, restored))
        })
        .await
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::Allocation>, Status> {
        self.serve(&call::GET, request, async |_, req| {
            let record = self.engine.get(&container_id(req.container_id)?).await?;
            Ok(convert::allocation_to_proto(&record))
        })
        .await
    }

    type ListStream = Streamed<pb::ListResponse>;

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        self.serve_stream(&call::LIST, request, LIST_BUFFER, async |_, req, feed| {
            let query = convert::list_query(req)?;
            Ok(stream::list(self.engine.clone(), query, feed))
        })
        .await
    }

    async fn reserve(
        &self,
        request: Request<pb::ReserveRequest>,
    ) -> Result<Response<pb::ReserveResponse>, Status> {
        self.serve(&call::RESERVE, request, async |_, req| {
            let target = convert::reservation(&req.target)?;
            let reserved = self.engine.reserve(target).await?;
            Ok(convert::reserve_response(reserved))
        })
        .await
    }

    async fn unreserve(
        &self,
        request: Request<pb::UnreserveRequest>,
    ) -> Result<Response<pb::UnreserveResponse>, Status> {
        self.serve(&call::UNRESERVE, request, async |_, req| {
            let target = convert::reservation(&req.target)?;
            let unreserved = self.engine.unreserve(target).await?;
            Ok(convert::unreserve_response(unreserved))
        })
        .await
    }

    async fn list_reservations(
        &self,
        request: Request<pb::ListReservationsRequest>,
    ) -> Result<Response<pb::ListReservationsResponse>, Status> {
        self.serve(&call::LIST_RESERVATIONS, request, async |_, _| {
            let reservations = self.engine.reservations().await?;
            Ok(convert::reservations_response(&reservations))
        })
        .await
    }

    async fn stats(
        &self,
        request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        self.serve(&call::STATS, request, async |_, _| {
            Ok(convert::stats_to_proto(self.engine.stats().await?))
        })
        .await
    }

    async fn reconcile(
        &self,
        request: Request<tonic::Streaming<pb::ReconcileRequest>>,
    ) -> Result<Response<pb::ReconcileResponse>, Status> {
        self.serve(&call::RECONCILE, request, async |call, mut stream| {
            let Some(first) = stream.message().await? else {
                return Err(Status::invalid_argument(
                    "Reconcile needs at least one message naming the owner",
                ));
            };
            call.about(first.owner.clone());
            let owner = optional(first.owner, Owner::new)?.ok_or_else(|| {
                Status::invalid_argument(
                    "Reconcile: the first message must name the owner whose allocations are reconciled",
                )
            })?;
            let min_age = convert::min_age(first.min_age_secs, self.info.reconcile_min_age)?;
            let keep = keep::KeepSet::read(first.keep, &owner, &mut stream).await?;
            let request = ReconcileRequest {
                owner,
                keep,
                dry_run: first.dry_run,
                min_age,
            };
            let done = reconcile(&self.volumes, request).await?;
            Ok(convert::reconcile_response(done, min_age))
        })
        .await
    }

    type RelabelStream = Streamed<pb::RelabelProgress>;

    async fn relabel(
        &self,
        request: Request<pb::RelabelRequest>,
    ) -> Result<Response<Self::RelabelStream>, Status> {
        self.serve_stream(
            &call::RELABEL,
            request,
            RELABEL_BUFFER,
            async |_, req, feed| {
                let id = container_id(req.container_id.clone())?;
                if req.path.is_empty() {
                    return Err(Status::invalid_argument("Relabel needs a path"));
                }
                Ok(stream::relabel(self.volumes.clone(), id, req, feed))
            },
        )
        .await
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.serve(&call::STATUS, request, async |_, _| {
            Ok(convert::status_response(
                &self.info,
                &self.engine,
                &self.volumes,
            ))
        })
        .await
    }
}
