//! DuckDB's series table functions: `generate_series(…)` and `range(…)` as DataFusion has
//! them, with the one column named as DuckDB names it (`generate_series`, `range`), so that
//! `select generate_series::date as day from generate_series(…)` reads as in dbt-duckdb
//! projects (DataFusion calls the column `value`).

use std::sync::Arc;

use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::Result;
use datafusion::datasource::{ViewTable, provider_as_source};
use datafusion::functions_table::generate_series::{GenerateSeriesFunc, RangeFunc};
use datafusion::logical_expr::{LogicalPlanBuilder, col};

/// A DuckDB-named series function over DataFusion's.
#[derive(Debug)]
pub struct DuckDbSeries {
    name: &'static str,
    inner: Arc<dyn TableFunctionImpl>,
}

impl DuckDbSeries {
    /// `generate_series(start, stop[, step])`, the stop included.
    pub fn generate_series() -> (&'static str, Arc<dyn TableFunctionImpl>) {
        let function = DuckDbSeries {
            name: "generate_series",
            inner: Arc::new(GenerateSeriesFunc {}),
        };
        (function.name, Arc::new(function))
    }

    /// `range(start, stop[, step])`, the stop left out.
    pub fn range() -> (&'static str, Arc<dyn TableFunctionImpl>) {
        let function = DuckDbSeries {
            name: "range",
            inner: Arc::new(RangeFunc {}),
        };
        (function.name, Arc::new(function))
    }
}

impl TableFunctionImpl for DuckDbSeries {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let series = self.inner.call_with_args(args)?;
        let plan = LogicalPlanBuilder::scan(self.name, provider_as_source(series), None)?
            .project(vec![col("value").alias(self.name)])?
            .build()?;
        Ok(Arc::new(ViewTable::new(plan, None)))
    }
}

#[cfg(test)]
mod tests {
    use crate::session::{EngineConfig, session};

    #[tokio::test]
    async fn series_columns_are_named_as_in_duckdb() {
        let (ctx, _) = session(&EngineConfig::default()).unwrap();
        let sql = "select generate_series::date as day, (select max(range) from range(0, 3)) as top
                   from generate_series(date '2024-02-27', date '2024-03-01', interval '1 day')
                   where generate_series > timestamp '2024-02-27'";
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        assert!(text.contains("| 2024-02-29 | 2   |"), "{text}");
        assert!(text.contains("2024-03-01"), "{text}");
        assert_eq!(
            batches.iter().map(|b| b.num_rows()).sum::<usize>(),
            3,
            "{text}"
        );
    }
}
