//! The embedded store: one sled tree under the state directory.
//!
//! All records live in one tree under the prefixes of [`super::codec`], so a
//! whole batch of transactions is one atomic `apply_batch` followed by one
//! `flush` and the fsyncs of [`sync`] (sled's flush alone does not survive
//! a power cut): concurrent requests share them (group commit).
//! Only the engine writes, one batch at a time, so the expectations carried
//! by [`Op`]s hold by construction and are not re-checked here; start-up
//! cross-checks every record instead.
//!
//! sled refuses all further writes after an I/O error (it records a global
//! error), so [`Store::recover`] reopens the database: sled then recovers to
//! the last durable batch, which is exactly what the engine reloads.

mod open;
mod sync;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;

use self::open::open_db;
use super::codec;
use super::load::{self, Records};
use super::{
    AllocationRecord, GroupRecord, Holder, LoadSink, Op, ReservationRecord, Store, StoreError, Txn,
};
use crate::id::{ContainerId, GroupKey};
use crate::level::Level;
use crate::reservation::Reservation;

/// The sled-backed [`Store`].
pub struct SledStore {
    path: PathBuf,
    /// `None` only while [`Store::recover`] swaps databases.
    db: RwLock<Option<Opened>>,
}

/// An open database and what makes its writes durable.
#[derive(Clone)]
struct Opened {
    db: sled::Db,
    syncer: Arc<Mutex<sync::Syncer>>,
}

impl Opened {
    /// sled's flush, then the fsyncs it leaves out.
    fn flush(&self, path: &Path) -> Result<(), StoreError> {
        self.db.flush().map_err(|e| map_err(path, e))?;
        self.syncer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sync()
            .map_err(|e| io_error(path, e))
    }
}

impl SledStore {
    /// Opens (or creates) the store in `dir/db`, checking its format version.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join("db");
        let db = open_db(&path)?;
        Ok(Self {
            path,
            db: RwLock::new(Some(db)),
        })
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn opened(&self) -> Result<Opened, StoreError> {
        self.db
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| StoreError::Io {
                path: self.path.clone(),
                detail: "the store is being reopened after an error".into(),
            })
    }

    fn db(&self) -> Result<sled::Db, StoreError> {
        self.opened().map(|o| o.db)
    }

    fn err(&self, e: sled::Error) -> StoreError {
        map_err(&self.path, e)
    }

    fn corrupt(&self, key: &[u8], detail: impl std::fmt::Display) -> StoreError {
        load::corrupt(&self.path, key, detail)
    }

    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        self.db()?.get(key).map_err(|e| self.err(e))
    }
}

fn io_error(path: &Path, e: std::io::Error) -> StoreError {
    if e.raw_os_error() == Some(libc_enospc()) {
        return StoreError::NoSpace {
            path: path.to_owned(),
        };
    }
    StoreError::Io {
        path: path.to_owned(),
        detail: e.to_string(),
    }
}

fn map_err(path: &Path, e: sled::Error) -> StoreError {
    let path = path.to_owned();
    match e {
        sled::Error::Io(io) if io.raw_os_error() == Some(libc_enospc()) => {
            StoreError::NoSpace { path }
        }
        sled::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
            StoreError::NoSpace { path }
        }
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            StoreError::Locked { path }
        }
        sled::Error::Corruption { at, .. } => StoreError::Corrupt {
            path,
            detail: format!("sled found damaged data at {at:?}"),
        },
        other => StoreError::Io {
            path,
            detail: other.to_string(),
        },
    }
}

fn libc_enospc() -> i32 {
    rustix::io::Errno::NOSPC.raw_os_error()
}

/// Finds a key outside the known prefixes (damage, or another program's
/// data) by looking only at the gaps between them: O(log n), not a scan.
fn first_unknown_key(db: &sled::Db) -> sled::Result<Option<sled::IVec>> {
    for (start, end) in load::gaps(load::PLACES) {
        let mut keys = match end {
            Some(end) => db.range(start..end),
            None => db.range(start..),
        };
        if let Some(item) = keys.next() {
            return item.map(|(k, _)| Some(k));
        }
    }
    Ok(None)
}

fn add_to_batch(batch: &mut sled::Batch, op: &Op) {
    match op {
        Op::CreateAllocation(r) => batch.insert(
            codec::allocation_key(&r.container_id),
            codec::encode_allocation(r),
        ),
        Op::DeleteAllocation(r) => batch.remove(codec::allocation_key(&r.container_id)),
        Op::UpdateAllocation { new, .. } => batch.insert(
            codec::allocation_key(&new.container_id),
            codec::encode_allocation(new),
        ),
        Op::ClaimPair { level, holder } => {
            batch.insert(codec::pair_key(*level), codec::encode_holder(holder))
        }
        Op::FreePair { level, .. } => batch.remove(codec::pair_key(*level)),
        Op::PutGroup { new, .. } => {
            batch.insert(codec::group_key(&new.key), codec::encode_group(new))
        }
        Op::DeleteGroup(g) => batch.remove(codec::group_key(&g.key)),
        Op::PutReservation(r) => batch.insert(
            codec::reservation_key(r.reservation),
            codec::encode_reservation(r),
        ),
        Op::DeleteReservation(r) => batch.remove(codec::reservation_key(r.reservation)),
        Op::ReplaceReservation { new, .. } => batch.insert(
            codec::reservation_key(new.reservation),
            codec::encode_reservation(new),
        ),
    }
}

