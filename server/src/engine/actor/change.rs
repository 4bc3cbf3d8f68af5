//! A planned change, from its plan to its outcome.
//!
//! Planning takes what a change takes away (a pair, a new reservation) from
//! the view at once, so no later request of the batch can take it too. Once
//! the change's commit has ended, exactly one of two things happens:
//! [`Change::committed`] applies what it gives back (a freed pair, a removed
//! reservation, the counters) and replies; [`Change::failed`] undoes what
//! planning took and replies the error. A change that lost a race in a
//! shared store may instead go back to being its [`Command`], to be planned
//! again.

use std::path::PathBuf;

use crate::engine::command::{Command, Reply};
use crate::engine::view::View;
use crate::engine::{AllocateRequest, Allocated, Released, Reserved, Unreserved};
use crate::error::AllocError;
use crate::level::PairIndex;
use crate::store::{AllocationRecord, RelabeledRoot, ReservationRecord};

/// A planned change waiting for its commit.
pub(super) enum Change {
    Allocate {
        record: AllocationRecord,
        /// Pair taken from the pool while planning (None when joining a group).
        claimed: Option<PairIndex>,
        new_group: bool,
        reply: Reply<Allocated>,
        /// The request, to plan again after a lost race.
        request: Box<AllocateRequest>,
        /// Plans made so far, this one included.
        attempt: u32,
    },
    Release {
        record: AllocationRecord,
        /// Pair to give back once durable (None while group members remain).
        frees: Option<PairIndex>,
        group_deleted: bool,
        /// The roots the caller restored, to plan again after a lost race.
        restored: Vec<PathBuf>,
        reply: Reply<Released>,
        /// Plans made so far, this one included.
        attempt: u32,
    },
    Reserve {
        record: ReservationRecord,
        /// The record replaced when an existing reservation is marked as
        /// configured (None when the reservation is new).
        replaced: Option<ReservationRecord>,
        covered: u64,
        held: u64,
        reply: Reply<Reserved>,
    },
    Unreserve {
        record: ReservationRecord,
        reply: Reply<Unreserved>,
    },
    Update {
        record: AllocationRecord,
        /// The root added, to plan again after a lost race.
        root: Box<RelabeledRoot>,
        reply: Reply<AllocationRecord>,
        /// Plans made so far, this one included.
        attempt: u32,
    },
}

impl Change {
    /// Applies the after-commit effects and replies.
    pub(super) fn committed(self, view: &mut View) {
        match self {
            Change::Allocate {
                record,
                new_group,
                reply,
                ..
            } => {
                view.allocated(&record.owner, new_group);
                tracing::info!(container_id = %record.container_id, owner = %record.owner,
                    level = %record.level, group = record.group.as_ref().map_or("", |g| g.as_str()), "allocated");
                let _ = reply.send(Ok(Allocated {
                    record,
                    created: true,
                }));
            }
            Change::Release {
                record,
                frees,
                group_deleted,
                reply,
                ..
            } => {
                let level_freed = view.released(&record.owner, frees, group_deleted);
                tracing::info!(container_id = %record.container_id, owner = %record.owner,
                    level = %record.level, level_freed, "released");
                let _ = reply.send(Ok(Released {
                    record: Some(record),
                    level_freed,
                }));
            }
            Change::Reserve {
                record,
                replaced,
                covered,
                held,
                reply,
            } => {
                if replaced.is_none() {
                    tracing::info!(reservation = %record.reservation, covered, held, "reserved");
                } else {
                    tracing::info!(reservation = %record.reservation, configured_by = record.configured_by.as_deref().unwrap_or(""),
                        "existing reservation now held by the configuration");
                }
                let _ = reply.send(Ok(Reserved {
                    record,
                    created: replaced.is_none(),
                    covered,
                    held,
                }));
            }
            Change::Update { record, reply, .. } => {
                let _ = reply.send(Ok(record));
            }
            Change::Unreserve { record, reply } => {
                let freed = view.remove_reservation(record.reservation).unwrap_or(0);
                tracing::info!(reservation = %record.reservation, freed, "unreserved");
                let _ = reply.send(Ok(Unreserved {
                    removed: true,
                    freed,
                }));
            }
        }
    }

    /// Reverts the planning effects and replies with the error.
    pub(super) fn failed(self, view: &mut View, error: AllocError) {
        match &self {
            Change::Allocate {
                claimed: Some(index),
                ..
            } => {
                view.release(*index);
            }
            Change::Reserve {
                record, replaced, ..
            } => match replaced {
                Some(old) => {
                    view.put_reservation(record.reservation, old.clone());
                }
                None => {
                    view.remove_reservation(record.reservation);
                }
            },
            Change::Allocate { claimed: None, .. }
            | Change::Release { .. }
            | Change::Unreserve { .. }
            | Change::Update { .. } => {}
        }
        self.into_command().fail(error);
    }

    /// Plans made so far, for the changes that are planned again after a
    /// lost race (allocations, releases, root updates); `None` for the
    /// others, which fail at once.
    pub(super) fn attempt(&self) -> Option<u32> {
        match self {
            Change::Allocate { attempt, .. }
            | Change::Release { attempt, .. }
            | Change::Update { attempt, .. } => Some(*attempt),
            Change::Reserve { .. } | Change::Unreserve { .. } => None,
        }
    }

    /// The command this change was planned from, with its reply, to plan
    /// it again or to fail it. The effects planning applied to the view are
    /// not undone here.
    pub(super) fn into_command(self) -> Command {
        match self {
            Change::Allocate { request, reply, .. } => Command::Allocate(*request, reply),
            Change::Release {
                record,
                restored,
                reply,
                ..
            } => Command::Release(record.container_id, restored, reply),
            Change::Update {
                record,
                root,
                reply,
                ..
            } => Command::AddRoot(record.container_id, *root, reply),
            Change::Reserve { record, reply, .. } => {
                Command::Reserve(record.reservation, record.configured_by, reply)
            }
            Change::Unreserve { record, reply } => Command::Unreserve(record.reservation, reply),
        }
    }
}
