//! How mcsctl prints: human tables by default, JSON for scripts.

use std::io::IsTerminal;
use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mcs_client::proto;
use serde_json::{json, Value};

/// Output format chosen with `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Aligned columns for people.
    Table,
    /// JSON for scripts.
    Json,
    /// Aligned columns with every label (list); like table elsewhere.
    Wide,
}

/// Whether to color output: only on a terminal, and never with NO_COLOR set
/// (https://no-color.org).
pub(crate) fn color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `text` in an ANSI color (`"32"` green, `"33"` yellow, `"31"` red) when
/// coloring.
pub(crate) fn paint(text: &str, code: &str) -> String {
    if color() {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// A usage bar: `[#####...............]  25.0%`.
pub(crate) fn bar(used: u64, total: u64, width: usize) -> String {
    let share = if total == 0 {
        0.0
    } else {
        used as f64 / total as f64
    };
    let filled = ((share * width as f64).round() as usize).min(width);
    let code = match share {
        s if s >= 0.9 => "31",
        s if s >= 0.7 => "33",
        _ => "32",
    };
    format!(
        "[{}{}] {:5.1}%",
        paint(&"#".repeat(filled), code),
        ".".repeat(width - filled),
        share * 100.0
    )
}

/// RFC 3339 time, UTC, seconds precision.
pub(crate) fn time(t: Option<&prost_types::Timestamp>) -> String {
    let Some(t) = t else {
        return String::new();
    };
    let at = UNIX_EPOCH
        + Duration::from_secs(u64::try_from(t.seconds).unwrap_or(0))
        + Duration::from_nanos(u64::try_from(t.nanos).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

/// The JSON form of an allocation: the fields scripts rely on.
pub(crate) fn allocation_json(a: &proto::Allocation) -> Value {
    json!({
        "container_id": a.container_id,
        "owner": a.owner,
        "group": a.group,
        "level": a.level,
        "process_label": a.process_label,
        "file_label": a.file_label,
        "mount_option": a.mount_option,
        "created_at": time(a.created_at.as_ref()),
        "node": a.node,
        "roots": a.roots.iter().map(|r| json!({
            "path": r.path, "shared": r.shared, "original_label": r.original_label,
        })).collect::<Vec<_>>(),
    })
}

/// Prints `value` as pretty JSON.
pub(crate) fn print_json(out: &mut impl Write, value: &Value) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)
}

/// Prints `name value` lines with the values aligned.
pub(crate) fn print_fields(out: &mut impl Write, fields: &[(&str, String)]) -> io::Result<()> {
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in fields {
        let value = if value.is_empty() { "-" } else { value };
        writeln!(out, "{key:<width$}  {value}")?;
    }
    Ok(())
}

/// One allocation as `name value` lines.
pub(crate) fn print_allocation(out: &mut impl Write, a: &proto::Allocation) -> io::Result<()> {
    print_fields(
        out,
        &[
            ("container_id", a.container_id.clone()),
            ("owner", a.owner.clone()),
            ("group", a.group.clone()),
            ("level", a.level.clone()),
            ("process_label", a.process_label.clone()),
            ("file_label", a.file_label.clone()),
            ("mount_option", a.mount_option.clone()),
            ("created_at", time(a.created_at.as_ref())),
            ("node", a.node.clone()),
        ],
    )
}

/// A table printed as rows arrive: column widths come from the header and
/// the first rows, so a listing of any length streams without buffering.
pub(crate) struct StreamingTable {
    widths: Vec<usize>,
    header: Vec<&'static str>,
    printed_header: bool,
}

impl StreamingTable {
    /// A table with these column titles.
    pub(crate) fn new(header: Vec<&'static str>) -> Self {
        Self {
            widths: header.iter().map(|h| h.len()).collect(),
            header,
            printed_header: false,
        }
    }

    /// Prints a batch of rows (the first batch also sizes the columns).
    pub(crate) fn rows(&mut self, out: &mut impl Write, rows: &[Vec<String>]) -> io::Result<()> {
        if !self.printed_header {
            for row in rows {
                for (w, cell) in self.widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.len());
                }
            }
            let header: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
            self.line(out, &header)?;
            self.printed_header = true;
        }
        for row in rows {
            self.line(out, row)?;
        }
        Ok(())
    }

    /// Prints the header if no row came.
    pub(crate) fn finish(&mut self, out: &mut impl Write) -> io::Result<()> {
        if !self.printed_header {
            self.rows(out, &[])?;
        }
        Ok(())
    }

    fn line(&self, out: &mut impl Write, cells: &[String]) -> io::Result<()> {
        let last = cells.len().saturating_sub(1);
        let mut line = String::new();
        for (i, (cell, width)) in cells.iter().zip(&self.widths).enumerate() {
            let cell = if cell.is_empty() { "-" } else { cell };
            if i == last {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        writeln!(out, "{}", line.trim_end())
    }
}

/// Elapsed time since an RFC 3339 creation time, for humans ("3h", "2d").
pub(crate) fn age(t: Option<&prost_types::Timestamp>) -> String {
    let Some(t) = t else {
        return String::new();
    };
    let created = UNIX_EPOCH + Duration::from_secs(u64::try_from(t.seconds).unwrap_or(0));
    let secs = SystemTime::now()
        .duration_since(created)
        .unwrap_or_default()
        .as_secs();
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m", secs / 60),
        3600..=86_399 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}
