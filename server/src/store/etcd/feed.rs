//! Following what other mcsd instances change: an etcd watch on the prefix,
//! decoded into [`StoreChange`]s for the engine.
//!
//! The watch starts right after the revision the latest load read, so no
//! change falls between the snapshot and the feed. It also reports this
//! instance's own commits; those are recognised by revision ([`OwnWrites`]:
//! one etcd revision is one transaction) and dropped, since the engine applied them already. A pair or
//! reservation change older than this instance's own later write to the
//! same key is dropped too: the pool holds the state of those keys, and the
//! later write decided it. Record changes (allocations, groups) move
//! counters and are always passed on.
//!
//! When the watch ends (compaction overtook it, the member went away, etcd
//! lost its leader) the feed reports [`StoreChange::Resync`] once and stops;
//! the engine reloads and starts a new feed.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use etcd_client::{Event, EventType, KeyValue, WatchClient, WatchOptions};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::revisions::Revisions;
use crate::store::codec::{self, DecodeError};
use crate::store::{ChangeFeed, StoreChange};

/// Watch responses buffered between the watch task and the engine.
const BUFFER: usize = 1024;

/// What this instance committed, until the watch has gone past it.
///
/// Every successful etcd transaction gets a revision of its own, so the
/// revisions of this instance's commits say exactly which watch events are
/// its own writes, however often it wrote the same key before the watch
/// caught up. For pairs and reservations (state, not counts) it also keeps
/// the revision of its latest write to each key, so an older change to such
/// a key, which that write decided, is dropped too.
#[derive(Debug, Default)]
pub(super) struct OwnWrites(Mutex<Own>);

#[derive(Debug, Default)]
struct Own {
    /// Revisions of this instance's commits.
    revisions: BTreeSet<i64>,
    /// Latest own write to each pair or reservation key.
    latest: HashMap<Vec<u8>, i64>,
}

/// Whether `key` (logical) holds state the pool keeps rather than a record
/// that moves counters.
fn absolute(key: &[u8]) -> bool {
    key.starts_with(codec::PAIR_PREFIX) || key.starts_with(codec::RESERVATION_PREFIX)
}

impl OwnWrites {
    fn own(&self) -> std::sync::MutexGuard<'_, Own> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A commit at `revision` wrote `keys`.
    pub(super) fn record<'a>(&self, keys: impl IntoIterator<Item = &'a [u8]>, revision: i64) {
        let mut own = self.own();
        own.revisions.insert(revision);
        for key in keys.into_iter().filter(|k| absolute(k)) {
            own.latest.insert(key.to_vec(), revision);
        }
    }

    /// Forgets writes at or before `revision`: nothing older will come.
    pub(super) fn forget_through(&self, revision: i64) {
        let mut own = self.own();
        own.revisions = own.revisions.split_off(&(revision + 1));
        own.latest.retain(|_, r| *r > revision);
    }

    /// Whether a change to logical `key` at `revision` is to be dropped:
    /// this instance made it, or it is an older change to a pair or
    /// reservation this instance wrote later.
    fn drops(&self, key: &[u8], revision: i64) -> bool {
        let own = self.own();
        own.revisions.contains(&revision)
            || (absolute(key) && own.latest.get(key).is_some_and(|&r| r > revision))
    }

    /// How many commits are remembered (for tests).
    #[cfg(test)]
    fn remembered(&self) -> (usize, usize) {
        let own = self.own();
        (own.revisions.len(), own.latest.len())
    }
}

/// What the watch task hands over.
enum Raw {
    Events(Vec<Event>),
    Lost(String),
}

/// Runs the watch from `from` until it fails or the feed goes away.
async fn follow(mut watch: WatchClient, prefix: Vec<u8>, from: i64, tx: mpsc::Sender<Raw>) {
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(from)
        .with_prev_key();
    let reason = match watch.watch(prefix, Some(options)).await {
        Err(e) => format!("cannot watch etcd: {e}"),
        Ok(mut stream) => loop {
            match stream.message().await {
                Ok(Some(response)) if response.canceled() => {
                    break if response.compact_revision() > 0 {
                        format!(
                            "etcd compacted its history to revision {} before mcsd read revision {from}",
                            response.compact_revision()
                        )
                    } else {
                        format!("etcd cancelled the watch: {}", response.cancel_reason())
                    };
                }
                Ok(Some(response)) => {
                    if response.events().is_empty() {
                        continue;
                    }
                    if tx
                        .send(Raw::Events(response.events().to_vec()))
                        .await
                        .is_err()
                    {
                        return; // the feed was dropped
                    }
                }
                Ok(None) => break "the etcd watch stream ended".to_owned(),
                Err(e) => break format!("the etcd watch failed: {e}"),
            }
        },
    };
    let _ = tx.send(Raw::Lost(reason)).await;
}

/// The [`ChangeFeed`] of an [`EtcdStore`](super::EtcdStore).
pub(super) struct EtcdFeed {
    rx: mpsc::Receiver<Raw>,
    task: JoinHandle<()>,
    own: Arc<OwnWrites>,
    seen: Arc<Revisions>,
    prefix: Vec<u8>,
}

impl EtcdFeed {
    /// Starts following `prefix` from revision `from`; what it reports
    /// also refreshes the revisions in `seen`.
    pub(super) fn start(
        watch: WatchClient,
        prefix: Vec<u8>,
        from: i64,
        own: Arc<OwnWrites>,
        seen: Arc<Revisions>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(BUFFER);
        let task = tokio::spawn(follow(watch, prefix.clone(), from, tx));
        Self {
            rx,
            task,
            own,
            seen,
            prefix,
        }
    }

