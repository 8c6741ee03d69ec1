//! Node configuration (`materialized`, `schema`, `tags`, …) and how its layers merge.
//!
//! Precedence follows dbt: the hierarchical `models:` block of `dbt_project.yml` (deeper folders
//! win) < the `config:` of a property file < `{{ config(...) }}` inside the model. Tags add up
//! across layers instead of replacing each other.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::diagnostics::{ProjectDiagnostic, SourceText};
use crate::yaml::Yaml;

/// How a model is materialized in the warehouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Materialization {
    /// Rebuilt completely on every run (Delta overwrite).
    Table,
    /// A stored definition computed on read.
    View,
    /// Appended to or merged into on later runs.
    Incremental,
    /// Never stored: inlined as a CTE into the models that reference it.
    Ephemeral,
    /// A CSV file loaded as a table.
    Seed,
    /// A data-quality test.
    Test,
    /// The history of a source's rows (SCD type 2), kept by a snapshot.
    Snapshot,
}

impl Materialization {
    /// Every materialization a model may use, for error hints.
    pub const FOR_MODELS: [&'static str; 4] = ["table", "view", "incremental", "ephemeral"];

    /// Parses a materialization name as written in a project.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "table" => Self::Table,
            "view" => Self::View,
            "incremental" => Self::Incremental,
            "ephemeral" => Self::Ephemeral,
            "seed" => Self::Seed,
            "test" => Self::Test,
            "snapshot" => Self::Snapshot,
            _ => return None,
        })
    }

    /// The name as written in a project.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Table => "table",
            Self::View => "view",
            Self::Incremental => "incremental",
            Self::Ephemeral => "ephemeral",
            Self::Seed => "seed",
            Self::Test => "test",
            Self::Snapshot => "snapshot",
        }
    }
}

impl fmt::Display for Materialization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an incremental model folds new rows into its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum IncrementalStrategy {
    /// Adds the new rows.
    #[serde(rename = "append")]
    Append,
    /// Updates rows whose `unique_key` matches, inserts the others.
    #[serde(rename = "merge")]
    Merge,
    /// Deletes rows whose `unique_key` matches, then inserts the new rows.
    #[serde(rename = "delete+insert")]
    DeleteInsert,
    /// Replaces whole partitions (by `partition_by`) present in the new rows.
    #[serde(rename = "insert_overwrite")]
    InsertOverwrite,
}

impl IncrementalStrategy {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "append" => Self::Append,
            "merge" => Self::Merge,
            "delete+insert" => Self::DeleteInsert,
            "insert_overwrite" => Self::InsertOverwrite,
            _ => return None,
        })
    }
}

/// What an incremental run does when the model's columns differ from the table's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnSchemaChange {
    /// Keeps the table's columns; new columns are dropped.
    Ignore,
    /// Fails the model.
    Fail,
    /// Adds new columns to the table.
    AppendNewColumns,
    /// Adds new columns and drops removed ones.
    SyncAllColumns,
}

impl OnSchemaChange {
    const NAMES: [&'static str; 4] = ["ignore", "fail", "append_new_columns", "sync_all_columns"];

    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "ignore" => Self::Ignore,
            "fail" => Self::Fail,
            "append_new_columns" => Self::AppendNewColumns,
            "sync_all_columns" => Self::SyncAllColumns,
            _ => return None,
        })
    }
}

/// Severity of a data-quality test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TestSeverity {
    /// A failure fails the node and skips its descendants.
    Error,
    /// A failure is reported and the run goes on.
    Warn,
}

