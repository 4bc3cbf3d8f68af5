//! The read/write gate between the store's readers and the actor's commits.
//!
//! Get and List read the store directly. Between a batch's write and its
//! fsync the store shows changes that are not durable yet, and a reader that
//! saw one could act on an allocation a power cut then takes back. So
//! readers and commits never overlap: a commit holds the write side, readers
//! share the read side.
//!
//! Commits may overlap each other (the actor plans and writes the next batch
//! while one syncs), and the actor keeps one write guard for a whole run of
//! overlapping commits. So that a steady stream of writes cannot starve
//! readers, a reader announces itself before it waits: the actor then starts
//! no further overlapping commit, lets the run end, and the reader (queued
//! first on the fair lock) gets in before the next commit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedRwLockWriteGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// See the module documentation.
#[derive(Default)]
pub(super) struct Gate {
    lock: Arc<RwLock<()>>,
    /// Readers waiting for the read side.
    waiting: AtomicUsize,
}

/// Counts a reader as waiting for as long as it lives, also when the read
/// future is dropped before it got the lock.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gate {
    /// Waits until no commit is in flight; holds commits off while the
    /// guard lives.
    pub(super) async fn read(&self) -> RwLockReadGuard<'_, ()> {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.waiting);
        self.lock.read().await
    }

    /// Whether a reader waits: the actor should end its run of commits.
    pub(super) fn readers_waiting(&self) -> bool {
        self.waiting.load(Ordering::Acquire) > 0
    }

    /// The write side, for a commit run kept across the actor's loop.
    pub(super) async fn write_owned(&self) -> OwnedRwLockWriteGuard<()> {
        self.lock.clone().write_owned().await
    }

    /// The write side, for work done in one go (a recovery, a reload).
    pub(super) async fn write(&self) -> RwLockWriteGuard<'_, ()> {
        self.lock.write().await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_waiting_reader_is_seen_until_it_gets_in_or_gives_up() {
        let gate = Arc::new(Gate::default());
        let run = gate.write_owned().await;
        assert!(!gate.readers_waiting());

        let reader = tokio::spawn({
            let gate = gate.clone();
            async move {
                let _read = gate.read().await;
            }
        });
        // The reader announces itself, then waits for the run to end.
        while !gate.readers_waiting() {
            tokio::task::yield_now().await;
        }
        drop(run);
        reader.await.unwrap();
        assert!(!gate.readers_waiting());

        // A reader that gives up while waiting is not counted any more.
        let run = gate.write_owned().await;
        let read = gate.read();
        assert!(tokio::time::timeout(Duration::from_millis(20), read)
            .await
            .is_err());
        assert!(!gate.readers_waiting());
        drop(run);
        let _read = gate.read().await;
    }
}
