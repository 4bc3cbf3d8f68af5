//! What mcsd takes over at start, before any client can ask: the pairs
//! running and stored containers use, and the reservations the
//! configuration lists.

use std::path::Path;

use super::DaemonError;
use crate::config::Config;
use crate::engine::Engine;
use crate::error::AllocError;
use crate::inuse;
use crate::volumes::Volumes;

/// Holds the pairs running processes use, before any client can ask for
/// one. A scan that cannot read the process table is logged, not fatal:
/// mcsd is still the better allocator without it.
pub(super) async fn adopt_running(volumes: &Volumes, config: &Config) -> Result<(), DaemonError> {
    let proc_root = &config.proc_root;
    let in_use = match inuse::scan(proc_root) {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(proc = %proc_root.display(), error = %e, "cannot scan running processes for labels in use");
            return Ok(());
        }
    };
    // Containers that exist but do not run get their stored label back at
    // the next start: their levels are in use too. A store that cannot be
    // read is logged and skipped, as the process scan is.
    let mut stored = crate::stored::Stored::new();
    type Scan = fn(&Path) -> Result<crate::stored::Stored, String>;
    let scans: [(&Path, Scan); 2] = [
        (
            &config.containers_storage,
            crate::stored::containers_storage,
        ),
        (&config.docker_root, crate::stored::docker),
    ];
    for (root, scan) in scans {
        match scan(root) {
            Ok(found) => {
                for (level, id) in found {
                    stored.entry(level).or_insert(id);
                }
            }
            Err(e) => {
                tracing::warn!(root = %root.display(), error = %e, "cannot read stored containers' labels")
            }
        }
    }
    let adopted = inuse::adopt(volumes, &in_use, &stored)
        .await
        .map_err(DaemonError::Adopt)?;
    for (level, pid) in &adopted.held {
        tracing::info!(%level, pid, "pair in use by a running process; held as owner running");
    }
    for (level, holder) in &adopted.held_stored {
        tracing::info!(%level, holder, "pair recorded by a stored container; held as owner running");
    }
    tracing::info!(
        levels_in_use = in_use.len(),
        levels_stored = stored.len(),
        newly_held = adopted.held.len(),
        already_allocated = adopted.already_allocated,
        not_allocatable = adopted.not_allocatable,
        released_gone = adopted.released.len(),
        "scanned running processes for labels in use"
    );
    Ok(())
}

/// Makes the configured reservations in the store those the file lists now,
/// as a reload does: each listed one is reserved (marked as this node's
/// configuration's), and each this node's configuration made earlier but no
/// longer lists (removed while mcsd was down) is removed. Reservations made
/// with `mcsctl reserve`, and those another node's configuration holds,
/// stay.
pub(super) async fn reconcile_reservations(
    engine: &Engine,
    configured: &[crate::reservation::Reservation],
) -> Result<(), AllocError> {
    for reservation in configured {
        let r = engine.reserve_configured(*reservation).await?;
        if r.created {
            tracing::info!(%reservation, covered = r.covered, "reserved by the configuration");
        }
    }
    for record in engine.reservations().await? {
        let reservation = record.reservation;
        if record.configured_by.as_deref() == Some(engine.node())
            && !configured.contains(&reservation)
        {
            let done = engine.unreserve(reservation).await?;
            tracing::info!(%reservation, freed = done.freed, "unreserved: no longer in the configuration");
        }
    }
    Ok(())
}
