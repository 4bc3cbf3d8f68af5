//! The etcd revision at which this instance last saw each record.
//!
//! A change to a record (a release, an update) must only land if nobody
//! changed the record since mcsd read it. Comparing the value mcsd would
//! write for the record it expects is not that: a newer mcsd may have
//! written the record with a field this build does not know, which decoding
//! tolerates but re-encoding drops, so the bytes never match and such a
//! record could never be released. etcd's `mod_revision` says exactly
//! whether a key changed, whatever its encoding, so the compares use it.
//!
//! Each [`Sighting`] is a fact "the key held this record at this revision",
//! learnt from a read, a load, the change feed, this instance's own commits
//! or the read-back of a failed transaction. The record is kept in mcsd's
//! own encoding (the canonical bytes of what it decoded), so a change is
//! matched to a sighting of the very record it expects. A sighting that is
//! stale costs one lost compare, after which the failed transaction's
//! read-back replaces it; one that is missing costs one read before the
//! commit. So correctness never depends on what is kept here, and it is
//! kept bounded: the most recent [`GENERATION`] to twice that many keys.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::store::codec::{self, DecodeError};

/// Sightings per generation; two generations are kept. A batch of the
/// engine reads at most a few thousand records, and they stay here until
/// its commit.
const GENERATION: usize = 8192;

/// A record as seen at a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sighting {
    /// The key's `mod_revision` then.
    revision: i64,
    /// The record in mcsd's encoding.
    canonical: Vec<u8>,
}

/// The latest sighting of recently seen keys (logical keys).
#[derive(Debug, Default)]
pub(super) struct Revisions(Mutex<Generations>);

#[derive(Debug, Default)]
struct Generations {
    current: HashMap<Vec<u8>, Sighting>,
    previous: HashMap<Vec<u8>, Sighting>,
}

impl Generations {
    fn get(&self, key: &[u8]) -> Option<&Sighting> {
        self.current.get(key).or_else(|| self.previous.get(key))
    }

    fn insert(&mut self, key: Vec<u8>, sighting: Sighting) {
        self.previous.remove(&key);
        self.current.insert(key, sighting);
        if self.current.len() >= GENERATION {
            self.previous = std::mem::take(&mut self.current);
        }
    }
}

/// mcsd's own encoding of the record `raw` holds at logical `key`: what
/// this build would write for the record it decodes from there.
pub(super) fn canonical(key: &[u8], raw: &[u8]) -> Result<Vec<u8>, DecodeError> {
    if key.starts_with(codec::ALLOCATION_PREFIX) {
        codec::decode_allocation(raw).map(|r| codec::encode_allocation(&r))
    } else if key.starts_with(codec::GROUP_PREFIX) {
        codec::decode_group(raw).map(|g| codec::encode_group(&g))
    } else if key.starts_with(codec::PAIR_PREFIX) {
        codec::decode_holder(raw).map(|h| codec::encode_holder(&h))
    } else if key.starts_with(codec::RESERVATION_PREFIX) {
        codec::decode_reservation(raw).map(|r| codec::encode_reservation(&r))
    } else {
        Ok(raw.to_vec())
    }
}

impl Revisions {
    fn lock(&self) -> MutexGuard<'_, Generations> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `key` held `canonical` at `revision`. An older sighting than the one
    /// kept is ignored: reads and the feed can arrive out of order.
    pub(super) fn saw(&self, key: &[u8], revision: i64, canonical: Vec<u8>) {
        let mut kept = self.lock();
        if kept.get(key).is_some_and(|s| s.revision > revision) {
            return;
        }
        kept.insert(
            key.to_vec(),
            Sighting {
                revision,
                canonical,
            },
        );
    }

    /// Like [`Revisions::saw`] with the raw value read from etcd; a value
    /// that does not decode is not kept (the read reports it).
    pub(super) fn saw_raw(&self, key: &[u8], revision: i64, raw: &[u8]) {
        if let Ok(canonical) = canonical(key, raw) {
            self.saw(key, revision, canonical);
        }
    }

    /// Like [`Revisions::saw_raw`], but only for a key already kept: the
    /// change feed reports every record any instance writes, and keeping
    /// them all would push out the ones this instance is about to change.
    pub(super) fn refresh(&self, key: &[u8], revision: i64, raw: &[u8]) {
        if self.lock().get(key).is_some_and(|s| s.revision < revision) {
            self.saw_raw(key, revision, raw);
        }
    }

    /// `key` was deleted at `revision` (or found absent at it).
    pub(super) fn gone(&self, key: &[u8], revision: i64) {
        let mut kept = self.lock();
        if kept.get(key).is_some_and(|s| s.revision <= revision) {
            kept.current.remove(key);
            kept.previous.remove(key);
        }
    }

    /// The revision at which `key` was last seen holding `canonical`, if it
    /// was last seen holding exactly that.
    pub(super) fn revision_of(&self, key: &[u8], canonical: &[u8]) -> Option<i64> {
        self.lock()
            .get(key)
            .filter(|s| s.canonical == canonical)
            .map(|s| s.revision)
    }

    /// How many keys are kept (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        let kept = self.lock();
        kept.current.len() + kept.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_sighting_wins_and_must_match_the_record_expected() {
        let seen = Revisions::default();
        seen.saw(b"a/x", 10, b"one".to_vec());
        assert_eq!(seen.revision_of(b"a/x", b"one"), Some(10));
        assert_eq!(seen.revision_of(b"a/x", b"two"), None, "another record");
        seen.saw(b"a/x", 12, b"two".to_vec());
        // A late report of the older state changes nothing.
        seen.saw(b"a/x", 11, b"one".to_vec());
        assert_eq!(seen.revision_of(b"a/x", b"one"), None);
        assert_eq!(seen.revision_of(b"a/x", b"two"), Some(12));
        // A delete older than the sighting does not remove it; a newer one does.
        seen.gone(b"a/x", 11);
        assert_eq!(seen.revision_of(b"a/x", b"two"), Some(12));
        seen.gone(b"a/x", 13);
        assert_eq!(seen.revision_of(b"a/x", b"two"), None);
        // The feed only refreshes keys already kept, and only forward.
        seen.refresh(b"g/pod", 20, b"");
        assert_eq!(seen.len(), 0);
    }

    #[test]
    fn only_recent_keys_are_kept() {
        let seen = Revisions::default();
        for i in 0..3 * GENERATION {
            seen.saw(format!("a/{i}").as_bytes(), 1, Vec::new());
        }
        assert!(seen.len() <= 2 * GENERATION, "{}", seen.len());
        let last = format!("a/{}", 3 * GENERATION - 1);
        assert_eq!(seen.revision_of(last.as_bytes(), b""), Some(1));
        assert_eq!(seen.revision_of(b"a/0", b""), None);
    }
}
