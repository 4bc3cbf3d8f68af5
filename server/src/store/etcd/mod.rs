//! The shared store: mcsd's records in etcd v3, under one key prefix.
//!
//! Every mcsd pointed at the same prefix shares one pool. Uniqueness comes
//! from etcd, not from the engines: each [`Txn`] becomes one etcd
//! transaction whose compares check what every op expects (see [`txn`]), so
//! of two instances claiming the same pair exactly one succeeds and the
//! other gets [`StoreError::Conflict`] and picks again. etcd replicates each
//! transaction to a quorum before answering, so an acknowledged allocation
//! survives the loss of any minority of members.
//!
//! The keys are the logical layout of [`crate::store`] behind the prefix,
//! plus `meta/format` (the codec version, as for sled) and `meta/range`
//! (the category range: instances that share a pool must hand out the same
//! categories, and the first one to start records it).
//!
//! Loading reads every record at one etcd revision, a consistent snapshot;
//! [`Store::changes`] then follows the prefix from the next revision.

mod commit;
mod feed;
mod load;
mod open;
mod request;
mod revisions;
mod txn;

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, GetOptions, KvClient, Txn as EtcdTxn, TxnOp, TxnOpResponse};
use futures_util::future::join_all;

pub use self::open::{Auth, Password, Settings, Tls, DEFAULT_PREFIX, DEFAULT_TIMEOUT};

use self::feed::{EtcdFeed, OwnWrites};
use self::revisions::Revisions;
use super::codec;
use super::{
    AllocationRecord, ChangeFeed, GroupRecord, Holder, LoadSink, ReadBatch, ReservationRecord,
    Store, StoreError, Txn,
};
use crate::id::{ContainerId, GroupKey};
use crate::level::Level;
use crate::reservation::Reservation;
use crate::store::load::{allocation_page, corrupt, decode_allocations};

/// Key of the category range every instance sharing the prefix uses.
pub const RANGE_KEY: &[u8] = b"meta/range";
/// Records per page when loading or listing.
const PAGE: i64 = 2048;
/// Reads per etcd transaction in [`Store::read_batch`] (etcd allows 128
/// operations in one transaction by default).
const READS_PER_TXN: usize = 128;

/// The etcd-backed [`Store`].
pub struct EtcdStore {
    kv: KvClient,
    client: Client,
    prefix: Vec<u8>,
    description: String,
    timeout: Duration,
    own: Arc<OwnWrites>,
    /// The revisions at which records were last seen, for the compares.
    seen: Arc<Revisions>,
    /// The revision the latest [`Store::load`] read at.
    loaded_at: AtomicI64,
}

impl EtcdStore {
    fn key(&self, logical: &[u8]) -> Vec<u8> {
        [self.prefix.as_slice(), logical].concat()
    }

    /// The logical key of `key`, a key etcd returned from under the prefix.
    fn logical<'k>(&self, key: &'k [u8]) -> &'k [u8] {
        &key[self.prefix.len()..]
    }

    fn corrupt(&self, key: &[u8], detail: impl std::fmt::Display) -> StoreError {
        corrupt(Path::new(&self.description), key, detail)
    }

    /// Reads the record at logical `key`, and keeps the revision it was
    /// read at for a later change to it.
    async fn read_record<T>(
        &self,
        key: &[u8],
        decode: fn(&[u8]) -> Result<T, codec::DecodeError>,
        encode: fn(&T) -> Vec<u8>,
    ) -> Result<Option<T>, StoreError> {
        let response = self.get(self.key(key), None).await?;
        let found = response
            .kvs()
            .first()
            .map(|kv| (kv.value().to_vec(), kv.mod_revision()));
        self.decode_found(key, found, decode, encode)
    }

    /// Decodes what a read found at logical `key` (its value and
    /// `mod_revision`), and keeps the revision with mcsd's encoding of
    /// the record.
    fn decode_found<T>(
        &self,
        key: &[u8],
        found: Option<(Vec<u8>, i64)>,
        decode: fn(&[u8]) -> Result<T, codec::DecodeError>,
        encode: fn(&T) -> Vec<u8>,
    ) -> Result<Option<T>, StoreError> {
        let Some((value, revision)) = found else {
            return Ok(None);
        };
        let record = decode(&value).map_err(|e| self.corrupt(key, e))?;
        self.seen.saw(key, revision, encode(&record));
        Ok(Some(record))
    }

    /// Reads `keys` (logical) in transactions of [`READS_PER_TXN`], all at
    /// once: each one's value and `mod_revision`, if it exists.
    async fn get_many(
        &self,
        keys: Vec<Vec<u8>>,
    ) -> Result<Vec<Option<(Vec<u8>, i64)>>, StoreError> {
        let chunks = keys.chunks(READS_PER_TXN).map(|chunk| {
            let reads: Vec<TxnOp> = chunk
                .iter()
                .map(|k| TxnOp::get(self.key(k), None))
                .collect();
            self.txn(EtcdTxn::new().and_then(reads), true)
        });
        let mut values = Vec::with_capacity(keys.len());
        for response in join_all(chunks).await {
            for read in response?.op_responses() {
                values.push(match read {
                    TxnOpResponse::Get(get) => get
                        .kvs()
                        .first()
                        .map(|kv| (kv.value().to_vec(), kv.mod_revision())),
                    _ => None,
                });
            }
        }
        Ok(values)
    }
}