    /// Decodes one watch response; `None` if it held only this instance's
    /// own writes.
    fn decode(&self, raw: Raw) -> Option<Vec<StoreChange>> {
        let events = match raw {
            Raw::Lost(reason) => return Some(vec![StoreChange::Resync(reason)]),
            Raw::Events(events) => events,
        };
        let mut changes = Vec::new();
        let mut last = 0;
        for event in &events {
            let Some(kv) = event.kv() else { continue };
            let Some(key) = kv.key().strip_prefix(self.prefix.as_slice()) else {
                continue;
            };
            let revision = kv.mod_revision();
            last = last.max(revision);
            let deleted = event.event_type() == EventType::Delete;
            if deleted {
                self.seen.gone(key, revision);
            } else {
                self.seen.refresh(key, revision, kv.value());
            }
            if self.own.drops(key, revision) {
                continue;
            }
            match change(key, deleted, kv, event.prev_kv()) {
                Ok(Some(change)) => changes.push(change),
                Ok(None) => {}
                Err(reason) => {
                    changes.push(StoreChange::Resync(reason));
                    break;
                }
            }
        }
        self.own.forget_through(last);
        (!changes.is_empty()).then_some(changes)
    }
}

impl Drop for EtcdFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[async_trait]
impl ChangeFeed for EtcdFeed {
    async fn next(&mut self) -> Option<Vec<StoreChange>> {
        loop {
            let raw = self.rx.recv().await?;
            if let Some(changes) = self.decode(raw) {
                return Some(changes);
            }
        }
    }

    fn try_next(&mut self) -> Option<Vec<StoreChange>> {
        loop {
            let raw = self.rx.try_recv().ok()?;
            if let Some(changes) = self.decode(raw) {
                return Some(changes);
            }
        }
    }
}

/// Decodes one event on logical `key`; `None` for keys the engine does not
/// follow (the format records).
fn change(
    key: &[u8],
    deleted: bool,
    kv: &KeyValue,
    prev: Option<&KeyValue>,
) -> Result<Option<StoreChange>, String> {
    let name = || String::from_utf8_lossy(key).into_owned();
    let bad = |e: DecodeError| format!("record {} from another writer: {e}", name());
    // A delete or an update must say what it replaced; etcd leaves the
    // previous value out when its history no longer has it.
    // (Pairs and reservations need no previous value: the pool keeps
    // their state, not counts.)
    let replaced = || -> Result<Option<&[u8]>, String> {
        if deleted || kv.version() > 1 {
            prev.map(|p| Some(p.value())).ok_or_else(|| {
                format!(
                    "the change to {} came without its previous value (etcd compacted it)",
                    name()
                )
            })
        } else {
            Ok(None)
        }
    };
    let current = (!deleted).then(|| kv.value());
    if key.starts_with(codec::ALLOCATION_PREFIX) {
        let decode = |v: &[u8]| codec::decode_allocation(v).map_err(bad);
        Ok(Some(StoreChange::Allocation {
            old: replaced()?.map(decode).transpose()?,
            new: current.map(decode).transpose()?,
        }))
    } else if key.starts_with(codec::GROUP_PREFIX) {
        let decode = |v: &[u8]| codec::decode_group(v).map_err(bad);
        Ok(Some(StoreChange::Group {
            old: replaced()?.map(decode).transpose()?,
            new: current.map(decode).transpose()?,
        }))
    } else if key.starts_with(codec::PAIR_PREFIX) {
        let level = codec::decode_pair_key(key).map_err(bad)?;
        let holder = current
            .map(|v| codec::decode_holder(v).map_err(bad))
            .transpose()?;
        Ok(Some(StoreChange::Pair { level, holder }))
    } else if let Some(text) = key.strip_prefix(codec::RESERVATION_PREFIX) {
        let reservation = std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| format!("reservation key {} is not a reservation", name()))?;
        let record = current
            .map(|v| codec::decode_reservation(v).map_err(bad))
            .transpose()?;
        Ok(Some(StoreChange::Reservation {
            reservation,
            record,
        }))
    } else if key.starts_with(b"meta/") {
        Ok(None)
    } else {
        Err(format!("unexpected key {} under the prefix", name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_writes_are_known_by_revision_and_forgotten_once_passed() {
        let own = OwnWrites::default();
        // One container written three times, its pair twice.
        own.record([&b"a/x"[..], b"p/\0\x01\0\x02"], 10);
        own.record([&b"a/x"[..], b"p/\0\x01\0\x02"], 11);
        own.record([&b"a/x"[..]], 13);
        for revision in [10, 11, 13] {
            assert!(own.drops(b"a/x", revision), "revision {revision}");
        }
        // Another instance's write in between is passed on, for a record...
        assert!(!own.drops(b"a/x", 12));
        // ...but not for a pair this instance wrote later.
        assert!(own.drops(b"p/\0\x01\0\x02", 9));
        assert!(!own.drops(b"p/\0\x01\0\x02", 12));
        own.forget_through(11);
        assert_eq!(own.remembered(), (1, 0));
        assert!(own.drops(b"a/x", 13));
        own.forget_through(13);
        assert_eq!(own.remembered(), (0, 0));
    }
}
