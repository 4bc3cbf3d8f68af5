//! On-disk encoding shared by the backends: keys and protobuf-encoded values.
//!
//! Values are protobuf messages declared here by hand (not generated from
//! the public API) so the storage format belongs to the domain and evolves
//! on its own terms: new fields get new tags and old records still decode.
//! A breaking change bumps [`FORMAT_VERSION`], which stores record under
//! [`FORMAT_KEY`]; mcsd refuses to open a store with a version it does not know.
//!
//! Decoding re-validates everything (ids, levels, reservations), so a damaged
//! record is reported as corruption, naming its key, instead of being trusted.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;

use super::{AllocationRecord, GroupRecord, Holder, RelabeledRoot, ReservationRecord};
use crate::id::{ContainerId, GroupKey, Owner};
use crate::level::{Category, Level};
use crate::reservation::Reservation;

/// The storage format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Key of the format version record.
pub const FORMAT_KEY: &[u8] = b"meta/format";
/// Prefix of allocation records.
pub const ALLOCATION_PREFIX: &[u8] = b"a/";
/// Prefix of group records.
pub const GROUP_PREFIX: &[u8] = b"g/";
/// Prefix of pair holder records.
pub const PAIR_PREFIX: &[u8] = b"p/";
/// Prefix of reservation records.
pub const RESERVATION_PREFIX: &[u8] = b"r/";

fn key(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + rest.len());
    key.extend_from_slice(prefix);
    key.extend_from_slice(rest);
    key
}

/// Key of a container's allocation.
pub fn allocation_key(id: &ContainerId) -> Vec<u8> {
    key(ALLOCATION_PREFIX, id.as_str().as_bytes())
}

/// Key of a group.
pub fn group_key(group: &GroupKey) -> Vec<u8> {
    key(GROUP_PREFIX, group.as_str().as_bytes())
}

/// Key of a pair: both category numbers big-endian, so keys sort by pair.
pub fn pair_key(level: Level) -> Vec<u8> {
    let mut rest = [0u8; 4];
    rest[..2].copy_from_slice(&level.low().number().to_be_bytes());
    rest[2..].copy_from_slice(&level.high().number().to_be_bytes());
    key(PAIR_PREFIX, &rest)
}

/// Key of a reservation: its canonical text.
pub fn reservation_key(reservation: Reservation) -> Vec<u8> {
    key(RESERVATION_PREFIX, reservation.to_string().as_bytes())
}

/// Why a stored value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(String);

fn bad(what: impl Into<String>) -> DecodeError {
    DecodeError(what.into())
}

/// Decodes a pair key back into its level.
pub fn decode_pair_key(key: &[u8]) -> Result<Level, DecodeError> {
    let rest = key
        .strip_prefix(PAIR_PREFIX)
        .filter(|r| r.len() == 4)
        .ok_or_else(|| bad("pair key is not p/ followed by 4 bytes"))?;
    let low = u16::from_be_bytes([rest[0], rest[1]]);
    let high = u16::from_be_bytes([rest[2], rest[3]]);
    level(u32::from(low), u32::from(high))
}

fn level(low: u32, high: u32) -> Result<Level, DecodeError> {
    let cat = |n: u32| {
        u16::try_from(n)
            .ok()
            .and_then(Category::new)
            .ok_or_else(|| bad(format!("category c{n} is out of bounds")))
    };
    Level::new(cat(low)?, cat(high)?)
        .ok_or_else(|| bad(format!("pair c{low},c{high} is not in ascending order")))
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

#[derive(Clone, PartialEq, Message)]
struct AllocationV1 {
    #[prost(string, tag = "1")]
    container_id: String,
    #[prost(string, tag = "2")]
    owner: String,
    #[prost(string, tag = "3")]
    group: String,
    #[prost(uint32, tag = "4")]
    low: u32,
    #[prost(uint32, tag = "5")]
    high: u32,
    #[prost(string, tag = "6")]
    process_label: String,
    #[prost(string, tag = "7")]
    file_label: String,
    #[prost(int64, tag = "8")]
    created_at_ms: i64,
    #[prost(string, tag = "9")]
    node: String,
    #[prost(message, repeated, tag = "10")]
    roots: Vec<RootV1>,
}

#[derive(Clone, PartialEq, Message)]
struct RootV1 {
    /// Raw bytes: paths need not be UTF-8.
    #[prost(bytes = "vec", tag = "1")]
    path: Vec<u8>,
    #[prost(bool, tag = "2")]
    shared: bool,
    #[prost(string, optional, tag = "3")]
    original: Option<String>,
    #[prost(bool, tag = "4")]
    hard_links: bool,
}

#[derive(Clone, PartialEq, Message)]
struct GroupV1 {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(uint32, tag = "2")]
    low: u32,
    #[prost(uint32, tag = "3")]
    high: u32,
    #[prost(uint32, tag = "4")]
    members: u32,
    #[prost(int64, tag = "5")]
    created_at_ms: i64,
}