#[async_trait]
impl Store for EtcdStore {
    fn describe(&self) -> String {
        self.description.clone()
    }

    async fn load(&self, sink: &mut dyn LoadSink) -> Result<(), StoreError> {
        self.load_all(sink).await
    }

    async fn allocation(&self, id: &ContainerId) -> Result<Option<AllocationRecord>, StoreError> {
        let key = codec::allocation_key(id);
        self.read_record(&key, codec::decode_allocation, codec::encode_allocation)
            .await
    }

    async fn group(&self, group: &GroupKey) -> Result<Option<GroupRecord>, StoreError> {
        let key = codec::group_key(group);
        self.read_record(&key, codec::decode_group, codec::encode_group)
            .await
    }

    async fn holder(&self, level: Level) -> Result<Option<Holder>, StoreError> {
        let key = codec::pair_key(level);
        self.read_record(&key, codec::decode_holder, codec::encode_holder)
            .await
    }

    async fn reservation(
        &self,
        reservation: Reservation,
    ) -> Result<Option<ReservationRecord>, StoreError> {
        let key = codec::reservation_key(reservation);
        self.read_record(&key, codec::decode_reservation, codec::encode_reservation)
            .await
    }

    async fn held_count(&self) -> Result<Option<u64>, StoreError> {
        let options = GetOptions::new().with_prefix().with_count_only();
        let response = self
            .get(self.key(codec::PAIR_PREFIX), Some(options))
            .await?;
        Ok(Some(u64::try_from(response.count()).unwrap_or(0)))
    }

    async fn allocations(
        &self,
        after: Option<&ContainerId>,
        limit: usize,
    ) -> Result<Vec<AllocationRecord>, StoreError> {
        // etcd-client's `with_prefix` derives a range's end from the key a
        // request starts at, which serves whole prefixes; a page starts
        // after an id inside the prefix and needs the prefix's end itself.
        let (start, end) = allocation_page(after);
        let options = GetOptions::new()
            .with_range(self.key(&end))
            .with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        let response = self.get(self.key(&start), Some(options)).await?;
        let page = response
            .kvs()
            .iter()
            .map(|kv| Ok((self.logical(kv.key()), kv.value())));
        decode_allocations(Path::new(&self.description), page)
    }

    async fn commit(&self, txns: Vec<Txn>) -> Vec<Result<(), StoreError>> {
        // Independent transactions (the engine never lets two in one batch
        // touch the same record), sent together: etcd commits concurrent
        // proposals in shared raft rounds and fsyncs, so this is the group
        // commit of a networked store.
        join_all(txns.iter().map(|t| self.commit_one(t))).await
    }

    async fn recover(&self) -> Result<(), StoreError> {
        // Nothing to reopen: a failed request leaves no local state behind.
        // Make sure etcd answers again before the engine reloads.
        self.call(true, || {
            let mut maintenance = self.client.maintenance_client();
            async move { maintenance.status().await }
        })
        .await
        .map(drop)
    }

    async fn close(&self) -> Result<(), StoreError> {
        // Every commit was replicated before it returned.
        Ok(())
    }

    async fn read_batch(
        &self,
        ids: &[ContainerId],
        groups: &[GroupKey],
    ) -> Result<ReadBatch, StoreError> {
        let keys = ids
            .iter()
            .map(codec::allocation_key)
            .chain(groups.iter().map(codec::group_key))
            .collect();
        let mut values = self.get_many(keys).await?.into_iter();
        let mut batch = ReadBatch::default();
        // The engine reads these to change them: their revisions are kept.
        for id in ids {
            let key = codec::allocation_key(id);
            let found = values.next().flatten();
            batch.allocations.push(self.decode_found(
                &key,
                found,
                codec::decode_allocation,
                codec::encode_allocation,
            )?);
        }
        for group in groups {
            let key = codec::group_key(group);
            let found = values.next().flatten();
            batch.groups.push(self.decode_found(
                &key,
                found,
                codec::decode_group,
                codec::encode_group,
            )?);
        }
        Ok(batch)
    }

    fn changes(&self) -> Option<Box<dyn ChangeFeed>> {
        let from = self.loaded_at.load(Ordering::SeqCst) + 1;
        Some(Box::new(EtcdFeed::start(
            self.client.watch_client(),
            self.prefix.clone(),
            from,
            self.own.clone(),
            self.seen.clone(),
        )))
    }
}
