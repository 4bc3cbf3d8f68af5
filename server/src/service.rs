//! The gRPC face of mcsd: translates `mcs.v1` messages to domain requests
//! and domain errors to gRPC statuses. This is the only module that knows
//! tonic and the generated types; everything behind it is plain Rust.

use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use mcs_proto::v1 as pb;
use mcs_proto::v1::labels_server::Labels;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Code, Request, Response, Status};

use crate::auth::{Caller, Denied, Policy, Role};
use crate::connection::PeerInfo;
use crate::context::mount_option;
use crate::engine::{AllocateRequest, Engine, ListFilter, Stats};
use crate::error::AllocError;
use crate::id::{ContainerId, GroupKey, IdError, Owner};
use crate::level::Level;
use crate::metrics;
use crate::reconcile::{reconcile, ReconcileRequest};
use crate::relabel::{Outcome, Refused, Totals};
use crate::reservation::Reservation;
use crate::store::{AllocationRecord, ReservationRecord, StoreError};
use crate::volumes::{Progress, VolumeError, Volumes};

/// Allocations per streamed List message.
const LIST_CHUNK: usize = 512;

/// Most ids a Reconcile may keep: far above any host's container count,
/// low enough that a runaway client cannot exhaust mcsd's memory.
pub const MAX_RECONCILE_KEEP: usize = 1 << 20;

/// Most memory the ids a Reconcile keeps may take, counted as each id's
/// length plus [`RECONCILE_KEEP_ID_OVERHEAD`]. The count limit alone lets
/// 2^20 ids of 128 characters cost hundreds of MB against the unit's
/// `MemoryMax=512M`; this budget admits a full range (523,776 pairs) of
/// 64-character runtime ids and stays far below that.
pub const MAX_RECONCILE_KEEP_BYTES: usize = 64 << 20;

/// What one kept id costs besides its characters: its string header, the
/// allocator's rounding and its slot in the hash set (with growth slack).
pub const RECONCILE_KEEP_ID_OVERHEAD: usize = 64;

/// The ids a Reconcile keeps, collected under [`MAX_RECONCILE_KEEP`] and a
/// byte budget.
struct KeepSet {
    ids: std::collections::HashSet<ContainerId>,
    bytes: usize,
    max_bytes: usize,
}

impl KeepSet {
    fn new(max_bytes: usize) -> Self {
        KeepSet {
            ids: std::collections::HashSet::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Adds the ids of one streamed message; a bad id or a set over a
    /// limit refuses the whole call.
    fn add(&mut self, ids: Vec<String>) -> Result<(), Status> {
        for id in ids {
            let id = container_id(id)?;
            let cost = id.as_str().len() + RECONCILE_KEEP_ID_OVERHEAD;
            if self.ids.contains(&id) {
                continue;
            }
            if self.bytes + cost > self.max_bytes {
                return Err(Status::resource_exhausted(format!(
                    "Reconcile: the ids to keep exceed mcsd's limit of {} MiB ({} ids so far, \
                     each counted as its length plus {RECONCILE_KEEP_ID_OVERHEAD} bytes); \
                     nothing was released",
                    self.max_bytes >> 20,
                    self.ids.len()
                )));
            }
            if self.ids.len() == MAX_RECONCILE_KEEP {
                return Err(Status::invalid_argument(format!(
                    "Reconcile: more than {MAX_RECONCILE_KEEP} ids to keep"
                )));
            }
            self.bytes += cost;
            self.ids.insert(id);
        }
        Ok(())
    }
}

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
}

impl LabelService {
    /// A service backed by `volumes` (and their engine), deciding roles
    /// with `policy`.
    pub fn new(volumes: Volumes, policy: SharedPolicy, info: DaemonInfo) -> Self {
        Self {
            engine: volumes.engine().clone(),
            policy,
            volumes,
            info: Arc::new(info),
        }
    }

