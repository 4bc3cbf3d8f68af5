//! Reconcile: a runtime says which of its containers still exist, and mcsd
//! releases the rest of that runtime's allocations.
//!
//! This is how labels of containers that vanished without a Release (the
//! runtime crashed, the host rebooted mid-teardown) come back. Allocations
//! younger than the minimum age (`[reconcile] min_age_secs`, or the
//! request's own) are never released by it: a runtime lists its containers
//! at one moment and calls later, and a container being created may hold
//! its allocation before the engine lists it. So a runtime may keep
//! creating containers while it reconciles.

use std::collections::HashSet;
use std::time::{Duration, UNIX_EPOCH};

use crate::engine::ListFilter;
use crate::error::AllocError;
use crate::id::{ContainerId, Owner};
use crate::store::{self, AllocationRecord};
use crate::volumes::{VolumeError, Volumes};

/// What a runtime asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileRequest {
    /// Whose allocations.
    pub owner: Owner,
    /// The ids that still exist.
    pub keep: HashSet<ContainerId>,
    /// Only report.
    pub dry_run: bool,
    /// Allocations younger than this (at the start of the call) are kept.
    pub min_age: Duration,
}

/// What reconciling did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reconciled {
    /// Allocations released (or that would be, for a dry run), by id.
    pub released: Vec<AllocationRecord>,
    /// Allocations of the owner that stay.
    pub kept: u64,
    /// Ids to keep that hold no allocation of this owner.
    pub unknown: u64,
    /// Of `kept`, allocations not in `keep` kept only for being younger
    /// than the minimum age.
    pub kept_young: u64,
    /// Stale allocations kept because their volumes could not be restored
    /// (the pair stays held until a later release or reconcile succeeds),
    /// with the reason.
    pub not_released: Vec<(AllocationRecord, String)>,
}

/// Releases every allocation of `request.owner` not in `request.keep` and
/// created at least `request.min_age` before this call began, each after restoring its volumes (these
/// are exactly the containers whose teardown failed, whose volumes still
/// carry the pair). Each release is durable on its own; one whose volumes
/// cannot be restored is kept and reported, and the others go on. If the
/// call fails midway, what it reported released stays released and a
/// second call finishes the job.
pub async fn reconcile(
    volumes: &Volumes,
    request: ReconcileRequest,
) -> Result<Reconciled, AllocError> {
    let engine = volumes.engine();
    let started = store::now();
    // Created at or after this: too young to judge.
    let young = started.checked_sub(request.min_age).unwrap_or(UNIX_EPOCH);
    // A runtime knows the containers of its own host only.
    let filter = ListFilter {
        owner: Some(request.owner.clone()),
        group: None,
        node: Some(engine.node().to_owned()),
    };
    let mut result = Reconciled::default();
    let mut stale = Vec::new();
    let mut seen = 0u64;
    let mut after = None;
    loop {
        let page = engine.list_page(&filter, after.as_ref()).await?;
        for record in page.records {
            if request.keep.contains(&record.container_id) {
                seen += 1;
                result.kept += 1;
            } else if record.created_at >= young {
                result.kept += 1;
                result.kept_young += 1;
            } else {
                stale.push(record);
            }
        }
        after = page.next;
        if after.is_none() {
            break;
        }
    }
    result.unknown = request.keep.len() as u64 - seen;
    if request.dry_run {
        result.released = stale;
        return Ok(result);
    }
    for record in stale {
        match volumes.release(record.container_id.clone()).await {
            Ok((released, restored)) => {
                if let Some(released) = released.record {
                    tracing::info!(
                        container_id = %released.container_id,
                        owner = %released.owner,
                        level = %released.level,
                        roots_restored = restored.len(),
                        "released by reconcile"
                    );
                    result.released.push(released);
                }
            }
            // The store or the engine failing ends the call; a volume
            // that cannot be restored keeps only its own pair.
            Err(VolumeError::Alloc(e)) => return Err(e),
            Err(e) => {
                tracing::warn!(container_id = %record.container_id, error = %e,
                    "reconcile kept an allocation whose volumes could not be restored");
                result.not_released.push((record, e.to_string()));
            }
        }
    }
    Ok(result)
}
