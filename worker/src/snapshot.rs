//! Snapshots: the SQL that folds a snapshot query's rows into its history table (SCD type 2),
//! with dbt's semantics.
//!
//! The first run stores every row as current (`dbt_valid_to` NULL, or the
//! `dbt_valid_to_current` value). A later run, against the table pinned at its current version
//! (an input named as the snapshot's relation):
//!
//! - a current row whose entity changed (the `timestamp` strategy: its `dbt_valid_from` is
//!   earlier than the new `updated_at`; `check`: a checked column differs, NULLs compared as
//!   values) is closed, `dbt_valid_to` taking the new change time, and the new version is added;
//! - an entity new to the table is added;
//! - an entity gone from the query is, as `hard_deletes` says, left alone, closed at the
//!   snapshot time, or closed with a new current row marking the deletion;
//! - rows already closed never change.
//!
//! The result is the whole table, committed as one Delta transaction that replaces it. Keys
//! are compared with `=` as dbt does, so a row whose key is NULL never matches. Columns new to
//! the query are added to the table; columns gone from it become NULL in new rows. The added
//! columns take the names `snapshot_meta_column_names` gives them.

use std::collections::BTreeSet;

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::common::TableReference;
use datafusion::prelude::SessionContext;
use strata_proto::v1::Snapshot;

use strata_engine::TaskError;
use strata_engine::identifiers::quoted as quote;

/// The Arrow type of snapshot times: a Delta timestamp's precision.
const MICROS: &str = "Timestamp(µs)";

/// The columns a snapshot adds to its query's, as named in its table.
struct MetaNames {
    scd_id: String,
    updated_at: String,
    valid_from: String,
    valid_to: String,
    is_deleted: String,
}

impl MetaNames {
    fn of(snapshot: &Snapshot) -> MetaNames {
        let name = |dbt: &str| {
            snapshot
                .column_names
                .get(dbt)
                .cloned()
                .unwrap_or_else(|| dbt.to_string())
        };
        MetaNames {
            scd_id: name("dbt_scd_id"),
            updated_at: name("dbt_updated_at"),
            valid_from: name("dbt_valid_from"),
            valid_to: name("dbt_valid_to"),
            is_deleted: name("dbt_is_deleted"),
        }
    }
}

/// What an added column of a new row holds.
enum Meta {
    ScdId,
    ChangeTime,
    ValidTo,
    IsDeleted,
}

/// Builds the SQL producing the snapshot's whole table after this run.
///
/// # Errors
/// A user error when the query lacks what the settings name, or the table lacks the
/// snapshot columns.
pub async fn snapshot_sql(
    ctx: &SessionContext,
    query: &str,
    snapshot: &Snapshot,
) -> Result<String, TaskError> {
    let source = ctx.sql(query).await?.schema().as_arrow().clone();
    let plan = SnapshotPlan::new(query, snapshot, &source);
    if !snapshot.existing {
        return Ok(plan.first_run());
    }
    let reference =
        TableReference::partial(snapshot.this_schema.clone(), snapshot.this_name.clone());
    let table = ctx.table(reference).await?.schema().as_arrow().clone();
    for column in plan.meta_columns() {
        if table.field_with_name(column).is_err() {
            return Err(TaskError::user(format!(
                "the snapshot's table has no column '{column}': it was not written by a snapshot with these settings; drop the table or point the snapshot elsewhere"
            )));
        }
    }
    Ok(plan.later_run(&table))
}

/// What both kinds of run are made of.
struct SnapshotPlan<'a> {
    query: &'a str,
    snapshot: &'a Snapshot,
    names: MetaNames,
    /// The query's columns, in order.
    columns: Vec<String>,
    /// The change time of a source row, over `source_data`'s columns.
    updated_at: String,
    /// The snapshot time as a SQL timestamp.
    now: String,
    /// Whether `updated_at` is a timestamp column: its text in `dbt_scd_id` is DuckDB's.
    timestamp_updated_at: bool,
}