    /// The caller, if it holds `role`; refusals are logged for the audit
    /// trail.
    fn authorize<T>(
        &self,
        request: &Request<T>,
        method: &'static str,
        role: Role,
    ) -> Result<Caller, Status> {
        let Some(caller) = caller(request) else {
            tracing::warn!(target: "mcsd::audit", method, "refused: no peer credentials");
            return Err(Status::permission_denied(format!(
                "{method} refused: mcsd could not read the caller's credentials (it only serves local Unix socket clients)"
            )));
        };
        let decision = self
            .policy
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .check(&caller, method, role);
        decision.map(|()| caller.clone()).map_err(|denied| {
            tracing::warn!(
                target: "mcsd::audit",
                method,
                uid = caller.uid,
                pid = caller.pid,
                needed = %role,
                context = %caller.label,
                reason = %denied,
                "refused"
            );
            denied.into()
        })
    }
}

/// A result as a metrics label: `ok` or the status code's name.
fn result_label<T>(result: &Result<T, Status>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(status) => match status.code() {
            Code::InvalidArgument => "invalid_argument",
            Code::AlreadyExists => "already_exists",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::PermissionDenied => "permission_denied",
            Code::Unavailable => "unavailable",
            Code::NotFound => "not_found",
            _ => "error",
        },
    }
}

/// Records a state-changing call and its outcome in the structured log.
fn audit<T>(caller: &Caller, method: &'static str, subject: &str, result: &Result<T, Status>) {
    match result {
        Ok(_) => tracing::info!(
            target: "mcsd::audit",
            method,
            uid = caller.uid,
            pid = caller.pid,
            subject,
            result = "ok"
        ),
        Err(status) => tracing::info!(
            target: "mcsd::audit",
            method,
            uid = caller.uid,
            pid = caller.pid,
            subject,
            result = ?status.code(),
            message = status.message()
        ),
    }
}

impl From<VolumeError> for Status {
    fn from(e: VolumeError) -> Status {
        let code = match &e {
            VolumeError::Alloc(inner) => return Status::from(inner.clone()),
            VolumeError::Refused(Refused::System { .. } | Refused::NotAllowed { .. }) => {
                Code::PermissionDenied
            }
            VolumeError::Refused(_) => Code::InvalidArgument,
            VolumeError::NoAllocation(_)
            | VolumeError::OtherNode { .. }
            | VolumeError::Relabel(_)
            | VolumeError::Incomplete(_)
            | VolumeError::ReadOnly(_)
            | VolumeError::RestoreFailed { .. } => Code::FailedPrecondition,
            VolumeError::Cancelled { .. } => Code::Aborted,
        };
        Status::new(code, e.to_string())
    }
}

fn progress_message(root: &std::path::Path, label: &str, t: &Totals) -> pb::RelabelProgress {
    pb::RelabelProgress {
        seen: t.seen,
        changed: t.changed,
        unchanged: t.unchanged,
        failed: t.failed,
        mounts_skipped: t.mounts_skipped,
        hardlinks_skipped: t.hardlinks_skipped,
        hardlinks_skipped_paths: Vec::new(),
        done: false,
        root: root.display().to_string(),
        label: label.to_owned(),
        errors: Vec::new(),
        seconds: 0.0,
    }
}

fn summary_message(outcome: &Outcome, label: &str) -> pb::RelabelProgress {
    pb::RelabelProgress {
        done: true,
        errors: outcome
            .errors
            .iter()
            .map(|e| pb::EntryError {
                path: e.path.display().to_string(),
                error: e.error.clone(),
            })
            .collect(),
        seconds: outcome.elapsed.as_secs_f64(),
        hardlinks_skipped_paths: outcome
            .hardlinks_skipped
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        ..progress_message(&outcome.root, label, &outcome.totals)
    }
}

impl From<Denied> for Status {
    fn from(d: Denied) -> Status {
        Status::permission_denied(d.to_string())
    }
}

