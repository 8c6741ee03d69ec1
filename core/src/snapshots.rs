//! Snapshots: tables that keep the history of a mutable source as slowly changing dimension
//! type 2 rows, as dbt's snapshots do.
//!
//! A snapshot is written as a `{% snapshot name %} … {% endsnapshot %}` block in a file of
//! `snapshot-paths`, or (dbt 1.9) as an entry of a property file's `snapshots:` list with a
//! `relation:` (`ref('…')` or `source('…', '…')`). Its settings say how a change is seen
//! ([`SnapshotStrategy`]), which rows are the same entity (`unique_key`) and what happens to
//! rows that leave the source ([`HardDeletes`]); the run keeps `dbt_scd_id`,
//! `dbt_updated_at`, `dbt_valid_from` and `dbt_valid_to` beside the source's columns.

use serde::Serialize;

use crate::config::NodeConfig;
use crate::diagnostics::SourceText;
use crate::project::SqlFile;

/// How a snapshot tells that a row changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotStrategy {
    /// The `updated_at` column is later than the snapshot's `dbt_valid_from`.
    Timestamp,
    /// One of the `check_cols` differs (NULLs compared as values).
    Check,
}

/// Which columns the `check` strategy compares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckCols {
    /// Every column of the query.
    All,
    /// The columns listed.
    Columns(Vec<String>),
}

/// What happens to the snapshot's current row when its key leaves the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HardDeletes {
    /// Nothing: the row stays current (dbt's default).
    Ignore,
    /// The current row's `dbt_valid_to` becomes the snapshot time.
    Invalidate,
    /// As `invalidate`, and a new current row marks the deletion (`dbt_is_deleted = 'True'`).
    NewRecord,
}

/// A snapshot's resolved settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotSpec {
    /// How a change is seen.
    pub strategy: SnapshotStrategy,
    /// The columns (or expressions) that identify an entity.
    pub unique_key: Vec<String>,
    /// The column of the change time: required by `timestamp`, optional for `check` (which
    /// uses the snapshot time otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// The columns `check` compares.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_cols: Option<CheckCols>,
    /// What happens when a key leaves the source.
    pub hard_deletes: HardDeletes,
    /// `snapshot_meta_column_names`: the added columns' names, by dbt's name
    /// (`dbt_valid_from`, …), where they differ from dbt's.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub column_names: std::collections::BTreeMap<String, String>,
    /// `dbt_valid_to_current`: the SQL value of `dbt_valid_to` in current rows (NULL when
    /// unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_to_current: Option<String>,
}

impl SnapshotSpec {
    /// Reads the snapshot settings of a resolved configuration.
    ///
    /// # Errors
    /// A message naming the missing or wrong setting and the values it takes.
    pub fn from_config(config: &NodeConfig) -> Result<SnapshotSpec, String> {
        let text = |key: &str| config.extra.get(key).and_then(|value| value.as_str());
        let strategy = match text("strategy") {
            Some("timestamp") => SnapshotStrategy::Timestamp,
            Some("check") => SnapshotStrategy::Check,
            Some(other) => {
                return Err(format!(
                    "snapshot strategy '{other}' is not known; use 'timestamp' or 'check'"
                ));
            }
            None => {
                return Err(String::from(
                    "a snapshot needs a strategy: set strategy='timestamp' (with updated_at) or strategy='check' (with check_cols)",
                ));
            }
        };
        if config.unique_key.is_empty() {
            return Err(String::from(
                "a snapshot needs unique_key: the column (or list of columns) that identifies a row",
            ));
        }
        let updated_at = text("updated_at").map(str::to_string);
        if strategy == SnapshotStrategy::Timestamp && updated_at.is_none() {
            return Err(String::from(
                "the timestamp strategy needs updated_at: the column holding each row's change time",
            ));
        }
        let check_cols = match config.extra.get("check_cols") {
            None => None,
            Some(serde_json::Value::String(all)) if all == "all" => Some(CheckCols::All),
            Some(serde_json::Value::String(column)) => {
                Some(CheckCols::Columns(vec![column.clone()]))
            }
            Some(serde_json::Value::Array(columns)) if !columns.is_empty() => {
                let names: Option<Vec<String>> = columns
                    .iter()
                    .map(|column| column.as_str().map(str::to_string))
                    .collect();
                Some(CheckCols::Columns(names.ok_or_else(|| {
                    String::from("check_cols must be 'all' or a list of column names")
                })?))
            }
            Some(_) => {
                return Err(String::from(
                    "check_cols must be 'all' or a non-empty list of column names",
                ));
            }
        };
        if strategy == SnapshotStrategy::Check && check_cols.is_none() {
            return Err(String::from(
                "the check strategy needs check_cols: 'all' or the list of columns to compare",
            ));
        }
        Ok(SnapshotSpec {
            strategy,
            unique_key: config.unique_key.clone(),
            updated_at,
            check_cols,
            hard_deletes: hard_deletes(config)?,
            column_names: column_names(config)?,
            valid_to_current: text("dbt_valid_to_current").map(str::to_string),
        })
    }
}

