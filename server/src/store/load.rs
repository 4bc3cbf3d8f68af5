//! Reading records back out of a backend's key-value scans: the loop every
//! backend runs at start-up, and the keys its scans start and end at.
//!
//! A backend only scans its keys; what a stored record must look like is
//! decided here, once: each value decodes, the key it sits under is the key
//! of the record it holds, and only then does the engine's [`LoadSink`] see
//! it. So a damaged or misplaced record is refused with the same words
//! whichever store holds it, and a store that resumes a scan or lists a page
//! after an id resumes at the same key as every other.

use std::fmt::Display;
use std::path::Path;

use super::codec::{self, FORMAT_KEY};
use super::{AllocationRecord, LoadSink, StoreError};
use crate::id::ContainerId;

/// The kinds of record that live under a prefix of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Records {
    /// `r/<reservation>`.
    Reservations,
    /// `p/<pair>`.
    Pairs,
    /// `g/<group key>`.
    Groups,
    /// `a/<container id>`.
    Allocations,
}

impl Records {
    /// Every kind, in the order a [`LoadSink`] takes them.
    pub(crate) const LOAD_ORDER: [Self; 4] = [
        Self::Reservations,
        Self::Pairs,
        Self::Groups,
        Self::Allocations,
    ];

    /// The prefix of every key of this kind.
    pub(crate) fn prefix(self) -> &'static [u8] {
        match self {
            Self::Reservations => codec::RESERVATION_PREFIX,
            Self::Pairs => codec::PAIR_PREFIX,
            Self::Groups => codec::GROUP_PREFIX,
            Self::Allocations => codec::ALLOCATION_PREFIX,
        }
    }
}

/// Feeds `sink` every record of kind `records` that `scan` yields as
/// `(logical key, value)`. A record that does not decode, or that sits
/// under a key other than its own, is refused as corruption of `store`,
/// naming the key; an error of the scan or of the sink is passed on as it
/// is. A backend that scans a page at a time calls this once a page.
pub(crate) fn feed<K, V>(
    store: &Path,
    records: Records,
    scan: impl IntoIterator<Item = Result<(K, V), StoreError>>,
    sink: &mut dyn LoadSink,
) -> Result<(), StoreError>
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    for item in scan {
        let (key, value) = item?;
        feed_one(store, records, key.as_ref(), value.as_ref(), sink)?;
    }
    Ok(())
}

fn feed_one(
    store: &Path,
    records: Records,
    key: &[u8],
    value: &[u8],
    sink: &mut dyn LoadSink,
) -> Result<(), StoreError> {
    let bad = |detail: &dyn Display| corrupt(store, key, detail);
    let misplaced = |what: &str| bad(&format!("key does not match the {what} it holds"));
    match records {
        Records::Reservations => {
            let record = codec::decode_reservation(value).map_err(|e| bad(&e))?;
            if codec::reservation_key(record.reservation) != key {
                return Err(misplaced("reservation"));
            }
            sink.reservation(record)
        }
        Records::Pairs => {
            let level = codec::decode_pair_key(key).map_err(|e| bad(&e))?;
            let holder = codec::decode_holder(value).map_err(|e| bad(&e))?;
            sink.pair(level, holder)
        }
        Records::Groups => {
            let record = codec::decode_group(value).map_err(|e| bad(&e))?;
            if codec::group_key(&record.key) != key {
                return Err(misplaced("group"));
            }
            sink.group(record)
        }
        Records::Allocations => {
            let record = codec::decode_allocation(value).map_err(|e| bad(&e))?;
            if codec::allocation_key(&record.container_id) != key {
                return Err(misplaced("allocation"));
            }
            sink.allocation(record)
        }
    }
}

/// Decodes a page of allocations that `scan` yields as `(logical key,
/// value)`, refusing one that does not decode as corruption of `store`.
pub(crate) fn decode_allocations<K, V>(
    store: &Path,
    scan: impl IntoIterator<Item = Result<(K, V), StoreError>>,
) -> Result<Vec<AllocationRecord>, StoreError>
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    scan.into_iter()
        .map(|item| {
            let (key, value) = item?;
            codec::decode_allocation(value.as_ref()).map_err(|e| corrupt(store, key.as_ref(), e))
        })
        .collect()
}

