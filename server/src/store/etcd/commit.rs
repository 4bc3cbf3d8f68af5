//! Committing one [`Txn`] to etcd: the compares [`txn`](super::txn) plans,
//! checked against the revisions at which this instance saw each record,
//! and what a success or a conflict teaches about those revisions.

use etcd_client::{Txn as EtcdTxn, TxnOpResponse};

use super::txn::{self, Check, Expect, Planned};
use super::EtcdStore;
use crate::store::{StoreError, Txn};

impl EtcdStore {
    /// Applies `txn` as one etcd transaction whose compares check what its
    /// ops expect; [`StoreError::Conflict`] if another writer got there first.
    pub(super) async fn commit_one(&self, txn: &Txn) -> Result<(), StoreError> {
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
}
