//! What a walk counts: shared atomic [`Counters`] that workers publish
//! into once per directory, and [`Totals`], a copy at one moment.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[cfg(doc)]
use super::{BLIND_AFTER, PROBE_EVERY};

/// Running totals, readable while the walk goes on.
#[derive(Debug, Default)]
pub struct Counters {
    /// Entries examined.
    pub seen: AtomicU64,
    /// Entries whose label was written.
    pub changed: AtomicU64,
    /// Of `changed`, labels written without reading first (see
    /// [`Totals::blind`]).
    pub blind: AtomicU64,
    /// Entries that already had the label (nothing written).
    pub unchanged: AtomicU64,
    /// Entries that could not be labeled.
    pub failed: AtomicU64,
    /// Mount points not entered.
    pub mounts_skipped: AtomicU64,
    /// Names of hard-linked entries not labeled because the walk did not
    /// meet all of their links (some may be outside the tree).
    pub hardlinks_skipped: AtomicU64,
    /// Set to stop the walk early: directories not yet read are left.
    cancelled: AtomicBool,
}

/// A copy of [`Counters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Entries examined.
    pub seen: u64,
    /// Labels written. Exact for every entry whose label was read first;
    /// see [`blind`](Self::blind) for the others.
    pub changed: u64,
    /// Of [`changed`](Self::changed), labels written without reading the
    /// old one first (blind mode). Each came after at least
    /// [`BLIND_AFTER`] reads in a row by the same worker that all found
    /// another label, the last of them at most [`PROBE_EVERY`] entries
    /// before; an entry that already had the label wanted can be among them
    /// only where it sits amid a run of mislabeled ones, and is then counted
    /// as changed (its label stays right; only its ctime moves). Zero on a
    /// tree that is mostly right: blind mode never starts there.
    pub blind: u64,
    /// Labels already right.
    pub unchanged: u64,
    /// Entries that could not be labeled.
    pub failed: u64,
    /// Mount points not entered.
    pub mounts_skipped: u64,
    /// Hard-linked names left alone: not every link is inside the tree.
    pub hardlinks_skipped: u64,
}

impl Counters {
    /// Adds a worker's local tally (workers count locally and publish once
    /// per directory: shared counters bumped per entry would bounce their
    /// cache line between cores on every file).
    pub(super) fn publish(&self, t: &mut Totals) {
        let add = |c: &AtomicU64, n: u64| {
            if n > 0 {
                c.fetch_add(n, Ordering::Relaxed);
            }
        };
        add(&self.seen, t.seen);
        add(&self.changed, t.changed);
        add(&self.blind, t.blind);
        add(&self.unchanged, t.unchanged);
        add(&self.failed, t.failed);
        add(&self.mounts_skipped, t.mounts_skipped);
        add(&self.hardlinks_skipped, t.hardlinks_skipped);
        *t = Totals::default();
    }

    /// Asks the walk to stop: directories not read yet are left as they
    /// are, so the walk ends within one directory per worker.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// The totals now.
    pub fn totals(&self) -> Totals {
        Totals {
            seen: self.seen.load(Ordering::Relaxed),
            changed: self.changed.load(Ordering::Relaxed),
            blind: self.blind.load(Ordering::Relaxed),
            unchanged: self.unchanged.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            mounts_skipped: self.mounts_skipped.load(Ordering::Relaxed),
            hardlinks_skipped: self.hardlinks_skipped.load(Ordering::Relaxed),
        }
    }
}
