//! The records mcsd stores, as the rest of the daemon sees them: one
//! container's allocation, a group, a pair's holder, a reservation.

use std::fmt;
use std::time::SystemTime;

use crate::id::{ContainerId, GroupKey, Owner};
use crate::level::Level;
use crate::reservation::Reservation;

/// The current time at the precision records are stored with
/// (milliseconds), so what a reply says equals what a later read returns.
pub fn now() -> SystemTime {
    let since = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    std::time::UNIX_EPOCH + std::time::Duration::from_millis(since.as_millis() as u64)
}

/// One container's allocation, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationRecord {
    /// The container.
    pub container_id: ContainerId,
    /// Who asked for it.
    pub owner: Owner,
    /// The pod it belongs to, if any.
    pub group: Option<GroupKey>,
    /// The pair it holds (shared with its group, if any).
    pub level: Level,
    /// Process context handed out, level included.
    pub process_label: String,
    /// File context handed out, level included.
    pub file_label: String,
    /// When the allocation was made.
    pub created_at: SystemTime,
    /// Trees relabeled for this container, restored on release.
    pub roots: Vec<RelabeledRoot>,
    /// The host whose mcsd made the allocation (empty in records written
    /// before nodes were recorded).
    pub node: String,
}

/// A tree relabeled for a container, recorded before the walk starts so a
/// crash mid-walk still leaves it to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelabeledRoot {
    /// The resolved root directory.
    pub path: std::path::PathBuf,
    /// Labeled with the shared label (level `s0`) rather than the private one.
    pub shared: bool,
    /// The root's label before its first relabel; `None` if it had none.
    pub original: Option<String>,
    /// Some relabel of it labeled hard-linked files whose other links may
    /// be outside the tree (the opt-in); restore then does the same, so
    /// that no file keeps the pair once it is freed.
    pub hard_links: bool,
}

impl AllocationRecord {
    /// Who holds this record's pair: the group if it has one, else itself.
    pub fn holder(&self) -> Holder {
        match &self.group {
            Some(group) => Holder::Group(group.clone()),
            None => Holder::Container(self.container_id.clone()),
        }
    }
}

/// Who holds a pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Holder {
    /// A single container.
    Container(ContainerId),
    /// A group of containers.
    Group(GroupKey),
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holder::Container(id) => write!(f, "container {id}"),
            Holder::Group(key) => write!(f, "group {key}"),
        }
    }
}

/// A group (pod) and the pair its members share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    /// The group key.
    pub key: GroupKey,
    /// The shared pair.
    pub level: Level,
    /// Live members; the pair is freed when this drops to zero.
    pub members: u32,
    /// When the group was created.
    pub created_at: SystemTime,
}

/// An operator reservation, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationRecord {
    /// What is reserved.
    pub reservation: Reservation,
    /// When it was made.
    pub created_at: SystemTime,
    /// The node whose configuration file (`reservations` in mcsd.toml)
    /// holds it, so that node's next start can drop it once the file no
    /// longer does; `None` for one made with `mcsctl reserve` (and for
    /// records written before mcsd recorded this), which only an operator
    /// removes.
    pub configured_by: Option<String>,
}