/// The names of dbt's columns a snapshot adds.
const META_COLUMNS: [&str; 5] = [
    "dbt_scd_id",
    "dbt_updated_at",
    "dbt_valid_from",
    "dbt_valid_to",
    "dbt_is_deleted",
];

/// `snapshot_meta_column_names`: a mapping from dbt's names to the table's.
fn column_names(config: &NodeConfig) -> Result<std::collections::BTreeMap<String, String>, String> {
    let Some(value) = config.extra.get("snapshot_meta_column_names") else {
        return Ok(std::collections::BTreeMap::new());
    };
    let entries = value.as_object().ok_or_else(|| {
        String::from("snapshot_meta_column_names must map dbt's column names to yours")
    })?;
    entries
        .iter()
        .map(|(dbt, name)| {
            if !META_COLUMNS.contains(&dbt.as_str()) {
                return Err(format!(
                    "snapshot_meta_column_names renames '{dbt}', which is not a snapshot column; use {}",
                    META_COLUMNS.join(", ")
                ));
            }
            let name = name
                .as_str()
                .filter(|name| !name.is_empty())
                .ok_or_else(|| format!("snapshot_meta_column_names: '{dbt}' needs a name"))?;
            Ok((dbt.clone(), name.to_string()))
        })
        .collect()
}

/// `hard_deletes` (dbt 1.9), else the older `invalidate_hard_deletes: true`.
fn hard_deletes(config: &NodeConfig) -> Result<HardDeletes, String> {
    match config.extra.get("hard_deletes").and_then(|v| v.as_str()) {
        Some("ignore") => Ok(HardDeletes::Ignore),
        Some("invalidate") => Ok(HardDeletes::Invalidate),
        Some("new_record") => Ok(HardDeletes::NewRecord),
        Some(other) => Err(format!(
            "hard_deletes '{other}' is not known; use 'ignore', 'invalidate' or 'new_record'"
        )),
        None => Ok(match config.extra.get("invalidate_hard_deletes") {
            Some(serde_json::Value::Bool(true)) => HardDeletes::Invalidate,
            _ => HardDeletes::Ignore,
        }),
    }
}

/// The `{% snapshot %}` blocks of a file in `snapshot-paths`, each as the SQL file of one
/// snapshot. The block's body keeps its place in the file (earlier text is blanked, byte for
/// byte), so diagnostics point at the file's own offsets, lines and columns.
///
/// # Errors
/// A message with the 1-based line of a block that is not closed or has no name.
pub fn blocks(file: &SqlFile) -> Result<Vec<SqlFile>, (String, u32)> {
    let text: &str = &file.source.text;
    let mut found = Vec::new();
    let mut rest = 0;
    while let Some((tag_start, body_start, name)) = crate::blocks::next_tag(text, rest, "snapshot")
    {
        let line = line_of(text, tag_start);
        let name = name.ok_or_else(|| {
            (
                String::from("a snapshot block needs a name: {% snapshot my_snapshot %}"),
                line,
            )
        })?;
        let Some((end_start, end_after, _)) =
            crate::blocks::next_tag(text, body_start, "endsnapshot")
        else {
            return Err((
                format!("the snapshot block '{name}' is not closed; add {{% endsnapshot %}}"),
                line,
            ));
        };
        found.push(SqlFile {
            name,
            folders: file.folders.clone(),
            source: SourceText::new(
                file.source.path.clone(),
                crate::blocks::blank_outside(text, body_start, end_start),
            ),
        });
        rest = end_after;
    }
    Ok(found)
}

