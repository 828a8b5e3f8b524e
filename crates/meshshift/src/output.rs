//! Structured output (JSON, YAML) and the table style shared by every report.

use comfy_table::presets::NOTHING;
use comfy_table::{ContentArrangement, Table};
use serde::Serialize;

use crate::cli::OutputFormat;

/// Renders `value` as JSON or YAML; `None` for the table format, which each command renders itself.
pub fn structured<T: Serialize>(format: OutputFormat, value: &T) -> anyhow::Result<Option<String>> {
    Ok(match format {
        OutputFormat::Json => Some(serde_json::to_string_pretty(value)? + "\n"),
        OutputFormat::Yaml => Some(serde_saphyr::to_string(value)?),
        OutputFormat::Table => None,
    })
}

/// A borderless table with a header row, like kubectl's.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING).set_content_arrangement(ContentArrangement::Disabled).set_header(header.to_vec());
    t
}

/// A section title followed by a table, or a "none" line.
pub fn section(title: &str, table: Table, rows: usize) -> String {
    if rows == 0 { format!("{title}: none\n\n") } else { format!("{title}\n{table}\n\n") }
}
