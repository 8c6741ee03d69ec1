//! Deduplication without a sort: `row_number() over (partition by k order by o) = 1`.
//!
//! The medallion pattern "keep the latest delivery of each event" is written as a window:
//!
//! ```sql
//! select * from (
//!     select *, row_number() over (partition by event_id order by _ingested_at desc) as rn
//!     from events
//! ) where rn = 1
//! ```
//!
//! DataFusion 55 plans it as a full sort of the input by `(k, o)`, a window over the sorted
//! rows, and a filter — on 10 million events that sort was two thirds of the medallion build.
//! DataFusion's own `WindowTopN` rewrite (off by default) keeps one heap per key, which its
//! documentation warns regresses for high-cardinality keys; a deduplication key is nearly
//! unique by definition.
//!
//! [`FirstRowPerKeyRule`] rewrites `Filter(rn = 1)` (also `rn <= 1`, `rn < 2`) over a window
//! whose only expression is `row_number()` into a [`FirstRowPerKey`] node. Its operator,
//! [`FirstRowPerKeyExec`], keeps one winning row per key in a hash table while it reads its
//! input (a row replaces the winner when it sorts strictly before it by the window's order,
//! compared on Arrow's row format, so `desc`/`nulls first` behave as in the sort), and emits
//! the winners with the rank column set to 1. Exactly one row per key comes out, every column
//! from the same input row — unlike a rewrite to `first_value` per column, which may mix rows
//! when the order has ties. Which of several tied rows wins is unspecified, as it is for
//! `row_number()` itself.
//!
//! The operator needs its input hash-partitioned on the key (DataFusion inserts the repartition,
//! which a distributed run turns into a shuffle), holds the winners under the task's memory
//! pool ([`winners`]), compacts them when most buffered rows have lost, and when even the
//! winners do not fit, partitions the key space and sends part of it to disk, keeping the rest
//! in memory, then deduplicates each spilled part on its own ([`spill`]) — never worse than the
//! sort it replaces, which also spills.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::common::{Column, DFSchemaRef, Result, ScalarValue, plan_err};
use datafusion::error::DataFusionError;
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{
    BinaryExpr, Expr, Extension, Filter, LogicalPlan, Operator, Projection, SortExpr,
    UserDefinedLogicalNode, UserDefinedLogicalNodeCore, Window, WindowFunctionDefinition,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties,
    PlanProperties,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use futures::TryStreamExt;

// ---------------------------------------------------------------------------------------------
// Logical side: the rule and its node.

/// Rewrites `Filter(row_number() … = 1)` over a `row_number()` window into [`FirstRowPerKey`].
#[derive(Debug, Default)]
pub struct FirstRowPerKeyRule;

impl OptimizerRule for FirstRowPerKeyRule {
    fn name(&self) -> &str {
        "strata_first_row_per_key"
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
        let LogicalPlan::Filter(filter) = plan else {
            return Ok(Transformed::no(plan));
        };
        match rewrite_filter(&filter)? {
            Some(rewritten) => Ok(Transformed::yes(rewritten)),
            None => Ok(Transformed::no(LogicalPlan::Filter(filter))),
        }
    }
}

/// The window below a filter, and the projection between them when there is one.
struct WindowBelow<'a> {
    projection: Option<&'a Projection>,
    window: &'a Window,
    /// The rank column as the filter sees it.
    rank: Column,
}

fn window_below(filter: &Filter) -> Option<WindowBelow<'_>> {
    match filter.input.as_ref() {
        LogicalPlan::Window(window) => {
            let rank = Column::from(
                window
                    .schema
                    .qualified_field(window.input.schema().fields().len()),
            );
            Some(WindowBelow {
                projection: None,
                window,
                rank,
            })
        }
        LogicalPlan::Projection(projection) => {
            let LogicalPlan::Window(window) = projection.input.as_ref() else {
                return None;
            };
            let window_rank = Column::from(
                window
                    .schema
                    .qualified_field(window.input.schema().fields().len()),
            );
            // The projection passes the rank column through, perhaps renamed.
            let index = projection.expr.iter().position(|expr| {
                matches!(expr.clone().unalias(), Expr::Column(column) if column == window_rank)
            })?;
            let rank = Column::from(projection.schema.qualified_field(index));
            Some(WindowBelow {
                projection: Some(projection),
                window,
                rank,
            })
        }
        _ => None,
    }
}

/// `Some(partition_by, order_by)` when the window computes exactly one plain `row_number()`.
fn row_number_window(window: &Window) -> Option<(Vec<Expr>, Vec<SortExpr>)> {
    let [expr] = window.window_expr.as_slice() else {
        return None;
    };
    let Expr::WindowFunction(function) = expr.clone().unalias() else {
        return None;
    };
    let WindowFunction { fun, params } = *function;
    let WindowFunctionDefinition::WindowUDF(udf) = fun else {
        return None;
    };
    (udf.name() == "row_number"
        && params.args.is_empty()
        && params.filter.is_none()
        && !params.distinct)
        .then_some((params.partition_by, params.order_by))
}

