//! Per-key locks: one relabel or release at a time per container and per
//! volume root.
//!
//! A walk, a restore and the free that follows are long (a volume of a
//! million files takes seconds), so they cannot run inside the engine's
//! batch. Instead every operation on a container's volumes first locks the
//! keys it touches: the container id and each root path. Keys are locked
//! in one sorted order, so two operations that need overlapping keys never
//! wait for each other in a cycle. An entry lives only while someone holds
//! or waits for it.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

use crate::id::ContainerId;

/// What an operation locks.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Key {
    /// A container's allocation and its roots.
    Container(ContainerId),
    /// A volume root, whoever registered it.
    Root(PathBuf),
}

/// The locks held by one operation; dropping it unlocks them all.
pub(super) struct Held {
    locks: Arc<Locks>,
    guards: Vec<(Key, OwnedMutexGuard<()>)>,
}

impl Held {
    /// Whether `key` is among the locks held.
    pub(super) fn holds(&self, key: &Key) -> bool {
        self.guards.iter().any(|(k, _)| k == key)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut table = self.locks.table.lock().unwrap_or_else(|e| e.into_inner());
        for (key, guard) in self.guards.drain(..) {
            drop(guard);
            // Only the table's reference left: nobody else holds or waits
            // for the key.
            if let Some(entry) = table.get(&key) {
                if Arc::strong_count(entry) == 1 {
                    table.remove(&key);
                }
            }
        }
    }
}

/// The table of locks.
#[derive(Default)]
pub(super) struct Locks {
    table: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

impl Locks {
    /// Locks every key of `keys`, in sorted order; waits for each.
    pub(super) async fn lock(self: &Arc<Self>, keys: impl IntoIterator<Item = Key>) -> Held {
        let keys: BTreeSet<Key> = keys.into_iter().collect();
        let mut held = Held {
            locks: self.clone(),
            guards: Vec::with_capacity(keys.len()),
        };
        for key in keys {
            let mutex = {
                let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
                table.entry(key.clone()).or_default().clone()
            };
            let guard = mutex.lock_owned().await;
            held.guards.push((key, guard));
        }
        held
    }

    /// Keys with an entry (held or waited for).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn id(s: &str) -> Key {
        Key::Container(ContainerId::new(s).unwrap())
    }

    #[tokio::test]
    async fn a_key_is_held_by_one_operation_at_a_time_and_forgotten_after() {
        let locks = Arc::new(Locks::default());
        let first = locks.lock([id("a"), Key::Root("/v".into())]).await;
        let other = locks.clone();
        let waiting = tokio::spawn(async move { other.lock([Key::Root("/v".into())]).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the root is held by the first");
        // A key nobody holds is free at once.
        drop(locks.lock([id("b")]).await);
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("released keys are handed on")
            .unwrap();
        drop(second);
        assert_eq!(locks.len(), 0, "no entry outlives its holders");
    }

    #[tokio::test]
    async fn overlapping_key_sets_taken_in_opposite_orders_do_not_deadlock() {
        let locks = Arc::new(Locks::default());
        let mut tasks = Vec::new();
        for i in 0..64 {
            let locks = locks.clone();
            tasks.push(tokio::spawn(async move {
                let (a, b) = (Key::Root("/a".into()), Key::Root("/b".into()));
                let keys = if i % 2 == 0 { vec![a, b] } else { vec![b, a] };
                let held = locks.lock(keys).await;
                tokio::task::yield_now().await;
                drop(held);
            }));
        }
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("no deadlock")
                .unwrap();
        }
        assert_eq!(locks.len(), 0);
    }
}