/// A layer of configuration as written in one place; `None` means "not set here".
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ConfigLayer {
    /// Settings whose YAML value is or holds a Jinja template (`+enabled: "{{ var('x') }}"`,
    /// `+column_types: {id: "{{ 'int64' if … }}"}`), by key: rendered by the compiler, which
    /// knows vars and target, then set like any other value.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub templated: BTreeMap<String, serde_json::Value>,
    /// `enabled`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// `materialized`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub materialized: Option<Materialization>,
    /// `schema`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// `alias`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// `tags` (added to the tags of outer layers).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// `unique_key` (one column or several).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unique_key: Option<Vec<String>>,
    /// `incremental_strategy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incremental_strategy: Option<IncrementalStrategy>,
    /// `partition_by` (one column or several).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition_by: Option<Vec<String>>,
    /// `pre_hook` / `pre-hook`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_hook: Option<Vec<String>>,
    /// `post_hook` / `post-hook`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_hook: Option<Vec<String>>,
    /// `on_schema_change`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_schema_change: Option<OnSchemaChange>,
    /// `full_refresh`: when false, `--full-refresh` does not rebuild this model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_refresh: Option<bool>,
    /// `column_types` of a seed.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub column_types: BTreeMap<String, String>,
    /// `severity` of a test.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<TestSeverity>,
    /// `where` filter of a test.
    #[serde(rename = "where", skip_serializing_if = "Option::is_none")]
    pub where_clause: Option<String>,
    /// `store_failures` of a test.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_failures: Option<bool>,
    /// `warn_if` condition of a test, such as `>10`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warn_if: Option<String>,
    /// `error_if` condition of a test, such as `!=0`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_if: Option<String>,
    /// `retries` for transient task failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Settings Strata does not interpret (`meta`, `docs`, adapter-specific keys), kept for
    /// macros through `config.get` and for the manifest.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// The resolved configuration of a node, after merging every layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeConfig {
    /// Whether the node is part of the project.
    pub enabled: bool,
    /// How the node is materialized.
    pub materialized: Materialization,
    /// Schema override, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Alias (table name) override, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Tags, sorted and deduplicated.
    pub tags: Vec<String>,
    /// Columns identifying a row, for `merge` and `delete+insert`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unique_key: Vec<String>,
    /// Strategy of an incremental model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incremental_strategy: Option<IncrementalStrategy>,
    /// Hive-style partition columns of the table.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub partition_by: Vec<String>,
    /// SQL run before the model.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pre_hook: Vec<String>,
    /// SQL run after the model.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub post_hook: Vec<String>,
    /// Behaviour of incremental runs on a schema change.
    pub on_schema_change: OnSchemaChange,
    /// Whether `--full-refresh` applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_refresh: Option<bool>,
    /// Column types of a seed.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub column_types: BTreeMap<String, String>,
    /// Severity of a test.
    pub severity: TestSeverity,
    /// Row filter of a test.
    #[serde(rename = "where", skip_serializing_if = "Option::is_none")]
    pub where_clause: Option<String>,
    /// Whether a test stores its failing rows.
    pub store_failures: bool,
    /// Condition on the failure count that makes a test warn.
    pub warn_if: String,
    /// Condition on the failure count that makes a test fail.
    pub error_if: String,
    /// Retries for transient failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Uninterpreted settings.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl NodeConfig {
    /// Whether `/` between integers truncates: `integer_division: truncate` (the default,
    /// `fractional`, follows DuckDB, Spark, Snowflake and BigQuery).
    pub fn truncating_division(&self) -> bool {
        self.extra
            .get(INTEGER_DIVISION)
            .is_some_and(|value| value == "truncate")
    }

    /// Resolves layers, outermost first, on top of a default materialization.
    pub fn resolve<'a>(
        default: Materialization,
        layers: impl IntoIterator<Item = &'a ConfigLayer>,
    ) -> NodeConfig {
        let mut config = NodeConfig {
            enabled: true,
            materialized: default,
            schema: None,
            alias: None,
            tags: Vec::new(),
            unique_key: Vec::new(),
            incremental_strategy: None,
            partition_by: Vec::new(),
            pre_hook: Vec::new(),
            post_hook: Vec::new(),
            on_schema_change: OnSchemaChange::Ignore,
            full_refresh: None,
            column_types: BTreeMap::new(),
            severity: TestSeverity::Error,
            where_clause: None,
            store_failures: false,
            warn_if: String::from("!=0"),
            error_if: String::from("!=0"),
            retries: None,
            extra: BTreeMap::new(),
        };
        for layer in layers {
            config.apply(layer);
        }
        config.tags.sort();
        config.tags.dedup();
        config
    }

    fn apply(&mut self, layer: &ConfigLayer) {
        fn set<T: Clone>(target: &mut T, value: &Option<T>) {
            if let Some(value) = value {
                *target = value.clone();
            }
        }
        set(&mut self.enabled, &layer.enabled);
        set(&mut self.materialized, &layer.materialized);
        if layer.schema.is_some() {
            self.schema.clone_from(&layer.schema);
        }
        if layer.alias.is_some() {
            self.alias.clone_from(&layer.alias);
        }
        self.tags.extend(layer.tags.iter().cloned());
        set(&mut self.unique_key, &layer.unique_key);
        if layer.incremental_strategy.is_some() {
            self.incremental_strategy = layer.incremental_strategy;
        }
        set(&mut self.partition_by, &layer.partition_by);
        set(&mut self.pre_hook, &layer.pre_hook);
        set(&mut self.post_hook, &layer.post_hook);
        set(&mut self.on_schema_change, &layer.on_schema_change);
        if layer.full_refresh.is_some() {
            self.full_refresh = layer.full_refresh;
        }
        for (column, data_type) in &layer.column_types {
            self.column_types.insert(column.clone(), data_type.clone());
        }
        set(&mut self.severity, &layer.severity);
        if layer.where_clause.is_some() {
            self.where_clause.clone_from(&layer.where_clause);
        }
        set(&mut self.store_failures, &layer.store_failures);
        set(&mut self.warn_if, &layer.warn_if);
        set(&mut self.error_if, &layer.error_if);
        if layer.retries.is_some() {
            self.retries = layer.retries;
        }
        if layer.materialized.is_some() && !layer.extra.contains_key(EXTERNAL_MATERIALIZATION) {
            // A later layer's own materialization replaces an earlier `external`.
            self.extra.remove(EXTERNAL_MATERIALIZATION);
        }
        for (key, value) in &layer.extra {
            self.extra.insert(key.clone(), value.clone());
        }
    }

    /// Returns a setting by its dbt name, as `config.get('name')` sees it in Jinja.
    pub fn get(&self, key: &str) -> Option<serde_json::Value> {
        let json = serde_json::to_value(self).ok()?;
        match json.get(key) {
            Some(value) => Some(value.clone()),
            None => self.extra.get(key).cloned(),
        }
    }
}