impl<'a> SnapshotPlan<'a> {
    fn new(query: &'a str, snapshot: &'a Snapshot, source: &Schema) -> SnapshotPlan<'a> {
        let now = format!("to_timestamp_micros({})", snapshot.snapshot_time_micros);
        let updated_at = if snapshot.updated_at.is_empty() {
            now.clone()
        } else {
            snapshot.updated_at.clone()
        };
        let timestamp_updated_at = snapshot.updated_at.is_empty()
            || source
                .fields()
                .iter()
                .find(|field| field.name().eq_ignore_ascii_case(&snapshot.updated_at))
                .is_some_and(|field| matches!(field.data_type(), DataType::Timestamp(_, _)));
        SnapshotPlan {
            query,
            snapshot,
            names: MetaNames::of(snapshot),
            columns: source.fields().iter().map(|f| f.name().clone()).collect(),
            updated_at,
            now,
            timestamp_updated_at,
        }
    }

    fn new_record(&self) -> bool {
        self.snapshot.hard_deletes == "new_record"
    }

    fn meta_columns(&self) -> Vec<&str> {
        let names = &self.names;
        let mut columns = vec![
            names.scd_id.as_str(),
            names.updated_at.as_str(),
            names.valid_from.as_str(),
            names.valid_to.as_str(),
        ];
        if self.new_record() {
            columns.push(names.is_deleted.as_str());
        }
        columns
    }

    /// Which added column `column` of the table is, if any.
    fn meta(&self, column: &str) -> Option<Meta> {
        let names = &self.names;
        Some(if column == names.scd_id {
            Meta::ScdId
        } else if column == names.updated_at || column == names.valid_from {
            Meta::ChangeTime
        } else if column == names.valid_to {
            Meta::ValidTo
        } else if column == names.is_deleted && self.new_record() {
            Meta::IsDeleted
        } else {
            return None;
        })
    }

    /// `dbt_valid_to_current` as a value of the change time's type: microseconds for
    /// timestamps, which (unlike DataFusion's default nanoseconds) reach the year 9999.
    fn current_value(&self) -> Option<String> {
        match self.snapshot.valid_to_current.as_str() {
            "" => None,
            current if self.timestamp_updated_at => {
                Some(format!("arrow_cast(({current}), '{MICROS}')"))
            }
            current => Some(format!("({current})")),
        }
    }

    /// Whether the `dbt_valid_to` column `valid_to` marks a current row.
    fn is_current(&self, valid_to: &str) -> String {
        match self.current_value() {
            None => format!("{valid_to} is null"),
            Some(current) => format!("({valid_to} is null or {valid_to} = {current})"),
        }
    }

    /// `dbt_valid_to` of a current row, typed as the change time `time`.
    fn open_valid_to(&self, time: &str) -> String {
        match self.current_value() {
            None => format!("nullif({time}, {time})"),
            Some(current) if self.timestamp_updated_at => {
                format!("coalesce(arrow_cast(nullif({time}, {time}), '{MICROS}'), {current})")
            }
            Some(current) => format!("coalesce(nullif({time}, {time}), {current})"),
        }
    }

    /// `md5` of the key and the change time as text, as dbt's `snapshot_hash_arguments`
    /// with DuckDB's text for timestamps (`2024-01-02 03:04:05.5`).
    fn scd_id(&self, updated_at: &str) -> String {
        let time = if self.timestamp_updated_at {
            duckdb_text(updated_at)
        } else {
            format!("cast({updated_at} as varchar)")
        };
        let parts: Vec<String> = self
            .snapshot
            .unique_key
            .iter()
            .map(|key| format!("coalesce(cast({key} as varchar), '')"))
            .chain(std::iter::once(format!("coalesce({time}, '')")))
            .collect();
        format!("md5({})", parts.join(" || '|' || "))
    }

    /// The query's rows with their keys and change time beside them.
    fn source_data(&self) -> String {
        format!(
            "snapshot_query as ({}),\n\
             source_data as (select *, {}, {} as __strata_updated_at from snapshot_query)",
            self.query,
            self.keys(),
            self.updated_at
        )
    }

    fn keys(&self) -> String {
        self.snapshot
            .unique_key
            .iter()
            .enumerate()
            .map(|(index, key)| format!("({key}) as __strata_key_{index}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn keys_match(&self, left: &str, right: &str) -> String {
        (0..self.snapshot.unique_key.len())
            .map(|index| format!("{left}.__strata_key_{index} = {right}.__strata_key_{index}"))
            .collect::<Vec<_>>()
            .join(" and ")
    }

    /// The first run: every row, current.
    fn first_run(&self) -> String {
        let names = &self.names;
        let columns: Vec<String> = self.columns.iter().map(|c| quote(c)).collect();
        let deleted = if self.new_record() {
            format!(", 'False' as {}", quote(&names.is_deleted))
        } else {
            String::new()
        };
        format!(
            "with {}\n\
             select {}, {} as {}, __strata_updated_at as {}, __strata_updated_at as {}, \
             {} as {}{deleted}\n\
             from source_data",
            self.source_data(),
            columns.join(", "),
            self.scd_id("__strata_updated_at"),
            quote(&names.scd_id),
            quote(&names.updated_at),
            quote(&names.valid_from),
            self.open_valid_to("__strata_updated_at"),
            quote(&names.valid_to),
        )
    }

    /// Whether the current row `current_rows` and the source row `source_data` differ.
    fn row_changed(&self, table: &Schema) -> String {
        let changed = if self.snapshot.strategy == "timestamp" {
            format!(
                "current_rows.{} < source_data.__strata_updated_at",
                quote(&self.names.valid_from)
            )
        } else {
            let checked: Vec<String> = if self.snapshot.check_all {
                if self
                    .columns
                    .iter()
                    .any(|column| table.field_with_name(column).is_err())
                {
                    // dbt: a column new to the query makes every row a new version.
                    return String::from("true");
                }
                self.columns.iter().map(|c| quote(c)).collect()
            } else {
                self.snapshot.check_cols.clone()
            };
            checked
                .iter()
                .map(|column| {
                    format!(
                        "current_rows.{column} <> source_data.{column} \
                         or (current_rows.{column} is null) <> (source_data.{column} is null)"
                    )
                })
                .collect::<Vec<_>>()
                .join(" or ")
        };
        if self.new_record() {
            format!(
                "({changed}) or current_rows.{} = 'True'",
                quote(&self.names.is_deleted)
            )
        } else {
            format!("({changed})")
        }
    }

    /// A later run: closed rows kept, current rows closed where they changed or left, new
    /// versions and new entities added.
    fn later_run(&self, table: &Schema) -> String {
        let table_columns: Vec<String> = table.fields().iter().map(|f| f.name().clone()).collect();
        let known: BTreeSet<&String> = table_columns.iter().collect();
        let added: Vec<&String> = self.columns.iter().filter(|c| !known.contains(c)).collect();
        let typed = |expression: String, column: &str| -> String {
            match table.field_with_name(column) {
                Ok(field) => format!(
                    "arrow_cast({expression}, '{}') as {}",
                    field.data_type(),
                    quote(column)
                ),
                Err(_) => format!("{expression} as {}", quote(column)),
            }
        };
        let mut selects = vec![
            self.kept_rows(&table_columns, &added, &typed),
            self.new_versions(&table_columns, &added, &typed),
        ];
        if self.new_record() {
            selects.push(self.deletion_records(&table_columns, &added, &typed));
        }
        format!(
            "with {}\n{}",
            self.later_ctes(table).join(",\n"),
            selects.join("\nunion all\n")
        )
    }

    fn target(&self) -> String {
        format!(
            "{}.{}",
            quote(&self.snapshot.this_schema),
            quote(&self.snapshot.this_name)
        )
    }

    /// The source rows, the current rows, what is inserted, what left, and which current
    /// rows close when.
    fn later_ctes(&self, table: &Schema) -> Vec<String> {
        let (target, names) = (self.target(), &self.names);
        let keys = self.keys_match("source_data", "current_rows");
        let changed = self.row_changed(table);
        let scd_id = quote(&names.scd_id);
        let mut ctes = vec![
            self.source_data(),
            format!(
                "current_rows as (select *, {} from {target} where {})",
                self.keys(),
                self.is_current(&quote(&names.valid_to))
            ),
            format!(
                "inserted as (select source_data.* from source_data left join current_rows \
                 on {keys} where current_rows.__strata_key_0 is null or {changed})"
            ),
            format!(
                "deleted as (select current_rows.* from current_rows left join source_data \
                 on {keys} where source_data.__strata_key_0 is null{})",
                if self.new_record() {
                    format!(
                        " and not current_rows.{} = 'True'",
                        quote(&names.is_deleted)
                    )
                } else {
                    String::new()
                }
            ),
        ];
        let mut closing = vec![format!(
            "select current_rows.{scd_id} as __strata_closed, \
             source_data.__strata_updated_at as __strata_valid_to \
             from source_data join current_rows on {keys} where {changed}"
        )];
        if self.snapshot.hard_deletes != "ignore" {
            closing.push(format!("select {scd_id}, {} from deleted", self.now));
        }
        ctes.push(format!(
            "closings as (select __strata_closed, min(__strata_valid_to) as __strata_valid_to \
             from ({}) as __strata_closing group by __strata_closed)",
            closing.join(" union all ")
        ));
        ctes
    }

    /// The table's rows, current ones closed where `closings` says.
    fn kept_rows(
        &self,
        table_columns: &[String],
        added: &[&String],
        typed: &dyn Fn(String, &str) -> String,
    ) -> String {
        let valid_to = format!("__strata_table.{}", quote(&self.names.valid_to));
        let kept: Vec<String> = table_columns
            .iter()
            .map(|column| match self.meta(column) {
                Some(Meta::ValidTo) => typed(
                    format!(
                        "case when closings.__strata_closed is null then {valid_to} \
                         else closings.__strata_valid_to end"
                    ),
                    column,
                ),
                _ => format!("__strata_table.{}", quote(column)),
            })
            .chain(
                added
                    .iter()
                    .map(|column| format!("null as {}", quote(column))),
            )
            .collect();
        format!(
            "select {} from {} as __strata_table left join closings \
             on __strata_table.{} = closings.__strata_closed and {}",
            kept.join(", "),
            self.target(),
            quote(&self.names.scd_id),
            self.is_current(&valid_to)
        )
    }

    /// New entities and new versions of changed ones, current.
    fn new_versions(
        &self,
        table_columns: &[String],
        added: &[&String],
        typed: &dyn Fn(String, &str) -> String,
    ) -> String {
        let source_columns: BTreeSet<&String> = self.columns.iter().collect();
        let values: Vec<String> = table_columns
            .iter()
            .map(|column| {
                let value = match self.meta(column) {
                    Some(Meta::ScdId) => self.scd_id("__strata_updated_at"),
                    Some(Meta::ChangeTime) => String::from("__strata_updated_at"),
                    Some(Meta::ValidTo) => self.open_valid_to("__strata_updated_at"),
                    Some(Meta::IsDeleted) => String::from("'False'"),
                    None if source_columns.contains(column) => {
                        format!("inserted.{}", quote(column))
                    }
                    None => String::from("null"),
                };
                typed(value, column)
            })
            .chain(
                added
                    .iter()
                    .map(|column| format!("inserted.{}", quote(column))),
            )
            .collect();
        format!("select {} from inserted", values.join(", "))
    }

    /// `new_record`: a current row marking each deletion, with the deleted row's values.
    fn deletion_records(
        &self,
        table_columns: &[String],
        added: &[&String],
        typed: &dyn Fn(String, &str) -> String,
    ) -> String {
        let now = &self.now;
        let values: Vec<String> = table_columns
            .iter()
            .map(|column| {
                let value = match self.meta(column) {
                    Some(Meta::ScdId) => format!(
                        "md5(coalesce(cast(deleted.{} as varchar), '') || '|' || coalesce({}, ''))",
                        quote(column),
                        duckdb_text(now)
                    ),
                    Some(Meta::ChangeTime) => now.clone(),
                    Some(Meta::IsDeleted) => String::from("'True'"),
                    Some(Meta::ValidTo) | None => format!("deleted.{}", quote(column)),
                };
                typed(value, column)
            })
            .chain(
                added
                    .iter()
                    .map(|column| format!("null as {}", quote(column))),
            )
            .collect();
        format!("select {} from deleted", values.join(", "))
    }
}

/// A timestamp as DuckDB writes it as text (`2024-01-02 03:04:05.5`: no trailing zeros).
fn duckdb_text(timestamp: &str) -> String {
    format!("regexp_replace(to_char({timestamp}, '%Y-%m-%d %H:%M:%S%.6f'), '\\.?0+$', '')")
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::util::pretty::pretty_format_batches;

    use super::*;

    /// Runs a snapshot over the source rows `values` (id, tier, updated_at) against the table
    /// `public.history` (when `existing`), stores the result there and shows it.
    async fn snapshot_run(ctx: &SessionContext, snapshot: &Snapshot, values: &str) -> String {
        ctx.deregister_table("src").ok();
        ctx.sql(&format!(
            "create table src as select column1 as id, column2 as tier, \
             cast(column3 as timestamp) as updated_at from (values {values})"
        ))
        .await
        .unwrap_or_else(|err| panic!("{err}"));
        let sql = snapshot_sql(ctx, "select * from src", snapshot)
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        let batches = ctx
            .sql(&sql)
            .await
            .unwrap_or_else(|err| panic!("{err}\n{sql}"))
            .collect()
            .await
            .unwrap_or_else(|err| panic!("{err}\n{sql}"));
        ctx.deregister_table("history").ok();
        let schema = batches[0].schema();
        let table = datafusion::datasource::MemTable::try_new(schema, vec![batches])
            .unwrap_or_else(|err| panic!("{err}"));
        ctx.register_table("history", std::sync::Arc::new(table))
            .unwrap_or_else(|err| panic!("{err}"));
        let shown = ctx
            .sql(
                "select id, tier, dbt_valid_from, dbt_valid_to, dbt_updated_at = dbt_valid_from as same \
                 from history order by id, dbt_valid_from",
            )
            .await
            .unwrap_or_else(|err| panic!("{err}"))
            .collect()
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        pretty_format_batches(&shown)
            .unwrap_or_else(|err| panic!("{err}"))
            .to_string()
    }

    fn settings(strategy: &str, hard_deletes: &str) -> Snapshot {
        Snapshot {
            strategy: strategy.to_string(),
            unique_key: vec![String::from("id")],
            updated_at: if strategy == "timestamp" {
                String::from("updated_at")
            } else {
                String::new()
            },
            check_cols: vec![String::from("tier")],
            hard_deletes: hard_deletes.to_string(),
            this_schema: String::from("public"),
            this_name: String::from("history"),
            // 2030-01-01 00:00:00 UTC
            snapshot_time_micros: 1_893_456_000_000_000,
            ..Snapshot::default()
        }
    }

    #[tokio::test]
    async fn timestamp_strategy_closes_changed_and_deleted_rows() {
        let ctx = SessionContext::new();
        let mut snapshot = settings("timestamp", "invalidate");
        snapshot_run(
            &ctx,
            &snapshot,
            "(1, 'gold', '2024-01-01 10:00:00'), (2, 'silver', '2024-01-01 10:00:00')",
        )
        .await;
        snapshot.existing = true;
        // 1 changes (a later updated_at), 2 leaves, 3 arrives.
        let shown = snapshot_run(
            &ctx,
            &snapshot,
            "(1, 'bronze', '2024-01-02 09:30:00.5'), (3, 'gold', '2024-01-02 08:00:00')",
        )
        .await;
        let expected = "\
+----+--------+-------------------------+-------------------------+------+
| id | tier   | dbt_valid_from          | dbt_valid_to            | same |
+----+--------+-------------------------+-------------------------+------+
| 1  | gold   | 2024-01-01T10:00:00     | 2024-01-02T09:30:00.500 | true |
| 1  | bronze | 2024-01-02T09:30:00.500 |                         | true |
| 2  | silver | 2024-01-01T10:00:00     | 2030-01-01T00:00:00     | true |
| 3  | gold   | 2024-01-02T08:00:00     |                         | true |
+----+--------+-------------------------+-------------------------+------+";
        assert_eq!(shown, expected);
        // The same state again changes nothing.
        assert_eq!(
            snapshot_run(
                &ctx,
                &snapshot,
                "(1, 'bronze', '2024-01-02 09:30:00.5'), (3, 'gold', '2024-01-02 08:00:00')",
            )
            .await,
            expected
        );
    }

    #[tokio::test]
    async fn check_strategy_compares_nulls_as_values_and_ignores_deletes() {
        let ctx = SessionContext::new();
        let mut snapshot = settings("check", "ignore");
        snapshot_run(
            &ctx,
            &snapshot,
            "(1, 'gold', '2024-01-01'), (2, null, '2024-01-01')",
        )
        .await;
        snapshot.existing = true;
        snapshot.snapshot_time_micros += 86_400_000_000;
        let shown = snapshot_run(&ctx, &snapshot, "(2, 'silver', '2024-01-05')").await;
        let expected = "\
+----+--------+---------------------+---------------------+------+
| id | tier   | dbt_valid_from      | dbt_valid_to        | same |
+----+--------+---------------------+---------------------+------+
| 1  | gold   | 2030-01-01T00:00:00 |                     | true |
| 2  |        | 2030-01-01T00:00:00 | 2030-01-02T00:00:00 | true |
| 2  | silver | 2030-01-02T00:00:00 |                     | true |
+----+--------+---------------------+---------------------+------+";
        assert_eq!(shown, expected);
    }

    #[tokio::test]
    async fn a_table_without_snapshot_columns_is_refused() {
        let ctx = SessionContext::new();
        ctx.sql("create table history as select 1 as id")
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        ctx.sql("create table src as select 1 as id, 'a' as tier")
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        let mut snapshot = settings("check", "ignore");
        snapshot.existing = true;
        let err = snapshot_sql(&ctx, "select * from src", &snapshot)
            .await
            .err()
            .map(|err| err.to_string())
            .unwrap_or_default();
        assert!(err.contains("no column 'dbt_scd_id'"), "{err}");
    }
}