/// The record at logical `key` of `store` cannot be trusted, for `detail`.
pub(crate) fn corrupt(store: &Path, key: &[u8], detail: impl Display) -> StoreError {
    StoreError::Corrupt {
        path: store.to_owned(),
        detail: format!("record {}: {detail}", String::from_utf8_lossy(key)),
    }
}

/// The smallest key greater than `key`: where a scan resumes after it.
pub(crate) fn key_after(key: &[u8]) -> Vec<u8> {
    [key, &[0][..]].concat()
}

/// The key just after every key that starts with `prefix`: where a range
/// over the whole prefix ends.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // the whole key space
}

/// The logical keys `[start, end)` of a page of allocations listed in
/// container id order after `after` (from the first one without it).
pub(crate) fn allocation_page(after: Option<&ContainerId>) -> (Vec<u8>, Vec<u8>) {
    let start = match after {
        Some(id) => key_after(&codec::allocation_key(id)),
        None => codec::ALLOCATION_PREFIX.to_vec(),
    };
    (start, prefix_end(codec::ALLOCATION_PREFIX))
}

/// A place in the logical layout where mcsd keeps keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// Every key that starts with these bytes.
    Prefix(&'static [u8]),
    /// This one key.
    Key(&'static [u8]),
}

/// The places every backend keeps; a backend with keys of its own adds
/// them.
pub(crate) const PLACES: [Place; 5] = [
    Place::Prefix(codec::ALLOCATION_PREFIX),
    Place::Prefix(codec::GROUP_PREFIX),
    Place::Key(FORMAT_KEY),
    Place::Prefix(codec::PAIR_PREFIX),
    Place::Prefix(codec::RESERVATION_PREFIX),
];

impl Place {
    /// The first key of the place, and the first key past it.
    fn bounds(self) -> (&'static [u8], Vec<u8>) {
        match self {
            Self::Prefix(prefix) => (prefix, prefix_end(prefix)),
            Self::Key(key) => (key, key_after(key)),
        }
    }
}

/// The logical ranges `[start, end)` between `places`, in key order, where
/// no key of mcsd's lives; an end of `None` is the end of the key space. A
/// key found in one of them is damage or another program's data.
pub(crate) fn gaps(places: impl IntoIterator<Item = Place>) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let mut places: Vec<_> = places.into_iter().map(Place::bounds).collect();
    places.sort();
    let mut gaps = Vec::with_capacity(places.len() + 1);
    let mut start = Vec::new();
    for (first, past) in places {
        debug_assert!(start.as_slice() <= first, "places do not overlap");
        gaps.push((std::mem::replace(&mut start, past), Some(first.to_vec())));
    }
    gaps.push((start, None));
    gaps
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::id::{GroupKey, Owner};
    use crate::level::Level;
    use crate::store::{GroupRecord, Holder, ReservationRecord};

    /// Everything a load fed, in order.
    #[derive(Debug, Default, PartialEq, Eq)]
    struct Fed(Vec<String>);

    impl LoadSink for Fed {
        fn reservation(&mut self, record: ReservationRecord) -> Result<(), StoreError> {
            self.0.push(format!("reservation {}", record.reservation));
            Ok(())
        }
        fn pair(&mut self, level: Level, holder: Holder) -> Result<(), StoreError> {
            self.0.push(format!("pair {level} {holder}"));
            Ok(())
        }
        fn group(&mut self, record: GroupRecord) -> Result<(), StoreError> {
            self.0.push(format!("group {}", record.key));
            Ok(())
        }
        fn allocation(&mut self, record: AllocationRecord) -> Result<(), StoreError> {
            self.0.push(format!("allocation {}", record.container_id));
            Ok(())
        }
    }

    fn allocation(id: &str) -> AllocationRecord {
        AllocationRecord {
            container_id: ContainerId::new(id).unwrap(),
            owner: Owner::new("podman").unwrap(),
            group: None,
            level: "s0:c1,c2".parse().unwrap(),
            process_label: String::new(),
            file_label: String::new(),
            created_at: UNIX_EPOCH,
            roots: Vec::new(),
            node: String::new(),
        }
    }

    fn group(key: &str) -> GroupRecord {
        GroupRecord {
            key: GroupKey::new(key).unwrap(),
            level: "s0:c3,c4".parse().unwrap(),
            members: 1,
            created_at: UNIX_EPOCH,
        }
    }

    fn reservation(text: &str) -> ReservationRecord {
        ReservationRecord {
            reservation: text.parse().unwrap(),
            created_at: UNIX_EPOCH,
            configured_by: None,
        }
    }

    fn store() -> PathBuf {
        PathBuf::from("/state/db")
    }

    /// What loading `(key, value)` as `records` does.
    fn load(records: Records, key: &[u8], value: Vec<u8>) -> Result<Fed, StoreError> {
        let mut fed = Fed::default();
        feed(&store(), records, [Ok((key, value))], &mut fed)?;
        Ok(fed)
    }

    /// The detail of the corruption loading `(key, value)` reports.
    fn refusal(records: Records, key: &[u8], value: Vec<u8>) -> String {
        match load(records, key, value) {
            Err(StoreError::Corrupt { path, detail }) => {
                assert_eq!(path, store());
                detail
            }
            other => panic!("{} not refused as corrupt: {other:?}", key.escape_ascii()),
        }
    }

    #[test]
    fn records_under_their_own_keys_are_fed_in_order() {
        let level: Level = "s0:c3,c4".parse().unwrap();
        let holder = Holder::Group(GroupKey::new("pod").unwrap());
        let r = reservation("c5");
        /// What one prefix's scan yields.
        type Scan = Vec<(Vec<u8>, Vec<u8>)>;
        let scans: [(Records, Scan); 4] = [
            (
                Records::Reservations,
                vec![(
                    codec::reservation_key(r.reservation),
                    codec::encode_reservation(&r),
                )],
            ),
            (
                Records::Pairs,
                vec![(codec::pair_key(level), codec::encode_holder(&holder))],
            ),
            (
                Records::Groups,
                vec![(
                    codec::group_key(&group("pod").key),
                    codec::encode_group(&group("pod")),
                )],
            ),
            (
                Records::Allocations,
                ["x", "y"]
                    .map(|id| {
                        let a = allocation(id);
                        (
                            codec::allocation_key(&a.container_id),
                            codec::encode_allocation(&a),
                        )
                    })
                    .to_vec(),
            ),
        ];
        assert_eq!(
            scans
                .iter()
                .map(|(records, _)| *records)
                .collect::<Vec<_>>(),
            Records::LOAD_ORDER
        );
        let mut fed = Fed::default();
        for (records, scan) in scans {
            assert!(scan.iter().all(|(k, _)| k.starts_with(records.prefix())));
            feed(&store(), records, scan.into_iter().map(Ok), &mut fed).unwrap();
        }
        assert_eq!(
            fed.0,
            [
                "reservation c5",
                "pair s0:c3,c4 group pod",
                "group pod",
                "allocation x",
                "allocation y"
            ]
        );
    }

    #[test]
    fn a_record_under_another_key_is_refused_naming_the_key() {
        let value = codec::encode_reservation(&reservation("c5"));
        assert_eq!(
            refusal(Records::Reservations, b"r/c6", value),
            "record r/c6: key does not match the reservation it holds"
        );
        let value = codec::encode_group(&group("pod"));
        assert_eq!(
            refusal(Records::Groups, b"g/other", value),
            "record g/other: key does not match the group it holds"
        );
        let value = codec::encode_allocation(&allocation("x"));
        assert_eq!(
            refusal(Records::Allocations, b"a/y", value),
            "record a/y: key does not match the allocation it holds"
        );
    }

    #[test]
    fn an_undecodable_value_is_refused_naming_the_key() {
        let garbage = || b"\xff\xff garbage".to_vec();
        for (records, key) in [
            (Records::Reservations, &b"r/c5"[..]),
            (Records::Pairs, b"p/\x00\x03\x00\x04"),
            (Records::Groups, b"g/pod"),
            (Records::Allocations, b"a/keep"),
        ] {
            let detail = refusal(records, key, garbage());
            let name = String::from_utf8_lossy(key);
            assert!(detail.starts_with(&format!("record {name}: ")), "{detail}");
            assert!(detail.contains("undecodable"), "{detail}");
        }
        // A value that decodes but is not valid is refused too.
        let holder = codec::encode_holder(&Holder::Container(ContainerId::new("x").unwrap()));
        let mut unknown_kind = holder.clone();
        unknown_kind[1] = 7;
        assert_eq!(
            refusal(Records::Pairs, b"p/\x00\x03\x00\x04", unknown_kind),
            "record p/\0\u{3}\0\u{4}: unknown holder kind 7"
        );
    }

    #[test]
    fn a_truncated_or_impossible_pair_key_is_refused() {
        let holder = || codec::encode_holder(&Holder::Container(ContainerId::new("x").unwrap()));
        assert_eq!(
            refusal(Records::Pairs, b"p/\x00\x03", holder()),
            "record p/\0\u{3}: pair key is not p/ followed by 4 bytes"
        );
        assert_eq!(
            refusal(Records::Pairs, b"p/\x00\x04\x00\x03", holder()),
            "record p/\0\u{4}\0\u{3}: pair c4,c3 is not in ascending order"
        );
    }

    #[test]
    fn errors_of_the_scan_and_of_the_sink_pass_unchanged() {
        let failed = StoreError::Io {
            path: store(),
            detail: "read failed".into(),
        };
        let scan: [Result<(&[u8], &[u8]), _>; 1] = [Err(failed.clone())];
        let err = feed(&store(), Records::Groups, scan, &mut Fed::default()).unwrap_err();
        assert_eq!(err, failed);

        struct Full;
        impl LoadSink for Full {
            fn reservation(&mut self, _: ReservationRecord) -> Result<(), StoreError> {
                unreachable!()
            }
            fn pair(&mut self, _: Level, _: Holder) -> Result<(), StoreError> {
                unreachable!()
            }
            fn group(&mut self, _: GroupRecord) -> Result<(), StoreError> {
                Err(StoreError::Conflict("full".into()))
            }
            fn allocation(&mut self, _: AllocationRecord) -> Result<(), StoreError> {
                unreachable!()
            }
        }
        let g = group("pod");
        let scan = [Ok((codec::group_key(&g.key), codec::encode_group(&g)))];
        let err = feed(&store(), Records::Groups, scan, &mut Full).unwrap_err();
        assert_eq!(err, StoreError::Conflict("full".into()));
    }

    #[test]
    fn a_page_of_allocations_is_decoded_and_a_damaged_one_named() {
        let a = allocation("x");
        let page = [Ok((
            codec::allocation_key(&a.container_id),
            codec::encode_allocation(&a),
        ))];
        assert_eq!(decode_allocations(&store(), page).unwrap(), vec![a]);
        let page = [Ok((b"a/y".to_vec(), b"\xff".to_vec()))];
        match decode_allocations(&store(), page).unwrap_err() {
            StoreError::Corrupt { detail, .. } => {
                assert!(
                    detail.starts_with("record a/y: undecodable allocation"),
                    "{detail}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn prefix_end_is_the_first_key_after_the_prefix() {
        assert_eq!(prefix_end(b"/mcsd/"), b"/mcsd0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn a_page_starts_just_after_the_id_and_ends_with_the_prefix() {
        assert_eq!(allocation_page(None), (b"a/".to_vec(), b"a0".to_vec()));
        let id = ContainerId::new("abc").unwrap();
        let (start, end) = allocation_page(Some(&id));
        assert_eq!(
            (start.as_slice(), end.as_slice()),
            (&b"a/abc\0"[..], &b"a0"[..])
        );
        // The next id in order is on the page; the one asked is not.
        assert!(start.as_slice() > &b"a/abc"[..] && start.as_slice() <= &b"a/abc0"[..]);
        assert_eq!(key_after(b"k"), b"k\0");
    }

    #[test]
    fn the_gaps_lie_between_the_places_in_key_order() {
        let found = gaps(PLACES);
        let expected: [(&[u8], Option<&[u8]>); 6] = [
            (b"", Some(b"a/")),
            (b"a0", Some(b"g/")),
            (b"g0", Some(b"meta/format")),
            (b"meta/format\0", Some(b"p/")),
            (b"p0", Some(b"r/")),
            (b"r0", None),
        ];
        assert_eq!(found.len(), expected.len());
        for ((start, end), (want_start, want_end)) in found.iter().zip(expected) {
            assert_eq!(start.as_slice(), want_start);
            assert_eq!(end.as_deref(), want_end);
        }
        // A backend's own key goes where it sorts.
        let with_range = gaps(PLACES.into_iter().chain([Place::Key(b"meta/range")]));
        assert_eq!(with_range.len(), 7);
        assert_eq!(
            with_range[2],
            (b"g0".to_vec(), Some(b"meta/format".to_vec()))
        );
        assert_eq!(
            with_range[3],
            (b"meta/format\0".to_vec(), Some(b"meta/range".to_vec()))
        );
        assert_eq!(
            with_range[4],
            (b"meta/range\0".to_vec(), Some(b"p/".to_vec()))
        );
    }
}
