//! Configuration reload (SIGHUP): what can change while mcsd runs, and
//! what needs a restart.

use std::sync::Arc;

use super::Daemon;
use crate::auth::Policy;
use crate::config::Config;
use crate::engine::Engine;
use crate::relabel::{FromPolicy, Relabeler, RestoreMode};
use crate::reservation::Reservation;

impl Daemon {
    /// Applies a new configuration while running: roles, relabel rules,
    /// connection limits and configured reservations, all or nothing. Settings that only a restart
    /// can change (range, state directory, socket, node name, store) refuse
    /// the whole reload. Everything is checked and prepared first; the
    /// reservations are applied next (undone if one fails, which refuses
    /// the reload); only then are roles, relabel rules and the configuration
    /// in force replaced. Returns what changed, in words.
    pub async fn reload(&self, new: Config) -> Result<Vec<String>, String> {
        let old = self
            .config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let fixed = [
            ("categories", old.range.to_string(), new.range.to_string()),
            (
                "state_dir",
                old.state_dir.display().to_string(),
                new.state_dir.display().to_string(),
            ),
            (
                "socket",
                old.socket.display().to_string(),
                new.socket.display().to_string(),
            ),
            ("node_name", old.node_name.clone(), new.node_name.clone()),
        ];
        if new.store != old.store {
            return Err(
                "[store] cannot change while mcsd runs; restart mcsd to apply it. Nothing was changed"
                    .into(),
            );
        }
        for (key, was, now) in fixed {
            if was != now {
                return Err(format!(
                    "{key} cannot change while mcsd runs ({was} -> {now}); restart mcsd to apply it. Nothing was changed"
                ));
            }
        }
        if new.relabel.restore == RestoreMode::Policy && old.relabel.restore != RestoreMode::Policy
        {
            FromPolicy::new()
                .map_err(|e| format!("relabel.restore = \"policy\": {e}. Nothing was changed"))?;
        }
        for r in &new.reservations {
            if !r.fits(new.range) {
                return Err(format!(
                    "reservation {r} lies outside the categories {}. Nothing was changed",
                    new.range
                ));
            }
        }
        // Everything is prepared before anything is applied, and the
        // reservations (the only step that can fail now) go first: a
        // failure leaves roles, relabel rules and the configuration as
        // they were.
        let mut changes = Vec::new();
        let policy = (new.auth != old.auth).then(|| {
            changes.push("roles ([auth]) replaced".to_owned());
            Policy::new(new.auth.clone(), rustix::process::geteuid().as_raw())
        });
        let relabeler = (new.relabel != old.relabel).then(|| {
            changes.push(format!(
                "relabel rules replaced (allowlist: {}, restore: {})",
                if new.relabel.allowlist.is_empty() {
                    "none".to_owned()
                } else {
                    new.relabel
                        .allowlist
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
                new.relabel.restore
            ));
            Arc::new(Relabeler::new(new.relabel.clone(), &new.state_dir))
        });
        let added: Vec<Reservation> = new
            .reservations
            .iter()
            .filter(|r| !old.reservations.contains(r))
            .copied()
            .collect();
        let removed: Vec<Reservation> = old
            .reservations
            .iter()
            .filter(|r| !new.reservations.contains(r))
            .copied()
            .collect();
        changes.extend(
            apply_reservations(&self.engine, &added, &removed)
                .await
                .map_err(|e| format!("{e}. Nothing was changed"))?,
        );
        if let Some(policy) = policy {
            *self.policy.write().unwrap_or_else(|e| e.into_inner()) = policy;
        }
        if let Some(relabeler) = relabeler {
            *self.relabeler.write().unwrap_or_else(|e| e.into_inner()) = relabeler;
        }
        if new.connections != old.connections {
            // Open connections stay; new ones are admitted by the new limits.
            let limits = super::fit_connection_limits(new.connections);
            self.gate.set_limits(limits);
            changes.push(format!(
                "connection limits replaced (max {}, per uid {}, admin reserve {}, handshake timeout {} ms)",
                limits.max,
                limits.per_uid,
                limits.admin_reserve,
                limits.handshake_timeout.as_millis()
            ));
        }
        let later = [
            (
                "labels",
                old.process_template != new.process_template
                    || old.file_template != new.file_template,
            ),
            ("metrics", old.metrics != new.metrics),
            ("reconcile", old.reconcile_min_age != new.reconcile_min_age),
            (
                "in_use",
                old.scan_in_use != new.scan_in_use
                    || old.proc_root != new.proc_root
                    || old.containers_storage != new.containers_storage
                    || old.docker_root != new.docker_root,
            ),
        ];
        for (key, changed) in later {
            if changed {
                changes.push(format!("[{key}] changed: takes effect at the next start"));
            }
        }
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = new;
        Ok(changes)
    }
}

/// Reserves `added` (as configured by this node) and removes `removed`, all
/// or nothing: when one step fails, the steps already made are undone (as
/// far as the store lets; what cannot be undone is logged) and the error
/// says which failed. Returns what changed, in words.
pub(super) async fn apply_reservations(
    engine: &Engine,
    added: &[Reservation],
    removed: &[Reservation],
) -> Result<Vec<String>, String> {
    let mut changes = Vec::new();
    let mut reserved = Vec::new();
    let mut unreserved = Vec::new();
    let mut failure = None;
    for r in added {
        match engine.reserve_configured(*r).await {
            Ok(done) => {
                if done.created {
                    reserved.push(*r);
                }
                changes.push(format!("reserved {r} ({} pairs covered)", done.covered));
            }
            Err(e) => {
                failure = Some(format!("reserving {r}: {e}"));
                break;
            }
        }
    }
    if failure.is_none() {
        for r in removed {
            match engine.unreserve(*r).await {
                Ok(done) => {
                    if done.removed {
                        unreserved.push(*r);
                    }
                    changes.push(format!("unreserved {r} ({} pairs free again)", done.freed));
                }
                Err(e) => {
                    failure = Some(format!("unreserving {r}: {e}"));
                    break;
                }
            }
        }
    }
    let Some(failure) = failure else {
        return Ok(changes);
    };
    for r in unreserved.iter().rev() {
        if let Err(e) = engine.reserve_configured(*r).await {
            tracing::error!(reservation = %r, error = %e, "cannot undo unreserving after a failed reload");
        }
    }
    for r in reserved.iter().rev() {
        if let Err(e) = engine.unreserve(*r).await {
            tracing::error!(reservation = %r, error = %e, "cannot undo reserving after a failed reload");
        }
    }
    Err(failure)
}
