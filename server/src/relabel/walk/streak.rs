//! When a worker may write a label without reading it first: after a run
//! of reads that all found another label, probing now and then.

/// Reads in a row that must all find another label before a worker
/// writes without reading.
///
/// Why 16: a tree that is mostly right (a container started again on its
/// volume) must never go blind, or a second run would rewrite labels that
/// are right. Under SELinux a right tree still holds the odd wrong entry
/// (a file copied in with its old label, a restored subtree), but 16 wrong
/// ones in a row, each in readdir's hash order, is a tree whose labels are
/// mostly wrong. The cost is 16 reads per worker per mislabeled stretch,
/// against 100k entries: nothing.
pub const BLIND_AFTER: u32 = 16;

/// In blind mode, every `PROBE_EVERY`-th entry is read first anyway, and
/// a read that finds the label wanted ends blind mode.
///
/// Why 32: a probe costs one read, about 40 % of what a blind entry costs
/// (the relabel bench, CPU for 100k entries on ext4: reading and writing
/// each 0.65 s, writing only 0.47 s), so 1 in 32 adds about 1 % to a blind
/// walk, well inside the 5 % that the bare loop allows; 64 would save
/// half of that and double the bound below.
/// It also bounds the harm where a right stretch follows a wrong one in
/// the same worker's order: at most 31 right labels rewritten (counted in
/// [`Totals::blind`]) before a probe sees it. Each directory's own label is
/// read too (through its descriptor, as before), and serves as a probe:
/// blind mode goes on into a directory only if its label was wrong.
pub const PROBE_EVERY: u32 = 32;

/// Whether a worker reads before writing: see [`BLIND_AFTER`] and
/// [`PROBE_EVERY`]. One per worker, carried from directory to directory.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Streak {
    /// Reads in a row that found another label.
    differing: u32,
    /// Entries written blind since the last read.
    since_read: u32,
}

impl Streak {
    /// Write the next entry without reading it first.
    pub(super) fn blind(&self) -> bool {
        self.differing >= BLIND_AFTER && self.since_read + 1 < PROBE_EVERY
    }

    /// A read found the label wanted (`differs` false) or another one.
    pub(super) fn read(&mut self, differs: bool) {
        self.differing = if differs {
            self.differing.saturating_add(1)
        } else {
            0
        };
        self.since_read = 0;
    }

    /// A label was written without reading.
    pub(super) fn wrote_blind(&mut self) {
        self.since_read += 1;
    }

    /// Something failed: read first again.
    pub(super) fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blind_after_enough_differing_reads_probing_every_kth_entry() {
        let mut s = Streak::default();
        for _ in 1..BLIND_AFTER {
            s.read(true);
            assert!(!s.blind());
        }
        s.read(true);
        // Blind for PROBE_EVERY - 1 entries, then one read.
        for _ in 0..PROBE_EVERY - 1 {
            assert!(s.blind());
            s.wrote_blind();
        }
        assert!(!s.blind(), "the probe is due");
        s.read(true);
        assert!(s.blind(), "a differing probe keeps blind mode");
        // A probe that finds the label wanted ends it.
        s.read(false);
        assert!(!s.blind());
        // As does a label missing (create-only writes take over there), or
        // a failure.
        for _ in 0..BLIND_AFTER {
            s.read(true);
        }
        assert!(s.blind());
        s.reset();
        assert!(!s.blind());
    }
}