/// Where an incremental strategy Strata does not have is kept, for the run to report.
pub const UNSUPPORTED_STRATEGY: &str = "unsupported_incremental_strategy";
/// dbt-duckdb's `materialized: external`, built as a table; kept in `extra` under this key
/// so that compile can say so.
pub const EXTERNAL_MATERIALIZATION: &str = "external";

/// The setting that chooses integer division: `fractional` (default) or `truncate`.
const INTEGER_DIVISION: &str = "integer_division";

/// Hook keys: their Jinja is rendered when the hook runs, not when the config is read.
const HOOK_KEYS: [&str; 4] = ["pre_hook", "post_hook", "pre-hook", "post-hook"];

/// Whether a string of `json`, at any depth, is a Jinja template.
pub fn holds_template(json: &serde_json::Value) -> bool {
    match json {
        serde_json::Value::String(text) => text.contains("{{") || text.contains("{%"),
        serde_json::Value::Array(items) => items.iter().any(holds_template),
        serde_json::Value::Object(fields) => fields.values().any(holds_template),
        _ => false,
    }
}

/// The typed value of a rendered template: `true`/`false` (any case), a number, or the text.
pub fn rendered_value(text: &str) -> serde_json::Value {
    let trimmed = text.trim();
    match trimmed.to_ascii_lowercase().as_str() {
        "true" => return serde_json::Value::Bool(true),
        "false" => return serde_json::Value::Bool(false),
        "none" | "null" => return serde_json::Value::Null,
        _ => {}
    }
    if let Ok(number) = trimmed.parse::<i64>() {
        return serde_json::Value::from(number);
    }
    serde_json::Value::String(trimmed.to_string())
}

