//! How many connections mcsd admits, fitted to the descriptors it has.

use std::sync::Arc;

use crate::auth::Role;
use crate::service::SharedPolicy;
use crate::socket::guard::{self, ConnectionLimits, Gate};

/// Raises the open-file limit as far as it goes and fits the connection
/// limits into it, saying what it did: a `connections.max` the descriptors
/// cannot carry would fail in accept() instead of in a clear refusal.
pub(super) fn fit_connection_limits(limits: ConnectionLimits) -> ConnectionLimits {
    let open_files = match guard::raise_open_file_limit() {
        Ok((before, now)) => {
            if before == now {
                tracing::info!(limit = now, "open-file limit (RLIMIT_NOFILE)");
            } else {
                tracing::info!(
                    before,
                    limit = now,
                    "raised the open-file limit (RLIMIT_NOFILE) from {before} to {now}"
                );
            }
            now
        }
        Err(e) => {
            let now = rustix::process::getrlimit(rustix::process::Resource::Nofile)
                .current
                .unwrap_or(u64::MAX);
            tracing::warn!(limit = now, error = %e, "cannot raise the open-file limit (RLIMIT_NOFILE); keeping {now}");
            now
        }
    };
    let (fitted, lowered) = limits.fit_to(open_files);
    if lowered {
        tracing::warn!(
            configured = limits.max,
            max = fitted.max,
            "connections.max = {} needs more descriptors than RLIMIT_NOFILE ({open_files}) leaves; serving at most {} connections",
            limits.max,
            fitted.max
        );
    }
    fitted
}

/// A gate whose admins are those `policy` (as reloaded) calls admins.
pub(super) fn connection_gate(limits: ConnectionLimits, policy: &SharedPolicy) -> Arc<Gate> {
    let policy = policy.clone();
    Gate::new(
        limits,
        Box::new(move |caller| {
            policy
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .check(caller, "connect", Role::Admin)
                .is_ok()
        }),
    )
}
