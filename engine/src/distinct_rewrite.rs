//! An optimizer rule for a shape DataFusion 55 plans with one hash set per group:
//! `count(*)` (or `count(x)`) next to `count(distinct y)`, grouped by some keys — the medallion
//! example's `daily_user_activity`. DataFusion's own `SingleDistinctToGroupBy` rewrite accepts
//! only `sum`/`min`/`max` beside the distinct aggregate, so this shape falls through to
//! per-group hash-set accumulators, which grew past 24 GB on 2 million events here.
//!
//! The rule turns
//!
//! ```text
//! Aggregate: groupBy=[k], aggr=[count(*), count(DISTINCT y), sum(z)]
//! ```
//!
//! into two plain hash aggregations, both of which spill under the memory pool:
//!
//! ```text
//! Projection: k, coalesce(sum(c), 0) AS count(*), count(d) AS count(DISTINCT y), sum(s) AS sum(z)
//!   Aggregate: groupBy=[k], aggr=[sum(c), count(d), sum(s)]
//!     Aggregate: groupBy=[k, y AS d], aggr=[count(*) AS c, sum(z) AS s]
//! ```
//!
//! NULL semantics are kept: `count(distinct y)` ignores NULL `y` (the inner group with
//! `d = NULL` is not counted by `count(d)`), `count(*)` still counts rows whose `y` is NULL
//! (their inner group's `c` is summed), and NULL group keys form their own group in both
//! phases. Upstream changed the rewrite after release 55 (apache/datafusion #24859).

use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, Result};
use datafusion::functions_aggregate::expr_fn::{count, max, min, sum};
use datafusion::logical_expr::expr::{AggregateFunction, AggregateFunctionParams};
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, LogicalPlanBuilder, col, lit};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::prelude::coalesce;

/// Rewrites `count` next to a single `count(distinct …)` into two-phase aggregation.
#[derive(Debug, Default)]
pub struct CountWithDistinctToGroupBy;

/// How an aggregate is recombined in the outer phase.
#[derive(Clone, Copy, PartialEq)]
enum Combine {
    /// `count(distinct y)`: count the non-null distinct values.
    CountDistinct,
    /// `count`: add the partial counts (0 for no rows).
    Count,
    /// `sum`, `min`, `max`: the same function over the partial results.
    Sum,
    Min,
    Max,
}

/// Returns how each aggregate recombines, or `None` when the rule does not apply.
fn plan_combination(aggregates: &[Expr]) -> Option<(Expr, Vec<Combine>)> {
    let mut distinct_argument: Option<Expr> = None;
    let mut combines = Vec::with_capacity(aggregates.len());
    for aggregate in aggregates {
        let Expr::AggregateFunction(AggregateFunction {
            func,
            params:
                AggregateFunctionParams {
                    args,
                    distinct,
                    filter,
                    order_by,
                    ..
                },
        }) = aggregate
        else {
            return None;
        };
        if filter.is_some() || !order_by.is_empty() {
            return None;
        }
        let name = func.name().to_ascii_lowercase();
        if *distinct {
            if name != "count" || args.len() != 1 {
                return None;
            }
            match &distinct_argument {
                Some(existing) if existing != &args[0] => return None,
                _ => distinct_argument = Some(args[0].clone()),
            }
            combines.push(Combine::CountDistinct);
        } else {
            combines.push(match name.as_str() {
                "count" => Combine::Count,
                "sum" => Combine::Sum,
                "min" => Combine::Min,
                "max" => Combine::Max,
                _ => return None,
            });
        }
    }
    // Only the shape DataFusion 55 leaves alone: a distinct count next to a plain count.
    let argument = distinct_argument?;
    combines
        .contains(&Combine::Count)
        .then_some((argument, combines))
}

