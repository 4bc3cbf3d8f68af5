//! Turning a [`Txn`] into one etcd transaction.
//!
//! Every [`Op`] carries what it expects to find, and each expectation
//! becomes an etcd compare: "must not exist" is `create_revision == 0`,
//! "must hold this record" is `mod_revision ==` the revision at which this
//! instance saw the key hold that record ([`Check`]; see
//! [`revisions`](super::revisions) for why not the bytes, and for where
//! those revisions come from). All compares and all writes go in one etcd
//! transaction, so either every write lands or none does; two instances
//! claiming the same pair cannot both succeed. A claim also requires that
//! no reservation covers the pair (neither the pair's own reservation key
//! nor either of its two categories'): the claiming instance's view may not
//! have heard of a reservation made through another instance yet, and the
//! pool is never trusted for uniqueness, etcd is. When the compares fail,
//! the failure branch reads the compared keys back, so the conflict can say
//! what another instance changed.

use etcd_client::{Compare, CompareOp, TxnOp, TxnOpResponse};

use super::revisions;
use crate::reservation::Reservation;
use crate::store::codec;
use crate::store::{Op, Txn};

/// What an op expects of a key before it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Expect {
    /// The key does not exist.
    Absent,
    /// The key holds the record mcsd encodes as these bytes.
    Value(Vec<u8>),
}

/// What etcd checks of a compared key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Check {
    /// The key does not exist.
    Absent,
    /// The key has not changed since this revision, its `mod_revision`
    /// when it was seen holding the record expected.
    Unchanged(i64),
}

/// One [`Txn`] ready for etcd. Keys here are logical (without the prefix).
#[derive(Debug, Default)]
pub(super) struct Planned {
    /// Each compared key and what it must hold (some are only compared,
    /// never written: the reservations a claim must not collide with).
    pub expects: Vec<(Vec<u8>, Expect)>,
    /// Keys to write, with `None` for a delete.
    pub writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// Maps every op to its expectation and its write.
pub(super) fn plan(txn: &Txn) -> Planned {
    let mut p = Planned::default();
    for op in &txn.0 {
        let (key, expect, write) = match op {
            Op::CreateAllocation(r) => (
                codec::allocation_key(&r.container_id),
                Expect::Absent,
                Some(codec::encode_allocation(r)),
            ),
            Op::DeleteAllocation(r) => (
                codec::allocation_key(&r.container_id),
                Expect::Value(codec::encode_allocation(r)),
                None,
            ),
            Op::UpdateAllocation { old, new } => (
                codec::allocation_key(&new.container_id),
                Expect::Value(codec::encode_allocation(old)),
                Some(codec::encode_allocation(new)),
            ),
            Op::ClaimPair { level, holder } => (
                codec::pair_key(*level),
                Expect::Absent,
                Some(codec::encode_holder(holder)),
            ),
            Op::FreePair { level, holder } => (
                codec::pair_key(*level),
                Expect::Value(codec::encode_holder(holder)),
                None,
            ),
            Op::PutGroup { old, new } => (
                codec::group_key(&new.key),
                old.as_ref()
                    .map_or(Expect::Absent, |g| Expect::Value(codec::encode_group(g))),
                Some(codec::encode_group(new)),
            ),
            Op::DeleteGroup(g) => (
                codec::group_key(&g.key),
                Expect::Value(codec::encode_group(g)),
                None,
            ),
            Op::PutReservation(r) => (
                codec::reservation_key(r.reservation),
                Expect::Absent,
                Some(codec::encode_reservation(r)),
            ),
            Op::DeleteReservation(r) => (
                codec::reservation_key(r.reservation),
                Expect::Value(codec::encode_reservation(r)),
                None,
            ),
            Op::ReplaceReservation { old, new } => (
                codec::reservation_key(new.reservation),
                Expect::Value(codec::encode_reservation(old)),
                Some(codec::encode_reservation(new)),
            ),
        };
        p.expects.push((key.clone(), expect));
        p.writes.push((key, write));
        if let Op::ClaimPair { level, .. } = op {
            // A reservation of the pair or of either category keeps it
            // from being handed out, whoever made it.
            for reservation in covering(*level) {
                p.expects
                    .push((codec::reservation_key(reservation), Expect::Absent));
            }
        }
    }
    p
}

/// The reservations that would keep `level` from being handed out.
fn covering(level: crate::level::Level) -> [Reservation; 3] {
    [
        Reservation::Pair(level),
        Reservation::Category(level.low()),
        Reservation::Category(level.high()),
    ]
}

impl Planned {
    /// Each expectation as a check, where it can be told without a read:
    /// absence always, a record when `revision_of(key, expected bytes)`
    /// knows the revision at which the key held it.
    pub(super) fn checks(
        &self,
        revision_of: impl Fn(&[u8], &[u8]) -> Option<i64>,
    ) -> Vec<Option<Check>> {
        self.expects
            .iter()
            .map(|(key, expect)| match expect {
                Expect::Absent => Some(Check::Absent),
                Expect::Value(want) => revision_of(key, want).map(Check::Unchanged),
            })
            .collect()
    }

