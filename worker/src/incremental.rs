//! Incremental models: the SQL that folds a model's new rows into its existing table.
//!
//! The existing table is an input registered under the model's own relation (what
//! `{{ this }}` renders to), pinned at its current version. Keys are compared with
//! `IS NOT DISTINCT FROM`, so a row whose key has NULLs replaces its predecessor instead of
//! duplicating it (the pitfall of dbt-core #7873).

use std::collections::BTreeSet;

use datafusion::common::TableReference;
use datafusion::prelude::SessionContext;
use strata_proto::v1::Incremental;

use strata_engine::TaskError;
use strata_engine::identifiers::quoted as quote;

/// How the coordinator must commit the output of an incremental task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitMode {
    /// Add the files to the table (`append`).
    Append,
    /// Replace the table's content with the files (the other strategies write the whole
    /// resulting table).
    Overwrite,
}

/// Builds the SQL producing what the task writes, and how it must be committed.
///
/// # Errors
/// Returns a user error for a schema change under `on_schema_change: fail`, or for keys and
/// partition columns missing from the model.
pub async fn incremental_sql(
    ctx: &SessionContext,
    model_sql: &str,
    incremental: &Incremental,
) -> Result<(String, CommitMode), TaskError> {
    let this = format!(
        "{}.{}",
        quote(&incremental.this_schema),
        quote(&incremental.this_name)
    );
    let new_columns: Vec<String> = ctx
        .sql(model_sql)
        .await?
        .schema()
        .fields()
        .iter()
        .map(|field| field.name().clone())
        .collect();
    let reference = TableReference::partial(
        incremental.this_schema.clone(),
        incremental.this_name.clone(),
    );
    let old_schema = ctx.table(reference).await?.schema().clone();
    let old_columns: Vec<String> = old_schema
        .fields()
        .iter()
        .map(|field| field.name().clone())
        .collect();
    let new_set: BTreeSet<&String> = new_columns.iter().collect();
    let old_set: BTreeSet<&String> = old_columns.iter().collect();
    let added: Vec<&String> = new_columns
        .iter()
        .filter(|column| !old_set.contains(column))
        .collect();
    let removed: Vec<&String> = old_columns
        .iter()
        .filter(|column| !new_set.contains(column))
        .collect();

    let columns: Vec<String> = match incremental.on_schema_change.as_str() {
        "fail" if !added.is_empty() || !removed.is_empty() => {
            return Err(TaskError::user(format!(
                "the model's columns changed (added: {added:?}, removed: {removed:?}) and on_schema_change is 'fail'; run with --full-refresh or set on_schema_change"
            )));
        }
        "append_new_columns" => old_columns
            .iter()
            .cloned()
            .chain(added.iter().map(|column| (*column).clone()))
            .collect(),
        "sync_all_columns" => new_columns.clone(),
        _ => old_columns.clone(),
    };
    let project = |available: &BTreeSet<&String>, source: &str| -> String {
        columns
            .iter()
            .map(|column| {
                if available.contains(column) {
                    format!("{source}.{}", quote(column))
                } else {
                    // A column the other side lacks: NULL of the right type.
                    let data_type = old_schema
                        .field_with_unqualified_name(column)
                        .map(|field| field.data_type().to_string())
                        .ok();
                    match data_type {
                        Some(data_type) if sql_type(&data_type).is_some() => {
                            format!(
                                "cast(null as {}) as {}",
                                sql_type(&data_type).unwrap_or_default(),
                                quote(column)
                            )
                        }
                        _ => format!("null as {}", quote(column)),
                    }
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let new_rows = format!(
        "select {} from ({model_sql}) as __strata_new",
        project(&new_set, "__strata_new")
    );
    let keys: &[String] = match incremental.strategy.as_str() {
        "append" => return Ok((new_rows, CommitMode::Append)),
        "insert_overwrite" => &incremental.partition_by,
        _ => &incremental.unique_key,
    };
    if keys.is_empty() {
        let what = if incremental.strategy == "insert_overwrite" {
            "partition_by"
        } else {
            "unique_key"
        };
        return Err(TaskError::user(format!(
            "incremental_strategy '{}' needs {what}",
            incremental.strategy
        )));
    }
    for key in keys {
        if !new_set.contains(key) || !old_set.contains(key) {
            return Err(TaskError::user(format!(
                "key column '{key}' must be a column of the model and of its table"
            )));
        }
    }
    let matches: Vec<String> = keys
        .iter()
        .map(|key| {
            format!(
                // Parenthesized: the SQL parser would otherwise read `b AND c` as one operand.
                "(__strata_old.{0} is not distinct from __strata_incoming.{0})",
                quote(key)
            )
        })
        .collect();
    let old_rows = format!(
        "select {} from {this} as __strata_old",
        project(&old_set, "__strata_old")
    );
    let sql = format!(
        "with __strata_incoming as ({new_rows})\n\
         select * from __strata_incoming\n\
         union all\n\
         select __strata_kept.* from ({old_rows}) as __strata_kept\n\
         where not exists (select 1 from __strata_incoming where {})",
        matches
            .join(" and ")
            .replace("__strata_old.", "__strata_kept.")
    );
    Ok((sql, CommitMode::Overwrite))
}

/// SQL type for an Arrow type name, for typed NULLs.
fn sql_type(arrow: &str) -> Option<&'static str> {
    Some(match arrow {
        "Int8" | "Int16" | "Int32" => "int",
        "Int64" => "bigint",
        "Float32" => "real",
        "Float64" => "double",
        "Utf8" | "LargeUtf8" | "Utf8View" => "varchar",
        "Boolean" => "boolean",
        "Date32" => "date",
        _ if arrow.starts_with("Timestamp") => "timestamp",
        _ => return None,
    })
}
