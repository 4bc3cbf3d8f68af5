//! Proto ⇄ domain: reading `mcs.v1` requests into validated domain values,
//! writing domain answers as `mcs.v1` messages, and the one place each
//! domain error becomes a gRPC status.
//!
//! Everything here is a plain function of its inputs: no authorization, no
//! audit, no engine calls. The handlers in [`super`] call the domain between
//! a function that reads the request and one that writes the reply.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use mcs_proto::v1 as pb;
use tonic::{Code, Status};

use super::DaemonInfo;
use crate::auth::{Caller, Denied};
use crate::context::mount_option;
use crate::engine::{
    AllocateRequest, Allocated, Engine, ListFilter, Released, Reserved, Stats, Unreserved,
};
use crate::error::AllocError;
use crate::id::{ContainerId, GroupKey, IdError, Owner};
use crate::level::Level;
use crate::reconcile::Reconciled;
use crate::relabel::{Outcome, Refused, Totals};
use crate::reservation::Reservation;
use crate::store::{AllocationRecord, ReservationRecord, StoreError};
use crate::volumes::{Restored, VolumeError, Volumes};

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

/// A container id from the wire.
pub(crate) fn container_id(value: String) -> Result<ContainerId, Status> {
    ContainerId::new(value).map_err(|e| AllocError::from(e).into())
}

/// An optional field: empty means absent.
pub(crate) fn optional<T>(
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

/// A reservation target from the wire.
pub(crate) fn reservation(value: &str) -> Result<Reservation, Status> {
    value.parse().map_err(|e| AllocError::from(e).into())
}

/// An Allocate request; the owner defaults to the caller's uid.
pub(crate) fn allocate_request(
    req: pb::AllocateRequest,
    caller: &Caller,
) -> Result<AllocateRequest, Status> {
    let owner = match optional(req.owner, Owner::new)? {
        Some(owner) => owner,
        None => Owner::new(format!("uid:{}", caller.uid))
            .map_err(|e| Status::from(AllocError::from(e)))?,
    };
    Ok(AllocateRequest {
        container_id: container_id(req.container_id)?,
        owner,
        group: optional(req.group, GroupKey::new)?,
        level: if req.level.is_empty() {
            None
        } else {
            Some(level(&req.level)?)
        },
    })
}

/// What a List asks for: which allocations, after which id, how many.
pub(crate) struct ListQuery {
    /// Which allocations.
    pub(crate) filter: ListFilter,
    /// Only those after this id.
    pub(crate) after: Option<ContainerId>,
    /// At most this many (`u64::MAX` when the request sets no limit).
    pub(crate) limit: u64,
}

/// A List request.
pub(crate) fn list_query(req: pb::ListRequest) -> Result<ListQuery, Status> {
    let filter = ListFilter {
        owner: optional(req.owner, Owner::new)?,
        group: optional(req.group, GroupKey::new)?,
        node: (!req.node.is_empty()).then_some(req.node),
    };
    Ok(ListQuery {
        filter,
        after: optional(req.start_after, ContainerId::new)?,
        limit: if req.limit == 0 { u64::MAX } else { req.limit },
    })
}

/// The minimum age of a Reconcile: the request's, at most a day, else the
/// configured one.
pub(crate) fn min_age(requested: Option<u64>, configured: Duration) -> Result<Duration, Status> {
    match requested {
        None => Ok(configured),
        Some(secs) if secs <= crate::config::MAX_RECONCILE_MIN_AGE_SECS => {
            Ok(Duration::from_secs(secs))
        }
        Some(secs) => Err(Status::invalid_argument(format!(
            "Reconcile: min_age_secs {secs} is more than a day ({})",
            crate::config::MAX_RECONCILE_MIN_AGE_SECS
        ))),
    }
}

/// One progress message of a walk under way.
pub(crate) fn progress_message(root: &Path, label: &str, t: &Totals) -> pb::RelabelProgress {
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

/// The last message of a walk: its totals, errors and skipped paths.
pub(crate) fn summary_message(outcome: &Outcome, label: &str) -> pb::RelabelProgress {
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

/// The answer to Allocate.
pub(crate) fn allocate_response(allocated: Allocated) -> pb::AllocateResponse {
    pb::AllocateResponse {
        allocation: Some(allocation_to_proto(&allocated.record)),
        created: allocated.created,
    }
}

/// The answer to Release: what was released and what each root got back.
pub(crate) fn release_response(released: Released, restored: Vec<Restored>) -> pb::ReleaseResponse {
    pb::ReleaseResponse {
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
    }
}

/// The answer to Reserve.
pub(crate) fn reserve_response(reserved: Reserved) -> pb::ReserveResponse {
    pb::ReserveResponse {
        reservation: Some(reservation_to_proto(&reserved.record)),
        created: reserved.created,
        pairs_covered: reserved.covered,
        pairs_held: reserved.held,
    }
}

/// The answer to Unreserve.
pub(crate) fn unreserve_response(unreserved: Unreserved) -> pb::UnreserveResponse {
    pb::UnreserveResponse {
        removed: unreserved.removed,
        pairs_freed: unreserved.freed,
    }
}

/// The answer to ListReservations.
pub(crate) fn reservations_response(
    reservations: &[ReservationRecord],
) -> pb::ListReservationsResponse {
    pb::ListReservationsResponse {
        reservations: reservations.iter().map(reservation_to_proto).collect(),
    }
}

/// The answer to Stats.
pub(crate) fn stats_to_proto(s: Stats) -> pb::StatsResponse {
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

/// The answer to Reconcile, with the minimum age it applied.
pub(crate) fn reconcile_response(done: Reconciled, min_age: Duration) -> pb::ReconcileResponse {
    pb::ReconcileResponse {
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
    }
}

/// The answer to Status: the daemon, its store, range and restore mode.
pub(crate) fn status_response(
    info: &DaemonInfo,
    engine: &Engine,
    volumes: &Volumes,
) -> pb::StatusResponse {
    let serving = info.serving.load(Ordering::Relaxed);
    pb::StatusResponse {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at: Some(timestamp(info.started_at)),
        uptime_seconds: info.started_at.elapsed().unwrap_or_default().as_secs_f64(),
        store: engine.store_description(),
        selinux_mode: info.selinux_mode.clone(),
        health: if serving { "SERVING" } else { "NOT_SERVING" }.to_owned(),
        socket: info.socket.display().to_string(),
        range: engine.range().to_string(),
        restore_mode: volumes.relabeler().config().restore.to_string(),
    }
}