#[derive(Clone, PartialEq, Message)]
struct HolderV1 {
    /// 1 = container, 2 = group.
    #[prost(uint32, tag = "1")]
    kind: u32,
    #[prost(string, tag = "2")]
    name: String,
}

#[derive(Clone, PartialEq, Message)]
struct ReservationV1 {
    #[prost(string, tag = "1")]
    target: String,
    #[prost(int64, tag = "2")]
    created_at_ms: i64,
    /// Node whose configuration holds it; empty for an operator's.
    #[prost(string, tag = "3")]
    configured_by: String,
}

/// Encodes an allocation record.
pub fn encode_allocation(r: &AllocationRecord) -> Vec<u8> {
    AllocationV1 {
        container_id: r.container_id.to_string(),
        owner: r.owner.to_string(),
        group: r
            .group
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        low: u32::from(r.level.low().number()),
        high: u32::from(r.level.high().number()),
        process_label: r.process_label.clone(),
        file_label: r.file_label.clone(),
        created_at_ms: millis(r.created_at),
        node: r.node.clone(),
        roots: r
            .roots
            .iter()
            .map(|root| RootV1 {
                path: root.path.as_os_str().as_bytes().to_vec(),
                shared: root.shared,
                original: root.original.clone(),
                hard_links: root.hard_links,
            })
            .collect(),
    }
    .encode_to_vec()
}

/// Decodes and validates an allocation record.
pub fn decode_allocation(bytes: &[u8]) -> Result<AllocationRecord, DecodeError> {
    let m = AllocationV1::decode(bytes).map_err(|e| bad(format!("undecodable allocation: {e}")))?;
    let group = if m.group.is_empty() {
        None
    } else {
        Some(GroupKey::new(m.group).map_err(|e| bad(e.to_string()))?)
    };
    Ok(AllocationRecord {
        container_id: ContainerId::new(m.container_id).map_err(|e| bad(e.to_string()))?,
        owner: Owner::new(m.owner).map_err(|e| bad(e.to_string()))?,
        group,
        level: level(m.low, m.high)?,
        process_label: m.process_label,
        file_label: m.file_label,
        created_at: time(m.created_at_ms),
        node: m.node,
        roots: m
            .roots
            .into_iter()
            .map(|root| {
                let path = PathBuf::from(OsString::from_vec(root.path));
                if !path.is_absolute() {
                    return Err(bad(format!(
                        "relabeled root {} is not absolute",
                        path.display()
                    )));
                }
                Ok(RelabeledRoot {
                    path,
                    shared: root.shared,
                    original: root.original,
                    hard_links: root.hard_links,
                })
            })
            .collect::<Result<_, _>>()?,
    })
}

/// Encodes a group record.
pub fn encode_group(g: &GroupRecord) -> Vec<u8> {
    GroupV1 {
        key: g.key.to_string(),
        low: u32::from(g.level.low().number()),
        high: u32::from(g.level.high().number()),
        members: g.members,
        created_at_ms: millis(g.created_at),
    }
    .encode_to_vec()
}

/// Decodes and validates a group record.
pub fn decode_group(bytes: &[u8]) -> Result<GroupRecord, DecodeError> {
    let m = GroupV1::decode(bytes).map_err(|e| bad(format!("undecodable group: {e}")))?;
    Ok(GroupRecord {
        key: GroupKey::new(m.key).map_err(|e| bad(e.to_string()))?,
        level: level(m.low, m.high)?,
        members: m.members,
        created_at: time(m.created_at_ms),
    })
}

/// Encodes a pair holder.
pub fn encode_holder(h: &Holder) -> Vec<u8> {
    let (kind, name) = match h {
        Holder::Container(id) => (1, id.to_string()),
        Holder::Group(key) => (2, key.to_string()),
    };
    HolderV1 { kind, name }.encode_to_vec()
}

/// Decodes and validates a pair holder.
pub fn decode_holder(bytes: &[u8]) -> Result<Holder, DecodeError> {
    let m = HolderV1::decode(bytes).map_err(|e| bad(format!("undecodable holder: {e}")))?;
    match m.kind {
        1 => Ok(Holder::Container(
            ContainerId::new(m.name).map_err(|e| bad(e.to_string()))?,
        )),
        2 => Ok(Holder::Group(
            GroupKey::new(m.name).map_err(|e| bad(e.to_string()))?,
        )),
        other => Err(bad(format!("unknown holder kind {other}"))),
    }
}

