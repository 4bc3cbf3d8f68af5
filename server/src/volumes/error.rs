//! Why a relabel or a release with restore failed, in words that say what
//! to do about it.

use std::path::PathBuf;

use crate::error::AllocError;
use crate::id::ContainerId;
use crate::relabel::{Outcome, Refused, RelabelError};

/// Why a relabel or a release with restore failed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The container holds no allocation.
    #[error("container {0} holds no allocation; allocate a label before relabeling its volumes")]
    NoAllocation(ContainerId),
    /// The root is refused.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The walk could not run.
    #[error(transparent)]
    Relabel(#[from] RelabelError),
    /// The label domain failed (store, ...).
    #[error(transparent)]
    Alloc(#[from] AllocError),
    /// The root is on a mount that is read-only for mcsd: not one entry
    /// could be labeled, so the relabel is refused before it starts.
    #[error("cannot relabel {}: it is read-only for mcsd (a read-only mount). Under systemd every path outside mcsd.service's ReadWritePaths= is (ProtectSystem=strict): add the volume root there (systemctl edit mcsd.service: [Service] ReadWritePaths=...) as well as to [relabel] allowlist, and restart mcsd", .0.display())]
    ReadOnly(PathBuf),
    /// Some entries could not be labeled.
    #[error("relabel of {} incomplete: {} of {} entries could not be labeled{}", .0.root.display(), .0.totals.failed, .0.totals.seen, first_errors(.0))]
    Incomplete(Box<Outcome>),
    /// The allocation belongs to another host sharing the store: its
    /// volumes are paths on that host, so only that host's mcsd may label
    /// or restore them.
    #[error("container {id} was allocated on node {node:?}, not this one ({here:?}); {action} through the mcsd on {node:?}: its volumes are paths on that host")]
    OtherNode {
        /// The container.
        id: ContainerId,
        /// The node that made the allocation.
        node: String,
        /// This node.
        here: String,
        /// What to do there.
        action: &'static str,
    },
    /// A release of the container stopped the walk.
    #[error("relabel of {} for container {id} stopped: the container is being released (its volumes are restored instead)", .root.display())]
    Cancelled {
        /// The container.
        id: ContainerId,
        /// The root.
        root: PathBuf,
    },
    /// A root could not be restored; the pair stays held.
    #[error("container {id} was not released: restoring {} failed ({error}); its files may still carry {level}, so the pair stays held. Fix the cause and release again, or set restore = \"none\"", .path.display())]
    RestoreFailed {
        /// The container.
        id: ContainerId,
        /// Its level.
        level: String,
        /// The root.
        path: PathBuf,
        /// What went wrong.
        error: String,
    },
}

/// Whether `path` is on a mount this process may not write (statvfs
/// `ST_RDONLY`, which reflects a read-only bind mount too).
pub(super) fn read_only(path: &std::path::Path) -> bool {
    rustix::fs::statvfs(path)
        .map(|s| s.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
        .unwrap_or(false)
}

pub(super) fn first_errors(o: &Outcome) -> String {
    if o.errors.is_empty() {
        return String::new();
    }
    let list: Vec<String> = o
        .errors
        .iter()
        .take(3)
        .map(|e| format!("{}: {}", e.path.display(), e.error))
        .collect();
    format!("; first: {}", list.join("; "))
}
