//! `[connections]`: how many connections may be open, per uid and in all,
//! and how soon each must speak.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::error::Invalid;
use crate::socket::guard::ConnectionLimits;

/// Largest `connections.max`: far more than any host's runtimes need, and
/// well within what the kernel's descriptor limits allow.
const MAX_CONNECTIONS: u64 = 1 << 20;

/// `[connections]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConnectionsSection {
    max: Option<Spanned<u64>>,
    per_uid: Option<Spanned<u64>>,
    admin_reserve: Option<Spanned<u64>>,
    handshake_timeout_ms: Option<Spanned<u64>>,
}

impl ConnectionsSection {
    /// The limits this table sets over `limits`. The admin reserve must
    /// leave room for others under `max`; left out, it shrinks with a small
    /// `max` instead of refusing it.
    pub(super) fn over(self, mut limits: ConnectionLimits) -> Result<ConnectionLimits, Invalid> {
        if let Some(max) = self.max {
            limits.max = count("connections.max", max)?;
        }
        if let Some(per_uid) = self.per_uid {
            limits.per_uid = count("connections.per_uid", per_uid)?;
        }
        if let Some(reserve) = self.admin_reserve {
            let n = *reserve.get_ref();
            if n >= limits.max as u64 {
                return Err(Invalid::new(
                    "connections.admin_reserve",
                    reserve.span(),
                    format!(
                        "{n} leaves no connection for anyone else; use less than connections.max ({})",
                        limits.max
                    ),
                ));
            }
            limits.admin_reserve = n as usize;
        } else if limits.admin_reserve >= limits.max {
            limits.admin_reserve = limits.max / 2;
        }
        if let Some(ms) = self.handshake_timeout_ms {
            let n = *ms.get_ref();
            if !(100..=600_000).contains(&n) {
                return Err(Invalid::new(
                    "connections.handshake_timeout_ms",
                    ms.span(),
                    format!("{n} is out of range; use 100 to 600000 (milliseconds)"),
                ));
            }
            limits.handshake_timeout = Duration::from_millis(n);
        }
        Ok(limits)
    }
}

/// A number of connections: 1 to [`MAX_CONNECTIONS`].
fn count(key: &'static str, value: Spanned<u64>) -> Result<usize, Invalid> {
    let n = *value.get_ref();
    if n == 0 || n > MAX_CONNECTIONS {
        return Err(Invalid::new(
            key,
            value.span(),
            format!("{n} is out of range; use 1 to {MAX_CONNECTIONS}"),
        ));
    }
    Ok(n as usize)
}
