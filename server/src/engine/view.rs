//! The engine's in-memory view of the store: what it needs to plan a
//! change without reading the store.
//!
//! The view is deliberately small: the pair pool, the reservations and a few
//! counters. Records stay in the store. Its fields change only through its
//! methods, which keep them in step with each other; how it is rebuilt from
//! the store is in `load`.

use std::collections::{BTreeMap, HashMap};

use rand::Rng;

pub(crate) use self::load::load;
pub use self::load::LoadError;
use crate::allocator::{ClaimError, PairPool, PoolStats};
use crate::id::Owner;
use crate::level::{CategoryRange, Level, PairIndex};
use crate::reservation::Reservation;
use crate::store::ReservationRecord;

mod load;

/// Occupancy and counts, as reported by Stats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// The configured range.
    pub range: CategoryRange,
    /// Pair counts.
    pub pool: PoolStats,
    /// Live container ids.
    pub containers: u64,
    /// Live groups.
    pub groups: u64,
    /// Containers per owner, sorted by owner.
    pub owners: Vec<(Owner, u64)>,
}

/// What the engine keeps in memory.
///
/// Its fields change only through the methods below, which keep them in
/// step: a reservation is in `reservations` exactly when the pool keeps its
/// pairs out, and `containers` is the sum of `owners`' counts (unless the
/// view fell out of step with a shared store, which then reloads it).
#[derive(Debug, Clone)]
pub(crate) struct View {
    pool: PairPool,
    reservations: BTreeMap<Reservation, ReservationRecord>,
    containers: u64,
    groups: u64,
    owners: HashMap<Owner, u64>,
}

impl View {
    /// A view of `range` with nothing held, reserved or counted.
    pub(super) fn new(range: CategoryRange) -> Self {
        Self {
            pool: PairPool::new(range),
            reservations: BTreeMap::new(),
            containers: 0,
            groups: 0,
            owners: HashMap::new(),
        }
    }

    pub(super) fn stats(&self) -> Stats {
        let mut owners: Vec<_> = self.owners.iter().map(|(o, n)| (o.clone(), *n)).collect();
        owners.sort();
        Stats {
            range: self.pool.range(),
            pool: self.pool.stats(),
            containers: self.containers,
            groups: self.groups,
            owners,
        }
    }

    /// The pair pool, to look at; it changes through the methods below.
    pub(super) fn pool(&self) -> &PairPool {
        &self.pool
    }

    /// The record of `reservation`, if the view knows it.
    pub(super) fn reservation(&self, reservation: &Reservation) -> Option<&ReservationRecord> {
        self.reservations.get(reservation)
    }

    /// Every reservation, sorted.
    pub(super) fn reservations(&self) -> impl Iterator<Item = &ReservationRecord> {
        self.reservations.values()
    }

    /// A reservation that covers `level` (the pair one first), for messages.
    pub(super) fn reservation_covering(&self, level: Level) -> Option<Reservation> {
        let candidates = [
            Reservation::Pair(level),
            Reservation::Category(level.low()),
            Reservation::Category(level.high()),
        ];
        candidates
            .into_iter()
            .find(|r| self.reservations.contains_key(r))
    }

    /// Whether the view counts a container of `owner`: removing one it does
    /// not would leave the counters wrong.
    pub(super) fn counts_container_of(&self, owner: &Owner) -> bool {
        self.containers > 0 && self.owners.contains_key(owner)
    }

    /// Whether the view counts any group.
    pub(super) fn counts_a_group(&self) -> bool {
        self.groups > 0
    }

    /// Takes a random free pair out of the pool.
    pub(super) fn pick(&mut self, rng: &mut impl Rng) -> Option<PairIndex> {
        self.pool.pick(rng)
    }

    /// Takes a given pair out of the pool, if it is free.
    pub(super) fn claim(&mut self, index: PairIndex) -> Result<(), ClaimError> {
        self.pool.claim(index)
    }

    /// Marks a pair held, whatever it was; false if it was held already.
    pub(super) fn mark_held(&mut self, index: PairIndex) -> bool {
        self.pool.mark_held(index)
    }

    /// Gives a pair back to the pool; whether it became free (a reservation
    /// may keep it out).
    pub(super) fn release(&mut self, index: PairIndex) -> bool {
        self.pool.release(index)
    }

    /// Records `reservation` (under `record`). A new one also keeps its
    /// pairs out of the pool: then returns the pairs it covers and, of
    /// those, the held ones. A known one only has its record replaced
    /// (`None`).
    pub(super) fn put_reservation(
        &mut self,
        reservation: Reservation,
        record: ReservationRecord,
    ) -> Option<(u64, u64)> {
        match self.reservations.insert(reservation, record) {
            Some(_) => None,
            None => Some(self.pool.reserve(reservation)),
        }
    }

    /// Forgets `reservation` and lets its pairs back into the pool; how
    /// many became free, `None` if the view did not know it.
    pub(super) fn remove_reservation(&mut self, reservation: Reservation) -> Option<u64> {
        self.reservations
            .remove(&reservation)
            .map(|_| self.pool.unreserve(reservation))
    }

    pub(super) fn add_container(&mut self, owner: &Owner) {
        self.containers += 1;
        // Look up before inserting: loading calls this once per record, and
        // a clone per call is measurable at full pool.
        match self.owners.get_mut(owner) {
            Some(n) => *n += 1,
            None => {
                self.owners.insert(owner.clone(), 1);
            }
        }
    }

    /// Takes one container off `owner`'s count; nothing goes below zero.
    pub(super) fn remove_container(&mut self, owner: &Owner) {
        self.containers = self.containers.saturating_sub(1);
        if let Some(n) = self.owners.get_mut(owner) {
            *n -= 1;
            if *n == 0 {
                self.owners.remove(owner);
            }
        }
    }

    pub(super) fn add_group(&mut self) {
        self.groups += 1;
    }

    /// Takes one group off the count; false (and the count stays at zero)
    /// if there was none.
    pub(super) fn remove_group(&mut self) -> bool {
        match self.groups.checked_sub(1) {
            Some(groups) => {
                self.groups = groups;
                true
            }
            None => false,
        }
    }

    /// Applies a committed allocation of `owner`'s (that created its group
    /// if `new_group`). Its pair was taken while planning.
    pub(super) fn allocated(&mut self, owner: &Owner, new_group: bool) {
        self.add_container(owner);
        if new_group {
            self.add_group();
        }
    }

    /// Applies a committed release of `owner`'s: gives back the pair it
    /// `frees` (none while group members remain) and counts its group gone
    /// if `group_deleted`. Returns whether the pair became free. With a
    /// shared store the creation may not be counted yet; nothing goes below
    /// zero then (the engine reloads the view, see `out_of_step`).
    pub(super) fn released(
        &mut self,
        owner: &Owner,
        frees: Option<PairIndex>,
        group_deleted: bool,
    ) -> bool {
        let level_freed = frees.is_some_and(|i| self.release(i));
        self.remove_container(owner);
        if group_deleted {
            self.remove_group();
        }
        level_freed
    }
}
