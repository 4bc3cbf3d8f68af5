//! Rebuilding the view at start (and after a failed commit, or when it fell
//! out of step with a shared store) from every record in the store.
//!
//! Loading cross-checks every record against the others (each held pair has
//! exactly one holder, each holder its records, each group its member
//! count) and refuses a store where they disagree, instead of handing out a
//! pair that might be in use.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use super::View;
use crate::id::GroupKey;
use crate::level::{CategoryRange, Level, PairIndex};
use crate::store::{
    AllocationRecord, GroupRecord, Holder, LoadSink, ReservationRecord, Store, StoreError,
};

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
        self.view.put_reservation(record.reservation, record);
        Ok(())
    }

    fn pair(&mut self, level: Level, holder: Holder) -> Result<(), StoreError> {
        if let Some(index) = self.index(level, &holder, true) {
            if !self.view.mark_held(index) {
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
        self.view.add_group();
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
        view: View::new(range),
        unmatched: vec![0; range.pairs() as usize],
        groups: HashMap::new(),
        outside: None,
    };
    store.load(&mut loader).await?;
    loader.finish()
}
