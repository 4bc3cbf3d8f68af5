//! Durable state: the records mcsd keeps and the trait a backend implements.
//!
//! The store is the source of truth for records (allocations, groups, pair
//! holders, reservations); the engine keeps only the pair pool in memory and
//! rebuilds it from [`Store::load`] at start. Every change reaches the store
//! as a [`Txn`] of semantic [`Op`]s that carry the values they expect to
//! replace, so a backend shared by several hosts can turn them into
//! compare-and-swap conditions, and a single-writer backend can ignore them.
//!
//! Logical layout, the same for every backend:
//! - `a/<container id>` → [`AllocationRecord`]
//! - `g/<group key>` → [`GroupRecord`] (level and member count)
//! - `p/<pair>` → [`Holder`]: exactly one key per held pair, which is what
//!   makes a pair impossible to hold twice
//! - `r/<reservation>` → [`ReservationRecord`]
//!
//! A store shared by several mcsd instances ([`etcd`]) also reports what the
//! other instances change, through [`Store::changes`], so each engine keeps
//! its pool in step with the cluster.

pub mod backend;
pub mod codec;
pub mod etcd;
mod load;
mod record;
pub mod sled;

pub use record::{now, AllocationRecord, GroupRecord, Holder, RelabeledRoot, ReservationRecord};

use std::path::PathBuf;

use async_trait::async_trait;

use crate::id::{ContainerId, GroupKey};
use crate::level::Level;
use crate::reservation::Reservation;

/// One change to the store. Variants that replace or remove something carry
/// the value they expect to find there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create `a/<id>`; it must not exist.
    CreateAllocation(AllocationRecord),
    /// Delete `a/<id>`, which holds this record.
    DeleteAllocation(AllocationRecord),
    /// Replace `a/<id>`, which holds `old`, with `new` (same id).
    UpdateAllocation {
        /// The record expected now.
        old: AllocationRecord,
        /// The record to store.
        new: AllocationRecord,
    },
    /// Create `p/<level>`; the pair must be free.
    ClaimPair {
        /// The pair.
        level: Level,
        /// Its new holder.
        holder: Holder,
    },
    /// Delete `p/<level>`, which `holder` holds.
    FreePair {
        /// The pair.
        level: Level,
        /// Its current holder.
        holder: Holder,
    },
    /// Create (`old == None`) or update `g/<key>`.
    PutGroup {
        /// The value expected now.
        old: Option<GroupRecord>,
        /// The value to store.
        new: GroupRecord,
    },
    /// Delete `g/<key>`, which holds this record.
    DeleteGroup(GroupRecord),
    /// Create `r/<reservation>`; it must not exist.
    PutReservation(ReservationRecord),
    /// Delete `r/<reservation>`.
    DeleteReservation(ReservationRecord),
    /// Replace `r/<reservation>`, which holds `old`, with `new` (same
    /// reservation): the configuration taking over an operator's.
    ReplaceReservation {
        /// The record there now.
        old: ReservationRecord,
        /// What replaces it.
        new: ReservationRecord,
    },
}

/// Changes that are applied all together or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn(pub Vec<Op>);

/// Receives the whole state at start-up, in this order: reservations, pairs,
/// groups, allocations.
pub trait LoadSink: Send {
    /// One reservation.
    fn reservation(&mut self, record: ReservationRecord) -> Result<(), StoreError>;
    /// One held pair.
    fn pair(&mut self, level: Level, holder: Holder) -> Result<(), StoreError>;
    /// One group.
    fn group(&mut self, record: GroupRecord) -> Result<(), StoreError>;
    /// One allocation.
    fn allocation(&mut self, record: AllocationRecord) -> Result<(), StoreError>;
}

/// Why the store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store could not be opened.
    #[error("cannot open the store at {path}: {detail}")]
    Open {
        /// Where the store lives.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// Another process holds the store's lock.
    #[error("the store at {path} is in use by another process (is another mcsd running with this state directory?)")]
    Locked {
        /// Where the store lives.
        path: PathBuf,
    },
    /// The stored data cannot be trusted.
    #[error("the store at {path} is corrupt: {detail}. mcsd refuses to start on it and never resets state by itself: restore {path} from a backup, or move it aside to start with no allocations")]
    Corrupt {
        /// Where the store lives.
        path: PathBuf,
        /// What is wrong, naming the key where possible.
        detail: String,
    },
    /// The store was written in a format this build does not know.
    #[error("the store at {path} has format version {found}, but this mcsd understands version {supported}: run the mcsd that wrote it, or restore a backup. Nothing was changed")]
    UnknownFormat {
        /// Where the store lives.
        path: PathBuf,
        /// The version found.
        found: String,
        /// The version this build writes.
        supported: u32,
    },
    /// The device holding the store is full.
    #[error("no space left on the device holding {path}: the change was not recorded; free some space and retry")]
    NoSpace {
        /// Where the store lives.
        path: PathBuf,
    },
    /// Reading or writing failed.
    #[error("store I/O error at {path}: {detail}")]
    Io {
        /// Where the store lives.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// A networked store did not answer (in time, or at all). The change
    /// may or may not have been applied; the engine reloads its view either
    /// way.
    #[error("the store {store} did not answer: {detail}. The change may not have been recorded; retry (Allocate and Release are idempotent)")]
    Unreachable {
        /// The store, described.
        store: String,
        /// What went wrong.
        detail: String,
    },
    /// A shared store found a value other than the one an [`Op`] expected:
    /// another writer got there first.
    #[error("conflict in the store: {0}")]
    Conflict(String),
}

/// A change another writer made to a shared store, decoded. `old` is what
/// the key held before (`None`: it was created), `new` what it holds now
/// (`None`: it was deleted).
// Changes live for one watch response at a time; boxing the records would
// only add allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChange {
    /// An allocation record changed.
    Allocation {
        /// Before.
        old: Option<AllocationRecord>,
        /// After.
        new: Option<AllocationRecord>,
    },
    /// A group record changed.
    Group {
        /// Before.
        old: Option<GroupRecord>,
        /// After.
        new: Option<GroupRecord>,
    },
    /// A pair was claimed (`holder` is `Some`) or freed.
    Pair {
        /// The pair.
        level: Level,
        /// Its holder now.
        holder: Option<Holder>,
    },
    /// A reservation was added (`record` is `Some`) or removed.
    Reservation {
        /// What is reserved.
        reservation: Reservation,
        /// The record now.
        record: Option<ReservationRecord>,
    },
    /// The feed lost its place (the store compacted the history it was
    /// reading, the connection dropped, a change could not be decoded):
    /// the engine must rebuild its view with [`Store::load`] and ask for a
    /// new feed with [`Store::changes`].
    Resync(String),
}

