//! What callers ask the engine, and what it answers.

use crate::id::{ContainerId, GroupKey, Owner};
use crate::level::Level;
use crate::store::{AllocationRecord, ReservationRecord};

/// A request for a container's label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocateRequest {
    /// The container.
    pub container_id: ContainerId,
    /// Who asks.
    pub owner: Owner,
    /// Its pod, if any.
    pub group: Option<GroupKey>,
    /// A specific level, if the runtime restores a container.
    pub level: Option<Level>,
}

/// The answer to an [`AllocateRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocated {
    /// The allocation, durable.
    pub record: AllocationRecord,
    /// False if the id already held it.
    pub created: bool,
}

/// The answer to a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// What was released; `None` if the id held nothing.
    pub record: Option<AllocationRecord>,
    /// Whether the pair went back to the pool.
    pub level_freed: bool,
}

/// The answer to a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    /// The reservation, durable.
    pub record: ReservationRecord,
    /// False if it already existed.
    pub created: bool,
    /// Pairs of the range it covers.
    pub covered: u64,
    /// Of those, pairs currently held.
    pub held: u64,
}

/// The answer to removing a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreserved {
    /// False if there was no such reservation.
    pub removed: bool,
    /// Pairs that became free.
    pub freed: u64,
}

/// Which allocations a listing returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only this owner's.
    pub owner: Option<Owner>,
    /// Only this group's.
    pub group: Option<GroupKey>,
    /// Only those made on this node.
    pub node: Option<String>,
}

impl ListFilter {
    pub(super) fn matches(&self, r: &AllocationRecord) -> bool {
        self.node.as_ref().is_none_or(|n| *n == r.node)
            && self.owner.as_ref().is_none_or(|o| *o == r.owner)
            && self
                .group
                .as_ref()
                .is_none_or(|g| r.group.as_ref() == Some(g))
    }
}

/// One step of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    /// Matching allocations, in container id order.
    pub records: Vec<AllocationRecord>,
    /// Where to resume; `None` when the listing is complete.
    pub next: Option<ContainerId>,
}