/// Keys that configure a node, as opposed to folder names in the `models:` block.
pub const CONFIG_KEYS: [&str; 49] = [
    "enabled",
    "materialized",
    "schema",
    "alias",
    "tags",
    "unique_key",
    "incremental_strategy",
    "partition_by",
    "pre_hook",
    "post_hook",
    "pre-hook",
    "post-hook",
    "on_schema_change",
    "full_refresh",
    "column_types",
    "severity",
    "where",
    "store_failures",
    "warn_if",
    "error_if",
    "retries",
    "meta",
    // Snapshots.
    "strategy",
    "updated_at",
    "check_cols",
    "target_schema",
    "target_database",
    "hard_deletes",
    "invalidate_hard_deletes",
    "snapshot_meta_column_names",
    "dbt_valid_to_current",
    // Other dbt settings, kept for `config.get` (Strata does not act on them).
    "quote_columns",
    "delimiter",
    "database",
    "persist_docs",
    "docs",
    "grants",
    "contract",
    "access",
    "group",
    "sql_header",
    "on_configuration_change",
    "limit",
    "fail_calc",
    "store_failures_as",
    "event_time",
    "batch_size",
    "lookback",
    "concurrent_batches",
];

impl ConfigLayer {
    /// Sets `key` from a value, returning a diagnostic when the value has the wrong shape.
    ///
    /// Unknown keys are kept in `extra` so existing dbt projects with adapter-specific settings
    /// keep compiling.
    pub fn set(&mut self, key: &str, json: &serde_json::Value) -> Result<(), String> {
        if holds_template(json) && !HOOK_KEYS.contains(&key) {
            self.templated.insert(key.to_string(), json.clone());
            return Ok(());
        }
        let json = json.clone();
        match key {
            INTEGER_DIVISION => {
                let value = expect_string(key, &json)?;
                if !matches!(value.as_str(), "fractional" | "truncate") {
                    return Err(format!(
                        "{INTEGER_DIVISION} is '{value}'; use 'fractional' (as DuckDB, the default) or 'truncate' (as PostgreSQL)"
                    ));
                }
                self.extra.insert(key.to_string(), json);
            }
            "enabled" => self.enabled = Some(expect_bool(key, &json)?),
            "materialized" => {
                let name = expect_string(key, &json)?;
                if name == EXTERNAL_MATERIALIZATION {
                    // dbt-duckdb's files at `location`: here a Delta table, with a warning.
                    self.materialized = Some(Materialization::Table);
                    self.extra
                        .insert(EXTERNAL_MATERIALIZATION.to_string(), json);
                    return Ok(());
                }
                self.materialized = Some(Materialization::parse(&name).ok_or_else(|| {
                    format!(
                        "unknown materialization '{name}'{}; use one of {}",
                        did_you_mean(&name, Materialization::FOR_MODELS.iter().copied()),
                        Materialization::FOR_MODELS.join(", ")
                    )
                })?);
            }
            "schema" => self.schema = optional_string(key, &json)?,
            "alias" => self.alias = optional_string(key, &json)?,
            "tags" => self.tags = string_list(key, &json)?,
            "unique_key" => self.unique_key = Some(string_list(key, &json)?),
            "incremental_strategy" => {
                let name = expect_string(key, &json)?;
                match IncrementalStrategy::parse(&name) {
                    Some(strategy) => self.incremental_strategy = Some(strategy),
                    // dbt accepts any name while parsing (other adapters have other
                    // strategies); an incremental run of the model fails, naming it.
                    None => {
                        self.extra.insert(UNSUPPORTED_STRATEGY.to_string(), json);
                    }
                }
            }
            "partition_by" => self.partition_by = Some(partition_columns(&json)?),
            "pre_hook" | "pre-hook" => self.pre_hook = Some(hook_list(key, &json)?),
            "post_hook" | "post-hook" => self.post_hook = Some(hook_list(key, &json)?),
            "on_schema_change" => {
                let name = expect_string(key, &json)?;
                self.on_schema_change = Some(OnSchemaChange::parse(&name).ok_or_else(|| {
                    format!(
                        "unknown on_schema_change '{name}'; use one of {}",
                        OnSchemaChange::NAMES.join(", ")
                    )
                })?);
            }
            "full_refresh" => {
                self.full_refresh = if json.is_null() {
                    None
                } else {
                    Some(expect_bool(key, &json)?)
                }
            }
            "column_types" => {
                let serde_json::Value::Object(map) = &json else {
                    return Err(format!(
                        "'column_types' must be a mapping, found {}",
                        json_kind(&json)
                    ));
                };
                for (column, data_type) in map {
                    self.column_types
                        .insert(column.clone(), expect_string(column, data_type)?);
                }
            }
            "severity" => {
                let name = expect_string(key, &json)?;
                self.severity = Some(match name.to_ascii_lowercase().as_str() {
                    "error" => TestSeverity::Error,
                    "warn" | "warning" => TestSeverity::Warn,
                    _ => return Err(format!("unknown severity '{name}'; use error or warn")),
                });
            }
            "where" => self.where_clause = optional_string(key, &json)?,
            "store_failures" => self.store_failures = Some(expect_bool(key, &json)?),
            "warn_if" => self.warn_if = Some(condition(key, &json)?),
            "error_if" => self.error_if = Some(condition(key, &json)?),
            "retries" => {
                let retries = json
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| format!("'retries' must be a whole number, found {json}"))?;
                self.retries = Some(retries);
            }
            _ => {
                self.extra.insert(key.to_string(), json);
            }
        }
        Ok(())
    }
}

