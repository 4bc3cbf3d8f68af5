//! Loading the etcd store: every record at one revision (a consistent
//! snapshot, read a page at a time), after checking that nothing but
//! mcsd's keys lives under the prefix. What a record must look like is
//! [`crate::store::load`]'s to decide, as for every backend.

use std::path::Path;
use std::sync::atomic::Ordering;

use etcd_client::{GetOptions, Txn as EtcdTxn, TxnOp, TxnOpResponse};

use super::{EtcdStore, PAGE, RANGE_KEY};
use crate::store::load::{self, prefix_end, Place, Records};
use crate::store::{LoadSink, StoreError};

impl EtcdStore {
    /// Feeds every record of kind `records` at `revision` to `sink`, a page
    /// at a time.
    async fn scan(
        &self,
        records: Records,
        revision: i64,
        sink: &mut dyn LoadSink,
    ) -> Result<(), StoreError> {
        let mut from = self.key(records.prefix());
        let end = self.key(&prefix_end(records.prefix()));
        loop {
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(PAGE)
                .with_revision(revision);
            let response = self.get(from.clone(), Some(options)).await?;
            let page = response
                .kvs()
                .iter()
                .map(|kv| Ok((self.logical(kv.key()), kv.value())));
            load::feed(Path::new(&self.description), records, page, sink)?;
            match response.kvs().last() {
                Some(last) if response.more() => from = load::key_after(last.key()),
                _ => return Ok(()),
            }
        }
    }

    /// Looks for a key outside the known ones in the gaps between them, in
    /// one transaction; returns it and the revision the check read at.
    async fn first_unknown_key(&self) -> Result<(Option<Vec<u8>>, i64), StoreError> {
        let places = load::PLACES.into_iter().chain([Place::Key(RANGE_KEY)]);
        let reads: Vec<TxnOp> = load::gaps(places)
            .into_iter()
            .map(|(start, end)| {
                let end = match end {
                    Some(end) => self.key(&end),
                    // Up to the end of the whole prefix.
                    None => prefix_end(&self.prefix),
                };
                TxnOp::get(
                    self.key(&start),
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
                    return Ok((Some(self.logical(kv.key()).to_vec()), revision));
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
        for records in Records::LOAD_ORDER {
            self.scan(records, revision, sink).await?;
        }
        self.loaded_at.store(revision, Ordering::SeqCst);
        self.own.forget_through(revision);
        Ok(())
    }
}