#[async_trait]
impl Store for SledStore {
    fn describe(&self) -> String {
        format!("sled at {}", self.path.display())
    }

    async fn load(&self, sink: &mut dyn LoadSink) -> Result<(), StoreError> {
        let db = self.db()?;
        if let Some(key) = first_unknown_key(&db).map_err(|e| self.err(e))? {
            return Err(self.corrupt(&key, "unexpected key"));
        }
        for records in Records::LOAD_ORDER {
            let scan = db.scan_prefix(records.prefix());
            load::feed(
                &self.path,
                records,
                scan.map(|i| i.map_err(|e| self.err(e))),
                sink,
            )?;
        }
        Ok(())
    }

    async fn allocation(&self, id: &ContainerId) -> Result<Option<AllocationRecord>, StoreError> {
        let key = codec::allocation_key(id);
        self.get(&key)?
            .map(|v| codec::decode_allocation(&v).map_err(|e| self.corrupt(&key, e)))
            .transpose()
    }

    async fn group(&self, group: &GroupKey) -> Result<Option<GroupRecord>, StoreError> {
        let key = codec::group_key(group);
        self.get(&key)?
            .map(|v| codec::decode_group(&v).map_err(|e| self.corrupt(&key, e)))
            .transpose()
    }

    async fn holder(&self, level: Level) -> Result<Option<Holder>, StoreError> {
        let key = codec::pair_key(level);
        self.get(&key)?
            .map(|v| codec::decode_holder(&v).map_err(|e| self.corrupt(&key, e)))
            .transpose()
    }

    async fn reservation(
        &self,
        reservation: Reservation,
    ) -> Result<Option<ReservationRecord>, StoreError> {
        let key = codec::reservation_key(reservation);
        self.get(&key)?
            .map(|v| codec::decode_reservation(&v).map_err(|e| self.corrupt(&key, e)))
            .transpose()
    }

    async fn allocations(
        &self,
        after: Option<&ContainerId>,
        limit: usize,
    ) -> Result<Vec<AllocationRecord>, StoreError> {
        let db = self.db()?;
        let (start, end) = load::allocation_page(after);
        let page = db.range(start..end).take(limit);
        load::decode_allocations(&self.path, page.map(|i| i.map_err(|e| self.err(e))))
    }

    async fn commit(&self, txns: Vec<Txn>) -> Vec<Result<(), StoreError>> {
        let count = txns.len();
        let result = match self.opened() {
            Ok(opened) => {
                let mut batch = sled::Batch::default();
                for op in txns.iter().flat_map(|t| &t.0) {
                    add_to_batch(&mut batch, op);
                }
                let path = self.path.clone();
                // apply + fsync block for a fraction of a millisecond; keep
                // them off the async workers.
                tokio::task::spawn_blocking(move || {
                    opened
                        .db
                        .apply_batch(batch)
                        .map_err(|e| map_err(&path, e))?;
                    opened.flush(&path)
                })
                .await
                .unwrap_or_else(|e| {
                    Err(StoreError::Io {
                        path: self.path.clone(),
                        detail: format!("store writer task failed: {e}"),
                    })
                })
            }
            Err(e) => Err(e),
        };
        std::iter::repeat_n(result, count).collect()
    }

    async fn recover(&self) -> Result<(), StoreError> {
        let mut slot = self.db.write().unwrap_or_else(|e| e.into_inner());
        // Drop the failed database first: sled holds a file lock until then.
        drop(slot.take());
        *slot = Some(open_db(&self.path)?);
        Ok(())
    }

    async fn close(&self) -> Result<(), StoreError> {
        let opened = self.opened()?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || opened.flush(&path))
            .await
            .unwrap_or(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[tokio::test]
    async fn a_reservation_reads_back_as_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let pair: Reservation = "s0:c1,c2".parse().unwrap();
        let record = ReservationRecord {
            reservation: pair,
            created_at: UNIX_EPOCH,
            configured_by: Some("node-a".into()),
        };
        assert_eq!(store.reservation(pair).await.unwrap(), None);
        let put = Txn(vec![Op::PutReservation(record.clone())]);
        assert_eq!(store.commit(vec![put]).await, vec![Ok(())]);
        assert_eq!(store.reservation(pair).await.unwrap(), Some(record));
        // A category reservation is another key.
        let category = "c1".parse().unwrap();
        assert_eq!(store.reservation(category).await.unwrap(), None);
        store.close().await.unwrap();
    }
}
