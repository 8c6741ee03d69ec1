//! dbt-duckdb's `materialized: external`: a model whose rows are also written as one file.
//!
//! dbt-duckdb writes such a model with `COPY … TO location` and puts a view over the file.
//! Strata builds the model's Delta table, as for `table`, and writes the same rows as one
//! file at `location` in `format` (`parquet`, `csv` or `json` — newline-delimited, as
//! DuckDB writes it), from the files the model's task just wrote, before the table's commit.
//! Without `location` the file is `<alias>.<format>` in the project's folder (dbt-duckdb's
//! `external_root` defaults to the folder dbt runs in); without `format`, the location's
//! extension says it, else Parquet.

use crate::config::{EXTERNAL_MATERIALIZATION, NodeConfig};

/// The file format of an exported model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One Parquet file.
    Parquet,
    /// CSV with a header line.
    Csv,
    /// Newline-delimited JSON, one object per row.
    Json,
}

impl ExportFormat {
    /// The formats, by the names a project writes.
    const NAMES: [(&'static str, ExportFormat); 3] = [
        ("parquet", ExportFormat::Parquet),
        ("csv", ExportFormat::Csv),
        ("json", ExportFormat::Json),
    ];

    /// The format named `name` (any case).
    pub fn parse(name: &str) -> Option<ExportFormat> {
        let name = name.to_lowercase();
        Self::NAMES
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, format)| *format)
    }

    /// The format's name, also the extension of a default location.
    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, format)| *format == self)
            .map_or("parquet", |(name, _)| name)
    }
}

/// Where and how an external model's file is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSpec {
    /// The file: as configured (relative to the project's folder unless absolute or a URL),
    /// or `<alias>.<format>`.
    pub location: String,
    /// Its format.
    pub format: ExportFormat,
    /// The CSV delimiter, when set (a comma otherwise).
    pub delimiter: Option<u8>,
}

impl ExportSpec {
    /// The export of a node configured `materialized: external`, named `alias` in the
    /// warehouse; `Ok(None)` for any other node.
    ///
    /// # Errors
    /// Returns what to fix when `format` names no format Strata writes, or `delimiter` is not
    /// one character.
    pub fn of(config: &NodeConfig, alias: &str) -> Result<Option<ExportSpec>, String> {
        if !config.extra.contains_key(EXTERNAL_MATERIALIZATION) {
            return Ok(None);
        }
        let text = |key: &str| {
            config
                .extra
                .get(key)
                .and_then(serde_json::Value::as_str)
                .map(str::to_string)
        };
        let location = text("location").filter(|location| !location.trim().is_empty());
        let format = match text("format") {
            Some(name) => ExportFormat::parse(&name).ok_or_else(|| {
                format!(
                    "external format '{name}' is not one Strata writes; use parquet, csv or json"
                )
            })?,
            None => location
                .as_deref()
                .and_then(|location| location.rsplit_once('.'))
                .and_then(|(_, extension)| ExportFormat::parse(extension))
                .unwrap_or(ExportFormat::Parquet),
        };
        let delimiter = match text("delimiter") {
            None => None,
            Some(delimiter) => match delimiter.as_bytes() {
                [byte] => Some(*byte),
                _ => {
                    return Err(format!(
                        "external delimiter '{delimiter}' must be one character"
                    ));
                }
            },
        };
        Ok(Some(ExportSpec {
            location: location.unwrap_or_else(|| format!("{alias}.{}", format.name())),
            format,
            delimiter,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::{ExportFormat, ExportSpec};
    use crate::config::{ConfigLayer, Materialization, NodeConfig};

    fn config(settings: &[(&str, &str)]) -> NodeConfig {
        let mut layer = ConfigLayer::default();
        for (key, value) in settings {
            layer.set(key, &serde_json::json!(value)).unwrap();
        }
        NodeConfig::resolve(Materialization::View, [&layer])
    }

    #[test]
    fn defaults_follow_dbt_duckdb() {
        let spec = ExportSpec::of(&config(&[("materialized", "external")]), "orders")
            .unwrap()
            .unwrap();
        assert_eq!(spec.location, "orders.parquet");
        assert_eq!(spec.format, ExportFormat::Parquet);
        let spec = ExportSpec::of(
            &config(&[("materialized", "external"), ("location", "out/o.CSV")]),
            "orders",
        )
        .unwrap()
        .unwrap();
        assert_eq!(spec.format, ExportFormat::Csv);
        let spec = ExportSpec::of(
            &config(&[
                ("materialized", "external"),
                ("format", "json"),
                ("delimiter", "|"),
            ]),
            "orders",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (spec.location.as_str(), spec.format, spec.delimiter),
            ("orders.json", ExportFormat::Json, Some(b'|'))
        );
    }

    #[test]
    fn other_materializations_export_nothing_and_bad_settings_say_what_to_fix() {
        assert_eq!(
            ExportSpec::of(&config(&[("materialized", "table")]), "orders").unwrap(),
            None
        );
        let error = ExportSpec::of(
            &config(&[("materialized", "external"), ("format", "xlsx")]),
            "orders",
        )
        .unwrap_err();
        assert!(
            error.contains("'xlsx'") && error.contains("parquet, csv or json"),
            "{error}"
        );
        let error = ExportSpec::of(
            &config(&[("materialized", "external"), ("delimiter", "||")]),
            "orders",
        )
        .unwrap_err();
        assert!(error.contains("one character"), "{error}");
    }
}
