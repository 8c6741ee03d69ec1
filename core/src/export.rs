//! dbt-duckdb's `materialized: external`: a model whose rows are also written as one file.
//!
//! dbt-duckdb writes such a model with `COPY … TO location` and puts a view over the file.
//! Strata builds the model's Delta table, as for `table`, and writes the same rows as one
//! file at `location` in `format` (`parquet`, `csv` or `json` — newline-delimited, as
//! DuckDB writes it), from the files the model's task just wrote, before the table's commit.
//! Without `location` the file is `<alias>.<format>` in the project's folder (dbt-duckdb's
//! `external_root` defaults to the folder dbt runs in); without `format`, the location's
//! extension says it, else Parquet.
//!
//! A `post_hook` that copies the model to a file — DuckDB's `COPY {{ this }} TO 'file'
//! [(FORMAT …, DELIMITER …, HEADER)]`, the common hook of dbt-duckdb projects — is the same
//! export and runs the same way ([`ExportSpec::from_copy`]); other hooks are not run.

use serde::Serialize;

use crate::config::{EXTERNAL_MATERIALIZATION, NodeConfig};

/// The file format of an exported model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

    /// The export a hook asks for when it is `COPY <this> TO '<file>' [(<options>)]`, `this`
    /// standing for the model (the hook's `{{ this }}`): the format from `FORMAT` or, as
    /// DuckDB decides, the file's extension (`.parquet`, `.json`/`.ndjson`, else CSV), the
    /// delimiter from `DELIMITER`/`DELIM`/`SEP` (unquoted values in any case); compression and
    /// overwrite options change no row and are accepted. `None` for any other statement or option (`HEADER false`, a
    /// query as the source), which Strata then does not run.
    pub fn from_copy(hook: &str, this: &str) -> Option<ExportSpec> {
        let mut rest = hook.trim().trim_end_matches(';').trim();
        rest = keyword(rest, "copy")?;
        rest = rest.strip_prefix(this)?.trim_start();
        rest = keyword(rest, "to")?;
        let (location, rest) = quoted(rest)?;
        let mut spec = ExportSpec {
            format: default_copy_format(&location),
            location,
            delimiter: None,
        };
        let rest = rest.trim();
        if rest.is_empty() {
            return Some(spec);
        }
        let options = rest.strip_prefix('(')?.strip_suffix(')')?;
        for option in split_options(options) {
            let (key, value) = match option.split_once(char::is_whitespace) {
                Some((key, value)) => (key.to_lowercase(), Some(value.trim())),
                None => (option.to_lowercase(), None),
            };
            let text =
                value.map(|value| quoted(value).map_or(value.to_lowercase(), |(text, _)| text));
            match (key.as_str(), text.as_deref()) {
                ("format", Some(name)) => spec.format = ExportFormat::parse(name)?,
                ("delimiter" | "delim" | "sep", Some(delimiter)) => match delimiter.as_bytes() {
                    [byte] => spec.delimiter = Some(*byte),
                    _ => return None,
                },
                ("header", None | Some("true" | "1")) => {}
                (
                    "compression"
                    | "codec"
                    | "row_group_size"
                    | "overwrite"
                    | "overwrite_or_ignore",
                    _,
                ) => {}
                _ => return None,
            }
        }
        Some(spec)
    }
}

/// The comma-separated options of a `COPY`, trimmed; commas inside quotes stay
/// (`DELIMITER ','`).
fn split_options(options: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut in_quotes) = (0, false);
    for (at, char) in options.char_indices() {
        match char {
            '\'' => in_quotes = !in_quotes,
            ',' if !in_quotes => {
                parts.push(options[start..at].trim());
                start = at + 1;
            }
            _ => {}
        }
    }
    parts.push(options[start..].trim());
    parts
}

/// DuckDB's format for `COPY … TO file` without `FORMAT`: by the extension, else CSV.
fn default_copy_format(location: &str) -> ExportFormat {
    match location
        .rsplit_once('.')
        .map(|(_, extension)| extension.to_lowercase())
    {
        Some(extension) if extension == "parquet" => ExportFormat::Parquet,
        Some(extension) if extension == "json" || extension == "ndjson" => ExportFormat::Json,
        _ => ExportFormat::Csv,
    }
}

/// `text` after the word `word` (any case) and the spaces that follow it.
fn keyword<'t>(text: &'t str, word: &str) -> Option<&'t str> {
    let head = text.get(..word.len())?;
    let rest = &text[word.len()..];
    (head.eq_ignore_ascii_case(word) && rest.starts_with(char::is_whitespace))
        .then(|| rest.trim_start())
}

/// A single-quoted SQL string at the start of `text` (`''` for a quote) and what follows it.
fn quoted(text: &str) -> Option<(String, &str)> {
    let mut chars = text.strip_prefix('\'')?.char_indices().peekable();
    let mut value = String::new();
    while let Some((at, char)) = chars.next() {
        if char != '\'' {
            value.push(char);
        } else if chars.peek().is_some_and(|(_, next)| *next == '\'') {
            value.push('\'');
            chars.next();
        } else {
            return Some((value, &text[at + 2..]));
        }
    }
    None
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
    fn a_copy_of_the_model_to_a_file_is_an_export() {
        let this = "__this__";
        let spec = ExportSpec::from_copy(
            "COPY __this__ TO 'out/it''s.csv' (HEADER, DELIMITER ';', COMPRESSION 'none');",
            this,
        )
        .unwrap();
        assert_eq!(
            (spec.location.as_str(), spec.format, spec.delimiter),
            ("out/it's.csv", ExportFormat::Csv, Some(b';'))
        );
        let spec = ExportSpec::from_copy("copy __this__ to 'x.csv' (delim ',')", this).unwrap();
        assert_eq!(spec.delimiter, Some(b','));
        let spec =
            ExportSpec::from_copy("copy __this__ to 'x.csv' (HEADER TRUE, FORMAT CSV)", this);
        assert_eq!(spec.map(|spec| spec.format), Some(ExportFormat::Csv));
        let spec = ExportSpec::from_copy("copy __this__ to 'x.parquet'", this).unwrap();
        assert_eq!(spec.format, ExportFormat::Parquet);
        let spec = ExportSpec::from_copy("copy __this__ to 'x.out' (format json)", this).unwrap();
        assert_eq!(spec.format, ExportFormat::Json);
        assert_eq!(
            ExportSpec::from_copy("copy __this__ to 'x'", this)
                .unwrap()
                .format,
            ExportFormat::Csv
        );
        for other in [
            "set threads = 1",
            "copy other_table to 'x.csv'",
            "copy (select * from __this__) to 'x.csv'",
            "copy __this__ to 'x.csv' (header false)",
            "copy __this__ to 'x.csv' (partition_by (a))",
            "copy __this__ to 'x.xlsx' (format xlsx)",
            "copy __this__ from 'x.csv'",
            "copy __this__ to 'unterminated",
        ] {
            assert_eq!(ExportSpec::from_copy(other, this), None, "{other}");
        }
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
