//! Configuration reload (SIGHUP): what can change while mcsd runs, and
//! what needs a restart.

use std::sync::Arc;

use super::Daemon;
use crate::auth::Policy;
use crate::config::Config;
use crate::relabel::{FromPolicy, Relabeler, RestoreMode};

impl Daemon {
    /// Applies a new configuration while running: roles, relabel rules and
    /// configured reservations. Settings that only a restart can change
    /// (range, state directory, socket, node name, store) refuse the whole reload, so nothing
    /// is half applied. Returns what changed, in words.
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
        let mut changes = Vec::new();
        if new.auth != old.auth {
            let policy = Policy::new(new.auth.clone(), rustix::process::geteuid().as_raw());
            *self.policy.write().unwrap_or_else(|e| e.into_inner()) = policy;
            changes.push("roles ([auth]) replaced".to_owned());
        }
        if new.relabel != old.relabel {
            let relabeler = Arc::new(Relabeler::new(new.relabel.clone(), &new.state_dir));
            *self.relabeler.write().unwrap_or_else(|e| e.into_inner()) = relabeler;
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
        }
        for r in new
            .reservations
            .iter()
            .filter(|r| !old.reservations.contains(r))
        {
            let done = self
                .engine
                .reserve(*r)
                .await
                .map_err(|e| format!("reserving {r}: {e}"))?;
            changes.push(format!("reserved {r} ({} pairs covered)", done.covered));
        }
        for r in old
            .reservations
            .iter()
            .filter(|r| !new.reservations.contains(r))
        {
            let done = self
                .engine
                .unreserve(*r)
                .await
                .map_err(|e| format!("unreserving {r}: {e}"))?;
            changes.push(format!("unreserved {r} ({} pairs free again)", done.freed));
        }
        let later = [
            (
                "labels",
                old.process_template != new.process_template
                    || old.file_template != new.file_template,
            ),
            ("metrics", old.metrics != new.metrics),
            (
                "in_use",
                old.scan_in_use != new.scan_in_use || old.proc_root != new.proc_root,
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