impl OptimizerRule for CountWithDistinctToGroupBy {
    fn name(&self) -> &str {
        "strata_count_with_distinct_to_group_by"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(aggregate) = &plan else {
            return Ok(Transformed::no(plan));
        };
        if matches!(aggregate.group_expr.first(), Some(Expr::GroupingSet(_))) {
            return Ok(Transformed::no(plan));
        }
        let Some((distinct_argument, combines)) = plan_combination(&aggregate.aggr_expr) else {
            return Ok(Transformed::no(plan));
        };
        let Aggregate {
            input,
            group_expr,
            aggr_expr,
            schema,
            ..
        } = aggregate.clone();
        const DISTINCT: &str = "__strata_distinct";
        let group_names: Vec<String> = (0..group_expr.len())
            .map(|i| format!("__strata_key_{i}"))
            .collect();
        let mut inner_groups: Vec<Expr> = group_expr
            .iter()
            .zip(&group_names)
            .map(|(expr, name)| expr.clone().alias(name))
            .collect();
        inner_groups.push(distinct_argument.alias(DISTINCT));

        let mut inner_aggregates = Vec::new();
        let mut outer_aggregates = Vec::new();
        for (index, (aggregate, combine)) in aggr_expr.iter().zip(&combines).enumerate() {
            let partial = format!("__strata_partial_{index}");
            let recombine: fn(Expr) -> Expr = match combine {
                Combine::CountDistinct => {
                    outer_aggregates.push(count(col(DISTINCT)));
                    continue;
                }
                Combine::Count | Combine::Sum => sum,
                Combine::Min => min,
                Combine::Max => max,
            };
            let Expr::AggregateFunction(function) = aggregate else {
                return Ok(Transformed::no(plan));
            };
            let mut inner = function.clone();
            inner.params.distinct = false;
            inner_aggregates.push(Expr::AggregateFunction(inner).alias(&partial));
            outer_aggregates.push(recombine(col(&partial)));
        }
        let outer_groups: Vec<Expr> = group_names
            .iter()
            .map(|name| Expr::Column(Column::from_name(name)))
            .collect();
        let outer_count = outer_aggregates.len();
        let two_phase = LogicalPlanBuilder::from(Arc::clone(&input))
            .aggregate(inner_groups, inner_aggregates)?
            .aggregate(outer_groups, outer_aggregates)?
            .build()?;

        // Restore the original names (and qualifiers) so that the plan above is unchanged.
        let produced = two_phase.schema().clone();
        let mut projection = Vec::with_capacity(schema.fields().len());
        for index in 0..group_names.len() + outer_count {
            let (qualifier, field) = schema.qualified_field(index);
            let (produced_qualifier, produced_field) = produced.qualified_field(index);
            let mut expr = Expr::Column(Column::new(
                produced_qualifier.cloned(),
                produced_field.name(),
            ));
            if index >= group_names.len() && combines[index - group_names.len()] == Combine::Count {
                expr = coalesce(vec![expr, lit(0i64)]);
            }
            projection.push(expr.alias_qualified(qualifier.cloned(), field.name()));
        }
        let rewritten = LogicalPlanBuilder::from(two_phase)
            .project(projection)?
            .build()?;
        Ok(Transformed::yes(rewritten))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::prelude::SessionContext;

    use crate::session::{EngineConfig, session};

    const QUERY: &str = "select k, count(*) as n, count(distinct v) as d, sum(z) as s, count(z) as nz \
                         from t group by k order by k nulls first";

    fn data() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Utf8, true),
            Field::new("z", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![
                    Some("a"),
                    Some("a"),
                    Some("a"),
                    Some("b"),
                    None,
                    None,
                    Some("b"),
                ])),
                Arc::new(StringArray::from(vec![
                    Some("x"),
                    Some("x"),
                    None,
                    None,
                    Some("y"),
                    Some("z"),
                    None,
                ])),
                Arc::new(Int64Array::from(vec![
                    Some(1),
                    None,
                    Some(3),
                    Some(4),
                    Some(5),
                    None,
                    None,
                ])),
            ],
        )
        .unwrap()
    }

    async fn run(ctx: &SessionContext) -> (String, String) {
        ctx.register_batch("t", data()).unwrap();
        let frame = ctx.sql(QUERY).await.unwrap();
        let plan = frame
            .clone()
            .into_optimized_plan()
            .unwrap()
            .display_indent()
            .to_string();
        let batches = frame.collect().await.unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        (plan, text)
    }

    #[tokio::test]
    async fn rewrites_to_two_phase_aggregation_with_the_same_result() {
        let (strata, _) = session(&EngineConfig::default()).unwrap();
        let (plan, rewritten) = run(&strata).await;
        assert!(!plan.contains("DISTINCT"), "{plan}");
        assert_eq!(plan.matches("Aggregate:").count(), 2, "{plan}");
        let (_, plain) = run(&SessionContext::new()).await;
        assert_eq!(rewritten, plain);
        // NULL semantics, checked by hand: group NULL has v in {y, z} -> 2 distinct; group a
        // has v in {x, x, NULL} -> 1 distinct but 3 rows; group b has only NULL v -> 0.
        assert!(rewritten.contains("|   | 2 | 2 | 5 | 1  |"), "{rewritten}");
        assert!(rewritten.contains("| a | 3 | 1 | 4 | 2  |"), "{rewritten}");
        assert!(rewritten.contains("| b | 2 | 0 | 4 | 1  |"), "{rewritten}");
    }

    #[tokio::test]
    async fn leaves_other_shapes_alone() {
        let (ctx, _) = session(&EngineConfig::default()).unwrap();
        ctx.register_batch("t", data()).unwrap();
        for sql in [
            "select k, count(distinct v), count(distinct z) from t group by k",
            "select k, avg(z), count(distinct v) from t group by k",
            "select k, count(*) from t group by k",
        ] {
            let plan = ctx
                .sql(sql)
                .await
                .unwrap()
                .into_optimized_plan()
                .unwrap()
                .display_indent()
                .to_string();
            assert!(!plan.contains("__strata"), "{sql}:\n{plan}");
        }
    }
}
