//! `mcsctl reconcile`: release an owner's allocations whose containers are
//! gone.

use std::io::{Read, Write};

use mcs_client::Client;
use serde_json::json;

use crate::output::{self, Format};
use crate::Failure;

/// What to reconcile, as given on the command line.
pub(crate) struct Request {
    /// The runtime whose allocations are reconciled.
    pub(crate) owner: String,
    /// Ids to keep; `-` stands for the whitespace-separated ids on stdin.
    pub(crate) keep: Vec<String>,
    /// Only report what would be released.
    pub(crate) dry_run: bool,
    /// Keep allocations younger than this many seconds (None: mcsd's).
    pub(crate) min_age: Option<u64>,
}

/// Reconciles, prints what was released and kept, and fails if an
/// allocation could not be released because its volumes were not restored.
pub(crate) async fn run(
    client: &mut Client,
    request: Request,
    format: Format,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let Request {
        owner,
        keep,
        dry_run,
        min_age,
    } = request;
    let ids = expand_stdin(keep)?;
    let r = client
        .reconcile_with_min_age(owner.clone(), ids, dry_run, min_age)
        .await?;
    match format {
        Format::Json => output::print_json(
            out,
            &json!({
                "owner": owner,
                "dry_run": dry_run,
                "released": r.released.iter().map(output::allocation_json).collect::<Vec<_>>(),
                "kept": r.kept,
                "unknown": r.unknown,
                "kept_young": r.kept_young,
                "min_age_secs": r.min_age_secs,
                "not_released": r.not_released.iter().map(|n| json!({
                    "allocation": n.allocation.as_ref().map(output::allocation_json),
                    "reason": n.reason,
                })).collect::<Vec<_>>(),
            }),
        )?,
        Format::Table | Format::Wide => {
            let verb = if dry_run { "would release" } else { "released" };
            for a in &r.released {
                writeln!(out, "{verb} {} ({})", a.container_id, a.level)?;
            }
            for n in &r.not_released {
                let (id, level) = n
                    .allocation
                    .as_ref()
                    .map_or(("?", "?"), |a| (a.container_id.as_str(), a.level.as_str()));
                writeln!(out, "not released {id} ({level}): {}", n.reason)?;
            }
            writeln!(
                out,
                "{owner}: {verb} {}, kept {}, {} id(s) to keep held nothing, {} younger than {} s kept",
                r.released.len(),
                r.kept,
                r.unknown,
                r.kept_young,
                r.min_age_secs
            )?;
        }
    }
    match r.not_released.first() {
        Some(first) => Err(Failure::Input(format!(
            "{} stale allocation(s) not released, their volumes could not be restored; first: {}",
            r.not_released.len(),
            first.reason
        ))),
        None => Ok(()),
    }
}

/// Replaces each `-` in `keep` by the ids read from stdin.
fn expand_stdin(keep: Vec<String>) -> Result<Vec<String>, Failure> {
    let mut ids = Vec::with_capacity(keep.len());
    for id in keep {
        if id == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| Failure::Input(format!("cannot read ids from stdin: {e}")))?;
            ids.extend(text.split_whitespace().map(str::to_owned));
        } else {
            ids.push(id);
        }
    }
    Ok(ids)
}
