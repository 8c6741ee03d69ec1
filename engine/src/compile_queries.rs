//! Compile-time queries (`run_query`, `statement` blocks) answered by DataFusion: the
//! compiler's [`CompileQueries`] for embedded and cluster runs and `strata compile`.
//!
//! Queries run without any table registered: constant queries such as the number of days
//! between two dates, which is what packages' date spines ask. A query naming a table fails
//! with DataFusion's error naming the table.

use datafusion::arrow::array::RecordBatch;
use datafusion::common::ScalarValue;
use strata_core::jinja::{CompileQueries, QueryTable};

use crate::session::{EngineConfig, query};

/// Runs compile-time queries with the engine.
#[derive(Debug, Clone, Default)]
pub struct EngineQueries {
    config: EngineConfig,
}

impl EngineQueries {
    /// Queries under `config` (its memory pool and partitions).
    pub fn new(config: EngineConfig) -> Self {
        Self { config }
    }
}

impl CompileQueries for EngineQueries {
    fn query(&self, sql: &str) -> Result<QueryTable, String> {
        // Compiling is synchronous and may happen on a runtime's thread: the query gets a
        // thread and a runtime of its own.
        let config = self.config.clone();
        let sql = sql.to_string();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|err| err.to_string())?;
            let batches = runtime
                .block_on(query(&config, &[], &sql))
                .map_err(|err| err.to_string())?;
            table(&batches)
        })
        .join()
        .map_err(|_| String::from("the query's thread panicked"))?
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