fn json_kind(json: &serde_json::Value) -> &'static str {
    match json {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a mapping",
    }
}

fn expect_bool(key: &str, json: &serde_json::Value) -> Result<bool, String> {
    match json {
        serde_json::Value::Bool(flag) => Ok(*flag),
        serde_json::Value::String(text) if text.eq_ignore_ascii_case("true") => Ok(true),
        serde_json::Value::String(text) if text.eq_ignore_ascii_case("false") => Ok(false),
        other => Err(format!(
            "'{key}' must be true or false, found {}",
            json_kind(other)
        )),
    }
}

fn expect_string(key: &str, json: &serde_json::Value) -> Result<String, String> {
    match json {
        serde_json::Value::String(text) => Ok(text.clone()),
        serde_json::Value::Number(number) => Ok(number.to_string()),
        other => Err(format!(
            "'{key}' must be a string, found {}",
            json_kind(other)
        )),
    }
}

fn optional_string(key: &str, json: &serde_json::Value) -> Result<Option<String>, String> {
    if json.is_null() {
        Ok(None)
    } else {
        expect_string(key, json).map(Some)
    }
}

fn string_list(key: &str, json: &serde_json::Value) -> Result<Vec<String>, String> {
    match json {
        serde_json::Value::Null => Ok(Vec::new()),
        serde_json::Value::String(text) => Ok(vec![text.clone()]),
        serde_json::Value::Array(items) => {
            items.iter().map(|item| expect_string(key, item)).collect()
        }
        other => Err(format!(
            "'{key}' must be a string or a list of strings, found {}",
            json_kind(other)
        )),
    }
}

fn hook_list(key: &str, json: &serde_json::Value) -> Result<Vec<String>, String> {
    match json {
        serde_json::Value::Object(map) => match map.get("sql") {
            Some(sql) => Ok(vec![expect_string(key, sql)?]),
            None => Err(format!("'{key}' as a mapping needs a 'sql' key")),
        },
        serde_json::Value::Array(items) => {
            let mut hooks = Vec::new();
            for item in items {
                hooks.extend(hook_list(key, item)?);
            }
            Ok(hooks)
        }
        other => string_list(key, other),
    }
}

