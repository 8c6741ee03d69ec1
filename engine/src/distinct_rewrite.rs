//! An optimizer rule that plans distinct aggregates as plain, spillable hash aggregations.
//!
//! DataFusion 55 computes `count(distinct y)` with one hash set per group unless the other
//! aggregates are all `sum`/`min`/`max` over the one distinct argument (its own
//! `SingleDistinctToGroupBy`). Those sets are not spillable and their growth escapes the memory
//! pool's accounting: one gold model (`count(*)`, `count(distinct event_type)`, `min`, `max`, a
//! conditional `sum`, per user and day) reached 12 GB of resident memory on 2 million events
//! while its pool said 485 MB.
//!
//! [`DistinctAggregatesToGroupBy`] rewrites every aggregation that has distinct aggregates
//! (`count`, `sum`, `avg`, `min`, `max`, `bool_and`, `bool_or`, with or without `FILTER`,
//! over any number of distinct arguments) next to decomposable plain ones (`count`, `sum`,
//! `min`, `max`, `avg`, `bool_and`, `bool_or`, with or without `FILTER`), grouped or not, into
//! two plain hash aggregations — the only kind of aggregation DataFusion spills:
//!
//! ```text
//! Aggregate: groupBy=[k], aggr=[count(*), count(DISTINCT y), sum(DISTINCT z), avg(x)]
//! ```
//!
//! becomes (one distinct argument per grouping set, in the manner of Spark's `Expand`)
//!
//! ```text
//! Projection: k, coalesce(c, 0), count(d0), sum(d1), cast(s) / nullif(n, 0)
//!   Aggregate: groupBy=[k], aggr=[sum(c) FILTER (set 0), count(d0), sum(d1),
//!                                 sum(s) FILTER (set 0), sum(n) FILTER (set 0)]
//!     Aggregate: groupBy=[GROUPING SETS ((k, y AS d0), (k, z AS d1))],
//!                aggr=[count(*) AS c, sum(x) AS s, count(x) AS n]
//! ```
//!
//! With one distinct argument the inner phase is a plain `group by k, y`. Why this plan and not
//! an accumulator of our own: the inner phase is DataFusion's own hash aggregation, which
//! accounts for every group it holds and spills sorted runs when the pool says no; an
//! accumulator that spilled per-group sets would have to re-implement that machinery.
//!
//! NULL semantics are kept: a distinct aggregate ignores NULL values (its argument's NULL group
//! is ignored by the outer function), a plain `count(*)` still counts rows whose distinct
//! arguments are NULL (every row falls in exactly one group of the first set), NULL group keys
//! form their own group in both phases, and a distinct aggregate's `FILTER` becomes a flag per
//! inner group (`bool_or` of the filter) that filters the outer aggregate. Aggregates that do
//! not decompose (`median`, `string_agg`, ordered aggregates, …) leave the plan to DataFusion.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, Result};
use datafusion::functions::expr_fn::nullif;
use datafusion::functions_aggregate::expr_fn::{bool_or, count, sum};
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::logical_expr::expr::{AggregateFunction, AggregateFunctionParams};
use datafusion::logical_expr::{
    Aggregate, AggregateUDF, Expr, ExprSchemable, GroupingSet, LogicalPlan, LogicalPlanBuilder,
    cast, lit,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::prelude::coalesce;

/// Rewrites aggregations with distinct aggregates into two spillable hash aggregations.
#[derive(Debug, Default)]
pub struct DistinctAggregatesToGroupBy;

/// Aggregate functions that ignore NULL inputs, so that a distinct aggregate can be computed
/// in the outer phase over a column that is NULL outside its own grouping set.
const DISTINCT_FUNCTIONS: [&str; 7] = ["count", "sum", "avg", "min", "max", "bool_and", "bool_or"];

/// How a plain aggregate's partial results recombine in the outer phase.
#[derive(Clone, Copy, PartialEq)]
enum Combine {
    /// `count`: add the partial counts (0 for no rows).
    Count,
    /// `sum`, `min`, `max`, `bool_and`, `bool_or`: the same function over the partials.
    SameFunction,
    /// `avg`: the sum of partial sums over the sum of partial counts.
    Average,
}

/// One aggregate of the original list.
enum Planned {
    /// A distinct aggregate over the distinct argument `set`, with its `FILTER` if any.
    Distinct {
        func: Arc<AggregateUDF>,
        set: usize,
        filter: Option<Expr>,
    },
    /// A plain aggregate, computed in parts.
    Plain {
        function: AggregateFunction,
        combine: Combine,
    },
}

/// The distinct arguments and how each aggregate is planned, or `None` when the rule does not
/// apply (no distinct aggregate, or one that does not decompose).
fn analyse(aggregates: &[Expr]) -> Option<(Vec<Expr>, Vec<Planned>)> {
    let mut distinct_arguments: Vec<Expr> = Vec::new();
    let mut planned = Vec::with_capacity(aggregates.len());
    for aggregate in aggregates {
        let Expr::AggregateFunction(function) = aggregate else {
            return None;
        };
        let AggregateFunctionParams {
            args,
            distinct,
            filter,
            order_by,
            ..
        } = &function.params;
        if !order_by.is_empty() {
            return None;
        }
        let name = function.func.name().to_ascii_lowercase();
        if *distinct {
            if args.len() != 1 || !DISTINCT_FUNCTIONS.contains(&name.as_str()) {
                return None;
            }
            let set = match distinct_arguments.iter().position(|arg| arg == &args[0]) {
                Some(index) => index,
                None => {
                    distinct_arguments.push(args[0].clone());
                    distinct_arguments.len() - 1
                }
            };
            planned.push(Planned::Distinct {
                func: Arc::clone(&function.func),
                set,
                filter: filter.as_deref().cloned(),
            });
        } else {
            let combine = match name.as_str() {
                "count" => Combine::Count,
                "sum" | "min" | "max" | "bool_and" | "bool_or" => Combine::SameFunction,
                "avg" => Combine::Average,
                _ => return None,
            };
            planned.push(Planned::Plain {
                function: function.clone(),
                combine,
            });
        }
    }
    (!distinct_arguments.is_empty()).then_some((distinct_arguments, planned))
}

impl OptimizerRule for DistinctAggregatesToGroupBy {
    fn name(&self) -> &str {
        "strata_distinct_aggregates_to_group_by"
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
        let Some((distinct_arguments, planned)) = analyse(&aggregate.aggr_expr) else {
            return Ok(Transformed::no(plan));
        };
        Ok(Transformed::yes(two_phase(
            aggregate,
            &distinct_arguments,
            planned,
        )?))
    }
}

/// Names of the columns the rewrite introduces.
fn key_name(index: usize) -> String {
    format!("__strata_key_{index}")
}

fn distinct_name(set: usize) -> String {
    format!("__strata_distinct_{set}")
}

/// The two phases and the projection that restores the original schema.
fn two_phase(
    aggregate: &Aggregate,
    distinct_arguments: &[Expr],
    planned: Vec<Planned>,
) -> Result<LogicalPlan> {
    let keys: Vec<String> = (0..aggregate.group_expr.len()).map(key_name).collect();
    let sets: Vec<String> = (0..distinct_arguments.len()).map(distinct_name).collect();

    // Below the inner phase: the input's columns, the group keys and the distinct arguments.
    let mut projected: Vec<Expr> = aggregate
        .input
        .schema()
        .iter()
        .map(|(qualifier, field)| Expr::Column(Column::from((qualifier, field))))
        .collect();
    projected.extend(
        aggregate
            .group_expr
            .iter()
            .zip(&keys)
            .map(|(expr, name)| expr.clone().alias(name)),
    );
    projected.extend(
        distinct_arguments
            .iter()
            .zip(&sets)
            .map(|(expr, name)| expr.clone().alias(name)),
    );

    let key_columns: Vec<Expr> = keys.iter().map(|name| col_named(name)).collect();
    let inner_groups = if sets.len() == 1 {
        let mut groups = key_columns.clone();
        groups.push(col_named(&sets[0]));
        groups
    } else {
        let grouping_sets = sets
            .iter()
            .map(|set| {
                let mut group = key_columns.clone();
                group.push(col_named(set));
                group
            })
            .collect();
        vec![Expr::GroupingSet(GroupingSet::GroupingSets(grouping_sets))]
    };
    let result_types: Vec<DataType> = aggregate.schema.fields()[keys.len()..]
        .iter()
        .map(|field| field.data_type().clone())
        .collect();
    let phases = Phases::plan(planned, &sets, &result_types);
    let two_phase = LogicalPlanBuilder::from(Arc::clone(&aggregate.input))
        .project(projected)?
        .aggregate(inner_groups, phases.inner)?
        .aggregate(key_columns, phases.outer)?
        .build()?;

    // Restore the original names (and qualifiers) and types so that the plan above is
    // unchanged.
    let mut projection = Vec::with_capacity(aggregate.schema.fields().len());
    let outputs = keys
        .iter()
        .map(|name| col_named(name))
        .chain(phases.outputs);
    for (index, expr) in outputs.enumerate() {
        let (qualifier, field) = aggregate.schema.qualified_field(index);
        let produced = expr.get_type(two_phase.schema().as_ref())?;
        let expr = if &produced == field.data_type() {
            expr
        } else {
            cast(expr, field.data_type().clone())
        };
        projection.push(expr.alias_qualified(qualifier.cloned(), field.name()));
    }
    LogicalPlanBuilder::from(two_phase)
        .project(projection)?
        .build()
}

fn col_named(name: &str) -> Expr {
    Expr::Column(Column::from_name(name))
}

/// The aggregates of both phases, and each original aggregate's value over the outer phase.
struct Phases {
    inner: Vec<Expr>,
    outer: Vec<Expr>,
    outputs: Vec<Expr>,
}

impl Phases {
    fn plan(planned: Vec<Planned>, sets: &[String], result_types: &[DataType]) -> Self {
        // With several grouping sets, every input row is in one group of each set; a plain
        // aggregate's partials are taken from the first set's groups only. DataFusion's
        // grouping id has a 1 bit for each grouping column absent from the set, the last
        // column in the lowest bit: the first set lacks every distinct column but its own.
        let first_set = (sets.len() > 1).then(|| {
            let id = (1u64 << (sets.len() - 1)) - 1;
            cast(col_named(Aggregate::INTERNAL_GROUPING_ID), DataType::UInt64).eq(lit(id))
        });
        let mut phases = Phases {
            inner: Vec::new(),
            outer: Vec::new(),
            outputs: Vec::new(),
        };
        for (index, planned) in planned.into_iter().enumerate() {
            let output = match planned {
                Planned::Distinct { func, set, filter } => {
                    let flag = filter.map(|filter| {
                        let name = format!("__strata_flag_{index}");
                        phases.inner.push(bool_or(filter).alias(&name));
                        col_named(&name)
                    });
                    phases.outer_aggregate(index, "", func, col_named(&sets[set]), flag)
                }
                Planned::Plain { function, combine } => {
                    let result_type = result_types.get(index).unwrap_or(&DataType::Float64);
                    phases.plain(index, function, combine, first_set.clone(), result_type)
                }
            };
            phases.outputs.push(output);
        }
        phases
    }

    /// Adds `func(argument) FILTER (filter)` to the outer phase; returns its column.
    fn outer_aggregate(
        &mut self,
        index: usize,
        suffix: &str,
        func: Arc<AggregateUDF>,
        argument: Expr,
        filter: Option<Expr>,
    ) -> Expr {
        let name = format!("__strata_out_{index}{suffix}");
        let function = AggregateFunction::new_udf(
            func,
            vec![argument],
            false,
            filter.map(Box::new),
            vec![],
            None,
        );
        self.outer
            .push(Expr::AggregateFunction(function).alias(&name));
        col_named(&name)
    }

    /// Adds a plain aggregate's partials to the inner phase and their combination to the
    /// outer; returns the aggregate's value.
    fn plain(
        &mut self,
        index: usize,
        function: AggregateFunction,
        combine: Combine,
        first_set: Option<Expr>,
        result_type: &DataType,
    ) -> Expr {
        let partial = format!("__strata_partial_{index}");
        match combine {
            Combine::Count => {
                self.inner
                    .push(Expr::AggregateFunction(function).alias(&partial));
                let total =
                    self.outer_aggregate(index, "", sum_udaf(), col_named(&partial), first_set);
                coalesce(vec![total, lit(0i64)])
            }
            Combine::SameFunction => {
                let func = Arc::clone(&function.func);
                self.inner
                    .push(Expr::AggregateFunction(function).alias(&partial));
                self.outer_aggregate(index, "", func, col_named(&partial), first_set)
            }
            Combine::Average => {
                let AggregateFunctionParams { args, filter, .. } = function.params;
                let (sums, counts) = (format!("{partial}_sum"), format!("{partial}_count"));
                let with_filter = |expr: Expr| match (expr, &filter) {
                    (Expr::AggregateFunction(mut function), Some(filter)) => {
                        function.params.filter = Some(filter.clone());
                        Expr::AggregateFunction(function)
                    }
                    (expr, _) => expr,
                };
                let argument = args.into_iter().next().unwrap_or_else(|| lit(1i64));
                self.inner
                    .push(with_filter(sum(argument.clone())).alias(&sums));
                self.inner.push(with_filter(count(argument)).alias(&counts));
                let total = self.outer_aggregate(
                    index,
                    "_sum",
                    sum_udaf(),
                    col_named(&sums),
                    first_set.clone(),
                );
                let rows = self.outer_aggregate(
                    index,
                    "_count",
                    sum_udaf(),
                    col_named(&counts),
                    first_set,
                );
                // No rows (a count of 0) gives NULL, as avg does. A decimal is divided as
                // DataFusion's own avg does: the sum (of the argument's scale) by the count,
                // giving four more digits of scale, truncated; anything else in Float64.
                let rows = nullif(rows, lit(0i64));
                match result_type {
                    DataType::Decimal128(..) => total / cast(rows, DataType::Decimal128(20, 0)),
                    _ => cast(total, DataType::Float64) / cast(rows, DataType::Float64),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