impl From<AllocError> for Status {
    fn from(e: AllocError) -> Status {
        let code = match &e {
            AllocError::InvalidId(_)
            | AllocError::InvalidLevel(_)
            | AllocError::OutOfRange { .. }
            | AllocError::ReservationOutOfRange { .. } => Code::InvalidArgument,
            AllocError::Exhausted { .. } => Code::ResourceExhausted,
            AllocError::LevelHeld { .. }
            | AllocError::IdConflict { .. }
            | AllocError::GroupLevel { .. } => Code::AlreadyExists,
            AllocError::LevelReserved { .. } => Code::FailedPrecondition,
            AllocError::NotRestored { .. } => Code::Aborted,
            AllocError::NotFound(_) => Code::NotFound,
            AllocError::Store(StoreError::Conflict(_)) => Code::Aborted,
            AllocError::Store(StoreError::Corrupt { .. }) | AllocError::Inconsistent(_) => {
                Code::Internal
            }
            AllocError::Store(_) | AllocError::ShuttingDown => Code::Unavailable,
        };
        Status::new(code, e.to_string())
    }
}

fn container_id(value: String) -> Result<ContainerId, Status> {
    ContainerId::new(value).map_err(|e| AllocError::from(e).into())
}

/// An optional field: empty means absent.
fn optional<T>(
    value: String,
    parse: impl FnOnce(String) -> Result<T, IdError>,
) -> Result<Option<T>, Status> {
    if value.is_empty() {
        Ok(None)
    } else {
        parse(value)
            .map(Some)
            .map_err(|e| AllocError::from(e).into())
    }
}

fn level(value: &str) -> Result<Level, Status> {
    value.parse().map_err(|e| AllocError::from(e).into())
}

fn reservation(value: &str) -> Result<Reservation, Status> {
    value.parse().map_err(|e| AllocError::from(e).into())
}

