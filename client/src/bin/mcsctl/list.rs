//! `mcsctl list`: rows stream in id order as they arrive; other orders
//! read every row first, then sort and cut to the limit.

use std::io::Write;

use mcs_client::{proto, Client, ClientError};
use tokio_stream::StreamExt;

use crate::output::{self, Format};
use crate::Failure;

/// Row orders for `list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Sort {
    /// Container id (streamed as it comes)
    Id,
    /// Owner, then id
    Owner,
    /// Level
    Level,
    /// Newest first
    Age,
}

/// What `list` asks for.
pub(crate) struct Query {
    /// Only this owner's.
    pub owner: Option<String>,
    /// Only this group's.
    pub group: Option<String>,
    /// Only those made on this node.
    pub node: Option<String>,
    /// At most this many.
    pub limit: Option<u64>,
    /// Row order.
    pub sort: Sort,
}

/// Lists the allocations `query` selects.
pub(crate) async fn run(
    client: &mut Client,
    query: Query,
    format: Format,
    wide: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let Query {
        owner,
        group,
        node,
        limit,
        sort,
    } = query;
    // The server cuts listings in id order: other orders need every
    // row first, and the limit applies after sorting.
    let request = proto::ListRequest {
        owner: owner.unwrap_or_default(),
        group: group.unwrap_or_default(),
        node: node.unwrap_or_default(),
        limit: if sort == Sort::Id {
            limit.unwrap_or(0)
        } else {
            0
        },
        ..Default::default()
    };
    let mut stream = client.list(request).await?;
    if sort == Sort::Id {
        list(&mut stream, format, wide, out).await?;
    } else {
        let mut all = Vec::new();
        while let Some(chunk) = stream.next().await {
            all.extend(chunk.map_err(ClientError::from)?.allocations);
        }
        match sort {
            Sort::Owner => {
                all.sort_by(|a, b| (&a.owner, &a.container_id).cmp(&(&b.owner, &b.container_id)))
            }
            Sort::Level => all.sort_by_key(|a| level_key(&a.level)),
            Sort::Age => {
                all.sort_by_key(|a| std::cmp::Reverse(a.created_at.map(|t| (t.seconds, t.nanos))))
            }
            Sort::Id => {}
        }
        if let Some(limit) = limit {
            all.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        }
        let chunk = proto::ListResponse { allocations: all };
        let mut sorted = tokio_stream::iter([Ok::<_, tonic::Status>(chunk)]);
        list(&mut sorted, format, wide, out).await?;
    }
    Ok(())
}

/// Sort key of a level `s0:cX,cY`: (X, Y) as numbers.
fn level_key(level: &str) -> (u32, u32) {
    let mut numbers = level
        .trim_start_matches("s0:")
        .split(',')
        .map(|c| c.trim_start_matches('c').parse().unwrap_or(u32::MAX));
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
}

/// Streams a listing to `out` as it arrives.
async fn list(
    stream: &mut (impl tokio_stream::Stream<Item = Result<proto::ListResponse, tonic::Status>> + Unpin),
    format: Format,
    wide: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let mut header = vec!["CONTAINER", "OWNER", "GROUP", "LEVEL", "AGE"];
    if wide {
        header.extend(["NODE", "PROCESS LABEL", "FILE LABEL", "ROOTS"]);
    }
    let mut table = output::StreamingTable::new(header);
    let mut first = true;
    if format == Format::Json {
        write!(out, "[")?;
    }
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ClientError::from)?;
        match format {
            Format::Json => {
                for a in &chunk.allocations {
                    let sep = if first { "\n  " } else { ",\n  " };
                    first = false;
                    write!(out, "{sep}{}", output::allocation_json(a))?;
                }
            }
            Format::Table | Format::Wide => {
                let rows: Vec<Vec<String>> = chunk
                    .allocations
                    .iter()
                    .map(|a| {
                        let mut row = vec![
                            a.container_id.clone(),
                            a.owner.clone(),
                            a.group.clone(),
                            a.level.clone(),
                            output::age(a.created_at.as_ref()),
                        ];
                        if wide {
                            row.push(a.node.clone());
                            row.push(a.process_label.clone());
                            row.push(a.file_label.clone());
                            row.push(
                                a.roots
                                    .iter()
                                    .map(|r| r.path.clone())
                                    .collect::<Vec<_>>()
                                    .join(","),
                            );
                        }
                        row
                    })
                    .collect();
                table.rows(out, &rows)?;
            }
        }
    }
    match format {
        Format::Json => writeln!(out, "{}]", if first { "" } else { "\n" })?,
        Format::Table | Format::Wide => table.finish(out)?,
    }
    Ok(())
}