/// Changes other writers make to a shared store, in the order the store
/// applied them, starting after the state the latest [`Store::load`]
/// returned. Changes made through this process's own [`Store::commit`] are
/// left out: the engine applied them already.
#[async_trait]
pub trait ChangeFeed: Send {
    /// Waits for the next changes. `None` means the feed has ended for good
    /// (the store was closed). Must be cancellation safe: the engine races
    /// it against incoming requests and drops it when a request wins.
    async fn next(&mut self) -> Option<Vec<StoreChange>>;

    /// The next changes if some are ready, without waiting.
    fn try_next(&mut self) -> Option<Vec<StoreChange>>;
}

/// Records read together by [`Store::read_batch`], in the order asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadBatch {
    /// One entry per container id asked.
    pub allocations: Vec<Option<AllocationRecord>>,
    /// One entry per group asked.
    pub groups: Vec<Option<GroupRecord>>,
}

/// A durable home for mcsd's records.
///
/// Implementations must make a successful [`Store::commit`] durable before
/// returning, apply each [`Txn`] atomically, and serve reads that reflect
/// every commit that returned.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Human-readable location, for logs and status ("sled at /var/lib/mcsd/db").
    fn describe(&self) -> String;

    /// Feeds the whole state to `sink` (see [`LoadSink`] for the order).
    async fn load(&self, sink: &mut dyn LoadSink) -> Result<(), StoreError>;

    /// The allocation of one container.
    async fn allocation(&self, id: &ContainerId) -> Result<Option<AllocationRecord>, StoreError>;

    /// One group.
    async fn group(&self, key: &GroupKey) -> Result<Option<GroupRecord>, StoreError>;

    /// Who holds a pair, if anybody.
    async fn holder(&self, level: Level) -> Result<Option<Holder>, StoreError>;

    /// One reservation, if it exists. A shared store may hold reservations
    /// another instance made that the engine's view has not heard of yet;
    /// the engine reads them when a claim lost to one.
    async fn reservation(
        &self,
        reservation: Reservation,
    ) -> Result<Option<ReservationRecord>, StoreError>;

    /// How many pairs are held, counted by the store itself; `None` where
    /// the engine's view is the only writer and so already exact (the
    /// embedded store). A shared store answers, so that an engine whose
    /// view lags behind another instance's releases can tell.
    async fn held_count(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }

    /// Up to `limit` allocations in container id order, starting after `after`.
    async fn allocations(
        &self,
        after: Option<&ContainerId>,
        limit: usize,
    ) -> Result<Vec<AllocationRecord>, StoreError>;

    /// Applies each transaction atomically and durably. Returns one result per
    /// transaction, in order. An empty `txns` still makes every earlier write
    /// durable (the engine uses it after a failed commit).
    async fn commit(&self, txns: Vec<Txn>) -> Vec<Result<(), StoreError>>;

    /// Brings the store back to exactly what is durable after a failed
    /// [`Store::commit`] (for an embedded store: reopen it), so the engine can
    /// rebuild its view from [`Store::load`] and go on.
    async fn recover(&self) -> Result<(), StoreError>;

    /// Flushes and releases the store.
    async fn close(&self) -> Result<(), StoreError>;

    /// Reads many allocations and groups at once: the engine plans a whole
    /// batch from one call, which a networked store answers in one round
    /// trip. The default reads them one by one.
    async fn read_batch(
        &self,
        ids: &[ContainerId],
        groups: &[GroupKey],
    ) -> Result<ReadBatch, StoreError> {
        let mut batch = ReadBatch::default();
        for id in ids {
            batch.allocations.push(self.allocation(id).await?);
        }
        for key in groups {
            batch.groups.push(self.group(key).await?);
        }
        Ok(batch)
    }

    /// A feed of the changes other writers make after the state the latest
    /// [`Store::load`] returned; each call starts a new feed (drop the old
    /// one). `None`, the default, for a store only this process writes.
    fn changes(&self) -> Option<Box<dyn ChangeFeed>> {
        None
    }
}
