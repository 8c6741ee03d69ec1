//! Compile-time queries (`run_query`, `statement` blocks) and the warehouse's table schemas
//! (`adapter.get_columns_in_relation`, `get_relation`) answered by DataFusion and delta-rs:
//! the compiler's [`CompileQueries`] for embedded and cluster runs and `strata compile`.
//!
//! A query sees the warehouse's tables as they are when compiling (`schema.table` names the
//! Delta table `<warehouse>/schema/table`), and constant queries such as the number of days
//! between two dates, which is what packages' date spines ask. A query naming a table that
//! does not exist fails with DataFusion's error naming the table.

use std::future::Future;

use datafusion::arrow::array::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::prelude::SessionContext;
use strata_core::jinja::{CompileQueries, QueryTable};
use strata_proto::v1::{DeltaInput, TaskInput, task_input};

use crate::TaskError;
use crate::session::{EngineConfig, query};

/// Runs compile-time queries with the engine.
#[derive(Debug, Clone, Default)]
pub struct EngineQueries {
    config: EngineConfig,
    /// The warehouse's root location (`file:///…`, `s3://…`), when there is one.
    warehouse: Option<String>,
}

impl EngineQueries {
    /// Queries under `config` (its memory pool and partitions), over no warehouse.
    pub fn new(config: EngineConfig) -> Self {
        Self {
            config,
            warehouse: None,
        }
    }

    /// The same, seeing the tables of the warehouse at `root`.
    pub fn with_warehouse(mut self, root: impl Into<String>) -> Self {
        self.warehouse = Some(root.into());
        self
    }

    fn table_uri(&self, schema: &str, identifier: &str) -> Option<String> {
        let root = self.warehouse.as_ref()?;
        Some(format!(
            "{}/{schema}/{identifier}",
            root.trim_end_matches('/')
        ))
    }

    /// The current version of each warehouse table `sql` names, as inputs.
    async fn tables_named(&self, sql: &str) -> Result<Vec<TaskInput>, TaskError> {
        let ctx = SessionContext::new();
        let statement = ctx
            .state()
            .sql_to_statement(sql, &datafusion::config::Dialect::Generic)?;
        let mut inputs = Vec::new();
        for reference in ctx.state().resolve_table_references(&statement)? {
            let (Some(schema), table) = (reference.schema(), reference.table()) else {
                continue;
            };
            let Some(uri) = self.table_uri(schema, table) else {
                continue;
            };
            if let Some(version) = current_version(&uri).await? {
                inputs.push(TaskInput {
                    schema: schema.to_string(),
                    name: table.to_string(),
                    source: Some(task_input::Source::Delta(DeltaInput {
                        table_uri: uri,
                        version,
                    })),
                });
            }
        }
        Ok(inputs)
    }
}

/// The Delta table at `uri` at its current version, or `None` when there is none.
async fn open_table(uri: &str) -> Result<Option<deltalake::DeltaTable>, TaskError> {
    if !strata_storage::delta_table_exists(uri).await? {
        return Ok(None);
    }
    let url = url::Url::parse(uri)
        .map_err(|err| TaskError::user(format!("invalid table location {uri}: {err}")))?;
    Ok(Some(
        deltalake::DeltaTableBuilder::from_url(url)?.load().await?,
    ))
}

/// The current version of the Delta table at `uri`, or `None` when there is none.
async fn current_version(uri: &str) -> Result<Option<i64>, TaskError> {
    Ok(open_table(uri)
        .await?
        .and_then(|table| table.version())
        .and_then(|version| i64::try_from(version).ok()))
}

/// Runs `work` on a thread with a runtime of its own: compiling is synchronous and may
/// happen on a runtime's thread.
fn blocking<T: Send + 'static>(
    work: impl Future<Output = Result<T, String>> + Send + 'static,
) -> Result<T, String> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| err.to_string())?
            .block_on(work)
    })
    .join()
    .map_err(|_| String::from("the compile-time query's thread panicked"))?
}

impl CompileQueries for EngineQueries {
    fn query(&self, sql: &str) -> Result<QueryTable, String> {
        let queries = self.clone();
        let sql = sql.to_string();
        blocking(async move {
            let inputs = queries
                .tables_named(&sql)
                .await
                .map_err(|e| e.to_string())?;
            let batches = query(&queries.config, &inputs, &sql)
                .await
                .map_err(|err| err.to_string())?;
            table(&batches)
        })
    }