/// `partition_by` as a column, a list of columns, or dbt's `{field: ..., data_type: ...}` form.
fn partition_columns(json: &serde_json::Value) -> Result<Vec<String>, String> {
    match json {
        serde_json::Value::Object(map) => match map.get("field") {
            Some(field) => Ok(vec![expect_string("partition_by.field", field)?]),
            None => Err(String::from(
                "'partition_by' as a mapping needs a 'field' key",
            )),
        },
        other => string_list("partition_by", other),
    }
}

/// A `warn_if` / `error_if` condition: a comparison operator followed by a number.
fn condition(key: &str, json: &serde_json::Value) -> Result<String, String> {
    let text = expect_string(key, json)?;
    parse_condition(&text)
        .map(|_| text.trim().to_string())
        .ok_or_else(|| format!("'{key}' must look like '>10', '!=0' or '>=1', found '{text}'"))
}

/// Parses a test condition such as `>10` into an operator and a threshold.
pub fn parse_condition(text: &str) -> Option<(&'static str, u64)> {
    let text = text.trim();
    for operator in [">=", "<=", "!=", "<>", "==", ">", "<", "="] {
        if let Some(rest) = text.strip_prefix(operator) {
            let threshold = rest.trim().parse().ok()?;
            let canonical = match operator {
                "<>" => "!=",
                "==" | "=" => "=",
                ">=" => ">=",
                "<=" => "<=",
                "!=" => "!=",
                ">" => ">",
                _ => "<",
            };
            return Some((canonical, threshold));
        }
    }
    None
}

/// Returns ` (did you mean 'x'?)` for the closest candidate, or an empty string.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(name, candidates)
        .map(|best| format!(" (did you mean '{best}'?)"))
        .unwrap_or_default()
}

/// Returns the candidate closest to `name`, when one is close enough to be a likely typo.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (strsim::jaro_winkler(name, candidate), candidate))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(_, candidate)| candidate)
}

/// Whether a known config key written without `+` in a folder block of the project file is a
/// setting rather than a folder, as dbt reads it: a setting unless its value is a mapping
/// (or empty), except for the settings whose values are mappings.
fn bare_key_is_config(name: &str, value: &Yaml) -> bool {
    !value.is_null()
        && (value.entries().is_none()
            || matches!(
                name,
                "meta" | "column_types" | "partition_by" | "snapshot_meta_column_names"
            ))
}

