//! `mcsctl status` and `mcsctl stats`: how the daemon is, and how much of
//! the range is in use.

use std::io::Write;
use std::time::Duration;

use mcs_client::Client;
use serde_json::json;

use crate::output::{self, Format};
use crate::Failure;

/// Prints the daemon's version, health, uptime, store and modes.
pub(crate) async fn status(
    client: &mut Client,
    format: Format,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let s = client.status().await?;
    if format == Format::Json {
        output::print_json(
            out,
            &json!({
                "version": s.version,
                "started_at": output::time(s.started_at.as_ref()),
                "uptime_seconds": s.uptime_seconds,
                "store": s.store,
                "selinux_mode": s.selinux_mode,
                "health": s.health,
                "socket": s.socket,
                "range": s.range,
                "restore_mode": s.restore_mode,
            }),
        )?;
        return Ok(());
    }
    let color = if s.health == "SERVING" { "32" } else { "31" };
    let uptime = Duration::from_secs(s.uptime_seconds as u64);
    output::print_fields(
        out,
        &[
            ("version", s.version.clone()),
            ("health", output::paint(&s.health, color)),
            ("uptime", humantime::format_duration(uptime).to_string()),
            ("socket", s.socket.clone()),
            ("store", s.store.clone()),
            ("range", s.range.clone()),
            ("selinux", s.selinux_mode.clone()),
            ("restore", s.restore_mode.clone()),
        ],
    )?;
    Ok(())
}

/// Prints how many pairs are held, free and reserved, and who holds them.
pub(crate) async fn stats(
    client: &mut Client,
    format: Format,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let s = client.stats().await?;
    if format == Format::Json {
        output::print_json(
            out,
            &json!({
                "range": s.range,
                "total": s.total,
                "held": s.held,
                "free": s.free,
                "reserved": s.reserved,
                "containers": s.containers,
                "groups": s.groups,
                "owners": s.owners.iter().map(|o| json!({"owner": o.owner, "containers": o.containers})).collect::<Vec<_>>(),
            }),
        )?;
        return Ok(());
    }
    writeln!(out, "usage       {}", output::bar(s.held, s.total, 40))?;
    output::print_fields(
        out,
        &[
            ("range", s.range.clone()),
            ("total", s.total.to_string()),
            ("held", s.held.to_string()),
            ("free", s.free.to_string()),
            ("reserved", s.reserved.to_string()),
            ("containers", s.containers.to_string()),
            ("groups", s.groups.to_string()),
        ],
    )?;
    if !s.owners.is_empty() {
        writeln!(out)?;
        let mut table = output::StreamingTable::new(vec!["OWNER", "CONTAINERS"]);
        let rows: Vec<Vec<String>> = s
            .owners
            .iter()
            .map(|o| vec![o.owner.clone(), o.containers.to_string()])
            .collect();
        table.rows(out, &rows)?;
    }
    Ok(())
}
