//! `mcsctl reserve`, `unreserve` and `reservations`: pairs and categories
//! kept out of allocation.

use std::io::Write;

use mcs_client::Client;
use serde_json::json;

use crate::output::{self, Format};
use crate::Failure;

/// Reserves `target` (`s0:cX,cY` or `cN`) and says how much it covers.
pub(crate) async fn reserve(
    client: &mut Client,
    target: String,
    format: Format,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let r = client.reserve(target).await?;
    let reservation = r.reservation.unwrap_or_default();
    if format == Format::Json {
        output::print_json(
            out,
            &json!({
                "target": reservation.target,
                "created": r.created,
                "pairs_covered": r.pairs_covered,
                "pairs_held": r.pairs_held,
                "created_at": output::time(reservation.created_at.as_ref()),
            }),
        )?;
        return Ok(());
    }
    let verb = if r.created {
        "reserved"
    } else {
        "already reserved"
    };
    writeln!(
        out,
        "{verb} {}: covers {} pair(s), {} held (holders keep them until released)",
        reservation.target, r.pairs_covered, r.pairs_held
    )?;
    Ok(())
}

/// Removes the reservation of `target`, if there is one.
pub(crate) async fn unreserve(
    client: &mut Client,
    target: String,
    format: Format,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let r = client.unreserve(target.clone()).await?;
    match format {
        Format::Json => output::print_json(
            out,
            &json!({"target": target, "removed": r.removed, "pairs_freed": r.pairs_freed}),
        )?,
        _ if r.removed => writeln!(
            out,
            "removed reservation {target}; {} pair(s) free again",
            r.pairs_freed
        )?,
        _ => writeln!(out, "no reservation {target}; nothing removed")?,
    }
    Ok(())
}

/// Lists every reservation with when it was made.
pub(crate) async fn list(
    client: &mut Client,
    format: Format,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let reservations = client.reservations().await?;
    if format == Format::Json {
        let rows: Vec<_> = reservations
            .iter()
            .map(|r| json!({"target": r.target, "created_at": output::time(r.created_at.as_ref())}))
            .collect();
        output::print_json(out, &json!(rows))?;
        return Ok(());
    }
    let mut table = output::StreamingTable::new(vec!["RESERVATION", "CREATED"]);
    let rows: Vec<Vec<String>> = reservations
        .iter()
        .map(|r| vec![r.target.clone(), output::time(r.created_at.as_ref())])
        .collect();
    table.rows(out, &rows)?;
    Ok(())
}