/// Reads every `+key` (or bare config key) of a YAML mapping into a layer, reporting errors
/// at the value's position. Other keys are returned for the caller (folder names).
pub fn read_config_mapping<'a>(
    mapping: &'a Yaml,
    source: &SourceText,
    bare_keys_are_config: bool,
    layer: &mut ConfigLayer,
    errors: &mut Vec<ProjectDiagnostic>,
) -> Vec<(&'a str, &'a Yaml)> {
    let mut rest = Vec::new();
    let Some(entries) = mapping.entries() else {
        if !mapping.is_null() {
            errors.push(
                ProjectDiagnostic::error(
                    "strata::config",
                    format!("expected a mapping of settings, found {}", mapping.kind()),
                )
                .at(source, mapping.line, mapping.column),
            );
        }
        return rest;
    };
    for (key, value) in entries {
        let (name, is_config) = match key.name.strip_prefix('+') {
            Some(stripped) => (stripped, true),
            None => (
                key.name.as_str(),
                CONFIG_KEYS.contains(&key.name.as_str())
                    && (bare_keys_are_config || bare_key_is_config(&key.name, value)),
            ),
        };
        if !is_config {
            rest.push((key.name.as_str(), value));
            continue;
        }
        if name == "config" {
            // `+config:` is not a dbt key; read it as a nested block for friendliness.
            rest.extend(read_config_mapping(value, source, true, layer, errors));
            continue;
        }
        if let Err(message) = layer.set(name, &value.to_json()) {
            errors.push(ProjectDiagnostic::error("strata::config", message).at(
                source,
                value.line.max(key.line),
                if value.line > 0 {
                    value.column
                } else {
                    key.column
                },
            ));
        }
    }
    rest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_layers_win_and_tags_add_up() {
        let mut outer = ConfigLayer::default();
        outer.set("materialized", &"view".into()).unwrap();
        outer.set("tags", &"nightly".into()).unwrap();
        let mut inner = ConfigLayer::default();
        inner.set("materialized", &"table".into()).unwrap();
        inner
            .set("tags", &serde_json::json!(["pii", "nightly"]))
            .unwrap();
        let config = NodeConfig::resolve(Materialization::View, [&outer, &inner]);
        assert_eq!(config.materialized, Materialization::Table);
        assert_eq!(config.tags, vec!["nightly", "pii"]);
    }

    #[test]
    fn external_is_a_table_until_a_later_layer_chooses_otherwise() {
        let mut folder = ConfigLayer::default();
        folder
            .set("materialized", &serde_json::json!("external"))
            .unwrap();
        let resolved = NodeConfig::resolve(Materialization::View, [&folder]);
        assert_eq!(resolved.materialized, Materialization::Table);
        assert!(resolved.extra.contains_key(EXTERNAL_MATERIALIZATION));
        let mut model = ConfigLayer::default();
        model
            .set("materialized", &serde_json::json!("view"))
            .unwrap();
        let resolved = NodeConfig::resolve(Materialization::View, [&folder, &model]);
        assert_eq!(resolved.materialized, Materialization::View);
        assert!(!resolved.extra.contains_key(EXTERNAL_MATERIALIZATION));
    }

    #[test]
    fn what_dbt_lets_through_is_kept_for_the_run_or_rendered_later() {
        let mut layer = ConfigLayer::default();
        layer
            .set("incremental_strategy", &"microbatch".into())
            .unwrap();
        assert_eq!(layer.incremental_strategy, None);
        assert_eq!(layer.extra[UNSUPPORTED_STRATEGY], "microbatch");
        layer
            .set("enabled", &"{{ var('x', true) }}".into())
            .unwrap();
        assert_eq!(layer.templated["enabled"], "{{ var('x', true) }}");
        layer
            .set(
                "column_types",
                &serde_json::json!({"id": "{{ 'bigint' }}", "name": "varchar"}),
            )
            .unwrap();
        assert!(layer.templated.contains_key("column_types"));
        assert_eq!(layer.enabled, None);
        let err = layer.set("integer_division", &"floor".into()).unwrap_err();
        assert!(err.contains("'fractional'"), "{err}");
        assert_eq!(rendered_value(" True "), serde_json::Value::Bool(true));
        assert_eq!(rendered_value("12"), serde_json::json!(12));
    }

    #[test]
    fn bad_values_explain_what_is_expected() {
        let mut layer = ConfigLayer::default();
        let err = layer.set("materialized", &"tabel".into()).unwrap_err();
        assert!(err.contains("did you mean 'table'"), "{err}");
        let err = layer.set("enabled", &serde_json::json!(3)).unwrap_err();
        assert_eq!(err, "'enabled' must be true or false, found a number");
        let err = layer.set("warn_if", &"lots".into()).unwrap_err();
        assert!(err.contains("'>10'"), "{err}");
    }

    #[test]
    fn conditions_parse() {
        assert_eq!(parse_condition(">10"), Some((">", 10)));
        assert_eq!(parse_condition(" != 0 "), Some(("!=", 0)));
        assert_eq!(parse_condition("<>3"), Some(("!=", 3)));
        assert_eq!(parse_condition("ten"), None);
    }

    #[test]
    fn partition_by_accepts_dbt_mapping_form() {
        let mut layer = ConfigLayer::default();
        let json = serde_json::json!({"field": "event_date", "data_type": "date"});
        layer.set("partition_by", &json).unwrap();
        assert_eq!(layer.partition_by, Some(vec![String::from("event_date")]));
    }
}