    /// The etcd compares, with keys under `prefix`, one per expectation.
    pub(super) fn compares(&self, prefix: &[u8], checks: &[Check]) -> Vec<Compare> {
        self.expects
            .iter()
            .zip(checks)
            .map(|((key, _), check)| {
                let key = [prefix, key].concat();
                match check {
                    Check::Absent => Compare::create_revision(key, CompareOp::Equal, 0),
                    Check::Unchanged(revision) => {
                        Compare::mod_revision(key, CompareOp::Equal, *revision)
                    }
                }
            })
            .collect()
    }

    /// The writes, run when every compare holds.
    pub(super) fn success(&self, prefix: &[u8]) -> Vec<TxnOp> {
        self.writes
            .iter()
            .map(|(key, value)| {
                let key = [prefix, key].concat();
                match value {
                    Some(v) => TxnOp::put(key, v.clone(), None),
                    None => TxnOp::delete(key, None),
                }
            })
            .collect()
    }

    /// Reads of the compared keys, run when a compare fails.
    pub(super) fn failure(&self, prefix: &[u8]) -> Vec<TxnOp> {
        self.expects
            .iter()
            .map(|(key, _)| TxnOp::get([prefix, key].concat(), None))
            .collect()
    }

    /// What another writer changed, from the failure branch's reads.
    pub(super) fn conflict(&self, checks: &[Check], reads: &[TxnOpResponse]) -> String {
        for (((key, _), check), read) in self.expects.iter().zip(checks).zip(reads) {
            let found = match read {
                TxnOpResponse::Get(get) => get.kvs().first(),
                _ => continue,
            };
            match (check, found) {
                (Check::Absent, Some(kv)) => return already_exists(key, kv.value()),
                (Check::Unchanged(_), None) => return removed(key),
                (Check::Unchanged(revision), Some(kv)) if kv.mod_revision() != *revision => {
                    return changed(key)
                }
                _ => {}
            }
        }
        // Every compare holds now: the conflicting change was undone
        // between the transaction and its read-back.
        "a record changed while the transaction ran".into()
    }
}

/// The revision to compare for a key expected to hold the record mcsd
/// encodes as `want`, from a fresh read of it (`found`: its value and
/// `mod_revision`); or, if it holds something else, what another writer
/// did. Records are compared as this build decodes them, so fields it does
/// not know (written by a newer mcsd) do not make them differ.
pub(super) fn verify(key: &[u8], want: &[u8], found: Option<(&[u8], i64)>) -> Result<i64, String> {
    let Some((value, revision)) = found else {
        return Err(removed(key));
    };
    match revisions::canonical(key, value) {
        Ok(canonical) if canonical == want => Ok(revision),
        Ok(_) => Err(changed(key)),
        Err(e) => Err(format!(
            "{} was changed by another writer into a record this mcsd cannot read: {e}",
            describe(key)
        )),
    }
}

fn removed(key: &[u8]) -> String {
    format!("{} was removed by another writer", describe(key))
}

fn changed(key: &[u8]) -> String {
    format!("{} was changed by another writer", describe(key))
}

/// A human name for a logical key.
fn describe(key: &[u8]) -> String {
    let text = |rest: &[u8]| String::from_utf8_lossy(rest).into_owned();
    if let Some(id) = key.strip_prefix(codec::ALLOCATION_PREFIX) {
        format!("the allocation of container {}", text(id))
    } else if let Some(group) = key.strip_prefix(codec::GROUP_PREFIX) {
        format!("group {}", text(group))
    } else if let Some(r) = key.strip_prefix(codec::RESERVATION_PREFIX) {
        format!("reservation {}", text(r))
    } else if let Ok(level) = codec::decode_pair_key(key) {
        format!("pair {level}")
    } else {
        format!("key {}", text(key))
    }
}

fn already_exists(key: &[u8], value: &[u8]) -> String {
    if key.starts_with(codec::RESERVATION_PREFIX) {
        return format!("{} was made through another mcsd", describe(key));
    }
    if key.starts_with(codec::PAIR_PREFIX) {
        if let Ok(holder) = codec::decode_holder(value) {
            return format!(
                "{} was claimed by {holder} through another mcsd",
                describe(key)
            );
        }
    }
    format!("{} was created by another writer", describe(key))
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::id::{ContainerId, GroupKey, Owner};
    use crate::store::{AllocationRecord, GroupRecord, Holder};

    fn record() -> AllocationRecord {
        AllocationRecord {
            container_id: ContainerId::new("c1").unwrap(),
            owner: Owner::new("podman").unwrap(),
            group: None,
            level: "s0:c1,c2".parse().unwrap(),
            process_label: "p".into(),
            file_label: "f".into(),
            created_at: UNIX_EPOCH,
            node: String::new(),
            roots: Vec::new(),
        }
    }

    #[test]
    fn claims_expect_absence_and_releases_expect_the_record() {
        let r = record();
        let group = GroupRecord {
            key: GroupKey::new("pod").unwrap(),
            level: r.level,
            members: 2,
            created_at: UNIX_EPOCH,
        };
        let joined = GroupRecord {
            members: 3,
            ..group.clone()
        };
        let p = plan(&Txn(vec![
            Op::CreateAllocation(r.clone()),
            Op::ClaimPair {
                level: r.level,
                holder: r.holder(),
            },
            Op::PutGroup {
                old: Some(group.clone()),
                new: joined.clone(),
            },
        ]));
        assert_eq!(p.expects[0], (b"a/c1".to_vec(), Expect::Absent));
        assert_eq!(p.expects[1].1, Expect::Absent);
        // The claim also needs every reservation that covers the pair
        // absent, and writes none of them.
        let reservations = p.expects[2..5].to_vec();
        assert_eq!(
            reservations,
            [&b"r/s0:c1,c2"[..], b"r/c1", b"r/c2"].map(|k| (k.to_vec(), Expect::Absent))
        );
        assert_eq!(p.expects[5].1, Expect::Value(codec::encode_group(&group)));
        assert_eq!(p.writes.len(), 3);
        assert_eq!(p.writes[2].1, Some(codec::encode_group(&joined)));

        let p = plan(&Txn(vec![
            Op::DeleteAllocation(r.clone()),
            Op::FreePair {
                level: r.level,
                holder: r.holder(),
            },
        ]));
        assert_eq!(p.expects[0].1, Expect::Value(codec::encode_allocation(&r)));
        assert_eq!(
            p.expects[1].1,
            Expect::Value(codec::encode_holder(&Holder::Container(r.container_id)))
        );
        assert!(p.writes.iter().all(|(_, w)| w.is_none()));
    }

    #[test]
    fn records_are_checked_by_revision_and_matched_as_this_build_decodes_them() {
        let r = record();
        let key = codec::allocation_key(&r.container_id);
        let want = codec::encode_allocation(&r);
        let p = plan(&Txn(vec![Op::DeleteAllocation(r.clone())]));
        let seen = |k: &[u8], v: &[u8]| (k == key.as_slice() && v == want.as_slice()).then_some(7);
        assert_eq!(p.checks(seen), vec![Some(Check::Unchanged(7))]);
        assert_eq!(p.checks(|_, _| None), vec![None]);

        // A newer mcsd's extra field (tag 99) is not a change...
        let mut newer = want.clone();
        newer.extend_from_slice(&[0x9a, 0x06, 1, b'x']);
        assert_eq!(verify(&key, &want, Some((&newer, 9))), Ok(9));
        // ...another record, a removed one or an unreadable one is.
        let other = codec::encode_allocation(&AllocationRecord {
            owner: Owner::new("crio").unwrap(),
            ..r
        });
        assert_eq!(
            verify(&key, &want, Some((&other, 9))).unwrap_err(),
            "the allocation of container c1 was changed by another writer"
        );
        assert_eq!(
            verify(&key, &want, None).unwrap_err(),
            "the allocation of container c1 was removed by another writer"
        );
        let err = verify(&key, &want, Some((b"\xff", 9))).unwrap_err();
        assert!(err.contains("cannot read"), "{err}");
    }

    #[test]
    fn keys_are_named_for_humans() {
        assert_eq!(describe(b"a/c1"), "the allocation of container c1");
        assert_eq!(describe(b"g/pod"), "group pod");
        assert_eq!(describe(b"r/c5"), "reservation c5");
        assert_eq!(
            describe(&codec::pair_key("s0:c1,c2".parse().unwrap())),
            "pair s0:c1,c2"
        );
        let holder = codec::encode_holder(&Holder::Group(GroupKey::new("pod").unwrap()));
        let text = already_exists(&codec::pair_key("s0:c1,c2".parse().unwrap()), &holder);
        assert_eq!(
            text,
            "pair s0:c1,c2 was claimed by group pod through another mcsd"
        );
    }
}
