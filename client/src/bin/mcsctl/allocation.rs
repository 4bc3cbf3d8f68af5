//! `mcsctl allocate`, `release` and `get`: one container's label.

use std::io::Write;

use mcs_client::{Allocate, Client};
use serde_json::json;

use crate::output::{self, Format};
use crate::Failure;

/// Allocates (or returns the existing) label of `request`'s container.
pub(crate) async fn allocate(
    client: &mut Client,
    request: Allocate,
    format: Format,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let response = client.allocate_full(request).await?;
    let allocation = response.allocation.unwrap_or_default();
    if format == Format::Json {
        let mut value = output::allocation_json(&allocation);
        value["created"] = json!(response.created);
        output::print_json(out, &value)?;
    } else {
        output::print_allocation(out, &allocation)?;
    }
    Ok(())
}

/// Prints container `id`'s label.
pub(crate) async fn get(
    client: &mut Client,
    id: String,
    format: Format,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let allocation = client.get(id).await?;
    if format == Format::Json {
        output::print_json(out, &output::allocation_json(&allocation))?;
    } else {
        output::print_allocation(out, &allocation)?;
    }
    Ok(())
}

/// Releases container `id`'s label and says how its volumes were restored.
pub(crate) async fn release(
    client: &mut Client,
    id: String,
    format: Format,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let response = client.release(id.clone()).await?;
    let level = response.allocation.as_ref().map(|a| a.level.clone());
    match format {
        Format::Json => output::print_json(
            out,
            &json!({
                "container_id": id,
                "released": response.released,
                "level": level.clone().unwrap_or_default(),
                "level_freed": response.level_freed,
                "restored": response.restored.iter().map(|r| json!({
                    "path": r.path, "mode": r.mode, "changed": r.changed,
                    "failed": r.failed, "note": r.error,
                    "hardlinks_skipped": r.hardlinks_skipped,
                })).collect::<Vec<_>>(),
            }),
        )?,
        _ if response.released => writeln!(
            out,
            "released {id} ({}){}",
            level.unwrap_or_default(),
            if response.level_freed {
                "; the level is free again"
            } else {
                "; the level stays held (group members remain, or it is reserved)"
            }
        )?,
        _ => writeln!(out, "{id} held no allocation; nothing to release")?,
    }
    if format != Format::Table {
        return Ok(());
    }
    for r in &response.restored {
        match r.error.as_str() {
            "" => writeln!(
                out,
                "restored {} ({}): {} changed{}",
                r.path,
                r.mode,
                r.changed,
                match r.hardlinks_skipped {
                    0 => String::new(),
                    n => format!(", {n} hard-linked name(s) left alone (links outside the tree)"),
                }
            )?,
            note => writeln!(out, "left {} as is: {note}", r.path)?,
        }
    }
    Ok(())
}
