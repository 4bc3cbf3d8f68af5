//! Labels already in use: the MCS levels of processes that run now.
//!
//! A container started before mcsd (or by a runtime that does not use it)
//! already runs with some pair; handing that pair out again would let a new
//! container read its files. At start mcsd reads every process's context
//! from `/proc/<pid>/attr/current`, and holds each pair it finds as
//! `pid:<n>` with owner `running`. Pairs held that way by a previous start
//! are released when no process uses them any more.
//!
//! The scan is a function over a directory so tests can feed it a made-up
//! `/proc` (on a kernel without SELinux, `attr/current` is unreadable).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::context::level_of_context;
use crate::engine::{AllocateRequest, ListFilter};
use crate::error::AllocError;
use crate::id::{ContainerId, Owner};
use crate::level::Level;
use crate::volumes::{VolumeError, Volumes};

/// The owner of pairs held on behalf of running processes.
pub const RUNNING_OWNER: &str = "running";

/// Levels in use, each with the lowest pid using it.
pub type InUse = BTreeMap<Level, u32>;

/// Scans `proc_root` (normally `/proc`) for processes running at a pair.
/// Processes that vanish or cannot be read are skipped: the scan is a best
/// effort at start-up, never a reason not to start.
pub fn scan(proc_root: &Path) -> std::io::Result<InUse> {
    let mut found = InUse::new();
    for entry in std::fs::read_dir(proc_root)? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let path = entry.path().join("attr").join("current");
        let Ok(context) = std::fs::read(&path) else {
            continue;
        };
        if let Some(level) = level_of_context(&String::from_utf8_lossy(&context)) {
            found
                .entry(level)
                .and_modify(|p| *p = (*p).min(pid))
                .or_insert(pid);
        }
    }
    Ok(found)
}

/// What [`adopt`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Adopted {
    /// Pairs newly held for running processes.
    pub held: Vec<(Level, u32)>,
    /// Pairs newly held for stored (existing, not running) containers,
    /// with the holder id.
    pub held_stored: Vec<(Level, String)>,
    /// Pairs in use that mcsd had already handed out (the usual case).
    pub already_allocated: u64,
    /// Pairs in use that a reservation or the range keeps out of allocation.
    pub not_allocatable: u64,
    /// Pairs held for processes that no longer run, now released.
    pub released: Vec<Level>,
    /// Pairs of processes that are gone, kept because a volume relabeled
    /// for them could not be restored, with the reason.
    pub kept: Vec<(Level, String)>,
}

/// The id a stored container's level is held under: `stored:<id>`.
pub fn stored_holder(record_id: &str) -> String {
    let clean: String = record_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
        .take(100)
        .collect();
    format!("stored:{clean}")
}

/// Makes the engine hold every pair in `in_use` and in `stored` (levels
/// recorded by containers that exist but do not run, held as
/// `stored:<record id>`), and releases pairs held for processes or records
/// that are gone (restoring any volume relabeled for them first, as every
/// release does).
pub async fn adopt(
    volumes: &Volumes,
    in_use: &InUse,
    stored: &crate::stored::Stored,
) -> Result<Adopted, AllocError> {
    let engine = volumes.engine();
    let owner = Owner::new(RUNNING_OWNER).expect("a valid owner");
    let mut adopted = Adopted::default();

    // Previous starts' holds: keep those whose level is still in use.
    // Only this host's: its processes are the ones scanned.
    let filter = ListFilter {
        owner: Some(owner.clone()),
        group: None,
        node: Some(engine.node().to_owned()),
    };
    let mut still_held = BTreeSet::new();
    // Listing filters a scan of every allocation: skip it when the engine
    // counts none of ours (restart at full pool: ~1 s saved).
    let stats = engine.stats().await?;
    let any = stats.owners.iter().any(|(o, n)| *o == owner && *n > 0);
    let mut after = None;
    loop {
        if !any {
            break;
        }
        let page = engine.list_page(&filter, after.as_ref()).await?;
        for record in page.records {
            if in_use.contains_key(&record.level) || stored.contains_key(&record.level) {
                still_held.insert(record.level);
            } else {
                match volumes.release(record.container_id.clone()).await {
                    Ok((released, _)) if released.record.is_some() => {
                        adopted.released.push(record.level)
                    }
                    Ok(_) => {}
                    Err(VolumeError::Alloc(e)) => return Err(e),
                    // Kept: its volumes may still carry the pair.
                    Err(e) => {
                        tracing::warn!(container_id = %record.container_id, error = %e,
                            "kept the pair of a process that is gone: its volumes could not be restored");
                        adopted.kept.push((record.level, e.to_string()));
                    }
                }
            }
        }
        after = page.next;
        if after.is_none() {
            break;
        }
    }

    let holders = in_use
        .iter()
        .map(|(&level, &pid)| (level, format!("pid:{pid}"), true))
        .chain(
            stored
                .iter()
                .filter(|(level, _)| !in_use.contains_key(level))
                .map(|(&level, id)| (level, stored_holder(id), false)),
        );
    for (level, holder, running) in holders {
        if still_held.contains(&level) {
            continue;
        }
        let request = |id: String| AllocateRequest {
            container_id: ContainerId::new(id).expect("a valid id"),
            owner: owner.clone(),
            group: None,
            level: Some(level),
        };
        let mut result = engine.allocate(request(holder.clone())).await;
        if let Err(AllocError::IdConflict { .. }) = result {
            // A recycled pid whose previous level is still in use by others:
            // hold this level under a name that also says which it is.
            let (low, high) = (level.low(), level.high());
            result = engine
                .allocate(request(format!("{holder}:{low}.{high}")))
                .await;
        }
        match result {
            Ok(a) if a.created && running => adopted.held.push((level, pid_of(&holder))),
            Ok(a) if a.created => adopted.held_stored.push((level, holder)),
            Ok(_) | Err(AllocError::LevelHeld { .. }) | Err(AllocError::GroupLevel { .. }) => {
                adopted.already_allocated += 1
            }
            Err(AllocError::LevelReserved { .. }) | Err(AllocError::OutOfRange { .. }) => {
                adopted.not_allocatable += 1
            }
            Err(e) => return Err(e),
        }
    }
    Ok(adopted)
}

fn pid_of(holder: &str) -> u32 {
    holder
        .strip_prefix("pid:")
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_reads_a_proc_tree_and_keeps_the_lowest_pid_per_level() {
        let proc = tempfile::tempdir().unwrap();
        let process = |pid: &str, context: Option<&str>| {
            let dir = proc.path().join(pid).join("attr");
            std::fs::create_dir_all(&dir).unwrap();
            if let Some(c) = context {
                std::fs::write(dir.join("current"), c).unwrap();
            }
        };
        process("1", Some("system_u:system_r:init_t:s0\0"));
        process("300", Some("system_u:system_r:container_t:s0:c5,c6\0"));
        process("200", Some("system_u:system_r:container_t:s0:c5,c6\0"));
        process("400", Some("system_u:system_r:container_t:s0:c1,c1023\0"));
        process("500", None); // unreadable, as without SELinux
        process("self", Some("system_u:system_r:container_t:s0:c8,c9\0"));
        std::fs::write(proc.path().join("uptime"), "1 2").unwrap();
        let found = scan(proc.path()).unwrap();
        let found: Vec<(String, u32)> =
            found.into_iter().map(|(l, p)| (l.to_string(), p)).collect();
        assert_eq!(
            found,
            [
                ("s0:c1,c1023".to_owned(), 400),
                ("s0:c5,c6".to_owned(), 200)
            ]
        );
    }
}
