//! Errors of the label domain: what a caller did wrong, what state prevents a
//! request, and store failures. The service layer maps each variant to a gRPC
//! status in one place; the messages here are what a human reads.

use crate::allocator::PoolStats;
use crate::id::{ContainerId, GroupKey, IdError, Owner};
use crate::level::{CategoryRange, Level, LevelError};
use crate::reservation::Reservation;
use crate::store::{Holder, StoreError};

/// Why an id already holds something other than what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// It belongs to another owner.
    Owner(Owner),
    /// It is in another group (or in none).
    Group(Option<GroupKey>),
    /// It holds another level than this requested one.
    Level(Level),
}

/// An error of the label domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// A malformed container id, owner or group.
    #[error(transparent)]
    InvalidId(#[from] IdError),
    /// A malformed level, category or range.
    #[error("invalid level: {0}")]
    InvalidLevel(#[from] LevelError),
    /// A well-formed level outside the configured range.
    #[error("{level} is outside the configured category range {range}")]
    OutOfRange {
        /// The level asked for.
        level: Level,
        /// The range mcsd hands out.
        range: CategoryRange,
    },
    /// A reservation outside the configured range.
    #[error("reservation {reservation} lies outside the configured category range {range}")]
    ReservationOutOfRange {
        /// The reservation asked for.
        reservation: Reservation,
        /// The range mcsd hands out.
        range: CategoryRange,
    },
    /// Every pair is held or reserved.
    #[error("no free pair left: all {} pairs of {range} are held ({}) or reserved ({}); release containers, remove reservations or widen the range", .stats.total, .stats.held, .stats.reserved)]
    Exhausted {
        /// The range mcsd hands out.
        range: CategoryRange,
        /// Occupancy when the request failed.
        stats: PoolStats,
    },
    /// The requested level is held by another id.
    #[error("{level} is already held by {holder}")]
    LevelHeld {
        /// The level asked for.
        level: Level,
        /// Who holds it.
        holder: Holder,
    },
    /// The requested level is reserved.
    #[error("{level} is reserved by the operator (reservation {reservation}); remove the reservation or ask for another level")]
    LevelReserved {
        /// The level asked for.
        level: Level,
        /// The reservation that covers it.
        reservation: Reservation,
    },
    /// The container id already holds an allocation that differs from the
    /// request.
    #[error("container {id} already holds {held} {}; release it first", describe(.mismatch))]
    IdConflict {
        /// The container.
        id: ContainerId,
        /// The level it holds.
        held: Level,
        /// How the existing allocation differs.
        mismatch: Mismatch,
    },
    /// A group member asked for a level other than its group's.
    #[error(
        "group {group} holds {held}; its members share that level and cannot ask for {requested}"
    )]
    GroupLevel {
        /// The group.
        group: GroupKey,
        /// The group's level.
        held: Level,
        /// The level asked for.
        requested: Level,
    },
    /// Get of an id that holds nothing.
    #[error("container {0} holds no allocation")]
    NotFound(ContainerId),
    /// A release that would free a pair while a volume registered for it
    /// has not been restored (it was registered while the release ran).
    #[error("container {id} was not released: volume {} was registered for it while the release ran and has not been restored; release again", .path.display())]
    NotRestored {
        /// The container.
        id: ContainerId,
        /// The root not restored.
        path: std::path::PathBuf,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A record contradicts another at run time (a bug or outside tampering).
    #[error("inconsistent state: {0}")]
    Inconsistent(String),
    /// mcsd is stopping and takes no new requests.
    #[error("mcsd is shutting down; retry against the next instance")]
    ShuttingDown,
}

fn describe(m: &Mismatch) -> String {
    match m {
        Mismatch::Owner(o) => format!("for owner {o}"),
        Mismatch::Group(Some(g)) => format!("in group {g}"),
        Mismatch::Group(None) => "outside any group".to_owned(),
        Mismatch::Level(requested) => format!("instead of the requested {requested}"),
    }
}