/// The caller, as the kernel described it when the connection was accepted.
fn caller<T>(request: &Request<T>) -> Option<Caller> {
    let info = request.extensions().get::<PeerInfo>()?;
    info.caller.as_deref().cloned()
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

/// The wire form of an allocation.
pub fn allocation_to_proto(r: &AllocationRecord) -> pb::Allocation {
    pb::Allocation {
        container_id: r.container_id.to_string(),
        owner: r.owner.to_string(),
        group: r
            .group
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        level: r.level.to_string(),
        process_label: r.process_label.clone(),
        mount_option: mount_option(&r.file_label),
        file_label: r.file_label.clone(),
        created_at: Some(timestamp(r.created_at)),
        node: r.node.clone(),
        roots: r
            .roots
            .iter()
            .map(|root| pb::RelabeledRoot {
                path: root.path.display().to_string(),
                shared: root.shared,
                original_label: root.original.clone().unwrap_or_default(),
                hard_links: root.hard_links,
            })
            .collect(),
    }
}

fn reservation_to_proto(r: &ReservationRecord) -> pb::Reservation {
    pb::Reservation {
        target: r.reservation.to_string(),
        created_at: Some(timestamp(r.created_at)),
    }
}

fn stats_to_proto(s: Stats) -> pb::StatsResponse {
    pb::StatsResponse {
        range: s.range.to_string(),
        total: s.pool.total,
        held: s.pool.held,
        free: s.pool.free,
        reserved: s.pool.reserved,
        containers: s.containers,
        groups: s.groups,
        owners: s
            .owners
            .into_iter()
            .map(|(owner, containers)| pb::OwnerStats {
                owner: owner.to_string(),
                containers,
            })
            .collect(),
    }
}

type ListStream = Pin<Box<dyn Stream<Item = Result<pb::ListResponse, Status>> + Send>>;
type RelabelStream = Pin<Box<dyn Stream<Item = Result<pb::RelabelProgress, Status>> + Send>>;

#[tonic::async_trait]
impl Labels for LabelService {
    async fn allocate(
        &self,
        request: Request<pb::AllocateRequest>,
    ) -> Result<Response<pb::AllocateResponse>, Status> {
        let caller = self.authorize(&request, "Allocate", Role::Admin)?;
        let req = request.into_inner();
        let subject = req.container_id.clone();
        let result = async {
            let owner = match optional(req.owner, Owner::new)? {
                Some(owner) => owner,
                None => Owner::new(format!("uid:{}", caller.uid))
                    .map_err(|e| Status::from(AllocError::from(e)))?,
            };
            let request = AllocateRequest {
                container_id: container_id(req.container_id)?,
                owner,
                group: optional(req.group, GroupKey::new)?,
                level: if req.level.is_empty() {
                    None
                } else {
                    Some(level(&req.level)?)
                },
            };
            let allocated = self.engine.allocate(request).await?;
            Ok(Response::new(pb::AllocateResponse {
                allocation: Some(allocation_to_proto(&allocated.record)),
                created: allocated.created,
            }))
        }
        .await;
        audit(&caller, "Allocate", &subject, &result);
        let owner = match &result {
            Ok(r) => r.get_ref().allocation.as_ref().map(|a| a.owner.clone()),
            Err(_) => None,
        };
        metrics::global().allocation(owner.as_deref().unwrap_or("unknown"), result_label(&result));
        result
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let caller = self.authorize(&request, "Release", Role::Admin)?;
        let subject = request.into_inner().container_id;
        let result = async {
            let (released, restored) = self.volumes.release(container_id(subject.clone())?).await?;
            Ok(Response::new(pb::ReleaseResponse {
                released: released.record.is_some(),
                allocation: released.record.as_ref().map(allocation_to_proto),
                level_freed: released.level_freed,
                restored: restored
                    .into_iter()
                    .map(|r| pb::RootRestore {
                        path: r.path.display().to_string(),
                        mode: r.mode.to_string(),
                        changed: r.totals.changed,
                        failed: r.totals.failed,
                        error: r.note.unwrap_or_default(),
                        hardlinks_skipped: r.totals.hardlinks_skipped,
                    })
                    .collect(),
            }))
        }
        .await;
        audit(&caller, "Release", &subject, &result);
        let owner = match &result {
            Ok(r) => r.get_ref().allocation.as_ref().map(|a| a.owner.clone()),
            Err(_) => None,
        };
        metrics::global().release(owner.as_deref().unwrap_or("unknown"), result_label(&result));
        result
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::Allocation>, Status> {
        self.authorize(&request, "Get", Role::Reader)?;
        let id = container_id(request.into_inner().container_id)?;
        let record = self.engine.get(&id).await?;
        Ok(Response::new(allocation_to_proto(&record)))
    }

    type ListStream = ListStream;

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<ListStream>, Status> {
        self.authorize(&request, "List", Role::Reader)?;
        let req = request.into_inner();
        let filter = ListFilter {
            owner: optional(req.owner, Owner::new)?,
            group: optional(req.group, GroupKey::new)?,
            node: (!req.node.is_empty()).then_some(req.node),
        };
        let mut after = optional(req.start_after, ContainerId::new)?;
        let mut remaining = if req.limit == 0 { u64::MAX } else { req.limit };
        let engine = self.engine.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut chunk = Vec::with_capacity(LIST_CHUNK);
            loop {
                let page = match engine.list_page(&filter, after.as_ref()).await {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                for record in &page.records {
                    if remaining == 0 {
                        break;
                    }
                    remaining -= 1;
                    chunk.push(allocation_to_proto(record));
                    if chunk.len() == LIST_CHUNK {
                        let allocations =
                            std::mem::replace(&mut chunk, Vec::with_capacity(LIST_CHUNK));
                        if tx.send(Ok(pb::ListResponse { allocations })).await.is_err() {
                            return; // the client went away
                        }
                    }
                }
                after = page.next;
                if after.is_none() || remaining == 0 {
                    break;
                }
            }
            if !chunk.is_empty() {
                let _ = tx.send(Ok(pb::ListResponse { allocations: chunk })).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn reserve(
        &self,
        request: Request<pb::ReserveRequest>,
    ) -> Result<Response<pb::ReserveResponse>, Status> {
        let caller = self.authorize(&request, "Reserve", Role::Admin)?;
        let subject = request.into_inner().target;
        let result = async {
            let reserved = self.engine.reserve(reservation(&subject)?).await?;
            Ok(Response::new(pb::ReserveResponse {
                reservation: Some(reservation_to_proto(&reserved.record)),
                created: reserved.created,
                pairs_covered: reserved.covered,
                pairs_held: reserved.held,
            }))
        }
        .await;
        audit(&caller, "Reserve", &subject, &result);
        result
    }

    async fn unreserve(
        &self,
        request: Request<pb::UnreserveRequest>,
    ) -> Result<Response<pb::UnreserveResponse>, Status> {
        let caller = self.authorize(&request, "Unreserve", Role::Admin)?;
        let subject = request.into_inner().target;
        let result = async {
            let unreserved = self.engine.unreserve(reservation(&subject)?).await?;
            Ok(Response::new(pb::UnreserveResponse {
                removed: unreserved.removed,
                pairs_freed: unreserved.freed,
            }))
        }
        .await;
        audit(&caller, "Unreserve", &subject, &result);
        result
    }

    async fn list_reservations(
        &self,
        request: Request<pb::ListReservationsRequest>,
    ) -> Result<Response<pb::ListReservationsResponse>, Status> {
        self.authorize(&request, "ListReservations", Role::Reader)?;
        let reservations = self.engine.reservations().await?;
        Ok(Response::new(pb::ListReservationsResponse {
            reservations: reservations.iter().map(reservation_to_proto).collect(),
        }))
    }

    async fn stats(
        &self,
        request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        self.authorize(&request, "Stats", Role::Reader)?;
        Ok(Response::new(stats_to_proto(self.engine.stats().await?)))
    }

    async fn reconcile(
        &self,
        request: Request<tonic::Streaming<pb::ReconcileRequest>>,
    ) -> Result<Response<pb::ReconcileResponse>, Status> {
        let caller = self.authorize(&request, "Reconcile", Role::Admin)?;
        let mut stream = request.into_inner();
        let Some(first) = stream.message().await? else {
            return Err(Status::invalid_argument(
                "Reconcile needs at least one message naming the owner",
            ));
        };
        let owner = optional(first.owner, Owner::new)?.ok_or_else(|| {
            Status::invalid_argument(
                "Reconcile: the first message must name the owner whose allocations are reconciled",
            )
        })?;
        let subject = owner.to_string();
        let min_age = match first.min_age_secs {
            None => self.info.reconcile_min_age,
            Some(secs) if secs <= crate::config::MAX_RECONCILE_MIN_AGE_SECS => {
                std::time::Duration::from_secs(secs)
            }
            Some(secs) => {
                return Err(Status::invalid_argument(format!(
                    "Reconcile: min_age_secs {secs} is more than a day ({})",
                    crate::config::MAX_RECONCILE_MIN_AGE_SECS
                )))
            }
        };
        let result = async {
            let mut keep = KeepSet::new(MAX_RECONCILE_KEEP_BYTES);
            keep.add(first.keep)?;
            while let Some(more) = stream.message().await? {
                if !more.owner.is_empty() && more.owner != owner.as_str() {
                    return Err(Status::invalid_argument(format!(
                        "Reconcile: a later message names owner {:?}, but this call reconciles {owner}",
                        more.owner
                    )));
                }
                keep.add(more.keep)?;
            }
            let done = reconcile(
                &self.volumes,
                ReconcileRequest {
                    owner: owner.clone(),
                    keep: keep.ids,
                    dry_run: first.dry_run,
                    min_age,
                },
            )
            .await?;
            Ok(Response::new(pb::ReconcileResponse {
                released: done.released.iter().map(allocation_to_proto).collect(),
                kept: done.kept,
                unknown: done.unknown,
                kept_young: done.kept_young,
                min_age_secs: min_age.as_secs(),
                not_released: done
                    .not_released
                    .iter()
                    .map(|(record, reason)| pb::NotReleased {
                        allocation: Some(allocation_to_proto(record)),
                        reason: reason.clone(),
                    })
                    .collect(),
            }))
        }
        .await;
        audit(&caller, "Reconcile", &subject, &result);
        result
    }

    type RelabelStream = RelabelStream;

    async fn relabel(
        &self,
        request: Request<pb::RelabelRequest>,
    ) -> Result<Response<RelabelStream>, Status> {
        let caller = self.authorize(&request, "Relabel", Role::Admin)?;
        let req = request.into_inner();
        let subject = format!("{} {}", req.container_id, req.path);
        let id = match container_id(req.container_id) {
            Ok(id) => id,
            Err(status) => {
                audit(&caller, "Relabel", &subject, &Err::<(), _>(status.clone()));
                return Err(status);
            }
        };
        if req.path.is_empty() {
            return Err(Status::invalid_argument("Relabel needs a path"));
        }
        let (tx, rx) = mpsc::channel(16);
        let (progress_tx, mut progress_rx) = mpsc::channel(4);
        let volumes = self.volumes.clone();
        tokio::spawn(async move {
            let work = volumes.relabel(
                id,
                std::path::PathBuf::from(req.path),
                req.shared,
                req.cross_mounts,
                req.hard_links,
                progress_tx,
            );
            tokio::pin!(work);
            let forward = |(root, label, totals): Progress| {
                // A client that stopped reading must not stall the walk.
                let _ = tx.try_send(Ok(progress_message(&root, &label, &totals)));
            };
            let result = loop {
                tokio::select! {
                    biased;
                    Some(progress) = progress_rx.recv() => forward(progress),
                    result = &mut work => break result,
                }
            };
            while let Ok(progress) = progress_rx.try_recv() {
                forward(progress);
            }
            let result = match result {
                Ok(done) => {
                    let _ = tx
                        .send(Ok(summary_message(&done.outcome, &done.label)))
                        .await;
                    Ok(())
                }
                Err(VolumeError::Incomplete(outcome)) => {
                    let _ = tx.send(Ok(summary_message(&outcome, ""))).await;
                    Err(Status::from(VolumeError::Incomplete(outcome)))
                }
                Err(e) => Err(Status::from(e)),
            };
            audit(&caller, "Relabel", &subject, &result);
            if let Err(status) = result {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.authorize(&request, "Status", Role::Reader)?;
        let info = &self.info;
        let serving = info.serving.load(std::sync::atomic::Ordering::Relaxed);
        Ok(Response::new(pb::StatusResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: Some(timestamp(info.started_at)),
            uptime_seconds: info.started_at.elapsed().unwrap_or_default().as_secs_f64(),
            store: self.engine.store_description(),
            selinux_mode: info.selinux_mode.clone(),
            health: if serving { "SERVING" } else { "NOT_SERVING" }.to_owned(),
            socket: info.socket.display().to_string(),
            range: self.engine.range().to_string(),
            restore_mode: self.volumes.relabeler().config().restore.to_string(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime_id(i: usize) -> String {
        format!("{i:064x}")
    }

    #[test]
    fn the_keep_set_is_bounded_in_bytes_and_says_the_limit() {
        // Room for exactly ten 64-character ids.
        let mut keep = KeepSet::new(10 * (64 + RECONCILE_KEEP_ID_OVERHEAD));
        keep.add((0..10).map(runtime_id).collect()).unwrap();
        // Repeats cost nothing.
        keep.add((0..10).map(runtime_id).collect()).unwrap();
        let refused = keep.add(vec![runtime_id(10)]).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("limit of 0 MiB") && refused.message().contains("10 ids"),
            "{}",
            refused.message()
        );
        let mut keep = KeepSet::new(MAX_RECONCILE_KEEP_BYTES);
        let refused = keep.add(vec!["bad id".into()]).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn the_keep_budget_admits_a_full_range_of_runtime_ids_and_no_more_than_it_should() {
        let pairs = 1024 * 1023 / 2;
        let mut keep = KeepSet::new(MAX_RECONCILE_KEEP_BYTES);
        let ids: Vec<String> = (0..pairs).map(runtime_id).collect();
        keep.add(ids).unwrap();
        let more = MAX_RECONCILE_KEEP_BYTES / (64 + RECONCILE_KEEP_ID_OVERHEAD) - pairs;
        let refused = keep
            .add((pairs..pairs + more + 1).map(runtime_id).collect())
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("64 MiB"),
            "{}",
            refused.message()
        );
        // What the set really holds stays within twice the budget (the
        // hash set grows by doubling): a quarter of the unit's
        // MemoryMax=512M at most.
        let held: usize = keep
            .ids
            .iter()
            .map(|id| id.as_str().len() + 24)
            .sum::<usize>()
            + keep.ids.capacity() * (std::mem::size_of::<ContainerId>() + 1);
        assert!(held <= 2 * MAX_RECONCILE_KEEP_BYTES, "{held}");
        const { assert!(2 * MAX_RECONCILE_KEEP_BYTES <= (512 << 20) / 4) };
    }
}