/// Whether `predicate` keeps exactly the rows where `rank` is 1.
fn keeps_first_rank(predicate: &Expr, rank: &Column) -> bool {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = predicate else {
        return false;
    };
    let integer = |expr: &Expr| match expr {
        Expr::Literal(value, _) => integer_value(value),
        _ => None,
    };
    let is_rank = |expr: &Expr| matches!(expr, Expr::Column(column) if column == rank);
    let (op, bound) = if is_rank(left) {
        (*op, integer(right))
    } else if is_rank(right) {
        match op.swap() {
            Some(swapped) => (swapped, integer(left)),
            None => return false,
        }
    } else {
        return false;
    };
    matches!(
        (op, bound),
        (Operator::Eq | Operator::LtEq, Some(1)) | (Operator::Lt, Some(2))
    )
}

fn integer_value(value: &ScalarValue) -> Option<i128> {
    match value {
        ScalarValue::Int8(Some(v)) => Some(i128::from(*v)),
        ScalarValue::Int16(Some(v)) => Some(i128::from(*v)),
        ScalarValue::Int32(Some(v)) => Some(i128::from(*v)),
        ScalarValue::Int64(Some(v)) => Some(i128::from(*v)),
        ScalarValue::UInt8(Some(v)) => Some(i128::from(*v)),
        ScalarValue::UInt16(Some(v)) => Some(i128::from(*v)),
        ScalarValue::UInt32(Some(v)) => Some(i128::from(*v)),
        ScalarValue::UInt64(Some(v)) => Some(i128::from(*v)),
        _ => None,
    }
}

fn rewrite_filter(filter: &Filter) -> Result<Option<LogicalPlan>> {
    let Some(below) = window_below(filter) else {
        return Ok(None);
    };
    let Some((partition_by, order_by)) = row_number_window(below.window) else {
        return Ok(None);
    };
    let conjuncts = split_conjunction(&filter.predicate);
    let Some(position) = conjuncts
        .iter()
        .position(|conjunct| keeps_first_rank(conjunct, &below.rank))
    else {
        return Ok(None);
    };
    let first_rows = LogicalPlan::Extension(Extension {
        node: Arc::new(FirstRowPerKey {
            input: below.window.input.as_ref().clone(),
            partition_by,
            order_by,
            schema: below.window.schema.clone(),
        }),
    });
    let mut plan = match below.projection {
        Some(projection) => LogicalPlan::Projection(Projection::try_new_with_schema(
            projection.expr.clone(),
            Arc::new(first_rows),
            projection.schema.clone(),
        )?),
        None => first_rows,
    };
    let rest = conjuncts
        .into_iter()
        .enumerate()
        .filter(|(index, _)| *index != position)
        .map(|(_, conjunct)| conjunct.clone());
    if let Some(predicate) = conjunction(rest) {
        plan = LogicalPlan::Filter(Filter::try_new(predicate, Arc::new(plan))?);
    }
    Ok(Some(plan))
}

/// One row per distinct `partition_by` value: the first by `order_by`, with the window's rank
/// column (always 1) appended. Its schema is the replaced window's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FirstRowPerKey {
    input: LogicalPlan,
    partition_by: Vec<Expr>,
    order_by: Vec<SortExpr>,
    schema: DFSchemaRef,
}

impl PartialOrd for FirstRowPerKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match self.partition_by.partial_cmp(&other.partition_by) {
            Some(Ordering::Equal) => {}
            unequal => return unequal,
        }
        match self.order_by.partial_cmp(&other.order_by) {
            Some(Ordering::Equal) => {}
            unequal => return unequal,
        }
        self.input.partial_cmp(&other.input)
    }
}

impl UserDefinedLogicalNodeCore for FirstRowPerKey {
    fn name(&self) -> &str {
        "FirstRowPerKey"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        self.partition_by
            .iter()
            .cloned()
            .chain(self.order_by.iter().map(|sort| sort.expr.clone()))
            .collect()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<String> = self.partition_by.iter().map(ToString::to_string).collect();
        let order: Vec<String> = self.order_by.iter().map(ToString::to_string).collect();
        write!(
            f,
            "FirstRowPerKey: partition_by=[{}], order_by=[{}]",
            keys.join(", "),
            order.join(", ")
        )
    }

