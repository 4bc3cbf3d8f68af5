//! `mcsctl relabel`: a live progress line on a terminal, one summary line
//! (or JSON) for scripts.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Instant;

use mcs_client::proto::{self, RelabelProgress};
use mcs_client::Client;
use serde_json::json;

use crate::output::{self, Format};
use crate::Failure;

/// How to relabel, as given on the command line.
pub(crate) struct Options {
    /// Level s0 for all containers instead of the container's own.
    pub(crate) shared: bool,
    /// Enter file systems mounted below the root.
    pub(crate) cross_mounts: bool,
    /// Label files with hard links outside the volume too.
    pub(crate) hard_links: bool,
}

/// Relabels the volume at `path` for container `id` and prints the result.
pub(crate) async fn run(
    client: &mut Client,
    id: String,
    path: &Path,
    options: Options,
    format: Format,
    out: &mut impl Write,
) -> Result<(), Failure> {
    // Resolve relative paths here: mcsd has its own working directory.
    let path = std::path::absolute(path)
        .map_err(|e| Failure::Input(format!("cannot make {} absolute: {e}", path.display())))?;
    let request = proto::RelabelRequest {
        container_id: id,
        path: path.display().to_string(),
        shared: options.shared,
        cross_mounts: options.cross_mounts,
        hard_links: options.hard_links,
    };
    let mut stream = client.relabel(request).await?;
    show(&mut stream, format, out).await
}

/// Follows a relabel stream to its end and prints the summary.
async fn show(
    stream: &mut tonic::Streaming<RelabelProgress>,
    format: Format,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let live = format == Format::Table && std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut spinner = 0usize;
    let mut last: Option<RelabelProgress> = None;
    loop {
        let message = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(status) => {
                if live {
                    eprint!("\r\x1b[2K");
                }
                return Err(Failure::Client(status.into()));
            }
        };
        if live && !message.done {
            spinner += 1;
            let rate = message.seen as f64 / started.elapsed().as_secs_f64().max(1e-3);
            eprint!(
                "\r\x1b[2K{} {} seen {}  changed {}  already right {}  failed {}  ({:.0}/s)",
                ["|", "/", "-", "\\"][spinner % 4],
                message.root,
                message.seen,
                message.changed,
                message.unchanged,
                message.failed,
                rate
            );
        }
        if message.done {
            last = Some(message);
        }
    }
    if live {
        eprint!("\r\x1b[2K");
    }
    let s =
        last.ok_or_else(|| Failure::Input("mcsd ended the relabel without a summary".into()))?;
    match format {
        Format::Json => output::print_json(
            out,
            &json!({
                "root": s.root,
                "label": s.label,
                "seen": s.seen,
                "changed": s.changed,
                "unchanged": s.unchanged,
                "failed": s.failed,
                "mounts_skipped": s.mounts_skipped,
                "hardlinks_skipped": s.hardlinks_skipped,
                "hardlinks_skipped_paths": s.hardlinks_skipped_paths,
                "seconds": s.seconds,
            }),
        )?,
        Format::Table | Format::Wide => writeln!(
            out,
            "relabeled {} to {}: {} entries, {} changed, {} already right, {} failed, {} mount(s) not entered, {} hard-linked entries left alone{}, {:.2} s",
            s.root,
            s.label,
            s.seen,
            s.changed,
            s.unchanged,
            s.failed,
            s.mounts_skipped,
            s.hardlinks_skipped,
            hard_links_named(&s),
            s.seconds
        )?,
    }
    Ok(())
}

/// The skipped hard links for the summary line: the first paths, and the
/// way to label them anyway.
fn hard_links_named(s: &RelabelProgress) -> String {
    if s.hardlinks_skipped == 0 {
        return String::new();
    }
    format!(
        " (not all their links are inside; --hard-links labels them anyway; first: {})",
        s.hardlinks_skipped_paths.join(", ")
    )
}
