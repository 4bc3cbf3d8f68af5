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

mod feed;
mod load;
mod open;
mod revisions;
mod txn;

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, GetOptions, KvClient, Txn as EtcdTxn, TxnOp, TxnOpResponse};
use futures_util::future::join_all;

use self::feed::{EtcdFeed, OwnWrites};
use self::revisions::Revisions;
use self::txn::{Check, Expect, Planned};
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
/// Times a request is sent when it could not reach etcd.
const SEND_ATTEMPTS: u32 = 4;
/// Wait before sending again, times the attempt number.
const RESEND_AFTER: Duration = Duration::from_millis(50);
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

/// What a failed request tells about etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The request never reached etcd (no connection could be made to the
    /// member): sending it again cannot apply it twice.
    NotSent,
    /// etcd may or may not have acted on it (the connection broke, the
    /// member lost its leader, the answer never came): only a read is safe
    /// to send again.
    Unknown,
    /// etcd refused it (a bad request, a missing permission): sending it
    /// again would not help.
    Refused,
}

/// Classifies a failed request by the kind of error, never by its text:
/// a connection that could not be made (a transport error, or a status
/// tonic made from a [`tonic::ConnectError`]) means not sent; a status
/// that etcd or the transport use for transient trouble (unavailable, past
/// its deadline, cancelled, unknown) means the outcome is unknown; any
/// other status is a refusal.
fn classify(error: &etcd_client::Error) -> Failure {
    use etcd_client::Error as E;
    match error {
        E::TransportError(_) => Failure::NotSent,
        E::GRpcStatus(status) => {
            let mut source = std::error::Error::source(status);
            while let Some(cause) = source {
                if cause.is::<tonic::ConnectError>() {
                    return Failure::NotSent;
                }
                source = cause.source();
            }
            match status.code() {
                tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Cancelled
                | tonic::Code::Unknown => Failure::Unknown,
                _ => Failure::Refused,
            }
        }
        E::InvalidArgs(_)
        | E::InvalidUri(_)
        | E::Utf8Error(_)
        | E::InvalidMetadataValue(_)
        | E::EndpointsNotManaged => Failure::Refused,
        _ => Failure::Unknown,
    }
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

    /// Runs one etcd request under the time limit, mapping its errors. A
    /// request that never reached etcd (the connection could not be made:
    /// a member is down and the client has not noticed yet) is sent again;
    /// so is any failed read when `read_only`.
    async fn call<T, F, Fut>(&self, read_only: bool, mut request: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let unreachable = |detail: String| StoreError::Unreachable {
            store: self.description.clone(),
            detail,
        };
        let mut attempt = 1;
        loop {
            let error = match tokio::time::timeout(self.timeout, request()).await {
                Err(_) => return Err(unreachable(format!("no answer within {:?}", self.timeout))),
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => e,
            };
            let failure = classify(&error);
            if failure == Failure::Refused {
                let detail = match error {
                    etcd_client::Error::GRpcStatus(status) => status.message().to_owned(),
                    other => other.to_string(),
                };
                return Err(StoreError::Io {
                    path: self.description.clone().into(),
                    detail,
                });
            }
            let resend = failure == Failure::NotSent || read_only;
            if attempt >= SEND_ATTEMPTS || !resend {
                return Err(unreachable(error.to_string()));
            }
            tokio::time::sleep(RESEND_AFTER * attempt).await;
            attempt += 1;
        }
    }

    /// One read.
    async fn get(
        &self,
        key: Vec<u8>,
        options: Option<GetOptions>,
    ) -> Result<etcd_client::GetResponse, StoreError> {
        self.call(true, || {
            let mut kv = self.kv.clone();
            let (key, options) = (key.clone(), options.clone());
            async move { kv.get(key, options).await }
        })
        .await
    }

    /// One transaction; `read_only` if it only reads.
    async fn txn(
        &self,
        txn: EtcdTxn,
        read_only: bool,
    ) -> Result<etcd_client::TxnResponse, StoreError> {
        self.call(read_only, || {
            let mut kv = self.kv.clone();
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await
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

    async fn commit_one(&self, txn: &Txn) -> Result<(), StoreError> {
        let planned = txn::plan(txn);
        let checks = self.checks(&planned).await?;
        let response = self
            .txn(
                EtcdTxn::new()
                    .when(planned.compares(&self.prefix, &checks))
                    .and_then(planned.success(&self.prefix))
                    .or_else(planned.failure(&self.prefix)),
                false,
            )
            .await?;
        let revision = response.header().map_or(0, |h| h.revision());
        if response.succeeded() {
            self.own.record(
                planned.writes.iter().map(|(key, _)| key.as_slice()),
                revision,
            );
            // One transaction, one revision: every key written has it as
            // its mod_revision now.
            for (key, value) in &planned.writes {
                match value {
                    Some(value) => self.seen.saw(key, revision, value.clone()),
                    None => self.seen.gone(key, revision),
                }
            }
            Ok(())
        } else {
            let reads = response.op_responses();
            // What the keys hold now, so that planning again compares
            // against it rather than against what lost.
            for ((key, _), read) in planned.expects.iter().zip(&reads) {
                if let TxnOpResponse::Get(get) = read {
                    match get.kvs().first() {
                        Some(kv) => self.seen.saw_raw(key, kv.mod_revision(), kv.value()),
                        None => self.seen.gone(key, revision),
                    }
                }
            }
            Err(StoreError::Conflict(planned.conflict(&checks, &reads)))
        }
    }

    /// The check of every expectation of `planned`. A key not seen
    /// holding the record expected is read first (all such keys in one
    /// round trip); one that holds another record fails the commit as a
    /// conflict right away, as its compare would.
    async fn checks(&self, planned: &Planned) -> Result<Vec<Check>, StoreError> {
        let known = planned.checks(|key, want| self.seen.revision_of(key, want));
        let unknown: Vec<Vec<u8>> = planned
            .expects
            .iter()
            .zip(&known)
            .filter(|(_, check)| check.is_none())
            .map(|((key, _), _)| key.clone())
            .collect();
        let mut found = if unknown.is_empty() {
            Vec::new()
        } else {
            self.get_many(unknown).await?
        }
        .into_iter();
        let mut checks = Vec::with_capacity(known.len());
        for ((key, expect), check) in planned.expects.iter().zip(known) {
            if let Some(check) = check {
                checks.push(check);
                continue;
            }
            // Only a record is ever unknown: absence needs no revision.
            let Expect::Value(want) = expect else {
                checks.push(Check::Absent);
                continue;
            };
            let read = found.next().flatten();
            if let Some((value, revision)) = &read {
                self.seen.saw_raw(key, *revision, value);
            }
            let read = read.as_ref().map(|(v, r)| (v.as_slice(), *r));
            let revision = txn::verify(key, want, read).map_err(StoreError::Conflict)?;
            checks.push(Check::Unchanged(revision));
        }
        Ok(checks)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A status as tonic makes it from a failure below gRPC.
    fn status_from(error: impl std::error::Error + Send + Sync + 'static) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::from_error(Box::new(error)))
    }

    #[test]
    fn failures_are_classified_by_kind_not_by_text() {
        use std::io::{Error as IoError, ErrorKind};
        // No connection could be made: never sent, whatever the words.
        let refused = IoError::new(
            ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        );
        let not_connected = status_from(tonic::ConnectError(Box::new(refused)));
        assert_eq!(
            classify(&not_connected),
            Failure::NotSent,
            "{not_connected}"
        );
        let bad_endpoint = tonic::transport::Endpoint::from_shared("http://[::1".to_owned())
            .expect_err("an endpoint that cannot be connected to");
        assert_eq!(
            classify(&etcd_client::Error::TransportError(bad_endpoint)),
            Failure::NotSent
        );
        // Sent, and the outcome is unknown, even if the words say connect.
        for status in [
            tonic::Status::unavailable("etcdserver: leader changed"),
            tonic::Status::unavailable("reconnect error after the request was sent"),
            tonic::Status::deadline_exceeded("etcdserver: request timed out"),
            tonic::Status::cancelled("connect error"),
        ] {
            let error = etcd_client::Error::GRpcStatus(status);
            assert_eq!(classify(&error), Failure::Unknown, "{error}");
        }
        let reset = IoError::new(ErrorKind::ConnectionReset, "connection reset");
        assert_eq!(
            classify(&etcd_client::Error::IoError(reset)),
            Failure::Unknown
        );
        // Refusals.
        for status in [
            tonic::Status::invalid_argument("etcdserver: too many operations in txn request"),
            tonic::Status::permission_denied("etcdserver: permission denied"),
            tonic::Status::failed_precondition("connect error"),
        ] {
            let error = etcd_client::Error::GRpcStatus(status);
            assert_eq!(classify(&error), Failure::Refused, "{error}");
        }
        assert_eq!(
            classify(&etcd_client::Error::InvalidArgs("no key".into())),
            Failure::Refused
        );
    }
}