/// The SQL file of a snapshot declared in a property file with `relation:`: a select of
/// every column of that relation, placed on the line of the `relation:` key.
pub fn from_relation(name: &str, relation: &str, source: &SourceText, line: u32) -> SqlFile {
    let padding = "\n".repeat(line.saturating_sub(1) as usize);
    SqlFile {
        name: name.to_string(),
        folders: Vec::new(),
        source: SourceText::new(
            source.path.clone(),
            format!("{padding}select * from {{{{ {relation} }}}}\n"),
        ),
    }
}

fn line_of(text: &str, offset: usize) -> u32 {
    u32::try_from(text[..offset].matches('\n').count() + 1).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigLayer, Materialization};

    fn file(text: &str) -> SqlFile {
        SqlFile {
            name: String::from("orders"),
            folders: Vec::new(),
            source: SourceText::new("snapshots/orders.sql", text),
        }
    }

    fn config(settings: serde_json::Value) -> NodeConfig {
        let mut layer = ConfigLayer::default();
        for (key, value) in settings.as_object().into_iter().flatten() {
            layer.set(key, value).unwrap_or_else(|err| panic!("{err}"));
        }
        NodeConfig::resolve(Materialization::View, [&layer])
    }

    #[test]
    fn blocks_keep_their_lines() {
        let text = "-- history of orders\n{% snapshot orders_snapshot %}\nselect 1\n{% endsnapshot %}\n\n{%- snapshot other -%} select 2 {%- endsnapshot -%}";
        let found = blocks(&file(text)).unwrap_or_else(|err| panic!("{err:?}"));
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].name, "orders_snapshot");
        assert_eq!(found[0].source.text.lines().nth(2), Some("select 1"));
        assert_eq!(found[1].name, "other");
        assert_eq!(found[1].source.text.trim(), "select 2");
        assert_eq!(
            found[1].source.text.len(),
            text.len(),
            "offsets are the file's"
        );
        assert_eq!(found[1].source.text.find("select 2"), text.find("select 2"));
    }

    #[test]
    fn broken_blocks_name_their_line() {
        let unclosed = blocks(&file("\n\n{% snapshot s %}\nselect 1\n"));
        assert!(matches!(unclosed, Err((ref message, 3)) if message.contains("not closed")));
        let nameless = blocks(&file("{% snapshot %}select 1{% endsnapshot %}"));
        assert!(matches!(nameless, Err((ref message, 1)) if message.contains("needs a name")));
    }

    #[test]
    fn settings_are_checked() {
        let timestamp = config(serde_json::json!({
            "strategy": "timestamp", "unique_key": "id", "updated_at": "updated_at",
            "invalidate_hard_deletes": true
        }));
        let spec = SnapshotSpec::from_config(&timestamp).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(spec.strategy, SnapshotStrategy::Timestamp);
        assert_eq!(spec.hard_deletes, HardDeletes::Invalidate);

        let check = config(serde_json::json!({
            "strategy": "check", "unique_key": ["a", "b"], "check_cols": "all",
            "hard_deletes": "new_record"
        }));
        let spec = SnapshotSpec::from_config(&check).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(spec.check_cols, Some(CheckCols::All));
        assert_eq!(spec.hard_deletes, HardDeletes::NewRecord);

        for (settings, expected) in [
            (serde_json::json!({"unique_key": "id"}), "needs a strategy"),
            (
                serde_json::json!({"strategy": "timestamp", "updated_at": "t"}),
                "unique_key",
            ),
            (
                serde_json::json!({"strategy": "timestamp", "unique_key": "id"}),
                "updated_at",
            ),
            (
                serde_json::json!({"strategy": "check", "unique_key": "id"}),
                "check_cols",
            ),
            (
                serde_json::json!({"strategy": "latest", "unique_key": "id"}),
                "'latest'",
            ),
        ] {
            let err = SnapshotSpec::from_config(&config(settings)).err();
            assert!(
                err.as_deref().is_some_and(|e| e.contains(expected)),
                "{err:?}"
            );
        }
    }
}