/// Encodes a reservation record.
pub fn encode_reservation(r: &ReservationRecord) -> Vec<u8> {
    ReservationV1 {
        target: r.reservation.to_string(),
        created_at_ms: millis(r.created_at),
        configured_by: r.configured_by.clone().unwrap_or_default(),
    }
    .encode_to_vec()
}

/// Decodes and validates a reservation record.
pub fn decode_reservation(bytes: &[u8]) -> Result<ReservationRecord, DecodeError> {
    let m =
        ReservationV1::decode(bytes).map_err(|e| bad(format!("undecodable reservation: {e}")))?;
    Ok(ReservationRecord {
        reservation: m
            .target
            .parse()
            .map_err(|e: crate::level::LevelError| bad(e.to_string()))?,
        created_at: time(m.created_at_ms),
        configured_by: Some(m.configured_by).filter(|node| !node.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AllocationRecord {
        AllocationRecord {
            container_id: ContainerId::new("abc").unwrap(),
            owner: Owner::new("podman").unwrap(),
            group: Some(GroupKey::new("pod1").unwrap()),
            level: "s0:c3,c700".parse().unwrap(),
            process_label: "system_u:system_r:container_t:s0:c3,c700".into(),
            file_label: "system_u:object_r:container_file_t:s0:c3,c700".into(),
            created_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            node: "host-a".into(),
            roots: vec![
                RelabeledRoot {
                    path: PathBuf::from(OsString::from_vec(b"/srv/vol\xff".to_vec())),
                    shared: false,
                    original: Some("system_u:object_r:var_t:s0".into()),
                    hard_links: true,
                },
                RelabeledRoot {
                    path: "/srv/shared".into(),
                    shared: true,
                    original: None,
                    hard_links: false,
                },
            ],
        }
    }

    #[test]
    fn records_round_trip() {
        let r = record();
        assert_eq!(decode_allocation(&encode_allocation(&r)).unwrap(), r);
        let g = GroupRecord {
            key: GroupKey::new("pod1").unwrap(),
            level: r.level,
            members: 3,
            created_at: r.created_at,
        };
        assert_eq!(decode_group(&encode_group(&g)).unwrap(), g);
        for h in [r.holder(), Holder::Container(r.container_id.clone())] {
            assert_eq!(decode_holder(&encode_holder(&h)).unwrap(), h);
        }
        let res = ReservationRecord {
            reservation: "c5".parse().unwrap(),
            created_at: r.created_at,
            configured_by: None,
        };
        assert_eq!(decode_reservation(&encode_reservation(&res)).unwrap(), res);
        let configured = ReservationRecord {
            configured_by: Some("node-a".into()),
            ..res
        };
        assert_eq!(
            decode_reservation(&encode_reservation(&configured)).unwrap(),
            configured
        );
        assert_eq!(decode_pair_key(&pair_key(r.level)).unwrap(), r.level);
    }

    #[test]
    fn records_from_before_nodes_decode_without_one() {
        let old = AllocationV1 {
            container_id: "x".into(),
            owner: "o".into(),
            low: 1,
            high: 2,
            ..Default::default()
        };
        assert_eq!(decode_allocation(&old.encode_to_vec()).unwrap().node, "");
    }

    #[test]
    fn damaged_values_are_refused_not_trusted() {
        let mut bytes = encode_allocation(&record());
        bytes.truncate(bytes.len() / 2);
        assert!(decode_allocation(&bytes).is_err());
        let bad_level = AllocationV1 {
            container_id: "x".into(),
            owner: "o".into(),
            low: 9,
            high: 1,
            ..Default::default()
        };
        let err = decode_allocation(&bad_level.encode_to_vec()).unwrap_err();
        assert!(err.to_string().contains("ascending"), "{err}");
        let bad_id = AllocationV1 {
            container_id: "a/b".into(),
            owner: "o".into(),
            low: 1,
            high: 2,
            ..Default::default()
        };
        assert!(decode_allocation(&bad_id.encode_to_vec()).is_err());
        let relative_root = AllocationV1 {
            container_id: "x".into(),
            owner: "o".into(),
            low: 1,
            high: 2,
            roots: vec![RootV1 {
                path: b"srv/vol".to_vec(),
                shared: false,
                original: None,
                hard_links: false,
            }],
            ..Default::default()
        };
        let err = decode_allocation(&relative_root.encode_to_vec()).unwrap_err();
        assert!(err.to_string().contains("not absolute"), "{err}");
        assert!(decode_holder(
            &HolderV1 {
                kind: 7,
                name: "x".into()
            }
            .encode_to_vec()
        )
        .is_err());
        assert!(decode_pair_key(b"p/\x04\x00\x00\x01").is_err());
        assert!(decode_pair_key(b"p/\x00").is_err());
    }
}