    fn columns(
        &self,
        schema: &str,
        identifier: &str,
    ) -> Result<Option<Vec<(String, String)>>, String> {
        let Some(uri) = self.table_uri(schema, identifier) else {
            return Err(String::from("there is no warehouse to look at"));
        };
        blocking(async move {
            let Some(table) = open_table(&uri).await.map_err(|err| err.to_string())? else {
                return Ok(None);
            };
            let snapshot = table.snapshot().map_err(|err| err.to_string())?;
            let schema = snapshot.snapshot().arrow_schema();
            Ok(Some(
                schema
                    .fields()
                    .iter()
                    .map(|field| (field.name().clone(), sql_type(field.data_type())))
                    .collect(),
            ))
        })
    }
}

/// The SQL name of a column type, as `get_columns_in_relation` reports it.
fn sql_type(data_type: &datafusion::arrow::datatypes::DataType) -> String {
    use datafusion::arrow::datatypes::DataType;
    match data_type {
        DataType::Boolean => String::from("boolean"),
        DataType::Int8 => String::from("tinyint"),
        DataType::Int16 => String::from("smallint"),
        DataType::Int32 => String::from("integer"),
        DataType::Int64 => String::from("bigint"),
        DataType::Float32 => String::from("float"),
        DataType::Float64 => String::from("double"),
        DataType::Decimal128(precision, scale) | DataType::Decimal256(precision, scale) => {
            format!("decimal({precision},{scale})")
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => String::from("varchar"),
        DataType::Date32 | DataType::Date64 => String::from("date"),
        DataType::Timestamp(_, None) => String::from("timestamp"),
        DataType::Timestamp(_, Some(_)) => String::from("timestamp with time zone"),
        other => other.to_string().to_lowercase(),
    }
}

/// Batches as a [`QueryTable`].
fn table(batches: &[RecordBatch]) -> Result<QueryTable, String> {
    let mut table = QueryTable::default();
    if let Some(first) = batches.first() {
        table.columns = first
            .schema()
            .fields()
            .iter()
            .map(|field| field.name().clone())
            .collect();
    }
    for batch in batches {
        for row in 0..batch.num_rows() {
            let values = batch
                .columns()
                .iter()
                .map(|column| {
                    ScalarValue::try_from_array(column, row)
                        .map(json_value)
                        .map_err(|err| err.to_string())
                })
                .collect::<Result<Vec<_>, _>>()?;
            table.rows.push(values);
        }
    }
    Ok(table)
}

/// A value as templates see it: numbers, text and booleans as themselves, others as text.
fn json_value(value: ScalarValue) -> serde_json::Value {
    if value.is_null() {
        return serde_json::Value::Null;
    }
    match value {
        ScalarValue::Boolean(Some(b)) => serde_json::Value::Bool(b),
        ScalarValue::Int8(Some(v)) => v.into(),
        ScalarValue::Int16(Some(v)) => v.into(),
        ScalarValue::Int32(Some(v)) => v.into(),
        ScalarValue::Int64(Some(v)) => v.into(),
        ScalarValue::UInt8(Some(v)) => v.into(),
        ScalarValue::UInt16(Some(v)) => v.into(),
        ScalarValue::UInt32(Some(v)) => v.into(),
        ScalarValue::UInt64(Some(v)) => v.into(),
        ScalarValue::Float32(Some(v)) => serde_json::Value::from(f64::from(v)),
        ScalarValue::Float64(Some(v)) => serde_json::Value::from(v),
        ScalarValue::Utf8(Some(v))
        | ScalarValue::LargeUtf8(Some(v))
        | ScalarValue::Utf8View(Some(v)) => v.into(),
        other => other.to_string().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_queries_answer_and_table_queries_name_the_table() {
        let queries = EngineQueries::default();
        let table = queries
            .query("select 3 as days, 'a' as label union all select 4, null")
            .unwrap();
        assert_eq!(table.columns, ["days", "label"]);
        assert_eq!(table.rows.len(), 2);
        assert!(
            table
                .rows
                .contains(&vec![serde_json::json!(3), serde_json::json!("a")])
        );
        let error = queries.query("select * from gold.missing").unwrap_err();
        assert!(error.contains("missing"), "{error}");
    }
}
