//! `/` between two integers gives a fractional result, as in DuckDB, Spark, Snowflake and
//! BigQuery, where dbt projects are mostly written: `amount / 100` with an integer `amount` is
//! `12.5`, not `12`. DataFusion, like PostgreSQL and Redshift, truncates; a model configured
//! with `integer_division: truncate` keeps that (see [`crate::session::EngineConfig`]).
//!
//! An analyzer rule after type coercion: where both operands of `/` are integers, both are cast
//! to `Float64`. Output column names stay what the SQL wrote.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, LogicalPlan, Operator, cast};
use datafusion::optimizer::AnalyzerRule;

/// Makes integer division fractional (see the module documentation).
#[derive(Debug, Default)]
pub struct FractionalIntegerDivision;

impl AnalyzerRule for FractionalIntegerDivision {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|plan| rewrite_plan(plan, fractional))
            .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "fractional_integer_division"
    }
}

/// Rewrites the expressions of one plan node with `rule`, which sees the types of the node's
/// inputs' columns; output column names stay what the SQL wrote.
pub(crate) fn rewrite_plan(
    plan: LogicalPlan,
    rule: fn(Expr, &DFSchema) -> Result<Transformed<Expr>>,
) -> Result<Transformed<LogicalPlan>> {
    let mut schema = merge_schema(&plan.inputs());
    if let LogicalPlan::TableScan(scan) = &plan {
        schema.merge(&DFSchema::try_from_qualified_schema(
            scan.table_name.clone(),
            &scan.source.schema(),
        )?);
    }
    let names = NamePreserver::new(&plan);
    let rewritten = plan.map_expressions(|expr| {
        let original_name = names.save(&expr);
        expr.transform_up(|expr| rule(expr, &schema))
            .map(|transformed| transformed.update_data(|e| original_name.restore(e)))
    })?;
    if rewritten.transformed {
        rewritten.map_data(LogicalPlan::recompute_schema)
    } else {
        Ok(rewritten)
    }
}

/// `a / b` over integers as `cast(a as double) / cast(b as double)`.
fn fractional(expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    let Expr::BinaryExpr(BinaryExpr {
        left,
        op: Operator::Divide,
        right,
    }) = &expr
    else {
        return Ok(Transformed::no(expr));
    };
    if !(left.get_type(schema)?.is_integer() && right.get_type(schema)?.is_integer()) {
        return Ok(Transformed::no(expr));
    }
    Ok(Transformed::yes(Expr::BinaryExpr(BinaryExpr::new(
        Box::new(cast(left.as_ref().clone(), DataType::Float64)),
        Operator::Divide,
        Box::new(cast(right.as_ref().clone(), DataType::Float64)),
    ))))
}

#[cfg(test)]
mod tests {
    use crate::session::{EngineConfig, session};

    async fn values(truncating_division: bool, sql: &str) -> String {
        let config = EngineConfig {
            truncating_division,
            ..EngineConfig::default()
        };
        let (ctx, _) = session(&config).unwrap();
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string()
    }

    #[tokio::test]
    async fn integer_division_is_fractional_unless_truncating() {
        let sql = "select amount / 100 as units, sum(amount) / count(*), 7.0 / 2 as decimal_kept
                   from (values (1250), (5)) as t(amount) group by amount order by amount";
        let fractional = values(false, sql).await;
        assert!(fractional.contains("12.5"), "{fractional}");
        assert!(fractional.contains("0.05"), "{fractional}");
        // The name of an unaliased expression is the SQL's, not the cast's.
        assert!(
            fractional.contains("sum(t.amount) / count(*)"),
            "{fractional}"
        );
        assert!(fractional.contains("3.5"), "{fractional}");
        let truncating = values(true, sql).await;
        assert!(truncating.contains("| 12 "), "{truncating}");
        assert!(!truncating.contains("12.5"), "{truncating}");
    }

    #[tokio::test]
    async fn division_inside_subqueries_and_filters() {
        let sql = "select count(*) as n from (values (1), (3)) as t(x)
                   where x / 2 > 0.4 and x in (select y / 1 from (values (1), (3)) as u(y))";
        assert!(values(false, sql).await.contains("| 2 "));
    }
}
