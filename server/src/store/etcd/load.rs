//! Loading the etcd store: every record at one revision (a consistent
//! snapshot, read a page at a time), after checking that nothing but
//! mcsd's keys lives under the prefix.

use std::sync::atomic::Ordering;

use etcd_client::{GetOptions, Txn as EtcdTxn, TxnOp, TxnOpResponse};

use super::{prefix_end, EtcdStore, PAGE, RANGE_KEY};
use crate::store::codec::{self, FORMAT_KEY};
use crate::store::{LoadSink, StoreError};

impl EtcdStore {
    /// Feeds every key in `[start, end)` at `revision` to `each`, a page at
    /// a time.
    async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        revision: i64,
        mut each: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut from = self.key(start);
        let end = self.key(end);
        loop {
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(PAGE)
                .with_revision(revision);
            let response = self.get(from.clone(), Some(options)).await?;
            for kv in response.kvs() {
                let key = &kv.key()[self.prefix.len()..];
                each(key, kv.value())?;
            }
            match response.kvs().last() {
                Some(last) if response.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok(()),
            }
        }
    }

    /// Looks for a key outside the known ones in the gaps between them, in
    /// one transaction; returns it and the revision the check read at.
    async fn first_unknown_key(&self) -> Result<(Option<Vec<u8>>, i64), StoreError> {
        let after = |k: &[u8]| [k, &[0][..]].concat();
        let end_of = |p: &[u8]| prefix_end(p);
        let gaps: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (Vec::new(), codec::ALLOCATION_PREFIX.to_vec()),
            (
                end_of(codec::ALLOCATION_PREFIX),
                codec::GROUP_PREFIX.to_vec(),
            ),
            (end_of(codec::GROUP_PREFIX), FORMAT_KEY.to_vec()),
            (after(FORMAT_KEY), RANGE_KEY.to_vec()),
            (after(RANGE_KEY), codec::PAIR_PREFIX.to_vec()),
            (
                end_of(codec::PAIR_PREFIX),
                codec::RESERVATION_PREFIX.to_vec(),
            ),
            // An empty end: up to the end of the whole prefix.
            (end_of(codec::RESERVATION_PREFIX), Vec::new()),
        ];
        let reads: Vec<TxnOp> = gaps
            .iter()
            .map(|(start, end)| {
                let end = if end.is_empty() {
                    prefix_end(&self.prefix)
                } else {
                    self.key(end)
                };
                TxnOp::get(
                    self.key(start),
                    Some(
                        GetOptions::new()
                            .with_range(end)
                            .with_limit(1)
                            .with_keys_only(),
                    ),
                )
            })
            .collect();
        let response = self.txn(EtcdTxn::new().and_then(reads), true).await?;
        let revision = response.header().map_or(0, |h| h.revision());
        for read in response.op_responses() {
            if let TxnOpResponse::Get(get) = read {
                if let Some(kv) = get.kvs().first() {
                    return Ok((Some(kv.key()[self.prefix.len()..].to_vec()), revision));
                }
            }
        }
        Ok((None, revision))
    }

    /// Feeds every record to `sink`, read at one revision, and remembers
    /// that revision for [`Store::changes`](crate::store::Store::changes).
    pub(super) async fn load_all(&self, sink: &mut dyn LoadSink) -> Result<(), StoreError> {
        let (unknown, revision) = self.first_unknown_key().await?;
        if let Some(key) = unknown {
            return Err(self.corrupt(&key, "unexpected key"));
        }
        let end = prefix_end;
        self.scan(
            codec::RESERVATION_PREFIX,
            &end(codec::RESERVATION_PREFIX),
            revision,
            |k, v| {
                let record = codec::decode_reservation(v).map_err(|e| self.corrupt(k, e))?;
                if codec::reservation_key(record.reservation) != k {
                    return Err(self.corrupt(k, "key does not match the reservation it holds"));
                }
                sink.reservation(record)
            },
        )
        .await?;
        self.scan(
            codec::PAIR_PREFIX,
            &end(codec::PAIR_PREFIX),
            revision,
            |k, v| {
                let level = codec::decode_pair_key(k).map_err(|e| self.corrupt(k, e))?;
                let holder = codec::decode_holder(v).map_err(|e| self.corrupt(k, e))?;
                sink.pair(level, holder)
            },
        )
        .await?;
        self.scan(
            codec::GROUP_PREFIX,
            &end(codec::GROUP_PREFIX),
            revision,
            |k, v| {
                let record = codec::decode_group(v).map_err(|e| self.corrupt(k, e))?;
                if codec::group_key(&record.key) != k {
                    return Err(self.corrupt(k, "key does not match the group it holds"));
                }
                sink.group(record)
            },
        )
        .await?;
        self.scan(
            codec::ALLOCATION_PREFIX,
            &end(codec::ALLOCATION_PREFIX),
            revision,
            |k, v| {
                let record = codec::decode_allocation(v).map_err(|e| self.corrupt(k, e))?;
                if codec::allocation_key(&record.container_id) != k {
                    return Err(self.corrupt(k, "key does not match the allocation it holds"));
                }
                sink.allocation(record)
            },
        )
        .await?;
        self.loaded_at.store(revision, Ordering::SeqCst);
        self.own.forget_through(revision);
        Ok(())
    }
}