    fn with_exprs_and_inputs(&self, exprs: Vec<Expr>, inputs: Vec<LogicalPlan>) -> Result<Self> {
        let [input] = <[LogicalPlan; 1]>::try_from(inputs).map_err(|inputs| {
            DataFusionError::Internal(format!(
                "FirstRowPerKey takes one input, not {}",
                inputs.len()
            ))
        })?;
        let keys = self.partition_by.len();
        if exprs.len() != keys + self.order_by.len() {
            return plan_err!("FirstRowPerKey got {} expressions", exprs.len());
        }
        let mut exprs = exprs.into_iter();
        let partition_by = exprs.by_ref().take(keys).collect();
        let order_by = self
            .order_by
            .iter()
            .zip(exprs)
            .map(|(sort, expr)| SortExpr::new(expr, sort.asc, sort.nulls_first))
            .collect();
        Ok(Self {
            input,
            partition_by,
            order_by,
            schema: self.schema.clone(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Physical planning.

/// DataFusion's planner with an [`ExtensionPlanner`] for [`FirstRowPerKey`].
#[derive(Debug, Default)]
pub struct StrataQueryPlanner;

#[async_trait]
impl QueryPlanner for StrataQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(FirstRowPerKeyPlanner)])
            .create_physical_plan(logical_plan, session)
            .await
    }
}

struct FirstRowPerKeyPlanner;

#[async_trait]
impl ExtensionPlanner for FirstRowPerKeyPlanner {
    async fn plan_extension(
        &self,
        planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        session: &dyn Session,
        planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(node) = node.as_any().downcast_ref::<FirstRowPerKey>() else {
            return Ok(None);
        };
        let (Some(logical_input), Some(input)) = (logical_inputs.first(), physical_inputs.first())
        else {
            return plan_err!("FirstRowPerKey without an input");
        };
        let input_schema = logical_input.schema();
        let keys = node
            .partition_by
            .iter()
            .map(|expr| planner.create_physical_expr(expr, input_schema, session, planning_ctx))
            .collect::<Result<Vec<_>>>()?;
        let order = node
            .order_by
            .iter()
            .map(|sort| {
                let expr = planner.create_physical_expr(
                    &sort.expr,
                    input_schema,
                    session,
                    planning_ctx,
                )?;
                Ok(PhysicalSortExpr::new(
                    expr,
                    datafusion::arrow::compute::SortOptions::new(!sort.asc, sort.nulls_first),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let schema = Arc::clone(node.schema.inner());
        Ok(Some(Arc::new(FirstRowPerKeyExec::try_new(
            Arc::clone(input),
            keys,
            order,
            schema,
        )?)))
    }
}

// ---------------------------------------------------------------------------------------------
// The operator.

/// Emits one row per distinct key (the first by the order), plus a rank column of 1.
#[derive(Debug)]
pub struct FirstRowPerKeyExec {
    input: Arc<dyn ExecutionPlan>,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    order: Vec<PhysicalSortExpr>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    /// Spill counts per output partition: files, rows and bytes written.
    metrics: ExecutionPlanMetricsSet,
}

impl FirstRowPerKeyExec {
    /// The operator over `input`; `schema` is the input's columns plus the rank column.
    ///
    /// # Errors
    /// When `schema` is not the input's schema with one more column.
    pub fn try_new(
        input: Arc<dyn ExecutionPlan>,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        order: Vec<PhysicalSortExpr>,
        schema: SchemaRef,
    ) -> Result<Self> {
        let input_fields = input.schema().fields().len();
        if schema.fields().len() != input_fields + 1 {
            return plan_err!(
                "FirstRowPerKey: output has {} columns, expected the input's {} and a rank",
                schema.fields().len(),
                input_fields
            );
        }
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            input.output_partitioning().clone(),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Ok(Self {
            input,
            keys,
            order,
            schema,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    /// The key expressions.
    pub fn keys(&self) -> &[Arc<dyn PhysicalExpr>] {
        &self.keys
    }

    /// The order that picks each key's row.
    pub fn order(&self) -> &[PhysicalSortExpr] {
        &self.order
    }
}

impl DisplayAs for FirstRowPerKeyExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<String> = self.keys.iter().map(ToString::to_string).collect();
        let order: Vec<String> = self.order.iter().map(ToString::to_string).collect();
        write!(
            f,
            "FirstRowPerKeyExec: keys=[{}], order=[{}]",
            keys.join(", "),
            order.join(", ")
        )
    }
}

impl ExecutionPlan for FirstRowPerKeyExec {
    fn name(&self) -> &str {
        "FirstRowPerKeyExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        if self.keys.is_empty() {
            vec![Distribution::SinglePartition]
        } else {
            vec![Distribution::KeyPartitioned(self.keys.clone())]
        }
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for expr in self
            .keys
            .iter()
            .chain(self.order.iter().map(|sort| &sort.expr))
        {
            if f(expr)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = <[Arc<dyn ExecutionPlan>; 1]>::try_from(children).map_err(|children| {
            DataFusionError::Internal(format!(
                "FirstRowPerKeyExec takes one child, not {}",
                children.len()
            ))
        })?;
        Ok(Arc::new(Self::try_new(
            input,
            self.keys.clone(),
            self.order.clone(),
            Arc::clone(&self.schema),
        )?))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, Arc::clone(&context))?;
        let deduplication = Deduplication {
            contest: Contest::try_new(&self.input.schema(), &self.keys, &self.order)?,
            pool: Arc::clone(context.memory_pool()),
            disk: Arc::clone(&context.runtime_env().disk_manager),
            input_schema: self.input.schema(),
            output_schema: Arc::clone(&self.schema),
            batch_size: context.session_config().batch_size().max(1),
            name: format!("FirstRowPerKeyExec[{partition}]"),
            spills: SpillMetrics::new(&self.metrics, partition),
        };
        let output = futures::stream::once(deduplication.run(input)).try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            output,
        )))
    }
}

mod keys;
mod spill;
mod winners;

use spill::{Deduplication, SpillMetrics};
use winners::Contest;

#[cfg(test)]
mod tests;
