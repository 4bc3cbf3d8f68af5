//! The engine's in-memory view of the store, and how it is rebuilt at start.
//!
//! The view is deliberately small: the pair pool, the reservations and a few
//! counters. Records stay in the store. Loading cross-checks every record
//! against the others (each held pair has exactly one holder, each holder
//! its records, each group its member count) and refuses a store where they
//! disagree, instead of handing out a pair that might be in use.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use crate::allocator::{PairPool, PoolStats};
use crate::id::{GroupKey, Owner};
use crate::level::{CategoryRange, Level, PairIndex};
use crate::reservation::Reservation;
use crate::store::{
    AllocationRecord, GroupRecord, Holder, LoadSink, ReservationRecord, Store, StoreError,
};

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
#[derive(Debug, Clone)]
pub(crate) struct View {
    pub pool: PairPool,
    pub reservations: BTreeMap<Reservation, ReservationRecord>,
    pub containers: u64,
    pub groups: u64,
    pub owners: HashMap<Owner, u64>,
}

impl View {
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

    pub(super) fn remove_container(&mut self, owner: &Owner) {
        self.containers = self.containers.saturating_sub(1);
        if let Some(n) = self.owners.get_mut(owner) {
            *n -= 1;
            if *n == 0 {
                self.owners.remove(owner);
            }
        }
    }
}

/// Why the view could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The store failed or holds inconsistent records.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Held pairs lie outside the configured range.
    #[error("{count} held pair(s) in {store} lie outside the configured category range {range} (for example {level}, held by {holder}); widen the range to cover them, or start with the old range and release them first")]
    OutsideRange {
        /// How many.
        count: u64,
        /// One of them.
        level: Level,
        /// Its holder.
        holder: Holder,
        /// The configured range.
        range: CategoryRange,
        /// The store, described.
        store: String,
    },
}

/// A non-zero hash of `holder`.
fn fingerprint(holder: &Holder) -> u64 {
    let mut h = DefaultHasher::new();
    holder.hash(&mut h);
    h.finish() | 1
}

/// Rebuilds a [`View`] from the store's records, checking them as they come.
struct Loader {
    range: CategoryRange,
    store: String,
    view: View,
    /// Held pairs not yet matched by their holder's record: the holder's
    /// fingerprint (never 0) by pair index, 0 where nothing is pending. A
    /// flat table (8 bytes a pair of the range, freed after loading) is
    /// several times faster than a map at full pool.
    unmatched: Vec<u64>,
    /// Groups: (pair, recorded members, members seen).
    groups: HashMap<GroupKey, (Level, u32, u32)>,
    outside: Option<(u64, Level, Holder)>,
}

impl Loader {
    fn corrupt(&self, detail: String) -> StoreError {
        StoreError::Corrupt {
            path: self.store.clone().into(),
            detail,
        }
    }

    /// The pair's index; `None` outside the range. Pair records are counted
    /// there (each held pair has exactly one), other records only looked up.
    fn index(&mut self, level: Level, holder: &Holder, count: bool) -> Option<PairIndex> {
        let index = self.range.index_of(level);
        if index.is_none() && count {
            let entry = self
                .outside
                .get_or_insert_with(|| (0, level, holder.clone()));
            entry.0 += 1;
        }
        index
    }

    fn finish(self) -> Result<View, LoadError> {
        if let Some((count, level, holder)) = self.outside {
            return Err(LoadError::OutsideRange {
                count,
                level,
                holder,
                range: self.range,
                store: self.store,
            });
        }
        if let Some(pair) = self.unmatched.iter().position(|&f| f != 0) {
            let level = self.range.level_at(PairIndex(pair as u32));
            return Err(self
                .corrupt(format!(
                    "pair {level} is marked held but no allocation or group holds it"
                ))
                .into());
        }
        for (key, (_, recorded, seen)) in &self.groups {
            if recorded != seen {
                return Err(self
                    .corrupt(format!(
                        "group {key} records {recorded} member(s) but {seen} allocation(s) name it"
                    ))
                    .into());
            }
        }
        Ok(self.view)
    }
}

impl LoadSink for Loader {
    fn reservation(&mut self, record: ReservationRecord) -> Result<(), StoreError> {
        self.view.pool.reserve(record.reservation);
        self.view.reservations.insert(record.reservation, record);
        Ok(())
    }

    fn pair(&mut self, level: Level, holder: Holder) -> Result<(), StoreError> {
        if let Some(index) = self.index(level, &holder, true) {
            if !self.view.pool.mark_held(index) {
                return Err(self.corrupt(format!("pair {level} is recorded twice")));
            }
            self.unmatched[index.0 as usize] = fingerprint(&holder);
        }
        Ok(())
    }

    fn group(&mut self, record: GroupRecord) -> Result<(), StoreError> {
        let holder = Holder::Group(record.key.clone());
        if record.members == 0 {
            return Err(self.corrupt(format!("group {} has no members", record.key)));
        }
        if let Some(index) = self.index(record.level, &holder, false) {
            if std::mem::take(&mut self.unmatched[index.0 as usize]) != fingerprint(&holder) {
                return Err(self.corrupt(format!(
                    "group {} says it holds {}, but the pair record does not name it",
                    record.key, record.level
                )));
            }
        }
        self.view.groups += 1;
        self.groups
            .insert(record.key, (record.level, record.members, 0));
        Ok(())
    }

    fn allocation(&mut self, record: AllocationRecord) -> Result<(), StoreError> {
        match &record.group {
            Some(key) => {
                let Some(group) = self.groups.get_mut(key) else {
                    return Err(self.corrupt(format!(
                        "allocation {} names group {key}, which does not exist",
                        record.container_id
                    )));
                };
                if group.0 != record.level {
                    let group_level = group.0;
                    return Err(self.corrupt(format!(
                        "allocation {} has {} but its group {key} holds {group_level}",
                        record.container_id, record.level
                    )));
                }
                group.2 += 1;
            }
            None => {
                let holder = record.holder();
                if let Some(index) = self.index(record.level, &holder, false) {
                    if std::mem::take(&mut self.unmatched[index.0 as usize]) != fingerprint(&holder)
                    {
                        return Err(self.corrupt(format!(
                            "allocation {} says it holds {}, but the pair record does not name it",
                            record.container_id, record.level
                        )));
                    }
                }
            }
        }
        self.view.add_container(&record.owner);
        Ok(())
    }
}

/// Reads the whole store into a fresh view of `range`.
pub(crate) async fn load(store: &dyn Store, range: CategoryRange) -> Result<View, LoadError> {
    let mut loader = Loader {
        range,
        store: store.describe(),
        view: View {
            pool: PairPool::new(range),
            reservations: BTreeMap::new(),
            containers: 0,
            groups: 0,
            owners: HashMap::new(),
        },
        unmatched: vec![0; range.pairs() as usize],
        groups: HashMap::new(),
        outside: None,
    };
    store.load(&mut loader).await?;
    loader.finish()
}
