//! Inodes with several links, labeled only once the walk has met all of
//! their names (see the walk's module documentation for why).

use std::collections::HashMap;
use std::path::PathBuf;

use super::KEPT_ERRORS;

/// Hard-linked entries the walk left alone (see the module
/// documentation): one path per inode, the first [`KEPT_ERRORS`] of them.
#[derive(Debug, Default)]
pub struct HardLinks {
    /// Inodes not yet labeled, by `(st_dev, st_ino)`.
    pending: HashMap<(u64, u64), Linked>,
    /// Paths of skipped inodes, filled when the walk ends.
    skipped: Vec<PathBuf>,
}

/// An inode with several links, met through some of them.
#[derive(Debug)]
struct Linked {
    /// Names met so far.
    met: u64,
    /// The first name met.
    path: PathBuf,
}

impl HardLinks {
    /// The first [`KEPT_ERRORS`] skipped entries, one path per inode.
    pub fn skipped(&self) -> &[PathBuf] {
        &self.skipped
    }

    /// Records meeting one name of an inode with `nlink` links; true when
    /// every link has now been met (label it, through this name).
    pub(super) fn meet(
        &mut self,
        key: (u64, u64),
        nlink: u64,
        path: impl FnOnce() -> PathBuf,
    ) -> Met {
        let linked = self.pending.entry(key).or_insert_with(|| Linked {
            met: 0,
            path: path(),
        });
        linked.met += 1;
        if linked.met >= nlink {
            let met = linked.met;
            self.pending.remove(&key);
            Met::All { met }
        } else {
            Met::Some
        }
    }

    /// Ends the walk: every inode still pending is skipped. Returns how
    /// many names that leaves unlabeled.
    pub(super) fn finish(&mut self) -> u64 {
        let mut pending: Vec<Linked> = self.pending.drain().map(|(_, l)| l).collect();
        pending.sort_by(|a, b| a.path.cmp(&b.path));
        let names = pending.iter().map(|l| l.met).sum();
        self.skipped = pending
            .into_iter()
            .take(KEPT_ERRORS)
            .map(|l| l.path)
            .collect();
        names
    }
}

/// What meeting one more link of an inode means.
pub(super) enum Met {
    /// Others are still to be met: leave it for now.
    Some,
    /// This was the last: label it; `met` names in all.
    All { met: u64 },
}
